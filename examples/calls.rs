//! The call load tool: N callers book by telephone, C calls at the same time, through the real
//! voice webhooks of a running guichet (signed as the provider signs them), each reading its
//! code from a local SMS provider speaking Twilio's contract. A call: incoming → 1 (book) → one
//! of the two slots read out (again if it was just taken) → 1 (this mobile) → a name said → the
//! code → hang-up. It prints bookings, overbooking counted in the database, and the webhook
//! latency server-side (guichet's histogram) and client-side.
//!
//! Callers take their time as people do: after each answer they wait while it is spoken (150
//! words a minute) times `--pace` (1 is real time; the default 0.1 plays calls ten times
//! faster than life, so each call leaves the server ten times less time between webhooks),
//! and the first calls come in over the first few seconds rather than all at once.
//!
//! cargo run --release --example calls -- --calls 1000 --concurrency 200 [--pace 0.1]

#[path = "support/mod.rs"]
mod support;

use guichet::App;
use guichet::config::Config;
use guichet::domain::{Clock, SystemClock};
use guichet::store;
use guichet::voice::signature;
use guichet::voice::twiml::read_voice_response;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use support::{ACCOUNT_SID, Phones, TOWN_NUMBER};
use tokio::sync::Semaphore;

const AUTH_TOKEN: &str = "calls-load";

struct Args {
    calls: usize,
    concurrency: usize,
    pace: f64,
}

fn args() -> Args {
    let mut args = Args {
        calls: 1000,
        concurrency: 200,
        pace: 0.1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--calls" => args.calls = value().parse().expect("--calls N"),
            "--concurrency" => args.concurrency = value().parse().expect("--concurrency C"),
            "--pace" => args.pace = value().parse().expect("--pace F"),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(
        args.calls <= 10_000,
        "callers use the numbers 06 39 98 xx xx"
    );
    args
}

#[derive(Default)]
struct Stats {
    webhook_ms: Vec<f64>,
    booked: usize,
    taken_retries: usize,
    errors: HashMap<String, usize>,
}

/// One caller's whole call.
async fn caller(
    n: usize,
    pace: f64,
    http: reqwest::Client,
    base: String,
    phones: Phones,
    stats: Arc<Mutex<Stats>>,
) -> Result<(), String> {
    let from = format!("+3363998{n:04}");
    let sid = format!("CA{:032x}", n);
    let mut code = phones.watch(&from);
    let post = |path: String, extra: Vec<(String, String)>| {
        let (http, base, from, sid, stats) = (
            http.clone(),
            base.clone(),
            from.clone(),
            sid.clone(),
            stats.clone(),
        );
        async move {
            let mut params = vec![
                ("CallSid".to_owned(), sid),
                ("From".to_owned(), from),
                ("To".to_owned(), TOWN_NUMBER.to_owned()),
                ("CallStatus".to_owned(), "in-progress".to_owned()),
            ];
            params.extend(extra);
            let url = format!("{base}{path}");
            let sig = signature::sign(AUTH_TOKEN, &url, &params);
            let started = Instant::now();
            let response = http
                .post(&url)
                .header("X-Twilio-Signature", sig)
                .form(&params)
                .send()
                .await
                .map_err(|e| format!("request: {e}"))?;
            let status = response.status();
            let body = response.text().await.map_err(|e| e.to_string())?;
            stats
                .lock()
                .unwrap()
                .webhook_ms
                .push(started.elapsed().as_secs_f64() * 1000.0);
            if !status.is_success() {
                return Err(format!("{path}: {status}"));
            }
            // The caller listens to the answer before pressing anything.
            let words: String = read_voice_response(&body)
                .map(|a| a.says.join(" "))
                .unwrap_or_default();
            let seconds = guichet::domain::spoken::spoken_seconds(&words, 150.0) * pace;
            tokio::time::sleep(std::time::Duration::from_secs_f64(seconds)).await;
            Ok::<String, String>(body)
        }
    };
    let said = |twiml: &str| read_voice_response(twiml).map_err(|e| e.to_string());
    let press = |twiml: String, key: String| {
        let post = &post;
        async move {
            let answer = said(&twiml)?;
            let action = answer.action.ok_or("no question")?;
            post(action, vec![("Digits".into(), key)]).await
        }
    };
    let mut twiml = post("/twilio/voice".into(), vec![]).await?;
    twiml = press(twiml, "1".into()).await?;
    // Slots read out: take the first; if someone was faster, the next ones are read.
    loop {
        // Either of the two slots read out, as people choose.
        let key = if rand::random::<bool>() { "1" } else { "2" };
        twiml = press(twiml, key.into()).await?;
        let text = said(&twiml)?.says.join(" ");
        if text.contains("Créneau gardé") {
            break;
        }
        if !text.contains("vient d'être pris") {
            return Err(format!("unexpected: {text}"));
        }
        stats.lock().unwrap().taken_retries += 1;
    }
    twiml = press(twiml, "1".into()).await?;
    let action = said(&twiml)?.action.ok_or("no name question")?;
    twiml = post(
        action,
        vec![
            ("SpeechResult".into(), format!("Usager {n}")),
            ("Confidence".into(), "0.9".into()),
        ],
    )
    .await?;
    let received = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            if let Some(c) = code.borrow().clone() {
                return c;
            }
            if code.changed().await.is_err() {
                return String::new();
            }
        }
    })
    .await
    .map_err(|_| "no code".to_owned())?;
    twiml = press(twiml, received).await?;
    let text = said(&twiml)?.says.join(" ");
    if !text.contains("Rendez-vous confirmé") {
        return Err(format!("not confirmed: {text}"));
    }
    post(
        "/twilio/voice/status".into(),
        vec![("CallStatus".into(), "completed".into())],
    )
    .await?;
    stats.lock().unwrap().booked += 1;
    Ok(())
}

