//! Randomised storms: batches of concurrent holds, agent bookings, confirmations, cancellations
//! and moves, with the clock jumping forward so that holds expire, on both backends. After every
//! batch the whole database is checked against invariants 1 and 2 and against the free-slot
//! list. `GUICHET_STORM_STEPS` and `GUICHET_STORM_SEED` make a storm longer or replay one.

use crate::helpers::{TestDb, World, WorldOptions, paris};
use chrono::{DateTime, Duration, Utc};
use guichet::booking::{BookingError, BookingMode, Cancellation};
use guichet::domain::slots::SlotFilter;
use guichet::domain::{AppointmentId, Category, Channel, Status};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone)]
enum Op {
    Book {
        start: DateTime<Utc>,
        citizen: u32,
        persons: u32,
        location: Option<i64>,
        school: bool,
        mode: BookingMode,
    },
    Confirm(AppointmentId),
    CancelByCitizen(AppointmentId),
    CancelByCommune(AppointmentId),
    Move(AppointmentId, DateTime<Utc>, Option<i64>),
}

fn candidate_starts() -> Vec<DateTime<Utc>> {
    let mut starts = Vec::new();
    for day in ["2026-12-01", "2026-12-02"] {
        for minutes in (0..180).step_by(20) {
            starts.push(paris(day, 9, 0) + Duration::minutes(minutes));
        }
    }
    starts
}

fn random_op(rng: &mut StdRng, w: &World, known: &[AppointmentId], starts: &[DateTime<Utc>]) -> Op {
    let pick_known = |rng: &mut StdRng| known[rng.random_range(0..known.len())];
    let location = |rng: &mut StdRng| match rng.random_range(0..3) {
        0 => Some(w.town_hall),
        1 => Some(w.annex),
        _ => None,
    };
    let roll = rng.random_range(0..100);
    if known.is_empty() || roll < 45 {
        let school = rng.random_bool(0.2);
        return Op::Book {
            start: starts[rng.random_range(0..starts.len())],
            // A small population, so that duplicates happen.
            citizen: rng.random_range(0..14),
            persons: if school { 1 } else { rng.random_range(1..=2) },
            location: if school { Some(w.annex) } else { location(rng) },
            school,
            mode: if rng.random_bool(0.3) {
                BookingMode::Confirmed
            } else {
                BookingMode::Hold
            },
        };
    }
    match roll {
        45..=64 => Op::Confirm(pick_known(rng)),
        65..=74 => Op::CancelByCitizen(pick_known(rng)),
        75..=79 => Op::CancelByCommune(pick_known(rng)),
        _ => Op::Move(
            pick_known(rng),
            starts[rng.random_range(0..starts.len())],
            location(rng),
        ),
    }
}

/// Runs one operation; returns the appointments it created. Only domain refusals are
/// acceptable failures — never a storage error.
async fn run(w: &World, op: Op) -> Vec<AppointmentId> {
    let result = match op {
        Op::Book {
            start,
            citizen,
            persons,
            location,
            school,
            mode,
        } => {
            let service = if school { w.school } else { w.titres };
            let mut request = w.request(service, start, citizen);
            request.persons = persons;
            request.location = location;
            request.channel = if mode == BookingMode::Confirmed {
                Channel::Agent
            } else {
                Channel::Web
            };
            w.engine.book(&request, mode).await.map(|a| vec![a.id])
        }
        Op::Confirm(id) => w.engine.confirm(id).await.map(|_| vec![]),
        Op::CancelByCitizen(id) => w
            .engine
            .cancel(id, &Cancellation::ByCitizen)
            .await
            .map(|_| vec![]),
        Op::CancelByCommune(id) => w
            .engine
            .cancel(
                id,
                &Cancellation::ByCommune {
                    reason: "Tempête".into(),
                },
            )
            .await
            .map(|_| vec![]),
        Op::Move(id, start, location) => w
            .engine
            .move_to(id, start, location)
            .await
            .map(|a| vec![a.id]),
    };
    match result {
        Ok(created) => created,
        Err(
            BookingError::SlotTaken
            | BookingError::SlotUnavailable
            | BookingError::Duplicate(_)
            | BookingError::HoldExpired
            | BookingError::NotModifiable(_)
            | BookingError::AlreadyStarted,
        ) => vec![],
        Err(other) => panic!("storm operation failed: {other:?}"),
    }
}

