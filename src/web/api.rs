//! The read-only JSON API under `/api/v1`: communes, their services and locations, and free
//! slots. Times carry the commune's UTC offset (`2026-12-03T09:30:00+01:00`). Query parameters
//! are parsed by hand so that each mistake gets its own French reason and the name of the field.

use super::AppState;
use super::error::{ApiError, ErrorBody};
use crate::booking::BookingError;
use crate::domain::slots::SlotFilter;
use crate::domain::{Category, Commune, Location, Service};
use axum::Json;
use axum::extract::rejection::QueryRejection;
// Path parameters whose rejection is the API's JSON error.
use super::error::ApiPath as Path;
use axum::extract::{Query, State};
use chrono::{DateTime, Duration, NaiveDate, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

/// The longest span one slots request may cover.
pub const MAX_RANGE_DAYS: i64 = 366;
/// The span covered when `to` is not given.
pub const DEFAULT_RANGE_DAYS: i64 = 31;

/// `2026-12-03T09:30:00+01:00`: local time with its offset.
pub fn local_rfc3339(at: DateTime<Utc>, tz: Tz) -> String {
    at.with_timezone(&tz)
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CommuneJson {
    /// Identifier used in URLs (`/annecy`).
    pub slug: String,
    pub name: String,
    pub insee_code: String,
    /// IANA time zone of the commune; every local time is in it.
    pub timezone: String,
    /// Numbers (E.164) whose calls this commune's voice menu answers.
    pub phone_numbers: Vec<String>,
    pub switchboard_number: Option<String>,
    /// The commune's booking page.
    pub booking_url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelsJson {
    pub web: bool,
    pub phone: bool,
    pub agent: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceJson {
    pub id: i64,
    pub name: String,
    pub spoken_name: String,
    /// `titres` (CNI/passport), `scolaire`, `elus`, `etat_civil` or `autre`.
    #[schema(value_type = String, example = "titres")]
    pub category: Category,
    /// Length of the appointment for one person; a booking lasts `persons` times this.
    pub duration_minutes: i32,
    pub max_persons: i32,
    pub min_notice_minutes: i32,
    pub horizon_days: i32,
    pub channels: ChannelsJson,
    pub what_to_bring: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LocationJson {
    pub id: i64,
    pub name: String,
    pub address: String,
    pub postcode: String,
    pub city: String,
    pub access_notes: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SlotJson {
    /// Local start with its UTC offset.
    #[schema(example = "2026-12-03T09:30:00+01:00")]
    pub start: String,
    #[schema(example = "2026-12-03T09:50:00+01:00")]
    pub end: String,
    /// Location id.
    pub location: i64,
    pub location_name: String,
}

impl CommuneJson {
    fn new(c: Commune, public_url: &str) -> Self {
        Self {
            booking_url: format!("{public_url}/{}", c.slug),
            slug: c.slug,
            name: c.name,
            insee_code: c.insee_code,
            timezone: c.timezone.name().to_owned(),
            phone_numbers: c.phone_numbers,
            switchboard_number: c.switchboard_number,
        }
    }
}

impl From<Service> for ServiceJson {
    fn from(s: Service) -> Self {
        Self {
            id: s.id,
            name: s.name,
            spoken_name: s.spoken_name,
            category: s.category,
            duration_minutes: s.duration_minutes,
            max_persons: s.max_persons,
            min_notice_minutes: s.min_notice_minutes,
            horizon_days: s.horizon_days,
            channels: ChannelsJson {
                web: s.channels.web,
                phone: s.channels.phone,
                agent: s.channels.agent,
            },
            what_to_bring: s.what_to_bring,
        }
    }
}

impl From<Location> for LocationJson {
    fn from(l: Location) -> Self {
        Self {
            id: l.id,
            name: l.name,
            address: l.address,
            postcode: l.postcode,
            city: l.city,
            access_notes: l.access_notes,
        }
    }
}

pub async fn commune_or_404(state: &AppState, slug: &str) -> Result<Commune, ApiError> {
    state
        .engine
        .commune_by_slug(slug)
        .await?
        .ok_or(ApiError::Booking(BookingError::CommuneNotFound))
}

/// Every commune served by this platform.
#[utoipa::path(get, path = "/api/v1/communes", tag = "communes",
    responses((status = 200, body = [CommuneJson])))]
pub async fn communes(State(state): State<AppState>) -> Result<Json<Vec<CommuneJson>>, ApiError> {
    let communes = state.store().communes().await?;
    Ok(Json(
        communes
            .into_iter()
            .map(|c| CommuneJson::new(c, &state.config.public_url))
            .collect(),
    ))
}

/// One commune.
#[utoipa::path(get, path = "/api/v1/communes/{slug}", tag = "communes",
    params(("slug" = String, Path, description = "Commune identifier, e.g. `annecy`")),
    responses((status = 200, body = CommuneJson), (status = 404, body = ErrorBody)))]
pub async fn commune(
    State(state): State<AppState>,
    Path(slug): Path<String>,
) -> Result<Json<CommuneJson>, ApiError> {
    let commune = commune_or_404(&state, &slug).await?;
    Ok(Json(CommuneJson::new(commune, &state.config.public_url)))
}

/// The services ("démarches") a commune offers.
#[utoipa::path(get, path = "/api/v1/communes/{slug}/services", tag = "communes",
    params(("slug" = String, Path, description = "Commune identifier")),
    responses((status = 200, body = [ServiceJson]), (status = 404, body = ErrorBody)))]
