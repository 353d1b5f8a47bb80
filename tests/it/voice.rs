//! Whole telephone calls through the signed webhooks, as the voice provider makes them: every
//! TwiML answer is parsed (well-formed, only `<Say>` inside `<Gather>`), keys and speech go to
//! the URL the answer gave, and the database is checked at the end.

use crate::both_backends;
use crate::fake_twilio::FakeTwilio;
use crate::helpers::{Signature, TestApp, TestDb, World, paris};
use guichet::booking::BookingMode;
use guichet::domain::{Channel, Clock, PhoneE164, Status};
use guichet::voice::twiml::read_voice_response;

pub const TOWN_NUMBER: &str = "+33465719999";
const CALLER: &str = "+33639980011";

/// One call in progress.
pub struct Call<'a> {
    app: &'a TestApp,
    pub sid: String,
    /// The last TwiML received.
    pub twiml: String,
    /// Everything said so far, in order.
    pub heard: Vec<String>,
    /// Seconds of speech heard (150 words a minute).
    pub spoken_seconds: f64,
}

/// Parses TwiML with the library's reader, failing on malformed XML or forbidden nesting.
pub fn parse(twiml: &str) -> Parsed {
    let read = read_voice_response(twiml).unwrap_or_else(|e| panic!("{e}: {twiml}"));
    Parsed {
        says: read.says,
        action: read.action,
        redirect: read.redirect,
        dial: read.dial.map(|(number, _)| number),
        hangup: read.hangup,
    }
}

#[derive(Debug, Default)]
pub struct Parsed {
    pub says: Vec<String>,
    pub action: Option<String>,
    pub redirect: Option<String>,
    pub dial: Option<String>,
    pub hangup: bool,
}

