//! Development pages, served in demo mode only: `/dev/outbox` shows what the console transports
//! "sent" (codes included — that is the point), newest first; `/dev/outbox.json` gives the same
//! to scripts.

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
