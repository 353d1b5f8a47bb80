//! What the benchmarks share: the town they measure — a commune with two locations and one
//! CNI/passport service (20 minutes a person, up to 4) — and their percentiles.

use chrono_tz::Europe::Paris;
use guichet::domain::{Category, Channels, MinuteOfDay, WeeklyHours};
use guichet::store::{NewCommune, NewLocation, NewService, Store};

/// The commune "bench", its two locations (town hall, annex) and its service.
pub async fn town(
    store: &dyn Store,
    horizon_days: i32,
    allow_multiple_per_category: bool,
) -> (i64, Vec<i64>, i64) {
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
            allow_multiple_per_category,
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
            horizon_days,
            channels: Channels::ALL,
            what_to_bring: String::new(),
        })
        .await
        .unwrap();
    (commune, locations, service)
}

/// The value at `p` (0–1) of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}
