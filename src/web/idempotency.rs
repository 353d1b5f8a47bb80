//! `Idempotency-Key` on POST requests: a client that retries (a phone on the bus losing its
//! connection) gets the first answer again instead of a second booking. The key is kept with a
//! hash of the request (method, path, body) for 24 hours; the same key with another request is
//! refused, and a retry that arrives while the first request still runs is told to wait. Keys
//! live in the database, so any instance answers the retry. Our own failures (5xx) are not kept:
//! the client may try again. The database holds the key only hashed and the answer only sealed
//! ([`IdempotencyKey`]): a confirmation's answer carries the personal token.

use super::AppState;
use super::error::ApiError;
use crate::domain::idempotency::IdempotencyKey;
use crate::store::IdempotencyState;
use axum::body::{Body, to_bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub const HEADER: &str = "idempotency-key";
/// Request and answer bodies of this API are small JSON documents.
const MAX_BODY: usize = 64 * 1024;

pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Some(key) = request.headers().get(HEADER).cloned() else {
        return next.run(request).await;
    };
    let key = match key.to_str() {
        Ok(k) if !k.trim().is_empty() && k.len() <= 255 => k.trim().to_owned(),
        _ => {
            return ApiError::bad_parameter(
                "Idempotency-Key",
                "L'en-tête Idempotency-Key doit être un texte de 1 à 255 caractères.",
            )
            .into_response();
        }
    };
    let scope = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let (parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_BODY).await else {
        return ApiError::bad_parameter("body", "Le corps de la requête est trop long.")
            .into_response();
    };
    let sealing = IdempotencyKey::new(state.engine.shared_secret(), &scope, &key);
    // The path is hashed, never stored: it may carry a personal token.
    let request_hash = sealing.request_hash(parts.method.as_str(), parts.uri.path(), &bytes);
    let key = sealing.lookup().to_owned();
    let store = state.store();
    let now = state.engine.now();
    match store
        .begin_idempotent(&scope, &key, &request_hash, now)
        .await
    {
        Err(e) => ApiError::Store(e).into_response(),
        Ok(IdempotencyState::Mismatch) => ApiError::Plain {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "idempotency_key_reused",
            message: "Cette clé Idempotency-Key a déjà servi pour une autre requête : utilisez une nouvelle clé.",
        }
        .into_response(),
        Ok(IdempotencyState::InProgress) => ApiError::Plain {
            status: StatusCode::CONFLICT,
            code: "request_in_progress",
            message: "La même requête est déjà en cours : attendez sa réponse avant de réessayer.",
        }
        .into_response(),
        Ok(IdempotencyState::Replay { status, body }) => {
            // Sealed under another server secret (or by a version that kept answers in
            // clear): the answer is gone, and running the request again could do it twice.
            let Some(body) = sealing.open(&body) else {
                return ApiError::Plain {
                    status: StatusCode::UNPROCESSABLE_ENTITY,
                    code: "idempotency_answer_lost",
                    message: "La réponse à cette requête ne peut plus être relue : vérifiez où en est votre demande, puis réessayez avec une nouvelle clé Idempotency-Key.",
                }
                .into_response();
            };
            let mut response = (
                StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response();
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            response
        }
        Ok(IdempotencyState::Started) => {
            // The request and the recording of its answer run to their end even if the client
            // goes away (the phone on the bus lost its signal): its retry finds the answer.
            let store = store.clone();
            let running = tokio::spawn(async move {
                let response = next
                    .run(Request::from_parts(parts, Body::from(bytes)))
                    .await;
                let (parts, body) = response.into_parts();
                let Ok(bytes) = to_bytes(body, MAX_BODY).await else {
                    let _ = store.forget_idempotent(&scope, &key).await;
                    return None;
                };
                // A server error, or "too many, later" (nothing was done: the same request is
                // meant to be tried again), is not the request's answer for good.
                let retry_later = parts.status.is_server_error()
                    || parts.status == StatusCode::TOO_MANY_REQUESTS;
                let outcome = if retry_later {
                    store.forget_idempotent(&scope, &key).await
                } else {
                    store
                        .finish_idempotent(
                            &scope,
                            &key,
                            parts.status.as_u16(),
                            &sealing.seal(&String::from_utf8_lossy(&bytes)),
                        )
                        .await
                };
                if let Err(e) = outcome {
                    tracing::error!(error = %e, "cannot record an idempotent answer");
                }
                Some((parts, bytes))
            });
            let Ok(Some((parts, bytes))) = running.await else {
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            };
            Response::from_parts(parts, Body::from(bytes))
        }
    }
}
