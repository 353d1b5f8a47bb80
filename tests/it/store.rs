//! The storage conformance suite: every operation of the `Store` and `StoreTx` traits, run on
//! SQLite and on PostgreSQL, with the same expectations.

use crate::both_backends;
use crate::helpers::{World, citizen, paris};
use chrono::{DateTime, Duration, Utc};
use guichet::domain::{
    AntsApplicationId, Appointment, AppointmentId, Category, Channel, MinuteOfDay, Status,
    Weekdays, WeeklyHours, WeeklyRange,
};
use guichet::store::{Claim, ClaimHolder, ClaimKind, NewClosure, NewCommune, Seats, StoreError};

pub(crate) fn appointment(
    w: &World,
    start: DateTime<Utc>,
    seat: i32,
    status: Status,
) -> Appointment {
    let now = w.clock_now();
    Appointment {
        id: AppointmentId::new_v4(),
        commune_id: w.commune,
        planning_id: w.annex_planning,
        location_id: w.annex,
        service_id: w.titres,
        starts_at: start,
        ends_at: start + Duration::minutes(20),
        seat: status.occupies_seat().then_some(seat),
        persons: 1,
        citizen: citizen(seat as u32),
        channel: Channel::Agent,
        status,
        hold_expires_at: (status == Status::Held).then(|| now + Duration::minutes(10)),
        replaces_id: None,
        cancel_reason: None,
        version: 1,
        created_at: now,
        updated_at: now,
        confirmed_at: None,
        cancelled_at: None,
    }
}

impl World {
    fn clock_now(&self) -> DateTime<Utc> {
        use guichet::domain::Clock;
        self.clock.now()
    }
}

async fn communes_round_trip(db: crate::helpers::TestDb) {
    let w = World::new(db).await;
    let store = w.store();
    let all = store.communes().await.unwrap();
    assert_eq!(all.len(), 1);
    let c = &all[0];
    assert_eq!(c.slug, "testville");
    assert_eq!(c.phone_numbers, vec!["+33465719999".to_owned()]);
    assert_eq!(c.timezone, chrono_tz::Europe::Paris);
    assert_eq!(c.quiet_start, MinuteOfDay::hm(20, 0));
    assert_eq!(store.commune(w.commune).await.unwrap().as_ref(), Some(c));
    assert_eq!(
        store.commune_by_slug("testville").await.unwrap().as_ref(),
        Some(c)
    );
    assert_eq!(store.commune_by_slug("nowhere").await.unwrap(), None);
    assert_eq!(
        store
            .commune_by_phone_number("+33465719999")
            .await
            .unwrap()
            .map(|c| c.id),
        Some(w.commune)
    );
    assert_eq!(
        store.commune_by_phone_number("+33465710000").await.unwrap(),
        None
    );

    let hours = WeeklyHours(vec![WeeklyRange {
        weekdays: Weekdays::MONDAY_TO_FRIDAY,
        start: MinuteOfDay::hm(8, 30),
        end: MinuteOfDay::hm(12, 0),
    }]);
    let second = NewCommune {
        slug: "autreville".into(),
        name: "Autreville".into(),
        insee_code: "97411".into(),
        timezone: chrono_tz::Indian::Reunion,
        population: 150_000,
        phone_numbers: vec!["+33465718888".into(), "+33465718889".into()],
        switchboard_number: None,
        switchboard_hours: hours.clone(),
        reminder_delay_hours: 24,
        quiet_start: MinuteOfDay::hm(21, 0),
        quiet_end: MinuteOfDay::hm(7, 30),
        sms_sender: "Autreville".into(),
        allow_multiple_per_category: true,
        sms_daily_budget: 300,
        allow_foreign_mobiles: false,
    };
    let id = store.insert_commune(&second).await.unwrap();
    let got = store.commune(id).await.unwrap().unwrap();
    assert_eq!(got.timezone, chrono_tz::Indian::Reunion);
    assert_eq!(got.switchboard_hours, hours);
    assert_eq!(got.phone_numbers.len(), 2);
    assert!(got.allow_multiple_per_category);
    assert_eq!(store.communes().await.unwrap().len(), 2);

    // The database refuses a second commune with the same slug or phone number, atomically.
    let err = store
        .insert_commune(&NewCommune {
            phone_numbers: vec![],
            ..second.clone()
        })
        .await
        .unwrap_err();
    assert!(err.is_constraint("communes_slug_key"), "{err:?}");
    let err = store
        .insert_commune(&NewCommune {
            slug: "troisieme".into(),
            phone_numbers: vec!["+33465719999".into()],
            ..second
        })
        .await
        .unwrap_err();
    assert!(
        err.is_constraint("commune_phone_numbers_number_key"),
        "{err:?}"
    );
    assert_eq!(
        store.commune_by_slug("troisieme").await.unwrap(),
        None,
        "nothing half-written"
    );
}
both_backends!(communes, communes_round_trip);

async fn configuration_round_trip(db: crate::helpers::TestDb) {
    let w = World::new(db).await;
    let store = w.store();
    let locations = store.locations(w.commune).await.unwrap();
    assert_eq!(
        locations
            .iter()
            .map(|l| (l.id, l.name.as_str()))
            .collect::<Vec<_>>(),
        [(w.town_hall, "Hôtel de ville"), (w.annex, "Annexe")]
    );
    let services = store.services(w.commune).await.unwrap();
    assert_eq!(services.len(), 2);
    assert_eq!(services[0].category, Category::Titres);
    assert_eq!(services[0].max_persons, 3);
    assert_eq!(
        store
            .service(w.school)
            .await
            .unwrap()
            .unwrap()
            .duration_minutes,
        30
    );
    assert_eq!(store.service(9999).await.unwrap(), None);
    let plannings = store.plannings(w.commune).await.unwrap();
    assert_eq!(
        plannings.iter().map(|p| p.capacity).collect::<Vec<_>>(),
        [1, 2]
    );
    let rules = store.opening_rules(w.commune).await.unwrap();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].service_ids, vec![w.titres]);
    assert_eq!(rules[1].service_ids, vec![w.titres, w.school]);
    assert_eq!(rules[1].start, MinuteOfDay::hm(9, 0));
    assert_eq!(rules[1].weekdays, Weekdays::MONDAY_TO_FRIDAY);
    assert_eq!(rules[1].valid_until, None);

    let closure = NewClosure {
        commune_id: w.commune,
        planning_id: Some(w.counter),
        location_id: None,
        starts_at: paris("2026-12-01", 9, 0),
        ends_at: paris("2026-12-01", 12, 0),
        reason: "Formation".into(),
    };
    let id = store.insert_closure(&closure).await.unwrap();
    let found = store
        .closures(
            w.commune,
            paris("2026-12-01", 0, 0),
            paris("2026-12-02", 0, 0),
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, id);
    assert_eq!(found[0].starts_at, closure.starts_at);
    assert_eq!(found[0].planning_id, Some(w.counter));
    // Overlap is strict: a closure ending at 12:00 is not in a window starting at 12:00.
    let after = store
        .closures(
            w.commune,
            paris("2026-12-01", 12, 0),
            paris("2026-12-02", 0, 0),
        )
        .await
        .unwrap();
    assert!(after.is_empty());
    // A closure must end after it starts.
    let err = store
        .insert_closure(&NewClosure {
            ends_at: closure.starts_at,
            ..closure
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Constraint(_)), "{err:?}");
}
both_backends!(configuration, configuration_round_trip);

async fn appointments_round_trip(db: crate::helpers::TestDb) {
    let w = World::new(db).await;
    let store = w.store();
    let start = paris("2026-12-01", 9, 0);
    let mut a = appointment(&w, start, 1, Status::Held);
    a.citizen.ants_application_ids = vec![
        AntsApplicationId::parse("ABCDE12345").unwrap(),
        AntsApplicationId::parse("FGHIJ67890").unwrap(),
    ];
    a.persons = 2;
    let mut tx = store.begin().await.unwrap();
    tx.insert_appointment(&a).await.unwrap();
    assert_eq!(tx.appointment(a.id).await.unwrap().as_ref(), Some(&a));
    tx.commit().await.unwrap();
    assert_eq!(store.appointment(a.id).await.unwrap().as_ref(), Some(&a));

    let mut changed = a.clone();
    changed.status = Status::Confirmed;
    changed.hold_expires_at = None;
    changed.confirmed_at = Some(w.clock_now());
    changed.version = 2;
    changed.cancel_reason = Some("note".into());
    let mut tx = store.begin().await.unwrap();
    tx.update_appointment(&changed).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        store.appointment(a.id).await.unwrap().as_ref(),
        Some(&changed)
    );

    // Dropping a transaction without commit writes nothing.
    let b = appointment(&w, start + Duration::hours(1), 1, Status::Confirmed);
    {
        let mut tx = store.begin().await.unwrap();
        tx.insert_appointment(&b).await.unwrap();
    }
    assert_eq!(store.appointment(b.id).await.unwrap(), None);

    let listed = store
        .appointments(
            w.commune,
            paris("2026-12-01", 0, 0),
            paris("2026-12-02", 0, 0),
        )
        .await
        .unwrap();
    assert_eq!(listed, vec![changed.clone()]);
    let place = store.appointment_place(a.id).await.unwrap().unwrap();
    assert_eq!(place.location_name, "Annexe");
    assert_eq!(
        place.location_address,
        "1 place de la Mairie, 74999 Testville"
    );
    assert_eq!(place.commune_slug, "testville");
    assert_eq!(place.starts_at, start);
    assert_eq!(
        store
            .appointment_place(AppointmentId::new_v4())
            .await
            .unwrap(),
        None
    );
}
both_backends!(appointments, appointments_round_trip);

async fn seats_are_enforced_by_the_database(db: crate::helpers::TestDb) {
    let w = World::new(db).await;
    let store = w.store();
    let start = paris("2026-12-01", 9, 0);
    let mut tx = store.begin().await.unwrap();
    tx.insert_appointment(&appointment(&w, start, 1, Status::Confirmed))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Same seat, overlapping by ten minutes: refused, whatever the code believed.
    let mut tx = store.begin().await.unwrap();
    let err = tx
        .insert_appointment(&appointment(
            &w,
            start + Duration::minutes(10),
            1,
            Status::Held,
        ))
        .await
        .unwrap_err();
    assert!(err.is_constraint("appointments_no_overlap"), "{err:?}");
    drop(tx);

    // A seat beyond the planning's capacity (2): refused.
    let mut tx = store.begin().await.unwrap();
    let err = tx
        .insert_appointment(&appointment(&w, start, 3, Status::Confirmed))
        .await
        .unwrap_err();
    assert!(err.is_constraint("appointments_seat_capacity"), "{err:?}");
    drop(tx);

    // Another seat, or the same seat right after, or no seat at all (cancelled): accepted.
    let mut tx = store.begin().await.unwrap();
    tx.insert_appointment(&appointment(&w, start, 2, Status::Confirmed))
        .await
        .unwrap();
    tx.insert_appointment(&appointment(
        &w,
        start + Duration::minutes(20),
        1,
        Status::Confirmed,
    ))
    .await
    .unwrap();
    tx.insert_appointment(&appointment(&w, start, 1, Status::CancelledByCitizen))
        .await
        .unwrap();
    // A status that takes a seat must have one, and the reverse.
    let mut seatless = appointment(&w, start, 1, Status::Confirmed);
    seatless.seat = None;
    let err = tx.insert_appointment(&seatless).await.unwrap_err();
    assert!(err.is_constraint("appointments_seat_status"), "{err:?}");
}
both_backends!(seat_constraints, seats_are_enforced_by_the_database);

