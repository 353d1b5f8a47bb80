//! The HTTP surface: health, readiness, metrics, the read-only JSON API and its OpenAPI
//! document, through a real server on port 0.

use crate::helpers::{TestApp, TestDb, World, paris};
use guichet::booking::BookingMode;
use guichet::domain::ManualClock;

async fn app_on(db: TestDb) -> (World, TestApp) {
    let w = World::new(db).await;
    let app = TestApp::spawn(&w.db, w.clock.clone()).await;
    (w, app)
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let (_w, app) = app_on(TestDb::sqlite().await).await;
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ok");
    let (status, body) = app.get_json("/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["database"], "sqlite");
    app.get("/api/v1/communes").await;
    let metrics = app.get("/metrics").await;
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics
            .headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = metrics.text().await.unwrap();
    assert!(text.contains("http_requests_total"), "{text}");
    assert!(text.contains(r#"route="/api/v1/communes""#), "{text}");
    assert!(
        text.contains("http_request_duration_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test]
async fn readiness_fails_when_the_database_is_gone() {
    let db = TestDb::sqlite().await;
    // A closed pool is what a lost database looks like to the handlers.
    let sqlite = guichet::store::SqliteStore::connect(&db.url).await.unwrap();
    sqlite.pool().close().await;
    let broken = TestDb {
        store: std::sync::Arc::new(sqlite),
        ..db.shared()
    };
    let app = TestApp::spawn(&broken, ManualClock::new(crate::helpers::monday_morning())).await;
    let (status, body) = app.get_json("/readyz").await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "unavailable");
    assert_eq!(
        app.get("/healthz").await.status(),
        200,
        "alive, though not ready"
    );
    let (status, body) = app.get_json("/api/v1/communes").await;
    assert_eq!(status, 500);
    assert_eq!(body["code"], "internal_error");
    assert!(
        !body["message"].as_str().unwrap().contains("pool"),
        "no cause shown: {body}"
    );
}

#[tokio::test]
async fn communes_services_locations() {
    let (w, app) = app_on(TestDb::sqlite().await).await;
    let (status, communes) = app.get_json("/api/v1/communes").await;
    assert_eq!(status, 200);
    assert_eq!(communes[0]["slug"], "testville");
    assert_eq!(communes[0]["phone_numbers"][0], "+33465719999");
    assert_eq!(communes[0]["timezone"], "Europe/Paris");
    assert_eq!(
        communes[0]["booking_url"],
        format!("{}/testville", crate::helpers::PUBLIC_URL)
    );
    let (_, commune) = app.get_json("/api/v1/communes/testville").await;
    assert_eq!(commune["name"], "Ville de testville");
    let (status, services) = app.get_json("/api/v1/communes/testville/services").await;
    assert_eq!(status, 200);
    assert_eq!(services.as_array().unwrap().len(), 2);
    assert_eq!(services[0]["id"], w.titres);
    assert_eq!(services[0]["category"], "titres");
    assert_eq!(services[0]["duration_minutes"], 20);
    assert_eq!(services[0]["max_persons"], 3);
    assert_eq!(services[0]["channels"]["phone"], true);
    let (status, locations) = app.get_json("/api/v1/communes/testville/locations").await;
    assert_eq!(status, 200);
    assert_eq!(locations[1]["name"], "Annexe");
    assert_eq!(locations[1]["postcode"], "74999");

    for path in [
        "/api/v1/communes/nowhere",
        "/api/v1/communes/nowhere/services",
        "/api/v1/communes/nowhere/slots?service=1",
    ] {
        let (status, body) = app.get_json(path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["code"], "commune_not_found");
        assert!(body["message"].as_str().unwrap().contains("commune"));
    }
    let (status, body) = app.get_json("/api/v1/nothing-here").await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "not_found");
}

/// Whatever the path, the API answers with its JSON errors: a slug that cannot be one (a NUL
/// byte, which PostgreSQL refuses in text; capitals; far too long), bytes that are not UTF-8,
/// a method the route does not take.
async fn odd_paths_get_json_errors(db: TestDb) {
    let (_, app) = app_on(db).await;
    let long = format!("/api/v1/communes/{}/services", "a".repeat(300));
    for path in [
        "/api/v1/communes/test%00ville/services",
        "/api/v1/communes/Testville",
        long.as_str(),
    ] {
        let (status, body) = app.get_json(path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["code"], "commune_not_found", "{path}");
    }
    let (status, body) = app
        .post_json("/api/v1/manage/%FF%FE/cancel", serde_json::json!({}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "invalid_parameter");
    assert!(body["message"].as_str().unwrap().contains("adresse"));
    let (status, body) = app
        .get_json("/api/v1/appointments/00000000-0000-0000-0000-000000000000/confirm")
        .await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(body["code"], "method_not_allowed");
    assert!(body["message"].as_str().unwrap().contains("méthode"));
}
crate::both_backends!(api_odd_paths, odd_paths_get_json_errors);

#[tokio::test]
async fn slots_with_offsets_and_filters() {
    let (w, app) = app_on(TestDb::sqlite().await).await;
    let path = format!(
        "/api/v1/communes/testville/slots?service={}&from=2026-12-01&to=2026-12-01",
        w.titres
    );
    let (status, slots) = app.get_json(&path).await;
    assert_eq!(status, 200);
    let slots = slots.as_array().unwrap();
    // Two locations × 9 slots (9:00 … 11:40).
    assert_eq!(slots.len(), 18);
    assert_eq!(slots[0]["start"], "2026-12-01T09:00:00+01:00");
    assert_eq!(slots[0]["end"], "2026-12-01T09:20:00+01:00");
    assert_eq!(slots[0]["location"], w.town_hall);
    assert_eq!(slots[0]["location_name"], "Hôtel de ville");
    assert_eq!(slots[1]["location"], w.annex);

    // A booking at the town hall removes its slot there only, at once.
    let mut request = w.request(w.titres, paris("2026-12-01", 9, 0), 1);
    request.location = Some(w.town_hall);
    app.app
        .engine()
        .book(&request, BookingMode::Hold)
        .await
        .unwrap();
    let (_, slots) = app.get_json(&path).await;
    assert_eq!(slots.as_array().unwrap().len(), 17);
    assert_eq!(slots[0]["location"], w.annex);
    // Booked through another instance (an engine of its own on the same database): gone from
    // the listing once the occupancy listings share has aged.
    let mut request = w.request(w.titres, paris("2026-12-01", 9, 20), 2);
    request.location = Some(w.town_hall);
    w.engine.book(&request, BookingMode::Hold).await.unwrap();
    w.clock.advance(guichet::booking::OCCUPANCY_TTL);
    let (_, slots) = app.get_json(&path).await;
    assert_eq!(slots.as_array().unwrap().len(), 16);

    // Filters: location, persons, limit; summer time shows +02:00.
    let (_, at_annex) = app
        .get_json(&format!("{path}&location={}&persons=3&limit=2", w.annex))
        .await;
    let at_annex = at_annex.as_array().unwrap();
    assert_eq!(at_annex.len(), 2);
    assert_eq!(at_annex[0]["end"], "2026-12-01T10:00:00+01:00");
    let (_, summer) = app
        .get_json(&format!(
            "/api/v1/communes/testville/slots?service={}&from=2026-06-01&to=2026-06-01",
            w.titres
        ))
        .await;
    assert_eq!(
        summer.as_array().unwrap().len(),
        0,
        "June 2026 is in the past here"
    );
    app.clock.set("2026-05-20T07:00:00Z".parse().unwrap());
    let (_, summer) = app
        .get_json(&format!(
            "/api/v1/communes/testville/slots?service={}&from=2026-06-01&to=2026-06-01&limit=1",
            w.titres
        ))
        .await;
    assert_eq!(summer[0]["start"], "2026-06-01T09:00:00+02:00");
    // Without dates: from today, on.
    let (status, default) = app
        .get_json(&format!(
            "/api/v1/communes/testville/slots?service={}",
            w.school
        ))
        .await;
    assert_eq!(status, 200);
    assert!(!default.as_array().unwrap().is_empty());
}

#[tokio::test]
async fn malformed_slot_queries_get_a_reason() {
    let (w, app) = app_on(TestDb::sqlite().await).await;
    let base = "/api/v1/communes/testville/slots";
    let cases = [
        (String::new(), "service"),
        ("?service=abc".to_owned(), "service"),
        (format!("?service={}&persons=0", w.titres), "persons"),
        (format!("?service={}&persons=4", w.titres), "persons"),
        (format!("?service={}&persons=deux", w.titres), "persons"),
        (format!("?service={}&from=03/12/2026", w.titres), "from"),
        (
            format!("?service={}&from=2026-12-10&to=2026-12-01", w.titres),
            "to",
        ),
        (
            format!("?service={}&from=2026-01-01&to=2027-12-31", w.titres),
            "to",
        ),
        (format!("?service={}&location=annexe", w.titres), "location"),
        (format!("?service={}&limit=0", w.titres), "limit"),
        (format!("?service={}&date=2026-12-01", w.titres), "date"),
        (format!("?service={}&from=%ZZ", w.titres), "from"),
        (
            format!("?service={}&from=-262143-01-01&to=-262143-01-02", w.titres),
            "from",
        ),
        (
            format!("?service={}&from=%2B262142-12-31", w.titres),
            "from",
        ),
        (format!("?service={}&to=2040-01-01", w.titres), "to"),
    ];
    for (query, field) in cases {
        let (status, body) = app.get_json(&format!("{base}{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["code"], "invalid_parameter", "{query}");
        assert_eq!(body["field"], field, "{query}");
        let message = body["message"].as_str().unwrap();
        assert!(message.len() > 10, "{query}: {message}");
    }
    let (status, body) = app.get_json(&format!("{base}?service=9999")).await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "service_not_found");
    let (status, body) = app
        .get_json(&format!("{base}?service={}&location=9999", w.titres))
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "location_not_found");
}

#[tokio::test]
async fn openapi_document() {
    let (_w, app) = app_on(TestDb::sqlite().await).await;
    let (status, doc) = app.get_json("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/communes",
        "/api/v1/communes/{slug}/services",
        "/api/v1/communes/{slug}/locations",
        "/api/v1/communes/{slug}/slots",
    ] {
        assert!(doc["paths"][path]["get"].is_object(), "{path} documented");
    }
    insta::assert_json_snapshot!("openapi", doc);
}

#[tokio::test]
async fn api_on_postgres() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let (w, app) = app_on(db).await;
    let (status, body) = app.get_json("/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(body["database"], "postgres");
    let (status, slots) = app
        .get_json(&format!(
            "/api/v1/communes/testville/slots?service={}&from=2026-12-01&to=2026-12-01",
            w.titres
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(slots.as_array().unwrap().len(), 18);
    assert_eq!(slots[0]["start"], "2026-12-01T09:00:00+01:00");
}
