//! guichet: the appointment platform French town halls share. This crate is the whole
//! application; `main.rs` only parses the command line. See `ARCHITECTURE.md` for the map.

#![forbid(unsafe_code)]

pub mod booking;
pub mod config;
pub mod demo;
pub mod domain;
pub mod store;
pub mod telemetry;
pub mod web;

use crate::booking::Engine;
use crate::config::Config;
use crate::domain::{Clock, SystemClock};
use crate::store::Store;
use crate::web::AppState;
use anyhow::Context;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Outgoing TLS (the SMS provider, SMTP, PostgreSQL) goes through rustls with the `ring`
/// provider, installed once per process before any client is built.
pub fn install_crypto_provider() {
    // An error only means a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The application, assembled: engine, store, configuration. Tests build one on a fresh
/// database with a frozen clock and serve it on port 0.
#[derive(Clone)]
pub struct App {
    state: AppState,
}

impl App {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, config: Config, demo: bool) -> Self {
        install_crypto_provider();
        let engine = Engine::new(store, clock, config.hold_duration());
        Self {
            state: AppState {
                engine,
                config: Arc::new(config),
                metrics: telemetry::metrics_handle(),
                demo,
            },
        }
    }

    /// Opens the configured database (creating and migrating it as needed) and builds the app.
    pub async fn connect(
        config: Config,
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
        Ok(Self::new(store, clock, config, demo))
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn engine(&self) -> &Engine {
        &self.state.engine
    }

    pub fn router(&self) -> axum::Router {
        web::router(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` completes, then lets requests in flight finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }
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
