//! Signing in and out. Sessions live in the database (only the token's SHA-256), for 12 hours;
//! the cookie is `HttpOnly`, `SameSite=Lax`, `Secure` when guichet is served over HTTPS.
//! Failed sign-ins are counted in the database too, so the limit holds across instances:
//! 5 failures for one account, or 20 from one network, within 15 minutes close the door
//! until the window has passed (an account's attempts count before the password check, so
//! that parallel guesses cannot slip through together). An unknown e-mail costs the same time as a wrong password.

use super::super::pages::{FieldError, PageError, check_csrf, render, see_other};
use super::super::security::{ClientIp, Csrf};
use super::{AgentLayout, SignedIn, agent_page};
use crate::domain::Role;
use crate::domain::otp::{new_token, token_hash};
use crate::web::AppState;
use askama::Template;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::Duration;
use serde::Deserialize;
use std::collections::HashMap;

pub const SESSION_COOKIE: &str = "guichet_agent";
const SESSION_HOURS: i64 = 12;
const WINDOW_MINUTES: i64 = 15;
const FAILURES_PER_ACCOUNT: i64 = 5;
const FAILURES_PER_NETWORK: i64 = 20;

pub fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, value)| *name == SESSION_COOKIE && !value.is_empty())
        .map(|(_, value)| value.to_owned())
}

/// `/agent`: the right first page for the role.
pub async fn home(signed_in: SignedIn) -> Response {
    match signed_in.agent.role {
        Role::PlatformAdmin => see_other("/agent/plateforme"),
        _ => see_other("/agent/jour"),
    }
}

#[derive(Template)]
#[template(path = "agent/sign_in.html")]
struct SignInPage {
    l: AgentLayout,
    errors: Vec<FieldError>,
    email: String,
    next: String,
    signed_out: bool,
}

#[derive(Deserialize)]
pub struct SignInQuery {
    suite: Option<String>,
    deconnecte: Option<String>,
}

/// Only a back-office path is a place to come back to (never another site).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/agent/") && !n.starts_with("/agent/connexion") => n.to_owned(),
        _ => "/agent".to_owned(),
    }
}

fn bare_layout(title: &str, csrf: &Csrf) -> AgentLayout {
    AgentLayout {
        title: format!("{title} — guichet agents"),
        heading_place: "guichet — espace des agents".to_owned(),
        who: String::new(),
        csrf: csrf.token.clone(),
        nav: Vec::new(),
    }
}

pub async fn sign_in(
    State(state): State<AppState>,
    csrf: Csrf,
    Query(q): Query<SignInQuery>,
) -> Result<Response, PageError> {
    let html = render(&SignInPage {
        l: bare_layout("Connexion", &csrf),
        errors: Vec::new(),
        email: String::new(),
        next: safe_next(q.suite.as_deref()),
        signed_out: q.deconnecte.is_some(),
    })?;
    Ok(agent_page(&state, &csrf, html))
}

pub async fn sign_in_post(
    State(state): State<AppState>,
    csrf: Csrf,
    ClientIp(ip): ClientIp,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, PageError> {
    check_csrf(&csrf, form.get("csrf"))?;
    let email = form
        .get("email")
        .map(|e| e.trim().to_lowercase())
        .unwrap_or_default();
    let password = form.get("password").cloned().unwrap_or_default();
    let next = safe_next(form.get("suite").map(String::as_str));
    let store = state.store();
    let now = state.engine.now();
    let since = now - Duration::minutes(WINDOW_MINUTES);
    let account_key = format!("email:{email}");
    let network_key = format!("ip:{}", super::super::security::subscriber(ip));

    let refuse = |message: &str, status| -> Result<Response, PageError> {
        let html = render(&SignInPage {
            l: bare_layout("Erreur : Connexion", &csrf),
            errors: vec![FieldError::new("email", message)],
            email: email.clone(),
            next: next.clone(),
            signed_out: false,
        })?;
        let mut response = agent_page(&state, &csrf, html);
        *response.status_mut() = status;
        Ok(response)
    };

    if email.is_empty() || password.is_empty() {
        return refuse(
            "Indiquez votre adresse e-mail et votre mot de passe.",
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
        );
    }
    // The attempt counts before the (slow) password check, so that a burst of parallel
    // guesses cannot all pass the limit; a success clears it.
    let attempts = store
        .record_signin_failure(&account_key, now, since)
        .await?;
    if attempts > FAILURES_PER_ACCOUNT
        || store.signin_failures(&network_key, since).await? >= FAILURES_PER_NETWORK
    {
        return refuse(
            "Trop d'essais de connexion ont échoué. Attendez un quart d'heure avant de réessayer, ou demandez à votre administrateur de vérifier votre compte.",
            axum::http::StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let agent = store.agent_by_email(&email).await?;
    // Hashing is slow on purpose: off the async threads.
    let hash = agent.as_ref().filter(|a| a.active).map_or_else(
        || crate::accounts::decoy_hash().to_owned(),
        |a| a.password_hash.clone(),
    );
    let matches =
        tokio::task::spawn_blocking(move || crate::accounts::verify_password(&password, &hash))
            .await
            .unwrap_or(false);
    let Some(agent) = agent.filter(|a| a.active && matches) else {
        store
            .record_signin_failure(&network_key, now, since)
            .await?;
        tracing::info!("sign-in refused");
        return refuse(
            "Adresse e-mail ou mot de passe incorrect.",
            axum::http::StatusCode::UNAUTHORIZED,
        );
    };
    store.clear_signin_failures(&account_key).await?;
    let token = format!("{}{}", new_token(), new_token());
    store
        .insert_session(
            &token_hash(&token),
            agent.id,
            now,
            now + Duration::hours(SESSION_HOURS),
        )
        .await?;
    super::audit(&state, &agent, agent.commune_id, "connexion", String::new()).await;
    let secure = if state.config.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/agent; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        SESSION_HOURS * 3600
    );
    let mut response = see_other(&next);
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}

pub async fn sign_out(
    State(state): State<AppState>,
    csrf: Csrf,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, PageError> {
    check_csrf(&csrf, form.get("csrf"))?;
    if let Some(token) = session_token(&headers) {
        state.store().delete_session(&token_hash(&token)).await?;
    }
    let mut response = see_other("/agent/connexion?deconnecte=1").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("guichet_agent=; Path=/agent; HttpOnly; SameSite=Lax; Max-Age=0"),
    );
    Ok(response)
}
