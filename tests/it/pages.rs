//! The citizens' pages over HTTP, as a browser without JavaScript uses them: forms, the CSRF
//! cookie, redirects after each POST, error summaries, and what the database holds after each
//! step. (A real Chromium drives the same path in `browser.rs`.)

use crate::both_backends;
use crate::fake_twilio::FakeTwilio;
use crate::helpers::{TestApp, TestAppOptions, TestDb, World};
use guichet::domain::Clock;
use guichet::domain::Status;

/// A form-submitting client that keeps its cookies (the CSRF cookie, an agent's session), like
/// a browser without JavaScript.
pub struct WebClient {
    http: reqwest::Client,
    base: String,
    cookies: Vec<(String, String)>,
}

/// What a page answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub html: String,
    pub location: Option<String>,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    /// The value of the hidden CSRF field of the page's forms.
    pub fn csrf(&self) -> String {
        attr_after(&self.html, "name=\"csrf\" value=\"").expect("a form with a CSRF field")
    }

    /// The value of the first slot button.
    pub fn first_slot(&self) -> Option<String> {
        attr_after(&self.html, "name=\"slot\" value=\"")
    }

    /// Every slot button's value.
    pub fn slots(&self) -> Vec<String> {
        self.html
            .split("name=\"slot\" value=\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next().map(str::to_owned))
            .collect()
    }

    pub fn title(&self) -> String {
        between(&self.html, "<title>", "</title>").unwrap_or_default()
    }

    pub fn contains(&self, text: &str) -> bool {
        self.html.contains(text)
    }
}

fn attr_after(html: &str, prefix: &str) -> Option<String> {
    let start = html.find(prefix)? + prefix.len();
    Some(html[start..].split('"').next()?.to_owned())
}

fn between(html: &str, from: &str, to: &str) -> Option<String> {
    let start = html.find(from)? + from.len();
    let end = html[start..].find(to)? + start;
    Some(html[start..end].to_owned())
}

impl WebClient {
    pub fn new(app: &TestApp) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: app.address.clone(),
            cookies: Vec::new(),
        }
    }

    /// The same browser, talking to another instance (sessions live in the database).
    pub fn to(&self, app: &TestApp) -> Self {
        Self {
            http: self.http.clone(),
            base: app.address.clone(),
            cookies: self.cookies.clone(),
        }
    }

    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets (or with an empty value, drops) a cookie, as a stolen or stale one would be.
    pub fn set_cookie(&mut self, name: &str, value: &str) {
        self.cookies.retain(|(n, _)| n != name);
        if !value.is_empty() {
            self.cookies.push((name.to_owned(), value.to_owned()));
        }
    }

    fn cookie_header(&self) -> Option<String> {
        (!self.cookies.is_empty()).then(|| {
            self.cookies
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    async fn answer(&mut self, response: reqwest::Response) -> Answer {
        for set in response.headers().get_all("set-cookie") {
            let text = set.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            let expired = text.contains("Max-Age=0");
            self.set_cookie(name, if expired { "" } else { value });
        }
        Answer {
            status: response.status().as_u16(),
            location: response
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_owned()),
            headers: response.headers().clone(),
            html: response.text().await.unwrap(),
        }
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(cookie) = self.cookie_header() {
            request = request.header("cookie", cookie);
        }
        let response = request.send().await.unwrap();
        self.answer(response).await
    }

    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let mut request = self.http.post(format!("{}{path}", self.base)).form(fields);
        if let Some(cookie) = self.cookie_header() {
            request = request.header("cookie", cookie);
        }
        let response = request.send().await.unwrap();
        self.answer(response).await
    }

    /// Posts, expects a 303, and fetches where it leads.
    pub async fn post_and_follow(&mut self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let answer = self.post(path, fields).await;
        assert_eq!(answer.status, 303, "{path}: {}", answer.html);
        let to = answer.location.expect("a redirect");
        self.get(&to).await
    }
}

async fn app(world: &World) -> (TestApp, FakeTwilio) {
    TestApp::with_twilio(&world.db, world.clock.clone()).await
}

const MOBILE: &str = "+33639980042";

