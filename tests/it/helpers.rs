//! Shared test helpers: fresh databases (an SQLite file in a temporary directory, or a PostgreSQL
//! schema of its own), a small commune to book in, a frozen clock, and `spawn_app()` serving the
//! whole application on port 0.
//!
//! PostgreSQL tests run whenever PostgreSQL answers at `GUICHET_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). If it does not answer they are skipped with a
//! message — except when `CI` is set, where they fail: CI must never pass without them.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Europe::Paris;
use guichet::App;
use guichet::booking::{BookingMode, BookingRequest, Engine};
use guichet::config::Config;
use guichet::domain::{
    Appointment, Category, Channel, Channels, Citizen, CitizenName, Clock, CommuneId, Email,
    LocationId, ManualClock, MinuteOfDay, PhoneE164, PlanningId, ServiceId, Weekdays, WeeklyHours,
};
use guichet::store::{
    self, NewCommune, NewLocation, NewOpeningRule, NewPlanning, NewService, Store,
};
use sqlx::Connection;
use std::sync::Arc;
use tempfile::TempDir;

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database for one test; dropping it removes the SQLite file.
pub struct TestDb {
    pub store: Arc<dyn Store>,
    pub url: String,
    pub backend: &'static str,
    pub _dir: Option<TempDir>,
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("guichet.db").display());
        let store = store::connect(&url).await.expect("SQLite store");
        TestDb {
            store,
            url,
            backend: "sqlite",
            _dir: Some(dir),
        }
    }

    /// A fresh schema in the test PostgreSQL database, or `None` (outside CI) if PostgreSQL
    /// does not answer.
    pub async fn postgres() -> Option<TestDb> {
        let url = postgres_schema_url().await?;
        let store = store::connect(&url).await.expect("PostgreSQL store");
        Some(TestDb {
            store,
            url,
            backend: "postgres",
            _dir: None,
        })
    }

    /// The same database and store, for a second commune in one test.
    pub fn shared(&self) -> TestDb {
        TestDb {
            store: self.store.clone(),
            url: self.url.clone(),
            backend: self.backend,
            _dir: None,
        }
    }

    /// Another store on the same database, as a second guichet instance would open it.
    pub async fn reopen(&self) -> Arc<dyn Store> {
        store::connect(&self.url).await.expect("second store")
    }
}

fn base_pg_url() -> String {
    std::env::var("GUICHET_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Creates a schema of its own for one test and returns a URL whose connections use it.
/// Schemas left by earlier runs (older than an hour) are dropped on the way.
pub async fn postgres_schema_url() -> Option<String> {
    let base = base_pg_url();
    let mut conn = match sqlx::PgConnection::connect(&base).await {
        Ok(conn) => conn,
        Err(e) if in_ci() => panic!("CI is set but PostgreSQL does not answer at {base}: {e}"),
        Err(e) => {
            eprintln!("skipping a PostgreSQL test: no PostgreSQL at {base} ({e})");
            return None;
        }
    };
    // Extensions are per database: create btree_gist once, under a lock, so that concurrent
    // tests do not race to create it.
    sqlx::query("SELECT pg_advisory_lock(7410)")
        .execute(&mut conn)
        .await
        .expect("advisory lock");
    sqlx::query("CREATE EXTENSION IF NOT EXISTS btree_gist WITH SCHEMA public")
        .execute(&mut conn)
        .await
        .expect("btree_gist extension");
    let now = Utc::now().timestamp();
    let stale: Vec<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'gt\\_%'")
            .fetch_all(&mut conn)
            .await
            .expect("list schemas");
    for schema in stale {
        let created = schema
            .split('_')
            .nth(1)
            .and_then(|s| s.parse::<i64>().ok())
            .unwrap_or(0);
        if created < now - 3600 {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE"
            )))
            .execute(&mut conn)
            .await;
        }
    }
    sqlx::query("SELECT pg_advisory_unlock(7410)")
        .execute(&mut conn)
        .await
        .expect("advisory unlock");
    let schema = format!("gt_{now}_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .expect("create schema");
    let separator = if base.contains('?') { '&' } else { '?' };
    Some(format!(
        "{base}{separator}options[search_path]={schema}%2Cpublic"
    ))
}

/// Runs a test body on SQLite and on PostgreSQL: `both_backends!(name, body_fn)` defines
/// `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body($crate::helpers::TestDb::sqlite().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(db) = $crate::helpers::TestDb::postgres().await {
                    super::$body(db).await;
                }
            }
        }
    };
}

