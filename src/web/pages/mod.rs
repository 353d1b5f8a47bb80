//! The citizens' pages: server-rendered (askama), complete without JavaScript, from a 360 px
//! phone to a desktop. Booking goes commune → service → persons and location → a slot (held
//! the moment it is chosen) → details → the code → the personal page; the personal page
//! shows, cancels and moves the appointment; "find my appointment" sends fresh links.
//!
//! Every form carries the CSRF token of [`super::security`]; every POST answers with a
//! redirect (303) when it succeeded, or with the same page and its errors listed at the top,
//! linked to their fields. Tokens of personal links only ever appear in URLs the citizen holds
//! (logs see route templates, and pages send no referrer).

pub(crate) mod booking;
mod manage;

use super::AppState;
use super::security::Csrf;
use crate::booking::BookingError;
use crate::domain::wording::{de, written_date, written_time};
use crate::domain::{Commune, Location};
use crate::store::StoreError;
use askama::Template;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use chrono::{DateTime, Timelike, Utc};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(booking::home))
        .route("/static/guichet.css", get(css))
        .route("/static/guichet.js", get(js))
        .route("/static/phone.js", get(phone_js))
        .route("/accessibilite", get(accessibility))
        .route("/donnees-personnelles", get(privacy))
        .route("/rdv/retrouver", get(manage::find).post(manage::find_post))
        .route(
            "/rdv/{id}",
            get(booking::details).post(booking::details_post),
        )
        .route(
            "/rdv/{id}/code",
            get(booking::code).post(booking::code_post),
        )
        .route("/rdv/{id}/renvoyer", axum::routing::post(booking::resend))
        .route("/rdv/{id}/liberer", axum::routing::post(booking::release))
        .route("/r/{token}", get(manage::show))
        .route("/r/{token}/rdv.ics", get(manage::ics))
        .route("/r/{token}/accepter", axum::routing::post(manage::accept))
        .route("/r/{token}/refuser", axum::routing::post(manage::decline))
        .route(
            "/r/{token}/annuler",
            get(manage::cancel).post(manage::cancel_post),
        )
        .route(
            "/r/{token}/deplacer",
            get(manage::move_slots).post(manage::move_post),
        )
        .route("/{slug}", get(booking::commune))
        .route("/{slug}/reserver", axum::routing::post(booking::hold))
        .route("/{slug}/demarche/{service}", get(booking::options))
        .route("/{slug}/demarche/{service}/creneaux", get(booking::slots))
}

/// What every page's frame shows.
pub struct Layout {
    /// The whole `<title>`: the step first, then the commune, then the site.
    pub title: String,
    /// Where the site name leads: the commune's page once one is chosen.
    pub home: String,
    pub brand: String,
    pub csrf: String,
}

impl Layout {
    fn new(title: &str, commune: Option<&Commune>, csrf: &Csrf) -> Self {
        match commune {
            Some(c) => Layout {
                title: format!("{title} — Mairie {} — guichet", de(&c.name)),
                home: format!("/{}", c.slug),
                brand: format!("Mairie {}", de(&c.name)),
                csrf: csrf.token.clone(),
            },
            None => Layout {
                title: format!("{title} — guichet"),
                home: "/".to_owned(),
                brand: "guichet".to_owned(),
                csrf: csrf.token.clone(),
            },
        }
    }

    /// The same page showing errors: screen-reader users hear it first in the title.
    fn with_errors(mut self, errors: &[FieldError]) -> Self {
        if !errors.is_empty() {
            self.title = format!("Erreur : {}", self.title);
        }
        self
    }
}

/// One problem in a form, linked from the summary to its field (`field` is the input's id).
#[derive(Debug, Clone)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub(crate) fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// An input with its label, hint, value and error.
#[derive(Debug, Clone, Default)]
pub struct Field {
    pub name: String,
    pub label: String,
    pub hint: String,
    pub kind: &'static str,
    pub value: String,
    pub error: String,
    pub autocomplete: &'static str,
    pub inputmode: &'static str,
    pub optional: bool,
}

impl Field {
    fn text(name: &str, label: &str) -> Self {
        Field {
            name: name.to_owned(),
            label: label.to_owned(),
            kind: "text",
            ..Field::default()
        }
    }

