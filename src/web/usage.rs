//! SMS accounting: messages, segments and their cost per commune and month (local months). A
//! platform route: it needs `Authorization: Bearer <GUICHET_ADMIN_TOKEN>` (open in demo mode).

use super::AppState;
use super::api::commune_or_404;
use super::error::{ApiError, ErrorBody};
use axum::Json;
use axum::extract::rejection::QueryRejection;
// Path parameters whose rejection is the API's JSON error.
use super::error::ApiPath as Path;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use chrono::{Datelike, Months, NaiveDate, TimeZone, Utc};
use secrecy::ExposeSecret;
use serde::Serialize;
use std::collections::BTreeMap;
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema, PartialEq)]
pub struct MonthUsage {
    /// `YYYY-MM`, in the commune's time zone.
    pub month: String,
    pub messages: i64,
    pub segments: i64,
    pub cost_micro_eur: i64,
    /// The same cost in euros.
    pub cost_eur: f64,
}

pub fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if state.demo {
        return Ok(());
    }
    let Some(expected) = &state.config.admin_token else {
        return Err(ApiError::Forbidden(
            "Cette route de la plateforme est fermée : configurez GUICHET_ADMIN_TOKEN.",
        ));
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if bool::from(given.as_bytes().ct_eq(expected.expose_secret().as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "Jeton d'administration absent ou incorrect (Authorization: Bearer …).",
        ))
    }
}

fn parse_month(field: &str, value: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(&format!("{}-01", value.trim()), "%Y-%m-%d").map_err(|_| {
        ApiError::bad_parameter(
            field,
            format!("« {value} » n'est pas un mois au format AAAA-MM (par exemple 2026-12)."),
        )
    })
}

/// SMS sent by a commune, month by month (`from` and `to` are months, `YYYY-MM`, both included;
/// the last twelve months by default).
#[utoipa::path(get, path = "/api/v1/communes/{slug}/sms-usage", tag = "platform",
    params(("slug" = String, Path, description = "Commune identifier"),
           ("from" = Option<String>, Query, description = "First month, YYYY-MM"),
           ("to" = Option<String>, Query, description = "Last month, YYYY-MM")),
    responses((status = 200, body = [MonthUsage]), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn sms_usage(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Vec<MonthUsage>>, ApiError> {
    authorize(&state, &headers)?;
    let commune = commune_or_404(&state, &slug).await?;
    let Query(params) = query.map_err(|e| ApiError::bad_parameter("query", e.body_text()))?;
    let today = commune.local_date(state.engine.now());
    let this_month = today.with_day(1).unwrap_or(today);
    let mut to = this_month;
    let mut from = this_month - Months::new(11);
    for (key, value) in &params {
        match key.as_str() {
            "from" => from = parse_month("from", value)?,
            "to" => to = parse_month("to", value)?,
            other => {
                return Err(ApiError::bad_parameter(
                    other,
                    format!("Paramètre inconnu « {other} » : from et to sont acceptés."),
                ));
            }
        }
    }
    if to < from || to > from + Months::new(120) {
        return Err(ApiError::bad_parameter(
            "to",
            "La période va de from à to, au plus dix ans.",
        ));
    }
    let tz = commune.timezone;
    let start_of = |month: NaiveDate| {
        tz.from_local_datetime(&month.and_hms_opt(0, 0, 0).unwrap_or_default())
            .earliest()
            .map_or_else(
                || month.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc(),
                |t| t.with_timezone(&Utc),
            )
    };
    let rows = state
        .store()
        .sms_sent(commune.id, start_of(from), start_of(to + Months::new(1)))
        .await?;
    let mut months: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    let mut month = from;
    while month <= to {
        months.insert(month.format("%Y-%m").to_string(), (0, 0, 0));
        month = month + Months::new(1);
    }
    for (at, segments, cost) in rows {
        let key = at.with_timezone(&tz).format("%Y-%m").to_string();
        if let Some(entry) = months.get_mut(&key) {
            entry.0 += 1;
            entry.1 += i64::from(segments);
            entry.2 += cost;
        }
    }
    Ok(Json(
        months
            .into_iter()
            .map(|(month, (messages, segments, cost))| MonthUsage {
                month,
                messages,
                segments,
                cost_micro_eur: cost,
                cost_eur: (cost as f64 / 10_000.0).round() / 100.0,
            })
            .collect(),
    ))
}
