//! The rush load tool: N citizens race through hold → code → confirm for M newly opened slots.
//!
//! It starts a real guichet server (HTTP on a local port, the outbox worker sending codes by SMS)
//! on a fresh database — SQLite by default, or PostgreSQL with `--postgres URL` — opens exactly M
//! slots for tomorrow, runs a local SMS provider speaking Twilio's contract from which each
//! citizen reads its code, and lets the citizens loose: each lists free slots, picks one at
//! random, holds it, waits for its code, confirms; on "slot taken" it looks again. At the end it
//! counts bookings and checks every planning for overbooking in the database, and prints
//! throughput and latency percentiles.
//!
//! The server starts cold: its first requests open its database connections and prepare their
//! statements in the rush. `--warm-up N` first lets N other citizens book N slots of the day
//! after, as on a server that has been serving when a commune opens its slots at 8:00.
//! `--history N` first gives each planning N past appointments, as on a platform that has
//! served for years.
//!
//! cargo run --release --example load -- --citizens 1000 --slots 100
//! cargo run --release --example load -- --citizens 10000 --slots 10000 --postgres postgres://postgres@127.0.0.1/test

use chrono::Utc;
use guichet::App;
use guichet::config::Config;
use guichet::domain::{Clock, SystemClock};
use guichet::store;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};
use tokio::sync::Semaphore;

#[path = "support/mod.rs"]
mod support;

use support::{ACCOUNT_SID, Phones};

struct Args {
    citizens: usize,
    slots: usize,
    concurrency: usize,
    postgres: Option<String>,
    warm_up: usize,
    history: usize,
}

fn args() -> Args {
    let mut args = Args {
        citizens: 1000,
        slots: 100,
        concurrency: 200,
        postgres: None,
        warm_up: 0,
        history: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--citizens" => args.citizens = value().parse().expect("--citizens N"),
            "--slots" => args.slots = value().parse().expect("--slots M"),
            "--concurrency" => args.concurrency = value().parse().expect("--concurrency C"),
            "--postgres" => args.postgres = Some(value()),
            "--warm-up" => args.warm_up = value().parse().expect("--warm-up N"),
            "--history" => args.history = value().parse().expect("--history N"),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(
        args.citizens + args.warm_up <= 10_000,
        "citizens (and those of the warm-up) use the 10,000 fiction numbers 06 39 98 xx xx"
    );
    args
}

/// The database to rush, and on PostgreSQL the schema made for the run (dropped at the end).
async fn database_url(
    postgres: &Option<String>,
    dir: &std::path::Path,
) -> (String, Option<String>) {
    match postgres {
        None => (format!("sqlite://{}", dir.join("load.db").display()), None),
        Some(url) => {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(url).await.expect("PostgreSQL");
            let schema = format!("load_{}", Utc::now().timestamp());
            sqlx::query("CREATE EXTENSION IF NOT EXISTS btree_gist")
                .execute(&mut conn)
                .await
                .expect("btree_gist");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .execute(&mut conn)
                .await
                .expect("schema");
            let sep = if url.contains('?') { '&' } else { '?' };
            (
                format!("{url}{sep}options[search_path]={schema}%2Cpublic"),
                Some(schema),
            )
        }
    }
}

/// What a citizen reads of a listed slot (read as such: this tool shares the machine with the
/// server, and a citizen's phone would not spend the server's CPU on the rest).
#[derive(serde::Deserialize)]
struct Listed {
    start: String,
    location: i64,
}

#[derive(Default)]
struct Stats {
    slots_ms: Vec<f64>,
    hold_ms: Vec<f64>,
    /// The holds answered 201: a rush's slowest, written one batch after another.
    held_ms: Vec<f64>,
    confirm_ms: Vec<f64>,
    confirmed: usize,
    no_slot: usize,
    taken_retries: usize,
    errors: HashMap<String, usize>,
}

/// What a citizen books: the service, on that day.
#[derive(Clone, Copy)]
struct Target {
    service: i64,
    day: chrono::NaiveDate,
}

async fn citizen(
    n: usize,
    client: reqwest::Client,
    base: String,
    target: Target,
    phones: Phones,
    stats: Arc<Mutex<Stats>>,
) {
    let Target { service, day } = target;
    let phone = format!("+3363998{n:04}");
    let mut code = phones.watch(&phone);
    let fail = |reason: String| {
        *stats.lock().unwrap().errors.entry(reason).or_default() += 1;
    };
    // Like a person with the list on screen: pick one at random; if someone else got it, pick
    // another from the same list; after three misses, look the list up again.
    let mut list: Vec<Listed> = Vec::new();
    let mut attempts = 0;
    let mut misses = 0;
    let held = loop {
        attempts += 1;
        if attempts > 50 {
            return fail("gave up after 50 tries".into());
        }
        if list.is_empty() || misses >= 3 {
            misses = 0;
            let t = Instant::now();
            let slots: Vec<Listed> = match client
                .get(format!(
                    "{base}/api/v1/communes/ruee/slots?service={service}&from={day}&to={day}&limit=100"
                ))
                .send()
                .await
            {
                Ok(r) => r.json().await.unwrap_or_default(),
                Err(e) => return fail(format!("slots: {e}")),
            };
            stats
                .lock()
                .unwrap()
                .slots_ms
                .push(t.elapsed().as_secs_f64() * 1000.0);
            list = slots;
            if list.is_empty() {
                stats.lock().unwrap().no_slot += 1;
                return;
            }
        }
        let pick = list.swap_remove(rand::random_range(0..list.len()));
        let t = Instant::now();
        let response = match client
            .post(format!("{base}/api/v1/communes/ruee/appointments"))
            .json(
                &json!({"service": service, "start": pick.start, "location": pick.location,
                          "name": format!("Usager {n}"), "phone": phone}),
            )
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return fail(format!("hold: {e}")),
        };
        let status = response.status().as_u16();
        let held: Value = response.json().await.unwrap_or(Value::Null);
        {
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            let mut stats = stats.lock().unwrap();
            stats.hold_ms.push(ms);
            if status == 201 {
                stats.held_ms.push(ms);
            }
        }
        match (status, held["code"].as_str()) {
            (201, _) => break held,
            (409, Some("slot_taken")) | (422, Some("slot_unavailable")) => {
                stats.lock().unwrap().taken_retries += 1;
                misses += 1;
            }
            (s, c) => return fail(format!("hold {s} {}", c.unwrap_or(""))),
        }
    };
    {
        let id = held["id"].as_str().unwrap_or_default().to_owned();
        let digits =
            match tokio::time::timeout(StdDuration::from_secs(60), code.wait_for(|c| c.is_some()))
                .await
            {
                Ok(Ok(value)) => value.clone().unwrap_or_default(),
                _ => return fail("no code within 60 s".into()),
            };
        let t = Instant::now();
        let response = client
            .post(format!("{base}/api/v1/appointments/{id}/confirm"))
            .json(&json!({"code": digits}))
            .send()
            .await;
        stats
            .lock()
            .unwrap()
            .confirm_ms
            .push(t.elapsed().as_secs_f64() * 1000.0);
        match response {
            Ok(r) if r.status() == 200 => stats.lock().unwrap().confirmed += 1,
            Ok(r) => {
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                fail(format!(
                    "confirm {status} {}",
                    body["code"].as_str().unwrap_or("")
                ));
            }
            Err(e) => fail(format!("confirm: {e}")),
        }
    }
}

