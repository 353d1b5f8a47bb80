//! SMS webhooks: delivery reports (`/twilio/sms/status`) and replies (`/twilio/sms`). Every
//! request must carry a valid `X-Twilio-Signature` for `GUICHET_PUBLIC_URL` + the path and query
//! received; forged or unsigned requests get 403 (unless `twilio_skip_signature` is set for
//! local development). Replies: `ANNULER` asks for confirmation and `OUI` then cancels the
//! number's next appointment; `STOP` ends reminders for the number; anything else gets help.
//! Each reply is recorded for SMS accounting.

use super::AppState;
use crate::booking::Cancellation;
use crate::domain::{MessageChannel, NotificationKind, PhoneE164, gsm7};
use crate::notify::templates;
use crate::store::{NewNotification, SmsAction};
use crate::voice::{signature, twiml};
use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Duration;
use secrecy::ExposeSecret;
use uuid::Uuid;

/// How long an `ANNULER` waits for its `OUI`.
const CONFIRMATION_WINDOW: Duration = Duration::minutes(30);

/// Why a webhook is turned away (a machine talks to us here: a status and a short reason).
pub struct Refusal(StatusCode, &'static str);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

/// The form parameters of a webhook whose signature checks out, or the 403 to answer.
pub fn authenticated_form(
    state: &AppState,
    uri: &OriginalUri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Vec<(String, String)>, Refusal> {
    let params: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|_| Refusal(StatusCode::BAD_REQUEST, "form-encoded parameters expected"))?;
    let config = &state.config;
    if config.twilio_skip_signature {
        return Ok(params);
    }
    let forbidden = || Refusal(StatusCode::FORBIDDEN, "invalid X-Twilio-Signature");
    let Some(token) = &config.twilio_auth_token else {
        tracing::warn!("webhook refused: no TWILIO_AUTH_TOKEN to check its signature with");
        return Err(forbidden());
    };
    let Some(received) = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return Err(forbidden());
    };
    let path_and_query = uri
        .0
        .path_and_query()
        .map_or_else(|| uri.0.path().to_owned(), |pq| pq.as_str().to_owned());
    let url = format!("{}{path_and_query}", config.public_url);
    if signature::verify(token.expose_secret(), &url, &params, received) {
        Ok(params)
    } else {
        tracing::warn!(path = uri.0.path(), "webhook refused: bad signature");
        Err(forbidden())
    }
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A delivery report.
pub async fn status(
    State(state): State<AppState>,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = match authenticated_form(&state, &uri, &headers, &body) {
        Ok(p) => p,
        Err(refusal) => return refusal.into_response(),
    };
    let ours: Option<Uuid> = uri.0.query().and_then(|q| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(q)
            .ok()?
            .into_iter()
            .find(|(k, _)| k == "n")
            .and_then(|(_, v)| v.parse().ok())
    });
    let sid = param(&params, "MessageSid").unwrap_or_default();
    let Some(delivery) = param(&params, "MessageStatus").or_else(|| param(&params, "SmsStatus"))
    else {
        return (StatusCode::BAD_REQUEST, "MessageStatus missing").into_response();
    };
    let error = param(&params, "ErrorCode").filter(|c| !c.is_empty());
    match state
        .store()
        .record_delivery(ours, sid, delivery, error, state.engine.now())
        .await
    {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => {
            tracing::info!(sid, "delivery report for an unknown message");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot record a delivery report");
            // Twilio retries on errors: that is what we want.
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// What the citizen wrote, reduced to a command.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Cancel,
    Yes,
    Stop,
    Other,
}

fn command(body: &str) -> Command {
    // French typing puts a space (often a no-break one, which phones insert) before "!" and
    // "?": "Oui !" is OUI. Punctuation and spaces around the word do not count, nor the number
    // of spaces inside ("STOP  SMS").
    let word = body
        .trim_matches(|c: char| c.is_whitespace() || ".!?,;:…".contains(c))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let word: String = word
        .chars()
        .map(|c| match c.to_lowercase().next().unwrap_or(c) {
            'é' | 'è' | 'ê' | 'ë' => 'E',
            'à' | 'â' => 'A',
            'î' | 'ï' => 'I',
            'ô' => 'O',
            'ù' | 'û' => 'U',
            'ç' => 'C',
            c => c.to_ascii_uppercase(),
        })
        .collect();
    match word.as_str() {
        "ANNULER" | "ANNULE" | "ANNULATION" => Command::Cancel,
        "OUI" | "O" => Command::Yes,
        "STOP" | "ARRET" | "STOP SMS" | "STOPSMS" | "DESABONNER" => Command::Stop,
        _ => Command::Other,
    }
}

fn twiml_reply(text: &str) -> Response {
    (
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        twiml::message_response(Some(text)),
    )
        .into_response()
}

/// An SMS sent to the platform's number.
pub async fn incoming(
    State(state): State<AppState>,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = match authenticated_form(&state, &uri, &headers, &body) {
        Ok(p) => p,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(from) = param(&params, "From").and_then(|f| PhoneE164::parse(f).ok()) else {
        return (StatusCode::BAD_REQUEST, "From missing").into_response();
    };
    let text = param(&params, "Body").unwrap_or_default();
    match reply(&state, &from, command(text)).await {
        Ok((reply, _)) if reply.is_empty() => (
            [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
            twiml::message_response(None),
        )
            .into_response(),
        Ok((reply, commune)) => {
            record_reply(&state, &from, &reply, commune).await;
            twiml_reply(&reply)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot answer an SMS");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

async fn reply(
    state: &AppState,
    from: &PhoneE164,
    command: Command,
) -> anyhow::Result<(String, Option<i64>)> {
    let store = state.store();
    let engine = &state.engine;
    let now = engine.now();
    Ok(match command {
        Command::Cancel => match about(state, from).await? {
            Some(appointment) => {
                store
                    .set_sms_conversation(
                        from.as_str(),
                        appointment.id,
                        SmsAction::Cancel,
                        now + CONFIRMATION_WINDOW,
                    )
                    .await?;
                let details = engine.details(&appointment).await?;
                (
                    templates::sms_cancel_question(&details.commune, &appointment),
                    Some(appointment.commune_id),
                )
            }
            None => (templates::sms_nothing_to_cancel(), None),
        },
        Command::Yes => match store.take_sms_conversation(from.as_str(), now).await? {
            Some((id, SmsAction::Cancel)) => {
                match engine.cancel(id, &Cancellation::ByCitizenReplyingSms).await {
                    Ok(cancelled) => {
                        let details = engine.details(&cancelled).await?;
                        let url = engine.notifier().booking_url(&details.commune);
                        (
                            templates::sms_cancelled(&details.commune, &cancelled, &url),
                            Some(cancelled.commune_id),
                        )
                    }
                    Err(e) => (templates::sms_refusal(&e.message()), None),
                }
            }
            // Accepted: the confirmation (with its link) follows through the outbox; a reply
            // on top would be a fourth SMS for this appointment.
            Some((id, SmsAction::Accept)) => match engine.accept_proposal(id).await {
                Ok(accepted) => (String::new(), Some(accepted.commune_id)),
                Err(e) => (templates::sms_refusal(&e.message()), None),
            },
            None => (templates::sms_help(), None),
        },
        Command::Stop => {
            store.add_sms_opt_out(from.as_str(), now).await?;
            (templates::sms_stopped(), None)
        }
        Command::Other => (templates::sms_help(), None),
    })
}

/// The appointment a reply is about: the one of the last message sent to the number if it is
/// still ahead, otherwise the number's next appointment.
async fn about(
    state: &AppState,
    from: &PhoneE164,
) -> anyhow::Result<Option<crate::domain::Appointment>> {
    let store = state.store();
    let now = state.engine.now();
    if let Some(id) = store.last_messaged_appointment(from.as_str()).await?
        && let Some(appointment) = store.appointment(id).await?
        && appointment.status == crate::domain::Status::Confirmed
        && appointment.starts_at > now
    {
        return Ok(Some(appointment));
    }
    Ok(store.next_appointment_of_phone(from.as_str(), now).await?)
}

/// Replies cost like any SMS: they are counted with the commune's messages.
async fn record_reply(state: &AppState, to: &PhoneE164, text: &str, commune: Option<i64>) {
    let now = state.engine.now();
    let segments = gsm7::segments(text) as i32;
    let message = NewNotification {
        id: Uuid::new_v4(),
        commune_id: commune,
        appointment_id: None,
        kind: NotificationKind::SmsReply,
        channel: MessageChannel::Sms,
        destination: to.as_str().to_owned(),
        dedupe_key: None,
        subject: None,
        body: text.to_owned(),
        html: None,
        ics: None,
        due_at: now,
    };
    let cost = i64::from(segments) * state.config.sms_price_micro_eur();
    if let Err(e) = state
        .store()
        .record_sent_message(&message, segments, cost, now)
        .await
    {
        tracing::error!(error = %e, "cannot record an SMS reply");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(command(" annuler "), Command::Cancel);
        assert_eq!(command("Annuler."), Command::Cancel);
        assert_eq!(command("oui"), Command::Yes);
        assert_eq!(command("OUI!"), Command::Yes);
        assert_eq!(command("Oui !"), Command::Yes);
        // A no-break space and a narrow one, as phones type them before "!" and "?".
        assert_eq!(command("Oui\u{a0}!"), Command::Yes);
        assert_eq!(command("oui\u{202f}?"), Command::Yes);
        assert_eq!(command("Annuler !\n"), Command::Cancel);
        assert_eq!(command("Stop !"), Command::Stop);
        assert_eq!(command("stop  sms"), Command::Stop);
        assert_eq!(command("oui mais pas demain"), Command::Other);
        assert_eq!(command("Stop"), Command::Stop);
        assert_eq!(command("Arrêt"), Command::Stop);
        assert_eq!(command("ARRET"), Command::Stop);
        assert_eq!(command("bonjour, je voudrais annuler"), Command::Other);
    }
}
