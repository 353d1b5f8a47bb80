//! Statistics for a chosen period — charts drawn on the server (SVG, readable without
//! JavaScript, each with its data table) and a CSV export that opens in a French spreadsheet —
//! and the commune's audit log.

use super::super::pages::{FieldError, PageError, render, when};
use super::{CommuneAgent, agent_page};
use crate::domain::charts::{bar_chart, french_number, line_chart};
use crate::domain::stats::{CallSummary, Stats, StatsInput, compute_stats, stats_csv};
use crate::web::AppState;
use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{Duration, NaiveDate};
use serde::Deserialize;

#[derive(Deserialize, Default)]
pub struct PeriodQuery {
    du: Option<String>,
    au: Option<String>,
}

/// At most two years at once: enough for any comparison, bounded for the database.
const MAX_DAYS: i64 = 731;

/// The period asked for, or the last 30 days; what is wrong with it otherwise.
fn period(q: &PeriodQuery, today: NaiveDate) -> Result<(NaiveDate, NaiveDate), FieldError> {
    let parse =
        |v: &Option<String>, default: NaiveDate, field: &str| match v.as_deref().map(str::trim) {
            None | Some("") => Ok(default),
            Some(v) => super::parse_date(v)
                .ok_or_else(|| FieldError::new(field, "Indiquez une date valide (jj/mm/aaaa).")),
        };
    let from = parse(&q.du, today - Duration::days(29), "du")?;
    let to = parse(&q.au, today, "au")?;
    if to < from {
        return Err(FieldError::new(
            "au",
            "La fin de la période vient après son début.",
        ));
    }
    if (to - from).num_days() >= MAX_DAYS {
        return Err(FieldError::new(
            "au",
            "Choisissez une période de deux ans au plus.",
        ));
    }
    Ok((from, to))
}

