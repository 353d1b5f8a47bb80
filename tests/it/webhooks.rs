//! The SMS webhooks: signatures checked against GUICHET_PUBLIC_URL (forged or missing → 403),
//! delivery reports, and the replies ANNULER → OUI, STOP, and anything else.

use crate::helpers::{Signature, TestApp, TestDb, World, paris};
use guichet::booking::BookingMode;
use guichet::domain::{Channel, Status};

const MOBILE: &str = "+33639980001";

async fn reply(app: &TestApp, body: &str) -> String {
    let response = app
        .post_twilio(
            "/twilio/sms",
            &[
                ("From", MOBILE),
                ("To", "+33465710000"),
                ("Body", body),
                ("MessageSid", "SM1"),
            ],
            Signature::Valid,
        )
        .await;
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/xml")
    );
    let xml = response.text().await.unwrap();
    assert!(
        xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>"),
        "{xml}"
    );
    xml
}

#[tokio::test]
async fn signatures_are_required() {
    let w = World::new(TestDb::sqlite().await).await;
    let app = TestApp::spawn(&w.db, w.clock.clone()).await;
    for path in ["/twilio/sms", "/twilio/sms/status"] {
        let params = [
            ("From", MOBILE),
            ("Body", "STOP"),
            ("MessageSid", "SM1"),
            ("MessageStatus", "delivered"),
        ];
        for signature in [Signature::Forged, Signature::Missing] {
            let response = app.post_twilio(path, &params, signature).await;
            assert_eq!(response.status(), 403, "{path} {signature:?}");
        }
    }
    // A forged STOP changed nothing.
    assert!(!w.store().is_sms_opted_out(MOBILE).await.unwrap());
    // The signature covers the query string too.
    let response = app
        .post_twilio(
            "/twilio/sms/status?n=00000000-0000-0000-0000-000000000000",
            &[("MessageSid", "SM1"), ("MessageStatus", "sent")],
            Signature::Valid,
        )
        .await;
    assert_eq!(response.status(), 204);
}

#[tokio::test]
async fn annuler_then_oui_cancels_the_next_appointment() {
    let w = World::new(TestDb::sqlite().await).await;
    let app = TestApp::spawn(&w.db, w.clock.clone()).await;
    // Nothing booked yet.
    let xml = reply(&app, "ANNULER").await;
    assert!(xml.contains("Aucun rendez-vous"), "{xml}");
    let mut request = w.request(w.titres, paris("2026-12-03", 9, 20), 1);
    request.channel = Channel::Phone;
    let appointment = w
        .engine
        .book(&request, BookingMode::Confirmed)
        .await
        .unwrap();
    // OUI without a question first: help.
    let xml = reply(&app, "oui").await;
    assert!(xml.contains("répondez ANNULER"), "{xml}");
    let xml = reply(&app, "Annuler").await;
    assert!(
        xml.contains("jeudi 3 décembre à 9h20") && xml.contains("répondez OUI"),
        "{xml}"
    );
    assert_eq!(
        w.store()
            .appointment(appointment.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        Status::Confirmed
    );
    let xml = reply(&app, "OUI").await;
    assert!(xml.contains("est annulé"), "{xml}");
    let cancelled = w
        .store()
        .appointment(appointment.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cancelled.status, Status::CancelledByCitizen);
    // A replayed OUI changes nothing more.
    let xml = reply(&app, "OUI").await;
    assert!(xml.contains("répondez ANNULER"), "{xml}");
    // The answer to the SMS was the notice: no second SMS is queued for the cancellation.
    let notes = w.store().notifications_of(appointment.id).await.unwrap();
    assert!(notes.iter().all(|n| n.message.kind
        != guichet::domain::NotificationKind::Cancellation
        || n.message.channel != guichet::domain::MessageChannel::Sms));
}

#[tokio::test]
async fn a_question_expires() {
    let w = World::new(TestDb::sqlite().await).await;
    let app = TestApp::spawn(&w.db, w.clock.clone()).await;
    let mut request = w.request(w.titres, paris("2026-12-03", 9, 20), 1);
    request.channel = Channel::Agent;
    let appointment = w
        .engine
        .book(&request, BookingMode::Confirmed)
        .await
        .unwrap();
    reply(&app, "ANNULER").await;
    w.clock.advance(chrono::Duration::hours(1));
    let xml = reply(&app, "OUI").await;
    assert!(xml.contains("répondez ANNULER"), "{xml}");
    assert_eq!(
        w.store()
            .appointment(appointment.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        Status::Confirmed
    );
}

#[tokio::test]
async fn stop_and_help() {
    let w = World::new(TestDb::sqlite().await).await;
    let app = TestApp::spawn(&w.db, w.clock.clone()).await;
    let xml = reply(&app, "Bonjour, c'est pour quoi ?").await;
    assert!(xml.contains("ANNULER") && xml.contains("STOP"), "{xml}");
    let xml = reply(&app, "STOP").await;
    assert!(xml.contains("plus de rappels"), "{xml}");
    assert!(w.store().is_sms_opted_out(MOBILE).await.unwrap());
    // Replies are counted with the SMS the platform sends.
    let from = paris("2026-11-01", 0, 0);
    let to = paris("2026-12-01", 0, 0);
    let none_for_commune = w.store().sms_sent(w.commune, from, to).await.unwrap();
    assert!(
        none_for_commune.is_empty(),
        "replies not tied to an appointment belong to no commune"
    );
}
