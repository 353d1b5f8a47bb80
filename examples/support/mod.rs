//! What the load tools share: a local SMS provider speaking Twilio's `CreateMessage` contract
//! that hands each code to the simulated person waiting for it, percentiles, and the
//! server-side latency read from guichet's Prometheus histogram.

#![allow(dead_code)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use chrono::{Duration, Utc};
use chrono_tz::Europe::Paris;
use guichet::domain::{Category, Channels, MinuteOfDay, Weekdays, WeeklyHours};
use guichet::store::{NewCommune, NewLocation, NewOpeningRule, NewPlanning, NewService};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

pub const ACCOUNT_SID: &str = "AC00000000000000000000000000000000";
pub const TOWN_NUMBER: &str = "+33465719000";
const SLOTS_PER_PLANNING: usize = 144; // 08:00–20:00 every 5 minutes

/// Codes waiting to be read, by mobile number.
#[derive(Clone, Default)]
pub struct Phones(Arc<Mutex<HashMap<String, watch::Sender<Option<String>>>>>);

impl Phones {
    pub fn watch(&self, phone: &str) -> watch::Receiver<Option<String>> {
        let (tx, rx) = watch::channel(None);
        self.0.lock().unwrap().insert(phone.to_owned(), tx);
        rx
    }
}

/// A local SMS provider: `CreateMessage` in, 201 out; codes go to the waiting citizen.
async fn sms_endpoint(State(phones): State<Phones>, body: Bytes) -> impl IntoResponse {
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let (to, text) = (
        field("To").unwrap_or_default(),
        field("Body").unwrap_or_default(),
    );
    if let Some(code) = text
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        && let Some(tx) = phones.0.lock().unwrap().get(&to)
    {
        let _ = tx.send(Some(code.to_owned()));
    }
    (
        StatusCode::CREATED,
        axum::Json(
            json!({"sid": format!("SM{}", uuid::Uuid::new_v4().simple()), "status": "queued", "num_segments": "1"}),
        ),
    )
}

/// Starts the local SMS provider; returns its base URL and the codes it receives.
pub async fn sms_provider() -> (String, Phones) {
    let phones = Phones::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = Router::new()
        .route(
            "/2010-04-01/Accounts/{account}/Messages.json",
            post(sms_endpoint),
        )
        .with_state(phones.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (base, phones)
}

pub fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[((values.len() as f64 - 1.0) * p).round() as usize]
}

/// Requests counted for `route`, and the bucket bounds (ms) under which 50 % and 99 % of them
/// were answered, from guichet's `/metrics`.
pub fn server_side(metrics: &str, route: &str) -> (f64, f64, f64) {
    let mut buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("http_request_duration_seconds_bucket")
                && l.contains(&format!("route=\"{route}\""))
        })
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let count: f64 = l.rsplit(' ').next()?.parse().ok()?;
            Some((
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                },
                count,
            ))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    let total = buckets.last().map_or(0.0, |b| b.1);
    let bound = |p: f64| {
        buckets
            .iter()
            .find(|b| b.1 >= total * p)
            .map_or(f64::NAN, |b| b.0 * 1000.0)
    };
    (total, bound(0.5), bound(0.99))
}

/// The commune a rush books: one location, one five-minute service.
pub struct Commune {
    pub id: i64,
    pub service: i64,
    /// The day of the slots [`open_slots`] opened.
    pub day: chrono::NaiveDate,
    location: i64,
    plannings: Vec<i64>,
}

