//! guichet: the appointment platform French town halls share. This crate is the whole
//! application; `main.rs` only parses the command line. See `ARCHITECTURE.md` for the map.

#![forbid(unsafe_code)]

pub mod accounts;
pub mod booking;
pub mod config;
pub mod demo;
pub mod domain;
pub mod notify;
pub mod store;
pub mod telemetry;
pub mod voice;
pub mod web;

use crate::booking::Engine;
use crate::config::Config;
use crate::domain::{Clock, SystemClock};
use crate::notify::email::{ConsoleMailer, Mailer, SmtpMailer};
use crate::notify::outbox::Outbox;
use crate::notify::sms::{ConsoleSms, DevOutbox, SmsSender, SmsSenderId, TwilioSms};
use crate::store::Store;
use crate::web::AppState;
use anyhow::Context;
use secrecy::ExposeSecret;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Outgoing TLS (the SMS provider, SMTP, PostgreSQL) goes through rustls with the `ring`
/// provider, installed once per process before any client is built.
pub fn install_crypto_provider() {
    // An error only means a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The application, assembled: engine, store, configuration, message transports. Tests build
/// one on a fresh database with a frozen clock and fake providers, and serve it on port 0.
#[derive(Clone)]
pub struct App {
    state: AppState,
    sms: Arc<dyn SmsSender>,
    mail: Arc<dyn Mailer>,
    run_worker: bool,
}

impl App {
    /// Transports come from the configuration: Twilio when its credentials are set, SMTP when
    /// its URL is, the console otherwise.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, config: Config, demo: bool) -> Self {
        install_crypto_provider();
        let mut engine = Engine::new(store, clock, config.hold_duration())
            .with_public_url(&config.public_url)
            .with_proposal_hold(chrono::Duration::hours(i64::from(
                config.proposal_hold_hours,
            )));
        if let Some(key) = &config.secret_key {
            engine = engine.with_otp_key(key.expose_secret().as_bytes());
        }
        let dev_outbox = DevOutbox::default();
        let sms = sms_transport(&config, &dev_outbox, demo);
        let mail = mail_transport(&config, &dev_outbox);
        let run_worker = config.outbox_worker;
        // Checked already by `run_server`, which refuses to start with a bad flow; here a
        // mistake is a bug of the caller's.
        let voice_data = voice::flow::VoiceData::load(config.voice_dir.as_deref().map(Path::new))
            .unwrap_or_else(|e| panic!("voice flows: {e}"));
        Self {
            state: AppState::new(web::Shared {
                ivr: voice::call::Ivr::new(engine.clone(), Arc::new(voice_data)),
                engine,
                limits: web::security::Limits::new(
                    config.holds_per_ip_per_hour,
                    config.codes_per_ip_per_hour,
                ),
                config: Arc::new(config),
                metrics: telemetry::metrics_handle(),
                demo,
                dev_outbox,
            }),
            sms,
            mail,
            run_worker,
        }
    }

    /// Opens the configured database (creating and migrating it as needed) and builds the app,
    /// with the one-time-code key every instance shares.
    pub async fn connect(
        mut config: Config,
        clock: Arc<dyn Clock>,
        demo: bool,
    ) -> anyhow::Result<Self> {
        let store = store::connect(&config.database_url)
            .await
            .with_context(|| {
                format!(
                    "cannot open the database {}",
                    config::mask_url_password(&config.database_url)
                )
            })?;
        if config.secret_key.is_none() {
            // Known before the engine is built, so that every engine of the app (the web's, the
            // voice menu's) has it: a code sent by one instance is checked by another.
            let fresh = domain::otp::hex(&rand::random::<[u8; 32]>());
            config.secret_key = Some(store.shared_secret("otp_key", &fresh).await?.into());
        }
        Ok(Self::new(store, clock, config, demo))
    }

    /// Replaces the SMS transport (tests: a local server speaking Twilio's contract).
    pub fn with_sms(mut self, sms: Arc<dyn SmsSender>) -> Self {
        self.sms = sms;
        self
    }

    pub fn with_mailer(mut self, mail: Arc<dyn Mailer>) -> Self {
        self.mail = mail;
        self
    }

    /// No background sending: the caller drives [`App::outbox`] (tests, the load tool).
    pub fn without_worker(mut self) -> Self {
        self.run_worker = false;
        self
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn engine(&self) -> &Engine {
        &self.state.engine
    }

    /// The outbox worker of this instance.
    pub fn outbox(&self) -> Outbox {
        let engine = &self.state.engine;
        Outbox::new(
            engine.store().clone(),
            engine.clock().clone(),
            self.sms.clone(),
            self.mail.clone(),
            &self.state.config.public_url,
            self.state.config.sms_price_micro_eur(),
            engine.wake_handle(),
        )
    }

    pub fn router(&self) -> axum::Router {
        web::router(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` completes, then lets requests in flight finish
    /// and stops the outbox worker.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let started = std::time::Instant::now();
        let _ = tokio::task::spawn_blocking(domain::values::PhoneE164::warm_up).await;
        tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            "telephone numbering tables loaded"
        );
        let stop_worker = CancellationToken::new();
        let worker = self
            .run_worker
            .then(|| tokio::spawn(self.outbox().run(stop_worker.clone())));
        // The peer's address feeds the per-address limits on holds and code sends.
        let service = self
            .router()
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        let served = axum::serve(listener, service)
            .with_graceful_shutdown(shutdown)
            .await;
        stop_worker.cancel();
        if let Some(worker) = worker {
            let _ = worker.await;
        }
        served
    }
}

fn sms_transport(config: &Config, dev_outbox: &DevOutbox, demo: bool) -> Arc<dyn SmsSender> {
    let sender = match (&config.twilio_from, &config.twilio_messaging_service_sid) {
        (_, Some(sid)) => Some(SmsSenderId::MessagingService(sid.clone())),
        (Some(from), None) => Some(SmsSenderId::From(from.clone())),
        (None, None) => None,
    };
    if let (Some(account), Some(token), Some(sender)) = (
        &config.twilio_account_sid,
        &config.twilio_auth_token,
        sender,
    ) {
        match TwilioSms::new(
            &config.twilio_api_base,
            account,
            token.clone(),
            sender,
            std::time::Duration::from_secs(config.twilio_timeout_seconds),
        ) {
            Ok(twilio) => return Arc::new(twilio),
            Err(e) => {
                tracing::error!(error = %e, "cannot build the SMS client: SMS go to the console")
            }
        }
    } else {
        tracing::info!("no SMS provider configured: SMS are written to the console");
    }
    Arc::new(ConsoleSms {
        outbox: dev_outbox.clone(),
        reveal: demo,
    })
}

fn mail_transport(config: &Config, dev_outbox: &DevOutbox) -> Arc<dyn Mailer> {
    if let (Some(url), Some(from)) = (&config.smtp_url, &config.mail_from) {
        match SmtpMailer::new(
            url.expose_secret(),
            from,
            std::time::Duration::from_secs(20),
        ) {
            Ok(smtp) => return Arc::new(smtp),
            Err(e) => tracing::error!(error = %e, "cannot set up SMTP: e-mails go to the console"),
        }
    } else {
        tracing::info!("no SMTP server configured: e-mails are written to the console");
    }
    Arc::new(ConsoleMailer {
        outbox: dev_outbox.clone(),
    })
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

/// `guichet serve` and `guichet demo`.
pub async fn run_server(mut config: Config, demo: bool) -> anyhow::Result<()> {
    // A mistake in a call flow or its prompts stops the start, naming the file and the node.
    voice::flow::VoiceData::load(config.voice_dir.as_deref().map(Path::new))?;
    if demo && config.twilio_auth_token.is_none() {
        // Demo webhooks (`guichet call`) are signed and checked like real ones.
        config.twilio_auth_token = Some(voice::caller::DEMO_AUTH_TOKEN.to_owned().into());
    }
    if demo && config.database_url == config::DEFAULT_DATABASE_URL {
        // Demo data never lands in the production default file.
        config.database_url = demo::DEMO_DATABASE_URL.to_owned();
    }
    tracing::info!(?config, demo, "starting guichet");
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let app = App::connect(config, Arc::new(SystemClock), demo).await?;
    if demo {
        let seeded = demo::seed(app.engine())
            .await
            .context("cannot write the demo data")?;
        demo::seed_accounts(app.engine().store().as_ref())
            .await
            .context("cannot create the demo accounts")?;
        println!("{}", demo::banner(&app, seeded).await?);
    }
    let address = listener.local_addr()?;
    tracing::info!(%address, "listening");
    app.serve(listener, shutdown_signal()).await?;
    Ok(())
}

/// `guichet migrate`.
pub async fn run_migrations(config: &Config) -> anyhow::Result<()> {
    store::connect(&config.database_url)
        .await
        .with_context(|| {
            format!(
                "cannot migrate {}",
                config::mask_url_password(&config.database_url)
            )
        })?;
    tracing::info!("migrations applied");
    Ok(())
}