/// Monday 30 November 2026, 08:00 in Paris.
pub fn monday_morning() -> DateTime<Utc> {
    "2026-11-30T07:00:00Z".parse().unwrap()
}

/// A local Paris time as UTC.
pub fn paris(date: &str, h: u32, m: u32) -> DateTime<Utc> {
    let date: NaiveDate = date.parse().unwrap();
    date.and_hms_opt(h, m, 0)
        .unwrap()
        .and_local_timezone(Paris)
        .single()
        .unwrap()
        .with_timezone(&Utc)
}

/// "Testville": two locations; a CNI/passport service (20 min, up to 3 persons) and a school
/// service (30 min); planning `counter` (1 seat) at the town hall and `annex` (2 seats) at the
/// annex, both open Monday to Friday 9:00–12:00 every 20 minutes, the annex also for school.
pub struct World {
    pub db: TestDb,
    pub clock: ManualClock,
    pub engine: Engine,
    pub commune: CommuneId,
    pub town_hall: LocationId,
    pub annex: LocationId,
    pub titres: ServiceId,
    pub school: ServiceId,
    pub counter: PlanningId,
    pub annex_planning: PlanningId,
}

pub struct WorldOptions {
    pub slug: &'static str,
    pub phone_number: &'static str,
    pub counter_capacity: i32,
    pub annex_capacity: i32,
    pub allow_multiple: bool,
}

impl Default for WorldOptions {
    fn default() -> Self {
        Self {
            slug: "testville",
            phone_number: "+33465719999",
            counter_capacity: 1,
            annex_capacity: 2,
            allow_multiple: false,
        }
    }
}

impl World {
    pub async fn new(db: TestDb) -> World {
        Self::with(db, WorldOptions::default()).await
    }

    pub async fn with(db: TestDb, options: WorldOptions) -> World {
        let clock = ManualClock::new(monday_morning());
        let ids = seed_commune(db.store.as_ref(), &options).await;
        let engine = Engine::new(
            db.store.clone(),
            Arc::new(clock.clone()) as Arc<dyn Clock>,
            Duration::minutes(10),
        );
        World {
            db,
            clock,
            engine,
            commune: ids.0,
            town_hall: ids.1,
            annex: ids.2,
            titres: ids.3,
            school: ids.4,
            counter: ids.5,
            annex_planning: ids.6,
        }
    }

    pub fn store(&self) -> &dyn Store {
        self.db.store.as_ref()
    }

    /// A booking request for `n`-th demo-like citizen (distinct phone per `n`).
    pub fn request(&self, service: ServiceId, start: DateTime<Utc>, n: u32) -> BookingRequest {
        BookingRequest {
            commune: self.commune,
            service,
            start,
            location: None,
            persons: 1,
            citizen: citizen(n),
            channel: Channel::Web,
        }
    }

    pub async fn hold(&self, start: DateTime<Utc>, n: u32) -> Appointment {
        self.engine
            .book(&self.request(self.titres, start, n), BookingMode::Hold)
            .await
            .expect("hold")
    }

    pub async fn all_appointments(&self) -> Vec<Appointment> {
        self.store()
            .appointments(
                self.commune,
                "2000-01-01T00:00:00Z".parse().unwrap(),
                "2100-01-01T00:00:00Z".parse().unwrap(),
            )
            .await
            .unwrap()
    }
}

/// Citizen number `n`: `+336399xxxxx`, `citoyen{n}@exemple.fr`.
pub fn citizen(n: u32) -> Citizen {
    Citizen {
        name: CitizenName::parse(&format!("Citoyen {n}")).unwrap(),
        phone: Some(PhoneE164::parse(&format!("+3363998{:04}", n % 10_000)).unwrap()),
        email: Some(Email::parse(&format!("citoyen{n}@exemple.fr")).unwrap()),
        ants_application_ids: vec![],
    }
}

