//! The agents' back-office over HTTP, as a browser without JavaScript uses it: sign-in and
//! sessions, the day, booking for someone, cancelling with a replacement (accepted by link or
//! by replying OUI), closing a period, configuration that strands appointments, statistics,
//! the platform's pages and the audit log. Tenant isolation route by route is in `tenants.rs`.

use crate::both_backends;
use crate::fake_twilio::FakeTwilio;
use crate::helpers::{Signature, TestApp, TestAppOptions, TestDb, monday_morning};
use crate::pages::{Answer, WebClient};
use guichet::domain::{Clock, ManualClock, Status};

pub const PASSWORD: &str = guichet::demo::DEMO_PASSWORD;

/// A guichet with the demo communes (Annecy, Thonon-les-Bains, Sallanches), their accounts,
/// SMS through a local Twilio-compatible server, frozen on Monday 30 November 2026, 8:00.
pub async fn demo_app(db: &TestDb) -> (TestApp, FakeTwilio) {
    let clock = ManualClock::new(monday_morning());
    let twilio = FakeTwilio::start().await;
    let app = TestApp::spawn_with(
        db,
        clock,
        TestAppOptions {
            twilio: Some(twilio.clone()),
            ..TestAppOptions::default()
        },
    )
    .await;
    guichet::demo::seed(app.app.engine()).await.unwrap();
    guichet::demo::seed_accounts(app.app.engine().store().as_ref())
        .await
        .unwrap();
    // The demo's own confirmations are not what the tests look at.
    app.deliver().await;
    (app, twilio)
}

/// Signs in and returns the first page after it.
pub async fn sign_in(web: &mut WebClient, email: &str) -> Answer {
    let form = web.get("/agent/connexion").await;
    assert_eq!(form.status, 200, "{}", form.html);
    let csrf = form.csrf();
    web.post_and_follow(
        "/agent/connexion",
        &[
            ("csrf", &csrf),
            ("email", email),
            ("password", PASSWORD),
            ("suite", "/agent/jour"),
        ],
    )
    .await
}

pub async fn signed_in(app: &TestApp, email: &str) -> WebClient {
    let mut web = WebClient::new(app);
    let mut page = sign_in(&mut web, email).await;
    // The platform administrator's first page is the platform's.
    if page.status == 303 {
        page = web.get(page.location.as_deref().unwrap()).await;
    }
    assert_eq!(page.status, 200, "{}", page.html);
    web
}

fn csrf(web: &WebClient) -> String {
    web.cookie("guichet_csrf")
        .expect("a CSRF cookie")
        .to_owned()
}

async fn commune_id(app: &TestApp, slug: &str) -> i64 {
    app.app
        .engine()
        .store()
        .commune_by_slug(slug)
        .await
        .unwrap()
        .unwrap()
        .id
}

