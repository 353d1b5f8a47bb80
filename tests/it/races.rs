//! Invariant 1 under real concurrency, on both backends: many tasks race for the same seats
//! through the engine (separate connections, real transactions); exactly capacity of them win.

use crate::both_backends;
use crate::helpers::{TestDb, World, WorldOptions, paris};
use guichet::booking::{BookingError, BookingMode, Engine};
use guichet::domain::{Channel, Clock, Status};
use std::sync::Arc;
use tokio::sync::Barrier;

/// Starts `n` bookings of the same slot at once; returns how many succeeded, and checks that
/// every failure is a clean "slot taken".
async fn race(w: &World, n: u32, location: i64, first_citizen: u32) -> usize {
    let start = paris("2026-12-01", 9, 0);
    // Half the tasks go through a second store on the same database, as a second guichet
    // instance would: its own pool, its own connections.
    let second = Engine::new(
        w.db.reopen().await,
        Arc::new(w.clock.clone()) as Arc<dyn Clock>,
        chrono::Duration::minutes(10),
    );
    let barrier = Arc::new(Barrier::new(n as usize));
    let mut tasks = Vec::new();
    for i in 0..n {
        let engine = if i % 2 == 0 {
            w.engine.clone()
        } else {
            second.clone()
        };
        let barrier = barrier.clone();
        let mut request = w.request(w.titres, start, first_citizen + i);
        request.location = Some(location);
        // Mix the channels: web holds, phone holds, agents confirm at once.
        let (channel, mode) = match i % 3 {
            0 => (Channel::Web, BookingMode::Hold),
            1 => (Channel::Phone, BookingMode::Hold),
            _ => (Channel::Agent, BookingMode::Confirmed),
        };
        request.channel = channel;
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            engine.book(&request, mode).await
        }));
    }
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(BookingError::SlotTaken) => {}
            Err(other) => panic!("unexpected error in the race: {other:?}"),
        }
    }
    won
}

async fn occupying(w: &World, planning: i64) -> Vec<i32> {
    let now = w.engine.now();
    let mut seats: Vec<i32> = w
        .all_appointments()
        .await
        .into_iter()
        .filter(|a| a.planning_id == planning && a.occupies_at(now))
        .filter_map(|a| a.seat)
        .collect();
    seats.sort();
    seats
}

async fn fifty_tasks_one_seat(db: TestDb) {
    let w = World::new(db).await;
    assert_eq!(
        race(&w, 50, w.town_hall, 1).await,
        1,
        "exactly one of 50 wins"
    );
    assert_eq!(occupying(&w, w.counter).await, [1]);
}
both_backends!(fifty_for_one_seat, fifty_tasks_one_seat);

async fn two_hundred_tasks_twenty_seats(db: TestDb) {
    let w = World::with(
        db,
        WorldOptions {
            annex_capacity: 20,
            ..WorldOptions::default()
        },
    )
    .await;
    assert_eq!(race(&w, 200, w.annex, 1).await, 20, "exactly 20 of 200 win");
    assert_eq!(
        occupying(&w, w.annex_planning).await,
        (1..=20).collect::<Vec<_>>()
    );
}
both_backends!(two_hundred_for_twenty_seats, two_hundred_tasks_twenty_seats);