/// Commune → service → persons and place → slots → hold → details → code → personal page.
async fn book(web: &mut WebClient, twilio: &FakeTwilio, app: &TestApp) -> (String, Answer) {
    let home = web.get("/?q=74999").await;
    assert_eq!(home.status, 200);
    assert!(home.contains("href=\"/testville\""), "{}", home.html);
    let commune = web.get("/testville").await;
    assert!(commune.contains("Carte d&#39;identité"), "{}", commune.html);
    let options = web.get("/testville/demarche/1").await;
    assert!(options.contains("Nombre de personnes"));
    let slots = web
        .get("/testville/demarche/1/creneaux?persons=2&location=")
        .await;
    assert_eq!(slots.status, 200, "{}", slots.html);
    let slot = slots.first_slot().expect("free slots");
    let csrf = slots.csrf();
    let details = web
        .post_and_follow(
            "/testville/reserver",
            &[
                ("csrf", &csrf),
                ("service", "1"),
                ("persons", "2"),
                ("location", ""),
                ("slot", &slot),
            ],
        )
        .await;
    assert_eq!(details.status, 200, "{}", details.html);
    assert!(
        details.contains("vous est réservé jusqu"),
        "{}",
        details.html
    );
    let details_path = between(&details.html, "<form method=\"post\" action=\"", "\"").unwrap();
    let code_page = web
        .post_and_follow(
            &details_path,
            &[
                ("csrf", &csrf),
                ("nom", "Martin"),
                ("prenom", "Léa"),
                ("mobile", "06 39 98 00 42"),
                ("email", ""),
                ("ants1", "abcde12345"),
                ("ants2", ""),
            ],
        )
        .await;
    assert_eq!(code_page.status, 200, "{}", code_page.html);
    assert!(
        code_page.contains("par SMS au +33 6 ** ** ** 42"),
        "{}",
        code_page.html
    );
    app.deliver().await;
    let code = twilio.last_code(MOBILE).expect("a code by SMS");
    let code_path = format!("{details_path}/code");
    let page = web
        .post_and_follow(&code_path, &[("csrf", &csrf), ("code", &code)])
        .await;
    (code_path, page)
}

async fn books_end_to_end(db: TestDb) {
    let world = World::new(db).await;
    let (app, twilio) = app(&world).await;
    let mut web = WebClient::new(&app);
    let (_, confirmed) = book(&mut web, &twilio, &app).await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.html);
    assert!(confirmed.contains("Votre rendez-vous est confirmé."));
    assert!(confirmed.html.len() <= 50_000);
    assert!(
        confirmed.contains("Une pièce d&#39;identité."),
        "what to bring"
    );
    assert!(confirmed.contains("1 place de la Mairie, 74999 Testville"));
    assert!(confirmed.contains("/rdv.ics"));
    let all = world.all_appointments().await;
    assert_eq!(all.len(), 1);
    let a = &all[0];
    assert_eq!(a.status, Status::Confirmed);
    assert_eq!(a.persons, 2);
    assert_eq!(a.citizen.name.as_str(), "Léa Martin");
    assert_eq!(a.citizen.phone.as_ref().unwrap().as_str(), MOBILE);
    assert_eq!(a.citizen.ants_application_ids[0].as_str(), "ABCDE12345");
    // The confirmation SMS carries the personal link the page shows.
    app.deliver().await;
    let confirmation = twilio.sent_to(MOBILE).last().unwrap().body.clone();
    let link = confirmation
        .split_whitespace()
        .find(|w| w.contains("/r/"))
        .expect("a personal link in the confirmation SMS")
        .to_owned();
    let token = link.rsplit('/').next().unwrap().to_owned();
    assert!(
        confirmed.contains(&link),
        "the page shows the link of the SMS"
    );
    // The personal page never sends a referrer.
    let mine = web.get(&format!("/r/{token}")).await;
    assert_eq!(mine.headers["referrer-policy"], "no-referrer");
    let ics = web.get(&format!("/r/{token}/rdv.ics")).await;
    assert_eq!(ics.status, 200);
    assert!(ics.html.contains("BEGIN:VEVENT"));

    // Move: the new slot is taken, the old one freed, the link leads to the new one.
    let moving = web.get(&format!("/r/{token}/deplacer")).await;
    assert_eq!(moving.status, 200, "{}", moving.html);
    let before = a.starts_at;
    let target = moving
        .slots()
        .into_iter()
        .rev()
        .nth(3)
        .expect("other slots");
    let moved = web
        .post_and_follow(
            &format!("/r/{token}/deplacer"),
            &[("csrf", &moving.csrf()), ("slot", &target)],
        )
        .await;
    assert!(
        moved.contains("Votre rendez-vous a été déplacé."),
        "{}",
        moved.html
    );
    let all = world.all_appointments().await;
    let active: Vec<_> = all
        .iter()
        .filter(|a| a.status == Status::Confirmed)
        .collect();
    assert_eq!(active.len(), 1);
    assert_ne!(active[0].starts_at, before);
    assert!(
        all.iter()
            .any(|a| a.status == Status::Moved && a.starts_at == before)
    );

    // Cancel, with a confirmation step.
    let asking = web.get(&format!("/r/{token}/annuler")).await;
    assert!(asking.contains("Annuler ce rendez-vous ?"));
    assert_eq!(
        world
            .all_appointments()
            .await
            .iter()
            .filter(|a| a.status == Status::Confirmed)
            .count(),
        1,
        "asking is not cancelling"
    );
    let cancelled = web
        .post_and_follow(&format!("/r/{token}/annuler"), &[("csrf", &asking.csrf())])
        .await;
    assert!(
        cancelled.contains("Votre rendez-vous est annulé."),
        "{}",
        cancelled.html
    );
    assert!(!cancelled.contains("/deplacer"), "nothing left to move");
    assert!(
        world
            .all_appointments()
            .await
            .iter()
            .any(|a| a.status == Status::CancelledByCitizen)
    );
}
both_backends!(
    a_citizen_books_moves_and_cancels_with_forms_only,
    books_end_to_end
);

