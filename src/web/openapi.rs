//! The OpenAPI document of `/api/v1`, generated from the handlers' annotations so that it cannot
//! drift from the code (a snapshot test shows every change to it).

use super::api;
use super::error::ErrorBody;
use axum::Json;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "guichet",
        description = "Prise de rendez-vous en mairie — API publique. Les heures portent le décalage \
                       UTC de la commune ; les erreurs sont du JSON {code, message}."
    ),
    paths(api::communes, api::commune, api::services, api::locations, api::slots),
    components(schemas(
        api::CommuneJson,
        api::ServiceJson,
        api::ChannelsJson,
        api::LocationJson,
        api::SlotJson,
        ErrorBody
    )),
    tags((name = "communes", description = "Communes, their services and locations"),
         (name = "slots", description = "Free slots"))
)]
pub struct ApiDoc;

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    let mut doc = ApiDoc::openapi();
    // utoipa copies the (unset) crate licence as an empty name; say nothing rather than that.
    doc.info.license = None;
    Json(doc)
}