impl<'a> Call<'a> {
    pub async fn dial(app: &'a TestApp, sid: &str, from: &str, to: &str) -> Call<'a> {
        let response = app
            .post_twilio(
                "/twilio/voice",
                &[
                    ("CallSid", sid),
                    ("From", from),
                    ("To", to),
                    ("CallStatus", "ringing"),
                ],
                Signature::Valid,
            )
            .await;
        assert_eq!(response.status(), 200);
        let twiml = response.text().await.unwrap();
        let mut call = Call {
            app,
            sid: sid.to_owned(),
            twiml: String::new(),
            heard: Vec::new(),
            spoken_seconds: 0.0,
        };
        call.received(twiml);
        call
    }

    fn received(&mut self, twiml: String) {
        let parsed = parse(&twiml);
        let words: usize = parsed
            .says
            .iter()
            .map(|s| guichet::domain::spoken::word_count(s))
            .sum();
        self.spoken_seconds += words as f64 / 150.0 * 60.0;
        self.heard.extend(parsed.says);
        self.twiml = twiml;
    }

    pub fn parsed(&self) -> Parsed {
        parse(&self.twiml)
    }

    /// What the last answer said.
    pub fn said(&self) -> String {
        self.parsed().says.join(" ")
    }

    async fn post(&mut self, url: &str, extra: &[(&str, &str)]) -> u16 {
        let mut params = vec![
            ("CallSid", self.sid.as_str()),
            ("CallStatus", "in-progress"),
        ];
        params.extend_from_slice(extra);
        let response = self.app.post_twilio(url, &params, Signature::Valid).await;
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        if status == 200 {
            self.received(body);
        }
        status
    }

    pub async fn press(&mut self, digits: &str) {
        let action = self.parsed().action.expect("a question to answer");
        assert_eq!(self.post(&action, &[("Digits", digits)]).await, 200);
    }

    pub async fn say_aloud(&mut self, speech: &str) {
        let action = self.parsed().action.expect("a question to answer");
        assert_eq!(
            self.post(&action, &[("SpeechResult", speech), ("Confidence", "0.9")])
                .await,
            200
        );
    }

    pub async fn stay_silent(&mut self) {
        let redirect = self
            .parsed()
            .redirect
            .expect("a redirect after the question");
        assert_eq!(self.post(&redirect, &[]).await, 200);
    }

    pub async fn hang_up(&self) {
        let response = self
            .app
            .post_twilio(
                "/twilio/voice/status",
                &[
                    ("CallSid", &self.sid),
                    ("CallStatus", "completed"),
                    ("CallDuration", "42"),
                ],
                Signature::Valid,
            )
            .await;
        assert_eq!(response.status(), 204);
    }
}

async fn town(world: &World) -> (TestApp, FakeTwilio) {
    TestApp::with_twilio(&world.db, world.clock.clone()).await
}

/// Menu → CNI/passport → 2 persons → first free place → first slot → caller's mobile → name →
/// code → confirmed.
async fn book_by_phone(call: &mut Call<'_>, twilio: &FakeTwilio, app: &TestApp) {
    assert!(
        call.said().contains("Prendre rendez-vous : tapez 1"),
        "{}",
        call.said()
    );
    call.press("1").await;
    assert!(call.said().contains("Quelle démarche ?"), "{}", call.said());
    call.press("1").await;
    assert!(call.said().contains("de 1 à 3 ?"), "{}", call.said());
    call.press("2").await;
    assert!(
        call.said().contains("Le premier lieu libre"),
        "{}",
        call.said()
    );
    call.press("1").await;
    assert!(call.said().contains("Premiers créneaux"), "{}", call.said());
    assert!(
        call.said().contains("lundi 30 novembre à 9 heures"),
        "{}",
        call.said()
    );
    call.press("1").await;
    assert!(
        call.said()
            .contains("Créneau gardé le temps de confirmer : lundi 30 novembre à 9 heures"),
        "{}",
        call.said()
    );
    assert!(
        call.said()
            .contains("Code par SMS au mobile finissant par onze"),
        "{}",
        call.said()
    );
    call.press("1").await;
    assert!(call.said().contains("Dites le nom"), "{}", call.said());
    call.say_aloud("Léa Martin").await;
    assert!(
        call.said().contains("Tapez le code reçu par SMS"),
        "{}",
        call.said()
    );
    app.deliver().await;
    let code = twilio.last_code(CALLER).expect("the code by SMS");
    call.press(&code).await;
    let said = call.said();
    assert!(said.contains("Rendez-vous confirmé"), "{said}");
    assert!(
        said.contains("À apporter : Une pièce d'identité."),
        "{said}"
    );
    assert!(call.parsed().hangup);
}

async fn books_a_real_appointment(db: TestDb) {
    let world = World::new(db).await;
    let (app, twilio) = town(&world).await;
    let mut call = Call::dial(&app, "CA0001", CALLER, TOWN_NUMBER).await;
    book_by_phone(&mut call, &twilio, &app).await;
    let all = world.all_appointments().await;
    assert_eq!(all.len(), 1);
    let a = &all[0];
    assert_eq!(a.status, Status::Confirmed);
    assert_eq!(a.channel, Channel::Phone);
    assert_eq!(a.persons, 2);
    assert_eq!(a.citizen.name.as_str(), "Léa Martin");
    assert_eq!(a.citizen.phone.as_ref().unwrap().as_str(), CALLER);
    assert_eq!(a.starts_at, paris("2026-11-30", 9, 0));
    // The confirmation SMS follows.
    app.deliver().await;
    assert!(
        twilio
            .sent_to(CALLER)
            .last()
            .unwrap()
            .body
            .contains("confirm")
    );
    // The call is closed with its outcome and the name heard.
    call.hang_up().await;
    let record = world.store().call("CA0001").await.unwrap().unwrap();
    assert_eq!(record.outcome.as_deref(), Some("booked"));
    assert_eq!(record.spoken_name.as_deref(), Some("Léa Martin"));
    assert!(record.ended_at.is_some());
    // The web API shows it.
    let (status, body) = app
        .get_json(
            "/api/v1/communes/testville/slots?service=1&persons=1&from=2026-11-30&to=2026-11-30",
        )
        .await;
    assert_eq!(status, 200);
    let taken = format!(
        "\"location\":{},\"location_name\":\"Hôtel de ville\",\"start\":\"2026-11-30T09:00:00+01:00\"",
        a.location_id
    );
    assert_eq!(a.location_id, world.town_hall);
    assert!(
        !body.to_string().contains(&taken),
        "the slot is taken: {body}"
    );
    println!("spoken booking call: {:.0} s", call.spoken_seconds);
}
both_backends!(a_caller_books_a_real_appointment, books_a_real_appointment);

#[tokio::test]
async fn wrong_keys_and_silence_are_answered_twice_then_the_call_ends_politely() {
    let world = World::new(TestDb::sqlite().await).await;
    let (app, _) = town(&world).await;
    let mut call = Call::dial(&app, "CA0002", CALLER, TOWN_NUMBER).await;
    call.press("9").await;
    assert!(
        call.said()
            .starts_with("Cette touche ne correspond à aucun choix."),
        "{}",
        call.said()
    );
    call.stay_silent().await;
    assert!(
        call.said().starts_with("Je n'ai rien entendu."),
        "{}",
        call.said()
    );
    call.press("*").await;
    assert!(
        call.said().starts_with("Mairie"),
        "* repeats: {}",
        call.said()
    );
    call.stay_silent().await;
    // Third miss at 8:00 on a Monday: the switchboard (9:00–12:00) is closed.
    assert!(
        call.said().contains("Je n'arrive pas à vous comprendre"),
        "{}",
        call.said()
    );
    assert!(call.parsed().hangup);
    let record = world.store().call("CA0002").await.unwrap().unwrap();
    assert_eq!(record.outcome.as_deref(), Some("failed"));
}

#[tokio::test]
async fn zero_reaches_the_switchboard_when_it_is_open_and_says_its_hours_otherwise() {
    let world = World::new(TestDb::sqlite().await).await;
    let (app, _) = town(&world).await;
    let mut call = Call::dial(&app, "CA0003", CALLER, TOWN_NUMBER).await;
    call.press("0").await;
    assert!(
        call.said()
            .contains("Il est ouvert du lundi au vendredi de 9 heures à midi"),
        "{}",
        call.said()
    );
    assert!(
        call.said().contains("Prendre rendez-vous"),
        "back to the menu"
    );
    world.clock.set(paris("2026-11-30", 10, 0));
    call.press("0").await;
    assert_eq!(call.parsed().dial.as_deref(), Some("+33465710099"));
    assert!(call.said().contains("Je vous passe un agent"));
    call.hang_up().await;
    let record = world.store().call("CA0003").await.unwrap().unwrap();
    assert_eq!(record.outcome.as_deref(), Some("transferred"));
}

#[tokio::test]
async fn a_wrong_code_then_the_right_one_books() {
    let world = World::new(TestDb::sqlite().await).await;
    let (app, twilio) = town(&world).await;
    let mut call = Call::dial(&app, "CA0004", CALLER, TOWN_NUMBER).await;
    // School: one person (not asked), the first free place, the first slot.
    for key in ["1", "2", "1", "1"] {
        call.press(key).await;
    }
    assert!(call.said().contains("Créneau gardé"), "{}", call.said());
    call.press("1").await;
    call.stay_silent().await; // no name said: the booking goes on
    assert!(call.said().contains("Tapez le code"), "{}", call.said());
    call.press("123456").await;
    assert!(
        call.said().starts_with("Ce code n'est pas le bon."),
        "{}",
        call.said()
    );
    call.press("9").await;
    assert!(
        call.said().starts_with("Un nouveau code vient de partir."),
        "{}",
        call.said()
    );
    app.deliver().await;
    let code = twilio.last_code(CALLER).unwrap();
    call.press(&code).await;
    assert!(
        call.said().contains("Rendez-vous confirmé"),
        "{}",
        call.said()
    );
    let a = world.all_appointments().await.remove(0);
    assert_eq!(a.status, Status::Confirmed);
    assert_eq!(a.citizen.name.as_str(), "Nom non donné (appel)");
}

#[tokio::test]
async fn hanging_up_mid_booking_frees_the_slot_at_once() {
    let world = World::new(TestDb::sqlite().await).await;
    let (app, _) = town(&world).await;
    let mut call = Call::dial(&app, "CA0005", CALLER, TOWN_NUMBER).await;
    for key in ["1", "2", "1", "1"] {
        call.press(key).await;
    }
    assert!(call.said().contains("Créneau gardé"), "{}", call.said());
    let held = world.all_appointments().await.remove(0);
    assert_eq!(held.effective_status(world.clock.now()), Status::Held);
    call.hang_up().await;
    let released = world.all_appointments().await.remove(0);
    assert_eq!(released.status, Status::Expired);
    let record = world.store().call("CA0005").await.unwrap().unwrap();
    assert_eq!(record.outcome.as_deref(), Some("abandoned"));
}

#[tokio::test]
async fn a_replayed_webhook_changes_nothing_twice() {
    let world = World::new(TestDb::sqlite().await).await;
    let (app, _) = town(&world).await;
    let mut call = Call::dial(&app, "CA0006", CALLER, TOWN_NUMBER).await;
    for key in ["1", "2", "1"] {
        call.press(key).await;
    }
    let question = call.parsed().action.unwrap();
    call.press("1").await; // holds the first slot
    let first = call.twiml.clone();
    // The provider sends the same request again.
    let again = app
        .post_twilio(
            &question,
            &[
                ("CallSid", "CA0006"),
                ("Digits", "1"),
                ("CallStatus", "in-progress"),
            ],
            Signature::Valid,
        )
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(world.all_appointments().await.len(), 1, "one hold, not two");
    // And a replay of the very first webhook.
    let replay = Call::dial(&app, "CA0006", CALLER, TOWN_NUMBER).await;
    assert_eq!(replay.twiml, first);
}

#[tokio::test]
async fn forged_or_unsigned_voice_webhooks_get_403() {
    let world = World::new(TestDb::sqlite().await).await;
    let (app, _) = town(&world).await;
    for signature in [Signature::Forged, Signature::Missing] {
        for path in [
            "/twilio/voice",
            "/twilio/voice/step?s=0",
            "/twilio/voice/status",
        ] {
            let response = app
                .post_twilio(
                    path,
                    &[("CallSid", "CA0007"), ("From", CALLER), ("To", TOWN_NUMBER)],
                    signature,
                )
                .await;
            assert_eq!(response.status(), 403, "{path}");
        }
    }
    assert!(world.store().call("CA0007").await.unwrap().is_none());
}

#[tokio::test]
async fn a_number_nobody_owns_gets_a_sentence_and_a_hang_up() {
    let world = World::new(TestDb::sqlite().await).await;
    let (app, _) = town(&world).await;
    let call = Call::dial(&app, "CA0008", CALLER, "+33465700000").await;
    assert!(call.said().contains("n'est relié à aucune mairie"));
    assert!(call.parsed().hangup);
}

async fn confirmed_for_caller(world: &World) -> guichet::domain::Appointment {
    let mut request = world.request(world.titres, paris("2026-12-01", 10, 0), 1);
    request.citizen.phone = Some(PhoneE164::parse(CALLER).unwrap());
    world
        .engine
        .book(&request, BookingMode::Confirmed)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_caller_cancels_with_a_code() {
    let world = World::new(TestDb::sqlite().await).await;
    let (app, twilio) = town(&world).await;
    let booked = confirmed_for_caller(&world).await;
    let mut call = Call::dial(&app, "CA0009", CALLER, TOWN_NUMBER).await;
    call.press("2").await;
    // Nothing of the appointment is said before the code proves the number is the caller's.
    assert!(call.said().contains("tapez le code"), "{}", call.said());
    assert!(!call.said().contains("décembre"), "{}", call.said());
    call.press("111111").await;
    assert!(
        call.said().starts_with("Ce code n'est pas le bon."),
        "{}",
        call.said()
    );
    app.deliver().await;
    let code = twilio.last_code(CALLER).unwrap();
    call.press(&code).await;
    assert!(
        call.said()
            .contains("Vous avez rendez-vous le mardi 1er décembre à 10 heures"),
        "{}",
        call.said()
    );
    call.press("1").await;
    assert!(
        call.said().contains("Pour annuler ce rendez-vous, tapez 1"),
        "{}",
        call.said()
    );
    call.press("1").await;
    assert!(
        call.said().contains("Votre rendez-vous est annulé."),
        "{}",
        call.said()
    );
    let now = world.store().appointment(booked.id).await.unwrap().unwrap();
    assert_eq!(now.status, Status::CancelledByCitizen);
}

#[tokio::test]
async fn a_caller_moves_with_a_code_to_a_chosen_day() {
    let world = World::new(TestDb::sqlite().await).await;
    let (app, twilio) = town(&world).await;
    let booked = confirmed_for_caller(&world).await;
    let mut call = Call::dial(&app, "CA0010", CALLER, TOWN_NUMBER).await;
    call.press("2").await;
    app.deliver().await;
    let code = twilio.last_code(CALLER).unwrap();
    call.press(&code).await;
    call.press("2").await;
    assert!(call.said().contains("Premiers créneaux"), "{}", call.said());
    call.press("4").await; // another day
    call.press("3").await; // type a date
    call.press("0412").await; // Friday 4 December
    assert!(
        call.said().contains("vendredi 4 décembre"),
        "{}",
        call.said()
    );
    call.press("1").await;
    assert!(
        call.said()
            .contains("Pour déplacer votre rendez-vous au vendredi 4 décembre"),
        "{}",
        call.said()
    );
    call.press("1").await;
    assert!(
        call.said()
            .contains("Votre rendez-vous est déplacé au vendredi 4 décembre"),
        "{}",
        call.said()
    );
    let old = world.store().appointment(booked.id).await.unwrap().unwrap();
    assert_eq!(old.status, Status::Moved);
    let all = world.all_appointments().await;
    let new = all.iter().find(|a| a.status == Status::Confirmed).unwrap();
    assert_eq!(new.starts_at.date_naive().to_string(), "2026-12-04");
}

#[tokio::test]
async fn the_menus_say_what_they_said() {
    let world = World::new(TestDb::sqlite().await).await;
    let (app, _) = town(&world).await;
    let mut call = Call::dial(&app, "CA0011", CALLER, TOWN_NUMBER).await;
    insta::assert_snapshot!("voice_welcome", call.twiml);
    call.press("1").await;
    insta::assert_snapshot!("voice_services", call.twiml);
    call.press("1").await;
    insta::assert_snapshot!("voice_persons", call.twiml);
    call.press("1").await;
    insta::assert_snapshot!("voice_places", call.twiml);
    call.press("1").await;
    insta::assert_snapshot!("voice_slots", call.twiml);
    call.press("1").await;
    insta::assert_snapshot!("voice_mobile", call.twiml);
    call.press("1").await;
    insta::assert_snapshot!("voice_name", call.twiml);
}

/// One call whose webhooks alternate between two instances on one PostgreSQL database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_alternating_between_two_instances_books_once() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let world = World::new(db).await;
    let twilio = FakeTwilio::start().await;
    // Neither has a secret key configured: the code one sends, the other checks, with the key
    // the database keeps for both.
    let instance = || {
        TestApp::spawn_with(
            &world.db,
            world.clock.clone(),
            crate::helpers::TestAppOptions {
                twilio: Some(twilio.clone()),
                key_from_database: true,
                ..Default::default()
            },
        )
    };
    let (first, second) = (instance().await, instance().await);
    let apps = [&first, &second];
    let mut call = Call::dial(apps[0], "CA0012", CALLER, TOWN_NUMBER).await;
    let keys = ["1", "1", "2", "1", "1", "1"];
    for (n, key) in keys.iter().enumerate() {
        call.app = apps[(n + 1) % 2];
        call.press(key).await;
    }
    call.app = apps[1];
    call.say_aloud("Paul Durand").await;
    first.deliver().await;
    let code = twilio.last_code(CALLER).unwrap();
    call.app = apps[0];
    call.press(&code).await;
    assert!(
        call.said().contains("Rendez-vous confirmé"),
        "{}",
        call.said()
    );
    let all = world.all_appointments().await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].status, Status::Confirmed);
}