/// `insert_appointment_on_free_seat` writes only under the seat's lock: while another
/// transaction holds it (PostgreSQL, where transactions write side by side), nothing is written;
/// another seat is written; and the schema still refuses a seat taken by a committed booking.
async fn insert_on_a_free_seat(db: crate::helpers::TestDb) {
    let postgres = db.backend == "postgres";
    let w = World::new(db).await;
    let store = w.store();
    let start = paris("2026-12-04", 15, 40);
    let first = appointment(&w, start, 1, Status::Held);
    let mut tx = store.begin().await.unwrap();
    assert!(tx.insert_appointment_on_free_seat(&first).await.unwrap());
    assert_eq!(
        tx.busy_seats(w.annex_planning, start, start + Duration::minutes(20))
            .await
            .unwrap(),
        [1]
    );
    if postgres {
        let mut other = store.begin().await.unwrap();
        let mut same_seat = appointment(&w, start + Duration::minutes(10), 1, Status::Held);
        same_seat.citizen = citizen(8);
        assert!(
            !other
                .insert_appointment_on_free_seat(&same_seat)
                .await
                .unwrap(),
            "the seat's lock is held by the first transaction"
        );
        let mut next_seat = appointment(&w, start, 2, Status::Held);
        next_seat.citizen = citizen(9);
        assert!(
            other
                .insert_appointment_on_free_seat(&next_seat)
                .await
                .unwrap()
        );
        other.commit().await.unwrap();
        assert_eq!(store.appointment(same_seat.id).await.unwrap(), None);
        assert!(store.appointment(next_seat.id).await.unwrap().is_some());
    }
    tx.commit().await.unwrap();
    assert!(store.appointment(first.id).await.unwrap().is_some());

    let mut tx = store.begin().await.unwrap();
    let err = tx
        .insert_appointment_on_free_seat(&appointment(
            &w,
            start + Duration::minutes(10),
            1,
            Status::Held,
        ))
        .await
        .unwrap_err();
    assert!(err.is_constraint("appointments_no_overlap"), "{err:?}");
}
both_backends!(insert_on_free_seat, insert_on_a_free_seat);

/// An appointment lasts at most a day (the schema refuses longer, on insert and on update), and
/// reads of the appointments over a span look back that far before it, no further: one that
/// began nearly a day before the span still counts.
async fn appointments_last_at_most_a_day(db: crate::helpers::TestDb) {
    let w = World::new(db).await;
    let store = w.store();
    let now = w.clock_now();
    let start = paris("2026-12-01", 1, 0);
    let mut too_long = appointment(&w, paris("2026-12-05", 9, 0), 2, Status::Confirmed);
    too_long.ends_at = too_long.starts_at + Duration::hours(25);
    let mut tx = store.begin().await.unwrap();
    let err = tx.insert_appointment(&too_long).await.unwrap_err();
    assert!(err.is_constraint("appointments_within_a_day"), "{err:?}");
    tx.rollback().await.unwrap();

    let mut long = appointment(&w, start, 1, Status::Confirmed);
    long.ends_at = start + Duration::hours(23);
    let mut tx = store.begin().await.unwrap();
    tx.insert_appointment(&long).await.unwrap();
    tx.commit().await.unwrap();
    // Its last hour, from 23:00.
    let last = paris("2026-12-01", 23, 0);
    let slot = (last, last + Duration::minutes(20));
    let mut tx = store.begin().await.unwrap();
    let busy = tx.busy_seats(w.annex_planning, slot.0, slot.1).await;
    assert_eq!(busy.unwrap(), [1]);
    let seats = tx
        .seats_of(w.annex_planning, w.annex, slot.0, slot.1, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seats.busy, [1]);
    tx.rollback().await.unwrap();
    let occupied = store
        .occupancy(w.commune, last, paris("2026-12-02", 0, 0), now)
        .await
        .unwrap();
    assert_eq!(occupied.len(), 1);
    assert_eq!(
        (occupied[0].seat, occupied[0].planning_id),
        (1, w.annex_planning)
    );
    // Another appointment on its seat in that last hour overlaps it.
    let mut tx = store.begin().await.unwrap();
    let err = tx
        .insert_appointment(&appointment(&w, last, 1, Status::Confirmed))
        .await
        .unwrap_err();
    assert!(err.is_constraint("appointments_no_overlap"), "{err:?}");
    tx.rollback().await.unwrap();

    // Lengthened past a day: refused.
    long.ends_at = start + Duration::hours(25);
    long.version += 1;
    let mut tx = store.begin().await.unwrap();
    let err = tx.update_appointment(&long).await.unwrap_err();
    assert!(err.is_constraint("appointments_within_a_day"), "{err:?}");
}
both_backends!(at_most_a_day, appointments_last_at_most_a_day);

async fn transaction_primitives(db: crate::helpers::TestDb) {
    let w = World::new(db).await;
    let store = w.store();
    let now = w.clock_now();
    let start = paris("2026-12-01", 9, 0);
    let held = appointment(&w, start, 1, Status::Held);
    let confirmed = appointment(&w, start, 2, Status::Confirmed);
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.planning(w.annex_planning)
            .await
            .unwrap()
            .unwrap()
            .capacity,
        2
    );
    assert_eq!(tx.planning(9999).await.unwrap(), None);
    tx.insert_appointment(&held).await.unwrap();
    tx.insert_appointment(&confirmed).await.unwrap();
    let mut busy = tx
        .busy_seats(
            w.annex_planning,
            start + Duration::minutes(19),
            start + Duration::hours(1),
        )
        .await
        .unwrap();
    busy.sort();
    assert_eq!(busy, [1, 2]);
    assert!(
        tx.busy_seats(
            w.annex_planning,
            start + Duration::minutes(20),
            start + Duration::hours(1)
        )
        .await
        .unwrap()
        .is_empty()
    );
    tx.commit().await.unwrap();

    // Occupancy at `now` counts the live hold; ten minutes later, only the confirmed one.
    let window = (paris("2026-12-01", 0, 0), paris("2026-12-02", 0, 0));
    assert_eq!(
        store
            .occupancy(w.commune, window.0, window.1, now)
            .await
            .unwrap()
            .len(),
        2
    );
    let later = now + Duration::minutes(10);
    let occupied = store
        .occupancy(w.commune, window.0, window.1, later)
        .await
        .unwrap();
    assert_eq!(occupied.len(), 1);
    assert_eq!(occupied[0].seat, 2);

    // Releasing expired holds frees their seats and says how many it released.
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.release_expired_holds(w.annex_planning, now)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        tx.release_expired_holds(w.annex_planning, later)
            .await
            .unwrap(),
        1
    );
    tx.commit().await.unwrap();
    let expired = store.appointment(held.id).await.unwrap().unwrap();
    assert_eq!(expired.status, Status::Expired);
    assert_eq!(expired.seat, None);
    assert_eq!(expired.version, 2);
}
both_backends!(transaction_primitives_work, transaction_primitives);

/// `seats_of` (one statement on PostgreSQL) answers what its four parts do.
async fn seats_of_a_planning(db: crate::helpers::TestDb) {
    let w = World::new(db).await;
    let store = w.store();
    let now = w.clock_now();
    let start = paris("2026-12-01", 9, 0);
    let held = appointment(&w, start, 1, Status::Held);
    let confirmed = appointment(&w, start, 2, Status::Confirmed);
    let mut tx = store.begin().await.unwrap();
    tx.insert_appointment(&held).await.unwrap();
    tx.insert_appointment(&confirmed).await.unwrap();
    let slot = (start + Duration::minutes(10), start + Duration::minutes(30));
    let Seats {
        planning,
        mut busy,
        closed,
    } = tx
        .seats_of(w.annex_planning, w.annex, slot.0, slot.1, now)
        .await
        .unwrap()
        .unwrap();
    busy.sort();
    assert_eq!(
        (planning.id, planning.capacity, busy, closed),
        (w.annex_planning, 2, vec![1, 2], false)
    );
    assert_eq!(
        tx.seats_of(9999, w.annex, slot.0, slot.1, now)
            .await
            .unwrap(),
        None
    );
    // Once the hold has lapsed: released, and its seat free in the same answer.
    let later = now + Duration::minutes(10);
    let seats = tx
        .seats_of(w.annex_planning, w.annex, slot.0, slot.1, later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seats.busy, [2]);
    let seats = tx
        .seats_of(
            w.annex_planning,
            w.annex,
            slot.0 + Duration::minutes(30),
            slot.1 + Duration::hours(1),
            later,
        )
        .await
        .unwrap()
        .unwrap();
    assert!(seats.busy.is_empty(), "{:?}", seats.busy);
    tx.commit().await.unwrap();

    // Closures, as the transaction sees them: of another planning, of another location, or
    // beside the slot, they leave it open; of the planning, of the location, of the whole
    // commune, over the slot, they close it.
    let closure = |planning, location, from: i64, to: i64| NewClosure {
        commune_id: w.commune,
        planning_id: planning,
        location_id: location,
        starts_at: slot.0 + Duration::minutes(from),
        ends_at: slot.0 + Duration::minutes(to),
        reason: "Fermeture".into(),
    };
    let closed = async || {
        let mut tx = store.begin().await.unwrap();
        let seats = tx
            .seats_of(w.annex_planning, w.annex, slot.0, slot.1, later)
            .await
            .unwrap()
            .unwrap();
        tx.commit().await.unwrap();
        seats.closed
    };
    for open in [
        closure(Some(w.counter), None, 0, 20),
        closure(None, Some(w.town_hall), 0, 20),
        closure(None, None, 20, 60),
        closure(None, None, -60, 0),
    ] {
        store.insert_closure(&open).await.unwrap();
    }
    assert!(!closed().await);
    for (n, shut) in [
        closure(Some(w.annex_planning), None, 10, 15),
        closure(None, Some(w.annex), -5, 1),
        closure(None, None, 19, 120),
    ]
    .into_iter()
    .enumerate()
    {
        let id = store.insert_closure(&shut).await.unwrap();
        assert!(closed().await, "closure {n}");
        store.delete_closure(id).await.unwrap();
    }
    assert!(!closed().await);
    let expired = store.appointment(held.id).await.unwrap().unwrap();
    assert_eq!(
        (expired.status, expired.seat, expired.version),
        (Status::Expired, None, 2)
    );
    assert_eq!(
        store
            .appointment(confirmed.id)
            .await
            .unwrap()
            .unwrap()
            .version,
        1
    );
}
both_backends!(seats_of_works, seats_of_a_planning);

