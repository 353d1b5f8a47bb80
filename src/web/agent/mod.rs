//! The agents' back-office, under `/agent`: sign-in with sessions kept in the database (any
//! instance serves them), the day at the counter, booking for someone, cancelling with a
//! replacement, closing a period, configuration, statistics, the audit log and the platform's
//! administration.
//!
//! Tenants are sealed here: every handler that reaches a commune's data goes through
//! [`CommuneAgent`], which only ever yields the agent's own commune, and every record named in a
//! URL is checked against it — a record of another commune is answered exactly like a record
//! that does not exist (404). Every change is written to the audit log.

mod auth;
mod config;
mod day;
mod platform;
mod stats;

use super::AppState;
use super::pages::{PageError, page};
use super::security::Csrf;
use crate::domain::{Commune, CommuneId, Role};
use crate::store::{Agent, AuditEntry};
use axum::Router;
use axum::extract::{FromRef, FromRequestParts, OriginalUri};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/agent", get(auth::home))
        .route(
            "/agent/connexion",
            get(auth::sign_in).post(auth::sign_in_post),
        )
        .route("/agent/deconnexion", post(auth::sign_out))
        .route("/agent/jour", get(day::day))
        .route("/agent/recherche", get(day::search))
        .route("/agent/rdv/{id}", get(day::appointment))
        .route("/agent/rdv/{id}/presence", post(day::attendance))
        .route("/agent/rdv/{id}/annuler", post(day::cancel))
        .route("/agent/reserver", get(day::book).post(day::book_post))
        .route("/agent/fermer", get(day::close).post(day::close_post))
        .route("/agent/configuration", get(config::overview))
        .route("/agent/configuration/commune", post(config::commune_post))
        .route("/agent/configuration/voix", post(config::voice_post))
        .route("/agent/configuration/lieux", post(config::location_new))
        .route(
            "/agent/configuration/lieux/{id}",
            get(config::location).post(config::location_post),
        )
        .route("/agent/configuration/demarches", post(config::service_new))
        .route(
            "/agent/configuration/demarches/{id}",
            get(config::service).post(config::service_post),
        )
        .route("/agent/configuration/plannings", post(config::planning_new))
        .route(
            "/agent/configuration/plannings/{id}",
            get(config::planning).post(config::planning_post),
        )
        .route(
            "/agent/configuration/horaires",
            get(config::rules).post(config::rule_new),
        )
        .route(
            "/agent/configuration/horaires/{id}",
            get(config::rule).post(config::rule_post),
        )
        .route(
            "/agent/configuration/horaires/{id}/supprimer",
            post(config::rule_delete),
        )
        .route(
            "/agent/configuration/fermetures/{id}/supprimer",
            post(config::closure_delete),
        )
        .route(
            "/agent/configuration/fermetures/{id}/annuler",
            post(config::closure_cancel),
        )
        .route("/agent/statistiques", get(stats::stats))
        .route("/agent/statistiques.csv", get(stats::csv))
        .route("/agent/journal", get(stats::audit))
        .route("/agent/plateforme", get(platform::overview))
        .route("/agent/plateforme/communes", post(platform::commune_new))
        .route(
            "/agent/plateforme/communes/{id}",
            get(platform::commune).post(platform::commune_post),
        )
        .route(
            "/agent/plateforme/comptes",
            get(platform::accounts).post(platform::account_new),
        )
        .route(
            "/agent/plateforme/comptes/{id}/actif",
            post(platform::account_active),
        )
}

/// A signed-in account. Without a live session, a page answers with the sign-in page's
/// address (and comes back afterwards).
pub struct SignedIn {
    pub agent: Agent,
    pub csrf: Csrf,
}

/// Where an unauthenticated request is sent: the sign-in page, then back here.
pub struct SignInFirst(String);

impl IntoResponse for SignInFirst {
    fn into_response(self) -> Response {
        let query = serde_urlencoded::to_string([("suite", &self.0)]).unwrap_or_default();
        Redirect::to(&format!("/agent/connexion?{query}")).into_response()
    }
}

impl<S> FromRequestParts<S> for SignedIn
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let csrf = Csrf::from_request_parts(parts, &state)
            .await
            .unwrap_or_else(|never| match never {});
        // Back here after signing in — for a form sent after the session ended, back to the
        // page that held the form (a GET of a POST route would fail).
        let path = if parts.method == axum::http::Method::GET {
            OriginalUri::from_request_parts(parts, &state)
                .await
                .map(|u| u.0.to_string())
                .unwrap_or_else(|_| "/agent".to_owned())
        } else {
            parts
                .headers
                .get(axum::http::header::REFERER)
                .and_then(|r| r.to_str().ok())
                .and_then(|r| r.find("/agent/").map(|i| r[i..].to_owned()))
                .unwrap_or_else(|| "/agent".to_owned())
        };
        let Some(token) = auth::session_token(&parts.headers) else {
            return Err(SignInFirst(path).into_response());
        };
        let agent = state
            .store()
            .session_agent(&crate::domain::otp::token_hash(&token), state.engine.now())
            .await
            .map_err(|e| PageError::from(e).into_response())?;
        match agent {
            Some(agent) => Ok(SignedIn { agent, csrf }),
            None => Err(SignInFirst(path).into_response()),
        }
    }
}

/// An agent or commune administrator, with their commune. A platform administrator, who has no
/// commune, is sent to the platform's pages.
pub struct CommuneAgent {
    pub agent: Agent,
    pub commune: Commune,
    pub csrf: Csrf,
}