async fn load(
    state: &AppState,
    a: &CommuneAgent,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Stats, PageError> {
    let store = state.store();
    let config = state.engine.config(a.commune.id).await?;
    let commune = &config.commune;
    let (start, _) = super::day::day_bounds(commune, from);
    let (_, end) = super::day::day_bounds(commune, to);
    let (appointments, closures, calls, sms) = tokio::try_join!(
        store.appointments(commune.id, start, end),
        store.closures(commune.id, start, end),
        store.calls_between(commune.id, start, end),
        store.sms_sent(commune.id, start, end),
    )?;
    let calls: Vec<CallSummary> = calls
        .into_iter()
        .map(|c| CallSummary {
            started_at: c.started_at,
            outcome: c.outcome,
        })
        .collect();
    Ok(compute_stats(&StatsInput {
        commune,
        from,
        to,
        appointments: &appointments,
        services: &config.services,
        locations: &config.locations,
        plannings: &config.plannings,
        rules: &config.rules,
        closures: &closures,
        calls: &calls,
        sms: &sms,
        now: state.engine.now(),
    }))
}

/// A chart and the table that carries the same figures.
pub struct Chart {
    pub svg: String,
    pub caption: String,
    pub rows: Vec<(String, String)>,
}

fn counts_chart(title: &str, counts: &[crate::domain::stats::Count]) -> Chart {
    let bars: Vec<(String, f64)> = counts
        .iter()
        .map(|c| (c.label.clone(), c.count as f64))
        .collect();
    Chart {
        svg: bar_chart(title, &bars, ""),
        caption: title.to_owned(),
        rows: counts
            .iter()
            .map(|c| (c.label.clone(), c.count.to_string()))
            .collect(),
    }
}

fn rate(value: Option<f64>) -> String {
    value.map_or_else(
        || "—".to_owned(),
        |v| format!("{} %", french_number(v * 100.0, 1)),
    )
}

#[derive(Template)]
#[template(path = "agent/stats.html")]
struct StatsPage {
    l: super::AgentLayout,
    errors: Vec<FieldError>,
    from: String,
    to: String,
    period: String,
    csv_url: String,
    figures: Vec<(String, String)>,
    charts: Vec<Chart>,
}

pub async fn stats(
    State(state): State<AppState>,
    a: CommuneAgent,
    Query(q): Query<PeriodQuery>,
) -> Result<Response, PageError> {
    let today = a.commune.local_date(state.engine.now());
    let (from, to, errors) = match period(&q, today) {
        Ok((f, t)) => (f, t, Vec::new()),
        Err(e) => (today - Duration::days(29), today, vec![e]),
    };
    let s = load(&state, &a, from, to).await?;
    let euros = crate::domain::pricing::format_euros(s.sms.cost_micro_eur / 10_000);
    let figures = vec![
        (
            "Rendez-vous pris (confirmés)".to_owned(),
            s.booked.to_string(),
        ),
        ("Taux d'annulation".to_owned(), rate(s.cancellation_rate)),
        ("Taux d'absence".to_owned(), rate(s.no_show_rate)),
        (
            "Occupation (réservé ÷ offert)".to_owned(),
            rate(s.occupancy),
        ),
        (
            "Délai de réservation moyen".to_owned(),
            s.lead_time_mean_days.map_or_else(
                || "—".to_owned(),
                |d| format!("{} jours", french_number(d, 1)),
            ),
        ),
        (
            "Délai de réservation médian".to_owned(),
            s.lead_time_median_days.map_or_else(
                || "—".to_owned(),
                |d| format!("{} jours", french_number(d, 1)),
            ),
        ),
        ("Appels reçus".to_owned(), s.calls.received.to_string()),
        (
            "Appels terminés par un rendez-vous".to_owned(),
            s.calls.booked.to_string(),
        ),
        (
            "Appels transférés au standard".to_owned(),
            s.calls.transferred.to_string(),
        ),
        (
            "Appels abandonnés".to_owned(),
            s.calls.abandoned.to_string(),
        ),
        (
            "SMS envoyés (segments)".to_owned(),
            format!("{} ({})", s.sms.messages, s.sms.segments),
        ),
        ("Coût des SMS".to_owned(), euros),
    ];
    let calls = vec![
        ("Reçus".to_owned(), s.calls.received as f64),
        (
            "Terminés par un rendez-vous".to_owned(),
            s.calls.booked as f64,
        ),
        (
            "Transférés au standard".to_owned(),
            s.calls.transferred as f64,
        ),
        ("Abandonnés".to_owned(), s.calls.abandoned as f64),
    ];
    let per_day: Vec<(String, f64)> = s
        .by_day
        .iter()
        .map(|(d, n)| (d.format("%d/%m").to_string(), *n as f64))
        .collect();
    let charts = vec![
        Chart {
            svg: line_chart("Rendez-vous par jour", &per_day, ""),
            caption: "Rendez-vous par jour".to_owned(),
            rows: s
                .by_day
                .iter()
                .map(|(d, n)| (d.format("%d/%m/%Y").to_string(), n.to_string()))
                .collect(),
        },
        counts_chart("Rendez-vous par canal", &s.by_channel),
        counts_chart("Rendez-vous par démarche", &s.by_service),
        counts_chart("Rendez-vous par lieu", &s.by_location),
        counts_chart("Rendez-vous par statut", &s.by_status),
        Chart {
            svg: bar_chart("Appels", &calls, ""),
            caption: "Appels".to_owned(),
            rows: calls
                .iter()
                .map(|(l, v)| (l.clone(), (*v as u64).to_string()))
                .collect(),
        },
    ];
    let bad = !errors.is_empty();
    let html = render(&StatsPage {
        l: a.layout(
            if bad {
                "Erreur : Statistiques"
            } else {
                "Statistiques"
            },
            "/agent/statistiques",
        ),
        errors,
        from: from.to_string(),
        to: to.to_string(),
        period: format!(
            "du {} au {}",
            crate::domain::wording::written_date(from),
            crate::domain::wording::written_date(to)
        ),
        csv_url: format!("/agent/statistiques.csv?du={from}&au={to}"),
        figures,
        charts,
    })?;
    let mut response = agent_page(&state, &a.csrf, html);
    if bad {
        *response.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(response)
}

pub async fn csv(
    State(state): State<AppState>,
    a: CommuneAgent,
    Query(q): Query<PeriodQuery>,
) -> Result<Response, PageError> {
    let today = a.commune.local_date(state.engine.now());
    let (from, to) = period(&q, today).map_err(|e| PageError::BadRequest(e.message))?;
    let s = load(&state, &a, from, to).await?;
    let body = stats_csv(&s, &a.commune.name, from, to);
    let name = format!("statistiques-{}-{from}-{to}.csv", a.commune.slug);
    let mut response = ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

struct AuditRow {
    at: String,
    who: String,
    action: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "agent/audit.html")]
struct AuditPage {
    l: super::AgentLayout,
    rows: Vec<AuditRow>,
}

pub async fn audit(State(state): State<AppState>, a: CommuneAgent) -> Result<Response, PageError> {
    a.require_admin()?;
    let rows = state
        .store()
        .audit_log(a.commune.id, 500)
        .await?
        .into_iter()
        .map(|e| AuditRow {
            at: when(&a.commune, e.at),
            who: e.agent_email,
            action: e.action,
            detail: e.detail,
        })
        .collect();
    let html = render(&AuditPage {
        l: a.layout("Journal", "/agent/journal"),
        rows,
    })?;
    Ok(agent_page(&state, &a.csrf, html))
}
