//! Notifications: templates (one GSM-7 segment, always), the outbox (exactly once across two
//! workers, a worker dying at each step, provider errors), e-mail over a real SMTP
//! conversation, and reminders on time, once, never for a cancelled or moved appointment.

use crate::fake_twilio::{FakeTwilio, Mode};
use crate::helpers::{
    PUBLIC_URL, TestApp, TestAppOptions, TestDb, World, citizen, monday_morning, paris,
};
use crate::smtp_server::SmtpServer;
use chrono::{DateTime, Duration, Utc};
use guichet::booking::{BookingError, BookingMode, Cancellation};
use guichet::domain::gsm7::fits_one_segment;
use guichet::domain::{
    Appointment, AppointmentPlace, Channel, Clock, ManualClock, MessageChannel, NotificationKind,
    NotificationStatus, Status,
};
use guichet::notify::templates::{self, Proposal, Subject};
use guichet::store::{NewNotification, Notification, SendResult};
use mail_parser::MimeHeaders;
use std::sync::Arc;
use uuid::Uuid;

const MOBILE: &str = "+33639980001";

// --- Templates ----------------------------------------------------------------------------

/// Every SMS template, for every demo commune, service and location, with the longest values
/// (a Wednesday in September at 16:40, the platform's real URL, a 22-character token): pure
/// GSM-7, one segment.
#[tokio::test]
async fn every_sms_is_one_gsm7_segment() {
    let db = TestDb::sqlite().await;
    let clock = ManualClock::new(monday_morning());
    let engine = guichet::booking::Engine::new(
        db.store.clone(),
        Arc::new(clock) as Arc<dyn Clock>,
        Duration::minutes(10),
    );
    guichet::demo::seed(&engine).await.unwrap();
    let longest: DateTime<Utc> = paris("2026-09-30", 16, 40);
    let token = "Abcdefghij0123456789_-";
    let link = format!("{PUBLIC_URL}/r/{token}");
    let reasons = [
        "Station biométrique en panne",
        "Fermeture exceptionnelle de la mairie",
    ];
    let mut checked = 0;
    for commune in db.store.communes().await.unwrap() {
        let booking_url = format!("{PUBLIC_URL}/{}", commune.slug);
        for service in db.store.services(commune.id).await.unwrap() {
            for location in db.store.locations(commune.id).await.unwrap() {
                let appointment = Appointment {
                    starts_at: longest,
                    ends_at: longest + Duration::minutes(i64::from(service.duration_minutes) * 4),
                    commune_id: commune.id,
                    service_id: service.id,
                    location_id: location.id,
                    persons: service.max_persons,
                    ..sample_appointment()
                };
                let s = Subject {
                    commune: &commune,
                    service: &service,
                    location: &location,
                    appointment: &appointment,
                    booking_url: &booking_url,
                };
                let proposal = Proposal {
                    start: longest + Duration::days(7),
                    location_name: location.name.clone(),
                    accept_url: link.clone(),
                };
                let place = AppointmentPlace {
                    appointment_id: appointment.id,
                    commune_name: commune.name.clone(),
                    commune_slug: commune.slug.clone(),
                    location_name: location.name.clone(),
                    location_address: location.address.clone(),
                    service_name: service.name.clone(),
                    starts_at: longest,
                    timezone: commune.timezone,
                };
                let mut texts = vec![
                    templates::code_sms(&commune, "123456"),
                    templates::confirmation_sms(&s, &link),
                    templates::reminder_sms(&s, &link),
                    templates::cancellation_sms(&s),
                    templates::moved_sms(&s, &link),
                    templates::link_sms(&s, &link),
                    templates::duplicate_notice_sms(&place),
                    templates::sms_cancel_question(&commune, &appointment),
                    templates::sms_cancelled(&commune, &appointment, &booking_url),
                    templates::sms_help(),
                    templates::sms_stopped(),
                    templates::sms_nothing_to_cancel(),
                ];
                // Refusals answered to an SMS reply ("OUI" to an offer taken meanwhile, …),
                // the longest of the engine's messages among them.
                for refusal in [
                    BookingError::ProposalLapsed,
                    BookingError::HoldExpired,
                    BookingError::AlreadyStarted,
                    BookingError::SlotTaken,
                    BookingError::AppointmentNotFound,
                    BookingError::NotModifiable(Status::CancelledByCommune),
                    BookingError::Duplicate(None),
                    BookingError::TooManyCodes,
                    BookingError::SmsBudgetExhausted,
                    BookingError::CannotReceiveSms,
                ] {
                    texts.push(templates::sms_refusal(&refusal.message()));
                }
                for reason in reasons {
                    texts.push(templates::commune_cancellation_sms(&s, reason, None));
                    texts.push(templates::commune_cancellation_sms(
                        &s,
                        reason,
                        Some(&proposal),
                    ));
                }
                for text in &texts {
                    assert!(
                        fits_one_segment(text),
                        "{} / {}: {text:?} ({} chars)",
                        commune.slug,
                        service.name,
                        text.chars().count()
                    );
                    assert!(!text.ends_with("..."), "cut: {text}");
                    checked += 1;
                }
                // The useful parts survive the shortening.
                assert!(
                    texts[1].contains("16h40") && texts[1].contains(token),
                    "{}",
                    texts[1]
                );
                assert!(texts[2].contains("ANNULER"), "{}", texts[2]);
                assert!(texts[0].contains("123456"));
            }
        }
    }
    assert!(checked >= 240, "{checked} texts checked");
}