/// Two bookings at once after holds lapsed: the first releases them and takes a seat; the
/// second, which waited for it, sees the other released seat free (PostgreSQL's `seats_of` reads
/// the rows as they were when it began, when the holds were still on their seats).
async fn seats_of_after_a_concurrent_release(db: crate::helpers::TestDb) {
    let w = World::new(db).await;
    let store = w.store();
    let start = paris("2026-12-01", 9, 0);
    let (one, two) = (
        appointment(&w, start, 1, Status::Held),
        appointment(&w, start, 2, Status::Held),
    );
    let mut tx = store.begin().await.unwrap();
    tx.insert_appointment(&one).await.unwrap();
    tx.insert_appointment(&two).await.unwrap();
    tx.commit().await.unwrap();
    let later = w.clock_now() + Duration::minutes(10);
    let slot = (start, start + Duration::minutes(20));

    let mut first = store.begin().await.unwrap();
    let seats = first
        .seats_of(w.annex_planning, w.annex, slot.0, slot.1, later)
        .await
        .unwrap()
        .unwrap();
    assert!(seats.busy.is_empty(), "{:?}", seats.busy);
    let mut taken = appointment(&w, start, 1, Status::Confirmed);
    taken.citizen = citizen(9);
    first.insert_appointment(&taken).await.unwrap();
    let second = {
        let (store, planning, location) = (w.db.store.clone(), w.annex_planning, w.annex);
        tokio::spawn(async move {
            let mut tx = store.begin().await.unwrap();
            let seats = tx.seats_of(planning, location, slot.0, slot.1, later).await;
            (tx.commit().await, seats)
        })
    };
    // Time for the second to start and wait on the first (if it has not, it reads after the
    // commit, and the answer must be the same).
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    first.commit().await.unwrap();
    let (committed, seats) = second.await.unwrap();
    committed.unwrap();
    let busy = seats.unwrap().unwrap().busy;
    // Seat 2 is free. (PostgreSQL may not list seat 1 either, taken by a commit after its
    // statement began: a booking that chose it would be refused by the schema and run again.)
    assert!(!busy.contains(&2), "the released seat 2 is free: {busy:?}");
}
both_backends!(seats_of_after_release, seats_of_after_a_concurrent_release);

async fn claims(db: crate::helpers::TestDb) {
    let w = World::new(db).await;
    let other = World::with(
        w.db.shared(),
        crate::helpers::WorldOptions {
            slug: "autreville",
            phone_number: "+33465719998",
            ..Default::default()
        },
    )
    .await;
    let store = w.store();
    let now = w.clock_now();
    let start = paris("2026-12-01", 9, 0);
    let first = appointment(&w, start, 1, Status::Held);
    let second = appointment(&w, start, 2, Status::Confirmed);
    let mut elsewhere = appointment(&w, start, 1, Status::Confirmed);
    elsewhere.commune_id = other.commune;
    elsewhere.planning_id = other.annex_planning;
    elsewhere.location_id = other.annex;
    elsewhere.service_id = other.titres;
    let claim = Claim {
        category: Category::Titres,
        kind: ClaimKind::Phone,
        key: "+33639980001".into(),
    };
    let holder = |a: &Appointment, exclusive| ClaimHolder {
        appointment: a.id,
        commune: a.commune_id,
        exclusive,
    };
    let mut tx = store.begin().await.unwrap();
    for a in [&first, &second, &elsewhere] {
        tx.insert_appointment(a).await.unwrap();
    }
    assert_eq!(
        tx.claim(&claim, &holder(&first, true), None, now)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        tx.claim(&claim, &holder(&first, true), None, now)
            .await
            .unwrap(),
        None,
        "claiming twice is fine"
    );
    assert_eq!(
        tx.claim(&claim, &holder(&second, true), None, now)
            .await
            .unwrap(),
        Some(first.id)
    );
    // Another category is another claim.
    let school = Claim {
        category: Category::Scolaire,
        ..claim.clone()
    };
    assert_eq!(
        tx.claim(&school, &holder(&second, true), None, now)
            .await
            .unwrap(),
        None
    );
    tx.commit().await.unwrap();

    // Once the hold has expired, its claim is stale and is taken over.
    let later = now + Duration::minutes(11);
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.claim(&claim, &holder(&second, true), None, later)
            .await
            .unwrap(),
        None
    );
    // Transfer and release.
    let third = appointment(&w, start + Duration::hours(1), 1, Status::Confirmed);
    tx.insert_appointment(&third).await.unwrap();
    tx.transfer_claims(second.id, third.id).await.unwrap();
    assert_eq!(
        tx.claim(&claim, &holder(&first, true), None, later)
            .await
            .unwrap(),
        Some(third.id)
    );
    tx.release_claims(third.id).await.unwrap();
    tx.commit().await.unwrap();

    // A commune that allows several: non-exclusive claims coexist there, never with another
    // commune's, and never with an exclusive one.
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.claim(&claim, &holder(&second, false), None, later)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        tx.claim(&claim, &holder(&third, false), None, later)
            .await
            .unwrap(),
        None
    );
    assert!(matches!(
        tx.claim(&claim, &holder(&elsewhere, false), None, later).await.unwrap(),
        Some(id) if id == second.id || id == third.id
    ));
    let fourth = appointment(&w, start + Duration::hours(2), 1, Status::Confirmed);
    tx.insert_appointment(&fourth).await.unwrap();
    assert!(
        tx.claim(&claim, &holder(&fourth, true), None, later)
            .await
            .unwrap()
            .is_some()
    );
    tx.commit().await.unwrap();
}
both_backends!(citizen_claims, claims);

/// A claim given a code's destination takes that destination's lock too, held until the
/// transaction ends (PostgreSQL; SQLite's writer is alone anyway).
async fn a_claim_takes_its_destination_lock(db: crate::helpers::TestDb) {
    use guichet::store::{Claim, ClaimHolder, ClaimKind};
    use sqlx::Connection;
    let postgres = (db.backend == "postgres").then(|| db.url.clone());
    let w = World::new(db).await;
    let store = w.store();
    let held = appointment(&w, paris("2026-12-01", 9, 0), 1, Status::Held);
    let claim = Claim {
        category: Category::Titres,
        kind: ClaimKind::Phone,
        key: "+33639989871".into(),
    };
    let holder = ClaimHolder {
        appointment: held.id,
        commune: held.commune_id,
        exclusive: true,
    };
    let mut tx = store.begin().await.unwrap();
    tx.insert_appointment(&held).await.unwrap();
    let claimed = tx
        .claim(&claim, &holder, Some("+33639989871"), w.clock_now())
        .await
        .unwrap();
    assert_eq!(claimed, None);
    let Some(url) = postgres else {
        tx.commit().await.unwrap();
        return;
    };
    let mut other = sqlx::PgConnection::connect(&url).await.unwrap();
    let try_lock = async |conn: &mut sqlx::PgConnection, key: &str| -> bool {
        sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext(current_schema() || $1))")
            .bind(key)
            .fetch_one(conn)
            .await
            .unwrap()
    };
    assert!(!try_lock(&mut other, "destination:+33639989871").await);
    assert!(!try_lock(&mut other, "claim:titres:phone:+33639989871").await);
    assert!(try_lock(&mut other, "destination:+33639989872").await);
    // Another schema of the database (another installation, another test) has locks of its
    // own.
    let elsewhere = crate::helpers::postgres_schema_url().await.unwrap();
    let mut elsewhere = sqlx::PgConnection::connect(&elsewhere).await.unwrap();
    assert!(try_lock(&mut elsewhere, "destination:+33639989871").await);
    tx.commit().await.unwrap();
    assert!(try_lock(&mut other, "destination:+33639989871").await);
}
both_backends!(
    claim_and_destination_lock,
    a_claim_takes_its_destination_lock
);

#[tokio::test]
async fn unreadable_urls_are_refused() {
    let err = guichet::store::connect("postgres://[::1")
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::BadUrl(_)), "{err:?}");
}

/// A PostgreSQL on this machine is reached without TLS unless the URL asks for it (TLS over
/// loopback protects nothing and cost a quarter of the machine under load); asked for, it is
/// used.
#[tokio::test]
async fn a_local_postgresql_is_reached_without_tls_unless_asked() {
    use sqlx::Connection;
    let Some(url) = crate::helpers::postgres_schema_url().await else {
        return;
    };
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    let server_offers_tls: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    let mut tls_of = async |name: &str, extra: &str| -> Option<bool> {
        let store = guichet::store::connect(&format!("{url}&application_name={name}{extra}"))
            .await
            .unwrap();
        store.ping().await.unwrap();
        sqlx::query_scalar(
            "SELECT bool_or(s.ssl) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name = $1",
        )
        .bind(name)
        .fetch_one(&mut admin)
        .await
        .unwrap()
    };
    let name = format!("tls-probe-{}", std::process::id());
    if url.contains("127.0.0.1") && std::env::var_os("PGSSLMODE").is_none() {
        assert_eq!(tls_of(&format!("{name}-plain"), "").await, Some(false));
    }
    if server_offers_tls == "on" {
        assert_eq!(
            tls_of(&format!("{name}-asked"), "&sslmode=require").await,
            Some(true)
        );
    }
}