#[test]
fn the_reader_refuses_bad_twiml() {
    assert!(read_voice_response("<Response><Gather><Dial>1</Dial></Gather></Response>").is_err());
    assert!(read_voice_response("<Response><Say>a</Response>").is_err());
    assert!(read_voice_response("<Response><Say>a &amp; b</Say><Hangup/></Response>").is_ok());
}

/// Terminal input that answers the code question with the last code the output showed.
struct Scripted {
    lines: std::collections::VecDeque<&'static str>,
    out: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl std::io::Read for Scripted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(line) = self.lines.pop_front() else {
            return Ok(0);
        };
        let line = if line == "CODE" {
            let shown = String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned();
            crate::fake_twilio::extract_code(&shown[shown.rfind("[SMS reçu]").unwrap_or(0)..])
                .unwrap_or_default()
        } else {
            line.to_owned()
        };
        let bytes = format!("{line}\n").into_bytes();
        buf[..bytes.len()].copy_from_slice(&bytes);
        Ok(bytes.len())
    }
}

struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guichet_call_books_from_a_terminal_and_shows_the_sms() {
    let world = World::new(TestDb::sqlite().await).await;
    let app = TestApp::spawn_with(
        &world.db,
        world.clock.clone(),
        crate::helpers::TestAppOptions {
            demo: true,
            outbox_worker: true,
            ..Default::default()
        },
    )
    .await;
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut input = std::io::BufReader::new(Scripted {
        lines: ["1", "1", "1", "1", "1", "1", "Paul Durand", "CODE"].into(),
        out: out.clone(),
    });
    let settings = guichet::voice::caller::CallSettings {
        base_url: app.address.clone(),
        public_url: crate::helpers::PUBLIC_URL.to_owned(),
        auth_token: crate::fake_twilio::AUTH_TOKEN.to_owned(),
        to: TOWN_NUMBER.to_owned(),
        from: CALLER.to_owned(),
    };
    let seconds = guichet::voice::caller::call(&settings, &mut input, &mut Shared(out.clone()))
        .await
        .unwrap();
    let shown = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
    assert!(
        shown.contains("« Mairie de Ville de testville, bonjour."),
        "{shown}"
    );
    assert!(
        shown.contains("[SMS reçu] Mairie de Ville de testville : votre code"),
        "{shown}"
    );
    assert!(shown.contains("Rendez-vous confirmé"), "{shown}");
    assert!(shown.contains("(fin de l'appel)"), "{shown}");
    assert!(seconds > 10.0);
    let a = world.all_appointments().await.remove(0);
    assert_eq!(a.status, Status::Confirmed);
    assert_eq!(a.citizen.name.as_str(), "Paul Durand");
}