fn sample_appointment() -> Appointment {
    let at = paris("2026-12-03", 9, 30);
    Appointment {
        id: Uuid::nil(),
        commune_id: 1,
        planning_id: 1,
        location_id: 1,
        service_id: 1,
        starts_at: at,
        ends_at: at + Duration::minutes(20),
        seat: Some(1),
        persons: 1,
        citizen: citizen(1),
        channel: Channel::Web,
        status: Status::Confirmed,
        hold_expires_at: None,
        replaces_id: None,
        cancel_reason: None,
        version: 1,
        created_at: monday_morning(),
        updated_at: monday_morning(),
        confirmed_at: Some(monday_morning()),
        cancelled_at: None,
    }
}

/// What citizens read, for one demo appointment (insta snapshot: every wording change shows).
#[tokio::test]
async fn texts_for_one_appointment() {
    let db = TestDb::sqlite().await;
    let w = World::new(db).await;
    let commune = w.store().commune(w.commune).await.unwrap().unwrap();
    let service = w.store().service(w.titres).await.unwrap().unwrap();
    let location = w.store().locations(w.commune).await.unwrap().remove(0);
    let appointment = Appointment {
        commune_id: w.commune,
        service_id: w.titres,
        location_id: location.id,
        persons: 2,
        ..sample_appointment()
    };
    let booking_url = format!("{PUBLIC_URL}/testville");
    let s = Subject {
        commune: &commune,
        service: &service,
        location: &location,
        appointment: &appointment,
        booking_url: &booking_url,
    };
    let link = format!("{PUBLIC_URL}/r/Abcdefghij0123456789_-");
    let email = templates::confirmation_email(&s, &link);
    let all = [
        templates::code_sms(&commune, "123456"),
        templates::confirmation_sms(&s, &link),
        templates::reminder_sms(&s, &link),
        templates::cancellation_sms(&s),
        templates::commune_cancellation_sms(&s, "Station biométrique en panne", None),
        templates::moved_sms(&s, &link),
        format!("{}\n\n{}", email.subject, email.text),
    ]
    .join("\n---\n");
    insta::assert_snapshot!("texts", all);
    assert!(email.html.contains("lang=\"fr\""));
    assert!(email.html.contains(&format!("<a href=\"{link}\">")));
    let ics = email.ics.unwrap();
    assert!(
        ics.contains("BEGIN:VCALENDAR") && ics.contains("DTSTART:20261203T083000Z"),
        "{ics}"
    );
}