// --- Sign-in ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_sessions_and_sign_out() {
    let db = TestDb::sqlite().await;
    let (app, _twilio) = demo_app(&db).await;
    let mut web = WebClient::new(&app);

    // Anything of the back-office asks to sign in first, then comes back.
    let day = web.get("/agent/jour?date=2026-12-01").await;
    assert_eq!(day.status, 303);
    assert_eq!(
        day.location.as_deref(),
        Some("/agent/connexion?suite=%2Fagent%2Fjour%3Fdate%3D2026-12-01")
    );

    let form = web.get("/agent/connexion").await;
    let token = form.csrf();
    let wrong = web
        .post(
            "/agent/connexion",
            &[
                ("csrf", &token),
                ("email", "agent@annecy.demo"),
                ("password", "not-the-password"),
                ("suite", "/agent/jour"),
            ],
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.contains("Adresse e-mail ou mot de passe incorrect."));
    assert!(web.cookie("guichet_agent").is_none());

    let answer = web
        .post(
            "/agent/connexion",
            &[
                ("csrf", &token),
                ("email", "Agent@Annecy.demo"),
                ("password", PASSWORD),
                ("suite", "/agent/jour"),
            ],
        )
        .await;
    assert_eq!(answer.status, 303, "{}", answer.html);
    assert_eq!(answer.location.as_deref(), Some("/agent/jour"));
    let cookie = answer
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("guichet_agent="))
        .expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/agent"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let session = web.cookie("guichet_agent").unwrap().to_owned();
    let day = web.get("/agent/jour").await;
    assert_eq!(day.status, 200);
    assert!(day.contains("Mairie d&#39;Annecy"), "{}", day.html);
    assert!(day.contains("Agent d&#39;accueil, Annecy (agent)"));

    // Only the hash of the token is stored.
    let stored = app
        .app
        .engine()
        .store()
        .session_agent(&session, app.clock.now())
        .await
        .unwrap();
    assert!(stored.is_none(), "the raw token must not open a session");

    // Signing out ends the session for good, even for a copy of the cookie.
    let out = web
        .post("/agent/deconnexion", &[("csrf", &csrf(&web))])
        .await;
    assert_eq!(out.status, 303);
    assert!(web.cookie("guichet_agent").is_none());
    let mut thief = WebClient::new(&app);
    thief.set_cookie("guichet_agent", &session);
    assert_eq!(thief.get("/agent/jour").await.status, 303);

    // Sessions last a working day.
    let mut web = signed_in(&app, "agent@annecy.demo").await;
    app.clock.advance(chrono::Duration::hours(13));
    assert_eq!(web.get("/agent/jour").await.status, 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_is_throttled_per_account() {
    let db = TestDb::sqlite().await;
    let (app, _twilio) = demo_app(&db).await;
    let mut web = WebClient::new(&app);
    let token = web.get("/agent/connexion").await.csrf();
    for _ in 0..5 {
        let wrong = web
            .post(
                "/agent/connexion",
                &[
                    ("csrf", &token),
                    ("email", "admin@annecy.demo"),
                    ("password", "guess"),
                    ("suite", "/agent/jour"),
                ],
            )
            .await;
        assert_eq!(wrong.status, 401);
    }
    // The right password does not open the door while the account is locked…
    let locked = web
        .post(
            "/agent/connexion",
            &[
                ("csrf", &token),
                ("email", "admin@annecy.demo"),
                ("password", PASSWORD),
                ("suite", "/agent/jour"),
            ],
        )
        .await;
    assert_eq!(locked.status, 429, "{}", locked.html);
    assert!(
        locked.contains("Attendez un quart d&#39;heure"),
        "{}",
        locked.html
    );
    // … other accounts are not locked out …
    signed_in(&app, "agent@annecy.demo").await;
    // … and a quarter of an hour later it opens again.
    app.clock.advance(chrono::Duration::minutes(16));
    signed_in(&app, "admin@annecy.demo").await;
}

/// Sessions live in the database: a second instance serves the session the first one opened.
async fn sessions_are_shared_by_instances(db: TestDb) {
    let (first, _twilio) = demo_app(&db).await;
    let second = TestApp::spawn(&db.shared(), first.clock.clone()).await;
    let web = signed_in(&first, "agent@thonon-les-bains.demo").await;
    let mut elsewhere = web.to(&second);
    let day = elsewhere.get("/agent/jour").await;
    assert_eq!(day.status, 200, "{}", day.html);
    assert!(day.contains("Mairie de Thonon-les-Bains"), "{}", day.html);
}
both_backends!(shared_sessions, sessions_are_shared_by_instances);

// --- The counter ----------------------------------------------------------------------------

/// What the agent sees of the booking form: the first free slot offered.
async fn first_slot(web: &mut WebClient, service: i64, persons: u32) -> String {
    let page = web
        .get(&format!(
            "/agent/reserver?demarche={service}&personnes={persons}&date=2026-12-01"
        ))
        .await;
    assert_eq!(page.status, 200, "{}", page.html);
    slot_in(&page)
}

/// The first slot of a booking form.
fn slot_in(page: &Answer) -> String {
    page.html
        .split("name=\"creneau\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("free slots")
        .to_owned()
}

/// Books `slot` for a walk-in at the counter through the form; `fields` are the citizen's
/// (`nom`, `prenom`, `mobile`, …).
async fn walk_in(
    web: &mut WebClient,
    service: i64,
    persons: &str,
    slot: &str,
    fields: &[(&str, &str)],
) -> Answer {
    let csrf = csrf(web);
    let service = service.to_string();
    let mut all = vec![
        ("csrf", csrf.as_str()),
        ("demarche", service.as_str()),
        ("personnes", persons),
        ("creneau", slot),
    ];
    all.extend_from_slice(fields);
    web.post("/agent/reserver", &all).await
}

async fn titres(app: &TestApp, slug: &str) -> i64 {
    let commune = commune_id(app, slug).await;
    app.app
        .engine()
        .store()
        .services(commune)
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.category == guichet::domain::Category::Titres)
        .unwrap()
        .id
}

fn id_from(location: &str) -> uuid::Uuid {
    location
        .trim_start_matches("/agent/rdv/")
        .split('?')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A walk-in is booked in a few keystrokes, confirmed at once, told by SMS when they give a
/// mobile; without a contact nothing is sent. Then the passport station breaks: the agent
/// cancels with a reason, the citizen is told and offered a held slot, and replies OUI.
async fn walk_in_then_cancel_with_a_replacement_accepted_by_sms(db: TestDb) {
    let (app, twilio) = demo_app(&db).await;
    let store = app.app.engine().store().clone();
    let mut web = signed_in(&app, "agent@annecy.demo").await;
    let service = titres(&app, "annecy").await;

    // Someone without a mobile: booked, nothing sent.
    let slot = first_slot(&mut web, service, 1).await;
    let booked = walk_in(
        &mut web,
        service,
        "1",
        &slot,
        &[
            ("nom", "Perrin"),
            ("prenom", ""),
            ("mobile", ""),
            ("email", ""),
        ],
    )
    .await;
    assert_eq!(booked.status, 303, "{}", booked.html);
    let quiet = store
        .appointment(id_from(booked.location.as_deref().unwrap()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(quiet.status, Status::Confirmed);
    assert_eq!(quiet.channel, guichet::domain::Channel::Agent);
    let page = web.get(booked.location.as_deref().unwrap()).await;
    assert!(page.contains("Ni mobile ni e-mail"), "{}", page.html);
    assert!(store.notifications_of(quiet.id).await.unwrap().is_empty());

    // The same slot again, until every station at that time is taken: then said on the form.
    let mut again = None;
    for n in 0..6 {
        let answer = walk_in(
            &mut web,
            service,
            "1",
            &slot,
            &[("nom", &format!("Autre {n}"))],
        )
        .await;
        if answer.status != 303 {
            again = Some(answer);
            break;
        }
    }
    let again = again.expect("a slot has a bounded number of seats");
    assert_eq!(again.status, 422, "{}", again.html);
    assert!(again.contains("vient d&#39;être réservé"), "{}", again.html);

    // A family of two with a mobile: confirmation by SMS.
    let slot = first_slot(&mut web, service, 2).await;
    let booked = walk_in(
        &mut web,
        service,
        "2",
        &slot,
        &[
            ("nom", "Lambert"),
            ("prenom", "Anne"),
            ("mobile", "06 39 98 12 34"),
            ("email", ""),
        ],
    )
    .await;
    assert_eq!(booked.status, 303, "{}", booked.html);
    let id = id_from(booked.location.as_deref().unwrap());
    app.deliver().await;
    let sent = twilio.sent_to("+33639981234");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].body.contains("RDV confirmé"), "{}", sent[0].body);

    // The station breaks: cancelled with a reason and a replacement held for 48 hours.
    let cancelled = web
        .post(
            &format!("/agent/rdv/{id}/annuler"),
            &[
                ("csrf", &csrf(&web)),
                ("motif", "Station biométrique en panne"),
                ("proposer", "1"),
            ],
        )
        .await;
    assert_eq!(cancelled.status, 303, "{}", cancelled.html);
    let to = cancelled.location.clone().unwrap();
    assert!(to.contains("proposition="), "{to}");
    let report = web.get(&to).await;
    assert!(
        report.contains("Nouveau créneau proposé et réservé"),
        "{}",
        report.html
    );
    let old = store.appointment(id).await.unwrap().unwrap();
    assert_eq!(old.status, Status::CancelledByCommune);
    assert_eq!(
        old.cancel_reason.as_deref(),
        Some("Station biométrique en panne")
    );
    let proposal_id: uuid::Uuid = to.split("proposition=").nth(1).unwrap().parse().unwrap();
    let proposal = store.appointment(proposal_id).await.unwrap().unwrap();
    assert_eq!(proposal.status, Status::Held);
    assert_eq!(proposal.replaces_id, Some(id));
    assert_eq!(proposal.persons, 2);
    assert!(proposal.starts_at >= old.ends_at || proposal.ends_at <= old.starts_at);
    let expiry = proposal.hold_expires_at.unwrap();
    assert_eq!(
        expiry,
        (app.clock.now() + chrono::Duration::hours(48)).min(proposal.starts_at)
    );
    app.deliver().await;
    let notice = twilio.sent_to("+33639981234").pop().unwrap();
    assert!(notice.body.contains("annul"), "{}", notice.body);
    assert!(notice.body.contains("OUI"), "{}", notice.body);
    assert!(
        guichet::domain::gsm7::segments(&notice.body) == 1,
        "{}",
        notice.body
    );

    // Its personal link reads the offer through the JSON API, which does not move it: moved,
    // it would become a hold nothing confirms.
    let token: String = notice
        .body
        .split("/r/")
        .nth(1)
        .expect("the offer's link")
        .chars()
        .take(22)
        .collect();
    let (status, offer) = app.get_json(&format!("/api/v1/manage/{token}")).await;
    assert_eq!(status, 200, "{offer}");
    assert_eq!(offer["status"], "held");
    assert_eq!(offer["can_move"], false);
    let (status, refused) = app
        .post_json(
            &format!("/api/v1/manage/{token}/move"),
            serde_json::json!({"start": "2026-12-02T10:00:00+01:00"}),
        )
        .await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["code"], "offer_not_movable");

    // The replacement's seat is taken meanwhile: nobody else can book it.
    let taken = store
        .occupancy(
            proposal.commune_id,
            proposal.starts_at,
            proposal.ends_at,
            app.clock.now(),
        )
        .await
        .unwrap();
    assert!(taken.iter().any(|o| o.planning_id == proposal.planning_id));

    // The citizen replies OUI an hour later.
    app.clock.advance(chrono::Duration::hours(1));
    let response = app
        .post_twilio(
            "/twilio/sms",
            &[
                ("From", "+33639981234"),
                ("To", "+33465710001"),
                ("Body", "Oui"),
                ("MessageSid", "SM-accept"),
            ],
            Signature::Valid,
        )
        .await;
    assert_eq!(response.status(), 200);
    let twiml = response.text().await.unwrap();
    // No reply: the confirmation SMS is the answer (three SMS per appointment, not four).
    assert!(!twiml.contains("<Message"), "{twiml}");
    let accepted = store.appointment(proposal_id).await.unwrap().unwrap();
    assert_eq!(accepted.status, Status::Confirmed);
    app.deliver().await;
    let confirmation = twilio.sent_to("+33639981234").pop().unwrap();
    assert!(
        confirmation.body.contains("RDV confirmé"),
        "{}",
        confirmation.body
    );

    // A second OUI changes nothing more.
    let response = app
        .post_twilio(
            "/twilio/sms",
            &[
                ("From", "+33639981234"),
                ("To", "+33465710001"),
                ("Body", "OUI"),
                ("MessageSid", "SM-again"),
            ],
            Signature::Valid,
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        store
            .appointment(proposal_id)
            .await
            .unwrap()
            .unwrap()
            .status,
        Status::Confirmed
    );
}
both_backends!(
    walk_in_and_replacement,
    walk_in_then_cancel_with_a_replacement_accepted_by_sms
);

/// The replacement offered by link: the citizen's old personal link leads to the offer, which
/// they accept or decline on the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_is_accepted_or_declined_by_link() {
    let db = TestDb::sqlite().await;
    let (app, twilio) = demo_app(&db).await;
    let engine = app.app.engine().clone();
    let store = engine.store().clone();
    let mut web = signed_in(&app, "agent@annecy.demo").await;
    let service = titres(&app, "annecy").await;
    let mut offers = Vec::new();
    for (name, mobile) in [("Roux", "06 39 98 20 01"), ("Blanc", "06 39 98 20 02")] {
        let slot = first_slot(&mut web, service, 1).await;
        let booked = walk_in(
            &mut web,
            service,
            "1",
            &slot,
            &[("nom", name), ("mobile", mobile)],
        )
        .await;
        let id = id_from(booked.location.as_deref().unwrap());
        let outcome = engine
            .cancel_with_proposal(id, "Agent absent", true)
            .await
            .unwrap();
        offers.push((
            mobile.replace(' ', "").replacen('0', "+33", 1),
            outcome.proposal.unwrap(),
        ));
    }
    app.deliver().await;
    for (index, (mobile, proposal)) in offers.iter().enumerate() {
        let notice = twilio.sent_to(mobile).pop().unwrap();
        let link = notice
            .body
            .split_whitespace()
            .find(|w| w.contains("/r/"))
            .expect("a link in the notice")
            .to_owned();
        let path = link.split("/r/").nth(1).map(|t| format!("/r/{t}")).unwrap();
        let mut citizen = WebClient::new(&app);
        let page = citizen.get(&path).await;
        assert_eq!(page.status, 200, "{}", page.html);
        assert!(
            page.contains("Nouveau rendez-vous proposé"),
            "{}",
            page.html
        );
        assert!(page.contains("Agent absent"));
        let token = page.csrf();
        if index == 0 {
            let done = citizen
                .post_and_follow(&format!("{path}/accepter"), &[("csrf", &token)])
                .await;
            assert!(
                done.contains("Votre rendez-vous est confirmé."),
                "{}",
                done.html
            );
            let stored = store.appointment(proposal.id).await.unwrap().unwrap();
            assert_eq!(stored.status, Status::Confirmed);
        } else {
            let done = citizen
                .post_and_follow(&format!("{path}/refuser"), &[("csrf", &token)])
                .await;
            assert!(
                done.contains("Vous avez refusé le créneau proposé."),
                "{}",
                done.html
            );
            let stored = store.appointment(proposal.id).await.unwrap().unwrap();
            assert_eq!(stored.status, Status::CancelledByCitizen);
            // A later OUI does not revive what was declined.
            assert!(engine.accept_proposal(proposal.id).await.is_err());
            // Declined: its seat is free for anyone again.
            let free = engine
                .free_slots(
                    stored.commune_id,
                    stored.service_id,
                    guichet::domain::slots::SlotFilter {
                        persons: 1,
                        location: Some(stored.location_id),
                        from: "2026-11-30".parse().unwrap(),
                        to: "2026-12-31".parse().unwrap(),
                        limit: None,
                    },
                )
                .await
                .unwrap();
            assert!(free.iter().any(|s| s.start == stored.starts_at));
        }
    }
}

