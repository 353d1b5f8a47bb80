//! Configuration that takes effect at once (this instance forgets its cached copy; others
//! within `CONFIG_TTL`): the commune's settings and voice, locations, services, plannings,
//! opening hours (a weekly editor) and closures. Agents manage opening hours and closures;
//! the rest is the commune administrator's.
//!
//! A change that would strand existing appointments — hours that no longer open their time,
//! a deactivated place, service or planning, fewer seats than booked — first lists them and
//! asks what to do: keep them (they stay booked) or cancel each with a replacement.

use super::super::pages::{FieldError, PageError, check_csrf, render, see_other, when};
use super::day::{Choice, Row, row};
use super::{AgentLayout, CommuneAgent, agent_page, not_found};
use crate::booking::CommuneConfig;
use crate::domain::{
    Appointment, Category, Channels, MinuteOfDay, OpeningRule, Status, Weekdays, WeeklyHours,
    WeeklyRange,
};
use crate::store::{
    CommuneSettings, NewLocation, NewOpeningRule, NewPlanning, NewService, VoiceSettings,
};
use crate::web::AppState;
use askama::Template;
use axum::extract::{Form, Path, State};
use axum::response::Response;
use chrono::{Duration, NaiveDate, NaiveTime, Weekday};
use std::sync::Arc;

type FormList = Vec<(String, String)>;

fn one<'a>(form: &'a FormList, name: &str) -> &'a str {
    form.iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.trim())
}

fn all<'a>(form: &'a FormList, name: &'a str) -> impl Iterator<Item = &'a str> {
    form.iter()
        .filter(move |(k, _)| k == name)
        .map(|(_, v)| v.trim())
}

fn csrf_of(form: &FormList) -> Option<String> {
    form.iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.clone())
}

const DAYS: [(Weekday, &str, &str); 7] = [
    (Weekday::Mon, "lun", "lundi"),
    (Weekday::Tue, "mar", "mardi"),
    (Weekday::Wed, "mer", "mercredi"),
    (Weekday::Thu, "jeu", "jeudi"),
    (Weekday::Fri, "ven", "vendredi"),
    (Weekday::Sat, "sam", "samedi"),
    (Weekday::Sun, "dim", "dimanche"),
];

fn days_text(days: Weekdays) -> String {
    DAYS.iter()
        .filter(|(d, _, _)| days.contains(*d))
        .map(|(_, short, _)| *short)
        .collect::<Vec<_>>()
        .join(" ")
}

fn hhmm(m: MinuteOfDay) -> String {
    format!("{:02}:{:02}", m.0 / 60, m.0 % 60)
}

fn parse_time(text: &str) -> Option<MinuteOfDay> {
    if text == "24:00" {
        return Some(MinuteOfDay(1440));
    }
    NaiveTime::parse_from_str(text, "%H:%M")
        .ok()
        .map(MinuteOfDay::of_time)
}

