//! Voice webhooks: `/twilio/voice` (a call comes in), `/twilio/voice/step?s=N` (the answer to
//! step N: keys, speech, silence, the end of a transfer) and `/twilio/voice/status` (the call
//! ended). Every request must carry a valid `X-Twilio-Signature` (see
//! [`super::twilio_sms::authenticated_form`]); the interpreter is [`crate::voice::call`].

use super::AppState;
use super::twilio_sms::{Refusal, authenticated_form};
use crate::voice::call::Input;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn twiml(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], body).into_response()
}

/// Our failure: a French apology and the end of the call, rather than a 5xx that the
/// provider would answer with its own English message.
fn failed(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "voice webhook failed");
    apology()
}

fn apology() -> Response {
    let answer = crate::voice::twiml::VoiceAnswer {
        say: vec![
            "Un problème technique nous empêche de continuer. Veuillez nous excuser et rappeler plus tard. Au revoir."
                .to_owned(),
        ],
        hangup: true,
        ..Default::default()
    };
    twiml(crate::voice::twiml::voice_response(
        &answer,
        &crate::voice::twiml::Speaker {
            voice: "Polly.Lea".into(),
            language: "fr-FR".into(),
        },
    ))
}

/// A call comes in.
pub async fn incoming(
    State(state): State<AppState>,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let params = authenticated_form(&state, &uri, &headers, &body)?;
    let (Some(sid), Some(from), Some(to)) = (
        param(&params, "CallSid"),
        param(&params, "From"),
        param(&params, "To"),
    ) else {
        return Ok((StatusCode::BAD_REQUEST, "CallSid, From and To are required").into_response());
    };
    Ok(match state.ivr.incoming(sid, from, to).await {
        Ok(body) => twiml(body),
        Err(e) => failed(e),
    })
}

#[derive(Deserialize)]
pub struct StepQuery {
    s: i64,
    silence: Option<String>,
    dial: Option<String>,
}

/// The caller answered step `s` (or said nothing).
pub async fn step(
    State(state): State<AppState>,
    Query(q): Query<StepQuery>,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let params = authenticated_form(&state, &uri, &headers, &body)?;
    let Some(sid) = param(&params, "CallSid") else {
        return Ok((StatusCode::BAD_REQUEST, "CallSid is required").into_response());
    };
    let input = if q.dial.is_some() {
        Input::DialEnded(
            param(&params, "DialCallStatus")
                .unwrap_or("completed")
                .to_owned(),
        )
    } else if let Some(speech) = param(&params, "SpeechResult").filter(|s| !s.trim().is_empty()) {
        Input::Speech(speech.to_owned())
    } else {
        match param(&params, "Digits") {
            Some(d) if q.silence.is_none() && !d.is_empty() => Input::Digits(d.to_owned()),
            _ => Input::Silence,
        }
    };
    Ok(match state.ivr.step(sid, q.s, input).await {
        Ok(Some(body)) => twiml(body),
        // A call this platform never started (or forgot): end it politely.
        Ok(None) => apology(),
        Err(e) => failed(e),
    })
}

/// The call status callback: a call that ended is closed, its outcome kept, its hold freed.
pub async fn status(
    State(state): State<AppState>,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let params = authenticated_form(&state, &uri, &headers, &body)?;
    let (Some(sid), Some(status)) = (param(&params, "CallSid"), param(&params, "CallStatus"))
    else {
        return Ok((
            StatusCode::BAD_REQUEST,
            "CallSid and CallStatus are required",
        )
            .into_response());
    };
    if matches!(
        status,
        "completed" | "busy" | "failed" | "no-answer" | "canceled"
    ) && let Err(e) = state.ivr.ended(sid, status).await
    {
        return Ok(failed(e));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