#[tokio::test]
async fn mistakes_are_listed_at_the_top_and_linked_to_their_fields() {
    let db = TestDb::sqlite().await;
    let world = World::new(db).await;
    let (app, twilio) = app(&world).await;
    let mut web = WebClient::new(&app);
    let slots = web.get("/testville/demarche/2/creneaux?location=").await;
    let csrf = slots.csrf();
    let slot = slots.first_slot().unwrap();
    let details = web
        .post_and_follow(
            "/testville/reserver",
            &[("csrf", &csrf), ("service", "2"), ("slot", &slot)],
        )
        .await;
    let path = between(&details.html, "<form method=\"post\" action=\"", "\"").unwrap();
    assert!(
        !details.contains("pré-demande"),
        "no ANTS numbers for school"
    );
    let wrong = web
        .post(
            &path,
            &[
                ("csrf", &csrf),
                ("nom", ""),
                ("prenom", "Paul"),
                ("mobile", "12"),
                ("email", "pas-une-adresse"),
            ],
        )
        .await;
    assert_eq!(wrong.status, 422);
    assert!(wrong.title().starts_with("Erreur : "), "{}", wrong.title());
    assert!(wrong.contains("class=\"error-summary\""));
    for field in ["nom", "mobile", "email"] {
        assert!(
            wrong.contains(&format!("<a href=\"#{field}\">")),
            "{field}: {}",
            wrong.html
        );
        assert!(wrong.contains(&format!("id=\"{field}-error\"")), "{field}");
    }
    assert!(wrong.contains("value=\"Paul\""), "what was typed stays");
    assert!(twilio.sent().is_empty());
    // A landline cannot take the code: said on the mobile field.
    let landline = web
        .post(
            &path,
            &[
                ("csrf", &csrf),
                ("nom", "Durand"),
                ("prenom", "Paul"),
                ("mobile", "04 50 00 00 00"),
            ],
        )
        .await;
    assert_eq!(landline.status, 422, "{}", landline.html);
    assert!(
        landline.contains("<a href=\"#mobile\">"),
        "{}",
        landline.html
    );

    // The wrong code costs a try, and says how many are left.
    let code_page = web
        .post_and_follow(
            &path,
            &[
                ("csrf", &csrf),
                ("nom", "Durand"),
                ("prenom", "Paul"),
                ("email", "paul@exemple.fr"),
            ],
        )
        .await;
    assert!(code_page.contains("par e-mail à"), "{}", code_page.html);
    let wrong_code = web
        .post(
            &format!("{path}/code"),
            &[("csrf", &csrf), ("code", "000000")],
        )
        .await;
    assert_eq!(wrong_code.status, 422);
    assert!(
        wrong_code.contains("Il vous reste 4 essais."),
        "{}",
        wrong_code.html
    );
    assert!(wrong_code.contains("aria-invalid=\"true\""));
}

