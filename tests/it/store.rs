//! The storage conformance suite: every operation of the `Store` and `StoreTx` traits, run on
//! SQLite and on PostgreSQL, with the same expectations.

use crate::both_backends;
use crate::helpers::{World, citizen, paris};
use chrono::{DateTime, Duration, Utc};
use guichet::domain::{
    AntsApplicationId, Appointment, AppointmentId, Category, Channel, MinuteOfDay, Status,
    Weekdays, WeeklyHours, WeeklyRange,
};
use guichet::store::{Claim, ClaimHolder, ClaimKind, NewClosure, NewCommune, StoreError};

fn appointment(w: &World, start: DateTime<Utc>, seat: i32, status: Status) -> Appointment {
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

async fn transaction_primitives(db: crate::helpers::TestDb) {
    let w = World::new(db).await;
    let store = w.store();
    let now = w.clock_now();
    let start = paris("2026-12-01", 9, 0);
    let held = appointment(&w, start, 1, Status::Held);
    let confirmed = appointment(&w, start, 2, Status::Confirmed);
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.lock_planning(w.annex_planning)
            .await
            .unwrap()
            .unwrap()
            .capacity,
        2
    );
    assert_eq!(tx.lock_planning(9999).await.unwrap(), None);
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
        tx.claim(&claim, &holder(&first, true), now).await.unwrap(),
        None
    );
    assert_eq!(
        tx.claim(&claim, &holder(&first, true), now).await.unwrap(),
        None,
        "claiming twice is fine"
    );
    assert_eq!(
        tx.claim(&claim, &holder(&second, true), now).await.unwrap(),
        Some(first.id)
    );
    // Another category is another claim.
    let school = Claim {
        category: Category::Scolaire,
        ..claim.clone()
    };
    assert_eq!(
        tx.claim(&school, &holder(&second, true), now)
            .await
            .unwrap(),
        None
    );
    tx.commit().await.unwrap();

    // Once the hold has expired, its claim is stale and is taken over.
    let later = now + Duration::minutes(11);
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.claim(&claim, &holder(&second, true), later)
            .await
            .unwrap(),
        None
    );
    // Transfer and release.
    let third = appointment(&w, start + Duration::hours(1), 1, Status::Confirmed);
    tx.insert_appointment(&third).await.unwrap();
    tx.transfer_claims(second.id, third.id).await.unwrap();
    assert_eq!(
        tx.claim(&claim, &holder(&first, true), later)
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
        tx.claim(&claim, &holder(&second, false), later)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        tx.claim(&claim, &holder(&third, false), later)
            .await
            .unwrap(),
        None
    );
    assert!(matches!(
        tx.claim(&claim, &holder(&elsewhere, false), later).await.unwrap(),
        Some(id) if id == second.id || id == third.id
    ));
    let fourth = appointment(&w, start + Duration::hours(2), 1, Status::Confirmed);
    tx.insert_appointment(&fourth).await.unwrap();
    assert!(
        tx.claim(&claim, &holder(&fourth, true), later)
            .await
            .unwrap()
            .is_some()
    );
    tx.commit().await.unwrap();
}
both_backends!(citizen_claims, claims);

#[tokio::test]
async fn unreadable_urls_are_refused() {
    let err = guichet::store::connect("postgres://[::1")
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::BadUrl(_)), "{err:?}");
}