// --- The outbox -----------------------------------------------------------------------------

fn message(commune: i64, to: &str, body: String, due_at: DateTime<Utc>) -> NewNotification {
    NewNotification {
        id: Uuid::new_v4(),
        commune_id: Some(commune),
        appointment_id: None,
        kind: NotificationKind::Confirmation,
        channel: MessageChannel::Sms,
        destination: to.to_owned(),
        dedupe_key: None,
        subject: None,
        body,
        html: None,
        ics: None,
        due_at,
    }
}

async fn enqueue(w: &World, messages: &[NewNotification]) {
    let mut tx = w.store().begin().await.unwrap();
    for m in messages {
        assert!(tx.enqueue(m, w.engine.now()).await.unwrap());
    }
    tx.commit().await.unwrap();
}

async fn status_of(w: &World, id: Uuid) -> Notification {
    w.store().notification(id).await.unwrap().unwrap()
}

/// Two instances, each with its own pool and worker, on one database, 500 reminders due at
/// once: each sent exactly once.
async fn two_workers_send_each_message_once(db: TestDb) {
    let w = World::new(db).await;
    let twilio = FakeTwilio::start().await;
    let first = TestApp::spawn_with(
        &w.db,
        w.clock.clone(),
        TestAppOptions {
            twilio: Some(twilio.clone()),
            ..Default::default()
        },
    )
    .await;
    let second_db = TestDb {
        store: w.db.reopen().await,
        ..w.db.shared()
    };
    let second = TestApp::spawn_with(
        &second_db,
        w.clock.clone(),
        TestAppOptions {
            twilio: Some(twilio.clone()),
            ..Default::default()
        },
    )
    .await;
    // 500 appointments over the coming weeks, each with a reminder due now.
    let mut tx = w.store().begin().await.unwrap();
    let mut messages = Vec::new();
    for i in 0..500u32 {
        let start = paris("2026-12-07", 9, 0) + Duration::minutes(20 * i64::from(i));
        let appointment = Appointment {
            id: Uuid::new_v4(),
            commune_id: w.commune,
            planning_id: w.annex_planning,
            location_id: w.annex,
            service_id: w.titres,
            starts_at: start,
            ends_at: start + Duration::minutes(20),
            citizen: citizen(i),
            ..sample_appointment()
        };
        tx.insert_appointment(&appointment).await.unwrap();
        messages.push(NewNotification {
            appointment_id: Some(appointment.id),
            kind: NotificationKind::Reminder,
            dedupe_key: Some(format!("{}:reminder:1:sms", appointment.id)),
            ..message(
                w.commune,
                appointment.citizen.phone.as_ref().unwrap().as_str(),
                format!("Rappel n° {i}"),
                w.engine.now(),
            )
        });
    }
    tx.commit().await.unwrap();
    enqueue(&w, &messages).await;
    let (a, b) = tokio::join!(first.deliver(), second.deliver());
    assert_eq!(a + b, 500, "every reminder handled once ({a} + {b})");
    let sent = twilio.sent();
    assert_eq!(sent.len(), 500);
    let mut bodies: Vec<_> = sent.iter().map(|s| s.body.clone()).collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 500, "no message sent twice");
    for m in &messages {
        assert_eq!(status_of(&w, m.id).await.status, NotificationStatus::Sent);
    }
    // A third run (a restart) finds nothing to send.
    assert_eq!(first.deliver().await + second.deliver().await, 0);
    assert_eq!(twilio.requests(), 500);
}
crate::both_backends!(two_workers_exactly_once, two_workers_send_each_message_once);

