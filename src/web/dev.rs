//! Development pages, served in demo mode only: `/dev/outbox` shows what the console transports
//! "sent" (codes included — that is the point), newest first; `/dev/outbox.json` gives the same
//! to scripts; `/dev/phone` is a telephone in the browser (a keypad, the prompts spoken by the
//! browser's speech synthesis) that talks to the voice menu through `/dev/phone/call`.

use super::AppState;
use crate::notify::templates::escape_html;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

pub async fn outbox_json(State(state): State<AppState>) -> Response {
    if !state.demo {
        return StatusCode::NOT_FOUND.into_response();
    }
    Json(state.dev_outbox.messages()).into_response()
}

pub async fn outbox(State(state): State<AppState>) -> Response {
    if !state.demo {
        return StatusCode::NOT_FOUND.into_response();
    }
    let rows: String = state
        .dev_outbox
        .messages()
        .iter()
        .map(|m| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}<pre>{}</pre></td></tr>\n",
                m.at.format("%H:%M:%S"),
                m.channel,
                escape_html(&m.to),
                m.subject
                    .as_deref()
                    .map(|s| format!("<strong>{}</strong>", escape_html(s)))
                    .unwrap_or_default(),
                escape_html(&m.body)
            )
        })
        .collect();
    let body = if rows.is_empty() {
        "<p>Aucun message pour l'instant.</p>".to_owned()
    } else {
        format!(
            "<table><caption>Messages, du plus récent au plus ancien</caption>\n<thead><tr><th scope=\"col\">Heure (UTC)</th><th scope=\"col\">Canal</th><th scope=\"col\">Destinataire</th><th scope=\"col\">Message</th></tr></thead>\n<tbody>\n{rows}</tbody></table>"
        )
    };
    Html(format!(
        "<!DOCTYPE html>\n<html lang=\"fr\">\n<head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Messages envoyés (démonstration) — guichet</title></head>\n<body style=\"font-family: sans-serif; margin: 1rem\">\n<h1>Messages envoyés (démonstration)</h1>\n<p>En démonstration, les SMS et e-mails ne partent pas : ils s'affichent ici.</p>\n{body}\n</body>\n</html>\n"
    ))
    .into_response()
}

/// One step of a call made from `/dev/phone`.
#[derive(serde::Deserialize)]
pub struct PhoneStep {
    sid: String,
    from: String,
    to: String,
    /// Empty to place the call; otherwise the URL the last answer gave.
    #[serde(default)]
    url: String,
    digits: Option<String>,
    speech: Option<String>,
    #[serde(default)]
    hang_up: bool,
}

/// Runs one step of the voice menu as the provider would (demo only: unsigned, in process)
/// and answers what was said, with the SMS the caller has received.
pub async fn phone_call(State(state): State<AppState>, Json(step): Json<PhoneStep>) -> Response {
    use crate::voice::call::Input;
    if !state.demo {
        return StatusCode::NOT_FOUND.into_response();
    }
    if step.hang_up {
        let _ = state.ivr.ended(&step.sid, "completed").await;
        return Json(serde_json::json!({"ended": true})).into_response();
    }
    let twiml = if step.url.is_empty() {
        state
            .ivr
            .incoming(&step.sid, &step.from, &step.to)
            .await
            .map(Some)
    } else {
        let query = step.url.split_once('?').map_or("", |(_, q)| q);
        let params: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let seq = get("s").and_then(|s| s.parse().ok()).unwrap_or(-1);
        let input = if get("dial").is_some() {
            Input::DialEnded("completed".into())
        } else if let Some(speech) = step.speech.filter(|s| !s.trim().is_empty()) {
            Input::Speech(speech)
        } else {
            match step.digits.filter(|d| !d.is_empty()) {
                Some(d) if get("silence").is_none() => Input::Digits(d),
                _ => Input::Silence,
            }
        };
        state.ivr.step(&step.sid, seq, input).await
    };
    let answer = match twiml {
        Ok(Some(twiml)) => crate::voice::twiml::read_voice_response(&twiml).unwrap_or_default(),
        Ok(None) => return StatusCode::NOT_FOUND.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "demo phone step failed");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let sms: Vec<String> = state
        .dev_outbox
        .messages()
        .into_iter()
        .rev()
        .filter(|m| m.channel == "sms" && m.to == step.from)
        .map(|m| m.body)
        .collect();
    Json(serde_json::json!({"answer": answer, "sms": sms})).into_response()
}

pub async fn phone(State(state): State<AppState>) -> Response {
    if !state.demo {
        return StatusCode::NOT_FOUND.into_response();
    }
    let communes = state.store().communes().await.unwrap_or_default();
    let options: String = communes
        .iter()
        .flat_map(|c| {
            c.phone_numbers.iter().map(move |n| {
                format!(
                    "<option value=\"{}\">{} — {}</option>",
                    escape_html(n),
                    escape_html(&c.name),
                    escape_html(n)
                )
            })
        })
        .collect();
    let keys: String = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "0", "#"]
        .iter()
        .map(|k| format!("<button type=\"button\" class=\"key\" data-key=\"{k}\">{k}</button>"))
        .collect();
    Html(format!(
        "<!DOCTYPE html>\n<html lang=\"fr\">\n<head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>Téléphone de démonstration — guichet</title><link rel=\"stylesheet\" href=\"/static/guichet.css\"><script src=\"/static/phone.js\" defer></script></head>\n\
<body><main class=\"wrap\">\n<h1>Téléphone de démonstration</h1>\n\
<p>Appelez une mairie de la démonstration : le serveur vocal répond, et votre navigateur lit ses phrases à voix haute. Les SMS reçus s'affichent ci-dessous.</p>\n\
<form id=\"dial\"><div class=\"input\"><label for=\"to\">Numéro appelé</label><select id=\"to\">{options}</select></div>\
<div class=\"input\"><label for=\"from\">Votre numéro</label><input id=\"from\" type=\"tel\" value=\"+33639980042\"></div>\
<button type=\"submit\">Appeler</button> <button type=\"button\" id=\"hangup\" class=\"danger\">Raccrocher</button></form>\n\
<h2>Clavier</h2><div class=\"keypad\" role=\"group\" aria-label=\"Clavier\">{keys}</div>\n\
<p><button type=\"button\" id=\"send\">Envoyer les touches</button> <button type=\"button\" id=\"silence\" class=\"secondary\">Ne rien dire</button></p>\n\
<div class=\"input\"><label for=\"speech\">Parler (quand le serveur écoute)</label><input id=\"speech\" type=\"text\"> <button type=\"button\" id=\"say\">Dire</button></div>\n\
<p>Touches tapées : <output id=\"typed\"></output></p>\n\
<h2>Conversation</h2><ol id=\"log\" aria-live=\"polite\"></ol>\n<h2>SMS reçus</h2><ul id=\"sms\" aria-live=\"polite\"></ul>\n\
</main></body></html>\n"
    ))
    .into_response()
}