/// The back-office's storage: accounts, sessions, sign-in throttling, the audit log, the
/// search, calls, the commune's and the platform's settings, configuration edits and the SMS
/// question a replacement offer leaves behind.
async fn back_office_round_trip(db: crate::helpers::TestDb) {
    use guichet::domain::{Citizen, CitizenName, Email, PhoneE164, Role};
    use guichet::store::{
        AuditEntry, CommunePlatformSettings, CommuneSettings, NewAgent, NewOpeningRule, SmsAction,
    };

    let w = World::new(db).await;
    let other = World::with(
        w.db.shared(),
        crate::helpers::WorldOptions {
            slug: "autreville",
            phone_number: "+33465719998",
            ..Default::default()
        },
    )
    .await;
    let store = w.store();
    let now = w.clock_now();

    // --- Accounts ----------------------------------------------------------------------------
    let account = |email: &str, role, commune_id| NewAgent {
        email: email.into(),
        name: format!("Compte {email}"),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2VsZA$aGFzaA".into(),
        role,
        commune_id,
    };
    let agent_id = store
        .insert_agent(
            &account("Agent@Testville.FR", Role::Agent, Some(w.commune)),
            now,
        )
        .await
        .unwrap();
    let admin_id = store
        .insert_agent(
            &account("admin@testville.fr", Role::CommuneAdmin, Some(w.commune)),
            now,
        )
        .await
        .unwrap();
    let elsewhere_id = store
        .insert_agent(
            &account("agent@autreville.fr", Role::Agent, Some(other.commune)),
            now,
        )
        .await
        .unwrap();
    let platform_id = store
        .insert_agent(
            &account("plateforme@guichet.fr", Role::PlatformAdmin, None),
            now,
        )
        .await
        .unwrap();

    let agent = store
        .agent_by_email("AGENT@testville.fr")
        .await
        .unwrap()
        .expect("found whatever the case");
    assert_eq!(agent.id, agent_id);
    assert_eq!(agent.email, "agent@testville.fr", "stored in lower case");
    assert_eq!(agent.name, "Compte Agent@Testville.FR");
    assert_eq!(agent.role, Role::Agent);
    assert_eq!(agent.commune_id, Some(w.commune));
    assert!(agent.active);
    assert_eq!(agent.created_at, now);
    assert_eq!(store.agent(agent_id).await.unwrap(), Some(agent.clone()));
    assert_eq!(store.agent(9999).await.unwrap(), None);
    assert_eq!(
        store.agent_by_email("personne@testville.fr").await.unwrap(),
        None
    );
    let platform = store.agent(platform_id).await.unwrap().unwrap();
    assert_eq!(platform.role, Role::PlatformAdmin);
    assert_eq!(platform.commune_id, None);

    let ids = |agents: Vec<guichet::store::Agent>| agents.iter().map(|a| a.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.agents(Some(w.commune)).await.unwrap()),
        [admin_id, agent_id],
        "a commune's accounts, by e-mail"
    );
    assert_eq!(
        ids(store.agents(Some(other.commune)).await.unwrap()),
        [elsewhere_id]
    );
    assert_eq!(
        ids(store.agents(None).await.unwrap()),
        [platform_id, admin_id, agent_id, elsewhere_id],
        "every account: the platform's first, then commune by commune"
    );

    // One account per e-mail, whatever its case.
    let err = store
        .insert_agent(
            &account("AGENT@TESTVILLE.FR", Role::CommuneAdmin, Some(w.commune)),
            now,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Constraint(name) if name == "agents_email_key"),
        "{err:?}"
    );
    // A platform administrator belongs to no commune; everyone else to one.
    for (email, role, commune) in [
        ("p2@guichet.fr", Role::PlatformAdmin, Some(w.commune)),
        ("a2@testville.fr", Role::Agent, None),
        ("c2@testville.fr", Role::CommuneAdmin, None),
    ] {
        let err = store
            .insert_agent(&account(email, role, commune), now)
            .await
            .unwrap_err();
        assert!(err.is_constraint("agents_commune"), "{email}: {err:?}");
        assert_eq!(store.agent_by_email(email).await.unwrap(), None);
    }
    assert_eq!(store.agents(None).await.unwrap().len(), 4);

    // --- Sessions ----------------------------------------------------------------------------
    let day = Duration::hours(12);
    store
        .insert_session("hash-1", agent_id, now, now + day)
        .await
        .unwrap();
    store
        .insert_session("hash-2", agent_id, now, now + day)
        .await
        .unwrap();
    store
        .insert_session("hash-admin", admin_id, now, now + day)
        .await
        .unwrap();
    assert_eq!(
        store.session_agent("hash-1", now).await.unwrap(),
        Some(agent.clone())
    );
    assert_eq!(
        store
            .session_agent("hash-1", now + day - Duration::seconds(1))
            .await
            .unwrap()
            .map(|a| a.id),
        Some(agent_id)
    );
    assert_eq!(
        store.session_agent("hash-1", now + day).await.unwrap(),
        None,
        "expired"
    );
    assert_eq!(store.session_agent("hash-0", now).await.unwrap(), None);
    store.delete_session("hash-1").await.unwrap();
    assert_eq!(store.session_agent("hash-1", now).await.unwrap(), None);
    assert!(store.session_agent("hash-2", now).await.unwrap().is_some());

    // Deactivating an account closes its sessions (and only its own) …
    store.set_agent_active(agent_id, false).await.unwrap();
    assert!(!store.agent(agent_id).await.unwrap().unwrap().active);
    assert_eq!(store.session_agent("hash-2", now).await.unwrap(), None);
    assert!(
        store
            .session_agent("hash-admin", now)
            .await
            .unwrap()
            .is_some()
    );
    // … and a session of a deactivated account opens nothing.
    store
        .insert_session("hash-3", agent_id, now, now + day)
        .await
        .unwrap();
    assert_eq!(store.session_agent("hash-3", now).await.unwrap(), None);
    store.set_agent_active(agent_id, true).await.unwrap();
    assert!(store.agent(agent_id).await.unwrap().unwrap().active);
    assert_eq!(
        store.session_agent("hash-2", now).await.unwrap(),
        None,
        "closed for good, not hidden"
    );
    assert_eq!(
        store
            .session_agent("hash-3", now)
            .await
            .unwrap()
            .map(|a| a.id),
        Some(agent_id)
    );

    // --- Sign-in failures --------------------------------------------------------------------
    let window = Duration::minutes(15);
    let key = "email:agent@testville.fr";
    let old = now - Duration::minutes(20);
    assert_eq!(
        store
            .record_signin_failure(key, old, old - window)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .record_signin_failure("ip:192.0.2.1", now, now - window)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .record_signin_failure(key, now - Duration::minutes(1), now - window)
            .await
            .unwrap(),
        1,
        "the failure of twenty minutes ago is outside the window"
    );
    assert_eq!(
        store
            .record_signin_failure(key, now, now - window)
            .await
            .unwrap(),
        2
    );
    assert_eq!(store.signin_failures(key, now - window).await.unwrap(), 2);
    assert_eq!(
        store
            .signin_failures(key, now - Duration::seconds(30))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .signin_failures(key, now - Duration::hours(1))
            .await
            .unwrap(),
        2,
        "older failures were forgotten, not just left out"
    );
    assert_eq!(
        store
            .signin_failures("email:personne@testville.fr", now - window)
            .await
            .unwrap(),
        0
    );
    store.clear_signin_failures(key).await.unwrap();
    assert_eq!(
        store
            .signin_failures(key, now - Duration::hours(1))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .signin_failures("ip:192.0.2.1", now - Duration::hours(1))
            .await
            .unwrap(),
        1,
        "another key is untouched"
    );

    // --- Audit log ---------------------------------------------------------------------------
    let entry = |commune, agent, at, action: &str| AuditEntry {
        commune_id: commune,
        agent_id: agent,
        agent_email: "admin@testville.fr".into(),
        at,
        action: action.into(),
        detail: format!("détail {action}"),
    };
    let first = entry(
        Some(w.commune),
        Some(admin_id),
        now - Duration::hours(2),
        "connexion",
    );
    let second = entry(
        Some(w.commune),
        Some(admin_id),
        now - Duration::hours(1),
        "annulation",
    );
    // Same instant as the second, written after it.
    let third = entry(
        Some(w.commune),
        None,
        now - Duration::hours(1),
        "reservation",
    );
    let theirs = entry(Some(other.commune), Some(elsewhere_id), now, "fermeture");
    let platform_line = entry(None, Some(platform_id), now, "plateforme");
    for e in [&first, &second, &third, &theirs, &platform_line] {
        store.insert_audit(e).await.unwrap();
    }
    assert_eq!(
        store.audit_log(w.commune, 10).await.unwrap(),
        vec![third.clone(), second.clone(), first.clone()],
        "newest first, the later line first at the same instant"
    );
    assert_eq!(
        store.audit_log(w.commune, 2).await.unwrap(),
        vec![third, second]
    );
    assert_eq!(
        store.audit_log(other.commune, 10).await.unwrap(),
        vec![theirs]
    );

    // --- Search ------------------------------------------------------------------------------
    let at = |s: &str| -> DateTime<Utc> { s.parse().unwrap() };
    let named = |start: DateTime<Utc>, status, name: &str, phone: &str, email: Option<&str>| {
        let mut a = appointment(&w, start, 1, status);
        a.citizen = Citizen {
            name: CitizenName::parse(name).unwrap(),
            phone: Some(PhoneE164::parse(phone).unwrap()),
            email: email.map(|e| Email::parse(e).unwrap()),
            ants_application_ids: vec![],
        };
        a
    };
    // To come (2099) and past (2001), whatever the real date of the run.
    let jean = named(
        at("2099-01-06T08:00:00Z"),
        Status::Confirmed,
        "Jean Dupont",
        "+33639980102",
        None,
    );
    let marie = named(
        at("2099-01-05T08:00:00Z"),
        Status::Confirmed,
        "Marie Dupont",
        "+33639980101",
        Some("Marie.Dupont@exemple.fr"),
    );
    let luc = named(
        at("2001-01-05T08:00:00Z"),
        Status::Honoured,
        "Luc Dupont",
        "+33639980103",
        None,
    );
    let lea = named(
        at("2001-01-06T08:00:00Z"),
        Status::CancelledByCommune,
        "Léa Dupont",
        "+33639980104",
        None,
    );
    let expired = named(
        at("2099-01-07T08:00:00Z"),
        Status::Expired,
        "Paul Dupont",
        "+33639980109",
        None,
    );
    let moved = named(
        at("2099-01-08T08:00:00Z"),
        Status::Moved,
        "Rémi Dupont",
        "+33639980110",
        None,
    );
    let percent = named(
        at("2099-02-01T08:00:00Z"),
        Status::Confirmed,
        "Jeanne 50%",
        "+33639980105",
        None,
    );
    let fifty = named(
        at("2099-02-02T08:00:00Z"),
        Status::Confirmed,
        "Paul 500",
        "+33639980106",
        None,
    );
    let underscore = named(
        at("2099-02-03T08:00:00Z"),
        Status::Confirmed,
        "Anne_Sophie Roux",
        "+33639980107",
        None,
    );
    let hyphen = named(
        at("2099-02-04T08:00:00Z"),
        Status::Confirmed,
        "Anne-Sophie Roux",
        "+33639980108",
        None,
    );
    let mut namesake = named(
        at("2099-01-05T08:00:00Z"),
        Status::Confirmed,
        "Marie Dupont",
        "+33639980101",
        None,
    );
    namesake.commune_id = other.commune;
    namesake.planning_id = other.annex_planning;
    namesake.location_id = other.annex;
    namesake.service_id = other.titres;
    let mut tx = store.begin().await.unwrap();
    for a in [
        &jean,
        &marie,
        &luc,
        &lea,
        &expired,
        &moved,
        &percent,
        &fifty,
        &underscore,
        &hyphen,
        &namesake,
    ] {
        tx.insert_appointment(a).await.unwrap();
    }
    tx.commit().await.unwrap();
    let found = |needle: &'static str, limit: i64| {
        let store = w.store();
        let commune = w.commune;
        async move {
            store
                .search_appointments(commune, needle, limit, now)
                .await
                .unwrap()
                .iter()
                .map(|a| a.id)
                .collect::<Vec<_>>()
        }
    };
    let duponts = vec![marie.id, jean.id, lea.id, luc.id];
    assert_eq!(
        found("dupont", 50).await,
        duponts,
        "to come soonest first, then past most recent first; neither expired nor moved; \
         not another commune's"
    );
    assert_eq!(found("  DUPONT ", 50).await, duponts);
    assert_eq!(found("dupont", 2).await, [marie.id, jean.id]);
    assert_eq!(found("marie", 50).await, [marie.id]);
    assert_eq!(found("léa", 50).await, [lea.id]);
    assert_eq!(found("39980102", 50).await, [jean.id]);
    assert_eq!(found("+33639980102", 50).await, [jean.id]);
    assert_eq!(found("MARIE.DUPONT@EXEMPLE", 50).await, [marie.id]);
    assert_eq!(found("50%", 50).await, [percent.id], "% is a character");
    assert_eq!(found("%", 50).await, [percent.id]);
    assert_eq!(
        found("anne_sophie", 50).await,
        [underscore.id],
        "_ is a character"
    );
    assert_eq!(found("_", 50).await, [underscore.id]);
    assert!(found("personne", 50).await.is_empty());
    assert_eq!(
        other
            .store()
            .search_appointments(other.commune, "dupont", 50, now)
            .await
            .unwrap()
            .iter()
            .map(|a| a.id)
            .collect::<Vec<_>>(),
        [namesake.id]
    );

    // --- Calls -------------------------------------------------------------------------------
    for (sid, commune, at) in [
        ("CA-early", w.commune, now - Duration::hours(2)),
        ("CA-late", w.commune, now - Duration::hours(1)),
        ("CA-now", w.commune, now),
        ("CA-theirs", other.commune, now - Duration::hours(1)),
    ] {
        assert!(
            store
                .start_call(sid, commune, "+33639980101", "{}", "<Response/>", at)
                .await
                .unwrap()
        );
    }
    let calls = store
        .calls_between(w.commune, now - Duration::hours(2), now)
        .await
        .unwrap();
    assert_eq!(
        calls
            .iter()
            .map(|c| c.call_sid.as_str())
            .collect::<Vec<_>>(),
        ["CA-early", "CA-late"],
        "[from, to), in order"
    );
    assert_eq!(calls[0].caller, "+33639980101");
    assert_eq!(calls[0].commune_id, w.commune);
    assert_eq!(
        store
            .calls_between(other.commune, now - Duration::hours(2), now)
            .await
            .unwrap()
            .len(),
        1
    );

    // --- The commune's settings, and the platform's ------------------------------------------
    let settings = CommuneSettings {
        switchboard_number: None,
        switchboard_hours: WeeklyHours(vec![WeeklyRange {
            weekdays: Weekdays::MONDAY_TO_FRIDAY,
            start: MinuteOfDay::hm(14, 0),
            end: MinuteOfDay::hm(17, 30),
        }]),
        reminder_delay_hours: 24,
        quiet_start: MinuteOfDay::hm(21, 0),
        quiet_end: MinuteOfDay::hm(7, 30),
        sms_sender: "TestvilleMa".into(),
    };
    store
        .update_commune_settings(w.commune, &settings)
        .await
        .unwrap();
    let c = store.commune(w.commune).await.unwrap().unwrap();
    assert_eq!(c.switchboard_number, None);
    assert_eq!(c.switchboard_hours, settings.switchboard_hours);
    assert_eq!(c.reminder_delay_hours, 24);
    assert_eq!(c.quiet_start, MinuteOfDay::hm(21, 0));
    assert_eq!(c.quiet_end, MinuteOfDay::hm(7, 30));
    assert_eq!(c.sms_sender, "TestvilleMa");
    assert_eq!(
        c.name, "Ville de testville",
        "the platform's part is untouched"
    );
    assert_eq!(c.phone_numbers, ["+33465719999"]);

    let platform_settings = CommunePlatformSettings {
        name: "Testville-sur-Lac".into(),
        population: 13_500,
        phone_numbers: vec!["+33465719990".into(), "+33465719991".into()],
        sms_daily_budget: 50,
    };
    store
        .update_commune_platform(w.commune, &platform_settings)
        .await
        .unwrap();
    let c = store.commune(w.commune).await.unwrap().unwrap();
    assert_eq!(c.name, "Testville-sur-Lac");
    assert_eq!(c.population, 13_500);
    assert_eq!(c.sms_daily_budget, 50);
    assert_eq!(c.phone_numbers, ["+33465719990", "+33465719991"]);
    assert_eq!(
        c.sms_sender, "TestvilleMa",
        "the commune's part is untouched"
    );
    assert_eq!(
        store.commune_by_phone_number("+33465719999").await.unwrap(),
        None,
        "the old number no longer answers"
    );
    assert_eq!(
        store
            .commune_by_phone_number("+33465719991")
            .await
            .unwrap()
            .map(|c| c.id),
        Some(w.commune)
    );
    // A number another commune answers is refused, and nothing is half-written.
    let err = store
        .update_commune_platform(
            w.commune,
            &CommunePlatformSettings {
                name: "Testville-les-Bains".into(),
                phone_numbers: vec!["+33465719990".into(), "+33465719998".into()],
                ..platform_settings.clone()
            },
        )
        .await
        .unwrap_err();
    assert!(
        err.is_constraint("commune_phone_numbers_number_key"),
        "{err:?}"
    );
    let c = store.commune(w.commune).await.unwrap().unwrap();
    assert_eq!(c.name, "Testville-sur-Lac");
    assert_eq!(c.phone_numbers, ["+33465719990", "+33465719991"]);
    assert_eq!(
        store
            .commune_by_phone_number("+33465719998")
            .await
            .unwrap()
            .map(|c| c.id),
        Some(other.commune)
    );
    // Once the other commune gives it up, the number can move.
    let theirs = store.commune(other.commune).await.unwrap().unwrap();
    store
        .update_commune_platform(
            other.commune,
            &CommunePlatformSettings {
                name: theirs.name.clone(),
                population: theirs.population,
                phone_numbers: vec![],
                sms_daily_budget: theirs.sms_daily_budget,
            },
        )
        .await
        .unwrap();
    store
        .update_commune_platform(
            w.commune,
            &CommunePlatformSettings {
                phone_numbers: vec!["+33465719998".into()],
                ..platform_settings
            },
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .commune_by_phone_number("+33465719998")
            .await
            .unwrap()
            .map(|c| c.id),
        Some(w.commune)
    );
    assert!(
        store
            .commune(other.commune)
            .await
            .unwrap()
            .unwrap()
            .phone_numbers
            .is_empty()
    );

    // --- Configuration edits -----------------------------------------------------------------
    let mut annex = store
        .locations(w.commune)
        .await
        .unwrap()
        .into_iter()
        .find(|l| l.id == w.annex)
        .unwrap();
    annex.name = "Annexe des Fins".into();
    annex.address = "3 avenue de France".into();
    annex.postcode = "74000".into();
    annex.city = "Annecy".into();
    annex.access_notes = "Rampe à gauche".into();
    annex.active = false;
    store.update_location(&annex).await.unwrap();
    let locations = store.locations(w.commune).await.unwrap();
    assert_eq!(locations.iter().find(|l| l.id == w.annex), Some(&annex));
    assert_eq!(
        locations.iter().find(|l| l.id == w.town_hall).unwrap().name,
        "Hôtel de ville"
    );

    let mut school = store.service(w.school).await.unwrap().unwrap();
    school.name = "Inscription scolaire et cantine".into();
    school.spoken_name = "inscription à l'école".into();
    school.category = Category::Autre;
    school.duration_minutes = 45;
    school.max_persons = 2;
    school.min_notice_minutes = 120;
    school.horizon_days = 30;
    school.channels = guichet::domain::Channels {
        web: false,
        phone: true,
        agent: true,
    };
    school.what_to_bring = "Le livret de famille.".into();
    school.active = false;
    store.update_service(&school).await.unwrap();
    assert_eq!(store.service(w.school).await.unwrap(), Some(school));
    assert!(store.service(w.titres).await.unwrap().unwrap().active);

    let mut counter = store
        .plannings(w.commune)
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.id == w.counter)
        .unwrap();
    counter.name = "Guichet 1".into();
    counter.capacity = 3;
    counter.active = false;
    store.update_planning(&counter).await.unwrap();
    let plannings = store.plannings(w.commune).await.unwrap();
    assert_eq!(plannings.iter().find(|p| p.id == w.counter), Some(&counter));
    assert_eq!(
        plannings
            .iter()
            .find(|p| p.id == w.annex_planning)
            .unwrap()
            .capacity,
        2
    );

    let rules = store.opening_rules(w.commune).await.unwrap();
    let (first_rule, second_rule) = (rules[0].id, rules[1].id);
    assert_eq!(rules[1].service_ids, [w.titres, w.school]);
    let changed = NewOpeningRule {
        planning_id: w.counter,
        location_id: w.town_hall,
        weekdays: Weekdays::of(&[chrono::Weekday::Sat]),
        start: MinuteOfDay::hm(8, 30),
        end: MinuteOfDay::hm(11, 0),
        step_minutes: 30,
        valid_from: "2026-12-01".parse().unwrap(),
        valid_until: Some("2027-06-30".parse().unwrap()),
        service_ids: vec![w.school],
    };
    store
        .update_opening_rule(second_rule, &changed)
        .await
        .unwrap();
    let rules = store.opening_rules(w.commune).await.unwrap();
    let rule = rules.iter().find(|r| r.id == second_rule).unwrap();
    assert_eq!(rule.planning_id, w.counter);
    assert_eq!(rule.location_id, w.town_hall);
    assert_eq!(rule.weekdays, changed.weekdays);
    assert_eq!(rule.start, MinuteOfDay::hm(8, 30));
    assert_eq!(rule.end, MinuteOfDay::hm(11, 0));
    assert_eq!(rule.step_minutes, 30);
    assert_eq!(rule.valid_from, changed.valid_from);
    assert_eq!(rule.valid_until, changed.valid_until);
    assert_eq!(rule.service_ids, [w.school], "services replaced, not added");
    assert_eq!(
        rules
            .iter()
            .find(|r| r.id == first_rule)
            .unwrap()
            .service_ids,
        [w.titres]
    );
    store.delete_opening_rule(first_rule).await.unwrap();
    assert_eq!(
        store
            .opening_rules(w.commune)
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>(),
        [second_rule]
    );
    assert_eq!(
        other
            .store()
            .opening_rules(other.commune)
            .await
            .unwrap()
            .len(),
        2,
        "another commune's hours are untouched"
    );

    let window = (paris("2026-12-01", 0, 0), paris("2026-12-02", 0, 0));
    let closure = |reason: &str| NewClosure {
        commune_id: w.commune,
        planning_id: None,
        location_id: Some(w.town_hall),
        starts_at: paris("2026-12-01", 9, 0),
        ends_at: paris("2026-12-01", 12, 0),
        reason: reason.into(),
    };
    let gone = store.insert_closure(&closure("Formation")).await.unwrap();
    let kept = store.insert_closure(&closure("Travaux")).await.unwrap();
    store.delete_closure(gone).await.unwrap();
    assert_eq!(
        store
            .closures(w.commune, window.0, window.1)
            .await
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect::<Vec<_>>(),
        [kept]
    );

    // --- The question an SMS leaves: accept the offered replacement by replying OUI ----------
    let phone = "+33639980102";
    let later = now + Duration::hours(48);
    // Not committed: nothing asked.
    {
        let mut tx = store.begin().await.unwrap();
        tx.set_sms_conversation(phone, jean.id, SmsAction::Accept, later)
            .await
            .unwrap();
    }
    assert_eq!(store.take_sms_conversation(phone, now).await.unwrap(), None);
    // A later question replaces an earlier one; it is answered once.
    store
        .set_sms_conversation(phone, marie.id, SmsAction::Cancel, later)
        .await
        .unwrap();
    let mut tx = store.begin().await.unwrap();
    tx.set_sms_conversation(phone, jean.id, SmsAction::Accept, later)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        store.take_sms_conversation(phone, now).await.unwrap(),
        Some((jean.id, SmsAction::Accept))
    );
    assert_eq!(
        store.take_sms_conversation(phone, now).await.unwrap(),
        None,
        "taken once"
    );
    // Expired: never answered, and forgotten.
    let mut tx = store.begin().await.unwrap();
    tx.set_sms_conversation(
        phone,
        jean.id,
        SmsAction::Accept,
        now + Duration::minutes(5),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        store
            .take_sms_conversation(phone, now + Duration::minutes(5))
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.take_sms_conversation(phone, now).await.unwrap(), None);
}
both_backends!(back_office, back_office_round_trip);