/// Closing a location for a day cancels every appointment in it, each with its own offer,
/// and names who could not be told.
async fn closing_a_period(db: TestDb) {
    let (app, twilio) = demo_app(&db).await;
    let engine = app.app.engine().clone();
    let store = engine.store().clone();
    let mut web = signed_in(&app, "agent@annecy.demo").await;
    let service = titres(&app, "annecy").await;
    let mut booked = Vec::new();
    for (name, mobile) in [
        ("Garnier", "06 39 98 30 01"),
        ("Sans Contact", ""),
        ("Faure", "06 39 98 30 03"),
    ] {
        let page = web
            .get(&format!(
                "/agent/reserver?demarche={service}&personnes=1&date=2026-12-03&lieu=1"
            ))
            .await;
        let slot = slot_in(&page);
        let answer = walk_in(
            &mut web,
            service,
            "1",
            &slot,
            &[("nom", name), ("mobile", mobile), ("lieu", "1")],
        )
        .await;
        assert_eq!(answer.status, 303, "{}", answer.html);
        booked.push(id_from(answer.location.as_deref().unwrap()));
    }
    let first = store.appointment(booked[0]).await.unwrap().unwrap();
    let location = first.location_id;
    let fields = [
        ("csrf", csrf(&web)),
        ("portee", format!("lieu:{location}")),
        ("du", "2026-12-03".to_owned()),
        ("de", "00:00".to_owned()),
        ("au", "2026-12-03".to_owned()),
        ("a", "23:59".to_owned()),
        ("motif", "Station biométrique en panne".to_owned()),
        ("proposer", "1".to_owned()),
    ];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // First the list of who will be told; nothing changes yet.
    let preview = web.post("/agent/fermer", &fields).await;
    assert_eq!(preview.status, 200, "{}", preview.html);
    assert!(
        preview.contains("Garnier") && preview.contains("Faure"),
        "{}",
        preview.html
    );
    assert!(preview.contains("aucun : à appeler"), "{}", preview.html);
    assert_eq!(
        store.appointment(booked[0]).await.unwrap().unwrap().status,
        Status::Confirmed
    );
    let mut confirm = fields.clone();
    confirm.push(("confirmer", "1"));
    let report = web.post("/agent/fermer", &confirm).await;
    assert_eq!(report.status, 200, "{}", report.html);
    assert!(report.contains("à appeler"), "{}", report.html);
    assert!(report.contains("injoignable"), "{}", report.html);

    let mut offered = std::collections::HashSet::new();
    let day_start = crate::helpers::paris("2026-12-03", 0, 0);
    let day_end = crate::helpers::paris("2026-12-04", 0, 0);
    for id in &booked {
        let old = store.appointment(*id).await.unwrap().unwrap();
        assert_eq!(
            old.status,
            Status::CancelledByCommune,
            "{}",
            old.citizen.name.as_str()
        );
    }
    let all = store
        .appointments(
            first.commune_id,
            day_start,
            day_end + chrono::Duration::days(90),
        )
        .await
        .unwrap();
    for proposal in all
        .iter()
        .filter(|a| a.replaces_id.is_some_and(|r| booked.contains(&r)))
    {
        assert_eq!(proposal.status, Status::Held);
        // Never inside the closed period at the closed location.
        assert!(
            proposal.location_id != location
                || proposal.starts_at >= day_end
                || proposal.ends_at <= day_start
        );
        assert!(offered.insert((proposal.starts_at, proposal.planning_id, proposal.seat)));
    }
    assert_eq!(offered.len(), 3, "each appointment has its own offer");
    app.deliver().await;
    assert!(
        twilio
            .sent_to("+33639983001")
            .iter()
            .any(|m| m.body.contains("OUI"))
    );
    assert!(
        twilio
            .sent_to("+33639983003")
            .iter()
            .any(|m| m.body.contains("OUI"))
    );
    // Nobody can book the closed day on that planning any more.
    let free = engine
        .free_slots(
            first.commune_id,
            service,
            guichet::domain::slots::SlotFilter {
                persons: 1,
                location: Some(first.location_id),
                from: "2026-12-03".parse().unwrap(),
                to: "2026-12-03".parse().unwrap(),
                limit: None,
            },
        )
        .await
        .unwrap();
    assert!(free.is_empty(), "{free:?}");
    // The closure is listed, and can be reopened.
    let config = web.get("/agent/configuration").await;
    assert!(
        config.contains("Station biométrique en panne"),
        "{}",
        config.html
    );
}
both_backends!(close_period, closing_a_period);