async fn seed_commune(
    store: &dyn Store,
    o: &WorldOptions,
) -> (
    CommuneId,
    LocationId,
    LocationId,
    ServiceId,
    ServiceId,
    PlanningId,
    PlanningId,
) {
    let commune = store
        .insert_commune(&NewCommune {
            slug: o.slug.into(),
            name: format!("Ville de {}", o.slug),
            insee_code: "74999".into(),
            timezone: Paris,
            population: 12_000,
            phone_numbers: vec![o.phone_number.into()],
            switchboard_number: Some("+33465710099".into()),
            // The switchboard answers on weekdays from 9:00 to 12:00.
            switchboard_hours: WeeklyHours(vec![guichet::domain::WeeklyRange {
                weekdays: Weekdays::MONDAY_TO_FRIDAY,
                start: MinuteOfDay::hm(9, 0),
                end: MinuteOfDay::hm(12, 0),
            }]),
            reminder_delay_hours: 48,
            quiet_start: MinuteOfDay::hm(20, 0),
            quiet_end: MinuteOfDay::hm(8, 0),
            sms_sender: "Testville".into(),
            allow_multiple_per_category: o.allow_multiple,
            sms_daily_budget: 300,
            allow_foreign_mobiles: false,
        })
        .await
        .unwrap();
    let location = |name: &str| NewLocation {
        commune_id: commune,
        name: name.into(),
        address: "1 place de la Mairie".into(),
        postcode: "74999".into(),
        city: "Testville".into(),
        access_notes: String::new(),
    };
    let town_hall = store
        .insert_location(&location("Hôtel de ville"))
        .await
        .unwrap();
    let annex = store.insert_location(&location("Annexe")).await.unwrap();
    let service = |name: &str, category, minutes, max_persons| NewService {
        commune_id: commune,
        name: name.into(),
        spoken_name: name.to_lowercase(),
        category,
        duration_minutes: minutes,
        max_persons,
        min_notice_minutes: 0,
        horizon_days: 60,
        channels: Channels::ALL,
        what_to_bring: "Une pièce d'identité.".into(),
    };
    let titres = store
        .insert_service(&service(
            "Carte d'identité et passeport",
            Category::Titres,
            20,
            3,
        ))
        .await
        .unwrap();
    let school = store
        .insert_service(&service("Inscription scolaire", Category::Scolaire, 30, 1))
        .await
        .unwrap();
    let counter = store
        .insert_planning(&NewPlanning {
            commune_id: commune,
            name: "Guichet".into(),
            capacity: o.counter_capacity,
        })
        .await
        .unwrap();
    let annex_planning = store
        .insert_planning(&NewPlanning {
            commune_id: commune,
            name: "Annexe".into(),
            capacity: o.annex_capacity,
        })
        .await
        .unwrap();
    let rule = |planning, location, services: Vec<ServiceId>| NewOpeningRule {
        planning_id: planning,
        location_id: location,
        weekdays: Weekdays::MONDAY_TO_FRIDAY,
        start: MinuteOfDay::hm(9, 0),
        end: MinuteOfDay::hm(12, 0),
        step_minutes: 20,
        valid_from: "2026-01-01".parse().unwrap(),
        valid_until: None,
        service_ids: services,
    };
    store
        .insert_opening_rule(&rule(counter, town_hall, vec![titres]))
        .await
        .unwrap();
    store
        .insert_opening_rule(&rule(annex_planning, annex, vec![titres, school]))
        .await
        .unwrap();
    (
        commune,
        town_hall,
        annex,
        titres,
        school,
        counter,
        annex_planning,
    )
}

/// A running guichet on port 0 over `db`, with a frozen clock.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub clock: ManualClock,
    pub app: App,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

/// How a test app talks to the outside world.
#[derive(Default)]
pub struct TestAppOptions {
    /// SMS go to this local Twilio-compatible server (otherwise to the console).
    pub twilio: Option<crate::fake_twilio::FakeTwilio>,
    /// E-mails go to this local SMTP server (otherwise to the console).
    pub smtp: Option<crate::smtp_server::SmtpServer>,
    /// `guichet demo` behaviour (dev pages, open platform routes).
    pub demo: bool,
    pub admin_token: Option<&'static str>,
    /// Holds and code sends allowed per address and hour; unlimited when absent (every test
    /// client comes from 127.0.0.1).
    pub per_ip_limits: Option<(u32, u32)>,
    /// Runs the outbox worker, as a real server does (tests otherwise call `deliver`).
    pub outbox_worker: bool,
    /// Call flows and prompts of the communes' own.
    pub voice_dir: Option<String>,
    /// No secret key configured: the one-time-code key is the one the database keeps for
    /// every instance (as `guichet serve` without one), and the app opens its own store.
    pub key_from_database: bool,
}

pub const PUBLIC_URL: &str = "https://rdv.guichet-mairies.fr";

