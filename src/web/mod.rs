//! HTTP: the router, shared state, health and metrics endpoints, the JSON API and (later) the
//! citizen pages, the agents' back-office and the voice webhooks. Handlers only extract, call
//! the engine or the store, and render.

pub mod api;
pub mod error;
mod openapi;

use crate::booking::Engine;
use crate::config::Config;
use crate::store::Store;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router, middleware};
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

/// What every handler may use; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub config: Arc<Config>,
    pub metrics: PrometheusHandle,
    /// `guichet demo`: development pages and outboxes are served.
    pub demo: bool,
}

impl AppState {
    pub fn store(&self) -> &Arc<dyn Store> {
        self.engine.store()
    }
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/communes", get(api::communes))
        .route("/communes/{slug}", get(api::commune))
        .route("/communes/{slug}/services", get(api::services))
        .route("/communes/{slug}/locations", get(api::locations))
        .route("/communes/{slug}/slots", get(api::slots))
        .route("/openapi.json", get(openapi::document))
        .fallback(error::api_not_found);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/api/v1", api)
        .layer(middleware::from_fn(crate::telemetry::track_http))
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