/// Shrinking opening hours lists the appointments left outside and asks what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_hours_asks_about_stranded_appointments() {
    let db = TestDb::sqlite().await;
    let (app, _twilio) = demo_app(&db).await;
    let store = app.app.engine().store().clone();
    let mut web = signed_in(&app, "agent@annecy.demo").await;
    let service = titres(&app, "annecy").await;
    let slot = first_slot(&mut web, service, 1).await;
    let booked = walk_in(
        &mut web,
        service,
        "1",
        &slot,
        &[("nom", "Moreau"), ("mobile", "06 39 98 40 01")],
    )
    .await;
    let id = id_from(booked.location.as_deref().unwrap());
    let ap = store.appointment(id).await.unwrap().unwrap();
    let commune = store.commune(ap.commune_id).await.unwrap().unwrap();
    let rule = store
        .opening_rules(ap.commune_id)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.covers(&ap, commune.timezone))
        .expect("the rule that opened the slot");
    let local_start = ap.starts_at.with_timezone(&commune.timezone);
    // The new hours close before the appointment starts (or start after it on a late slot).
    let (start, end) = if local_start.format("%H:%M").to_string().as_str() > "10:00" {
        ("08:00".to_owned(), local_start.format("%H:%M").to_string())
    } else {
        (
            ap.ends_at
                .with_timezone(&commune.timezone)
                .format("%H:%M")
                .to_string(),
            "18:00".to_owned(),
        )
    };
    let mut fields: Vec<(String, String)> = vec![
        ("csrf".into(), csrf(&web)),
        ("planning".into(), rule.planning_id.to_string()),
        ("lieu".into(), rule.location_id.to_string()),
        ("debut".into(), start),
        ("fin".into(), end),
        ("pas".into(), rule.step_minutes.to_string()),
        ("depuis".into(), rule.valid_from.to_string()),
        ("jusqu_au".into(), String::new()),
    ];
    for (d, short) in [
        (chrono::Weekday::Mon, "lun"),
        (chrono::Weekday::Tue, "mar"),
        (chrono::Weekday::Wed, "mer"),
        (chrono::Weekday::Thu, "jeu"),
        (chrono::Weekday::Fri, "ven"),
        (chrono::Weekday::Sat, "sam"),
        (chrono::Weekday::Sun, "dim"),
    ] {
        if rule.weekdays.contains(d) {
            fields.push(("jours".into(), short.into()));
        }
    }
    for s in &rule.service_ids {
        fields.push(("demarches".into(), s.to_string()));
    }
    let borrowed: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let ask = web
        .post(
            &format!("/agent/configuration/horaires/{}", rule.id),
            &borrowed,
        )
        .await;
    assert_eq!(ask.status, 200, "{}", ask.html);
    assert!(
        ask.contains("Des rendez-vous sont concernés"),
        "{}",
        ask.html
    );
    assert!(ask.contains("Moreau"), "{}", ask.html);
    // Nothing changed yet.
    let unchanged = store.opening_rules(ap.commune_id).await.unwrap();
    assert!(unchanged.iter().any(|r| r == &rule));

    // Keep them: the hours change, the appointment stays.
    let mut keep = fields.clone();
    keep.push(("decision".into(), "garder".into()));
    let borrowed: Vec<(&str, &str)> = keep.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let done = web
        .post(
            &format!("/agent/configuration/horaires/{}", rule.id),
            &borrowed,
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.html);
    let changed = store.opening_rules(ap.commune_id).await.unwrap();
    let new_rule = changed.iter().find(|r| r.id == rule.id).unwrap();
    assert_ne!((new_rule.start, new_rule.end), (rule.start, rule.end));
    assert_eq!(
        store.appointment(id).await.unwrap().unwrap().status,
        Status::Confirmed
    );
    let audit = store.audit_log(ap.commune_id, 10).await.unwrap();
    assert!(audit.iter().any(|e| e.action == "horaires"), "{audit:?}");
}