/// "lun mar mer jeu ven 08:30-12:00", one range per line.
fn hours_text(hours: &WeeklyHours) -> String {
    hours
        .0
        .iter()
        .map(|r| {
            format!(
                "{} {}-{}",
                days_text(r.weekdays),
                hhmm(r.start),
                hhmm(r.end)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn parse_hours(text: &str) -> Result<WeeklyHours, String> {
    let mut ranges = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let bad = || {
            format!(
                "Ligne « {line} » : écrivez les jours puis les heures, par exemple « lun mar mer jeu ven 08:30-12:00 »."
            )
        };
        let mut days = Vec::new();
        let mut span = None;
        for word in line.split_whitespace() {
            let w = word.to_lowercase();
            if let Some((d, _, _)) = DAYS
                .iter()
                .find(|(_, short, long)| w == *short || w == *long)
            {
                days.push(*d);
            } else if let Some((a, b)) = w.split_once('-') {
                span = Some((
                    parse_time(a).ok_or_else(bad)?,
                    parse_time(b).ok_or_else(bad)?,
                ));
            } else {
                return Err(bad());
            }
        }
        let (start, end) = span.ok_or_else(bad)?;
        if days.is_empty() || end <= start {
            return Err(bad());
        }
        ranges.push(WeeklyRange {
            weekdays: Weekdays::of(&days),
            start,
            end,
        });
    }
    Ok(WeeklyHours(ranges))
}

// --- What a change strands ----------------------------------------------------------------

/// Confirmed or held appointments still to come.
async fn upcoming(state: &AppState, a: &CommuneAgent) -> Result<Vec<Appointment>, PageError> {
    let now = state.engine.now();
    let all = state
        .store()
        .appointments(a.commune.id, now, now + Duration::days(800))
        .await?;
    Ok(all
        .into_iter()
        .filter(|ap| matches!(ap.effective_status(now), Status::Confirmed | Status::Held))
        .collect())
}

/// Appointments the old rules opened and the new ones no longer do.
fn stranded_by_rules(
    appointments: &[Appointment],
    before: &[OpeningRule],
    after: &[OpeningRule],
    tz: chrono_tz::Tz,
) -> Vec<Appointment> {
    appointments
        .iter()
        .filter(|ap| before.iter().any(|r| r.covers(ap, tz)))
        .filter(|ap| !after.iter().any(|r| r.covers(ap, tz)))
        .cloned()
        .collect()
}

#[derive(Template)]
#[template(path = "agent/stranded.html")]
struct StrandedPage {
    l: AgentLayout,
    change: String,
    action: String,
    fields: FormList,
    rows: Vec<Row>,
}

/// With appointments stranded and no decision yet: the page asking what to do. Otherwise,
/// after `apply`, carries the decision out (cancelling with a replacement if asked) and says
/// what happened.
async fn decide(
    state: &AppState,
    a: &CommuneAgent,
    form: &FormList,
    stranded: Vec<Appointment>,
    change: &str,
    action: &str,
) -> Result<Option<Response>, PageError> {
    if stranded.is_empty() {
        return Ok(None);
    }
    match one(form, "decision") {
        "garder" | "annuler" => Ok(None),
        _ => {
            let config = state.engine.config(a.commune.id).await?;
            let now = state.engine.now();
            let html = render(&StrandedPage {
                l: a.layout("Rendez-vous concernés", "/agent/configuration"),
                change: change.to_owned(),
                action: action.to_owned(),
                fields: form
                    .iter()
                    .filter(|(k, _)| k != "csrf" && k != "decision" && k != "motif")
                    .cloned()
                    .collect(),
                rows: stranded.iter().map(|ap| row(&config, ap, now)).collect(),
            })?;
            Ok(Some(agent_page(state, &a.csrf, html)))
        }
    }
}

/// After the change: cancels the stranded appointments if the agent chose so; returns the
/// sentence to show.
async fn carry_out(
    state: &AppState,
    a: &CommuneAgent,
    form: &FormList,
    stranded: &[Appointment],
) -> Result<String, PageError> {
    if stranded.is_empty() {
        return Ok(String::new());
    }
    if one(form, "decision") != "annuler" {
        return Ok(match stranded.len() {
            1 => "Le rendez-vous déjà pris est maintenu.".to_owned(),
            n => format!("Les {n} rendez-vous déjà pris sont maintenus."),
        });
    }
    let reason = match one(form, "motif") {
        "" => "Changement des horaires de la mairie",
        r => r,
    };
    let (mut cancelled, mut proposed, mut failed) = (0, 0, Vec::new());
    for ap in stranded {
        match state.engine.cancel_with_proposal(ap.id, reason, true).await {
            Ok(outcome) => {
                cancelled += 1;
                proposed += usize::from(outcome.proposal.is_some());
            }
            Err(e) => {
                tracing::warn!(appointment = %ap.id, error = %e, "stranded appointment not cancelled");
                failed.push(ap.citizen.name.as_str().to_owned());
            }
        }
    }
    a.audit(
        state,
        "annulation",
        format!(
            "{cancelled} rendez-vous annulé(s) après un changement de configuration : {reason}"
        ),
    )
    .await;
    let mut note = format!(
        "Rendez-vous annulés : {cancelled}, dont {proposed} avec un nouveau créneau proposé."
    );
    if !failed.is_empty() {
        note.push_str(&format!(
            " Non annulés (à traiter depuis la journée) : {}.",
            failed.join(", ")
        ));
    }
    Ok(note)
}

/// After a change of configuration: this instance reads it afresh at once (others within
/// `CONFIG_TTL`), and the audit log says who made it.
async fn changed(state: &AppState, a: &CommuneAgent, action: &str, detail: String) {
    state.engine.forget_config(a.commune.id);
    a.audit(state, action, detail).await;
}

fn done(to: &str, note: &str) -> Response {
    if note.is_empty() {
        see_other(to)
    } else {
        let query = serde_urlencoded::to_string([("note", note)]).unwrap_or_default();
        see_other(&format!("{to}?{query}"))
    }
}

// --- Overview -------------------------------------------------------------------------------

struct ItemRow {
    id: i64,
    name: String,
    detail: String,
    active: bool,
}

struct ClosureRow {
    id: i64,
    scope: String,
    period: String,
    reason: String,
    /// Appointments still inside it (an interrupted closing): to cancel.
    remaining: usize,
}

#[derive(Template)]
#[template(path = "agent/config.html")]
struct OverviewPage {
    l: AgentLayout,
    /// The "add" form to show open (its errors are listed): `lieu`, `dem`, `pl` or none.
    open: &'static str,
    admin: bool,
    note: String,
    errors: Vec<FieldError>,
    reminder_delay: String,
    quiet_start: String,
    quiet_end: String,
    switchboard_number: String,
    switchboard_hours: String,
    sms_sender: String,
    voices: Vec<Choice>,
    languages: Vec<Choice>,
    flows: Vec<Choice>,
    locations: Vec<ItemRow>,
    services: Vec<ItemRow>,
    plannings: Vec<ItemRow>,
    closures: Vec<ClosureRow>,
    categories: Vec<Choice>,
}

#[derive(serde::Deserialize)]
pub struct NoteQuery {
    note: Option<String>,
}

const VOICES: [(&str, &str); 4] = [
    ("Polly.Lea", "Léa (voix féminine)"),
    ("Polly.Celine", "Céline (voix féminine)"),
    ("Polly.Mathieu", "Mathieu (voix masculine)"),
    ("Google.fr-FR-Standard-B", "Google B (voix masculine)"),
];

async fn render_overview(
    state: &AppState,
    a: &CommuneAgent,
    note: String,
    errors: Vec<FieldError>,
) -> Result<Response, PageError> {
    render_overview_open(state, a, note, errors, "").await
}

/// The overview with the errors of one "add" form, whose fields carry `prefix` in their ids.
async fn render_add_errors(
    state: &AppState,
    a: &CommuneAgent,
    prefix: &'static str,
    errors: Vec<FieldError>,
) -> Result<Response, PageError> {
    let errors = errors
        .into_iter()
        .map(|e| FieldError::new(&format!("{prefix}-{}", e.field), e.message))
        .collect();
    render_overview_open(state, a, String::new(), errors, prefix).await
}

async fn render_overview_open(
    state: &AppState,
    a: &CommuneAgent,
    note: String,
    errors: Vec<FieldError>,
    open: &'static str,
) -> Result<Response, PageError> {
    let config = state.engine.config(a.commune.id).await?;
    let c = &config.commune;
    let now = state.engine.now();
    let voice = state.ivr.settings(c).await?;
    let mut closures = Vec::new();
    for cl in state
        .store()
        .closures(c.id, now, now + Duration::days(800))
        .await?
    {
        let remaining = state
            .engine
            .appointments_in(&crate::booking::as_new(&cl))
            .await?
            .len();
        closures.push(ClosureRow {
            id: cl.id,
            scope: super::day::scope_label(&config, &cl),
            period: format!("du {} au {}", when(c, cl.starts_at), when(c, cl.ends_at)),
            reason: cl.reason.clone(),
            remaining,
        });
    }
    let page = OverviewPage {
        l: a.layout(
            if errors.is_empty() {
                "Configuration"
            } else {
                "Erreur : Configuration"
            },
            "/agent/configuration",
        ),
        open,
        admin: a.is_admin(),
        note,
        reminder_delay: c.reminder_delay_hours.to_string(),
        quiet_start: hhmm(c.quiet_start),
        quiet_end: hhmm(c.quiet_end),
        switchboard_number: c.switchboard_number.clone().unwrap_or_default(),
        switchboard_hours: hours_text(&c.switchboard_hours),
        sms_sender: c.sms_sender.clone(),
        voices: VOICES
            .iter()
            .map(|(v, label)| Choice {
                value: (*v).to_owned(),
                label: (*label).to_owned(),
                selected: voice.voice == *v,
            })
            .collect(),
        languages: state
            .ivr
            .languages()
            .into_iter()
            .map(|l| {
                let code = format!("{l}-{}", l.to_uppercase());
                Choice {
                    selected: voice.language == code,
                    label: if l == "fr" {
                        "français".to_owned()
                    } else {
                        code.clone()
                    },
                    value: code,
                }
            })
            .collect(),
        flows: state
            .ivr
            .flow_names()
            .into_iter()
            .map(|f| Choice {
                selected: voice.flow == f,
                label: f.clone(),
                value: f,
            })
            .collect(),
        locations: config
            .locations
            .iter()
            .map(|l| ItemRow {
                id: l.id,
                name: l.name.clone(),
                detail: super::super::pages::address(l),
                active: l.active,
            })
            .collect(),
        services: config
            .services
            .iter()
            .map(|s| ItemRow {
                id: s.id,
                name: s.name.clone(),
                detail: format!(
                    "{} min par personne, jusqu'à {} personnes",
                    s.duration_minutes, s.max_persons
                ),
                active: s.active,
            })
            .collect(),
        plannings: config
            .plannings
            .iter()
            .map(|p| ItemRow {
                id: p.id,
                name: p.name.clone(),
                detail: format!(
                    "{} poste{}",
                    p.capacity,
                    if p.capacity > 1 { "s" } else { "" }
                ),
                active: p.active,
            })
            .collect(),
        closures,
        categories: Category::ALL
            .iter()
            .map(|c| Choice {
                value: c.as_str().to_owned(),
                label: c.label().to_owned(),
                selected: false,
            })
            .collect(),
        errors,
    };
    let status_bad = !page.errors.is_empty();
    let mut response = agent_page(state, &a.csrf, render(&page)?);
    if status_bad {
        *response.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(response)
}

pub async fn overview(
    State(state): State<AppState>,
    a: CommuneAgent,
    axum::extract::Query(q): axum::extract::Query<NoteQuery>,
) -> Result<Response, PageError> {
    render_overview(&state, &a, q.note.unwrap_or_default(), Vec::new()).await
}

/// The commune's own settings.
pub async fn commune_post(
    State(state): State<AppState>,
    a: CommuneAgent,
    Form(form): Form<FormList>,
) -> Result<Response, PageError> {
    check_csrf(&a.csrf, csrf_of(&form).as_ref())?;
    a.require_admin()?;
    let mut errors = Vec::new();
    let delay = one(&form, "rappel")
        .parse::<i32>()
        .ok()
        .filter(|d| (0..=24 * 14).contains(d));
    if delay.is_none() {
        errors.push(FieldError::new(
            "rappel",
            "Indiquez le délai du rappel en heures (0 à 336 ; 0 : pas de rappel).",
        ));
    }
    let quiet_start = parse_time(one(&form, "silence_debut"));
    let quiet_end = parse_time(one(&form, "silence_fin"));
    if quiet_start.is_none() || quiet_end.is_none() {
        errors.push(FieldError::new(
            "silence_debut",
            "Indiquez les heures de silence au format hh:mm.",
        ));
    }
    let switchboard = match one(&form, "standard") {
        "" => None,
        n => match crate::domain::PhoneE164::parse(n) {
            Ok(p) => Some(p.as_str().to_owned()),
            Err(e) => {
                errors.push(FieldError::new("standard", e.0));
                None
            }
        },
    };
    let hours = match parse_hours(one(&form, "horaires_standard")) {
        Ok(h) => Some(h),
        Err(e) => {
            errors.push(FieldError::new("horaires_standard", e));
            None
        }
    };
    let sender = one(&form, "expediteur");
    // An alphanumeric sender ID: 3 to 11 letters, digits or spaces, at least one letter.
    let sender_ok = sender.is_empty()
        || ((3..=11).contains(&sender.len())
            && sender
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == ' ')
            && sender.chars().any(|c| c.is_ascii_alphabetic()));
    if !sender_ok {
        errors.push(FieldError::new(
            "expediteur",
            "Le nom d'expéditeur des SMS compte 3 à 11 lettres ou chiffres, sans accent.",
        ));
    }
    let (
        Some(reminder_delay_hours),
        Some(quiet_start),
        Some(quiet_end),
        Some(switchboard_hours),
        true,
    ) = (delay, quiet_start, quiet_end, hours, errors.is_empty())
    else {
        return render_overview(&state, &a, String::new(), errors).await;
    };
    let settings = CommuneSettings {
        switchboard_number: switchboard,
        switchboard_hours,
        reminder_delay_hours,
        quiet_start,
        quiet_end,
        sms_sender: sender.to_owned(),
    };
    state
        .store()
        .update_commune_settings(a.commune.id, &settings)
        .await?;
    // Reminders already queued follow the new delay and quiet hours.
    let (moved, dropped) = state.engine.reschedule_reminders(a.commune.id).await?;
    a.audit(
        &state,
        "configuration",
        format!(
            "commune : rappel {} h avant, silence {}–{}, standard {} ; rappels en attente : {moved} replanifiés, {dropped} supprimés",
            reminder_delay_hours,
            hhmm(quiet_start),
            hhmm(quiet_end),
            settings.switchboard_number.as_deref().unwrap_or("aucun")
        ),
    )
    .await;
    let note = if moved + dropped == 0 {
        "Réglages de la commune enregistrés.".to_owned()
    } else {
        format!(
            "Réglages de la commune enregistrés. Rappels déjà prévus, replanifiés : {moved} ; supprimés : {dropped}."
        )
    };
    Ok(done("/agent/configuration", &note))
}

pub async fn voice_post(
    State(state): State<AppState>,
    a: CommuneAgent,
    Form(form): Form<FormList>,
) -> Result<Response, PageError> {
    check_csrf(&a.csrf, csrf_of(&form).as_ref())?;
    a.require_admin()?;
    let voice = one(&form, "voix");
    let language = one(&form, "langue");
    let flow = one(&form, "parcours");
    let known_language = state
        .ivr
        .languages()
        .iter()
        .any(|l| language.split('-').next() == Some(l.as_str()));
    if !VOICES.iter().any(|(v, _)| *v == voice)
        || !known_language
        || !state.ivr.flow_names().iter().any(|f| f == flow)
    {
        return render_overview(
            &state,
            &a,
            String::new(),
            vec![FieldError::new(
                "voix",
                "Choisissez la voix, la langue et le parcours dans les listes.",
            )],
        )
        .await;
    }
    let settings = VoiceSettings {
        voice: voice.to_owned(),
        language: language.to_owned(),
        flow: flow.to_owned(),
    };
    state
        .store()
        .set_voice_settings(a.commune.id, &settings)
        .await?;
    a.audit(
        &state,
        "configuration",
        format!("serveur vocal : {voice}, {language}, parcours {flow}"),
    )
    .await;
    Ok(done(
        "/agent/configuration",
        "Réglages du serveur vocal enregistrés.",
    ))
}

// --- Locations ----------------------------------------------------------------------------

fn location_from(form: &FormList) -> Result<NewLocation, Vec<FieldError>> {
    let mut errors = Vec::new();
    for (field, label) in [
        ("nom", "le nom du lieu"),
        ("adresse", "l'adresse"),
        ("code_postal", "le code postal"),
        ("ville", "la ville"),
    ] {
        if one(form, field).is_empty() {
            errors.push(FieldError::new(field, format!("Indiquez {label}.")));
        }
    }
    let postcode = one(form, "code_postal");
    let valid_postcode = postcode.len() == 5 && postcode.chars().all(|c| c.is_ascii_digit());
    if !postcode.is_empty() && !valid_postcode {
        errors.push(FieldError::new(
            "code_postal",
            "Le code postal compte 5 chiffres.",
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(NewLocation {
        commune_id: 0,
        name: one(form, "nom").to_owned(),
        address: one(form, "adresse").to_owned(),
        postcode: postcode.to_owned(),
        city: one(form, "ville").to_owned(),
        access_notes: one(form, "acces").to_owned(),
    })
}

pub async fn location_new(
    State(state): State<AppState>,
    a: CommuneAgent,
    Form(form): Form<FormList>,
) -> Result<Response, PageError> {
    check_csrf(&a.csrf, csrf_of(&form).as_ref())?;
    a.require_admin()?;
    let mut location = match location_from(&form) {
        Ok(l) => l,
        Err(errors) => return render_add_errors(&state, &a, "lieu", errors).await,
    };
    location.commune_id = a.commune.id;
    let id = state.store().insert_location(&location).await?;
    changed(
        &state,
        &a,
        "configuration",
        format!("lieu ajouté : {} ({id})", location.name),
    )
    .await;
    Ok(done(
        "/agent/configuration",
        "Lieu ajouté. Ajoutez-lui des horaires pour qu'il reçoive des rendez-vous.",
    ))
}

#[derive(Template)]
#[template(path = "agent/edit.html")]
struct EditPage {
    l: AgentLayout,
    heading: String,
    action: String,
    errors: Vec<FieldError>,
    inputs: Vec<Input>,
}

/// One field of an edit form.
struct Input {
    name: &'static str,
    label: &'static str,
    kind: &'static str,
    value: String,
    options: Vec<Choice>,
}

impl Input {
    fn text(name: &'static str, label: &'static str, value: impl Into<String>) -> Self {
        Input {
            name,
            label,
            kind: "text",
            value: value.into(),
            options: Vec::new(),
        }
    }
    fn number(name: &'static str, label: &'static str, value: i64) -> Self {
        Input {
            name,
            label,
            kind: "number",
            value: value.to_string(),
            options: Vec::new(),
        }
    }
    fn area(name: &'static str, label: &'static str, value: impl Into<String>) -> Self {
        Input {
            name,
            label,
            kind: "textarea",
            value: value.into(),
            options: Vec::new(),
        }
    }
    fn check(name: &'static str, label: &'static str, on: bool) -> Self {
        Input {
            name,
            label,
            kind: "checkbox",
            value: if on { "1".into() } else { String::new() },
            options: Vec::new(),
        }
    }
    fn select(name: &'static str, label: &'static str, options: Vec<Choice>) -> Self {
        Input {
            name,
            label,
            kind: "select",
            value: String::new(),
            options,
        }
    }
    fn error<'a>(&self, errors: &'a [FieldError]) -> &'a str {
        errors
            .iter()
            .find(|e| e.field == self.name)
            .map_or("", |e| e.message.as_str())
    }
}

fn edit_page(
    state: &AppState,
    a: &CommuneAgent,
    heading: &str,
    action: String,
    inputs: Vec<Input>,
    errors: Vec<FieldError>,
) -> Result<Response, PageError> {
    let bad = !errors.is_empty();
    let html = render(&EditPage {
        l: a.layout(heading, "/agent/configuration"),
        heading: heading.to_owned(),
        action,
        errors,
        inputs,
    })?;
    let mut response = agent_page(state, &a.csrf, html);
    if bad {
        *response.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(response)
}

async fn own_config(state: &AppState, a: &CommuneAgent) -> Result<Arc<CommuneConfig>, PageError> {
    // Read fresh: an editor must not show a value from before its own last save.
    state.engine.forget_config(a.commune.id);
    Ok(state.engine.config(a.commune.id).await?)
}

fn location_inputs(l: &crate::domain::Location) -> Vec<Input> {
    vec![
        Input::text("nom", "Nom du lieu", &l.name),
        Input::text("adresse", "Adresse", &l.address),
        Input::text("code_postal", "Code postal", &l.postcode),
        Input::text("ville", "Ville", &l.city),
        Input::area(
            "acces",
            "Accès (accessibilité, étage, stationnement)",
            &l.access_notes,
        ),
        Input::check("actif", "Ce lieu reçoit des rendez-vous", l.active),
    ]
}

pub async fn location(
    State(state): State<AppState>,
    a: CommuneAgent,
    Path(id): Path<i64>,
) -> Result<Response, PageError> {
    a.require_admin()?;
    let config = own_config(&state, &a).await?;
    let l = config
        .locations
        .iter()
        .find(|l| l.id == id)
        .ok_or_else(not_found)?;
    edit_page(
        &state,
        &a,
        &format!("Lieu : {}", l.name),
        format!("/agent/configuration/lieux/{id}"),
        location_inputs(l),
        Vec::new(),
    )
}

pub async fn location_post(
    State(state): State<AppState>,
    a: CommuneAgent,
    Path(id): Path<i64>,
    Form(form): Form<FormList>,
) -> Result<Response, PageError> {
    check_csrf(&a.csrf, csrf_of(&form).as_ref())?;
    a.require_admin()?;
    let config = own_config(&state, &a).await?;
    let current = config
        .locations
        .iter()
        .find(|l| l.id == id)
        .ok_or_else(not_found)?;
    let action = format!("/agent/configuration/lieux/{id}");
    let new = match location_from(&form) {
        Ok(n) => n,
        Err(errors) => {
            return edit_page(
                &state,
                &a,
                &format!("Lieu : {}", current.name),
                action,
                location_inputs(current),
                errors,
            );
        }
    };
    let active = !one(&form, "actif").is_empty();
    let stranded: Vec<Appointment> = if current.active && !active {
        upcoming(&state, &a)
            .await?
            .into_iter()
            .filter(|ap| ap.location_id == id)
            .collect()
    } else {
        Vec::new()
    };
    if let Some(page) = decide(
        &state,
        &a,
        &form,
        stranded.clone(),
        &format!(
            "Le lieu « {} » ne recevra plus de rendez-vous.",
            current.name
        ),
        &action,
    )
    .await?
    {
        return Ok(page);
    }
    let updated = crate::domain::Location {
        name: new.name,
        address: new.address,
        postcode: new.postcode,
        city: new.city,
        access_notes: new.access_notes,
        active,
        ..current.clone()
    };
    state.store().update_location(&updated).await?;
    changed(
        &state,
        &a,
        "configuration",
        format!(
            "lieu modifié : {} ({id}){}",
            updated.name,
            if active { "" } else { ", désactivé" }
        ),
    )
    .await;
    let note = carry_out(&state, &a, &form, &stranded).await?;
    Ok(done(
        "/agent/configuration",
        &format!("Lieu enregistré. {note}"),
    ))
}

// --- Services -----------------------------------------------------------------------------

fn service_inputs(s: &crate::domain::Service) -> Vec<Input> {
    vec![
        Input::text("nom", "Nom de la démarche", &s.name),
        Input::text("nom_parle", "Nom lu par le serveur vocal", &s.spoken_name),
        Input::select(
            "categorie",
            "Catégorie",
            Category::ALL
                .iter()
                .map(|c| Choice {
                    value: c.as_str().to_owned(),
                    label: c.label().to_owned(),
                    selected: *c == s.category,
                })
                .collect(),
        ),
        Input::number(
            "duree",
            "Durée par personne (minutes)",
            i64::from(s.duration_minutes),
        ),
        Input::number(
            "personnes_max",
            "Personnes au plus par rendez-vous",
            i64::from(s.max_persons),
        ),
        Input::number(
            "delai_min",
            "Délai minimum avant le rendez-vous (minutes)",
            i64::from(s.min_notice_minutes),
        ),
        Input::number(
            "horizon",
            "Réservable jusqu'à (jours à l'avance)",
            i64::from(s.horizon_days),
        ),
        Input::check("canal_web", "Réservable sur internet", s.channels.web),
        Input::check(
            "canal_telephone",
            "Réservable par le serveur vocal",
            s.channels.phone,
        ),
        Input::check(
            "canal_guichet",
            "Réservable par les agents",
            s.channels.agent,
        ),
        Input::area(
            "a_apporter",
            "À apporter (affiché et envoyé dans la confirmation)",
            &s.what_to_bring,
        ),
        Input::check("actif", "Démarche proposée", s.active),
    ]
}

fn service_from(form: &FormList) -> Result<NewService, Vec<FieldError>> {
    let mut errors = Vec::new();
    let name = one(form, "nom");
    if name.is_empty() {
        errors.push(FieldError::new("nom", "Indiquez le nom de la démarche."));
    }
    let number = |field: &str,
                  range: std::ops::RangeInclusive<i32>,
                  message: &str,
                  errors: &mut Vec<FieldError>| {
        match one(form, field)
            .parse::<i32>()
            .ok()
            .filter(|n| range.contains(n))
        {
            Some(n) => n,
            None => {
                errors.push(FieldError::new(field, message));
                *range.start()
            }
        }
    };
    let duration = number(
        "duree",
        5..=480,
        "La durée par personne va de 5 à 480 minutes.",
        &mut errors,
    );
    let max_persons = number(
        "personnes_max",
        1..=10,
        "De 1 à 10 personnes par rendez-vous.",
        &mut errors,
    );
    let notice = number(
        "delai_min",
        0..=60 * 24 * 30,
        "Le délai minimum va de 0 à 43 200 minutes (30 jours).",
        &mut errors,
    );
    let horizon = number(
        "horizon",
        1..=365,
        "L'horizon de réservation va de 1 à 365 jours.",
        &mut errors,
    );
    let category = Category::parse(one(form, "categorie")).unwrap_or(Category::Autre);
    if !errors.is_empty() {
        return Err(errors);
    }
    let spoken = match one(form, "nom_parle") {
        "" => name.to_lowercase(),
        s => s.to_owned(),
    };
    Ok(NewService {
        commune_id: 0,
        name: name.to_owned(),
        spoken_name: spoken,
        category,
        duration_minutes: duration,
        max_persons,
        min_notice_minutes: notice,
        horizon_days: horizon,
        channels: Channels {
            web: !one(form, "canal_web").is_empty(),
            phone: !one(form, "canal_telephone").is_empty(),
            agent: !one(form, "canal_guichet").is_empty(),
        },
        what_to_bring: one(form, "a_apporter").to_owned(),
    })
}

pub async fn service_new(
    State(state): State<AppState>,
    a: CommuneAgent,
    Form(form): Form<FormList>,
) -> Result<Response, PageError> {
    check_csrf(&a.csrf, csrf_of(&form).as_ref())?;
    a.require_admin()?;
    let mut service = match service_from(&form) {
        Ok(s) => s,
        Err(errors) => return render_add_errors(&state, &a, "dem", errors).await,
    };
    service.commune_id = a.commune.id;
    let id = state.store().insert_service(&service).await?;
    changed(
        &state,
        &a,
        "configuration",
        format!("démarche ajoutée : {} ({id})", service.name),
    )
    .await;
    Ok(done(
        "/agent/configuration",
        "Démarche ajoutée. Ajoutez-la aux horaires d'un planning pour l'ouvrir.",
    ))
}

pub async fn service(
    State(state): State<AppState>,
    a: CommuneAgent,
    Path(id): Path<i64>,
) -> Result<Response, PageError> {
    a.require_admin()?;
    let config = own_config(&state, &a).await?;
    let s = config
        .services
        .iter()
        .find(|s| s.id == id)
        .ok_or_else(not_found)?;
    edit_page(
        &state,
        &a,
        &format!("Démarche : {}", s.name),
        format!("/agent/configuration/demarches/{id}"),
        service_inputs(s),
        Vec::new(),
    )
}

pub async fn service_post(
    State(state): State<AppState>,
    a: CommuneAgent,
    Path(id): Path<i64>,
    Form(form): Form<FormList>,
) -> Result<Response, PageError> {
    check_csrf(&a.csrf, csrf_of(&form).as_ref())?;
    a.require_admin()?;
    let config = own_config(&state, &a).await?;
    let current = config
        .services
        .iter()
        .find(|s| s.id == id)
        .ok_or_else(not_found)?;
    let action = format!("/agent/configuration/demarches/{id}");
    let new = match service_from(&form) {
        Ok(n) => n,
        Err(errors) => {
            return edit_page(
                &state,
                &a,
                &format!("Démarche : {}", current.name),
                action,
                service_inputs(current),
                errors,
            );
        }
    };
    let active = !one(&form, "actif").is_empty();
    let stranded: Vec<Appointment> = if current.active && !active {
        upcoming(&state, &a)
            .await?
            .into_iter()
            .filter(|ap| ap.service_id == id)
            .collect()
    } else {
        Vec::new()
    };
    if let Some(page) = decide(
        &state,
        &a,
        &form,
        stranded.clone(),
        &format!("La démarche « {} » ne sera plus proposée.", current.name),
        &action,
    )
    .await?
    {
        return Ok(page);
    }
    let updated = crate::domain::Service {
        name: new.name,
        spoken_name: new.spoken_name,
        category: new.category,
        duration_minutes: new.duration_minutes,
        max_persons: new.max_persons,
        min_notice_minutes: new.min_notice_minutes,
        horizon_days: new.horizon_days,
        channels: new.channels,
        what_to_bring: new.what_to_bring,
        active,
        ..current.clone()
    };
    state.store().update_service(&updated).await?;
    changed(
        &state,
        &a,
        "configuration",
        format!("démarche modifiée : {} ({id})", updated.name),
    )
    .await;
    let note = carry_out(&state, &a, &form, &stranded).await?;
    Ok(done(
        "/agent/configuration",
        &format!("Démarche enregistrée. {note}"),
    ))
}

// --- Plannings ----------------------------------------------------------------------------

fn planning_inputs(p: &crate::domain::Planning) -> Vec<Input> {
    vec![
        Input::text("nom", "Nom du planning", &p.name),
        Input::number("postes", "Postes en parallèle", i64::from(p.capacity)),
        Input::check("actif", "Ce planning reçoit des rendez-vous", p.active),
    ]
}

fn planning_from(form: &FormList) -> Result<(String, i32), Vec<FieldError>> {
    let mut errors = Vec::new();
    let name = one(form, "nom");
    if name.is_empty() {
        errors.push(FieldError::new("nom", "Indiquez le nom du planning."));
    }
    let capacity = one(form, "postes")
        .parse::<i32>()
        .ok()
        .filter(|c| (1..=50).contains(c));
    if capacity.is_none() {
        errors.push(FieldError::new(
            "postes",
            "Le nombre de postes va de 1 à 50.",
        ));
    }
    match (capacity, errors.is_empty()) {
        (Some(c), true) => Ok((name.to_owned(), c)),
        _ => Err(errors),
    }
}

pub async fn planning_new(
    State(state): State<AppState>,
    a: CommuneAgent,
    Form(form): Form<FormList>,
) -> Result<Response, PageError> {
    check_csrf(&a.csrf, csrf_of(&form).as_ref())?;
    a.require_admin()?;
    let (name, capacity) = match planning_from(&form) {
        Ok(p) => p,
        Err(errors) => return render_add_errors(&state, &a, "pl", errors).await,
    };
    let id = state
        .store()
        .insert_planning(&NewPlanning {
            commune_id: a.commune.id,
            name: name.clone(),
            capacity,
        })
        .await?;
    changed(
        &state,
        &a,
        "configuration",
        format!("planning ajouté : {name} ({id})"),
    )
    .await;
    Ok(done(
        "/agent/configuration",
        "Planning ajouté. Donnez-lui des horaires pour l'ouvrir.",
    ))
}

pub async fn planning(
    State(state): State<AppState>,
    a: CommuneAgent,
    Path(id): Path<i64>,
) -> Result<Response, PageError> {
    a.require_admin()?;
    let config = own_config(&state, &a).await?;
    let p = config
        .plannings
        .iter()
        .find(|p| p.id == id)
        .ok_or_else(not_found)?;
    edit_page(
        &state,
        &a,
        &format!("Planning : {}", p.name),
        format!("/agent/configuration/plannings/{id}"),
        planning_inputs(p),
        Vec::new(),
    )
}

pub async fn planning_post(
    State(state): State<AppState>,
    a: CommuneAgent,
    Path(id): Path<i64>,
    Form(form): Form<FormList>,
) -> Result<Response, PageError> {
    check_csrf(&a.csrf, csrf_of(&form).as_ref())?;
    a.require_admin()?;
    let config = own_config(&state, &a).await?;
    let current = config
        .plannings
        .iter()
        .find(|p| p.id == id)
        .ok_or_else(not_found)?;
    let action = format!("/agent/configuration/plannings/{id}");
    let (name, capacity) = match planning_from(&form) {
        Ok(p) => p,
        Err(errors) => {
            return edit_page(
                &state,
                &a,
                &format!("Planning : {}", current.name),
                action,
                planning_inputs(current),
                errors,
            );
        }
    };
    let active = !one(&form, "actif").is_empty();
    let stranded: Vec<Appointment> = upcoming(&state, &a)
        .await?
        .into_iter()
        .filter(|ap| ap.planning_id == id)
        .filter(|ap| (current.active && !active) || ap.seat.is_some_and(|s| s > capacity))
        .collect();
    let change = if current.active && !active {
        format!(
            "Le planning « {} » ne recevra plus de rendez-vous.",
            current.name
        )
    } else {
        format!(
            "Le planning « {} » passe à {capacity} poste(s) : des rendez-vous occupent les autres.",
            current.name
        )
    };
    if let Some(page) = decide(&state, &a, &form, stranded.clone(), &change, &action).await? {
        return Ok(page);
    }
    let updated = crate::domain::Planning {
        name,
        capacity,
        active,
        ..current.clone()
    };
    state.store().update_planning(&updated).await?;
    changed(
        &state,
        &a,
        "configuration",
        format!(
            "planning modifié : {} ({id}), {capacity} poste(s)",
            updated.name
        ),
    )
    .await;
    let note = carry_out(&state, &a, &form, &stranded).await?;
    Ok(done(
        "/agent/configuration",
        &format!("Planning enregistré. {note}"),
    ))
}

// --- Opening hours ------------------------------------------------------------------------

struct RuleRow {
    id: i64,
    planning: String,
    location: String,
    days: String,
    hours: String,
    step: i32,
    validity: String,
    services: String,
}

struct DayBox {
    value: String,
    label: &'static str,
    checked: bool,
}

#[derive(Template)]
#[template(path = "agent/rules.html")]
struct RulesPage {
    l: AgentLayout,
    note: String,
    errors: Vec<FieldError>,
    rules: Vec<RuleRow>,
    /// The form: a new rule, or the one being edited.
    editing: Option<i64>,
    plannings: Vec<Choice>,
    locations: Vec<Choice>,
    days: Vec<DayBox>,
    services: Vec<Choice>,
    start: String,
    end: String,
    step: String,
    valid_from: String,
    valid_until: String,
}

fn rule_rows(config: &CommuneConfig) -> Vec<RuleRow> {
    config
        .rules
        .iter()
        .map(|r| RuleRow {
            id: r.id,
            planning: config
                .plannings
                .iter()
                .find(|p| p.id == r.planning_id)
                .map_or_else(String::new, |p| p.name.clone()),
            location: config
                .locations
                .iter()
                .find(|l| l.id == r.location_id)
                .map_or_else(String::new, |l| l.name.clone()),
            days: days_text(r.weekdays),
            hours: format!("{} – {}", hhmm(r.start), hhmm(r.end)),
            step: r.step_minutes,
            validity: match r.valid_until {
                Some(until) => format!(
                    "du {} au {}",
                    r.valid_from.format("%d/%m/%Y"),
                    until.format("%d/%m/%Y")
                ),
                None => format!("depuis le {}", r.valid_from.format("%d/%m/%Y")),
            },
            services: config
                .services
                .iter()
                .filter(|s| r.service_ids.contains(&s.id))
                .map(|s| s.name.clone())
                .collect::<Vec<_>>()
                .join(", "),
        })
        .collect()
}

fn rules_page(
    a: &CommuneAgent,
    config: &CommuneConfig,
    editing: Option<&OpeningRule>,
    form: Option<&FormList>,
    errors: Vec<FieldError>,
    note: String,
    today: NaiveDate,
) -> RulesPage {
    let pick = |name: &str, current: Option<String>| -> Vec<String> {
        match form {
            Some(f) => all(f, name).map(str::to_owned).collect::<Vec<_>>(),
            None => current.into_iter().collect(),
        }
    };
    let planning = pick("planning", editing.map(|r| r.planning_id.to_string()));
    let location = pick("lieu", editing.map(|r| r.location_id.to_string()));
    let days: Vec<String> = match form {
        Some(f) => all(f, "jours").map(str::to_owned).collect(),
        None => editing.map_or_else(
            || {
                vec![
                    "lun".into(),
                    "mar".into(),
                    "mer".into(),
                    "jeu".into(),
                    "ven".into(),
                ]
            },
            |r| {
                days_text(r.weekdays)
                    .split(' ')
                    .map(str::to_owned)
                    .collect()
            },
        ),
    };
    let services: Vec<String> = match form {
        Some(f) => all(f, "demarches").map(str::to_owned).collect(),
        None => editing.map_or_else(Vec::new, |r| {
            r.service_ids.iter().map(i64::to_string).collect()
        }),
    };
    let value = |name: &str, current: String| -> String {
        form.map_or(current, |f| one(f, name).to_owned())
    };
    RulesPage {
        l: a.layout(
            if errors.is_empty() {
                "Horaires d'ouverture"
            } else {
                "Erreur : Horaires d'ouverture"
            },
            "/agent/configuration",
        ),
        note,
        rules: rule_rows(config),
        editing: editing.map(|r| r.id),
        plannings: config
            .plannings
            .iter()
            .map(|p| Choice {
                value: p.id.to_string(),
                label: p.name.clone(),
                selected: planning.contains(&p.id.to_string()),
            })
            .collect(),
        locations: config
            .locations
            .iter()
            .map(|l| Choice {
                value: l.id.to_string(),
                label: l.name.clone(),
                selected: location.contains(&l.id.to_string()),
            })
            .collect(),
        days: DAYS
            .iter()
            .map(|(_, short, long)| DayBox {
                value: (*short).to_owned(),
                label: long,
                checked: days.iter().any(|d| d == short),
            })
            .collect(),
        services: config
            .services
            .iter()
            .filter(|s| s.active)
            .map(|s| Choice {
                value: s.id.to_string(),
                label: s.name.clone(),
                selected: services.contains(&s.id.to_string()),
            })
            .collect(),
        start: value(
            "debut",
            editing.map_or_else(|| "09:00".into(), |r| hhmm(r.start)),
        ),
        end: value(
            "fin",
            editing.map_or_else(|| "12:00".into(), |r| hhmm(r.end)),
        ),
        step: value(
            "pas",
            editing.map_or_else(|| "20".into(), |r| r.step_minutes.to_string()),
        ),
        valid_from: value(
            "depuis",
            editing.map_or_else(|| today.to_string(), |r| r.valid_from.to_string()),
        ),
        valid_until: value(
            "jusqu_au",
            editing
                .and_then(|r| r.valid_until)
                .map_or_else(String::new, |d| d.to_string()),
        ),
        errors,
    }
}

fn rule_from(config: &CommuneConfig, form: &FormList) -> Result<NewOpeningRule, Vec<FieldError>> {
    let mut errors = Vec::new();
    let planning = one(form, "planning")
        .parse::<i64>()
        .ok()
        .filter(|id| config.plannings.iter().any(|p| p.id == *id));
    if planning.is_none() {
        errors.push(FieldError::new("planning", "Choisissez le planning."));
    }
    let location = one(form, "lieu")
        .parse::<i64>()
        .ok()
        .filter(|id| config.locations.iter().any(|l| l.id == *id));
    if location.is_none() {
        errors.push(FieldError::new("lieu", "Choisissez le lieu."));
    }
    let days: Vec<Weekday> = all(form, "jours")
        .filter_map(|d| {
            DAYS.iter()
                .find(|(_, short, _)| *short == d)
                .map(|(w, _, _)| *w)
        })
        .collect();
    if days.is_empty() {
        errors.push(FieldError::new("jours", "Cochez au moins un jour."));
    }
    let start = parse_time(one(form, "debut"));
    let end = parse_time(one(form, "fin"));
    match (start, end) {
        (Some(s), Some(e)) if e > s => {}
        _ => errors.push(FieldError::new("debut", "Indiquez l'heure d'ouverture et l'heure de fermeture (hh:mm), la seconde après la première.")),
    }
    let step = one(form, "pas")
        .parse::<i32>()
        .ok()
        .filter(|s| (5..=240).contains(s));
    if step.is_none() {
        errors.push(FieldError::new(
            "pas",
            "L'écart entre deux créneaux va de 5 à 240 minutes.",
        ));
    }
    let valid_from = super::parse_date(one(form, "depuis"));
    if valid_from.is_none() {
        errors.push(FieldError::new(
            "depuis",
            "Indiquez la date à partir de laquelle ces horaires valent.",
        ));
    }
    let valid_until = match one(form, "jusqu_au") {
        "" => None,
        d => match super::parse_date(d) {
            Some(d) if valid_from.is_none_or(|f| d >= f) => Some(d),
            _ => {
                errors.push(FieldError::new(
                    "jusqu_au",
                    "La date de fin vient après la date de début (ou laissez vide).",
                ));
                None
            }
        },
    };
    let services: Vec<i64> = all(form, "demarches")
        .filter_map(|s| s.parse().ok())
        .filter(|id| config.services.iter().any(|s| s.id == *id))
        .collect();
    if services.is_empty() {
        errors.push(FieldError::new(
            "demarches",
            "Cochez au moins une démarche.",
        ));
    }
    match (
        planning,
        location,
        start,
        end,
        step,
        valid_from,
        errors.is_empty(),
    ) {
        (
            Some(planning_id),
            Some(location_id),
            Some(start),
            Some(end),
            Some(step_minutes),
            Some(valid_from),
            true,
        ) => Ok(NewOpeningRule {
            planning_id,
            location_id,
            weekdays: Weekdays::of(&days),
            start,
            end,
            step_minutes,
            valid_from,
            valid_until,
            service_ids: services,
        }),
        _ => Err(errors),
    }
}

#[derive(serde::Deserialize)]
pub struct RulesQuery {
    note: Option<String>,
}

pub async fn rules(
    State(state): State<AppState>,
    a: CommuneAgent,
    axum::extract::Query(q): axum::extract::Query<RulesQuery>,
) -> Result<Response, PageError> {
    let config = own_config(&state, &a).await?;
    let today = a.commune.local_date(state.engine.now());
    let html = render(&rules_page(
        &a,
        &config,
        None,
        None,
        Vec::new(),
        q.note.unwrap_or_default(),
        today,
    ))?;
    Ok(agent_page(&state, &a.csrf, html))
}

pub async fn rule(
    State(state): State<AppState>,
    a: CommuneAgent,
    Path(id): Path<i64>,
) -> Result<Response, PageError> {
    let config = own_config(&state, &a).await?;
    let r = config
        .rules
        .iter()
        .find(|r| r.id == id)
        .ok_or_else(not_found)?;
    let today = a.commune.local_date(state.engine.now());
    let html = render(&rules_page(
        &a,
        &config,
        Some(r),
        None,
        Vec::new(),
        String::new(),
        today,
    ))?;
    Ok(agent_page(&state, &a.csrf, html))
}

fn rules_error(
    state: &AppState,
    a: &CommuneAgent,
    config: &CommuneConfig,
    editing: Option<&OpeningRule>,
    form: &FormList,
    errors: Vec<FieldError>,
) -> Result<Response, PageError> {
    let today = a.commune.local_date(state.engine.now());
    let html = render(&rules_page(
        a,
        config,
        editing,
        Some(form),
        errors,
        String::new(),
        today,
    ))?;
    let mut response = agent_page(state, &a.csrf, html);
    *response.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
    Ok(response)
}

fn as_rule(id: i64, r: &NewOpeningRule) -> OpeningRule {
    OpeningRule {
        id,
        planning_id: r.planning_id,
        location_id: r.location_id,
        weekdays: r.weekdays,
        start: r.start,
        end: r.end,
        step_minutes: r.step_minutes,
        valid_from: r.valid_from,
        valid_until: r.valid_until,
        service_ids: r.service_ids.clone(),
    }
}

fn rule_text(config: &CommuneConfig, r: &NewOpeningRule) -> String {
    let planning = config
        .plannings
        .iter()
        .find(|p| p.id == r.planning_id)
        .map_or("", |p| p.name.as_str());
    format!(
        "{planning}, {} {}–{}",
        days_text(r.weekdays),
        hhmm(r.start),
        hhmm(r.end)
    )
}

pub async fn rule_new(
    State(state): State<AppState>,
    a: CommuneAgent,
    Form(form): Form<FormList>,
) -> Result<Response, PageError> {
    check_csrf(&a.csrf, csrf_of(&form).as_ref())?;
    let config = own_config(&state, &a).await?;
    let rule = match rule_from(&config, &form) {
        Ok(r) => r,
        Err(errors) => return rules_error(&state, &a, &config, None, &form, errors),
    };
    let id = state.store().insert_opening_rule(&rule).await?;
    changed(
        &state,
        &a,
        "horaires",
        format!("plage ajoutée ({id}) : {}", rule_text(&config, &rule)),
    )
    .await;
    Ok(done(
        "/agent/configuration/horaires",
        "Plage d'ouverture ajoutée : ses créneaux sont réservables dès maintenant.",
    ))
}

pub async fn rule_post(
    State(state): State<AppState>,
    a: CommuneAgent,
    Path(id): Path<i64>,
    Form(form): Form<FormList>,
) -> Result<Response, PageError> {
    check_csrf(&a.csrf, csrf_of(&form).as_ref())?;
    let config = own_config(&state, &a).await?;
    let current = config
        .rules
        .iter()
        .find(|r| r.id == id)
        .ok_or_else(not_found)?;
    let new = match rule_from(&config, &form) {
        Ok(r) => r,
        Err(errors) => return rules_error(&state, &a, &config, Some(current), &form, errors),
    };
    let after: Vec<OpeningRule> = config
        .rules
        .iter()
        .map(|r| {
            if r.id == id {
                as_rule(id, &new)
            } else {
                r.clone()
            }
        })
        .collect();
    let stranded = stranded_by_rules(
        &upcoming(&state, &a).await?,
        &config.rules,
        &after,
        a.commune.timezone,
    );
    let action = format!("/agent/configuration/horaires/{id}");
    if let Some(page) = decide(
        &state,
        &a,
        &form,
        stranded.clone(),
        &format!(
            "Les nouveaux horaires ({}) n'ouvrent plus ces rendez-vous.",
            rule_text(&config, &new)
        ),
        &action,
    )
    .await?
    {
        return Ok(page);
    }
    state.store().update_opening_rule(id, &new).await?;
    changed(
        &state,
        &a,
        "horaires",
        format!("plage modifiée ({id}) : {}", rule_text(&config, &new)),
    )
    .await;
    let note = carry_out(&state, &a, &form, &stranded).await?;
    Ok(done(
        "/agent/configuration/horaires",
        &format!("Horaires enregistrés. {note}"),
    ))
}

pub async fn rule_delete(
    State(state): State<AppState>,
    a: CommuneAgent,
    Path(id): Path<i64>,
    Form(form): Form<FormList>,
) -> Result<Response, PageError> {
    check_csrf(&a.csrf, csrf_of(&form).as_ref())?;
    let config = own_config(&state, &a).await?;
    let current = config
        .rules
        .iter()
        .find(|r| r.id == id)
        .ok_or_else(not_found)?;
    let after: Vec<OpeningRule> = config
        .rules
        .iter()
        .filter(|r| r.id != id)
        .cloned()
        .collect();
    let stranded = stranded_by_rules(
        &upcoming(&state, &a).await?,
        &config.rules,
        &after,
        a.commune.timezone,
    );
    let action = format!("/agent/configuration/horaires/{id}/supprimer");
    let text = format!(
        "{}, {} {}–{}",
        config
            .plannings
            .iter()
            .find(|p| p.id == current.planning_id)
            .map_or("", |p| p.name.as_str()),
        days_text(current.weekdays),
        hhmm(current.start),
        hhmm(current.end)
    );
    if let Some(page) = decide(
        &state,
        &a,
        &form,
        stranded.clone(),
        &format!("Sans la plage « {text} », ces rendez-vous ne sont plus dans les horaires."),
        &action,
    )
    .await?
    {
        return Ok(page);
    }
    state.store().delete_opening_rule(id).await?;
    changed(
        &state,
        &a,
        "horaires",
        format!("plage supprimée ({id}) : {text}"),
    )
    .await;
    let note = carry_out(&state, &a, &form, &stranded).await?;
    Ok(done(
        "/agent/configuration/horaires",
        &format!("Plage supprimée. {note}"),
    ))
}

pub async fn closure_delete(
    State(state): State<AppState>,
    a: CommuneAgent,
    Path(id): Path<i64>,
    Form(form): Form<FormList>,
) -> Result<Response, PageError> {
    check_csrf(&a.csrf, csrf_of(&form).as_ref())?;
    let closure = own_closure(&state, &a, id).await?;
    state.store().delete_closure(id).await?;
    changed(
        &state,
        &a,
        "fermeture",
        format!(
            "fermeture supprimée ({id}) du {} au {} : {}",
            when(&a.commune, closure.starts_at),
            when(&a.commune, closure.ends_at),
            closure.reason
        ),
    )
    .await;
    Ok(done(
        "/agent/configuration",
        "Fermeture supprimée : la période est de nouveau réservable (les rendez-vous annulés le restent).",
    ))
}

/// A closure of the agent's commune (ten years either way covers any that matters), or 404.
async fn own_closure(
    state: &AppState,
    a: &CommuneAgent,
    id: i64,
) -> Result<crate::domain::Closure, PageError> {
    let now = state.engine.now();
    state
        .store()
        .closures(
            a.commune.id,
            now - Duration::days(3650),
            now + Duration::days(3650),
        )
        .await?
        .into_iter()
        .find(|c| c.id == id)
        .ok_or_else(not_found)
}

/// Cancels, with a replacement each, the appointments still inside a closure (a closing that
/// was interrupted, or appointments kept when the closure was made).
pub async fn closure_cancel(
    State(state): State<AppState>,
    a: CommuneAgent,
    Path(id): Path<i64>,
    Form(form): Form<FormList>,
) -> Result<Response, PageError> {
    check_csrf(&a.csrf, csrf_of(&form).as_ref())?;
    let closure = own_closure(&state, &a, id).await?;
    let results = state.engine.cancel_in_closure(&closure, true).await?;
    super::day::closure_report(&state, &a, &closure, &results).await
}
