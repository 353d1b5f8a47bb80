//! HTTP: the router, shared state, health and metrics endpoints, the JSON API and (later) the
//! citizen pages, the agents' back-office and the voice webhooks. Handlers only extract, call
//! the engine or the store, and render.

mod agent;
pub mod api;
pub mod booking_api;
mod dev;
pub mod error;
mod idempotency;
mod openapi;
mod pages;
pub mod security;
mod twilio_sms;
mod usage;
mod voice;

use crate::booking::Engine;
use crate::config::Config;
use crate::store::Store;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

/// What every handler may use: one pointer, since axum clones it for every request, extractor
/// and middleware (the engine alone is a dozen shared pointers; their counts were 5 % of the
/// server's CPU in a rush).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] points to.
pub struct Shared {
    pub engine: Engine,
    pub config: Arc<Config>,
    pub metrics: PrometheusHandle,
    /// `guichet demo`: development pages and outboxes are served.
    pub demo: bool,
    /// What the console transports "sent" (shown at `/dev/outbox` in demo mode).
    pub dev_outbox: crate::notify::sms::DevOutbox,
    /// Per-address limits on holds and code sends.
    pub limits: Arc<security::Limits>,
    /// The voice menu.
    pub ivr: crate::voice::call::Ivr,
}

impl AppState {
    pub fn store(&self) -> &Arc<dyn Store> {
        self.engine.store()
    }
}

pub fn router(state: AppState) -> Router {
    let https = state.config.public_url.starts_with("https://");
    let api = Router::new()
        .route("/communes", get(api::communes))
        .route("/communes/{slug}", get(api::commune))
        .route("/communes/{slug}/services", get(api::services))
        .route("/communes/{slug}/locations", get(api::locations))
        .route("/communes/{slug}/slots", get(api::slots))
        .route("/communes/{slug}/appointments", post(booking_api::hold))
        .route("/communes/{slug}/sms-usage", get(usage::sms_usage))
        .route("/appointments/{id}/code", post(booking_api::resend_code))
        .route("/appointments/{id}/confirm", post(booking_api::confirm))
        .route("/manage/{token}", get(booking_api::manage))
        .route("/manage/{token}/cancel", post(booking_api::cancel))
        .route("/manage/{token}/move", post(booking_api::move_appointment))
        .route("/openapi.json", get(openapi::document))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::layer,
        ))
        .fallback(error::api_not_found)
        .method_not_allowed_fallback(error::api_method_not_allowed);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/api/v1", api)
        .route("/twilio/voice", post(voice::incoming))
        .route("/twilio/voice/step", post(voice::step))
        .route("/twilio/voice/status", post(voice::status))
        .route("/twilio/sms", post(twilio_sms::incoming))
        .route("/twilio/sms/status", post(twilio_sms::status))
        .route("/dev/outbox", get(dev::outbox))
        .route("/dev/outbox.json", get(dev::outbox_json))
        .route("/dev/phone", get(dev::phone))
        .route("/dev/phone/call", post(dev::phone_call))
        .merge(agent::routes())
        .merge(pages::routes())
        .layer(middleware::from_fn(crate::telemetry::track_http))
        .layer(middleware::from_fn(move |request, next| {
            security::headers(https, request, next)
        }))
        // A panic in a handler is a bug: log it, answer the JSON 500, keep serving.
        .layer(CatchPanicLayer::custom(error::panic_response))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                // The route template, never the raw path: paths may carry personal tokens.
                let route = request
                    .extensions()
                    .get::<MatchedPath>()
                    .map_or("unmatched", |p| p.as_str());
                tracing::info_span!("http", method = %request.method(), route)
            }),
        )
        .with_state(state)
}

/// The process is alive.
async fn healthz() -> &'static str {
    "ok"
}

/// The process can serve: its database answers.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let backend = match state.store().backend() {
        crate::store::Backend::Sqlite => "sqlite",
        crate::store::Backend::Postgres => "postgres",
    };
    match state.store().ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(serde_json::json!({"status": "ok", "database": backend})),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({"status": "unavailable", "database": backend})),
            )
        }
    }
}

/// Prometheus text exposition.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.metrics.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
