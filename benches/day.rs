//! The agents' day view with 200 appointments, rendered through the whole application
//! (session lookup, router, queries, template), as an agent at the counter reloads it all day.
//! Target on a 2-core machine: ≤ 20 ms p99. Run with `cargo bench --bench day`; it prints the
//! figures.

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Europe::Paris;
use guichet::booking::{BookingMode, BookingRequest, Engine};
use guichet::domain::slots::SlotFilter;
use guichet::domain::{
    Category, Channel, Channels, Citizen, CitizenName, Clock, ManualClock, MinuteOfDay, PhoneE164,
    Role, Weekdays, WeeklyHours,
};
use guichet::store::{
    self, NewAgent, NewCommune, NewLocation, NewOpeningRule, NewPlanning, NewService,
};
use std::sync::Arc;
use std::time::Instant;

const PLANNINGS: usize = 10;
const APPOINTMENTS: usize = 200;
const FIRST: [&str; 10] = [
    "Marie", "Jean", "Léa", "Hugo", "Chantal", "Mohamed", "Inès", "Pierre", "Zoé", "Gérard",
];
const LAST: [&str; 20] = [
    "Martin",
    "Bernard",
    "Dubois",
    "Thomas",
    "Robert",
    "Richard",
    "Petit",
    "Durand",
    "Leroy",
    "Moreau",
    "Simon",
    "Laurent",
    "Lefèbvre",
    "Michel",
    "Garcia",
    "David",
    "Bertrand",
    "Roux",
    "Vincent",
    "Fournier-Delacroix",
];

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("day.db").display());
    let store = store::connect(&url).await.expect("SQLite store");
    // Monday 30 November 2026, 7:00 in Paris: the whole day is ahead.
    let now: DateTime<Utc> = "2026-11-30T06:00:00Z".parse().unwrap();
    let engine = Engine::new(
        store.clone(),
        Arc::new(ManualClock::new(now)) as Arc<dyn Clock>,
        Duration::minutes(10),
    );
    let commune = store
        .insert_commune(&NewCommune {
            slug: "bench".into(),
            name: "Bench".into(),
            insee_code: "74010".into(),
            timezone: Paris,
            population: 130_000,
            phone_numbers: vec![],
            switchboard_number: None,
            switchboard_hours: WeeklyHours::default(),
            reminder_delay_hours: 48,
            quiet_start: MinuteOfDay::hm(20, 0),
            quiet_end: MinuteOfDay::hm(8, 0),
            sms_sender: "Bench".into(),
            allow_multiple_per_category: true,
            sms_daily_budget: 300,
            allow_foreign_mobiles: false,
        })
        .await
        .unwrap();
    let mut locations = Vec::new();
    for name in ["Hôtel de ville", "Annexe"] {
        locations.push(
            store
                .insert_location(&NewLocation {
                    commune_id: commune,
                    name: name.into(),
                    address: "1 place de la Mairie".into(),
                    postcode: "74000".into(),
                    city: "Bench".into(),
                    access_notes: String::new(),
                })
                .await
                .unwrap(),
        );
    }
    let service = store
        .insert_service(&NewService {
            commune_id: commune,
            name: "Carte d'identité et passeport".into(),
            spoken_name: "carte d'identité ou passeport".into(),
            category: Category::Titres,
            duration_minutes: 20,
            max_persons: 4,
            min_notice_minutes: 0,
            horizon_days: 60,
            channels: Channels::ALL,
            what_to_bring: String::new(),
        })
        .await
        .unwrap();
    for i in 0..PLANNINGS {
        let planning = store
            .insert_planning(&NewPlanning {
                commune_id: commune,
                name: format!("Station {}", i + 1),
                capacity: 1,
            })
            .await
            .unwrap();
        store
            .insert_opening_rule(&NewOpeningRule {
                planning_id: planning,
                location_id: locations[i % 2],
                weekdays: Weekdays::MONDAY_TO_FRIDAY,
                start: MinuteOfDay::hm(8, 0),
                end: MinuteOfDay::hm(18, 0),
                step_minutes: 20,
                valid_from: "2026-01-01".parse().unwrap(),
                valid_until: None,
                service_ids: vec![service],
            })
            .await
            .unwrap();
    }
    // 200 appointments on Monday, booked at the counter with a mobile each.
    let day = now.with_timezone(&Paris).date_naive();
    let slots = engine
        .free_slots(
            commune,
            service,
            SlotFilter {
                persons: 1,
                location: None,
                from: day,
                to: day,
                limit: None,
            },
        )
        .await
        .unwrap();
    let mut booked = 0;
    'outer: for slot in &slots {
        for _ in &slot.planning_ids {
            let n = booked;
            let request = BookingRequest {
                commune,
                service,
                start: slot.start,
                location: Some(slot.location_id),
                persons: 1,
                citizen: Citizen {
                    name: CitizenName::parse(&format!(
                        "{} {}",
                        FIRST[n % FIRST.len()],
                        LAST[(n / FIRST.len()) % LAST.len()]
                    ))
                    .unwrap(),
                    phone: Some(
                        PhoneE164::parse(&format!("06 39 98 {:02} {:02}", n / 100, n % 100))
                            .unwrap(),
                    ),
                    email: None,
                    ants_application_ids: Vec::new(),
                },
                channel: Channel::Agent,
            };
            engine.book(&request, BookingMode::Confirmed).await.unwrap();
            booked += 1;
            if booked == APPOINTMENTS {
                break 'outer;
            }
        }
    }
    assert_eq!(booked, APPOINTMENTS, "the day holds 200 appointments");

    // An agent and a session, as signing in would leave them.
    let agent = store
        .insert_agent(
            &NewAgent {
                email: "agent@bench.demo".into(),
                name: "Agent".into(),
                password_hash: "unused".into(),
                role: Role::Agent,
                commune_id: Some(commune),
            },
            now,
        )
        .await
        .unwrap();
    let token = "bench-session-token-0123456789";
    store
        .insert_session(
            &guichet::domain::otp::token_hash(token),
            agent,
            now,
            now + Duration::hours(12),
        )
        .await
        .unwrap();

    let app = guichet::App::new(
        store.clone(),
        Arc::new(ManualClock::new(now)) as Arc<dyn Clock>,
        guichet::config::Config {
            database_url: url.clone(),
            ..guichet::config::Config::default()
        },
        false,
    );
    let router = app.router();
    let path = format!("/agent/jour?date={day}");
    let get = || {
        let router = router.clone();
        let path = path.clone();
        async move {
            use tower::ServiceExt;
            let response = router
                .oneshot(
                    axum::http::Request::get(path)
                        .header("cookie", format!("guichet_agent={token}; guichet_csrf=x"))
                        .body(axum::body::Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            String::from_utf8_lossy(&body).into_owned()
        }
    };
    for _ in 0..20 {
        get().await;
    }
    let mut samples = Vec::new();
    let mut size = 0;
    let mut rows = 0;
    for _ in 0..500 {
        let started = Instant::now();
        let page = get().await;
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        size = page.len();
        rows = page.matches("href=\"/agent/rdv/").count();
    }
    assert_eq!(rows, APPOINTMENTS, "every appointment is on the page");
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    let p99 = percentile(&samples, 0.99);
    println!(
        "day view, {rows} appointments   mean {mean:.3} ms   p50 {:.3} ms   p99 {p99:.3} ms   max {:.3} ms   target 20 ms: {}",
        percentile(&samples, 0.5),
        samples[samples.len() - 1],
        if p99 <= 20.0 {
            "met (p99)"
        } else {
            "MISSED (p99)"
        }
    );
    println!("page size: {size} bytes");
}