    fn hint(mut self, hint: &str) -> Self {
        self.hint = hint.to_owned();
        self
    }

    fn kind(mut self, kind: &'static str) -> Self {
        self.kind = kind;
        self
    }

    fn autocomplete(mut self, autocomplete: &'static str) -> Self {
        self.autocomplete = autocomplete;
        self
    }

    fn inputmode(mut self, inputmode: &'static str) -> Self {
        self.inputmode = inputmode;
        self
    }

    fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    fn value(mut self, value: &str) -> Self {
        self.value = value.to_owned();
        self
    }

    /// Takes this field's message from `errors`, if any.
    fn with_error_from(mut self, errors: &[FieldError]) -> Self {
        if let Some(e) = errors.iter().find(|e| e.field == self.name) {
            self.error = e.message.clone();
        }
        self
    }

    pub fn described_by(&self) -> String {
        let mut ids = Vec::new();
        if !self.hint.is_empty() {
            ids.push(format!("{}-hint", self.name));
        }
        if !self.error.is_empty() {
            ids.push(format!("{}-error", self.name));
        }
        ids.join(" ")
    }
}

/// An appointment as the summary shows it.
pub struct AppointmentView {
    pub service: String,
    pub when: String,
    pub duration: String,
    pub persons: String,
    pub place: String,
    pub address: String,
    pub access_notes: String,
    pub name: String,
}

/// "jeudi 3 décembre 2026 à 9 h 30", in the commune's time.
pub(crate) fn when(commune: &Commune, at: DateTime<Utc>) -> String {
    let local = at.with_timezone(&commune.timezone).naive_local();
    format!(
        "{} à {}",
        written_date(local.date()),
        written_time(local.time())
    )
}

pub(crate) fn local_time(commune: &Commune, at: DateTime<Utc>) -> String {
    written_time(at.with_timezone(&commune.timezone).time())
}

pub(crate) fn minutes_text(minutes: i64) -> String {
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m} minutes"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m:02}"),
    }
}

pub(crate) fn persons_text(n: i32) -> String {
    match n {
        1 => "1 personne".to_owned(),
        n => format!("{n} personnes"),
    }
}

pub(crate) fn address(location: &Location) -> String {
    format!(
        "{}, {} {}",
        location.address, location.postcode, location.city
    )
}

/// The morning ends at noon, local time.
fn is_morning(commune: &Commune, at: DateTime<Utc>) -> bool {
    at.with_timezone(&commune.timezone).hour() < 12
}

/// A rendered page, with the CSRF cookie when this browser had none.
pub(crate) fn page(state: &AppState, csrf: &Csrf, status: StatusCode, html: String) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response();
    if let Some(cookie) = csrf.set_cookie(state.config.public_url.starts_with("https://")) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    // Pages change with every booking: never serve one from a cache.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub(crate) fn render(template: &impl Template) -> Result<String, PageError> {
    template
        .render()
        .map_err(|e| PageError::Render(e.to_string()))
}

/// After a successful POST: the next page, fetched with GET.
pub(crate) fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// What a page handler may fail with; each answer is a page in French.
#[derive(Debug)]
pub enum PageError {
    NotFound(String),
    /// The form did not carry this browser's CSRF token.
    Csrf,
    /// This address asked too much.
    TooMany,
    BadRequest(String),
    /// Signed in, but not allowed here.
    Forbidden(String),
    Booking(BookingError),
    Render(String),
}

impl From<BookingError> for PageError {
    fn from(e: BookingError) -> Self {
        PageError::Booking(e)
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        PageError::Booking(BookingError::Store(e))
    }
}

