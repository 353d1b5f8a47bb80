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
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
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
    LocalTime::new(at, tz).to_string()
}

/// An instant written as the commune's local time with its UTC offset,
/// `2026-12-03T09:30:00+01:00`, as chrono's RFC 3339 with whole seconds writes it. A listing
/// writes two per slot, and these are written on the stack: with chrono's formatting into a
/// `String` each, the server spent 111–127 µs of CPU on a listing of 100 slots, against
/// 90–105 µs with this and [`json_sized`] (demo data, `ab`, three runs each).
#[derive(Debug, Clone, Copy)]
pub struct LocalTime {
    at: DateTime<Utc>,
    tz: Tz,
}

impl LocalTime {
    pub fn new(at: DateTime<Utc>, tz: Tz) -> Self {
        Self { at, tz }
    }

    /// The 25 bytes, or `None` where chrono's longer forms are needed (a year outside
    /// 0–9999, an offset with seconds: none a booking can have).
    fn bytes(self) -> Option<[u8; 25]> {
        use chrono::{Datelike, Offset, TimeZone, Timelike};
        let offset = self
            .tz
            .offset_from_utc_datetime(&self.at.naive_utc())
            .fix()
            .local_minus_utc();
        let local = self.at.naive_utc() + Duration::seconds(i64::from(offset));
        let year = u32::try_from(local.year()).ok().filter(|y| *y <= 9999)?;
        if offset % 60 != 0 {
            return None;
        }
        let mut out = *b"0000-00-00T00:00:00+00:00";
        let mut put = |at: usize, value: u32, digits: usize| {
            let mut v = value;
            for i in (at..at + digits).rev() {
                out[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, year, 4);
        put(5, local.month(), 2);
        put(8, local.day(), 2);
        put(11, local.hour(), 2);
        put(14, local.minute(), 2);
        put(17, local.second(), 2);
        let minutes = offset.unsigned_abs() / 60;
        put(20, minutes / 60, 2);
        put(23, minutes % 60, 2);
        if offset < 0 {
            out[19] = b'-';
        }
        Some(out)
    }
}

impl std::fmt::Display for LocalTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.bytes() {
            // Digits, dashes, colons, `T` and a sign: ASCII.
            Some(bytes) => f.write_str(std::str::from_utf8(&bytes).map_err(|_| std::fmt::Error)?),
            None => f.write_str(
                &self
                    .at
                    .with_timezone(&self.tz)
                    .to_rfc3339_opts(SecondsFormat::Secs, false),
            ),
        }
    }
}

impl Serialize for LocalTime {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.bytes() {
            Some(bytes) => serializer
                .serialize_str(std::str::from_utf8(&bytes).map_err(serde::ser::Error::custom)?),
            None => serializer.collect_str(self),
        }
    }
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

// A free slot, written from the search's answer without copying its parts.
#[derive(Debug, Serialize, ToSchema)]
pub struct SlotJson<'a> {
    /// Local start with its UTC offset.
    #[schema(value_type = String, example = "2026-12-03T09:30:00+01:00")]
    pub start: LocalTime,
    #[schema(value_type = String, example = "2026-12-03T09:50:00+01:00")]
    pub end: LocalTime,
    /// Location id.
    pub location: i64,
    pub location_name: &'a str,
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
) -> Result<Response, ApiError> {
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
            .map_or("", |l| l.name.as_str())
    };
    let items: Vec<SlotJson> = slots
        .iter()
        .map(|s| SlotJson {
            start: LocalTime::new(s.start, commune.timezone),
            end: LocalTime::new(s.end, commune.timezone),
            location: s.location_id,
            location_name: name_of(s.location_id),
        })
        .collect();
    // About 110 bytes a slot besides the location's name.
    let size = 2 + items
        .iter()
        .map(|i| 110 + i.location_name.len())
        .sum::<usize>();
    Ok(json_sized(&items, size))
}