impl TestApp {
    pub async fn spawn(db: &TestDb, clock: ManualClock) -> TestApp {
        Self::spawn_with(db, clock, TestAppOptions::default()).await
    }

    /// The outbox does not run by itself: tests call [`TestApp::deliver`], so what was sent
    /// when is decided by the test, with its frozen clock.
    pub async fn spawn_with(db: &TestDb, clock: ManualClock, options: TestAppOptions) -> TestApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let mut config = Config {
            database_url: db.url.clone(),
            // Links in messages as in production; signatures are checked against it too.
            public_url: PUBLIC_URL.to_owned(),
            secret_key: Some("test-secret-key".to_owned().into()),
            twilio_auth_token: Some(crate::fake_twilio::AUTH_TOKEN.to_owned().into()),
            admin_token: options.admin_token.map(|t| t.to_owned().into()),
            outbox_worker: options.outbox_worker,
            voice_dir: options.voice_dir.clone(),
            holds_per_ip_per_hour: options.per_ip_limits.map_or(0, |l| l.0),
            codes_per_ip_per_hour: options.per_ip_limits.map_or(0, |l| l.1),
            ..Config::default()
        };
        if let Some(twilio) = &options.twilio {
            config.twilio_account_sid = Some(crate::fake_twilio::ACCOUNT_SID.to_owned());
            config.twilio_api_base = twilio.base.clone();
            config.twilio_from = Some(crate::fake_twilio::FROM.to_owned());
            config.twilio_timeout_seconds = 1;
        }
        if let Some(smtp) = &options.smtp {
            config.smtp_url = Some(smtp.url().into());
            config.mail_from = Some("Mairie <mairie@guichet.test>".to_owned());
        }
        let app = if options.key_from_database {
            config.secret_key = None;
            App::connect(config, Arc::new(clock.clone()), options.demo)
                .await
                .expect("the app opens its database")
        } else {
            App::new(
                db.store.clone(),
                Arc::new(clock.clone()) as Arc<dyn Clock>,
                config,
                options.demo,
            )
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = app.clone();
        tokio::spawn(async move {
            served
                .serve(listener, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        TestApp {
            address,
            client: http_client(),
            clock,
            app,
            shutdown: Some(tx),
        }
    }

    /// A test app whose SMS go to a fresh local Twilio-compatible server.
    pub async fn with_twilio(
        db: &TestDb,
        clock: ManualClock,
    ) -> (TestApp, crate::fake_twilio::FakeTwilio) {
        let twilio = crate::fake_twilio::FakeTwilio::start().await;
        let options = TestAppOptions {
            twilio: Some(twilio.clone()),
            ..TestAppOptions::default()
        };
        (Self::spawn_with(db, clock, options).await, twilio)
    }

    /// Sends everything due now; returns how many notifications were handled.
    pub async fn deliver(&self) -> usize {
        self.app.outbox().run_until_idle().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .unwrap()
    }

    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self.get(path).await;
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    pub async fn post_json(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.post_json_keyed(path, body, None).await
    }

    /// POST with an `Idempotency-Key`.
    pub async fn post_json_keyed(
        &self,
        path: &str,
        body: serde_json::Value,
        key: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let mut request = self
            .client
            .post(format!("{}{path}", self.address))
            .json(&body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// A form POST signed like Twilio signs its webhooks.
    pub async fn post_twilio(
        &self,
        path_and_query: &str,
        params: &[(&str, &str)],
        signature: Signature,
    ) -> reqwest::Response {
        let owned: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let url = format!("{PUBLIC_URL}{path_and_query}");
        let mut request = self
            .client
            .post(format!("{}{path_and_query}", self.address))
            .form(&owned);
        match signature {
            Signature::Valid => {
                let sig =
                    guichet::voice::signature::sign(crate::fake_twilio::AUTH_TOKEN, &url, &owned);
                request = request.header("X-Twilio-Signature", sig);
            }
            Signature::Forged => {
                let sig = guichet::voice::signature::sign("not-the-token", &url, &owned);
                request = request.header("X-Twilio-Signature", sig);
            }
            Signature::Missing => {}
        }
        request.send().await.unwrap()
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Signature {
    Valid,
    Forged,
    Missing,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// An HTTP client for tests (TLS provider installed first).
pub fn http_client() -> reqwest::Client {
    guichet::install_crypto_provider();
    reqwest::Client::new()
}