#[tokio::main]
async fn main() {
    let args = args();
    guichet::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("calls.db").display());
    let store = store::connect(&url).await.expect("database");
    // Enough slots for every caller: the point is the webhooks, not a shortage.
    let commune = support::open_slots(store.as_ref(), args.calls * 3).await;
    let (sms_base, phones) = support::sms_provider().await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = Config {
        database_url: url.clone(),
        public_url: base.clone(),
        twilio_account_sid: Some(ACCOUNT_SID.into()),
        twilio_auth_token: Some(AUTH_TOKEN.to_owned().into()),
        twilio_api_base: sms_base,
        twilio_from: Some("+33465710000".into()),
        secret_key: Some("calls-load".to_owned().into()),
        ..Config::default()
    };
    let app = App::new(
        store.clone(),
        Arc::new(SystemClock) as Arc<dyn Clock>,
        config,
        false,
    );
    tokio::spawn(async move {
        app.serve(listener, std::future::pending()).await.unwrap();
    });

    println!(
        "calls on SQLite: {} callers, {} calls at a time, pace {} (1 = real time)",
        args.calls, args.concurrency, args.pace
    );
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .unwrap();
    let stats = Arc::new(Mutex::new(Stats::default()));
    let gate = Arc::new(Semaphore::new(args.concurrency));
    let cpu = support::CpuMeter::start();
    let started = Instant::now();
    let mut tasks = Vec::new();
    let (pace, args_concurrency) = (args.pace, args.concurrency);
    for n in 0..args.calls {
        let permit = gate.clone().acquire_owned().await.unwrap();
        let (http, base, phones, stats) =
            (http.clone(), base.clone(), phones.clone(), stats.clone());
        tasks.push(tokio::spawn(async move {
            if n < args_concurrency {
                // The first calls come in over a few seconds, not all at the same instant.
                let spread = 10.0 * pace * (n as f64 / args_concurrency as f64);
                tokio::time::sleep(std::time::Duration::from_secs_f64(spread)).await;
            }
            if let Err(e) = caller(n, pace, http, base, phones, stats.clone()).await {
                *stats.lock().unwrap().errors.entry(e).or_default() += 1;
            }
            drop(permit);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut s = std::mem::take(&mut *stats.lock().unwrap());
    let cpu = cpu.summary("during the calls", s.booked);

    let (overbooked, confirmed) = support::overbooking(store.as_ref(), &commune).await;
    println!(
        "booked by telephone: {} (confirmed in the database: {confirmed})   overbooked: {overbooked}   retries after \"slot taken\": {}",
        s.booked, s.taken_retries
    );
    if !s.errors.is_empty() {
        println!("errors: {:?}", s.errors);
    }
    println!(
        "wall time {elapsed:.2} s   {:.0} calls/s   {:.0} webhooks/s",
        s.booked as f64 / elapsed,
        s.webhook_ms.len() as f64 / elapsed
    );
    if let Some(cpu) = cpu {
        println!("{cpu}");
    }
    // Server side: the Prometheus histogram guichet keeps per route (bucket bounds).
    support::print_server_side(
        &http,
        &base,
        &[
            ("/twilio/voice", "incoming"),
            ("/twilio/voice/step", "step"),
            ("/twilio/voice/status", "status"),
        ],
    )
    .await;
    let values = &mut s.webhook_ms;
    println!(
        "client side (includes queueing in this process): webhooks n={}   p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms",
        values.len(),
        support::percentile(values, 0.5),
        support::percentile(values, 0.99),
        support::percentile(values, 1.0)
    );
}