// --- Statistics, audit, platform ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_as_charts_tables_and_csv() {
    let db = TestDb::sqlite().await;
    let (app, _twilio) = demo_app(&db).await;
    let mut web = signed_in(&app, "admin@sallanches.demo").await;
    let page = web
        .get("/agent/statistiques?du=2026-11-30&au=2026-12-31")
        .await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(page.contains("<svg"), "charts drawn on the server");
    assert!(page.contains("role=\"img\""));
    assert!(
        page.contains("Rendez-vous par canal (données)"),
        "each chart has its table"
    );
    assert!(page.contains("Taux d&#39;annulation"));
    assert!(page.contains("Appels transférés au standard"));
    assert!(!page.contains("<script>"));

    let bad = web
        .get("/agent/statistiques?du=2026-12-31&au=2026-11-30")
        .await;
    assert_eq!(bad.status, 422);
    assert!(bad.contains("La fin de la période vient après son début."));

    let csv = web
        .get("/agent/statistiques.csv?du=2026-11-30&au=2026-12-31")
        .await;
    assert_eq!(csv.status, 200);
    assert_eq!(
        csv.headers.get("content-type").unwrap().to_str().unwrap(),
        "text/csv; charset=utf-8"
    );
    assert!(
        csv.headers
            .get("content-disposition")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("attachment")
    );
    assert!(
        csv.html.starts_with('\u{feff}'),
        "a BOM so that Excel reads UTF-8"
    );
    let first_line = csv
        .html
        .trim_start_matches('\u{feff}')
        .lines()
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(first_line, "Indicateur;Catégorie;Valeur");
    assert!(csv.html.contains("Sallanches"));
    assert!(csv.html.contains("\r\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_is_the_commune_administrators() {
    let db = TestDb::sqlite().await;
    let (app, _twilio) = demo_app(&db).await;
    let mut agent = signed_in(&app, "agent@annecy.demo").await;
    let service = titres(&app, "annecy").await;
    let slot = first_slot(&mut agent, service, 1).await;
    let booked = walk_in(&mut agent, service, "1", &slot, &[("nom", "Chevalier")]).await;
    assert_eq!(booked.status, 303);
    let refused = agent.get("/agent/journal").await;
    assert_eq!(refused.status, 403);
    let mut admin = signed_in(&app, "admin@annecy.demo").await;
    let log = admin.get("/agent/journal").await;
    assert_eq!(log.status, 200);
    assert!(log.contains("agent@annecy.demo"), "{}", log.html);
    assert!(log.contains("reservation"));
    assert!(log.contains("Chevalier"));
    assert!(log.contains("connexion"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_platform_sees_communes_costs_and_accounts() {
    let db = TestDb::sqlite().await;
    let (app, _twilio) = demo_app(&db).await;
    // The demo's confirmations went out at 8:00; it is now a minute later.
    app.clock.advance(chrono::Duration::minutes(1));
    let mut web = signed_in(&app, "plateforme@guichet.demo").await;
    let home = web.get("/agent").await;
    assert_eq!(home.location.as_deref(), Some("/agent/plateforme"));
    let page = web.get("/agent/plateforme").await;
    assert_eq!(page.status, 200, "{}", page.html);
    for name in ["Annecy", "Thonon-les-Bains", "Sallanches", "+33465710001"] {
        assert!(page.contains(name), "{name}: {}", page.html);
    }
    // Annecy (131,000 inhabitants, 6 plannings) pays the > 50,000 band: 600 € with 4
    // plannings, 2 × 140 € more, and its SMS.
    let annecy = commune_id(&app, "annecy").await;
    let detail = web
        .get(&format!("/agent/plateforme/communes/{annecy}"))
        .await;
    assert_eq!(detail.status, 200);
    assert!(detail.contains("600,00\u{a0}€"), "{}", detail.html);
    assert!(detail.contains("280,00\u{a0}€"), "{}", detail.html);
    assert!(detail.contains("SMS envoyés"), "{}", detail.html);

    // A new account for Sallanches, who can then sign in.
    let sallanches = commune_id(&app, "sallanches").await.to_string();
    let created = web
        .post(
            "/agent/plateforme/comptes",
            &[
                ("csrf", &csrf(&web)),
                ("email", "accueil@sallanches.demo"),
                ("nom", "Accueil Sallanches"),
                ("role", "agent"),
                ("commune", &sallanches),
                ("mot_de_passe", "un mot de passe assez long"),
            ],
        )
        .await;
    assert_eq!(created.status, 303, "{}", created.html);
    let mut newcomer = WebClient::new(&app);
    let form = newcomer.get("/agent/connexion").await;
    let token = form.csrf();
    let first = newcomer
        .post_and_follow(
            "/agent/connexion",
            &[
                ("csrf", &token),
                ("email", "accueil@sallanches.demo"),
                ("password", "un mot de passe assez long"),
                ("suite", "/agent/jour"),
            ],
        )
        .await;
    assert!(first.contains("Mairie de Sallanches"), "{}", first.html);
    // A short password is refused.
    let short = web
        .post(
            "/agent/plateforme/comptes",
            &[
                ("csrf", &csrf(&web)),
                ("email", "court@sallanches.demo"),
                ("nom", "Court"),
                ("role", "agent"),
                ("commune", &sallanches),
                ("mot_de_passe", "court"),
            ],
        )
        .await;
    assert_eq!(short.status, 422);
    // Deactivating the account closes its session at once.
    let account = app
        .app
        .engine()
        .store()
        .agent_by_email("accueil@sallanches.demo")
        .await
        .unwrap()
        .unwrap();
    let off = web
        .post(
            &format!("/agent/plateforme/comptes/{}/actif", account.id),
            &[("csrf", &csrf(&web)), ("actif", "0")],
        )
        .await;
    assert_eq!(off.status, 303);
    assert_eq!(newcomer.get("/agent/jour").await.status, 303);
}

/// An offer answered after its 48 hours: accepted if its seat is still free, otherwise a
/// clear refusal — never an error about a ten-minute hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_answer_to_an_offer() {
    let db = TestDb::sqlite().await;
    let (app, _twilio) = demo_app(&db).await;
    let engine = app.app.engine().clone();
    let mut web = signed_in(&app, "agent@annecy.demo").await;
    let service = titres(&app, "annecy").await;
    let mut proposals = Vec::new();
    for name in ["Tardif", "Retard"] {
        let page = web
            .get(&format!(
                "/agent/reserver?demarche={service}&personnes=1&date=2026-12-14"
            ))
            .await;
        let slot = slot_in(&page);
        let booked = walk_in(
            &mut web,
            service,
            "1",
            &slot,
            &[
                ("nom", name),
                (
                    "mobile",
                    if name == "Tardif" {
                        "06 39 98 60 01"
                    } else {
                        "06 39 98 60 02"
                    },
                ),
            ],
        )
        .await;
        let id = id_from(booked.location.as_deref().unwrap());
        let outcome = engine
            .cancel_with_proposal(id, "Élections", true)
            .await
            .unwrap();
        proposals.push(outcome.proposal.unwrap());
    }
    app.clock.advance(chrono::Duration::hours(49));
    let late = engine.accept_proposal(proposals[0].id).await.unwrap();
    assert_eq!(late.status, Status::Confirmed, "the seat was still free");
    // Long after the offered time itself: refused, with words that fit.
    app.clock.advance(chrono::Duration::days(30));
    let too_late = engine.accept_proposal(proposals[1].id).await.unwrap_err();
    assert_eq!(too_late.code(), "proposal_lapsed", "{too_late:?}");
    assert!(too_late.message().contains("n'a pas été accepté à temps"));
}

/// Booking for someone who already has an appointment of that kind: where it is, when it is
/// this commune's; a plain sentence, when it is another commune's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_elsewhere_is_not_revealed() {
    let db = TestDb::sqlite().await;
    let (app, _twilio) = demo_app(&db).await;
    let mut thonon = signed_in(&app, "agent@thonon-les-bains.demo").await;
    let thonon_service = titres(&app, "thonon-les-bains").await;
    let slot = first_slot(&mut thonon, thonon_service, 1).await;
    let booked = walk_in(
        &mut thonon,
        thonon_service,
        "1",
        &slot,
        &[("nom", "Mercier"), ("mobile", "06 39 98 70 01")],
    )
    .await;
    assert_eq!(booked.status, 303, "{}", booked.html);

    let mut annecy = signed_in(&app, "agent@annecy.demo").await;
    let service = titres(&app, "annecy").await;
    let slot = first_slot(&mut annecy, service, 1).await;
    let refused = walk_in(
        &mut annecy,
        service,
        "1",
        &slot,
        &[("nom", "Mercier"), ("mobile", "06 39 98 70 01")],
    )
    .await;
    assert_eq!(refused.status, 422, "{}", refused.html);
    assert!(
        refused.contains("dans une autre commune"),
        "{}",
        refused.html
    );
    assert!(!refused.contains("Thonon"), "{}", refused.html);

    // The same person again in Thonon: there, the agent sees when and where.
    let slot = first_slot(&mut thonon, thonon_service, 1).await;
    let here = walk_in(
        &mut thonon,
        thonon_service,
        "1",
        &slot,
        &[("nom", "Mercier"), ("mobile", "06 39 98 70 01")],
    )
    .await;
    assert_eq!(here.status, 422);
    assert!(
        here.contains("Cette personne a déjà un rendez-vous"),
        "{}",
        here.html
    );
}

/// An offer cancelled in turn (the replacement station breaks too) is offered again, and the
/// citizen is told; a hold still being made is just released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_cancelled_again_is_replaced_again() {
    let db = TestDb::sqlite().await;
    let (app, twilio) = demo_app(&db).await;
    let engine = app.app.engine().clone();
    let mut web = signed_in(&app, "agent@annecy.demo").await;
    let service = titres(&app, "annecy").await;
    let slot = first_slot(&mut web, service, 1).await;
    let booked = walk_in(
        &mut web,
        service,
        "1",
        &slot,
        &[("nom", "Gauthier"), ("mobile", "06 39 98 70 02")],
    )
    .await;
    let id = id_from(booked.location.as_deref().unwrap());
    let first = engine
        .cancel_with_proposal(id, "Panne", true)
        .await
        .unwrap();
    assert_eq!(first.told, guichet::booking::Told::Sms);
    let offer = first.proposal.unwrap();
    let second = engine
        .cancel_with_proposal(offer.id, "Panne prolongée", true)
        .await
        .unwrap();
    assert_eq!(second.cancelled.status, Status::CancelledByCommune);
    let again = second.proposal.expect("a new offer");
    assert_ne!(again.starts_at, offer.starts_at);
    assert_eq!(again.replaces_id, Some(offer.id));
    app.deliver().await;
    let notices: Vec<_> = twilio
        .sent_to("+33639987002")
        .into_iter()
        .filter(|m| m.body.contains("OUI"))
        .collect();
    assert_eq!(notices.len(), 2, "told of each offer: {notices:?}");
    // OUI accepts the latest offer.
    let response = app
        .post_twilio(
            "/twilio/sms",
            &[
                ("From", "+33639987002"),
                ("To", "+33465710001"),
                ("Body", "OUI"),
                ("MessageSid", "SM-latest"),
            ],
            Signature::Valid,
        )
        .await;
    assert_eq!(response.status(), 200);
    let store = engine.store();
    assert_eq!(
        store.appointment(again.id).await.unwrap().unwrap().status,
        Status::Confirmed
    );
    // Accepted, then cancelled by the citizen: a late OUI does not bring it back.
    engine
        .cancel(again.id, &guichet::booking::Cancellation::ByCitizen)
        .await
        .unwrap();
    assert!(engine.accept_proposal(again.id).await.is_err());
}

/// Changing the reminder delay moves the reminders already queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_reminder_delay_moves_queued_reminders() {
    let db = TestDb::sqlite().await;
    let (app, _twilio) = demo_app(&db).await;
    let store = app.app.engine().store().clone();
    let mut web = signed_in(&app, "admin@annecy.demo").await;
    let service = titres(&app, "annecy").await;
    let page = web
        .get(&format!(
            "/agent/reserver?demarche={service}&personnes=1&date=2026-12-10"
        ))
        .await;
    let slot = slot_in(&page);
    let booked = walk_in(
        &mut web,
        service,
        "1",
        &slot,
        &[("nom", "Rappel"), ("mobile", "06 39 98 70 03")],
    )
    .await;
    let id = id_from(booked.location.as_deref().unwrap());
    let reminder = |store: std::sync::Arc<dyn guichet::store::Store>| async move {
        store
            .notifications_of(id)
            .await
            .unwrap()
            .into_iter()
            .find(|n| n.message.kind == guichet::domain::NotificationKind::Reminder)
            .unwrap()
    };
    let before = reminder(store.clone()).await;
    let ap = store.appointment(id).await.unwrap().unwrap();
    assert_eq!(
        (ap.starts_at - before.message.due_at).num_hours(),
        48,
        "{before:?}"
    );
    let saved = web
        .post(
            "/agent/configuration/commune",
            &[
                ("csrf", &csrf(&web)),
                ("rappel", "24"),
                ("silence_debut", "20:00"),
                ("silence_fin", "08:00"),
                ("standard", "04 65 71 00 99"),
                ("horaires_standard", "lun mar mer jeu ven 08:30-12:00"),
                ("expediteur", "Annecy"),
            ],
        )
        .await;
    assert_eq!(saved.status, 303, "{}", saved.html);
    let after = reminder(store.clone()).await;
    assert_eq!((ap.starts_at - after.message.due_at).num_hours(), 24);
    assert_eq!(after.status, guichet::domain::NotificationStatus::Pending);
    let note = web.get(saved.location.as_deref().unwrap()).await;
    assert!(note.contains("replanifiés : "), "{}", note.html);
    let commune = store.commune(ap.commune_id).await.unwrap().unwrap();
    assert_eq!(commune.reminder_delay_hours, 24);
    assert_eq!(commune.switchboard_number.as_deref(), Some("+33465710099"));
}