/// A commune with exactly `slots` five-minute slots tomorrow, one seat each.
pub async fn open_slots(store: &dyn guichet::store::Store, slots: usize) -> Commune {
    let tomorrow = Utc::now().with_timezone(&Paris).date_naive() + Duration::days(1);
    let commune = store
        .insert_commune(&NewCommune {
            slug: "ruee".into(),
            name: "Ruée".into(),
            insee_code: "74010".into(),
            timezone: Paris,
            population: 50_000,
            // The number the call load tool dials.
            phone_numbers: vec![TOWN_NUMBER.into()],
            switchboard_number: None,
            switchboard_hours: WeeklyHours::default(),
            reminder_delay_hours: 48,
            quiet_start: MinuteOfDay::hm(20, 0),
            quiet_end: MinuteOfDay::hm(8, 0),
            sms_sender: "Ruee".into(),
            allow_multiple_per_category: false,
            sms_daily_budget: 1_000_000,
            allow_foreign_mobiles: false,
        })
        .await
        .unwrap();
    let location = store
        .insert_location(&NewLocation {
            commune_id: commune,
            name: "Hôtel de ville".into(),
            address: "1 place de la Mairie".into(),
            postcode: "74000".into(),
            city: "Ruée".into(),
            access_notes: String::new(),
        })
        .await
        .unwrap();
    let service = store
        .insert_service(&NewService {
            commune_id: commune,
            name: "Carte d'identité et passeport".into(),
            spoken_name: "carte d'identité ou passeport".into(),
            category: Category::Titres,
            duration_minutes: 5,
            max_persons: 1,
            min_notice_minutes: 0,
            horizon_days: 3,
            channels: Channels::ALL,
            what_to_bring: String::new(),
        })
        .await
        .unwrap();
    let mut commune = Commune {
        id: commune,
        service,
        day: tomorrow,
        location,
        plannings: Vec::new(),
    };
    add_slots(store, &mut commune, slots, tomorrow).await;
    commune
}

/// Opens `slots` more five-minute slots on `day`, one seat each.
pub async fn add_slots(
    store: &dyn guichet::store::Store,
    commune: &mut Commune,
    slots: usize,
    day: chrono::NaiveDate,
) {
    let mut left = slots;
    while left > 0 {
        let here = left.min(SLOTS_PER_PLANNING);
        let planning = store
            .insert_planning(&NewPlanning {
                commune_id: commune.id,
                name: format!("Station {}", commune.plannings.len() + 1),
                capacity: 1,
            })
            .await
            .unwrap();
        commune.plannings.push(planning);
        store
            .insert_opening_rule(&NewOpeningRule {
                planning_id: planning,
                location_id: commune.location,
                weekdays: Weekdays(0x7f),
                start: MinuteOfDay::hm(8, 0),
                end: MinuteOfDay(8 * 60 + 5 * here as u16),
                step_minutes: 5,
                valid_from: day,
                valid_until: Some(day),
                service_ids: vec![commune.service],
            })
            .await
            .unwrap();
        left -= here;
    }
}