/// A worker that claimed a message and died before sending: another sends it after the lease,
/// once. A worker that died after it started sending: the message is `unknown`, not resent.
async fn workers_dying_mid_way(db: TestDb) {
    let w = World::new(db).await;
    let (app, twilio) = TestApp::with_twilio(&w.db, w.clock.clone()).await;
    let now = w.engine.now();
    let claimed_only = message(w.commune, MOBILE, "claimed, never sent".into(), now);
    let started = message(w.commune, "+33639980002", "sending started".into(), now);
    enqueue(&w, &[claimed_only.clone(), started.clone()]).await;
    let store = w.store();
    let lease = now + guichet::notify::outbox::Outbox::LEASE;
    let claims = store
        .claim_notifications("dead-worker", now, lease, 10)
        .await
        .unwrap();
    assert_eq!(claims.len(), 2);
    assert!(
        store
            .start_send(started.id, "dead-worker", now, lease)
            .await
            .unwrap()
    );
    // Within the lease, nobody else touches them.
    assert_eq!(app.deliver().await, 0);
    w.clock.advance(Duration::seconds(61));
    assert_eq!(app.deliver().await, 1);
    assert_eq!(twilio.sent().len(), 1);
    assert_eq!(twilio.sent()[0].body, "claimed, never sent");
    assert_eq!(
        status_of(&w, claimed_only.id).await.status,
        NotificationStatus::Sent
    );
    let unknown = status_of(&w, started.id).await;
    assert_eq!(unknown.status, NotificationStatus::Unknown);
    // The dead worker comes back: its lease is gone, it cannot send.
    assert!(
        !store
            .start_send(
                claimed_only.id,
                "dead-worker",
                w.engine.now(),
                w.engine.now()
            )
            .await
            .unwrap()
    );
    w.clock.advance(Duration::hours(1));
    assert_eq!(app.deliver().await, 0);
    assert_eq!(twilio.sent().len(), 1, "never resent blindly");
}
crate::both_backends!(dying_workers, workers_dying_mid_way);

/// A worker starts and records its sends by the batch (SQLite: a transaction each; PostgreSQL:
/// one statement for the starts, one for the messages sent): only the messages it still holds
/// are started, and each outcome lands on its own message.
async fn batched_starts_and_outcomes(db: TestDb) {
    let w = World::new(db).await;
    let now = w.engine.now();
    let messages: Vec<_> = (0..4)
        .map(|i| message(w.commune, MOBILE, format!("message {i}"), now))
        .collect();
    enqueue(&w, &messages).await;
    let store = w.store();
    let ids: Vec<Uuid> = messages.iter().map(|m| m.id).collect();
    let lease = now + guichet::notify::outbox::Outbox::LEASE;
    assert_eq!(
        store
            .claim_notifications("a", now, lease, 3)
            .await
            .unwrap()
            .len(),
        3
    );
    let claimed_by_a: Vec<Uuid> = {
        let mut claimed = Vec::new();
        for id in &ids {
            if status_of(&w, *id).await.status == NotificationStatus::Sending {
                claimed.push(*id);
            }
        }
        claimed
    };
    let left = *ids.iter().find(|id| !claimed_by_a.contains(id)).unwrap();
    assert_eq!(
        store
            .claim_notifications("b", now, lease, 3)
            .await
            .unwrap()
            .len(),
        1
    );
    // "a" asks to start all four: the one "b" holds is not its to send.
    let started = store.start_sends(&ids, "a", now, lease).await.unwrap();
    assert_eq!(started.len(), 3);
    assert!(claimed_by_a.iter().all(|id| started.contains(id)));
    assert!(!started.contains(&left));
    assert!(
        store
            .start_sends(&[], "a", now, lease)
            .await
            .unwrap()
            .is_empty()
    );

    let later = now + Duration::seconds(30);
    let outcomes = vec![
        (
            claimed_by_a[0],
            SendResult::Sent {
                provider_id: Some("SM1".into()),
                segments: 1,
                cost_micro_eur: 70_000,
                kept_body: "message".into(),
            },
        ),
        (
            claimed_by_a[1],
            SendResult::Retry {
                due_at: later,
                error: "429".into(),
            },
        ),
        (
            claimed_by_a[2],
            SendResult::Failed {
                error: "21211".into(),
            },
        ),
        // Not "a"'s: left as it is, whatever the outcome.
        (
            left,
            SendResult::Sent {
                provider_id: None,
                segments: 2,
                cost_micro_eur: 140_000,
                kept_body: "not mine".into(),
            },
        ),
        (
            left,
            SendResult::Failed {
                error: "not mine".into(),
            },
        ),
    ];
    store.finish_sends("a", &outcomes, now).await.unwrap();
    store.finish_sends("a", &[], now).await.unwrap();
    let sent = status_of(&w, claimed_by_a[0]).await;
    assert_eq!(sent.status, NotificationStatus::Sent);
    assert_eq!(sent.provider_id.as_deref(), Some("SM1"));
    assert_eq!(
        (sent.segments, sent.cost_micro_eur),
        (Some(1), Some(70_000))
    );
    assert_eq!(sent.message.body, "message");
    let retried = status_of(&w, claimed_by_a[1]).await;
    assert_eq!(retried.status, NotificationStatus::Pending);
    assert_eq!(retried.message.due_at, later);
    assert_eq!(
        status_of(&w, claimed_by_a[2]).await.status,
        NotificationStatus::Failed
    );
    assert_eq!(
        status_of(&w, left).await.status,
        NotificationStatus::Sending
    );
}
crate::both_backends!(batched_sends, batched_starts_and_outcomes);