/// Demo accounts, with their published password, never land in a database the demo did not
/// create.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_accounts_only_in_a_demo_database() {
    let world = crate::helpers::World::new(TestDb::sqlite().await).await;
    let created = guichet::demo::seed_accounts(world.store()).await.unwrap();
    assert!(created.is_empty());
    assert!(world.store().agents(None).await.unwrap().is_empty());
}

/// The search finds names as people type them: without accents, in capitals, with or
/// without the hyphen — on SQLite as on PostgreSQL.
async fn searching_names_as_typed(db: TestDb) {
    let (app, _twilio) = demo_app(&db).await;
    let mut web = signed_in(&app, "agent@annecy.demo").await;
    let service = titres(&app, "annecy").await;
    let slot = first_slot(&mut web, service, 1).await;
    let booked = walk_in(
        &mut web,
        service,
        "1",
        &slot,
        &[
            ("nom", "Lefèvre-Œuvray"),
            ("prenom", "Élodie"),
            ("mobile", "06 39 98 70 09"),
        ],
    )
    .await;
    assert_eq!(booked.status, 303, "{}", booked.html);
    for query in [
        "elodie",
        "Élodie",
        "LEFEVRE",
        "lefevre oeuvray",
        "Lefèvre-Œuvray",
        "06 39 98 70 09",
        "0639987009",
    ] {
        let page = web
            .get(&format!("/agent/recherche?q={}", query.replace(' ', "+")))
            .await;
        assert!(
            page.contains("Élodie Lefèvre-Œuvray"),
            "{query}: {}",
            page.html
        );
    }
    let none = web.get("/agent/recherche?q=eloise").await;
    assert!(
        none.contains("Aucun rendez-vous ne correspond"),
        "{}",
        none.html
    );
}
both_backends!(search_names, searching_names_as_typed);