/// Code number `n` of `held` (its hash `hash-{n}`, valid ten minutes) and its message, "Code {n}",
/// to `to` by `channel`.
fn code_for(
    w: &World,
    held: &Appointment,
    (channel, to): (guichet::domain::MessageChannel, &str),
    n: i64,
) -> (guichet::store::OtpRecord, guichet::store::NewNotification) {
    use guichet::domain::{MessageChannel, NotificationKind};
    let now = w.clock_now();
    let otp = guichet::store::OtpRecord {
        appointment_id: held.id,
        destination: to.to_owned(),
        code_hash: format!("hash-{n}"),
        expires_at: now + Duration::minutes(10),
        attempts_left: 5,
        used_at: None,
        created_at: now,
    };
    let message = guichet::store::NewNotification {
        id: uuid::Uuid::new_v4(),
        commune_id: Some(w.commune),
        appointment_id: Some(held.id),
        kind: NotificationKind::Code,
        channel,
        destination: to.to_owned(),
        dedupe_key: None,
        subject: (channel == MessageChannel::Email).then(|| "Votre code".into()),
        body: format!("Code {n}"),
        html: None,
        ics: None,
        due_at: now,
    };
    (otp, message)
}

/// `put_code` writes a code and its message, and an SMS one takes its SMS from the commune's
/// budget for the day: false once the budget is spent (one statement on PostgreSQL).
async fn codes_take_their_sms_from_the_budget(db: crate::helpers::TestDb) {
    use guichet::domain::MessageChannel;
    let w = World::new(db).await;
    let store = w.store();
    let now = w.clock_now();
    let day = now.date_naive();
    let put = async |n: i64, sms: bool, budget: i32| {
        let start = paris("2026-12-01", 9, 0) + Duration::minutes(20 * n);
        let held = appointment(&w, start, 1, Status::Held);
        let (channel, to) = if sms {
            (MessageChannel::Sms, "+33639980001")
        } else {
            (MessageChannel::Email, "jean@exemple.fr")
        };
        let mut tx = store.begin().await.unwrap();
        tx.insert_appointment(&held).await.unwrap();
        let (otp, message) = code_for(&w, &held, (channel, to), n);
        let budget = sms.then_some((w.commune, day, budget));
        let taken = tx.put_code(&otp, &message, budget, now).await.unwrap();
        let written = tx.otp(held.id).await.unwrap();
        tx.commit().await.unwrap();
        let messages = store.notifications_of(held.id).await.unwrap();
        // Refused, what was written does not matter: the caller undoes it.
        if taken {
            assert_eq!(written, Some(otp), "the code is written");
            assert_eq!(
                messages
                    .iter()
                    .map(|m| m.message.body.as_str())
                    .collect::<Vec<_>>(),
                [message.body.as_str()]
            );
        }
        taken
    };
    assert!(put(0, true, 2).await, "first SMS of the day");
    assert!(put(1, false, 0).await, "an e-mail takes nothing");
    assert!(put(2, true, 2).await, "second SMS");
    assert!(!put(3, true, 2).await, "the budget of two is spent");
    assert!(!put(4, true, 0).await, "no budget at all");
}
both_backends!(codes_and_budget, codes_take_their_sms_from_the_budget);