async fn provider_errors_are_retried_or_left_unknown(db: TestDb) {
    let w = World::new(db).await;
    let (app, twilio) = TestApp::with_twilio(&w.db, w.clock.clone()).await;
    let now = w.engine.now();
    // 429: nothing left; tried again after the back-off.
    let throttled = message(w.commune, MOBILE, "throttled".into(), now);
    enqueue(&w, std::slice::from_ref(&throttled)).await;
    twilio.script(&[Mode::TooManyRequests]);
    app.deliver().await;
    let n = status_of(&w, throttled.id).await;
    assert_eq!(n.status, NotificationStatus::Pending);
    assert_eq!(n.attempts, 1);
    assert_eq!(n.message.due_at, now + Duration::seconds(30));
    assert!(n.last_error.unwrap().contains("429"));
    assert_eq!(app.deliver().await, 0, "not before its time");
    w.clock.advance(Duration::seconds(30));
    app.deliver().await;
    assert_eq!(
        status_of(&w, throttled.id).await.status,
        NotificationStatus::Sent
    );
    assert_eq!(twilio.sent_to(MOBILE).len(), 1);
    // A delivery report found by the provider's id alone.
    let sid = twilio.sent_to(MOBILE)[0].sid.clone();
    let response = app
        .post_twilio(
            "/twilio/sms/status",
            &[
                ("MessageSid", sid.as_str()),
                ("MessageStatus", "undelivered"),
                ("ErrorCode", "30003"),
            ],
            crate::helpers::Signature::Valid,
        )
        .await;
    assert_eq!(response.status(), 204);
    let n = status_of(&w, throttled.id).await;
    assert_eq!(n.delivery_status.as_deref(), Some("undelivered"));
    assert_eq!(
        n.status,
        NotificationStatus::Sent,
        "it left; the phone was off"
    );
    // Reports may arrive out of order: a late "sent" does not take the final word back.
    for late in ["sent", "queued"] {
        let response = app
            .post_twilio(
                "/twilio/sms/status",
                &[("MessageSid", sid.as_str()), ("MessageStatus", late)],
                crate::helpers::Signature::Valid,
            )
            .await;
        assert_eq!(response.status(), 204);
    }
    let n = status_of(&w, throttled.id).await;
    assert_eq!(n.delivery_status.as_deref(), Some("undelivered"));

    // 500: maybe sent; recorded unknown, counted, never resent; the delivery report settles it.
    let ambiguous = message(
        w.commune,
        "+33639980002",
        "ambiguous".into(),
        w.engine.now(),
    );
    enqueue(&w, std::slice::from_ref(&ambiguous)).await;
    twilio.script(&[Mode::ServerError]);
    app.deliver().await;
    let n = status_of(&w, ambiguous.id).await;
    assert_eq!(n.status, NotificationStatus::Unknown);
    assert_eq!(n.segments, Some(1));
    w.clock.advance(Duration::hours(2));
    assert_eq!(app.deliver().await, 0);
    let response = app
        .post_twilio(
            &format!("/twilio/sms/status?n={}", ambiguous.id),
            &[
                ("MessageSid", "SM00000000000000000000000000000001"),
                ("MessageStatus", "delivered"),
                ("To", "+33639980002"),
            ],
            crate::helpers::Signature::Valid,
        )
        .await;
    assert_eq!(response.status(), 204);
    let n = status_of(&w, ambiguous.id).await;
    assert_eq!(n.status, NotificationStatus::Sent);
    assert_eq!(n.delivery_status.as_deref(), Some("delivered"));
    // An unknown one reported undelivered was sent on, and is counted; one reported failed
    // never left the provider.
    for (to, report, status) in [
        ("+33639980004", "undelivered", NotificationStatus::Sent),
        ("+33639980005", "failed", NotificationStatus::Failed),
    ] {
        let unsure = message(w.commune, to, "unsure".into(), w.engine.now());
        enqueue(&w, std::slice::from_ref(&unsure)).await;
        twilio.script(&[Mode::ServerError]);
        app.deliver().await;
        assert_eq!(
            status_of(&w, unsure.id).await.status,
            NotificationStatus::Unknown
        );
        let response = app
            .post_twilio(
                &format!("/twilio/sms/status?n={}", unsure.id),
                &[
                    ("MessageSid", "SM00000000000000000000000000000002"),
                    ("MessageStatus", report),
                ],
                crate::helpers::Signature::Valid,
            )
            .await;
        assert_eq!(response.status(), 204);
        let n = status_of(&w, unsure.id).await;
        assert_eq!(n.status, status, "{report}");
        assert_eq!(n.delivery_status.as_deref(), Some(report));
    }

    // A provider that hangs: the send times out and is unknown.
    let hanging = message(w.commune, "+33639980003", "hanging".into(), w.engine.now());
    enqueue(&w, std::slice::from_ref(&hanging)).await;
    twilio.script(&[Mode::Hang]);
    app.deliver().await;
    assert_eq!(
        status_of(&w, hanging.id).await.status,
        NotificationStatus::Unknown
    );
    assert!(twilio.rejected().is_empty(), "{:?}", twilio.rejected());
}
crate::both_backends!(provider_errors, provider_errors_are_retried_or_left_unknown);