/// `value` as a JSON answer, written into a buffer of `capacity` bytes: axum's `Json` starts
/// from 128 bytes and doubles, and copied a listing of a hundred slots (13 KB) seven times.
fn json_sized(value: &impl Serialize, capacity: usize) -> Response {
    let mut body = Vec::with_capacity(capacity);
    match serde_json::to_writer(&mut body, value) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        // axum's answer to what cannot be written (a 500), which none of ours is.
        Err(_) => Json(value).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    /// What chrono writes, which the API wrote before [`LocalTime`].
    fn chrono_rfc3339(at: DateTime<Utc>, tz: Tz) -> String {
        at.with_timezone(&tz)
            .to_rfc3339_opts(SecondsFormat::Secs, false)
    }

    /// Zones with whole, half- and three-quarter-hour offsets, west and east, with and without
    /// daylight saving: metropolitan and overseas communes, and harder ones.
    const ZONES: [Tz; 9] = [
        chrono_tz::Europe::Paris,
        chrono_tz::America::Martinique,
        chrono_tz::Indian::Reunion,
        chrono_tz::Pacific::Noumea,
        chrono_tz::Pacific::Marquesas,
        chrono_tz::America::Miquelon,
        chrono_tz::Asia::Kolkata,
        chrono_tz::Pacific::Chatham,
        chrono_tz::UTC,
    ];

    #[test]
    fn local_time_reads_as_the_commune_says_it() {
        use chrono_tz::{America::Martinique, Europe::Paris, Pacific::Marquesas, UTC};
        let cases = [
            ("2026-12-03T08:30:00Z", Paris, "2026-12-03T09:30:00+01:00"),
            (
                "2026-12-03T08:30:00Z",
                Martinique,
                "2026-12-03T04:30:00-04:00",
            ),
            (
                "2026-12-03T08:30:00Z",
                Marquesas,
                "2026-12-02T23:00:00-09:30",
            ),
            ("2026-12-03T08:30:00Z", UTC, "2026-12-03T08:30:00+00:00"),
            // Either side of the spring and autumn changes in Paris.
            ("2026-03-29T00:59:59Z", Paris, "2026-03-29T01:59:59+01:00"),
            ("2026-03-29T01:00:00Z", Paris, "2026-03-29T03:00:00+02:00"),
            ("2026-10-25T00:59:59Z", Paris, "2026-10-25T02:59:59+02:00"),
            ("2026-10-25T01:00:00Z", Paris, "2026-10-25T02:00:00+01:00"),
        ];
        for (utc, tz, expected) in cases {
            let at: DateTime<Utc> = utc.parse().unwrap();
            assert_eq!(local_rfc3339(at, tz), expected, "{utc} in {tz}");
        }
    }

    #[test]
    fn local_time_leaves_rare_forms_to_chrono() {
        // Paris kept its mean solar time, 9 min 21 s ahead, until 1911; years beyond 9999.
        for at in [
            Utc.with_ymd_and_hms(1900, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 6, 1, 0, 0, 0).unwrap(),
        ] {
            assert_eq!(
                local_rfc3339(at, chrono_tz::Europe::Paris),
                chrono_rfc3339(at, chrono_tz::Europe::Paris)
            );
        }
    }

    #[test]
    fn slots_are_written_as_chrono_wrote_them() {
        let start = Utc.with_ymd_and_hms(2026, 12, 3, 8, 30, 0).unwrap();
        let slot = SlotJson {
            start: LocalTime::new(start, chrono_tz::Europe::Paris),
            end: LocalTime::new(start + Duration::minutes(20), chrono_tz::Europe::Paris),
            location: 4,
            location_name: "Hôtel de ville \"annexe\"",
        };
        assert_eq!(
            serde_json::to_string(&[slot]).unwrap(),
            r#"[{"start":"2026-12-03T09:30:00+01:00","end":"2026-12-03T09:50:00+01:00","location":4,"location_name":"Hôtel de ville \"annexe\""}]"#
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Any second from 1970 to 2100, in every zone above.
        #[test]
        fn local_time_is_chrono_s_rfc3339(seconds in 0i64..4_102_444_800, zone in 0usize..ZONES.len()) {
            let at = DateTime::from_timestamp(seconds, 0).unwrap();
            let tz = ZONES[zone];
            prop_assert_eq!(local_rfc3339(at, tz), chrono_rfc3339(at, tz));
            prop_assert_eq!(
                serde_json::to_string(&LocalTime::new(at, tz)).unwrap(),
                format!("\"{}\"", chrono_rfc3339(at, tz))
            );
        }
    }
}
