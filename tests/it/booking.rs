//! The booking engine, on both backends: hold, confirm, cancel, move, mark; expiry without a
//! sweeper; duplicates refused with where and when; validation.

use crate::both_backends;
use crate::helpers::{TestDb, World, WorldOptions, paris};
use chrono::Duration;
use guichet::booking::{Attendance, BookingError, BookingMode, Cancellation};
use guichet::domain::slots::SlotFilter;
use guichet::domain::{AntsApplicationId, Channel, Status};
use guichet::store::NewClosure;

fn tuesday(h: u32, m: u32) -> chrono::DateTime<chrono::Utc> {
    paris("2026-12-01", h, m)
}

async fn free_starts(w: &World, location: Option<i64>) -> Vec<chrono::DateTime<chrono::Utc>> {
    w.engine
        .free_slots(
            w.commune,
            w.titres,
            SlotFilter {
                persons: 1,
                location,
                from: "2026-12-01".parse().unwrap(),
                to: "2026-12-01".parse().unwrap(),
                limit: None,
            },
        )
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.start)
        .collect()
}

async fn hold_confirm_cancel(db: TestDb) {
    let w = World::new(db).await;
    let nine = tuesday(9, 0);
    let mut request = w.request(w.titres, nine, 1);
    request.location = Some(w.town_hall);
    let held = w.engine.book(&request, BookingMode::Hold).await.unwrap();
    assert_eq!(held.status, Status::Held);
    assert_eq!(held.planning_id, w.counter);
    assert_eq!(held.seat, Some(1));
    assert_eq!(held.ends_at - held.starts_at, Duration::minutes(20));
    assert_eq!(
        held.hold_expires_at,
        Some(w.engine.now() + Duration::minutes(10))
    );
    // The held slot is no longer offered at the town hall.
    assert!(!free_starts(&w, Some(w.town_hall)).await.contains(&nine));

    let confirmed = w.engine.confirm(held.id).await.unwrap();
    assert_eq!(confirmed.status, Status::Confirmed);
    assert_eq!(confirmed.hold_expires_at, None);
    assert_eq!(confirmed.version, 2);
    assert_eq!(
        w.engine.confirm(held.id).await.unwrap().version,
        2,
        "confirming twice is harmless"
    );

    let cancelled = w
        .engine
        .cancel(held.id, &Cancellation::ByCitizen)
        .await
        .unwrap();
    assert_eq!(cancelled.status, Status::CancelledByCitizen);
    assert_eq!(cancelled.seat, None);
    assert!(free_starts(&w, Some(w.town_hall)).await.contains(&nine));
    assert_eq!(
        w.engine
            .cancel(held.id, &Cancellation::ByCitizen)
            .await
            .unwrap()
            .version,
        cancelled.version,
        "cancelling twice is harmless"
    );
    let err = w.engine.confirm(held.id).await.unwrap_err();
    assert!(
        matches!(err, BookingError::NotModifiable(Status::CancelledByCitizen)),
        "{err:?}"
    );
    let stored = w.store().appointment(held.id).await.unwrap().unwrap();
    assert_eq!(stored, cancelled);
}
both_backends!(hold_then_confirm_then_cancel, hold_confirm_cancel);

async fn first_available_fills_plannings_in_order(db: TestDb) {
    let w = World::new(db).await;
    let nine = tuesday(9, 0);
    // No location: the counter (1 seat) first, then the annex's two seats, then nothing.
    let plannings: Vec<_> = {
        let mut out = Vec::new();
        for n in 1..=3 {
            out.push(w.hold(nine, n).await);
        }
        out.iter().map(|a| (a.planning_id, a.seat)).collect()
    };
    assert_eq!(
        plannings,
        [
            (w.counter, Some(1)),
            (w.annex_planning, Some(1)),
            (w.annex_planning, Some(2))
        ]
    );
    let err = w
        .engine
        .book(&w.request(w.titres, nine, 4), BookingMode::Hold)
        .await
        .unwrap_err();
    assert!(matches!(err, BookingError::SlotTaken), "{err:?}");
    assert!(!free_starts(&w, None).await.contains(&nine));
}
both_backends!(first_available, first_available_fills_plannings_in_order);