#[tokio::test]
async fn a_refused_connection_is_retried() {
    let w = World::new(TestDb::sqlite().await).await;
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let twilio = FakeTwilio::start()
        .await
        .with_base(format!("http://{closed}"));
    let app = TestApp::spawn_with(
        &w.db,
        w.clock.clone(),
        TestAppOptions {
            twilio: Some(twilio),
            ..Default::default()
        },
    )
    .await;
    let m = message(w.commune, MOBILE, "offline".into(), w.engine.now());
    enqueue(&w, std::slice::from_ref(&m)).await;
    app.deliver().await;
    let n = status_of(&w, m.id).await;
    assert_eq!(n.status, NotificationStatus::Pending);
    assert!(n.last_error.unwrap().contains("connection"));
}

// --- E-mail ---------------------------------------------------------------------------------

#[tokio::test]
async fn confirmations_by_email_over_smtp() {
    let smtp = SmtpServer::start().await;
    let w = World::new(TestDb::sqlite().await).await;
    let app = TestApp::spawn_with(
        &w.db,
        w.clock.clone(),
        TestAppOptions {
            smtp: Some(smtp.clone()),
            ..Default::default()
        },
    )
    .await;
    let mut request = w.request(w.titres, paris("2026-12-03", 9, 0), 1);
    request.citizen.phone = None;
    request.channel = Channel::Agent;
    request.location = Some(w.town_hall);
    app.app
        .engine()
        .book(&request, BookingMode::Confirmed)
        .await
        .unwrap();
    // A temporary refusal first: the message is tried again later, then delivered.
    smtp.refuse_next("451 4.3.0 try again later");
    app.deliver().await;
    assert!(smtp.received().is_empty());
    w.clock.advance(Duration::seconds(30));
    app.deliver().await;
    let mails = smtp.received();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, vec!["<citoyen1@exemple.fr>".to_owned()]);
    assert_eq!(mails[0].from, "<mairie@guichet.test>");
    let parsed = mail_parser::MessageParser::default()
        .parse(mails[0].data.as_bytes())
        .unwrap();
    assert!(
        parsed
            .subject()
            .unwrap()
            .starts_with("Rendez-vous confirmé"),
        "{:?}",
        parsed.subject()
    );
    let text = parsed.body_text(0).unwrap();
    assert!(text.contains("jeudi 3 décembre 2026 à 9 h"), "{text}");
    assert!(text.contains("Une pièce d'identité."), "{text}");
    assert!(text.contains(&format!("{PUBLIC_URL}/r/")), "{text}");
    let html = parsed.body_html(0).unwrap();
    assert!(html.contains("<h1"), "{html}");
    let ics = parsed
        .attachments()
        .find(|a| a.attachment_name() == Some("rendez-vous.ics"))
        .expect("an .ics attachment");
    let ics = String::from_utf8_lossy(ics.contents());
    assert!(
        ics.contains("BEGIN:VEVENT") && ics.contains("DTSTART:20261203T080000Z"),
        "{ics}"
    );
    // A permanent refusal: failed, not retried.
    let mut request = w.request(w.titres, paris("2026-12-03", 10, 0), 2);
    request.citizen.phone = None;
    request.channel = Channel::Agent;
    let refused = app
        .app
        .engine()
        .book(&request, BookingMode::Confirmed)
        .await
        .unwrap();
    smtp.refuse_next("554 5.7.1 rejected");
    app.deliver().await;
    let notes = w.store().notifications_of(refused.id).await.unwrap();
    let confirmation = notes
        .iter()
        .find(|n| n.message.kind == NotificationKind::Confirmation)
        .unwrap();
    assert_eq!(confirmation.status, NotificationStatus::Failed);
}