#[tokio::test]
async fn a_form_without_this_browsers_token_is_refused_and_changes_nothing() {
    let db = TestDb::sqlite().await;
    let world = World::new(db).await;
    let (app, _) = app(&world).await;
    let mut web = WebClient::new(&app);
    let slots = web.get("/testville/demarche/2/creneaux").await;
    let slot = slots.first_slot().unwrap();
    let forged = web
        .post(
            "/testville/reserver",
            &[
                ("csrf", "0123456789abcdef0123456789abcdef"),
                ("service", "2"),
                ("slot", &slot),
            ],
        )
        .await;
    assert_eq!(forged.status, 403);
    assert!(forged.contains("Formulaire expiré"));
    // Another site's page cannot send our cookie's value: a fresh client has none.
    let mut stranger = WebClient::new(&app);
    let foreign = stranger
        .post(
            "/testville/reserver",
            &[("csrf", &slots.csrf()), ("service", "2"), ("slot", &slot)],
        )
        .await;
    assert_eq!(foreign.status, 403);
    assert!(world.all_appointments().await.is_empty());
}

#[tokio::test]
async fn a_lapsed_hold_whose_slot_was_taken_offers_the_nearest_free_slots() {
    let db = TestDb::sqlite().await;
    let world = World::new(db).await;
    let (app, _) = app(&world).await;
    let mut web = WebClient::new(&app);
    // Book the school service at the only seat of 9:00 on Tuesday at the annex... (2 seats:
    // take both after the hold lapses).
    let slots = web
        .get(&format!(
            "/testville/demarche/2/creneaux?location={}",
            world.annex
        ))
        .await;
    let csrf = slots.csrf();
    let slot = slots.first_slot().unwrap();
    let details = web
        .post_and_follow(
            "/testville/reserver",
            &[
                ("csrf", &csrf),
                ("service", "2"),
                ("slot", &slot),
                ("location", &world.annex.to_string()),
            ],
        )
        .await;
    let path = between(&details.html, "<form method=\"post\" action=\"", "\"").unwrap();
    let held = world.all_appointments().await.remove(0);
    world.clock.advance(chrono::Duration::minutes(11));
    for n in 0..2 {
        let mut request = world.request(world.school, held.starts_at, 900 + n);
        request.location = Some(world.annex);
        world
            .engine
            .book(&request, guichet::booking::BookingMode::Confirmed)
            .await
            .unwrap();
    }
    let late = web
        .post(
            &path,
            &[
                ("csrf", &csrf),
                ("nom", "Durand"),
                ("prenom", "Paul"),
                ("email", "paul@exemple.fr"),
            ],
        )
        .await;
    assert_eq!(late.status, 410, "{}", late.html);
    assert!(late.contains("Ce créneau n&#39;est plus réservé pour vous"));
    assert!(late.first_slot().is_some(), "nearest free slots offered");
    assert!(!late.slots().contains(&slot), "not the taken one");
}

#[tokio::test]
async fn a_lapsed_hold_still_free_is_taken_again_when_details_arrive() {
    let db = TestDb::sqlite().await;
    let world = World::new(db).await;
    let (app, _) = app(&world).await;
    let mut web = WebClient::new(&app);
    let slots = web.get("/testville/demarche/2/creneaux").await;
    let csrf = slots.csrf();
    let slot = slots.first_slot().unwrap();
    let details = web
        .post_and_follow(
            "/testville/reserver",
            &[("csrf", &csrf), ("service", "2"), ("slot", &slot)],
        )
        .await;
    let path = between(&details.html, "<form method=\"post\" action=\"", "\"").unwrap();
    world.clock.advance(chrono::Duration::minutes(15));
    let code = web
        .post_and_follow(
            &path,
            &[
                ("csrf", &csrf),
                ("nom", "Durand"),
                ("prenom", "Paul"),
                ("email", "paul@exemple.fr"),
            ],
        )
        .await;
    assert_eq!(code.status, 200, "{}", code.html);
    let a = world.all_appointments().await.remove(0);
    assert_eq!(a.effective_status(world.clock.now()), Status::Held);
    assert_eq!(
        a.hold_expires_at.unwrap(),
        a.created_at + chrono::Duration::minutes(20),
        "held again to type the code, but never beyond twice the hold from the first choice"
    );
    assert!(a.hold_expires_at.unwrap() > world.clock.now());
}