pub async fn services(
    State(state): State<AppState>,
    Path(slug): Path<String>,
) -> Result<Json<Vec<ServiceJson>>, ApiError> {
    let commune = commune_or_404(&state, &slug).await?;
    let services = state.store().services(commune.id).await?;
    Ok(Json(
        services
            .into_iter()
            .filter(|s| s.active)
            .map(ServiceJson::from)
            .collect(),
    ))
}

/// The places ("lieux") where a commune receives appointments.
#[utoipa::path(get, path = "/api/v1/communes/{slug}/locations", tag = "communes",
    params(("slug" = String, Path, description = "Commune identifier")),
    responses((status = 200, body = [LocationJson]), (status = 404, body = ErrorBody)))]
pub async fn locations(
    State(state): State<AppState>,
    Path(slug): Path<String>,
) -> Result<Json<Vec<LocationJson>>, ApiError> {
    let commune = commune_or_404(&state, &slug).await?;
    let locations = state.store().locations(commune.id).await?;
    Ok(Json(
        locations
            .into_iter()
            .filter(|l| l.active)
            .map(LocationJson::from)
            .collect(),
    ))
}

/// Query parameters of the slots route (documentation only: they are parsed by hand).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct SlotsQuery {
    /// Service id (from `/services`). Required.
    service: i64,
    /// Number of persons, 1 by default, at most the service's `max_persons`.
    persons: Option<u32>,
    /// Location id; any location when absent.
    location: Option<i64>,
    /// First local date, `YYYY-MM-DD`; today when absent.
    from: Option<String>,
    /// Last local date included, `YYYY-MM-DD`; 31 days after `from` when absent.
    to: Option<String>,
    /// At most this many slots (1–1000).
    limit: Option<usize>,
}

fn parse_int<T: std::str::FromStr>(field: &str, value: &str, what: &str) -> Result<T, ApiError> {
    value
        .trim()
        .parse()
        .map_err(|_| ApiError::bad_parameter(field, format!("« {value} » n'est pas {what}.")))
}

fn parse_date(field: &str, value: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(value.trim(), "%Y-%m-%d").map_err(|_| {
        ApiError::bad_parameter(
            field,
            format!(
                "« {value} » n'est pas une date au format AAAA-MM-JJ (par exemple 2026-12-03)."
            ),
        )
    })
}