#[tokio::test]
async fn the_demo_phone_page_talks_to_the_voice_menu() {
    let world = World::new(TestDb::sqlite().await).await;
    let demo = TestApp::spawn_with(
        &world.db,
        world.clock.clone(),
        crate::helpers::TestAppOptions {
            demo: true,
            ..Default::default()
        },
    )
    .await;
    let page = demo.get("/dev/phone").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("Téléphone de démonstration") && html.contains(TOWN_NUMBER));
    let call = |body: serde_json::Value| {
        let demo = &demo;
        async move {
            demo.client
                .post(format!("{}/dev/phone/call", demo.address))
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let first = call(serde_json::json!({"sid": "CAweb", "from": CALLER, "to": TOWN_NUMBER})).await;
    assert!(
        first["answer"]["says"][0]
            .as_str()
            .unwrap()
            .starts_with("Mairie")
    );
    let url = first["answer"]["action"].as_str().unwrap().to_owned();
    let second = call(serde_json::json!({"sid": "CAweb", "from": CALLER, "to": TOWN_NUMBER, "url": url, "digits": "1"})).await;
    assert!(
        second["answer"]["says"]
            .to_string()
            .contains("Quelle démarche ?"),
        "{second}"
    );
    // Outside demo mode there is no such page.
    let (app, _) = town(&world).await;
    assert_eq!(app.get("/dev/phone").await.status(), 404);
}

#[tokio::test]
async fn a_commune_speaks_with_its_own_voice_and_its_own_flow() {
    let world = World::new(TestDb::sqlite().await).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("voice-flows")).unwrap();
    std::fs::write(
        dir.path().join("voice-flows/courte.toml"),
        "start = \"fin\"\n[nodes.fin]\nstep = \"goodbye\"\nprompt = \"au_revoir\"\n",
    )
    .unwrap();
    world
        .store()
        .set_voice_settings(
            world.commune,
            &guichet::store::VoiceSettings {
                voice: "Polly.Mathieu".into(),
                language: "fr-FR".into(),
                flow: "courte".into(),
            },
        )
        .await
        .unwrap();
    let app = TestApp::spawn_with(
        &world.db,
        world.clock.clone(),
        crate::helpers::TestAppOptions {
            voice_dir: Some(dir.path().display().to_string()),
            ..Default::default()
        },
    )
    .await;
    let call = Call::dial(&app, "CA0013", CALLER, TOWN_NUMBER).await;
    assert!(
        call.twiml.contains("voice=\"Polly.Mathieu\""),
        "{}",
        call.twiml
    );
    assert_eq!(call.said(), "Au revoir.");
    assert!(call.parsed().hangup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_identical_webhooks_at_once_act_once() {
    let world = World::new(TestDb::sqlite().await).await;
    let (app, _) = town(&world).await;
    let mut call = Call::dial(&app, "CA0014", CALLER, TOWN_NUMBER).await;
    for key in ["1", "2", "1"] {
        call.press(key).await;
    }
    let action = call.parsed().action.unwrap();
    let post = || {
        app.post_twilio(
            &action,
            &[
                ("CallSid", "CA0014"),
                ("Digits", "1"),
                ("CallStatus", "in-progress"),
            ],
            Signature::Valid,
        )
    };
    let (a, b) = tokio::join!(post(), post());
    let (a, b) = (a.text().await.unwrap(), b.text().await.unwrap());
    assert_eq!(a, b, "both get the one answer");
    assert!(a.contains("Créneau gardé"), "{a}");
    assert_eq!(world.all_appointments().await.len(), 1, "one hold, not two");
}

#[tokio::test]
async fn a_switchboard_that_does_not_answer_brings_the_caller_back_to_the_menu() {
    let world = World::new(TestDb::sqlite().await).await;
    let (app, _) = town(&world).await;
    world.clock.set(paris("2026-11-30", 10, 0));
    let mut call = Call::dial(&app, "CA0015", CALLER, TOWN_NUMBER).await;
    call.press("3").await;
    let read = read_voice_response(&call.twiml).unwrap();
    let (number, action) = read.dial.expect("a transfer");
    assert_eq!(number, "+33465710099");
    let response = app
        .post_twilio(
            &action,
            &[
                ("CallSid", "CA0015"),
                ("DialCallStatus", "no-answer"),
                ("CallStatus", "in-progress"),
            ],
            Signature::Valid,
        )
        .await;
    let twiml = response.text().await.unwrap();
    let said = parse(&twiml).says.join(" ");
    assert!(
        said.starts_with("Le standard ne répond pas pour le moment."),
        "{said}"
    );
    assert!(
        said.contains("Prendre rendez-vous : tapez 1"),
        "back to the menu: {said}"
    );
    let record = world.store().call("CA0015").await.unwrap().unwrap();
    assert_eq!(record.outcome, None, "not counted as transferred");
}