impl CommuneAgent {
    pub fn is_admin(&self) -> bool {
        self.agent.role == Role::CommuneAdmin
    }

    /// A record of another commune is answered like one that does not exist.
    pub fn own(&self, commune_id: CommuneId) -> Result<(), PageError> {
        if commune_id == self.commune.id {
            Ok(())
        } else {
            Err(not_found())
        }
    }

    /// Configuration beyond hours and closures is the commune administrator's.
    pub fn require_admin(&self) -> Result<(), PageError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(PageError::Forbidden(
                "Cette page est réservée à l'administrateur de la commune.".to_owned(),
            ))
        }
    }

    pub fn layout(&self, title: &str, current: &str) -> AgentLayout {
        AgentLayout::for_commune(title, current, self)
    }

    /// Writes one line of the audit log; a failure to write it is logged, never shown (the
    /// change itself is done).
    pub async fn audit(&self, state: &AppState, action: &str, detail: String) {
        audit(state, &self.agent, Some(self.commune.id), action, detail).await;
    }
}

pub async fn audit(
    state: &AppState,
    agent: &Agent,
    commune: Option<CommuneId>,
    action: &str,
    detail: String,
) {
    let entry = AuditEntry {
        commune_id: commune,
        agent_id: Some(agent.id),
        agent_email: agent.email.clone(),
        at: state.engine.now(),
        action: action.to_owned(),
        detail,
    };
    if let Err(e) = state.store().insert_audit(&entry).await {
        tracing::error!(error = %e, action, "cannot write the audit log");
    }
}

impl<S> FromRequestParts<S> for CommuneAgent
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let signed_in = SignedIn::from_request_parts(parts, state).await?;
        let state = AppState::from_ref(state);
        let Some(commune_id) = signed_in.agent.commune_id else {
            return Err(Redirect::to("/agent/plateforme").into_response());
        };
        let commune = state
            .engine
            .config(commune_id)
            .await
            .map_err(|e| PageError::from(e).into_response())?
            .commune
            .clone();
        Ok(CommuneAgent {
            agent: signed_in.agent,
            commune,
            csrf: signed_in.csrf,
        })
    }
}

/// The platform administrator.
pub struct PlatformAdmin {
    pub agent: Agent,
    pub csrf: Csrf,
}

impl<S> FromRequestParts<S> for PlatformAdmin
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let signed_in = SignedIn::from_request_parts(parts, state).await?;
        if signed_in.agent.role != Role::PlatformAdmin {
            // Nothing of the platform exists for a commune's account.
            return Err(not_found().into_response());
        }
        Ok(PlatformAdmin {
            agent: signed_in.agent,
            csrf: signed_in.csrf,
        })
    }
}

pub fn not_found() -> PageError {
    PageError::NotFound(
        "Cette page n'existe pas, ou elle ne concerne pas votre commune.".to_owned(),
    )
}

/// One entry of the back-office menu.
pub struct NavItem {
    pub href: &'static str,
    pub label: &'static str,
    pub current: bool,
}

/// What every back-office page's frame shows.
pub struct AgentLayout {
    pub title: String,
    pub heading_place: String,
    pub who: String,
    pub csrf: String,
    pub nav: Vec<NavItem>,
}

impl AgentLayout {
    fn for_commune(title: &str, current: &str, a: &CommuneAgent) -> Self {
        let mut items = vec![
            ("/agent/jour", "Journée"),
            ("/agent/reserver", "Prendre un rendez-vous"),
            ("/agent/recherche", "Rechercher"),
            ("/agent/fermer", "Fermer une période"),
            ("/agent/configuration", "Configuration"),
            ("/agent/statistiques", "Statistiques"),
        ];
        if a.is_admin() {
            items.push(("/agent/journal", "Journal"));
        }
        AgentLayout {
            title: format!(
                "{title} — Mairie {} — guichet agents",
                crate::domain::wording::de(&a.commune.name)
            ),
            heading_place: format!("Mairie {}", crate::domain::wording::de(&a.commune.name)),
            who: format!("{} ({})", a.agent.name, a.agent.role.label()),
            csrf: a.csrf.token.clone(),
            nav: nav(&items, current),
        }
    }

    fn for_platform(title: &str, current: &str, a: &PlatformAdmin) -> Self {
        let items = [
            ("/agent/plateforme", "Communes"),
            ("/agent/plateforme/comptes", "Comptes"),
        ];
        AgentLayout {
            title: format!("{title} — Plateforme — guichet agents"),
            heading_place: "Plateforme guichet".to_owned(),
            who: format!("{} ({})", a.agent.name, a.agent.role.label()),
            csrf: a.csrf.token.clone(),
            nav: nav(&items, current),
        }
    }
}

fn nav(items: &[(&'static str, &'static str)], current: &str) -> Vec<NavItem> {
    items
        .iter()
        .map(|(href, label)| NavItem {
            href,
            label,
            current: *href == current,
        })
        .collect()
}

/// A back-office page: never cached, never indexed.
pub fn agent_page(state: &AppState, csrf: &Csrf, html: String) -> Response {
    let mut response = page(state, csrf, StatusCode::OK, html);
    response.headers_mut().insert(
        "x-robots-tag",
        axum::http::HeaderValue::from_static("noindex, nofollow"),
    );
    response
}

/// A date as a date field sends it (`2026-12-03`), or as a person types it where the browser
/// shows a plain text field (`03/12/2026`).
pub fn parse_date(text: &str) -> Option<chrono::NaiveDate> {
    let text = text.trim();
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .or_else(|_| chrono::NaiveDate::parse_from_str(text, "%d/%m/%Y"))
        .ok()
}