/// Invariants 1 and 2, checked on everything the database holds.
async fn check(w: &World, step: usize) {
    let now = w.engine.now();
    let all = w.all_appointments().await;
    let capacity: HashMap<i64, i32> = w
        .store()
        .plannings(w.commune)
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.id, p.capacity))
        .collect();
    // Invariant 1: at no instant do counting appointments exceed capacity; seats never overlap.
    for (planning, cap) in &capacity {
        let counting: Vec<_> = all
            .iter()
            .filter(|a| a.planning_id == *planning && a.occupies_at(now))
            .collect();
        let mut events: Vec<(DateTime<Utc>, i32)> = counting
            .iter()
            .flat_map(|a| [(a.starts_at, 1), (a.ends_at, -1)])
            .collect();
        events.sort_by_key(|(t, delta)| (*t, *delta));
        let mut load = 0;
        for (t, delta) in events {
            load += delta;
            assert!(
                load <= *cap,
                "step {step}: planning {planning} has {load} > {cap} at {t}"
            );
        }
        for a in &counting {
            assert!(
                a.seat.unwrap() <= *cap,
                "step {step}: seat beyond capacity: {a:?}"
            );
            for b in &counting {
                if a.id != b.id && a.seat == b.seat {
                    assert!(
                        a.ends_at <= b.starts_at || b.ends_at <= a.starts_at,
                        "step {step}: seat shared by {a:?} and {b:?}"
                    );
                }
            }
        }
    }
    // Invariant 2: one active appointment per category and phone / e-mail.
    let category = |service| {
        if service == w.school {
            Category::Scolaire
        } else {
            Category::Titres
        }
    };
    let mut seen = HashSet::new();
    for a in all.iter().filter(|a| a.is_active(now)) {
        let phone = a.citizen.phone.as_ref().map(|p| p.as_str().to_owned());
        let email = a.citizen.email.as_ref().map(|e| e.dedup_key());
        for key in [phone, email].into_iter().flatten() {
            assert!(
                seen.insert((category(a.service_id), key.clone())),
                "step {step}: {key} has two active appointments in {:?}",
                category(a.service_id)
            );
        }
    }
    // Every move left exactly one successor.
    for moved in all.iter().filter(|a| a.status == Status::Moved) {
        let successors = all
            .iter()
            .filter(|b| b.replaces_id == Some(moved.id))
            .count();
        assert_eq!(
            successors, 1,
            "step {step}: moved {} has {successors} successors",
            moved.id
        );
    }
    // The free-slot list never offers a full planning.
    let slots = w
        .engine
        .free_slots(
            w.commune,
            w.titres,
            SlotFilter {
                persons: 1,
                location: None,
                from: "2026-12-01".parse().unwrap(),
                to: "2026-12-02".parse().unwrap(),
                limit: None,
            },
        )
        .await
        .unwrap();
    for slot in slots {
        let end = slot.start + Duration::minutes(20);
        let any_free = slot.planning_ids.iter().any(|p| {
            let busy = all
                .iter()
                .filter(|a| a.planning_id == *p && a.occupies_at(now))
                .filter(|a| a.starts_at < end && slot.start < a.ends_at)
                .count() as i32;
            busy < capacity[p]
        });
        assert!(
            any_free,
            "step {step}: slot offered on a full planning: {slot:?}"
        );
    }
}

async fn storm(db: TestDb) {
    let steps: usize = std::env::var("GUICHET_STORM_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let seed: u64 = std::env::var("GUICHET_STORM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!(
        "storm on {}: {steps} steps, GUICHET_STORM_SEED={seed}",
        db.backend
    );
    let w = World::with(
        db,
        WorldOptions {
            counter_capacity: 1,
            annex_capacity: 2,
            ..WorldOptions::default()
        },
    )
    .await;
    let mut rng = StdRng::seed_from_u64(seed);
    let starts = candidate_starts();
    let mut known: Vec<AppointmentId> = Vec::new();
    let mut operations = 0;
    for step in 0..steps {
        let batch: Vec<Op> = (0..rng.random_range(1..=6))
            .map(|_| random_op(&mut rng, &w, &known, &starts))
            .collect();
        operations += batch.len();
        // The batch runs concurrently: each engine call waits on the database, so their
        // transactions interleave.
        let created = futures::future::join_all(batch.into_iter().map(|op| run(&w, op))).await;
        known.extend(created.into_iter().flatten());
        check(&w, step).await;
        // Time passes: sometimes a few seconds, sometimes past a hold's expiry. Longer storms
        // take smaller steps, so that the booked days always stay ahead.
        let scale = (150.0 / steps as f64).min(1.0);
        w.clock.advance(Duration::seconds(
            (rng.random_range(0..420) as f64 * scale) as i64,
        ));
    }
    let all = w.all_appointments().await;
    let statuses: HashSet<Status> = all.iter().map(|a| a.status).collect();
    eprintln!(
        "storm: {operations} operations, {} appointments, statuses {statuses:?}",
        all.len()
    );
    // The storm exercised the interesting paths.
    for status in [Status::Confirmed, Status::Moved, Status::CancelledByCitizen] {
        assert!(
            statuses.contains(&status),
            "no {status} appointment: seed {seed}"
        );
    }
}

crate::both_backends!(randomised_storm, storm);