/// Gives each planning of `commune` `per_planning` past appointments, honoured, back to back
/// every twenty minutes up to yesterday evening: a platform that has served for years (45 a
/// day for three years are 50,000), whose history the reads of a rush must not go through.
pub async fn add_history(
    store: &dyn guichet::store::Store,
    commune: &Commune,
    per_planning: usize,
) {
    use guichet::domain::{Appointment, AppointmentId, Channel, Citizen, CitizenName, Status};
    let evening = Utc::now() - Duration::days(1);
    let name = CitizenName::parse("Usager d'avant").unwrap();
    for &planning in &commune.plannings {
        let mut tx = store.begin().await.unwrap();
        for n in 0..per_planning {
            if n > 0 && n % 5000 == 0 {
                tx.commit().await.unwrap();
                tx = store.begin().await.unwrap();
            }
            let starts_at = evening - Duration::minutes(20 * (n as i64 + 1));
            let at = starts_at - Duration::days(30);
            tx.insert_appointment(&Appointment {
                id: AppointmentId::new_v4(),
                commune_id: commune.id,
                planning_id: planning,
                location_id: commune.location,
                service_id: commune.service,
                starts_at,
                ends_at: starts_at + Duration::minutes(20),
                seat: Some(1),
                persons: 1,
                citizen: Citizen {
                    name: name.clone(),
                    phone: None,
                    email: None,
                    ants_application_ids: Vec::new(),
                },
                channel: Channel::Web,
                status: Status::Honoured,
                hold_expires_at: None,
                replaces_id: None,
                cancel_reason: None,
                version: 1,
                created_at: at,
                updated_at: at,
                confirmed_at: Some(at),
                cancelled_at: None,
            })
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    }
}

/// Overbooked seats (appointments beyond one per planning and slot) and confirmed bookings of a
/// commune on the day of its slots, counted in the database.
pub async fn overbooking(store: &dyn guichet::store::Store, commune: &Commune) -> (usize, usize) {
    let now = Utc::now();
    let midnight = |day: chrono::NaiveDate| {
        use chrono::TimeZone;
        Paris
            .from_local_datetime(&day.and_time(chrono::NaiveTime::MIN))
            .earliest()
            .unwrap()
            .with_timezone(&Utc)
    };
    let (from, to) = (
        midnight(commune.day),
        midnight(commune.day + Duration::days(1)),
    );
    let all = store.appointments(commune.id, from, to).await.unwrap();
    let mut per_slot: HashMap<(i64, chrono::DateTime<Utc>), usize> = HashMap::new();
    for a in all.iter().filter(|a| a.occupies_at(now)) {
        *per_slot.entry((a.planning_id, a.starts_at)).or_default() += 1;
    }
    let overbooked = per_slot.values().filter(|n| **n > 1).map(|n| n - 1).sum();
    let confirmed = all
        .iter()
        .filter(|a| a.status == guichet::domain::Status::Confirmed)
        .count();
    (overbooked, confirmed)
}

/// Prints, per route, the server-side latency read from guichet's `/metrics`.
pub async fn print_server_side(http: &reqwest::Client, base: &str, routes: &[(&str, &str)]) {
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (route, label) in routes {
        let (total, p50, p99) = server_side(&metrics, route);
        println!("server side   {label:<13} n={total:<6} p50 ≤ {p50:>5} ms   p99 ≤ {p99:>5} ms");
    }
}

/// The machine's CPU over a stretch of time (Linux's `/proc/stat`), and this process's part of
/// it (`/proc/self/stat`): guichet and the simulated people run in this process, PostgreSQL and
/// the rest of the machine outside it. On a machine of two cores shared by all of them, the
/// latencies follow from how busy it was; and the CPU spent per booking tells a slower machine
/// from slower code when two runs differ. Both are counted in clock ticks (hundredths of a
/// second, per core): over a rush of a fraction of a second the figures are rough, to a few
/// percent. Nothing is printed where those files do not exist.
pub struct CpuMeter {
    started: std::time::Instant,
    machine: Option<MachineTicks>,
    own: Option<u64>,
}

#[derive(Clone, Copy)]
struct MachineTicks {
    busy: u64,
    idle: u64,
    cores: u64,
}

fn machine_ticks() -> Option<MachineTicks> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let mut lines = stat.lines();
    let total: Vec<u64> = lines
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|n| n.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is counted in user).
    let field = |i: usize| total.get(i).copied().unwrap_or(0);
    let cores = lines.filter(|l| l.starts_with("cpu")).count() as u64;
    Some(MachineTicks {
        busy: field(0) + field(1) + field(2) + field(5) + field(6) + field(7),
        idle: field(3) + field(4),
        cores: cores.max(1),
    })
}

/// This process's user and system time, in clock ticks.
fn own_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name, in parentheses, may hold spaces: the fields are counted after it.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime: fields 14 and 15 of proc(5), the 12th and 13th after the name.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

impl CpuMeter {
    pub fn start() -> Self {
        Self {
            started: std::time::Instant::now(),
            machine: machine_ticks(),
            own: own_ticks(),
        }
    }

    /// How busy the machine was since [`CpuMeter::start`], in all and per booking; None where
    /// it cannot be read.
    pub fn summary(&self, what: &str, bookings: usize) -> Option<String> {
        let wall = self.started.elapsed().as_secs_f64();
        let (Some(before), Some(after), Some(own_before), Some(own_after)) =
            (self.machine, machine_ticks(), self.own, own_ticks())
        else {
            return None;
        };
        let busy = after.busy.saturating_sub(before.busy) as f64;
        let idle = after.idle.saturating_sub(before.idle) as f64;
        if busy + idle == 0.0 || wall == 0.0 {
            return None;
        }
        // Clock ticks per second, from the machine's own count over the stretch (every core
        // counts each tick as busy or idle), so that no C library call is needed for it.
        let hz = (busy + idle) / (wall * after.cores as f64);
        let busy_s = busy / hz;
        let own_s = own_after.saturating_sub(own_before) as f64 / hz;
        let per_booking = if bookings > 0 {
            format!("   {:.1} ms per booking", busy_s * 1000.0 / bookings as f64)
        } else {
            String::new()
        };
        Some(format!(
            "machine CPU {what}: {:.0} % busy of {} cores, {busy_s:.2} CPU-s{per_booking}; \
             this process (guichet and the people) {own_s:.2} CPU-s, the rest (the database, …) {:.2}",
            100.0 * busy / (busy + idle),
            after.cores,
            (busy_s - own_s).max(0.0)
        ))
    }
}