/// A booking tries the plannings a listing's recent snapshot shows free; when another
/// instance has changed things since (taken those, freed others), it looks again before saying
/// "taken".
async fn a_stale_listing_does_not_refuse_a_free_seat(db: TestDb) {
    let w = World::new(db).await;
    let other = guichet::booking::Engine::new(
        w.db.store.clone(),
        std::sync::Arc::new(w.clock.clone()) as std::sync::Arc<dyn guichet::domain::Clock>,
        Duration::minutes(10),
    );
    let nine = tuesday(9, 0);
    let hold = async |n| {
        other
            .book(&w.request(w.titres, nine, n), BookingMode::Hold)
            .await
    };
    let counter = hold(1).await.unwrap();
    let annex = hold(2).await.unwrap();
    hold(3).await.unwrap();
    other
        .cancel(counter.id, &Cancellation::ByCitizen)
        .await
        .unwrap();
    // This instance lists: the counter free at nine, the annex full.
    assert!(free_starts(&w, None).await.contains(&nine));
    // Meanwhile, on the other instance: a seat at the annex freed, the counter taken.
    other
        .cancel(annex.id, &Cancellation::ByCitizen)
        .await
        .unwrap();
    assert_eq!(hold(4).await.unwrap().planning_id, w.counter);
    let booked = w.hold(nine, 5).await;
    assert_eq!(
        (booked.planning_id, booked.seat),
        (w.annex_planning, Some(1))
    );
    let err = w
        .engine
        .book(&w.request(w.titres, nine, 6), BookingMode::Hold)
        .await
        .unwrap_err();
    assert!(matches!(err, BookingError::SlotTaken), "{err:?}");
}
both_backends!(stale_listing, a_stale_listing_does_not_refuse_a_free_seat);

async fn expired_holds_stop_counting_by_themselves(db: TestDb) {
    let w = World::new(db).await;
    let nine = tuesday(9, 0);
    let mut request = w.request(w.titres, nine, 1);
    request.location = Some(w.town_hall);
    let first = w.engine.book(&request, BookingMode::Hold).await.unwrap();
    w.clock.advance(Duration::minutes(10));
    // Nothing ran in between, yet the slot is free again and the effective status is expired.
    assert!(free_starts(&w, Some(w.town_hall)).await.contains(&nine));
    let stored = w.store().appointment(first.id).await.unwrap().unwrap();
    assert_eq!(stored.effective_status(w.engine.now()), Status::Expired);
    // A lapsed hold whose seat is still free can still be confirmed.
    let confirmed = w.engine.confirm(first.id).await.unwrap();
    assert_eq!(confirmed.status, Status::Confirmed);
    assert_eq!(confirmed.seat, Some(1));

    // Another hold lapses and someone else takes the seat: confirming it is refused.
    let ten = tuesday(10, 0);
    let mut request = w.request(w.titres, ten, 2);
    request.location = Some(w.town_hall);
    let lapsed = w.engine.book(&request, BookingMode::Hold).await.unwrap();
    w.clock.advance(Duration::minutes(11));
    let mut other = w.request(w.titres, ten, 3);
    other.location = Some(w.town_hall);
    let taker = w.engine.book(&other, BookingMode::Hold).await.unwrap();
    assert_eq!(taker.seat, Some(1));
    let err = w.engine.confirm(lapsed.id).await.unwrap_err();
    assert!(matches!(err, BookingError::HoldExpired), "{err:?}");
    let lapsed = w.store().appointment(lapsed.id).await.unwrap().unwrap();
    assert_eq!(
        lapsed.status,
        Status::Expired,
        "the booking transaction wrote the expiry down"
    );
    assert_eq!(lapsed.seat, None);
}
both_backends!(expired_holds, expired_holds_stop_counting_by_themselves);