/// Movers and new bookings race for one seat: one wins; every mover that lost still has its
/// original appointment, untouched.
async fn moves_race_with_bookings(db: TestDb) {
    let w = World::new(db).await;
    let target = paris("2026-12-01", 9, 0);
    let mut originals = Vec::new();
    for (i, day) in ["2026-12-02", "2026-12-03", "2026-12-04"]
        .iter()
        .enumerate()
    {
        for (j, hour) in [9, 10, 11].iter().enumerate() {
            let mut request = w.request(w.titres, paris(day, *hour, 0), 100 + (i * 3 + j) as u32);
            request.location = Some(w.town_hall);
            originals.push(
                w.engine
                    .book(&request, BookingMode::Confirmed)
                    .await
                    .unwrap(),
            );
        }
    }
    let barrier = Arc::new(Barrier::new(originals.len() * 2));
    let mut tasks = Vec::new();
    for (i, original) in originals.iter().enumerate() {
        let (engine, id, b) = (w.engine.clone(), original.id, barrier.clone());
        let town_hall = w.town_hall;
        tasks.push(tokio::spawn(async move {
            b.wait().await;
            engine
                .move_to(id, target, Some(town_hall))
                .await
                .map(|_| ())
        }));
        let (engine, b) = (w.engine.clone(), barrier.clone());
        let mut request = w.request(w.titres, target, 200 + i as u32);
        request.location = Some(w.town_hall);
        tasks.push(tokio::spawn(async move {
            b.wait().await;
            engine.book(&request, BookingMode::Hold).await.map(|_| ())
        }));
    }
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => won += 1,
            Err(BookingError::SlotTaken) => {}
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    assert_eq!(won, 1);
    let mut kept = 0;
    for original in &originals {
        let now = w.store().appointment(original.id).await.unwrap().unwrap();
        match now.status {
            Status::Confirmed => {
                assert_eq!(&now, original, "a losing move changes nothing");
                kept += 1;
            }
            Status::Moved => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(kept >= originals.len() - 1);
    // The originals still standing, plus the one appointment that won the target slot.
    assert_eq!(occupying(&w, w.counter).await.len(), kept + 1);
}
both_backends!(moves_race, moves_race_with_bookings);

/// Invariant 2 under concurrency: one citizen, through agents of two communes at once, on many
/// slots and plannings: exactly one confirmed appointment comes out.
async fn one_citizen_races_against_itself(db: TestDb) {
    let w = World::new(db).await;
    let other = World::with(
        w.db.shared(),
        WorldOptions {
            slug: "autreville",
            phone_number: "+33465719998",
            ..WorldOptions::default()
        },
    )
    .await;
    let barrier = Arc::new(Barrier::new(24));
    let mut tasks = Vec::new();
    for i in 0..24u32 {
        let world = if i % 2 == 0 { &w } else { &other };
        let engine = world.engine.clone();
        let start =
            paris("2026-12-01", 9, 0) + chrono::Duration::minutes(20 * i64::from(i / 2 % 9));
        let mut request = world.request(world.titres, start, 42);
        request.channel = Channel::Agent;
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            engine.book(&request, BookingMode::Confirmed).await
        }));
    }
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(BookingError::Duplicate(_)) => {}
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    assert_eq!(
        won, 1,
        "one appointment per citizen and category, platform-wide"
    );
}
both_backends!(one_citizen_two_communes, one_citizen_races_against_itself);

/// A seat another transaction is taking is not waited for (PostgreSQL, where bookings of one
/// planning run side by side): while that transaction is still open, a hold aimed at the slot
/// takes the next free seat, and the one after hears "taken" at once. Were they to wait, the
/// holds would only return once the other transaction ends — here, never before they do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seat_being_taken_is_not_waited_for() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let w = World::new(db).await;
    let start = paris("2026-12-04", 11, 40);
    let store = w.store();
    let mut taking = store.begin().await.unwrap();
    let first = crate::store::appointment(&w, start, 1, Status::Held);
    assert!(
        taking
            .insert_appointment_on_free_seat(&first)
            .await
            .unwrap()
    );

    let mut request = w.request(w.titres, start, 1);
    request.location = Some(w.annex);
    let held = w.engine.book(&request, BookingMode::Hold).await.unwrap();
    assert_eq!(held.seat, Some(2), "the seat being taken is skipped");
    let mut request = w.request(w.titres, start, 2);
    request.location = Some(w.annex);
    let err = w
        .engine
        .book(&request, BookingMode::Hold)
        .await
        .unwrap_err();
    assert!(matches!(err, BookingError::SlotTaken), "{err:?}");

    taking.commit().await.unwrap();
    assert_eq!(occupying(&w, w.annex_planning).await, [1, 2]);
}