/// `use_otp` uses up a code only with its hash, once, while it is unexpired and has tries left;
/// otherwise nothing changes.
async fn a_code_is_used_once_and_only_while_good(db: crate::helpers::TestDb) {
    use guichet::store::OtpRecord;
    let w = World::new(db).await;
    let store = w.store();
    let now = w.clock_now();
    let put = async |n: i64, expires_at, attempts_left| {
        let held = appointment(
            &w,
            paris("2026-12-01", 9, 0) + Duration::minutes(20 * n),
            1,
            Status::Held,
        );
        let mut tx = store.begin().await.unwrap();
        tx.insert_appointment(&held).await.unwrap();
        tx.put_otp(&OtpRecord {
            appointment_id: held.id,
            destination: "+33639980001".into(),
            code_hash: format!("hash-{n}"),
            expires_at,
            attempts_left,
            used_at: None,
            created_at: now,
        })
        .await
        .unwrap();
        tx.commit().await.unwrap();
        held.id
    };
    let good = put(0, now + Duration::minutes(10), 5).await;
    let expired = put(1, now, 5).await;
    let burnt = put(2, now + Duration::minutes(10), 0).await;
    let fresh = put(3, now + Duration::minutes(10), 5).await;

    let mut tx = store.begin().await.unwrap();
    assert!(
        !tx.use_otp(good, "hash-1", now).await.unwrap(),
        "another hash"
    );
    assert!(
        !tx.use_otp(expired, "hash-1", now).await.unwrap(),
        "expired"
    );
    assert!(
        !tx.use_otp(burnt, "hash-2", now).await.unwrap(),
        "no try left"
    );
    assert_eq!(tx.otp(good).await.unwrap().unwrap().used_at, None);
    assert!(tx.use_otp(good, "hash-0", now).await.unwrap());
    assert!(!tx.use_otp(good, "hash-0", now).await.unwrap(), "used once");
    tx.commit().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    let used = tx.otp(good).await.unwrap().unwrap();
    assert_eq!(used.used_at, Some(now));
    assert_eq!(used.attempts_left, 5);
    assert_eq!(tx.otp(expired).await.unwrap().unwrap().used_at, None);
    // An appointment written once its code is used up, or not at all.
    let confirmed = |id| {
        let mut a = appointment(&w, paris("2026-12-01", 9, 0), 1, Status::Confirmed);
        a.id = id;
        a.hold_expires_at = None;
        a.confirmed_at = Some(now);
        a.version = 2;
        a
    };
    let fresh_start = paris("2026-12-01", 10, 0);
    let mut fresh_confirmed = confirmed(fresh);
    fresh_confirmed.starts_at = fresh_start;
    fresh_confirmed.ends_at = fresh_start + Duration::minutes(20);
    assert!(
        !tx.update_with_otp(&fresh_confirmed, "hash-0", now)
            .await
            .unwrap(),
        "another hash"
    );
    assert!(
        !tx.update_with_otp(&confirmed(expired), "hash-1", now)
            .await
            .unwrap(),
        "expired"
    );
    assert_eq!(
        tx.appointment(fresh).await.unwrap().unwrap().status,
        Status::Held
    );
    assert_eq!(tx.otp(fresh).await.unwrap().unwrap().used_at, None);
    assert!(
        tx.update_with_otp(&fresh_confirmed, "hash-3", now)
            .await
            .unwrap()
    );
    assert!(
        !tx.update_with_otp(&fresh_confirmed, "hash-3", now)
            .await
            .unwrap(),
        "used once"
    );
    tx.commit().await.unwrap();
    let written = store.appointment(fresh).await.unwrap().unwrap();
    assert_eq!(written, fresh_confirmed);
    assert_eq!(
        store.appointment(expired).await.unwrap().unwrap().status,
        Status::Held
    );
}
both_backends!(code_use, a_code_is_used_once_and_only_while_good);

/// `hold_at_once`: on PostgreSQL, the usual hold in one statement — the lowest seat free and not
/// being taken, the citizen's claims, the code, its message and the SMS from the budget — and
/// nothing written when a seat, a claim, a limit or the budget calls for the step-by-step
/// booking. SQLite always leaves it to the step-by-step booking.
async fn a_hold_at_once(db: crate::helpers::TestDb) {
    use guichet::domain::MessageChannel;
    use guichet::store::{HeldAtOnce, HoldAtOnce};
    let postgres = db.backend == "postgres";
    let w = World::new(db).await;
    let store = w.store();
    let now = w.clock_now();
    let start = paris("2026-12-04", 15, 40);
    let day = now.date_naive();
    // Citizen `n` holds `start` on the annex (two seats), the code to their mobile (or, without
    // a budget, to their e-mail); nothing of it is in the store before.
    let hold = async |n: u32, planning, budget: Option<i32>| {
        let mut held = appointment(&w, start, 0, Status::Held);
        held.seat = None;
        held.planning_id = planning;
        held.citizen = citizen(n);
        let (channel, to) = match budget {
            Some(_) => (
                MessageChannel::Sms,
                held.citizen.phone.as_ref().unwrap().as_str(),
            ),
            None => (
                MessageChannel::Email,
                held.citizen.email.as_ref().unwrap().as_str(),
            ),
        };
        let claims = [
            Claim {
                category: Category::Titres,
                kind: ClaimKind::Phone,
                key: held.citizen.phone.as_ref().unwrap().as_str().to_owned(),
            },
            Claim {
                category: Category::Titres,
                kind: ClaimKind::Email,
                key: held.citizen.email.as_ref().unwrap().as_str().to_owned(),
            },
        ];
        let (otp, message) = code_for(&w, &held, (channel, to), i64::from(n));
        let outcome = store
            .hold_at_once(&HoldAtOnce {
                appointment: &held,
                claims: &claims,
                exclusive: true,
                destination_claim: Some(usize::from(budget.is_none())),
                otp: &otp,
                message: &message,
                recent: (now - Duration::minutes(10), 3),
                day_ago: (now - Duration::hours(24), 10),
                sms_day: (w.commune, day),
                budget,
                now,
            })
            .await
            .unwrap();
        (held, otp, outcome)
    };
    let written = async |held: &Appointment| store.appointment(held.id).await.unwrap();
    let sms_used = async || {
        let mut tx = store.begin().await.unwrap();
        let limits = tx
            .code_limits("none", now, now, w.commune, day)
            .await
            .unwrap();
        limits.sms_used
    };

    assert_eq!(store.holds_at_once(), postgres);
    let (first, otp, outcome) = hold(1, w.annex_planning, Some(2)).await;
    if !postgres {
        assert_eq!(outcome, HeldAtOnce::StepByStep);
        assert_eq!(written(&first).await, None, "nothing written");
        return;
    }
    assert_eq!(outcome, HeldAtOnce::Held(1), "the lowest free seat");
    let stored = written(&first).await.expect("the appointment is written");
    assert_eq!(
        (stored.seat, stored.status, stored.citizen),
        (Some(1), Status::Held, first.citizen.clone())
    );
    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.otp(first.id).await.unwrap(), Some(otp), "the code");
    let other = ClaimHolder {
        appointment: AppointmentId::new_v4(),
        commune: w.commune,
        exclusive: true,
    };
    for (kind, key) in [
        (ClaimKind::Phone, "+33639980001"),
        (ClaimKind::Email, "citoyen1@exemple.fr"),
    ] {
        let claim = Claim {
            category: Category::Titres,
            kind,
            key: key.into(),
        };
        assert_eq!(
            tx.claim(&claim, &other, None, now).await.unwrap(),
            Some(first.id),
            "the {kind:?} is claimed"
        );
    }
    drop(tx);
    let messages = store.notifications_of(first.id).await.unwrap();
    assert_eq!(
        messages
            .iter()
            .map(|m| (m.message.body.as_str(), m.message.destination.as_str()))
            .collect::<Vec<_>>(),
        [("Code 1", "+33639980001")]
    );
    assert_eq!(sms_used().await, 1, "one SMS from the budget");

    // Another transaction is taking seat 2: the hold does not wait for it, nothing is written.
    let mut taking = store.begin().await.unwrap();
    let mut on_seat_two = appointment(&w, start, 2, Status::Held);
    on_seat_two.citizen = citizen(9);
    assert!(
        taking
            .insert_appointment_on_free_seat(&on_seat_two)
            .await
            .unwrap()
    );
    let (second, _, outcome) = hold(2, w.annex_planning, Some(2)).await;
    assert_eq!(outcome, HeldAtOnce::Taken);
    assert_eq!(written(&second).await, None);
    taking.rollback().await.unwrap();
    let (second, _, outcome) = hold(2, w.annex_planning, Some(2)).await;
    assert_eq!(outcome, HeldAtOnce::Held(2), "seat 2, once let go");
    assert!(written(&second).await.is_some());
    assert_eq!(sms_used().await, 2);

    // Left to the step-by-step booking, nothing written: a citizen who holds already, a spent
    // budget, a planning that does not exist.
    let (again, _, outcome) = hold(1, w.counter, Some(5)).await;
    assert_eq!(outcome, HeldAtOnce::StepByStep, "citizen 1 holds already");
    assert_eq!(written(&again).await, None);
    let (spent, _, outcome) = hold(3, w.counter, Some(2)).await;
    assert_eq!(
        outcome,
        HeldAtOnce::StepByStep,
        "the budget of two is spent"
    );
    assert_eq!(written(&spent).await, None);
    assert_eq!(sms_used().await, 2);
    let (nowhere, _, outcome) = hold(4, w.counter + 1000, Some(5)).await;
    assert_eq!(outcome, HeldAtOnce::StepByStep, "no such planning");
    assert_eq!(written(&nowhere).await, None);
    // By e-mail the budget is not looked at.
    let (by_email, _, outcome) = hold(3, w.counter, None).await;
    assert_eq!(outcome, HeldAtOnce::Held(1));
    assert!(written(&by_email).await.is_some());
    assert_eq!(sms_used().await, 2);
    // The counter is full now.
    let (full, _, outcome) = hold(5, w.counter, Some(5)).await;
    assert_eq!(outcome, HeldAtOnce::Taken);
    assert_eq!(written(&full).await, None);
}
both_backends!(hold_at_once, a_hold_at_once);