/// Another session holding `table` locked until it ends its transaction, and a way to count the
/// sessions waiting on it.
struct TableLock {
    blocker: sqlx::PgConnection,
    /// Outside any transaction: within one, PostgreSQL answers pg_stat_activity from the
    /// snapshot it took first.
    watcher: sqlx::PgConnection,
    waiting: String,
}

impl TableLock {
    async fn take(url: &str, table: &str, statements_like: &str) -> TableLock {
        use sqlx::{Connection, Executor};
        let mut blocker = sqlx::PgConnection::connect(url).await.unwrap();
        let watcher = sqlx::PgConnection::connect(url).await.unwrap();
        blocker.execute("BEGIN").await.unwrap();
        blocker
            .execute(sqlx::AssertSqlSafe(format!(
                "LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
            )))
            .await
            .unwrap();
        let waiting = format!(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND query LIKE '{statements_like}'"
        );
        TableLock {
            blocker,
            watcher,
            waiting,
        }
    }

    /// Sessions waiting on a lock in a statement like the one given.
    async fn waiting(&mut self) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(self.waiting.as_str()))
            .fetch_one(&mut self.watcher)
            .await
            .unwrap()
    }

    /// [`TableLock::waiting`], once a session waits (polled for five seconds at most).
    async fn first_waiting(&mut self) -> i64 {
        for _ in 0..500 {
            let waiting = self.waiting().await;
            if waiting > 0 {
                return waiting;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        0
    }

    async fn release(mut self, end: &'static str) {
        use sqlx::Executor;
        self.blocker.execute(end).await.unwrap();
    }
}

/// A rush finds the closures the listings read expired all at once (a second later): one hold
/// reads them, the others wait for that read rather than each making their own. Here the read
/// is held up by a lock on the table, and PostgreSQL shows how many sessions wait on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rush_reads_expired_closures_once() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let url = db.url.clone();
    let w = World::new(db).await;
    assert!(!free_starts(&w, Some(w.town_hall)).await.is_empty());
    w.clock.advance(Duration::seconds(2));

    let mut lock = TableLock::take(&url, "closures", "%FROM closures%").await;
    let w = std::sync::Arc::new(w);
    let holds: Vec<_> = (0..5)
        .map(|n| {
            let w = w.clone();
            tokio::spawn(async move {
                let mut request = w.request(
                    w.titres,
                    tuesday(9, 0) + Duration::minutes(20 * n),
                    n as u32,
                );
                request.location = Some(w.town_hall);
                w.engine.book(&request, BookingMode::Hold).await
            })
        })
        .collect();
    assert_eq!(lock.first_waiting().await, 1, "one hold reads the closures");
    // The others have had the time to read them too, if they were going to.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        lock.waiting().await,
        1,
        "the other holds wait for that read"
    );
    lock.release("COMMIT").await;
    for hold in holds {
        assert_eq!(hold.await.unwrap().unwrap().status, Status::Held);
    }
}

/// A seat a booking of this instance is taking counts as taken before it commits: the listings
/// stop showing it, and another hold for it hears "taken" at once; if the booking fails, the
/// seat is listed again. Here the booking is held up on the claims table, locked by another
/// session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seat_being_taken_is_not_listed() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let url = db.url.clone();
    let w = std::sync::Arc::new(World::new(db).await);
    let slot = tuesday(11, 40);
    // Citizen 1 has an appointment already: their booking of the slot will be refused, once
    // it gets to their claim.
    let mut earlier = w.request(w.titres, tuesday(9, 0), 1);
    earlier.location = Some(w.town_hall);
    w.engine
        .book(&earlier, BookingMode::Confirmed)
        .await
        .unwrap();
    assert!(free_starts(&w, Some(w.town_hall)).await.contains(&slot));

    let mut lock = TableLock::take(&url, "citizen_claims", "%citizen_claims%").await;
    let hold = |n: u32| {
        let w = w.clone();
        tokio::spawn(async move {
            let mut request = w.request(w.titres, slot, n);
            request.location = Some(w.town_hall);
            w.engine.book(&request, BookingMode::Hold).await
        })
    };
    let first = hold(1);
    lock.first_waiting().await;
    assert!(
        !free_starts(&w, Some(w.town_hall)).await.contains(&slot),
        "being taken: not listed"
    );
    let second = hold(2).await.unwrap().unwrap_err();
    assert!(matches!(second, BookingError::SlotTaken), "{second:?}");
    lock.release("ROLLBACK").await;
    let first = first.await.unwrap().unwrap_err();
    assert!(matches!(first, BookingError::Duplicate(_)), "{first:?}");
    assert!(
        free_starts(&w, Some(w.town_hall)).await.contains(&slot),
        "listed again once the booking failed"
    );
    let mut request = w.request(w.titres, slot, 2);
    request.location = Some(w.town_hall);
    w.engine.book(&request, BookingMode::Hold).await.unwrap();
}

