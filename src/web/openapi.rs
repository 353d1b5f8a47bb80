//! The OpenAPI document of `/api/v1`, generated from the handlers' annotations so that it cannot
//! drift from the code (a snapshot test shows every change to it).

use super::error::ErrorBody;
use super::{api, booking_api, usage};
use axum::Json;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "guichet",
        description = "Prise de rendez-vous en mairie — API publique. Les heures portent le décalage \
                       UTC de la commune ; les erreurs sont du JSON {code, message}."
    ),
    paths(
        api::communes,
        api::commune,
        api::services,
        api::locations,
        api::slots,
        booking_api::hold,
        booking_api::resend_code,
        booking_api::confirm,
        booking_api::manage,
        booking_api::cancel,
        booking_api::move_appointment,
        usage::sms_usage
    ),
    components(schemas(
        api::CommuneJson,
        api::ServiceJson,
        api::ChannelsJson,
        api::LocationJson,
        api::SlotJson,
        booking_api::HoldBody,
        booking_api::HeldJson,
        booking_api::ConfirmBody,
        booking_api::ConfirmedJson,
        booking_api::CodeSentJson,
        booking_api::AppointmentJson,
        booking_api::PlaceJson,
        booking_api::MoveBody,
        usage::MonthUsage,
        ErrorBody
    )),
    tags((name = "communes", description = "Communes, their services and locations"),
         (name = "slots", description = "Free slots"),
         (name = "booking", description = "Hold a slot, receive a code, confirm"),
         (name = "manage", description = "The citizen's appointment, through the personal token"),
         (name = "platform", description = "Platform administration"))
)]
pub struct ApiDoc;

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    let mut doc = ApiDoc::openapi();
    // utoipa copies the (unset) crate licence as an empty name; say nothing rather than that.
    doc.info.license = None;
    Json(doc)
}