/// A world on PostgreSQL, and a pool of guichet's own on its schema; none without PostgreSQL.
async fn postgres_world() -> Option<(World, guichet::store::PgStore)> {
    let db = crate::helpers::TestDb::postgres().await?;
    let url = db.url.clone();
    let w = World::new(db).await;
    let pg = guichet::store::PgStore::connect(&url).await.unwrap();
    Some((w, pg))
}

/// A hold as `hold_at_once` takes it, owned: the appointment, its claims, its code and message.
type OwnedHold = (
    Appointment,
    Vec<Claim>,
    guichet::store::OtpRecord,
    guichet::store::NewNotification,
);

/// Writes `hold` through `pg`, its code by SMS within a large budget.
async fn hold_through(
    pg: guichet::store::PgStore,
    commune: guichet::domain::CommuneId,
    now: DateTime<Utc>,
    (held, claims, otp, message): OwnedHold,
) -> Result<guichet::store::HeldAtOnce, StoreError> {
    use guichet::store::{HoldAtOnce, Store};
    pg.hold_at_once(&HoldAtOnce {
        appointment: &held,
        claims: &claims,
        exclusive: true,
        destination_claim: Some(0),
        otp: &otp,
        message: &message,
        recent: (now - Duration::minutes(10), 3),
        day_ago: (now - Duration::hours(24), 10),
        sms_day: (commune, now.date_naive()),
        budget: Some(1000),
        now,
    })
    .await
}

/// On PostgreSQL, holds that arrive together are written together, in one statement and one
/// transaction, and each still decides alone: of two holds on one seat one gets it, of two
/// holds by one citizen one gets it, and nothing of the others is written, nor of a hold whose
/// request was given up while it waited. A hold the database refuses outright sinks the
/// statement: the others are then written alone, and only it fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_arriving_together_are_written_together() {
    use guichet::domain::MessageChannel;
    use guichet::store::{HeldAtOnce, Store};
    // guichet's own pool on the test's schema, whose queue the holds below share.
    let Some((w, pg)) = postgres_world().await else {
        return;
    };
    let now = w.clock_now();
    // A hold for citizen `n` on `planning` at `start`, its code by SMS to `to`.
    let hold_for = |n: u32, planning, start: DateTime<Utc>, to: Option<&str>| -> OwnedHold {
        let mut held = appointment(&w, start, 0, Status::Held);
        held.seat = None;
        held.planning_id = planning;
        held.citizen = citizen(n);
        let phone = held.citizen.phone.as_ref().unwrap().as_str().to_owned();
        let claims = vec![Claim {
            category: Category::Titres,
            kind: ClaimKind::Phone,
            key: phone.clone(),
        }];
        let (otp, message) = code_for(
            &w,
            &held,
            (MessageChannel::Sms, to.unwrap_or(&phone)),
            i64::from(n),
        );
        (held, claims, otp, message)
    };
    let written = async |held: &Appointment| pg.appointment(held.id).await.unwrap();
    let sms_used = async || {
        let mut tx = pg.begin().await.unwrap();
        let day = now.date_naive();
        tx.code_limits("none", now, now, w.commune, day)
            .await
            .unwrap()
            .sms_used
    };
    // Writes `holds` as they would arrive while every writer is busy: the writers held up by a
    // transaction holding the commune's SMS counter, each with one hold (`openers`, other
    // citizens), the holds queued behind them, then the counter let go. Answers their outcomes,
    // and how many statements wrote them.
    let writers = pg.hold_writers();
    let mut opener = 900;
    let mut together = async |holds: Vec<OwnedHold>, given_up: Option<OwnedHold>| {
        let mut blocker = pg.pool().begin().await.unwrap();
        let blocker_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *blocker)
            .await
            .unwrap();
        sqlx::query("UPDATE sms_daily_usage SET sent = sent WHERE commune_id = $1")
            .bind(w.commune)
            .execute(&mut *blocker)
            .await
            .unwrap();
        let mut openers = Vec::new();
        for waiting in 1..=writers {
            opener += 1;
            let start = paris("2026-12-11", 8, 0) + Duration::minutes(20 * i64::from(opener));
            let hold = hold_for(opener, w.annex_planning, start, None);
            openers.push(tokio::spawn(hold_through(pg.clone(), w.commune, now, hold)));
            // Until its writer waits for the counter.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                assert!(
                    std::time::Instant::now() < deadline,
                    "writer {waiting} never waited for the counter"
                );
                let blocked: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                )
                .bind(blocker_pid)
                .fetch_one(pg.pool())
                .await
                .unwrap();
                if blocked >= i64::try_from(waiting).unwrap() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        // A request given up while its hold waits (queued on its first poll, then dropped).
        if let Some(hold) = given_up {
            let write = hold_through(pg.clone(), w.commune, now, hold);
            let waited = tokio::time::timeout(std::time::Duration::ZERO, write).await;
            assert!(waited.is_err(), "still waiting");
        }
        let before = pg.hold_statements();
        let writes = holds
            .into_iter()
            .map(|h| hold_through(pg.clone(), w.commune, now, h));
        // All queued (on their first poll) before the counter is let go.
        let (outcomes, ()) = tokio::join!(futures::future::join_all(writes), async {
            blocker.commit().await.unwrap();
        });
        for opened in openers {
            assert!(matches!(opened.await.unwrap(), Ok(HeldAtOnce::Held(_))));
        }
        // The openers' statements, and theirs.
        (outcomes, pg.hold_statements() - before - writers as u64)
    };

    // The first holds: each alone, at once.
    let first = hold_for(100, w.annex_planning, paris("2026-12-04", 8, 0), None);
    let outcome = hold_through(pg.clone(), w.commune, now, first.clone()).await;
    assert_eq!(outcome.unwrap(), HeldAtOnce::Held(1));
    assert_eq!(pg.hold_statements(), 1);

    // Twenty citizens, twenty different slots: all held, in one statement.
    let holds: Vec<OwnedHold> = (1..=20u32)
        .map(|i| {
            let start = paris("2026-12-04", 8, 0) + Duration::minutes(20 * i64::from(i));
            hold_for(100 + i, w.annex_planning, start, None)
        })
        .collect();
    let (outcomes, statements) = together(holds.clone(), None).await;
    assert_eq!(statements, 1, "written together");
    for ((held, _, otp, _), outcome) in holds.iter().zip(&outcomes) {
        assert_eq!(outcome.as_ref().unwrap(), &HeldAtOnce::Held(1));
        assert!(written(held).await.is_some());
        let mut tx = pg.begin().await.unwrap();
        assert_eq!(tx.otp(held.id).await.unwrap().as_ref(), Some(otp));
        drop(tx);
        assert_eq!(pg.notifications_of(held.id).await.unwrap().len(), 1);
    }
    assert_eq!(
        sms_used().await,
        1 + writers as i64 + 20,
        "an SMS from the budget each"
    );

    // Together: two citizens on the counter's one seat, and one citizen twice.
    let start = paris("2026-12-07", 9, 0);
    let contest = vec![
        hold_for(200, w.counter, start, None),
        hold_for(201, w.counter, start, None),
        hold_for(202, w.annex_planning, start, None),
        hold_for(202, w.annex_planning, start + Duration::hours(1), None),
    ];
    let given_up = hold_for(203, w.counter, start + Duration::hours(1), None);
    let (outcomes, statements) = together(contest.clone(), Some(given_up.clone())).await;
    assert_eq!(
        written(&given_up.0).await,
        None,
        "nothing written for a request given up"
    );
    assert_eq!(statements, 1, "written together");
    let held = |i: usize| matches!(outcomes[i], Ok(HeldAtOnce::Held(_)));
    assert!(held(0) != held(1), "one of the rivals: {outcomes:?}");
    assert!(held(2) != held(3), "one hold for the citizen: {outcomes:?}");
    for (i, h) in contest.iter().enumerate() {
        assert!(outcomes[i].is_ok(), "{outcomes:?}");
        assert_eq!(written(&h.0).await.is_some(), held(i), "{i}: {outcomes:?}");
    }
    let seated = pg
        .appointments(w.commune, start, start + Duration::minutes(20))
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.planning_id == w.counter && a.status.occupies_seat())
        .count();
    assert_eq!(seated, 1, "no overbooking");
    assert_eq!(
        sms_used().await,
        1 + 2 * writers as i64 + 20 + 2,
        "no SMS for what was not held"
    );

    // Together again, with a code's destination PostgreSQL refuses (a NUL byte): the statement
    // fails, and the holds are written again alone.
    let start = paris("2026-12-08", 9, 0);
    let mixed = vec![
        hold_for(300, w.annex_planning, start, None),
        hold_for(301, w.annex_planning, start, Some("+33639980301\0")),
        hold_for(302, w.counter, start, None),
    ];
    let (outcomes, statements) = together(mixed.clone(), None).await;
    assert_eq!(statements, 2, "the two written alone: {outcomes:?}");
    assert_eq!(outcomes[0].as_ref().unwrap(), &HeldAtOnce::Held(1));
    assert!(outcomes[1].is_err(), "{outcomes:?}");
    assert_eq!(outcomes[2].as_ref().unwrap(), &HeldAtOnce::Held(1));
    assert!(written(&mixed[0].0).await.is_some());
    assert_eq!(written(&mixed[1].0).await, None, "nothing of it written");
    assert!(written(&mixed[2].0).await.is_some());

    // One citizen twice (a double tap), the second hold arriving while a batch with the first
    // is written: that batch's first hold has taken the commune's SMS counter, its second waits
    // (for a lock this test holds). Written at once, the second hold would claim the citizen
    // and wait for the counter; the batch, coming to the first hold, would wait for that claim:
    // a deadlock, found after a second, and one of the statements' holds all written again
    // alone. The second hold waits for the batch to end instead.
    let start = paris("2026-12-09", 8, 0);
    let slot = |i: i64| start + Duration::minutes(20 * i);
    let mut batch: Vec<OwnedHold> = (0..30)
        .map(|i| hold_for(400 + i as u32, w.annex_planning, slot(i), None))
        .collect();
    batch.push(hold_for(500, w.annex_planning, slot(30), None));
    let tap = hold_for(500, w.annex_planning, slot(31), None);
    let mut stall = pg.pool().begin().await.unwrap();
    let stall_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *stall)
        .await
        .unwrap();
    let lock = format!("claim:titres:phone:{}", batch[1].1[0].key);
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext(current_schema() || $1))")
        .bind(&lock)
        .execute(&mut *stall)
        .await
        .unwrap();
    // Backends blocked by `pid`, and by those.
    let blocked = async |pid: i32| -> (i64, i64) {
        sqlx::query_as(
            "SELECT count(DISTINCT a.pid), count(b.pid) FROM pg_stat_activity a \
             LEFT JOIN pg_stat_activity b ON a.pid = ANY(pg_blocking_pids(b.pid)) \
             WHERE $1 = ANY(pg_blocking_pids(a.pid))",
        )
        .bind(pid)
        .fetch_one(pg.pool())
        .await
        .unwrap()
    };
    let before = pg.hold_statements();
    let ((outcomes, _), tapped) = tokio::join!(together(batch.clone(), None), async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while blocked(stall_pid).await.0 == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the batch never waited"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let tapped = tokio::spawn(hold_through(pg.clone(), w.commune, now, tap.clone()));
        // Until the second hold waits: in the queue, or (before) for the batch's counter.
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "the second hold went nowhere"
            );
            let (waiting, writers) = pg.hold_queue();
            if waiting == 1 && writers == 1 || blocked(stall_pid).await.1 > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        stall.rollback().await.unwrap();
        tapped.await.unwrap()
    });
    for (i, outcome) in outcomes.iter().enumerate() {
        assert_eq!(outcome.as_ref().unwrap(), &HeldAtOnce::Held(1), "{i}");
    }
    // The step-by-step booking tells the citizen why not.
    assert_eq!(tapped.unwrap(), HeldAtOnce::StepByStep);
    assert_eq!(
        pg.hold_statements() - before,
        writers as u64 + 2,
        "the writers' first holds, the batch, the second hold: none refused and written again"
    );
}

