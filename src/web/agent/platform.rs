//! The platform administrator's pages: the communes (numbers, population, plannings), their
//! SMS usage and cost per month, each one's estimated yearly cost from the price list, and the
//! back-office accounts.

use super::super::pages::booking::{Fields, get};
use super::super::pages::{FieldError, PageError, check_csrf, render, see_other};
use super::day::Choice;
use super::{AgentLayout, PlatformAdmin, agent_page, audit, not_found};
use crate::domain::pricing::{self, format_euros};
use crate::domain::{Commune, MinuteOfDay, PhoneE164, Role, Slug, WeeklyHours};
use crate::store::{CommunePlatformSettings, NewAgent, NewCommune};
use crate::web::AppState;
use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::response::Response;
use chrono::{Datelike, Duration, NaiveDate};
use std::collections::BTreeMap;

struct CommuneRow {
    id: i64,
    name: String,
    slug: String,
    numbers: String,
    population: String,
    plannings: usize,
    sms_month: String,
    sms_year: String,
    estimate: String,
}

struct MonthRow {
    month: String,
    cells: Vec<String>,
}

#[derive(Template)]
#[template(path = "agent/platform.html")]
struct OverviewPage {
    l: AgentLayout,
    time_zones: Vec<Choice>,
    note: String,
    errors: Vec<FieldError>,
    communes: Vec<CommuneRow>,
    names: Vec<String>,
    months: Vec<MonthRow>,
    total_estimate: String,
}

/// The first day of the month `months` before the one of `date`.
fn month_start(date: NaiveDate, months_back: u32) -> NaiveDate {
    let index = date.year() * 12 + date.month0() as i32 - months_back as i32;
    NaiveDate::from_ymd_opt(index.div_euclid(12), index.rem_euclid(12) as u32 + 1, 1)
        .unwrap_or(date)
}

const MONTHS: [&str; 12] = [
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
];

fn month_label(date: NaiveDate) -> String {
    format!("{} {}", MONTHS[date.month0() as usize], date.year())
}

fn grouped(n: i64) -> String {
    crate::domain::charts::group_thousands(&n.to_string())
}

#[derive(serde::Deserialize)]
pub struct NoteQuery {
    note: Option<String>,
}

async fn render_overview(
    state: &AppState,
    a: &PlatformAdmin,
    note: String,
    errors: Vec<FieldError>,
) -> Result<Response, PageError> {
    let store = state.store();
    let now = state.engine.now();
    let today = now.with_timezone(&chrono_tz::Europe::Paris).date_naive();
    let year_ago = now - Duration::days(365);
    let first_month = month_start(today, 11);
    let communes = store.communes().await?;
    let mut rows = Vec::new();
    let mut per_month: BTreeMap<NaiveDate, Vec<(i64, i64)>> = BTreeMap::new();
    for m in 0..12 {
        per_month.insert(month_start(today, 11 - m), vec![(0, 0); communes.len()]);
    }
    let mut total = 0;
    for (i, c) in communes.iter().enumerate() {
        let plannings = store
            .plannings(c.id)
            .await?
            .iter()
            .filter(|p| p.active)
            .count();
        let sent = store
            .sms_sent(
                c.id,
                year_ago.min(
                    first_month
                        .and_hms_opt(0, 0, 0)
                        .unwrap_or_default()
                        .and_utc(),
                ),
                now,
            )
            .await?;
        let mut year = (0i64, 0i64);
        let mut month = (0i64, 0i64);
        for (at, segments, cost) in &sent {
            let local = at.with_timezone(&c.timezone).date_naive();
            if *at >= year_ago {
                year.0 += i64::from(*segments);
                year.1 += cost;
            }
            if let Some(cell) = per_month.get_mut(&month_start(local, 0)) {
                cell[i].0 += i64::from(*segments);
                cell[i].1 += cost;
            }
            if month_start(local, 0) == month_start(today, 0) {
                month.0 += i64::from(*segments);
                month.1 += cost;
            }
        }
        let estimate = pricing::yearly_estimate(c.population, plannings, year.0);
        total += estimate.total_cents;
        rows.push(CommuneRow {
            id: c.id,
            name: c.name.clone(),
            slug: c.slug.clone(),
            numbers: c.phone_numbers.join(", "),
            population: grouped(c.population),
            plannings,
            sms_month: format!("{} ({})", grouped(month.0), format_euros(month.1 / 10_000)),
            sms_year: format!("{} ({})", grouped(year.0), format_euros(year.1 / 10_000)),
            estimate: format_euros(estimate.total_cents),
        });
    }
    let months = per_month
        .into_iter()
        .rev()
        .map(|(m, cells)| MonthRow {
            month: month_label(m),
            cells: cells
                .into_iter()
                .map(|(segments, cost)| {
                    format!("{} ({})", grouped(segments), format_euros(cost / 10_000))
                })
                .collect(),
        })
        .collect();
    let html = render(&OverviewPage {
        l: AgentLayout::for_platform("Communes", "/agent/plateforme", a),
        time_zones: TIME_ZONES
            .iter()
            .map(|(value, label)| Choice {
                value: (*value).to_owned(),
                label: (*label).to_owned(),
                selected: *value == "Europe/Paris",
            })
            .collect(),
        note,
        errors,
        names: communes.iter().map(|c| c.name.clone()).collect(),
        communes: rows,
        months,
        total_estimate: format_euros(total),
    })?;
    Ok(agent_page(state, &a.csrf, html))
}