// --- Reminders ------------------------------------------------------------------------------

#[tokio::test]
async fn reminders_go_out_once_on_time_and_only_for_live_appointments() {
    let w = World::new(TestDb::sqlite().await).await;
    let (app, twilio) = TestApp::with_twilio(&w.db, w.clock.clone()).await;
    let engine = app.app.engine();
    let book = |n: u32, h: u32| {
        let mut request = w.request(w.titres, paris("2026-12-03", h, 0), n);
        request.channel = Channel::Agent;
        request
    };
    let kept = engine
        .book(&book(1, 9), BookingMode::Confirmed)
        .await
        .unwrap();
    let cancelled = engine
        .book(&book(2, 10), BookingMode::Confirmed)
        .await
        .unwrap();
    let moved = engine
        .book(&book(3, 11), BookingMode::Confirmed)
        .await
        .unwrap();
    let stopped = engine
        .book(&book(4, 9), BookingMode::Confirmed)
        .await
        .unwrap();
    app.deliver().await;
    assert_eq!(twilio.sent().len(), 4, "four confirmations");
    engine
        .cancel(cancelled.id, &Cancellation::ByCitizen)
        .await
        .unwrap();
    let new = engine
        .move_to(moved.id, paris("2026-12-04", 11, 0), None)
        .await
        .unwrap();
    let response = app
        .post_twilio(
            "/twilio/sms",
            &[
                ("From", "+33639980004"),
                ("To", "+33465710000"),
                ("Body", "STOP"),
            ],
            crate::helpers::Signature::Valid,
        )
        .await;
    assert_eq!(response.status(), 200);
    app.deliver().await;
    let before = twilio.sent().len();
    // 48 hours before, at the same wall-clock time: Tuesday at 9:00, and not a minute earlier.
    w.clock.set(paris("2026-12-01", 8, 59));
    assert_eq!(app.deliver().await, 0);
    w.clock.set(paris("2026-12-01", 9, 0));
    app.deliver().await;
    let reminders: Vec<_> = twilio.sent()[before..].to_vec();
    assert_eq!(reminders.len(), 1, "{reminders:?}");
    assert_eq!(reminders[0].to, MOBILE);
    assert!(reminders[0].body.starts_with("Rappel"));
    w.clock.set(paris("2026-12-01", 12, 0));
    app.deliver().await;
    assert_eq!(
        twilio.sent().len(),
        before + 1,
        "the 11:00 appointment moved: no reminder for it"
    );
    // The moved appointment is reminded on Wednesday at 11:00; the STOP number never.
    w.clock.set(paris("2026-12-02", 11, 0));
    app.deliver().await;
    let last = twilio.sent();
    assert_eq!(last.len(), before + 2);
    assert_eq!(last.last().unwrap().to, "+33639980003");
    let stopped_notes = w.store().notifications_of(stopped.id).await.unwrap();
    let reminder = stopped_notes
        .iter()
        .find(|n| n.message.kind == NotificationKind::Reminder)
        .unwrap();
    assert_eq!(reminder.status, NotificationStatus::Cancelled);
    let cancelled_notes = w.store().notifications_of(cancelled.id).await.unwrap();
    assert!(
        cancelled_notes
            .iter()
            .filter(|n| n.message.kind == NotificationKind::Reminder)
            .all(|n| n.status == NotificationStatus::Cancelled)
    );
    let _ = (kept, new);
    // Booked the day before: no reminder at all.
    w.clock.set(paris("2026-12-02", 15, 0));
    let late = engine
        .book(&book(5, 10), BookingMode::Confirmed)
        .await
        .unwrap();
    let notes = w.store().notifications_of(late.id).await.unwrap();
    assert!(
        notes
            .iter()
            .all(|n| n.message.kind != NotificationKind::Reminder)
    );
}