/// Free slots of a service, in time order, from the commune's opening hours minus closures,
/// public holidays, minimum notice, the booking horizon and seats already taken.
#[utoipa::path(get, path = "/api/v1/communes/{slug}/slots", tag = "slots",
    params(("slug" = String, Path, description = "Commune identifier"), SlotsQuery),
    responses((status = 200, body = [SlotJson]), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn slots(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Vec<SlotJson>>, ApiError> {
    let Query(params) = query.map_err(|e| {
        ApiError::bad_parameter(
            "query",
            format!("Paramètres illisibles : {}", e.body_text()),
        )
    })?;
    let commune = commune_or_404(&state, &slug).await?;
    let mut service = None;
    let mut persons = None;
    let mut location = None;
    let mut from = None;
    let mut to = None;
    let mut limit = None;
    for (key, value) in &params {
        match key.as_str() {
            "service" => {
                service = Some(parse_int::<i64>(
                    "service",
                    value,
                    "un identifiant de démarche",
                )?)
            }
            "persons" => {
                persons = Some(parse_int::<u32>(
                    "persons",
                    value,
                    "un nombre de personnes",
                )?)
            }
            "location" if value.is_empty() || value == "any" => location = None,
            "location" => {
                location = Some(parse_int::<i64>(
                    "location",
                    value,
                    "un identifiant de lieu",
                )?)
            }
            "from" => from = Some(parse_date("from", value)?),
            "to" => to = Some(parse_date("to", value)?),
            "limit" => limit = Some(parse_int::<usize>("limit", value, "un nombre de créneaux")?),
            other => {
                return Err(ApiError::bad_parameter(
                    other,
                    format!(
                        "Paramètre inconnu « {other} ». Paramètres acceptés : service, persons, location, from, to, limit."
                    ),
                ));
            }
        }
    }
    let service_id = service.ok_or_else(|| {
        ApiError::bad_parameter(
            "service",
            format!(
                "Le paramètre service est obligatoire : l'identifiant d'une démarche de /api/v1/communes/{slug}/services."
            ),
        )
    })?;
    let today = commune.local_date(state.engine.now());
    // Dates far from today are mistakes (and would overflow date arithmetic).
    let sane = today - Duration::days(MAX_RANGE_DAYS)..=today + Duration::days(5 * MAX_RANGE_DAYS);
    for (field, date) in [("from", from), ("to", to)] {
        if date.is_some_and(|d| !sane.contains(&d)) {
            return Err(ApiError::bad_parameter(
                field,
                "Cette date est trop loin d'aujourd'hui : cherchez des créneaux dans les mois qui viennent.",
            ));
        }
    }
    let from = from.unwrap_or(today);
    let to = to.unwrap_or(from + Duration::days(DEFAULT_RANGE_DAYS - 1));
    if to < from {
        return Err(ApiError::bad_parameter(
            "to",
            "La date de fin (to) précède la date de début (from).",
        ));
    }
    if (to - from).num_days() >= MAX_RANGE_DAYS {
        return Err(ApiError::bad_parameter(
            "to",
            format!("Une recherche couvre au plus {MAX_RANGE_DAYS} jours."),
        ));
    }
    if limit.is_some_and(|l| !(1..=1000).contains(&l)) {
        return Err(ApiError::bad_parameter(
            "limit",
            "Le paramètre limit doit être compris entre 1 et 1000.",
        ));
    }
    // One read of the commune's rules serves the checks and the search.
    let ctx = state
        .engine
        .slot_context(commune.id, service_id, from, to)
        .await?;
    let max = ctx.service.max_persons;
    let persons = persons.unwrap_or(1);
    if persons < 1 || i64::from(persons) > i64::from(max) {
        return Err(ApiError::bad_parameter(
            "persons",
            BookingError::InvalidPersons { max }.message(),
        ));
    }
    let filter = SlotFilter {
        persons,
        location,
        from,
        to,
        limit,
    };
    let slots = state.engine.free_slots_in(&ctx, filter).await?;
    let name_of = |id| {
        ctx.locations
            .iter()
            .find(|l| l.id == id)
            .map(|l| l.name.clone())
            .unwrap_or_default()
    };
    Ok(Json(
        slots
            .into_iter()
            .map(|s| SlotJson {
                start: local_rfc3339(s.start, commune.timezone),
                end: local_rfc3339(s.end, commune.timezone),
                location: s.location_id,
                location_name: name_of(s.location_id),
            })
            .collect(),
    ))
}
