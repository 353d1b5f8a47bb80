//! The JSON booking API: hold a slot with contact details (a code is sent), confirm with the
//! code (the answer carries the personal link), then read, cancel or move through the personal
//! token. Every POST may carry an `Idempotency-Key` (see [`super::idempotency`]).

use super::AppState;
use super::api::{commune_or_404, local_rfc3339};
use super::error::{ApiError, ErrorBody};
use super::security::{Allowance, ClientIp};
use crate::booking::{BookingError, BookingRequest, Cancellation};
use crate::domain::otp::{OtpCode, token_hash};
use crate::domain::{
    AntsApplicationId, Appointment, AppointmentId, Channel, Citizen, CitizenName, Email, PhoneE164,
    Status,
};
use crate::notify::CodeDestination;
use axum::Json;
use axum::extract::rejection::JsonRejection;
// Path parameters whose rejection is the API's JSON error.
use super::error::ApiPath as Path;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A JSON body that could not be read becomes a 400 with a French reason.
fn body<T>(json: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    json.map(|Json(v)| v).map_err(|e| {
        ApiError::bad_parameter(
            "body",
            format!(
                "Le corps de la requête n'est pas un JSON attendu : {}",
                e.body_text()
            ),
        )
    })
}

fn parse_start(field: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(value.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::bad_parameter(
                field,
                format!(
                    "« {value} » n'est pas une heure avec son décalage UTC, par exemple 2026-12-03T09:30:00+01:00 (reprenez le champ start d'un créneau)."
                ),
            )
        })
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct HoldBody {
    /// Service id.
    pub service: i64,
    /// The `start` of a free slot, with its offset.
    #[schema(example = "2026-12-03T09:30:00+01:00")]
    pub start: String,
    /// Location id; the first location with a free seat when absent.
    pub location: Option<i64>,
    /// 1 when absent.
    pub persons: Option<u32>,
    /// Name of the person coming.
    pub name: String,
    /// Mobile number: the code goes there by SMS.
    pub phone: Option<String>,
    /// E-mail: the code goes there when there is no mobile number.
    pub email: Option<String>,
    /// CNI/passport: one ANTS pre-application number per person.
    pub ants_application_ids: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HeldJson {
    #[schema(value_type = String, format = Uuid)]
    pub id: AppointmentId,
    /// `held`.
    pub status: String,
    /// Until when the slot is kept for the code to be typed.
    pub expires_at: String,
    pub start: String,
    pub end: String,
    pub location: i64,
    pub service: i64,
    pub persons: i32,
    /// `sms` or `email`.
    pub code_channel: String,
    /// Where the code went, masked (`+33 6 ** ** ** 78`).
    pub code_sent_to: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ConfirmBody {
    /// The six digits received.
    pub code: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConfirmedJson {
    /// `confirmed`.
    pub status: String,
    /// The personal token: it reads, cancels and moves the appointment. Keep it secret.
    pub token: String,
    /// The citizen's personal page.
    pub manage_url: String,
    pub appointment: AppointmentJson,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CodeSentJson {
    pub code_channel: String,
    pub code_sent_to: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PlaceJson {
    pub id: i64,
    pub name: String,
    pub address: String,
    pub postcode: String,
    pub city: String,
    pub access_notes: String,
}

/// An appointment as its holder sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppointmentJson {
    #[schema(value_type = String, format = Uuid)]
    pub id: AppointmentId,
    /// `held`, `confirmed`, `cancelled_by_citizen`, `cancelled_by_commune`, `honoured`,
    /// `no_show`, `moved`, `expired`.
    pub status: String,
    pub status_label: String,
    pub start: String,
    pub end: String,
    pub commune: String,
    pub commune_name: String,
    pub service: i64,
    pub service_name: String,
    pub persons: i32,
    pub name: String,
    pub location: PlaceJson,
    pub what_to_bring: String,
    pub can_cancel: bool,
    pub can_move: bool,
    pub cancel_reason: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct MoveBody {
    /// The `start` of a free slot of the same service, with its offset.
    pub start: String,
    pub location: Option<i64>,
}

async fn appointment_json(
    state: &AppState,
    appointment: &Appointment,
) -> Result<AppointmentJson, ApiError> {
    let details = state.engine.details(appointment).await?;
    let now = state.engine.now();
    let status = appointment.effective_status(now);
    let tz = details.commune.timezone;
    let open = matches!(status, Status::Confirmed | Status::Held) && appointment.starts_at > now;
    // A held appointment behind a link is a replacement the commune offers: it is accepted
    // (by its link or by SMS) or declined, not moved.
    let movable = status == Status::Confirmed && appointment.starts_at > now;
    Ok(AppointmentJson {
        id: appointment.id,
        status: status.as_str().to_owned(),
        status_label: status.label().to_owned(),
        start: local_rfc3339(appointment.starts_at, tz),
        end: local_rfc3339(appointment.ends_at, tz),
        commune: details.commune.slug,
        commune_name: details.commune.name,
        service: details.service.id,
        service_name: details.service.name,
        persons: appointment.persons,
        name: appointment.citizen.name.as_str().to_owned(),
        location: PlaceJson {
            id: details.location.id,
            name: details.location.name,
            address: details.location.address,
            postcode: details.location.postcode,
            city: details.location.city,
            access_notes: details.location.access_notes,
        },
        what_to_bring: details.service.what_to_bring,
        can_cancel: open,
        can_move: movable,
        cancel_reason: appointment.cancel_reason.clone(),
    })
}

fn code_sent(destination: &CodeDestination) -> CodeSentJson {
    CodeSentJson {
        code_channel: destination.channel().as_str().to_owned(),
        code_sent_to: destination.masked(),
    }
}

/// Holds a slot and sends a one-time code.
#[utoipa::path(post, path = "/api/v1/communes/{slug}/appointments", tag = "booking",
    params(("slug" = String, Path, description = "Commune identifier"),
           ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer")),
    request_body = HoldBody,
    responses((status = 201, body = HeldJson), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn hold(
    State(state): State<AppState>,
    ip: ClientIp,
    Path(slug): Path<String>,
    json: Result<Json<HoldBody>, JsonRejection>,
) -> Result<(StatusCode, Json<HeldJson>), ApiError> {
    let commune = commune_or_404(&state, &slug).await?;
    let b = body(json)?;
    if !state.limits.take(Allowance::Hold, ip.0) || !state.limits.take(Allowance::Send, ip.0) {
        return Err(ApiError::TOO_MANY_FROM_ADDRESS);
    }
    let start = parse_start("start", &b.start)?;
    let name = CitizenName::parse(&b.name).map_err(|e| ApiError::bad_parameter("name", e.0))?;
    let phone = non_empty(&b.phone)
        .map(PhoneE164::parse)
        .transpose()
        .map_err(|e| ApiError::bad_parameter("phone", e.0))?;
    let email = non_empty(&b.email)
        .map(Email::parse)
        .transpose()
        .map_err(|e| ApiError::bad_parameter("email", e.0))?;
    let ants = b
        .ants_application_ids
        .unwrap_or_default()
        .iter()
        .filter(|a| !a.trim().is_empty())
        .map(|a| AntsApplicationId::parse(a))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::bad_parameter("ants_application_ids", e.0))?;
    let request = BookingRequest {
        commune: commune.id,
        service: b.service,
        start,
        location: b.location,
        persons: b.persons.unwrap_or(1),
        citizen: Citizen {
            name,
            phone,
            email,
            ants_application_ids: ants,
        },
        channel: Channel::Web,
    };
    let (appointment, destination) = match state.engine.book_with_code(&request).await {
        // Whoever typed these details may not own them: the owner was told where and when.
        Err(BookingError::Duplicate(Some(_))) => return Err(ApiError::DuplicateHidden),
        other => other?,
    };
    let tz = commune.timezone;
    let sent = code_sent(&destination);
    Ok((
        StatusCode::CREATED,
        Json(HeldJson {
            id: appointment.id,
            status: appointment.status.as_str().to_owned(),
            expires_at: appointment
                .hold_expires_at
                .map(|t| local_rfc3339(t, tz))
                .unwrap_or_default(),
            start: local_rfc3339(appointment.starts_at, tz),
            end: local_rfc3339(appointment.ends_at, tz),
            location: appointment.location_id,
            service: appointment.service_id,
            persons: appointment.persons,
            code_channel: sent.code_channel,
            code_sent_to: sent.code_sent_to,
        }),
    ))
}

/// Sends a new code for a held appointment (three sends per destination in ten minutes).
#[utoipa::path(post, path = "/api/v1/appointments/{id}/code", tag = "booking",
    params(("id" = String, Path, description = "Appointment id")),
    responses((status = 202, body = CodeSentJson), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn resend_code(
    State(state): State<AppState>,
    ip: ClientIp,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<CodeSentJson>), ApiError> {
    let id = parse_id(&id)?;
    if !state.limits.take(Allowance::Send, ip.0) {
        return Err(ApiError::TOO_MANY_FROM_ADDRESS);
    }
    let destination = state.engine.resend_code(id).await?;
    Ok((StatusCode::ACCEPTED, Json(code_sent(&destination))))
}

fn parse_id(id: &str) -> Result<AppointmentId, ApiError> {
    id.parse()
        .map_err(|_| ApiError::Booking(BookingError::AppointmentNotFound))
}

/// Confirms a held appointment with its code; answers with the personal link.
#[utoipa::path(post, path = "/api/v1/appointments/{id}/confirm", tag = "booking",
    params(("id" = String, Path, description = "Appointment id"),
           ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer")),
    request_body = ConfirmBody,
    responses((status = 200, body = ConfirmedJson), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 410, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn confirm(
    State(state): State<AppState>,
    Path(id): Path<String>,
    json: Result<Json<ConfirmBody>, JsonRejection>,
) -> Result<Json<ConfirmedJson>, ApiError> {
    let id = parse_id(&id)?;
    let b = body(json)?;
    let code = OtpCode::parse(&b.code).map_err(|e| ApiError::bad_parameter("code", e.0))?;
    let (appointment, token) = state.engine.confirm_with_code(id, &code).await?;
    Ok(Json(ConfirmedJson {
        status: appointment.status.as_str().to_owned(),
        manage_url: state.engine.notifier().manage_url(&token),
        token,
        appointment: appointment_json(&state, &appointment).await?,
    }))
}

async fn by_token(state: &AppState, token: &str) -> Result<Appointment, ApiError> {
    state
        .store()
        .appointment_by_token(&token_hash(token))
        .await?
        .ok_or(ApiError::UnknownLink)
}

/// The appointment behind a personal link.
#[utoipa::path(get, path = "/api/v1/manage/{token}", tag = "manage",
    params(("token" = String, Path, description = "Personal token")),
    responses((status = 200, body = AppointmentJson), (status = 404, body = ErrorBody)))]
pub async fn manage(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Json<AppointmentJson>, ApiError> {
    let appointment = by_token(&state, &token).await?;
    Ok(Json(appointment_json(&state, &appointment).await?))
}

/// Cancels the appointment behind a personal link.
#[utoipa::path(post, path = "/api/v1/manage/{token}/cancel", tag = "manage",
    params(("token" = String, Path, description = "Personal token")),
    responses((status = 200, body = AppointmentJson), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Json<AppointmentJson>, ApiError> {
    let appointment = by_token(&state, &token).await?;
    let cancelled = state
        .engine
        .cancel(appointment.id, &Cancellation::ByCitizen)
        .await?;
    Ok(Json(appointment_json(&state, &cancelled).await?))
}

/// Moves the appointment behind a personal link to another free slot of the same service.
#[utoipa::path(post, path = "/api/v1/manage/{token}/move", tag = "manage",
    params(("token" = String, Path, description = "Personal token")),
    request_body = MoveBody,
    responses((status = 200, body = AppointmentJson), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn move_appointment(
    State(state): State<AppState>,
    ip: ClientIp,
    Path(token): Path<String>,
    json: Result<Json<MoveBody>, JsonRejection>,
) -> Result<Json<AppointmentJson>, ApiError> {
    let appointment = by_token(&state, &token).await?;
    let b = body(json)?;
    let start = parse_start("start", &b.start)?;
    // Moved, the offer would become a hold nothing confirms (its acceptance looks for the
    // offer), and run out.
    if appointment.effective_status(state.engine.now()) == Status::Held {
        return Err(ApiError::OFFER_NOT_MOVABLE);
    }
    // Each move sends a notice, as on the web page: bouncing between two slots must not run
    // up the commune's SMS bill.
    if !state.limits.take(Allowance::Send, ip.0) {
        return Err(ApiError::TOO_MANY_FROM_ADDRESS);
    }
    let moved = state
        .engine
        .move_to(appointment.id, start, b.location)
        .await?;
    Ok(Json(appointment_json(&state, &moved).await?))
}