#[tokio::test]
async fn find_my_appointment_sends_links_without_telling_who_has_one() {
    let db = TestDb::sqlite().await;
    let world = World::new(db).await;
    let (app, twilio) = app(&world).await;
    let mut web = WebClient::new(&app);
    book(&mut web, &twilio, &app).await;
    app.deliver().await;
    let before = twilio.sent_to(MOBILE).len();
    let form = web.get("/rdv/retrouver").await;
    let csrf = form.csrf();
    let known = web
        .post_and_follow(
            "/rdv/retrouver",
            &[("csrf", &csrf), ("contact", "06 39 98 00 42")],
        )
        .await;
    let unknown = web
        .post_and_follow(
            "/rdv/retrouver",
            &[("csrf", &csrf), ("contact", "06 39 98 00 43")],
        )
        .await;
    assert_eq!(known.status, 200);
    assert_eq!(unknown.status, 200);
    let strip = |a: &Answer, n: &str| a.html.replace(n, "NUMBER");
    assert_eq!(
        strip(&known, "+33 6 ** ** ** 42"),
        strip(&unknown, "+33 6 ** ** ** 43"),
        "the same answer whether or not an appointment exists"
    );
    app.deliver().await;
    let sent = twilio.sent_to(MOBILE);
    assert_eq!(sent.len(), before + 1);
    assert!(twilio.sent_to("+33639980043").is_empty());
    // Reloading the answer sends nothing more.
    web.get("/rdv/retrouver?envoye=%2B33%206%20**%20**%20**%2042")
        .await;
    app.deliver().await;
    assert_eq!(twilio.sent_to(MOBILE).len(), before + 1);
    let link = sent.last().unwrap().body.clone();
    let token = link.rsplit("/r/").next().unwrap().trim();
    let page = web.get(&format!("/r/{token}")).await;
    assert_eq!(page.status, 200);
    assert!(page.contains("confirmé"));
}

#[tokio::test]
async fn one_address_cannot_hold_slot_after_slot() {
    let db = TestDb::sqlite().await;
    let world = World::new(db).await;
    let options = TestAppOptions {
        per_ip_limits: Some((2, 10)),
        ..TestAppOptions::default()
    };
    let app = TestApp::spawn_with(&world.db, world.clock.clone(), options).await;
    let mut web = WebClient::new(&app);
    let slots = web.get("/testville/demarche/2/creneaux").await;
    let csrf = slots.csrf();
    let all = slots.slots();
    for (n, slot) in all.iter().take(3).enumerate() {
        let answer = web
            .post(
                "/testville/reserver",
                &[("csrf", &csrf), ("service", "2"), ("slot", slot)],
            )
            .await;
        let expected = if n < 2 { 303 } else { 429 };
        assert_eq!(answer.status, expected, "hold {n}: {}", answer.html);
    }
    assert_eq!(world.all_appointments().await.len(), 2);
}

#[tokio::test]
async fn pages_are_french_safe_and_light() {
    let db = TestDb::sqlite().await;
    let world = World::new(db).await;
    let (app, _) = app(&world).await;
    let mut web = WebClient::new(&app);
    for path in [
        "/",
        "/testville",
        "/testville/demarche/1",
        "/testville/demarche/1/creneaux?persons=1&location=",
        "/testville/demarche/2/creneaux",
        "/rdv/retrouver",
        "/accessibilite",
        "/donnees-personnelles",
    ] {
        let page = web.get(path).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(page.contains("<html lang=\"fr\">"), "{path}");
        assert_eq!(page.html.matches("<h1").count(), 1, "{path}: one h1");
        assert!(!page.contains("<script>"), "{path}: no inline script");
        assert!(
            page.html.len() <= 50_000,
            "{path}: {} bytes",
            page.html.len()
        );
        let csp = page.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
        assert_eq!(page.headers["x-content-type-options"], "nosniff");
        // The public URL is HTTPS in tests.
        assert!(page.headers.contains_key("strict-transport-security"));
    }
    let missing = web.get("/nulle-part").await;
    assert_eq!(missing.status, 404);
    assert!(missing.contains("Page introuvable"));
    let css = web.get("/static/guichet.css").await;
    assert_eq!(css.status, 200);
    assert!(css.html.contains(":focus-visible"));
    // Titles change with each step.
    let a = web.get("/testville").await.title();
    let b = web.get("/testville/demarche/1").await.title();
    assert_ne!(a, b);
}