pub async fn overview(
    State(state): State<AppState>,
    a: PlatformAdmin,
    Query(q): Query<NoteQuery>,
) -> Result<Response, PageError> {
    render_overview(&state, &a, q.note.unwrap_or_default(), Vec::new()).await
}

fn parse_numbers(text: &str) -> Result<Vec<String>, String> {
    text.split([',', '\n', ';'])
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| {
            PhoneE164::parse(n)
                .map(|p| p.as_str().to_owned())
                .map_err(|e| format!("« {n} » : {}", e.0))
        })
        .collect()
}

#[derive(Template)]
#[template(path = "agent/platform_commune.html")]
struct CommunePage {
    l: AgentLayout,
    errors: Vec<FieldError>,
    c: Commune,
    numbers: String,
    estimate_lines: Vec<(String, String, String)>,
    estimate_total: String,
    form: Fields,
}

impl CommunePage {
    fn value<'a>(&'a self, name: &str, current: &'a str) -> &'a str {
        self.form.get(name).map_or(current, String::as_str)
    }
}

async fn render_commune(
    state: &AppState,
    a: &PlatformAdmin,
    c: Commune,
    form: Fields,
    errors: Vec<FieldError>,
) -> Result<Response, PageError> {
    let now = state.engine.now();
    let plannings = state
        .store()
        .plannings(c.id)
        .await?
        .iter()
        .filter(|p| p.active)
        .count();
    let segments: i64 = state
        .store()
        .sms_sent(c.id, now - Duration::days(365), now)
        .await?
        .iter()
        .map(|(_, s, _)| i64::from(*s))
        .sum();
    let estimate = pricing::yearly_estimate(c.population, plannings, segments);
    let bad = !errors.is_empty();
    let html = render(&CommunePage {
        l: AgentLayout::for_platform(&c.name, "/agent/plateforme", a),
        errors,
        numbers: c.phone_numbers.join(", "),
        estimate_lines: estimate
            .lines
            .iter()
            .map(|l| {
                (
                    l.label.clone(),
                    grouped(l.quantity),
                    format_euros(l.amount_cents),
                )
            })
            .collect(),
        estimate_total: format_euros(estimate.total_cents),
        c,
        form,
    })?;
    let mut response = agent_page(state, &a.csrf, html);
    if bad {
        *response.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(response)
}

pub async fn commune(
    State(state): State<AppState>,
    a: PlatformAdmin,
    Path(id): Path<i64>,
) -> Result<Response, PageError> {
    let c = state.store().commune(id).await?.ok_or_else(not_found)?;
    render_commune(&state, &a, c, Fields::new(), Vec::new()).await
}

fn platform_settings(form: &Fields) -> Result<CommunePlatformSettings, Vec<FieldError>> {
    let mut errors = Vec::new();
    let name = get(form, "nom");
    if name.is_empty() {
        errors.push(FieldError::new("nom", "Indiquez le nom de la commune."));
    }
    let population = get(form, "population")
        .replace([' ', '\u{a0}'], "")
        .parse::<i64>()
        .ok()
        .filter(|p| *p >= 0);
    if population.is_none() {
        errors.push(FieldError::new(
            "population",
            "Indiquez la population (un nombre d'habitants).",
        ));
    }
    let budget = get(form, "budget_sms")
        .parse::<i32>()
        .ok()
        .filter(|b| *b >= 0);
    if budget.is_none() {
        errors.push(FieldError::new(
            "budget_sms",
            "Indiquez le nombre de SMS permis par jour (0 ou plus).",
        ));
    }
    let numbers = parse_numbers(get(form, "numeros")).map_err(|e| {
        errors.push(FieldError::new("numeros", e));
    });
    match (population, budget, numbers, errors.is_empty()) {
        (Some(population), Some(sms_daily_budget), Ok(phone_numbers), true) => {
            Ok(CommunePlatformSettings {
                name: name.to_owned(),
                population,
                phone_numbers,
                sms_daily_budget,
            })
        }
        _ => Err(errors),
    }
}

fn number_taken(e: &crate::store::StoreError) -> bool {
    e.is_constraint("commune_phone_numbers_number_key")
}

pub async fn commune_post(
    State(state): State<AppState>,
    a: PlatformAdmin,
    Path(id): Path<i64>,
    Form(form): Form<Fields>,
) -> Result<Response, PageError> {
    check_csrf(&a.csrf, form.get("csrf"))?;
    let c = state.store().commune(id).await?.ok_or_else(not_found)?;
    let settings = match platform_settings(&form) {
        Ok(s) => s,
        Err(errors) => return render_commune(&state, &a, c, form, errors).await,
    };
    match state.store().update_commune_platform(id, &settings).await {
        Ok(()) => {}
        Err(e) if number_taken(&e) => {
            let errors = vec![FieldError::new(
                "numeros",
                "Un de ces numéros répond déjà pour une autre commune.",
            )];
            return render_commune(&state, &a, c, form, errors).await;
        }
        Err(e) => return Err(e.into()),
    }
    state.engine.forget_config(id);
    audit(
        &state,
        &a.agent,
        Some(id),
        "plateforme",
        format!(
            "commune modifiée : {} ({} hab., numéros {})",
            settings.name,
            settings.population,
            settings.phone_numbers.join(", ")
        ),
    )
    .await;
    let query = serde_urlencoded::to_string([("note", format!("{} enregistrée.", settings.name))])
        .unwrap_or_default();
    Ok(see_other(&format!("/agent/plateforme?{query}")))
}

/// The time zones of French communes: metropolitan France and the overseas departments and
/// collectivities whose communes may join.
const TIME_ZONES: [(&str, &str); 7] = [
    ("Europe/Paris", "France métropolitaine et Corse"),
    (
        "America/Guadeloupe",
        "Guadeloupe, Saint-Martin, Saint-Barthélemy",
    ),
    ("America/Martinique", "Martinique"),
    ("America/Cayenne", "Guyane"),
    ("Indian/Reunion", "La Réunion"),
    ("Indian/Mayotte", "Mayotte"),
    ("America/Miquelon", "Saint-Pierre-et-Miquelon"),
];

/// A new commune joins the platform: its page exists at once; its administrator account,
/// places, services and hours come next.
pub async fn commune_new(
    State(state): State<AppState>,
    a: PlatformAdmin,
    Form(form): Form<Fields>,
) -> Result<Response, PageError> {
    check_csrf(&a.csrf, form.get("csrf"))?;
    let mut errors = Vec::new();
    let slug = Slug::parse(get(&form, "identifiant"))
        .map_err(|e| errors.push(FieldError::new("identifiant", e.0)));
    let insee = get(&form, "insee");
    if !(insee.len() == 5 && insee.chars().all(|c| c.is_ascii_alphanumeric())) {
        errors.push(FieldError::new(
            "insee",
            "Le code INSEE compte 5 caractères (2A004 pour Ajaccio).",
        ));
    }
    let timezone = TIME_ZONES
        .iter()
        .find(|(name, _)| *name == get(&form, "fuseau"))
        .and_then(|(name, _)| name.parse::<chrono_tz::Tz>().ok());
    if timezone.is_none() {
        errors.push(FieldError::new(
            "fuseau",
            "Choisissez le fuseau horaire de la commune.",
        ));
    }
    let settings = platform_settings(&form).map_err(|e| errors.extend(e));
    let (Ok(slug), Ok(settings), Some(timezone), true) =
        (slug, settings, timezone, errors.is_empty())
    else {
        return render_overview(&state, &a, String::new(), errors).await;
    };
    let new = NewCommune {
        slug: slug.as_str().to_owned(),
        name: settings.name.clone(),
        insee_code: insee.to_uppercase(),
        timezone,
        population: settings.population,
        phone_numbers: settings.phone_numbers.clone(),
        switchboard_number: None,
        switchboard_hours: WeeklyHours(Vec::new()),
        reminder_delay_hours: 48,
        quiet_start: MinuteOfDay::hm(20, 0),
        quiet_end: MinuteOfDay::hm(8, 0),
        sms_sender: String::new(),
        allow_multiple_per_category: false,
        sms_daily_budget: settings.sms_daily_budget,
        allow_foreign_mobiles: false,
    };
    let id = match state.store().insert_commune(&new).await {
        Ok(id) => id,
        Err(e) if number_taken(&e) => {
            let errors = vec![FieldError::new(
                "numeros",
                "Un de ces numéros répond déjà pour une autre commune.",
            )];
            return render_overview(&state, &a, String::new(), errors).await;
        }
        Err(e) if e.is_constraint("communes_slug_key") => {
            let errors = vec![FieldError::new(
                "identifiant",
                "Cet identifiant est déjà pris par une autre commune.",
            )];
            return render_overview(&state, &a, String::new(), errors).await;
        }
        Err(e) => return Err(e.into()),
    };
    audit(
        &state,
        &a.agent,
        Some(id),
        "plateforme",
        format!("commune créée : {} ({})", new.name, new.slug),
    )
    .await;
    let query = serde_urlencoded::to_string([(
        "note",
        format!(
            "{} a rejoint la plateforme. Créez maintenant son compte administrateur.",
            new.name
        ),
    )])
    .unwrap_or_default();
    Ok(see_other(&format!("/agent/plateforme/comptes?{query}")))
}

// --- Accounts -------------------------------------------------------------------------------

struct AccountRow {
    id: i64,
    email: String,
    name: String,
    role: &'static str,
    commune: String,
    active: bool,
    since: String,
}

#[derive(Template)]
#[template(path = "agent/accounts.html")]
struct AccountsPage {
    l: AgentLayout,
    note: String,
    errors: Vec<FieldError>,
    accounts: Vec<AccountRow>,
    communes: Vec<Choice>,
    roles: Vec<Choice>,
    form: Fields,
}

impl AccountsPage {
    fn value(&self, name: &str) -> &str {
        self.form.get(name).map_or("", String::as_str)
    }
}

async fn render_accounts(
    state: &AppState,
    a: &PlatformAdmin,
    note: String,
    form: Fields,
    errors: Vec<FieldError>,
) -> Result<Response, PageError> {
    let communes = state.store().communes().await?;
    let accounts = state
        .store()
        .agents(None)
        .await?
        .into_iter()
        .map(|ag| AccountRow {
            id: ag.id,
            email: ag.email,
            name: ag.name,
            role: ag.role.label(),
            commune: ag
                .commune_id
                .and_then(|id| communes.iter().find(|c| c.id == id))
                .map_or_else(|| "—".to_owned(), |c| c.name.clone()),
            active: ag.active,
            since: ag.created_at.format("%d/%m/%Y").to_string(),
        })
        .collect();
    let selected_commune = get(&form, "commune").to_owned();
    let selected_role = get(&form, "role").to_owned();
    let bad = !errors.is_empty();
    let html = render(&AccountsPage {
        l: AgentLayout::for_platform("Comptes", "/agent/plateforme/comptes", a),
        note,
        errors,
        accounts,
        communes: communes
            .iter()
            .map(|c| Choice {
                value: c.id.to_string(),
                label: c.name.clone(),
                selected: selected_commune == c.id.to_string(),
            })
            .collect(),
        roles: Role::ALL
            .iter()
            .map(|r| Choice {
                value: r.as_str().to_owned(),
                label: r.label().to_owned(),
                selected: selected_role == r.as_str(),
            })
            .collect(),
        form,
    })?;
    let mut response = agent_page(state, &a.csrf, html);
    if bad {
        *response.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(response)
}

pub async fn accounts(
    State(state): State<AppState>,
    a: PlatformAdmin,
    Query(q): Query<NoteQuery>,
) -> Result<Response, PageError> {
    render_accounts(
        &state,
        &a,
        q.note.unwrap_or_default(),
        Fields::new(),
        Vec::new(),
    )
    .await
}

/// Passwords of at least 12 characters: long beats clever.
const MIN_PASSWORD: usize = 12;

pub async fn account_new(
    State(state): State<AppState>,
    a: PlatformAdmin,
    Form(form): Form<Fields>,
) -> Result<Response, PageError> {
    check_csrf(&a.csrf, form.get("csrf"))?;
    let mut errors = Vec::new();
    let email = match crate::domain::Email::parse(get(&form, "email")) {
        Ok(e) => e.as_str().to_lowercase(),
        Err(e) => {
            errors.push(FieldError::new("email", e.0));
            String::new()
        }
    };
    let name = get(&form, "nom").to_owned();
    if name.is_empty() {
        errors.push(FieldError::new("nom", "Indiquez le nom de la personne."));
    }
    let role = Role::parse(get(&form, "role"));
    if role.is_none() {
        errors.push(FieldError::new("role", "Choisissez le rôle."));
    }
    let communes = state.store().communes().await?;
    let commune = get(&form, "commune")
        .parse::<i64>()
        .ok()
        .filter(|id| communes.iter().any(|c| c.id == *id));
    let commune_id = match role {
        Some(Role::PlatformAdmin) => None,
        _ => {
            if commune.is_none() {
                errors.push(FieldError::new(
                    "commune",
                    "Choisissez la commune de ce compte.",
                ));
            }
            commune
        }
    };
    let password = form.get("mot_de_passe").cloned().unwrap_or_default();
    if password.chars().count() < MIN_PASSWORD {
        errors.push(FieldError::new(
            "mot_de_passe",
            format!("Le mot de passe compte au moins {MIN_PASSWORD} caractères."),
        ));
    }
    let Some(role) = role.filter(|_| errors.is_empty()) else {
        return render_accounts(&state, &a, String::new(), form, errors).await;
    };
    let hash = tokio::task::spawn_blocking(move || crate::accounts::hash_password(&password))
        .await
        .map_err(|e| PageError::Render(e.to_string()))?
        .map_err(|e| PageError::Render(e.to_string()))?;
    let new = NewAgent {
        email: email.clone(),
        name,
        password_hash: hash,
        role,
        commune_id,
    };
    match state.store().insert_agent(&new, state.engine.now()).await {
        Ok(_) => {}
        Err(e) if e.is_constraint("agents_email_key") => {
            let errors = vec![FieldError::new(
                "email",
                "Un compte existe déjà avec cette adresse.",
            )];
            return render_accounts(&state, &a, String::new(), form, errors).await;
        }
        Err(e) => return Err(e.into()),
    }
    audit(
        &state,
        &a.agent,
        commune_id,
        "compte",
        format!("compte créé : {email} ({})", role.label()),
    )
    .await;
    let query = serde_urlencoded::to_string([(
        "note",
        format!("Compte {email} créé. Transmettez-lui son mot de passe de vive voix."),
    )])
    .unwrap_or_default();
    Ok(see_other(&format!("/agent/plateforme/comptes?{query}")))
}

pub async fn account_active(
    State(state): State<AppState>,
    a: PlatformAdmin,
    Path(id): Path<i64>,
    Form(form): Form<Fields>,
) -> Result<Response, PageError> {
    check_csrf(&a.csrf, form.get("csrf"))?;
    let account = state.store().agent(id).await?.ok_or_else(not_found)?;
    if account.id == a.agent.id {
        return Err(PageError::BadRequest(
            "Vous ne pouvez pas désactiver votre propre compte.".to_owned(),
        ));
    }
    let active = get(&form, "actif") == "1";
    state.store().set_agent_active(id, active).await?;
    audit(
        &state,
        &a.agent,
        account.commune_id,
        "compte",
        format!(
            "compte {} : {}",
            if active { "réactivé" } else { "désactivé" },
            account.email
        ),
    )
    .await;
    Ok(see_other("/agent/plateforme/comptes"))
}
