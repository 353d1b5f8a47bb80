//! The agents' day view with 200 appointments, rendered through the whole application
//! (session lookup, router, queries, template), as an agent at the counter reloads it all day.
//! Target on a 2-core machine: ≤ 20 ms p99. Run with `cargo bench --bench day`; it prints the
//! figures.

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Europe::Paris;
use guichet::booking::{BookingMode, BookingRequest, Engine};
use guichet::domain::slots::SlotFilter;
use guichet::domain::{
    Channel, Citizen, CitizenName, Clock, ManualClock, MinuteOfDay, PhoneE164, Role, Weekdays,
};
use guichet::store::{self, NewAgent, NewOpeningRule, NewPlanning};
use std::sync::Arc;
use std::time::Instant;

#[path = "support/mod.rs"]
mod support;

use support::percentile;

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
    let (commune, locations, service) = support::town(store.as_ref(), 60, true).await;
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