#[tokio::test]
async fn cancelling_or_moving_needs_this_browsers_token_too() {
    let db = TestDb::sqlite().await;
    let world = World::new(db).await;
    let (app, twilio) = app(&world).await;
    let mut web = WebClient::new(&app);
    let (_, confirmed) = book(&mut web, &twilio, &app).await;
    let token = attr_after(&confirmed.html, "href=\"/r/")
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let victims_csrf = web.get("/rdv/retrouver").await.csrf();
    let mut stranger = WebClient::new(&app);
    let page = stranger.get(&format!("/r/{token}/deplacer")).await;
    let slot = page.first_slot().unwrap();
    // A forged form carries the victim's token, not the cookie this browser got.
    let forged = stranger
        .post(&format!("/r/{token}/annuler"), &[("csrf", &victims_csrf)])
        .await;
    assert_eq!(forged.status, 403);
    let forged = stranger
        .post(
            &format!("/r/{token}/deplacer"),
            &[("csrf", &victims_csrf), ("slot", &slot)],
        )
        .await;
    assert_eq!(forged.status, 403);
    let all = world.all_appointments().await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].status, Status::Confirmed);
}

#[tokio::test]
async fn details_already_used_for_this_service_are_refused_without_saying_where() {
    let db = TestDb::sqlite().await;
    let world = World::new(db).await;
    let (app, twilio) = app(&world).await;
    let mut owner = WebClient::new(&app);
    book(&mut owner, &twilio, &app).await;
    app.deliver().await;
    let owner_messages = twilio.sent_to(MOBILE).len();
    // Someone else types the same mobile for another CNI/passport appointment.
    let mut other = WebClient::new(&app);
    let slots = other
        .get("/testville/demarche/1/creneaux?persons=1&location=")
        .await;
    let csrf = slots.csrf();
    let slot = slots.slots().pop().unwrap();
    let details = other
        .post_and_follow(
            "/testville/reserver",
            &[("csrf", &csrf), ("service", "1"), ("slot", &slot)],
        )
        .await;
    let path = between(&details.html, "<form method=\"post\" action=\"", "\"").unwrap();
    let refused = other
        .post(
            &path,
            &[
                ("csrf", &csrf),
                ("nom", "Autre"),
                ("prenom", "Personne"),
                ("mobile", "06 39 98 00 42"),
            ],
        )
        .await;
    assert_eq!(refused.status, 422, "{}", refused.html);
    assert!(refused.contains("existe déjà avec ces coordonnées"));
    app.deliver().await;
    let to_owner = twilio.sent_to(MOBILE);
    assert_eq!(
        to_owner.len(),
        owner_messages + 1,
        "the owner is told instead"
    );
    assert!(
        to_owner.last().unwrap().body.contains("deja")
            || to_owner.last().unwrap().body.contains("déjà")
    );
    // No code went anywhere for the refused details.
    assert_eq!(
        twilio.sent().iter().filter(|m| m.to == MOBILE).count(),
        to_owner.len()
    );
}

#[tokio::test]
async fn choosing_another_slot_lets_the_held_one_go_at_once() {
    let db = TestDb::sqlite().await;
    let world = World::new(db).await;
    let (app, _) = app(&world).await;
    let mut web = WebClient::new(&app);
    let slots = web.get("/testville/demarche/2/creneaux").await;
    let csrf = slots.csrf();
    let slot = slots.first_slot().unwrap();
    let details = web
        .post_and_follow(
            "/testville/reserver",
            &[("csrf", &csrf), ("service", "2"), ("slot", &slot)],
        )
        .await;
    let release = details
        .html
        .split("action=\"")
        .filter_map(|rest| rest.split('"').next())
        .find(|action| action.ends_with("/liberer"))
        .map(str::to_owned)
        .expect("a way to choose another slot");
    let back = web.post_and_follow(&release, &[("csrf", &csrf)]).await;
    assert_eq!(back.status, 200, "{}", back.html);
    assert!(
        back.title().starts_with("Étape 3 sur 5"),
        "{}",
        back.title()
    );
    let all = world.all_appointments().await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].status, Status::Expired, "the seat is free again");
    assert!(back.slots().contains(&slot), "the slot is offered again");
}