async fn moves_are_atomic(db: TestDb) {
    let w = World::new(db).await;
    let mut request = w.request(w.titres, tuesday(9, 0), 1);
    request.location = Some(w.town_hall);
    let original = w
        .engine
        .book(&request, BookingMode::Confirmed)
        .await
        .unwrap();
    let mut blocker = w.request(w.titres, tuesday(10, 0), 2);
    blocker.location = Some(w.town_hall);
    w.engine
        .book(&blocker, BookingMode::Confirmed)
        .await
        .unwrap();

    // Onto a taken slot: refused, and nothing changed.
    let err = w
        .engine
        .move_to(original.id, tuesday(10, 0), Some(w.town_hall))
        .await
        .unwrap_err();
    assert!(matches!(err, BookingError::SlotTaken), "{err:?}");
    assert_eq!(
        w.store().appointment(original.id).await.unwrap().unwrap(),
        original
    );
    // Onto a time that is not a slot: refused too.
    let err = w
        .engine
        .move_to(original.id, tuesday(9, 10), None)
        .await
        .unwrap_err();
    assert!(matches!(err, BookingError::SlotUnavailable), "{err:?}");

    // Twenty minutes later on the same single-seat counter (overlapping nothing but itself).
    let moved = w
        .engine
        .move_to(original.id, tuesday(9, 20), Some(w.town_hall))
        .await
        .unwrap();
    assert_eq!(moved.status, Status::Confirmed);
    assert_eq!(moved.replaces_id, Some(original.id));
    assert_eq!(moved.citizen, original.citizen);
    let old = w.store().appointment(original.id).await.unwrap().unwrap();
    assert_eq!(old.status, Status::Moved);
    assert_eq!(old.seat, None);
    let free = free_starts(&w, Some(w.town_hall)).await;
    assert!(free.contains(&tuesday(9, 0)));
    assert!(!free.contains(&tuesday(9, 20)));
    // The citizen's claim went with the appointment: a second booking is still a duplicate.
    let err = w
        .engine
        .book(&w.request(w.titres, tuesday(11, 0), 1), BookingMode::Hold)
        .await
        .unwrap_err();
    assert!(matches!(err, BookingError::Duplicate(Some(_))), "{err:?}");
    // The old appointment cannot be moved again.
    let err = w
        .engine
        .move_to(original.id, tuesday(11, 0), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, BookingError::NotModifiable(Status::Moved)),
        "{err:?}"
    );
    // A move that overlaps the current appointment on a one-seat counter works: the old seat
    // is released in the same transaction. Two persons take 40 minutes; moving by 20 overlaps.
    let mut family = w.request(w.titres, tuesday(10, 20), 7);
    family.location = Some(w.town_hall);
    family.persons = 2;
    let family = w
        .engine
        .book(&family, BookingMode::Confirmed)
        .await
        .unwrap();
    let shifted = w
        .engine
        .move_to(family.id, tuesday(10, 40), Some(w.town_hall))
        .await
        .unwrap();
    assert_eq!(shifted.seat, Some(1));
    assert_eq!(shifted.starts_at, tuesday(10, 40));
    assert_eq!(shifted.ends_at, tuesday(11, 20));

    // Moving a hold does not give it more time.
    let held = w.hold(paris("2026-12-02", 9, 0), 8).await;
    w.clock.advance(Duration::minutes(6));
    let moved_hold = w
        .engine
        .move_to(held.id, paris("2026-12-02", 10, 0), None)
        .await
        .unwrap();
    assert_eq!(moved_hold.status, Status::Held);
    assert_eq!(moved_hold.hold_expires_at, held.hold_expires_at);
}
both_backends!(moves, moves_are_atomic);