/// A closing interrupted half-way (the closure written, some appointments not yet cancelled)
/// shows on the configuration page and is finished from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_closing_is_finished_from_the_configuration() {
    let db = TestDb::sqlite().await;
    let (app, _twilio) = demo_app(&db).await;
    let store = app.app.engine().store().clone();
    let mut web = signed_in(&app, "agent@annecy.demo").await;
    let service = titres(&app, "annecy").await;
    let slot = first_slot(&mut web, service, 1).await;
    let booked = walk_in(
        &mut web,
        service,
        "1",
        &slot,
        &[("nom", "Interrompu"), ("mobile", "06 39 98 70 10")],
    )
    .await;
    let id = id_from(booked.location.as_deref().unwrap());
    let ap = store.appointment(id).await.unwrap().unwrap();
    // As if the instance had stopped right after writing the closure.
    let closure = store
        .insert_closure(&guichet::store::NewClosure {
            commune_id: ap.commune_id,
            planning_id: Some(ap.planning_id),
            location_id: None,
            starts_at: ap.starts_at - chrono::Duration::hours(1),
            ends_at: ap.ends_at + chrono::Duration::hours(1),
            reason: "Station en panne".into(),
        })
        .await
        .unwrap();
    let config = web.get("/agent/configuration").await;
    assert!(
        config.contains("Annuler les rendez-vous restants (1)"),
        "{}",
        config.html
    );
    let report = web
        .post(
            &format!("/agent/configuration/fermetures/{closure}/annuler"),
            &[("csrf", &csrf(&web))],
        )
        .await;
    assert_eq!(report.status, 200, "{}", report.html);
    assert!(report.contains("Interrompu"), "{}", report.html);
    assert!(report.contains("prévenu par SMS"), "{}", report.html);
    assert_eq!(
        store.appointment(id).await.unwrap().unwrap().status,
        Status::CancelledByCommune
    );
    let config = web.get("/agent/configuration").await;
    assert!(!config.contains("Annuler les rendez-vous restants"));
}