/// Citizens numbered `numbers` race for `target`, `concurrency` at a time.
async fn run_citizens(
    numbers: std::ops::Range<usize>,
    concurrency: usize,
    client: &reqwest::Client,
    base: &str,
    target: Target,
    phones: &Phones,
    stats: &Arc<Mutex<Stats>>,
) {
    let gate = Arc::new(Semaphore::new(concurrency));
    let mut tasks = Vec::new();
    for n in numbers {
        let permit = gate.clone().acquire_owned().await.unwrap();
        let (client, base, phones, stats) = (
            client.clone(),
            base.to_owned(),
            phones.clone(),
            stats.clone(),
        );
        tasks.push(tokio::spawn(async move {
            citizen(n, client, base, target, phones, stats).await;
            drop(permit);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::main]
async fn main() {
    let args = args();
    guichet::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (url, schema) = database_url(&args.postgres, dir.path()).await;
    let store = store::connect(&url).await.expect("database");
    let mut commune = support::open_slots(store.as_ref(), args.slots).await;
    let rush = Target {
        service: commune.service,
        day: commune.day,
    };
    let warm_up = Target {
        day: commune.day + chrono::Duration::days(1),
        ..rush
    };
    if args.warm_up > 0 {
        support::add_slots(store.as_ref(), &mut commune, args.warm_up, warm_up.day).await;
    }
    if args.history > 0 {
        support::add_history(store.as_ref(), &commune, args.history).await;
        println!(
            "history: {} past appointments on each planning",
            args.history
        );
    }

    // The local SMS provider.
    let (sms_base, phones) = support::sms_provider().await;

    // guichet itself, on a runtime of its own, as `guichet serve` would run in a process of its
    // own (as many worker threads as cores): the citizens' clients and the SMS provider do not
    // queue in front of its requests, and a citizen's wait is the server's, not this tool's.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = Config {
        database_url: url.clone(),
        public_url: base.clone(),
        twilio_account_sid: Some(ACCOUNT_SID.into()),
        twilio_auth_token: Some("load".to_owned().into()),
        twilio_api_base: sms_base,
        twilio_from: Some("+33465710000".into()),
        secret_key: Some("load-test".to_owned().into()),
        // Every simulated citizen comes from 127.0.0.1.
        holds_per_ip_per_hour: 0,
        codes_per_ip_per_hour: 0,
        ..Config::default()
    };
    let server = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("guichet")
        .build()
        .unwrap();
    let (ready, serving) = tokio::sync::oneshot::channel();
    server.spawn(async move {
        // Its own store (connections, and SQLite's writer) belongs to its runtime.
        let store = store::connect(&config.database_url)
            .await
            .expect("database");
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let app = App::new(
            store,
            Arc::new(SystemClock) as Arc<dyn Clock>,
            config,
            false,
        );
        // What `serve` does before its first request (the numbering tables, tens of
        // milliseconds), done before the rush begins: the rush comes to a server that has
        // started, not to one still starting.
        tokio::task::spawn_blocking(guichet::domain::PhoneE164::warm_up)
            .await
            .unwrap();
        ready.send(()).unwrap();
        app.serve(listener, std::future::pending()).await.unwrap();
    });
    serving.await.expect("guichet started");

    println!(
        "rush on {}: {} citizens, {} slots, {} at a time",
        if args.postgres.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        args.citizens,
        args.slots,
        args.concurrency
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .unwrap();
    if args.warm_up > 0 {
        // A server that has been serving, as when a commune opens its slots at 8:00: its
        // connections open, its statements prepared. Other citizens book the day after.
        let stats = Arc::new(Mutex::new(Stats::default()));
        let numbers = 10_000 - args.warm_up..10_000;
        run_citizens(
            numbers,
            args.concurrency,
            &client,
            &base,
            warm_up,
            &phones,
            &stats,
        )
        .await;
        let s = stats.lock().unwrap();
        println!(
            "warm-up: {} citizens booked {} of {} slots the day after (not counted below)",
            args.warm_up, s.confirmed, args.warm_up
        );
    }
    let stats = Arc::new(Mutex::new(Stats::default()));
    let cpu = support::CpuMeter::start();
    let started = Instant::now();
    run_citizens(
        0..args.citizens,
        args.concurrency,
        &client,
        &base,
        rush,
        &phones,
        &stats,
    )
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut s = std::mem::take(&mut *stats.lock().unwrap());
    let cpu = cpu.summary("during the rush", s.confirmed);

    // Overbooking, counted in the database: seats of a planning never overlap, and no more
    // appointments take a slot than it has seats.
    let (overbooked, confirmed_in_db) = support::overbooking(store.as_ref(), &commune).await;

    println!(
        "confirmed bookings: {} (in the database: {confirmed_in_db}) for {} slots",
        s.confirmed, args.slots
    );
    println!("overbooked slots:   {overbooked}");
    println!(
        "turned away (no slot left): {}   retries after \"slot taken\": {}",
        s.no_slot, s.taken_retries
    );
    if !s.errors.is_empty() {
        println!("errors: {:?}", s.errors);
    }
    println!(
        "wall time {elapsed:.2} s   throughput {:.0} confirmed bookings/s",
        s.confirmed as f64 / elapsed
    );
    if let Some(cpu) = cpu {
        println!("{cpu}");
    }
    // Server side: the Prometheus histogram guichet keeps per route (bucket bounds), the
    // warm-up's requests included.
    support::print_server_side(
        &client,
        &base,
        &[
            ("/api/v1/communes/{slug}/slots", "GET slots"),
            ("/api/v1/communes/{slug}/appointments", "POST hold"),
            ("/api/v1/appointments/{id}/confirm", "POST confirm"),
        ],
    )
    .await;
    println!("client side (includes queueing in this process):");
    for (name, values) in [
        ("GET slots", &mut s.slots_ms),
        ("POST hold", &mut s.hold_ms),
        ("  of which held", &mut s.held_ms),
        ("POST confirm", &mut s.confirm_ms),
    ] {
        let count = values.len();
        println!(
            "{name:<15} n={count:<6} p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms",
            support::percentile(values, 0.5),
            support::percentile(values, 0.99),
            support::percentile(values, 1.0)
        );
    }
    server.shutdown_background();
    if let (Some(admin), Some(schema)) = (&args.postgres, schema) {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(admin)
            .await
            .expect("PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&mut conn)
            .await
            .expect("drop the run's schema");
    }
}