/// `confirm_at_once`: on PostgreSQL, the usual confirmation in one statement — the hold as it
/// was read, confirmed with its right code, the code used up, the personal link and the
/// messages — and nothing written when the code is wrong or spent, the hold lapsed, or the
/// appointment changed since it was read. SQLite always leaves it to the step-by-step
/// confirmation.
async fn a_confirm_at_once(db: crate::helpers::TestDb) {
    use guichet::domain::{MessageChannel, NotificationKind};
    use guichet::store::{ConfirmAtOnce, NewNotification, OtpRecord};
    let postgres = db.backend == "postgres";
    let w = World::new(db).await;
    let store = w.store();
    let now = w.clock_now();
    // A hold of seat `seat`, lapsing at `expires`, its code `hash-{seat}`.
    let held = async |seat: i32, expires| {
        let mut held = appointment(&w, paris("2026-12-02", 10, 0), seat, Status::Held);
        held.hold_expires_at = Some(expires);
        let mut tx = store.begin().await.unwrap();
        tx.insert_appointment(&held).await.unwrap();
        tx.put_otp(&OtpRecord {
            appointment_id: held.id,
            destination: "+33639980001".into(),
            code_hash: format!("hash-{seat}"),
            expires_at: now + Duration::minutes(10),
            attempts_left: 5,
            used_at: None,
            created_at: now,
        })
        .await
        .unwrap();
        tx.commit().await.unwrap();
        held
    };
    let confirmed = |held: &Appointment| Appointment {
        status: Status::Confirmed,
        hold_expires_at: None,
        confirmed_at: Some(now),
        version: held.version + 1,
        updated_at: now,
        ..held.clone()
    };
    let message = |a: &Appointment, kind: NotificationKind, channel, body: &str| NewNotification {
        id: uuid::Uuid::new_v4(),
        commune_id: Some(w.commune),
        appointment_id: Some(a.id),
        kind,
        channel,
        destination: "+33639980001".into(),
        dedupe_key: Some(format!("{}:{kind}:{}:{channel}", a.id, a.version)),
        subject: None,
        body: body.into(),
        html: None,
        ics: None,
        due_at: now,
    };
    let confirm = async |before: &Appointment, after: &Appointment, code: &str, token: &str| {
        let messages = [
            message(
                after,
                NotificationKind::Confirmation,
                MessageChannel::Sms,
                "Confirmé",
            ),
            message(
                after,
                NotificationKind::Reminder,
                MessageChannel::Sms,
                "Rappel",
            ),
        ];
        store
            .confirm_at_once(&ConfirmAtOnce {
                before,
                confirmed: after,
                code_hash: code,
                token_hash: token,
                messages: &messages,
                now,
            })
            .await
            .unwrap()
    };
    // What is written of `a`: its status and version, its code's use, its link, its messages.
    let written = async |a: &Appointment, token: &str| {
        let stored = store.appointment(a.id).await.unwrap().unwrap();
        let mut tx = store.begin().await.unwrap();
        let used = tx.otp(a.id).await.unwrap().unwrap().used_at;
        drop(tx);
        let linked = store
            .appointment_by_token(token)
            .await
            .unwrap()
            .map(|l| l.id);
        let bodies: Vec<String> = store
            .notifications_of(a.id)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.message.body)
            .collect();
        (stored.status, stored.version, used, linked, bodies)
    };

    let hold = held(1, now + Duration::minutes(10)).await;
    let after = confirmed(&hold);
    assert_eq!(store.confirms_at_once(), postgres);
    let untouched = (Status::Held, 1, None, None, Vec::<String>::new());
    if !postgres {
        assert!(!confirm(&hold, &after, "hash-1", "token-1").await);
        assert_eq!(
            written(&hold, "token-1").await,
            untouched,
            "nothing written"
        );
        return;
    }
    assert!(
        !confirm(&hold, &after, "hash-9", "token-1").await,
        "a wrong code"
    );
    assert_eq!(written(&hold, "token-1").await, untouched);
    let changed = Appointment {
        version: 7,
        ..hold.clone()
    };
    assert!(
        !confirm(&changed, &confirmed(&changed), "hash-1", "token-1").await,
        "the appointment changed since it was read"
    );
    assert_eq!(written(&hold, "token-1").await, untouched);

    assert!(confirm(&hold, &after, "hash-1", "token-1").await);
    let done = (
        Status::Confirmed,
        2,
        Some(now),
        Some(hold.id),
        vec!["Confirmé".to_owned(), "Rappel".to_owned()],
    );
    let mut got = written(&hold, "token-1").await;
    got.4.sort();
    assert_eq!(
        got, done,
        "confirmed, the code used, the link, the messages"
    );
    assert!(
        !confirm(&hold, &after, "hash-1", "token-2").await,
        "confirmed already"
    );
    let mut got = written(&hold, "token-1").await;
    got.4.sort();
    assert_eq!(got, done, "nothing more");
    assert_eq!(store.appointment_by_token("token-2").await.unwrap(), None);

    // A lapsed hold is for the step-by-step confirmation (it takes a seat again).
    let lapsed = held(2, now).await;
    assert!(!confirm(&lapsed, &confirmed(&lapsed), "hash-2", "token-3").await);
    assert_eq!(
        written(&lapsed, "token-3").await,
        (Status::Held, 1, None, None, Vec::new())
    );
}
both_backends!(confirm_at_once, a_confirm_at_once);

/// Behind a pooler in transaction mode a statement may reach a server connection that never
/// opened through guichet's pool, without the functions of `hold_at_once` and
/// `confirm_at_once`: both leave the work to the step-by-step path, nothing written, no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_functions_a_connection_leaves_it_to_the_step_by_step_path() {
    use guichet::domain::MessageChannel;
    use guichet::store::{ConfirmAtOnce, HeldAtOnce, HoldAtOnce, Store};
    // A store of its own on the test's schema, every connection of it (the holds' own
    // included) stripped of the functions.
    let Some((w, pg)) = postgres_world().await else {
        return;
    };
    let now = w.clock_now();
    let mut connections = Vec::new();
    for pool in [pg.pool(), pg.hold_pool()] {
        for _ in 0..pool.options().get_max_connections() {
            connections.push(pool.acquire().await.unwrap());
        }
    }
    for c in &mut connections {
        for function in ["guichet_hold", "guichet_confirm"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP FUNCTION IF EXISTS pg_temp.{function}"
            )))
            .execute(&mut **c)
            .await
            .unwrap();
        }
    }
    drop(connections);

    let mut held = appointment(&w, paris("2026-12-04", 15, 40), 0, Status::Held);
    held.seat = None;
    let phone = held.citizen.phone.as_ref().unwrap().as_str().to_owned();
    let (otp, message) = code_for(&w, &held, (MessageChannel::Sms, &phone), 1);
    let outcome = pg
        .hold_at_once(&HoldAtOnce {
            appointment: &held,
            claims: &[],
            exclusive: true,
            destination_claim: None,
            otp: &otp,
            message: &message,
            recent: (now - Duration::minutes(10), 3),
            day_ago: (now - Duration::hours(24), 10),
            sms_day: (w.commune, now.date_naive()),
            budget: Some(10),
            now,
        })
        .await
        .unwrap();
    assert_eq!(outcome, HeldAtOnce::StepByStep);
    assert_eq!(
        pg.appointment(held.id).await.unwrap(),
        None,
        "nothing written"
    );

    let hold = appointment(&w, paris("2026-12-04", 16, 0), 1, Status::Held);
    let mut tx = pg.begin().await.unwrap();
    tx.insert_appointment(&hold).await.unwrap();
    tx.put_otp(&otp_of(&hold, now)).await.unwrap();
    tx.commit().await.unwrap();
    let confirmed = Appointment {
        status: Status::Confirmed,
        hold_expires_at: None,
        confirmed_at: Some(now),
        version: 2,
        ..hold.clone()
    };
    let written = pg
        .confirm_at_once(&ConfirmAtOnce {
            before: &hold,
            confirmed: &confirmed,
            code_hash: "hash-0",
            token_hash: "token",
            messages: &[],
            now,
        })
        .await
        .unwrap();
    assert!(!written);
    let stored = pg.appointment(hold.id).await.unwrap().unwrap();
    assert_eq!(stored.status, Status::Held, "nothing written");
}

/// A good code, `hash-0`, for `held`.
fn otp_of(held: &Appointment, now: DateTime<Utc>) -> guichet::store::OtpRecord {
    guichet::store::OtpRecord {
        appointment_id: held.id,
        destination: "+33639980001".into(),
        code_hash: "hash-0".into(),
        expires_at: now + Duration::minutes(10),
        attempts_left: 5,
        used_at: None,
        created_at: now,
    }
}