#[derive(Template)]
#[template(path = "pages/message.html")]
struct MessagePage {
    l: Layout,
    heading: String,
    paragraphs: Vec<String>,
    link_url: String,
    link_text: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, heading, message) = match &self {
            PageError::NotFound(what) => (StatusCode::NOT_FOUND, "Page introuvable", what.clone()),
            PageError::Csrf => (
                StatusCode::FORBIDDEN,
                "Formulaire expiré",
                "Ce formulaire n'a pas pu être vérifié : la page était peut-être ouverte depuis longtemps, ou votre navigateur refuse les cookies. Revenez en arrière, rechargez la page et recommencez.".to_owned(),
            ),
            PageError::TooMany => (
                StatusCode::TOO_MANY_REQUESTS,
                "Trop de demandes",
                "Trop de demandes sont venues de votre connexion en peu de temps. Attendez une heure, ou appelez votre mairie.".to_owned(),
            ),
            PageError::Forbidden(message) => {
                (StatusCode::FORBIDDEN, "Accès refusé", message.clone())
            }
            PageError::BadRequest(message) => {
                (StatusCode::BAD_REQUEST, "Demande incomplète", message.clone())
            }
            PageError::Booking(BookingError::Store(StoreError::Transient(_))) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Service très demandé",
                "Le service est très demandé en ce moment. Réessayez dans quelques instants."
                    .to_owned(),
            ),
            PageError::Booking(e @ BookingError::Store(_)) => {
                tracing::error!(error = ?anyhow::Error::from(BookingError::Store(StoreError::Corrupt(e.to_string()))), "page failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Erreur du service",
                    e.message(),
                )
            }
            PageError::Booking(e) => {
                // The same status as the API gives for the same refusal.
                let status = super::error::booking_status(e);
                (status, "Impossible de continuer", e.message())
            }
            PageError::Render(cause) => {
                tracing::error!(cause, "page could not be rendered");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Erreur du service",
                    "Une erreur de notre côté empêche d'afficher cette page. Réessayez dans quelques minutes.".to_owned(),
                )
            }
        };
        let layout = Layout {
            title: format!("{heading} — guichet"),
            home: "/".to_owned(),
            brand: "guichet".to_owned(),
            csrf: String::new(),
        };
        let html = MessagePage {
            l: layout,
            heading: heading.to_owned(),
            paragraphs: vec![message],
            link_url: "/".to_owned(),
            link_text: "Revenir à l'accueil".to_owned(),
        }
        .render()
        .unwrap_or_else(|_| heading.to_owned());
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response()
    }
}

pub(crate) fn check_csrf(csrf: &Csrf, submitted: Option<&String>) -> Result<(), PageError> {
    if csrf.accepts(submitted.map_or("", String::as_str)) {
        Ok(())
    } else {
        Err(PageError::Csrf)
    }
}

/// Assets are compiled in: no CDN, nothing fetched from elsewhere.
async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../../assets/guichet.css"),
    )
}

async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../../assets/guichet.js"),
    )
}

/// The demo telephone's script (`/dev/phone`).
async fn phone_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../../assets/phone.js"),
    )
}

#[derive(Template)]
#[template(path = "pages/accessibility.html")]
struct AccessibilityPage {
    l: Layout,
}

#[derive(Template)]
#[template(path = "pages/privacy.html")]
struct PrivacyPage {
    l: Layout,
}

async fn accessibility(
    axum::extract::State(state): axum::extract::State<AppState>,
    csrf: Csrf,
) -> Result<Response, PageError> {
    let html = render(&AccessibilityPage {
        l: Layout::new("Déclaration d'accessibilité", None, &csrf),
    })?;
    Ok(page(&state, &csrf, StatusCode::OK, html))
}

async fn privacy(
    axum::extract::State(state): axum::extract::State<AppState>,
    csrf: Csrf,
) -> Result<Response, PageError> {
    let html = render(&PrivacyPage {
        l: Layout::new("Données personnelles", None, &csrf),
    })?;
    Ok(page(&state, &csrf, StatusCode::OK, html))
}

/// A page saying what happened and where to go next.
fn message_page(
    state: &AppState,
    csrf: &Csrf,
    commune: Option<&Commune>,
    status: StatusCode,
    heading: &str,
    paragraphs: Vec<String>,
    link: (&str, &str),
) -> Result<Response, PageError> {
    let html = render(&MessagePage {
        l: Layout::new(heading, commune, csrf),
        heading: heading.to_owned(),
        paragraphs,
        link_url: link.0.to_owned(),
        link_text: link.1.to_owned(),
    })?;
    Ok(page(state, csrf, status, html))
}