/// A reminder that comes due at night (a retry, a worker down overnight) waits for the morning;
/// one that can only go at night before the appointment is dropped.
#[tokio::test]
async fn late_reminders_wait_for_the_morning() {
    let w = World::new(TestDb::sqlite().await).await;
    let (app, twilio) = TestApp::with_twilio(&w.db, w.clock.clone()).await;
    let mut request = w.request(w.titres, paris("2026-12-03", 9, 0), 1);
    request.channel = Channel::Agent;
    let booked = app
        .app
        .engine()
        .book(&request, BookingMode::Confirmed)
        .await
        .unwrap();
    app.deliver().await;
    let sent_before = twilio.sent().len();
    // The worker was down: it comes back at 23:00 on Tuesday, the reminder long due.
    w.clock.set(paris("2026-12-01", 23, 0));
    app.deliver().await;
    assert_eq!(twilio.sent().len(), sent_before, "nothing at night");
    let reminder = w
        .store()
        .notifications_of(booked.id)
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.message.kind == NotificationKind::Reminder)
        .unwrap();
    assert_eq!(reminder.status, NotificationStatus::Pending);
    assert_eq!(reminder.message.due_at, paris("2026-12-02", 8, 0));
    w.clock.set(paris("2026-12-02", 8, 0));
    app.deliver().await;
    assert_eq!(twilio.sent().len(), sent_before + 1);
    // What is kept of sent messages has no code and no personal link.
    for n in w.store().notifications_of(booked.id).await.unwrap() {
        if n.status == NotificationStatus::Sent {
            assert!(
                !n.message.body.contains("/r/") || n.message.body.contains("/r/…"),
                "{}",
                n.message.body
            );
        }
    }
}
