//! The one error type of HTTP handlers. It answers JSON `{code, message}` (a machine code, a
//! French sentence) with the right status; a 5xx logs its cause chain and shows only a generic
//! sentence. Handlers return `Result<_, ApiError>` and use `?` on engine and store calls.

use crate::booking::BookingError;
use crate::store::StoreError;
use axum::Json;
use axum::extract::FromRequestParts;
use axum::extract::rejection::PathRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Booking(#[from] BookingError),
    /// A query parameter or field that cannot be understood.
    #[error("invalid parameter {field}: {message}")]
    BadParameter { field: String, message: String },
    /// A duplicate refused to someone who has not proven they own the contact details: where
    /// and when the other appointment is went to its owner instead.
    #[error("duplicate appointment (details withheld)")]
    DuplicateHidden,
    /// A personal token that leads nowhere.
    #[error("unknown personal link")]
    UnknownLink,
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// A fixed answer: a machine code and a French message.
    #[error("{code}: {message}")]
    Plain {
        status: StatusCode,
        code: &'static str,
        message: &'static str,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `slot_taken`.
    pub code: String,
    /// What went wrong and what to do, in French.
    pub message: String,
    /// The parameter at fault, for `invalid_parameter`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Tries left, for `wrong_code`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts_left: Option<i32>,
}

impl ErrorBody {
    fn new(code: &str, message: String) -> Self {
        Self {
            code: code.to_owned(),
            message,
            field: None,
            attempts_left: None,
        }
    }
}

impl ApiError {
    /// One address asked for too many holds or codes (see [`super::security::Limits`]).
    pub const TOO_MANY_FROM_ADDRESS: ApiError = ApiError::Plain {
        status: StatusCode::TOO_MANY_REQUESTS,
        code: "too_many_requests",
        message: "Trop de demandes sont venues de votre connexion en peu de temps. Réessayez dans une heure, ou appelez votre mairie.",
    };

    pub const OFFER_NOT_MOVABLE: ApiError = ApiError::Plain {
        status: StatusCode::CONFLICT,
        code: "offer_not_movable",
        message: "Ce créneau vous est proposé par la mairie en remplacement : acceptez-le avec le lien reçu par SMS ou e-mail, puis déplacez-le si besoin.",
    };

    pub fn bad_parameter(field: &str, message: impl Into<String>) -> Self {
        ApiError::BadParameter {
            field: field.to_owned(),
            message: message.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadParameter { .. } => StatusCode::BAD_REQUEST,
            ApiError::DuplicateHidden => StatusCode::CONFLICT,
            ApiError::UnknownLink => StatusCode::NOT_FOUND,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Plain { status, .. } => *status,
            ApiError::Store(StoreError::Transient(_)) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Booking(e) => booking_status(e),
        }
    }

    fn body(&self) -> ErrorBody {
        match self {
            ApiError::BadParameter { field, message } => ErrorBody {
                field: Some(field.clone()),
                ..ErrorBody::new("invalid_parameter", message.clone())
            },
            ApiError::DuplicateHidden => ErrorBody::new(
                "duplicate_appointment",
                "Un rendez-vous pour cette démarche existe déjà avec ces coordonnées. Son lieu et son horaire viennent d'être rappelés au numéro ou à l'adresse utilisés pour le prendre ; pour le changer, utilisez le lien reçu à sa confirmation.".into(),
            ),
            ApiError::UnknownLink => ErrorBody::new(
                "unknown_link",
                "Ce lien ne correspond à aucun rendez-vous. Vérifiez qu'il est complet, ou demandez un nouveau lien à la mairie.".into(),
            ),
            ApiError::Forbidden(message) => ErrorBody::new("forbidden", (*message).into()),
            ApiError::Plain { code, message, .. } => ErrorBody::new(code, (*message).into()),
            ApiError::Booking(e @ BookingError::WrongCode { attempts_left }) => ErrorBody {
                attempts_left: Some(*attempts_left),
                ..ErrorBody::new(e.code(), e.message())
            },
            ApiError::Booking(e) => ErrorBody::new(e.code(), e.message()),
            ApiError::Store(_) => internal_body(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = ?anyhow::Error::from(self), "request failed");
            return (status, Json(internal_body())).into_response();
        }
        (status, Json(self.body())).into_response()
    }
}

/// The status of a refusal of the engine, for the API and the pages alike.
pub(crate) fn booking_status(e: &BookingError) -> StatusCode {
    match e {
        BookingError::CommuneNotFound
        | BookingError::ServiceNotFound
        | BookingError::LocationNotFound
        | BookingError::AppointmentNotFound => StatusCode::NOT_FOUND,
        BookingError::InvalidPersons { .. }
        | BookingError::ContactRequired
        | BookingError::AntsNotExpected
        | BookingError::TooManyAntsIds { .. }
        | BookingError::RepeatedAntsId
        | BookingError::SlotUnavailable
        | BookingError::InvalidPeriod => StatusCode::UNPROCESSABLE_ENTITY,
        BookingError::ChannelNotAllowed(_) => StatusCode::FORBIDDEN,
        BookingError::SlotTaken
        | BookingError::Duplicate(_)
        | BookingError::NotModifiable(_)
        | BookingError::AlreadyStarted
        | BookingError::ProposalLapsed
        | BookingError::TooEarlyToMark
        | BookingError::AlreadyConfirmed => StatusCode::CONFLICT,
        BookingError::WrongCode { .. }
        | BookingError::CodeExpired
        | BookingError::CodeBurnt
        | BookingError::CannotReceiveSms => StatusCode::UNPROCESSABLE_ENTITY,
        BookingError::TooManyCodes | BookingError::SmsBudgetExhausted => {
            StatusCode::TOO_MANY_REQUESTS
        }
        BookingError::HoldExpired => StatusCode::GONE,
        BookingError::Store(StoreError::Transient(_)) => StatusCode::SERVICE_UNAVAILABLE,
        BookingError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn internal_body() -> ErrorBody {
    ErrorBody::new(
        "internal_error",
        BookingError::Store(StoreError::Corrupt(String::new())).message(),
    )
}

/// What a handler that panicked answers (see `CatchPanicLayer` in the router).
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = detail, "handler panicked");
    (StatusCode::INTERNAL_SERVER_ERROR, Json(internal_body())).into_response()
}

/// A path parameter of the API (`/manage/{token}`, …). A path axum cannot read (bytes that are
/// not UTF-8) answers the API's JSON 400, not axum's plain text.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

impl From<PathRejection> for ApiError {
    fn from(_: PathRejection) -> Self {
        ApiError::bad_parameter(
            "path",
            "Cette adresse contient des caractères illisibles. Voir /api/v1/openapi.json.",
        )
    }
}

/// A JSON 405 for a route of the API asked with another method.
pub async fn api_method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(ErrorBody::new(
            "method_not_allowed",
            "Cette ressource de l'API ne s'utilise pas avec cette méthode. Voir /api/v1/openapi.json."
                .into(),
        )),
    )
        .into_response()
}

/// A JSON 404 for paths under `/api` that match no route.
pub async fn api_not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(ErrorBody::new(
            "not_found",
            "Cette adresse ne correspond à aucune ressource de l'API. Voir /api/v1/openapi.json."
                .into(),
        )),
    )
        .into_response()
}