async fn commune_cancellation_and_attendance(db: TestDb) {
    let w = World::new(db).await;
    let a = w
        .engine
        .book(
            &w.request(w.titres, tuesday(9, 0), 1),
            BookingMode::Confirmed,
        )
        .await
        .unwrap();
    let err = w.engine.mark(a.id, Attendance::Honoured).await.unwrap_err();
    assert!(matches!(err, BookingError::TooEarlyToMark), "{err:?}");
    // On the day, at 9:05, the agent marks the citizen as present, then corrects to absent.
    w.clock.set(tuesday(9, 5));
    assert_eq!(
        w.engine
            .mark(a.id, Attendance::Honoured)
            .await
            .unwrap()
            .status,
        Status::Honoured
    );
    let absent = w.engine.mark(a.id, Attendance::NoShow).await.unwrap();
    assert_eq!(absent.status, Status::NoShow);
    assert!(absent.seat.is_some(), "a past appointment keeps its seat");
    // A citizen cannot cancel once it started; the commune can cancel another one with a reason.
    let b = w
        .engine
        .book(
            &w.request(w.titres, tuesday(11, 0), 2),
            BookingMode::Confirmed,
        )
        .await
        .unwrap();
    let reason = "Station biométrique en panne".to_owned();
    let cancelled = w
        .engine
        .cancel(
            b.id,
            &Cancellation::ByCommune {
                reason: reason.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(cancelled.status, Status::CancelledByCommune);
    assert_eq!(cancelled.cancel_reason.as_deref(), Some(reason.as_str()));
    w.clock.set(tuesday(11, 30));
    let c = w
        .engine
        .book(
            &w.request(w.titres, tuesday(11, 40), 3),
            BookingMode::Confirmed,
        )
        .await
        .unwrap();
    w.clock.set(tuesday(11, 45));
    let err = w
        .engine
        .cancel(c.id, &Cancellation::ByCitizen)
        .await
        .unwrap_err();
    assert!(matches!(err, BookingError::AlreadyStarted), "{err:?}");
    let err = w
        .engine
        .cancel(uuid::Uuid::new_v4(), &Cancellation::ByCitizen)
        .await
        .unwrap_err();
    assert!(matches!(err, BookingError::AppointmentNotFound), "{err:?}");
}
both_backends!(
    cancellation_and_attendance,
    commune_cancellation_and_attendance
);

async fn duplicates_are_refused_with_where_and_when(db: TestDb) {
    let w = World::new(db).await;
    let first = w
        .engine
        .book(
            &w.request(w.titres, tuesday(9, 0), 1),
            BookingMode::Confirmed,
        )
        .await
        .unwrap();
    // Same mobile number, same category, another day: refused, saying where and when.
    let mut again = w.request(w.titres, paris("2026-12-02", 10, 0), 1);
    again.citizen.email = None;
    let err = w.engine.book(&again, BookingMode::Hold).await.unwrap_err();
    let message = err.message();
    assert!(matches!(err, BookingError::Duplicate(Some(_))), "{err:?}");
    assert!(
        message.contains("mardi 1er décembre 2026 à 9 h"),
        "{message}"
    );
    assert!(message.contains("Hôtel de ville"), "{message}");
    assert!(message.contains("Ville de testville"), "{message}");
    assert!(message.contains("déplacez ou annulez"), "{message}");
    // Same e-mail (in another case), another phone: refused too.
    let mut by_email = w.request(w.titres, paris("2026-12-02", 10, 0), 2);
    by_email.citizen.email = Some(guichet::domain::Email::parse("CITOYEN1@exemple.fr").unwrap());
    let err = w
        .engine
        .book(&by_email, BookingMode::Hold)
        .await
        .unwrap_err();
    assert!(matches!(err, BookingError::Duplicate(_)), "{err:?}");
    // Another category is fine.
    w.engine
        .book(&w.request(w.school, tuesday(9, 0), 1), BookingMode::Hold)
        .await
        .unwrap();
    // Once the first is cancelled, the citizen may book again.
    w.engine
        .cancel(first.id, &Cancellation::ByCitizen)
        .await
        .unwrap();
    w.engine.book(&again, BookingMode::Hold).await.unwrap();
    // ANTS application ids count across communes.
    let mut with_ants = w.request(w.titres, tuesday(10, 0), 5);
    with_ants.citizen.ants_application_ids = vec![AntsApplicationId::parse("ABCDE12345").unwrap()];
    w.engine
        .book(&with_ants, BookingMode::Confirmed)
        .await
        .unwrap();
    let other = World::with(
        w.db.shared(),
        WorldOptions {
            slug: "autreville",
            phone_number: "+33465719998",
            ..WorldOptions::default()
        },
    )
    .await;
    let mut elsewhere = other.request(other.titres, tuesday(10, 0), 6);
    elsewhere.citizen.ants_application_ids = vec![AntsApplicationId::parse("abcde12345").unwrap()];
    let err = other
        .engine
        .book(&elsewhere, BookingMode::Hold)
        .await
        .unwrap_err();
    assert!(
        err.message().contains("Ville de testville"),
        "{}",
        err.message()
    );
}
both_backends!(duplicates, duplicates_are_refused_with_where_and_when);

async fn communes_may_allow_several(db: TestDb) {
    let w = World::with(
        db,
        WorldOptions {
            allow_multiple: true,
            ..WorldOptions::default()
        },
    )
    .await;
    w.hold(tuesday(9, 0), 1).await;
    w.hold(tuesday(10, 0), 1).await;
}
both_backends!(allowed_multiple, communes_may_allow_several);

async fn changing_ones_mind_releases_the_earlier_hold(db: TestDb) {
    let w = World::new(db).await;
    let first = w.hold(tuesday(9, 0), 1).await;
    // The citizen goes back and picks another slot: the first hold is released at once.
    let second = w.hold(tuesday(10, 0), 1).await;
    let first = w.store().appointment(first.id).await.unwrap().unwrap();
    assert_eq!(first.status, Status::Expired);
    assert_eq!(first.seat, None);
    assert!(
        free_starts(&w, Some(w.town_hall))
            .await
            .contains(&tuesday(9, 0))
    );
    // A confirmed appointment is not replaced that way.
    w.engine.confirm(second.id).await.unwrap();
    let err = w
        .engine
        .book(&w.request(w.titres, tuesday(11, 0), 1), BookingMode::Hold)
        .await
        .unwrap_err();
    assert!(matches!(err, BookingError::Duplicate(Some(_))), "{err:?}");
    // Nor is a hold in another commune.
    let other = World::with(
        w.db.shared(),
        WorldOptions {
            slug: "autreville",
            phone_number: "+33465719998",
            ..WorldOptions::default()
        },
    )
    .await;
    let elsewhere = other.hold(tuesday(9, 0), 2).await;
    let err = w
        .engine
        .book(&w.request(w.titres, tuesday(11, 0), 2), BookingMode::Hold)
        .await
        .unwrap_err();
    assert!(matches!(err, BookingError::Duplicate(_)), "{err:?}");
    assert_eq!(
        other
            .store()
            .appointment(elsewhere.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        Status::Held
    );
}
both_backends!(
    changing_ones_mind,
    changing_ones_mind_releases_the_earlier_hold
);

async fn allowing_several_stays_within_the_commune(db: TestDb) {
    let lax = World::with(
        db,
        WorldOptions {
            allow_multiple: true,
            ..WorldOptions::default()
        },
    )
    .await;
    let strict = World::with(
        lax.db.shared(),
        WorldOptions {
            slug: "autreville",
            phone_number: "+33465719998",
            ..WorldOptions::default()
        },
    )
    .await;
    for hour in [9, 10] {
        lax.engine
            .book(
                &lax.request(lax.titres, tuesday(hour, 0), 1),
                BookingMode::Confirmed,
            )
            .await
            .unwrap();
    }
    let err = strict
        .engine
        .book(
            &strict.request(strict.titres, tuesday(9, 0), 1),
            BookingMode::Hold,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, BookingError::Duplicate(Some(_))), "{err:?}");
    assert!(
        err.message().contains("Ville de testville"),
        "{}",
        err.message()
    );
}
both_backends!(
    several_within_one_commune,
    allowing_several_stays_within_the_commune
);

async fn a_lapsed_hold_is_not_confirmed_into_a_closure(db: TestDb) {
    let w = World::new(db).await;
    let mut request = w.request(w.titres, tuesday(9, 0), 1);
    request.location = Some(w.town_hall);
    let held = w.engine.book(&request, BookingMode::Hold).await.unwrap();
    w.clock.advance(Duration::minutes(15));
    // Meanwhile the passport station broke down.
    w.store()
        .insert_closure(&NewClosure {
            commune_id: w.commune,
            planning_id: Some(w.counter),
            location_id: None,
            starts_at: tuesday(8, 0),
            ends_at: tuesday(12, 0),
            reason: "Panne".into(),
        })
        .await
        .unwrap();
    let err = w.engine.confirm(held.id).await.unwrap_err();
    assert!(matches!(err, BookingError::HoldExpired), "{err:?}");
}
both_backends!(
    lapsed_hold_and_closure,
    a_lapsed_hold_is_not_confirmed_into_a_closure
);

/// Listings reuse the closures read a moment ago, as they reuse the seats taken: a closure
/// made through this instance shows at once, one made through another within
/// `OCCUPANCY_TTL`; a booking always reads them afresh and refuses a closed slot.
async fn listings_see_closures_as_bookings_must(db: TestDb) {
    let w = World::new(db).await;
    let (nine, ten) = (tuesday(9, 0), tuesday(10, 0));
    let free = free_starts(&w, Some(w.town_hall)).await;
    assert!(free.contains(&nine) && free.contains(&ten));
    // Another instance closes the counter at nine.
    w.store()
        .insert_closure(&NewClosure {
            commune_id: w.commune,
            planning_id: Some(w.counter),
            location_id: None,
            starts_at: nine,
            ends_at: nine + Duration::minutes(20),
            reason: "Panne".into(),
        })
        .await
        .unwrap();
    assert!(
        free_starts(&w, Some(w.town_hall)).await.contains(&nine),
        "within the moment"
    );
    let mut request = w.request(w.titres, nine, 1);
    request.location = Some(w.town_hall);
    let err = w
        .engine
        .book(&request, BookingMode::Hold)
        .await
        .unwrap_err();
    assert!(matches!(err, BookingError::SlotUnavailable), "{err:?}");
    w.clock.advance(guichet::booking::OCCUPANCY_TTL);
    assert!(!free_starts(&w, Some(w.town_hall)).await.contains(&nine));
    // This instance closes ten o'clock: gone from the listing at once.
    w.engine
        .close_period(
            &NewClosure {
                commune_id: w.commune,
                planning_id: Some(w.counter),
                location_id: None,
                starts_at: ten,
                ends_at: ten + Duration::minutes(20),
                reason: "Panne".into(),
            },
            false,
        )
        .await
        .unwrap();
    assert!(!free_starts(&w, Some(w.town_hall)).await.contains(&ten));
}
both_backends!(closures_in_listings, listings_see_closures_as_bookings_must);

async fn requests_are_validated(db: TestDb) {
    let w = World::new(db).await;
    let engine = &w.engine;
    let book = |r| async move { engine.book(&r, BookingMode::Hold).await.unwrap_err() };
    let mut r = w.request(w.titres, tuesday(9, 0), 1);
    r.persons = 4;
    assert!(matches!(
        book(r).await,
        BookingError::InvalidPersons { max: 3 }
    ));
    let mut r = w.request(w.titres, tuesday(9, 0), 1);
    r.persons = 0;
    assert!(matches!(book(r).await, BookingError::InvalidPersons { .. }));
    let mut r = w.request(w.titres, tuesday(9, 0), 1);
    r.citizen.phone = None;
    r.citizen.email = None;
    assert!(matches!(book(r).await, BookingError::ContactRequired));
    let mut r = w.request(w.titres, tuesday(9, 0), 1);
    r.channel = Channel::Phone;
    r.citizen.phone = None;
    assert!(matches!(book(r).await, BookingError::ContactRequired));
    let mut r = w.request(w.titres, tuesday(9, 0), 1);
    r.citizen.ants_application_ids = vec![
        AntsApplicationId::parse("ABCDE12345").unwrap(),
        AntsApplicationId::parse("ABCDE12346").unwrap(),
    ];
    assert!(matches!(
        book(r).await,
        BookingError::TooManyAntsIds { persons: 1 }
    ));
    let mut r = w.request(w.school, tuesday(9, 0), 1);
    r.citizen.ants_application_ids = vec![AntsApplicationId::parse("ABCDE12345").unwrap()];
    assert!(matches!(book(r).await, BookingError::AntsNotExpected));
    let mut r = w.request(w.titres, tuesday(9, 0), 1);
    r.persons = 2;
    r.citizen.ants_application_ids = vec![AntsApplicationId::parse("ABCDE12345").unwrap(); 2];
    assert!(matches!(book(r).await, BookingError::RepeatedAntsId));
    // Not a slot: off the grid, outside hours, in the past, on a Saturday, on a holiday.
    for start in [
        tuesday(9, 5),
        tuesday(12, 0),
        paris("2026-11-30", 7, 0),
        paris("2026-12-05", 9, 0),
        paris("2026-12-25", 9, 0),
        paris("2027-03-01", 9, 0),
    ] {
        let err = book(w.request(w.titres, start, 1)).await;
        assert!(
            matches!(err, BookingError::SlotUnavailable),
            "{start}: {err:?}"
        );
    }
    // The school service is only at the annex.
    let mut r = w.request(w.school, tuesday(9, 0), 1);
    r.location = Some(w.town_hall);
    assert!(matches!(book(r).await, BookingError::SlotUnavailable));
    let mut r = w.request(w.titres, tuesday(9, 0), 1);
    r.service = 9999;
    assert!(matches!(book(r).await, BookingError::ServiceNotFound));
    let mut r = w.request(w.titres, tuesday(9, 0), 1);
    r.location = Some(9999);
    assert!(matches!(book(r).await, BookingError::LocationNotFound));
    // A closure of the counter moves bookings to the annex.
    w.store()
        .insert_closure(&NewClosure {
            commune_id: w.commune,
            planning_id: Some(w.counter),
            location_id: None,
            starts_at: tuesday(8, 0),
            ends_at: tuesday(12, 0),
            reason: "Formation".into(),
        })
        .await
        .unwrap();
    let a = w.hold(tuesday(9, 0), 1).await;
    assert_eq!(a.planning_id, w.annex_planning);
    // Three persons take one hour on one seat.
    let mut r = w.request(w.titres, tuesday(10, 0), 2);
    r.persons = 3;
    let family = w.engine.book(&r, BookingMode::Hold).await.unwrap();
    assert_eq!(family.ends_at - family.starts_at, Duration::hours(1));
    assert_eq!(family.persons, 3);
}
both_backends!(validation, requests_are_validated);
