//! The booking path: commune → service → persons and location → a slot (held at once) →
//! details (the code is sent) → the code (the appointment is confirmed, the personal page
//! follows).

use super::{
    AppointmentView, Field, FieldError, Layout, PageError, address, check_csrf, de, is_morning,
    local_time, message_page, minutes_text, page, persons_text, render, see_other, when,
};
use crate::booking::{BookingError, SlotContext};
use crate::domain::otp::OtpCode;
use crate::domain::slots::{FreeSlot, SlotFilter};
use crate::domain::wording::written_date;
use crate::domain::{
    AntsApplicationId, Appointment, AppointmentId, Category, Citizen, CitizenName, Commune, Email,
    MessageChannel, NotificationKind, PhoneE164, Service, Status,
};
use crate::notify::CodeDestination;
use crate::web::AppState;
use crate::web::security::{Allowance, ClientIp, Csrf};
use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use serde::Deserialize;
use std::collections::HashMap;

/// Days shown on one page of slots…
const DAYS_PER_PAGE: i64 = 7;
/// …unless they hold more slots than this: the page then ends with the day that crosses it,
/// so that it stays light on a phone (and under 50 KB).
const SLOTS_PER_PAGE: usize = 100;
/// Slots offered when the chosen one slipped away.
const NEAREST: usize = 8;
/// How long the citizen waits before asking for another code.
const RESEND_AFTER_SECONDS: i64 = 60;

pub(crate) type Fields = HashMap<String, String>;

/// A form field, trimmed; empty when absent.
pub(crate) fn get<'a>(form: &'a Fields, name: &str) -> &'a str {
    form.get(name).map_or("", |v| v.trim())
}

pub(super) async fn commune_or_404(state: &AppState, slug: &str) -> Result<Commune, PageError> {
    state.engine.commune_by_slug(slug).await?.ok_or_else(|| {
        PageError::NotFound(
            "Aucune commune ne prend rendez-vous à cette adresse. Cherchez votre commune depuis l'accueil.".to_owned(),
        )
    })
}

// --- Home: choose a commune ------------------------------------------------------------------

pub struct CommuneItem {
    pub slug: String,
    pub name: String,
    pub postcodes: String,
}

#[derive(Template)]
#[template(path = "pages/home.html")]
struct HomePage {
    l: Layout,
    query: String,
    communes: Vec<CommuneItem>,
}

#[derive(Deserialize)]
pub struct HomeQuery {
    q: Option<String>,
}

pub async fn home(
    State(state): State<AppState>,
    csrf: Csrf,
    Query(q): Query<HomeQuery>,
) -> Result<Response, PageError> {
    let query = q.q.unwrap_or_default().trim().to_owned();
    let needle = crate::domain::wording::folded(&query);
    let mut communes = Vec::new();
    for commune in state.store().communes().await? {
        let config = state.engine.config(commune.id).await?;
        let mut postcodes: Vec<String> = config
            .locations
            .iter()
            .filter(|l| l.active)
            .map(|l| l.postcode.clone())
            .collect();
        postcodes.sort();
        postcodes.dedup();
        let matches = needle.is_empty()
            || crate::domain::wording::folded(&commune.name).contains(&needle)
            || postcodes.iter().any(|p| p.starts_with(&needle));
        if matches {
            communes.push(CommuneItem {
                slug: commune.slug.clone(),
                name: commune.name.clone(),
                postcodes: postcodes.join(", "),
            });
        }
    }
    communes.sort_by_key(|c| crate::domain::wording::folded(&c.name));
    let title = if query.is_empty() {
        "Prendre rendez-vous en mairie".to_owned()
    } else {
        format!("Recherche « {query} »")
    };
    let html = render(&HomePage {
        l: Layout::new(&title, None, &csrf),
        query,
        communes,
    })?;
    Ok(page(&state, &csrf, StatusCode::OK, html))
}

// --- The commune: choose a service ----------------------------------------------------------

pub struct ServiceItem {
    pub url: String,
    pub name: String,
    pub duration: String,
    pub max_persons: i32,
    pub what_to_bring: String,
}

#[derive(Template)]
#[template(path = "pages/commune.html")]
struct CommunePage {
    l: Layout,
    commune_de: String,
    services: Vec<ServiceItem>,
    phone_only: String,
    switchboard: String,
}

/// "04 65 71 00 01" from "+33465710001".
pub(crate) fn spaced_phone(e164: &str) -> String {
    match e164.strip_prefix("+33") {
        Some(national) if national.len() == 9 => {
            let digits = format!("0{national}");
            digits
                .as_bytes()
                .chunks(2)
                .map(|pair| String::from_utf8_lossy(pair).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        }
        _ => e164.to_owned(),
    }
}

pub async fn commune(
    State(state): State<AppState>,
    csrf: Csrf,
    Path(slug): Path<String>,
) -> Result<Response, PageError> {
    let commune = commune_or_404(&state, &slug).await?;
    let config = state.engine.config(commune.id).await?;
    let active = config.services.iter().filter(|s| s.active);
    let services = active
        .clone()
        .filter(|s| s.channels.web)
        .map(|s| ServiceItem {
            url: service_url(&commune, s, &config.locations),
            name: s.name.clone(),
            duration: minutes_text(i64::from(s.duration_minutes)),
            max_persons: s.max_persons,
            what_to_bring: s.what_to_bring.clone(),
        })
        .collect();
    let phone_only = active
        .filter(|s| !s.channels.web)
        .map(|s| s.name.clone())
        .collect::<Vec<_>>()
        .join(", ");
    let switchboard = commune
        .switchboard_number
        .as_deref()
        .or(commune.phone_numbers.first().map(String::as_str))
        .map(spaced_phone)
        .unwrap_or_default();
    let html = render(&CommunePage {
        l: Layout::new("Étape 1 sur 5, choisir la démarche", Some(&commune), &csrf),
        commune_de: de(&commune.name),
        services,
        phone_only,
        switchboard,
    })?;
    Ok(page(&state, &csrf, StatusCode::OK, html))
}

/// A service with nothing to choose (one person, one place) goes straight to its slots.
fn service_url(
    commune: &Commune,
    service: &Service,
    locations: &[crate::domain::Location],
) -> String {
    let active_locations = locations.iter().filter(|l| l.active).count();
    let base = format!("/{}/demarche/{}", commune.slug, service.id);
    if service.max_persons <= 1 && active_locations <= 1 {
        format!("{base}/creneaux")
    } else {
        base
    }
}

// --- Persons and location -------------------------------------------------------------------

pub struct LocationItem {
    pub id: i64,
    pub name: String,
    pub address: String,
}

#[derive(Template)]
#[template(path = "pages/options.html")]
struct OptionsPage {
    l: Layout,
    service_name: String,
    duration: String,
    what_to_bring: String,
    max_persons: i32,
    persons_options: Vec<i32>,
    persons: i32,
    locations: Vec<LocationItem>,
    location: i64,
    action: String,
}

#[derive(Deserialize)]
pub struct SlotQuery {
    persons: Option<String>,
    location: Option<String>,
    from: Option<String>,
    erreur: Option<String>,
}

/// Persons and location as the query gives them, checked against the service.
struct Choice {
    persons: u32,
    location: Option<i64>,
}

fn choice(q: &SlotQuery, ctx: &SlotContext) -> Result<Choice, PageError> {
    let persons = match q.persons.as_deref().map(str::trim) {
        None | Some("") => 1,
        Some(p) => p
            .parse::<u32>()
            .ok()
            .filter(|n| *n >= 1 && i64::from(*n) <= i64::from(ctx.service.max_persons))
            .ok_or_else(|| {
                PageError::BadRequest(
                    BookingError::InvalidPersons {
                        max: ctx.service.max_persons,
                    }
                    .message(),
                )
            })?,
    };
    let location = match q.location.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(l) => Some(
            l.parse::<i64>()
                .ok()
                .filter(|id| ctx.locations.iter().any(|x| x.id == *id && x.active))
                .ok_or_else(|| PageError::BadRequest(BookingError::LocationNotFound.message()))?,
        ),
    };
    Ok(Choice { persons, location })
}

async fn service_context(
    state: &AppState,
    commune: &Commune,
    service: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<SlotContext, PageError> {
    let service = service
        .parse::<i64>()
        .map_err(|_| PageError::Booking(BookingError::ServiceNotFound))?;
    let ctx = state
        .engine
        .slot_context(commune.id, service, from, to)
        .await?;
    if !ctx.service.channels.web {
        return Err(PageError::Booking(BookingError::ChannelNotAllowed(
            crate::domain::Channel::Web,
        )));
    }
    Ok(ctx)
}

pub async fn options(
    State(state): State<AppState>,
    csrf: Csrf,
    Path((slug, service)): Path<(String, String)>,
    Query(q): Query<SlotQuery>,
) -> Result<Response, PageError> {
    let commune = commune_or_404(&state, &slug).await?;
    let today = commune.local_date(state.engine.now());
    let ctx = service_context(&state, &commune, &service, today, today).await?;
    let chosen = choice(&q, &ctx)?;
    let html = render(&OptionsPage {
        l: Layout::new(
            &format!("Étape 2 sur 5, {}", ctx.service.name),
            Some(&commune),
            &csrf,
        ),
        service_name: ctx.service.name.clone(),
        duration: minutes_text(i64::from(ctx.service.duration_minutes)),
        what_to_bring: ctx.service.what_to_bring.clone(),
        max_persons: ctx.service.max_persons,
        persons_options: (1..=ctx.service.max_persons).collect(),
        persons: chosen.persons as i32,
        locations: ctx
            .locations
            .iter()
            .filter(|l| l.active)
            .map(|l| LocationItem {
                id: l.id,
                name: l.name.clone(),
                address: address(l),
            })
            .collect(),
        location: chosen.location.unwrap_or(0),
        action: format!("/{}/demarche/{}/creneaux", commune.slug, ctx.service.id),
    })?;
    Ok(page(&state, &csrf, StatusCode::OK, html))
}

// --- Slots ----------------------------------------------------------------------------------

pub struct SlotView {
    /// `start.location` as the form sends it back.
    pub value: String,
    pub time: String,
    /// "lundi 30 novembre": read before the time, not shown.
    pub day: String,
    pub location: Option<String>,
}

pub struct PartView {
    pub name: &'static str,
    pub slots: Vec<SlotView>,
}

pub struct DayView {
    pub id: String,
    pub heading: String,
    pub parts: Vec<PartView>,
}

/// Groups slots by local day, then morning and afternoon. Places are named when the slots
/// come from several.
pub(super) fn day_views(commune: &Commune, ctx: &SlotContext, slots: &[FreeSlot]) -> Vec<DayView> {
    let several_places = {
        let mut ids: Vec<_> = slots.iter().map(|s| s.location_id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len() > 1
    };
    let mut days: Vec<DayView> = Vec::new();
    for slot in slots {
        let local = slot.start.with_timezone(&commune.timezone);
        let date = local.date_naive();
        let heading = capitalised(&written_date(date));
        if days.last().is_none_or(|d| d.heading != heading) {
            days.push(DayView {
                id: format!("jour-{date}"),
                heading: heading.clone(),
                parts: Vec::new(),
            });
        }
        let Some(day) = days.last_mut() else {
            continue;
        };
        let part = if is_morning(commune, slot.start) {
            "Matin"
        } else {
            "Après-midi"
        };
        if day.parts.last().is_none_or(|p| p.name != part) {
            day.parts.push(PartView {
                name: part,
                slots: Vec::new(),
            });
        }
        let place = ctx
            .locations
            .iter()
            .find(|l| l.id == slot.location_id)
            .map(|l| l.name.clone())
            .unwrap_or_default();
        let time = local_time(commune, slot.start);
        // Said before the time by screen readers, who meet the buttons out of their day.
        let day_name = format!(
            "{} {} {}",
            crate::domain::wording::weekday_name(local.weekday()),
            crate::domain::wording::day_of_month(local.day()),
            crate::domain::wording::month_name(local.month()),
        );
        if let Some(p) = day.parts.last_mut() {
            p.slots.push(SlotView {
                value: format!("{}.{}", slot.start.timestamp(), slot.location_id),
                time,
                day: day_name,
                location: several_places.then_some(place),
            });
        }
    }
    days
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[derive(Template)]
#[template(path = "pages/slots.html")]
pub(super) struct SlotsPage {
    pub l: Layout,
    /// 3 on the booking path; 0 elsewhere (moving an appointment).
    pub step: u32,
    pub heading: String,
    pub intro: String,
    pub errors: Vec<FieldError>,
    pub service_name: String,
    pub persons_text: String,
    pub location_text: String,
    pub change_url: String,
    pub range_text: String,
    pub earlier: String,
    pub later: String,
    pub next_free: String,
    pub days: Vec<DayView>,
    pub empty_message: String,
    pub slot_action: String,
    pub hidden: Vec<(String, String)>,
}

/// One page of slots: `DAYS_PER_PAGE` days from `from` (or from the first free slot), with
/// links to the pages before and after.
pub(super) struct SlotWindow {
    pub range_text: String,
    pub earlier: Option<NaiveDate>,
    pub later: Option<NaiveDate>,
    pub next_free: Option<NaiveDate>,
    pub days: Vec<DayView>,
}

pub(super) async fn slot_window(
    state: &AppState,
    commune: &Commune,
    probe: &SlotContext,
    persons: u32,
    location: Option<i64>,
    from: Option<NaiveDate>,
) -> Result<(SlotContext, SlotWindow), PageError> {
    let now = state.engine.now();
    // The horizon is the service's (from the probe of today); one context covers it all, for
    // the first free slot, the page shown and the next free slot after an empty page.
    let (first, last) = probe.search(now).bookable_dates();
    let ctx = state
        .engine
        .slot_context(commune.id, probe.service.id, first, last.max(first))
        .await?;
    let filter = |from: NaiveDate, to: NaiveDate, limit: Option<usize>| SlotFilter {
        persons,
        location,
        from,
        to,
        limit,
    };
    let start = match from {
        Some(d) => d.clamp(first, last.max(first)),
        None => {
            // The first page opens on the first free slot, however far.
            let next = state
                .engine
                .free_slots_in(&ctx, filter(first, last, Some(1)))
                .await?;
            next.first().map_or(first, |s| commune.local_date(s.start))
        }
    };
    let end = (start + Duration::days(DAYS_PER_PAGE - 1)).min(last);
    let mut slots = state
        .engine
        .free_slots_in(&ctx, filter(start, end, None))
        .await?;
    let mut end = end;
    if slots.len() > SLOTS_PER_PAGE {
        let last_day = commune.local_date(slots[SLOTS_PER_PAGE - 1].start);
        slots.retain(|s| commune.local_date(s.start) <= last_day);
        end = last_day;
    }
    let next_free = if slots.is_empty() && end < last {
        let after = end + Duration::days(1);
        state
            .engine
            .free_slots_in(&ctx, filter(after, last, Some(1)))
            .await?
            .first()
            .map(|s| commune.local_date(s.start))
    } else {
        None
    };
    let range_text = if start <= end {
        format!(
            "Créneaux du {} au {}.",
            written_date(start),
            written_date(end)
        )
    } else {
        String::new()
    };
    let window = SlotWindow {
        range_text,
        earlier: (start > first).then(|| (start - Duration::days(DAYS_PER_PAGE)).max(first)),
        later: (end < last).then(|| end + Duration::days(1)),
        next_free,
        days: day_views(commune, &ctx, &slots),
    };
    Ok((ctx, window))
}

fn slots_url(
    commune: &Commune,
    service: i64,
    persons: u32,
    location: Option<i64>,
    from: Option<NaiveDate>,
) -> String {
    let mut url = format!(
        "/{}/demarche/{service}/creneaux?persons={persons}&location={}",
        commune.slug,
        location.map(|l| l.to_string()).unwrap_or_default()
    );
    if let Some(from) = from {
        url.push_str(&format!("&from={from}"));
    }
    url
}

fn location_text(ctx: &SlotContext, location: Option<i64>) -> String {
    match location.and_then(|id| ctx.locations.iter().find(|l| l.id == id)) {
        Some(l) => l.name.clone(),
        None if ctx.locations.iter().filter(|l| l.active).count() > 1 => {
            "le premier lieu disponible".to_owned()
        }
        None => ctx
            .locations
            .iter()
            .find(|l| l.active)
            .map(|l| l.name.clone())
            .unwrap_or_default(),
    }
}

fn no_slot_message(commune: &Commune) -> String {
    let phone = commune
        .switchboard_number
        .as_deref()
        .or(commune.phone_numbers.first().map(String::as_str))
        .map(spaced_phone);
    match phone {
        Some(p) => format!(
            "Aucun créneau libre sur ces dates. Essayez d'autres dates, ou appelez la mairie au {p}."
        ),
        None => "Aucun créneau libre sur ces dates. Essayez d'autres dates.".to_owned(),
    }
}

pub async fn slots(
    State(state): State<AppState>,
    csrf: Csrf,
    Path((slug, service)): Path<(String, String)>,
    Query(q): Query<SlotQuery>,
) -> Result<Response, PageError> {
    let commune = commune_or_404(&state, &slug).await?;
    let today = commune.local_date(state.engine.now());
    let probe = service_context(&state, &commune, &service, today, today).await?;
    let chosen = choice(&q, &probe)?;
    let from = q
        .from
        .as_deref()
        .filter(|f| !f.is_empty())
        .map(|f| {
            NaiveDate::parse_from_str(f, "%Y-%m-%d").map_err(|_| {
                PageError::BadRequest(
                    "La date demandée n'est pas valide. Revenez à la liste des créneaux."
                        .to_owned(),
                )
            })
        })
        .transpose()?;
    let service_id = probe.service.id;
    let (ctx, window) = slot_window(
        &state,
        &commune,
        &probe,
        chosen.persons,
        chosen.location,
        from,
    )
    .await?;
    let errors = match q.erreur.as_deref() {
        Some("pris") => vec![FieldError::new(
            "",
            "Ce créneau vient d'être pris par quelqu'un d'autre. Choisissez-en un autre.",
        )],
        _ => Vec::new(),
    };
    let url = |d: Option<NaiveDate>| {
        d.map(|d| {
            slots_url(
                &commune,
                service_id,
                chosen.persons,
                chosen.location,
                Some(d),
            )
        })
        .unwrap_or_default()
    };
    let options_url = format!("/{}/demarche/{service_id}", commune.slug);
    let has_choices =
        ctx.service.max_persons > 1 || ctx.locations.iter().filter(|l| l.active).count() > 1;
    let html = render(&SlotsPage {
        l: Layout::new(
            &format!("Étape 3 sur 5, choisir un créneau, {}", ctx.service.name),
            Some(&commune),
            &csrf,
        )
        .with_errors(&errors),
        step: 3,
        heading: "Choisissez un créneau".to_owned(),
        intro: format!(
            "Le créneau choisi vous est réservé {} minutes, le temps de donner vos coordonnées et de saisir le code reçu.",
            state.config.hold_minutes
        ),
        errors,
        service_name: ctx.service.name.clone(),
        persons_text: persons_text(chosen.persons as i32),
        location_text: location_text(&ctx, chosen.location),
        change_url: if has_choices {
            options_url
        } else {
            format!("/{}", commune.slug)
        },
        range_text: window.range_text,
        earlier: url(window.earlier),
        later: url(window.later),
        next_free: url(window.next_free),
        days: window.days,
        empty_message: no_slot_message(&commune),
        slot_action: format!("/{}/reserver", commune.slug),
        hidden: vec![
            ("service".to_owned(), service_id.to_string()),
            ("persons".to_owned(), chosen.persons.to_string()),
            (
                "location".to_owned(),
                chosen.location.map(|l| l.to_string()).unwrap_or_default(),
            ),
        ],
    })?;
    Ok(page(&state, &csrf, StatusCode::OK, html))
}

/// `start.location` (Unix seconds, location id) from a slot button.
pub(crate) fn parse_slot(value: &str) -> Result<(DateTime<Utc>, i64), PageError> {
    let bad = || PageError::BadRequest("Choisissez un créneau dans la liste.".to_owned());
    let (start, location) = value.split_once('.').ok_or_else(bad)?;
    let start = start
        .parse::<i64>()
        .ok()
        .and_then(|s| DateTime::from_timestamp(s, 0))
        .ok_or_else(bad)?;
    let location = location.parse().map_err(|_| bad())?;
    Ok((start, location))
}

/// A slot was chosen: hold it now, then ask who is coming.
pub async fn hold(
    State(state): State<AppState>,
    csrf: Csrf,
    ip: ClientIp,
    Path(slug): Path<String>,
    Form(form): Form<Fields>,
) -> Result<Response, PageError> {
    check_csrf(&csrf, form.get("csrf"))?;
    let commune = commune_or_404(&state, &slug).await?;
    let service: i64 = get(&form, "service")
        .parse()
        .map_err(|_| PageError::Booking(BookingError::ServiceNotFound))?;
    let persons: u32 = match get(&form, "persons") {
        "" => 1,
        p => p.parse().map_err(|_| {
            PageError::BadRequest("Le nombre de personnes n'est pas valide.".into())
        })?,
    };
    let location_filter: Option<i64> = get(&form, "location").parse().ok();
    let (start, location) = parse_slot(get(&form, "slot"))?;
    if !state.limits.take(Allowance::Hold, ip.0) {
        return Err(PageError::TooMany);
    }
    match state
        .engine
        .hold_for_details(
            crate::domain::Channel::Web,
            commune.id,
            service,
            start,
            Some(location),
            persons,
        )
        .await
    {
        Ok(appointment) => Ok(see_other(&format!("/rdv/{}", appointment.id))),
        Err(BookingError::SlotTaken | BookingError::SlotUnavailable) => {
            let from = commune.local_date(start);
            Ok(see_other(&format!(
                "{}&erreur=pris",
                slots_url(&commune, service, persons, location_filter, Some(from))
            )))
        }
        Err(e) => Err(e.into()),
    }
}

// --- Details --------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "pages/details.html")]
struct DetailsPage {
    l: Layout,
    errors: Vec<FieldError>,
    when: String,
    place: String,
    held_until: String,
    action: String,
    release_action: String,
    name_fields: Vec<Field>,
    contact_fields: Vec<Field>,
    ants_fields: Vec<Field>,
}

/// The appointment held for this page, with its commune and service, or a page explaining
/// what became of it.
pub(super) struct Held {
    pub appointment: Appointment,
    pub details: crate::booking::Details,
}

pub(super) async fn held(state: &AppState, id: &str) -> Result<Held, PageError> {
    let not_found = || {
        PageError::NotFound(
            "Cette réservation est introuvable. Reprenez votre demande depuis la page de votre mairie.".to_owned(),
        )
    };
    let id: AppointmentId = id.parse().map_err(|_| not_found())?;
    let appointment = state.store().appointment(id).await?.ok_or_else(not_found)?;
    let details = state.engine.details(&appointment).await?;
    Ok(Held {
        appointment,
        details,
    })
}

fn details_fields(
    form: &Fields,
    errors: &[FieldError],
    ants: usize,
) -> (Vec<Field>, Vec<Field>, Vec<Field>) {
    let value = |name: &str| get(form, name).to_owned();
    let names = vec![
        Field::text("nom", "Nom")
            .autocomplete("family-name")
            .value(&value("nom")),
        Field::text("prenom", "Prénom")
            .autocomplete("given-name")
            .value(&value("prenom")),
    ];
    let contact = vec![
        Field::text("mobile", "Numéro de mobile")
            .kind("tel")
            .hint("Par exemple 06 12 34 56 78. Obligatoire si vous ne donnez pas d'e-mail.")
            .autocomplete("tel")
            .inputmode("tel")
            .value(&value("mobile")),
        Field::text("email", "Adresse e-mail")
            .kind("email")
            .hint("Par exemple nom@exemple.fr. Obligatoire si vous ne donnez pas de mobile.")
            .autocomplete("email")
            .inputmode("email")
            .value(&value("email")),
    ];
    let ants_fields = (1..=ants)
        .map(|n| {
            let name = format!("ants{n}");
            let label = if ants == 1 {
                "Numéro de pré-demande".to_owned()
            } else {
                format!("Numéro de pré-demande, personne {n}")
            };
            Field::text(&name, &label)
                .optional()
                .autocomplete("off")
                .value(&value(&name))
        })
        .collect();
    let with_errors = |fields: Vec<Field>| -> Vec<Field> {
        fields
            .into_iter()
            .map(|f| f.with_error_from(errors))
            .collect()
    };
    (
        with_errors(names),
        with_errors(contact),
        with_errors(ants_fields),
    )
}

fn ants_count(held: &Held) -> usize {
    if held.details.service.category == Category::Titres {
        held.appointment.persons.max(1) as usize
    } else {
        0
    }
}

fn render_details(
    state: &AppState,
    csrf: &Csrf,
    held: &Held,
    form: &Fields,
    errors: Vec<FieldError>,
) -> Result<Response, PageError> {
    let commune = &held.details.commune;
    let (name_fields, contact_fields, ants_fields) =
        details_fields(form, &errors, ants_count(held));
    let held_until = match held.appointment.hold_expires_at {
        Some(t) if t > state.engine.now() => format!("vous est réservé jusqu'à {}", local_time(commune, t)),
        _ => "n'est plus réservé pour vous, mais il vous sera de nouveau attribué s'il est encore libre quand vous validerez".to_owned(),
    };
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let html = render(&DetailsPage {
        l: Layout::new("Étape 4 sur 5, vos coordonnées", Some(commune), csrf).with_errors(&errors),
        errors,
        when: when(commune, held.appointment.starts_at),
        place: held.details.location.name.clone(),
        held_until,
        action: format!("/rdv/{}", held.appointment.id),
        release_action: format!("/rdv/{}/liberer", held.appointment.id),
        name_fields,
        contact_fields,
        ants_fields,
    })?;
    Ok(page(state, csrf, status, html))
}

pub async fn details(
    State(state): State<AppState>,
    csrf: Csrf,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let held = held(&state, &id).await?;
    if let Some(response) = not_held_any_more(&state, &csrf, &held).await? {
        return Ok(response);
    }
    // Coming back to correct a typo: the form shows what was typed.
    let citizen = &held.appointment.citizen;
    let mut form = Fields::new();
    // Only while the hold lives: a lapsed one's page, opened later from a shared computer's
    // history, must not show who booked.
    let live = held.appointment.effective_status(state.engine.now()) == Status::Held;
    if live && (citizen.phone.is_some() || citizen.email.is_some()) {
        let name = citizen.name.as_str();
        let (first, last) = name.split_once(' ').unwrap_or(("", name));
        form.insert("prenom".into(), first.to_owned());
        form.insert("nom".into(), last.to_owned());
        if let Some(p) = &citizen.phone {
            form.insert("mobile".into(), p.as_str().to_owned());
        }
        if let Some(e) = &citizen.email {
            form.insert("email".into(), e.as_str().to_owned());
        }
        for (i, a) in citizen.ants_application_ids.iter().enumerate() {
            form.insert(format!("ants{}", i + 1), a.as_str().to_owned());
        }
    }
    render_details(&state, &csrf, &held, &form, Vec::new())
}

/// The citizen's details from the form, or the problems with each field.
/// The citizen's details from a form. At the counter (`at_counter`), the agent may give a
/// surname alone and no contact at all (then no confirmation is sent).
pub(crate) fn citizen_from(
    form: &Fields,
    ants: usize,
    at_counter: bool,
) -> Result<Citizen, Vec<FieldError>> {
    let mut errors = Vec::new();
    let last = get(form, "nom");
    let first = get(form, "prenom");
    if last.is_empty() {
        errors.push(FieldError::new(
            "nom",
            "Indiquez le nom de la personne qui vient.",
        ));
    }
    if first.is_empty() && !at_counter {
        errors.push(FieldError::new(
            "prenom",
            "Indiquez le prénom de la personne qui vient.",
        ));
    }
    let name = CitizenName::parse(format!("{first} {last}").trim());
    if let (Err(e), true) = (&name, errors.is_empty()) {
        errors.push(FieldError::new("nom", e.0.clone()));
    }
    let phone = match get(form, "mobile") {
        "" => None,
        p => match PhoneE164::parse(p) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push(FieldError::new("mobile", e.0));
                None
            }
        },
    };
    let email = match get(form, "email") {
        "" => None,
        e => match Email::parse(e) {
            Ok(e) => Some(e),
            Err(e) => {
                errors.push(FieldError::new("email", e.0));
                None
            }
        },
    };
    if get(form, "mobile").is_empty() && get(form, "email").is_empty() && !at_counter {
        errors.push(FieldError::new(
            "mobile",
            "Indiquez un numéro de mobile ou une adresse e-mail : le code de confirmation y sera envoyé.",
        ));
    }
    let mut ants_ids = Vec::new();
    for n in 1..=ants {
        let name = format!("ants{n}");
        match get(form, &name) {
            "" => {}
            value => match AntsApplicationId::parse(value) {
                Ok(id) => ants_ids.push(id),
                Err(e) => errors.push(FieldError::new(&name, e.0)),
            },
        }
    }
    match (errors.is_empty(), name) {
        (true, Ok(name)) => Ok(Citizen {
            name,
            phone,
            email,
            ants_application_ids: ants_ids,
        }),
        _ => Err(errors),
    }
}

/// The engine's refusal, on the field it concerns.
pub(crate) fn details_error(e: &BookingError) -> Option<FieldError> {
    let field = match e {
        BookingError::ContactRequired
        | BookingError::CannotReceiveSms
        | BookingError::SmsBudgetExhausted => "mobile",
        BookingError::AntsNotExpected
        | BookingError::TooManyAntsIds { .. }
        | BookingError::RepeatedAntsId => "ants1",
        BookingError::TooManyCodes => "",
        _ => return None,
    };
    let message = match e {
        BookingError::SmsBudgetExhausted => "La mairie ne peut plus envoyer de SMS aujourd'hui : indiquez une adresse e-mail pour recevoir le code.".to_owned(),
        other => other.message(),
    };
    Some(FieldError::new(field, message))
}

pub async fn details_post(
    State(state): State<AppState>,
    csrf: Csrf,
    ip: ClientIp,
    Path(id): Path<String>,
    Form(form): Form<Fields>,
) -> Result<Response, PageError> {
    check_csrf(&csrf, form.get("csrf"))?;
    let held = held(&state, &id).await?;
    let citizen = match citizen_from(&form, ants_count(&held), false) {
        Ok(c) => c,
        Err(errors) => return render_details(&state, &csrf, &held, &form, errors),
    };
    if !state.limits.take(Allowance::Send, ip.0) {
        return Err(PageError::TooMany);
    }
    match state
        .engine
        .provide_details(held.appointment.id, &citizen)
        .await
    {
        Ok((appointment, _)) => Ok(see_other(&format!("/rdv/{}/code", appointment.id))),
        Err(BookingError::Duplicate(_)) => {
            let errors = vec![FieldError::new(
                "",
                "Un rendez-vous pour cette démarche existe déjà avec ces coordonnées. Son lieu et son horaire sont rappelés au numéro ou à l'adresse utilisés pour le prendre ; pour le changer, utilisez le lien reçu à sa confirmation, ou « Retrouver mon rendez-vous ».",
            )];
            render_details(&state, &csrf, &held, &form, errors)
        }
        Err(BookingError::HoldExpired | BookingError::SlotTaken) => {
            slipped_away(&state, &csrf, &held).await
        }
        Err(BookingError::AlreadyConfirmed) => already_confirmed(&state, &csrf, &held),
        Err(e) => match details_error(&e) {
            Some(error) => render_details(&state, &csrf, &held, &form, vec![error]),
            None => Err(e.into()),
        },
    }
}

/// "Choisir un autre créneau": the slot held is let go at once (not when the hold lapses), and
/// the citizen is back on the slots of the same service.
pub async fn release(
    State(state): State<AppState>,
    csrf: Csrf,
    Path(id): Path<String>,
    Form(form): Form<Fields>,
) -> Result<Response, PageError> {
    check_csrf(&csrf, form.get("csrf"))?;
    let held = held(&state, &id).await?;
    state.engine.release_hold(held.appointment.id).await?;
    let commune = &held.details.commune;
    let from = commune.local_date(held.appointment.starts_at);
    Ok(see_other(&slots_url(
        commune,
        held.appointment.service_id,
        held.appointment.persons as u32,
        None,
        Some(from),
    )))
}

/// A hold that is no longer ours: say so and offer the nearest free slots (never a silent
/// failure).
async fn slipped_away(state: &AppState, csrf: &Csrf, held: &Held) -> Result<Response, PageError> {
    let commune = &held.details.commune;
    let appointment = &held.appointment;
    let from = commune.local_date(appointment.starts_at.max(state.engine.now()));
    let (_, last) = {
        let ctx = state
            .engine
            .slot_context(commune.id, appointment.service_id, from, from)
            .await?;
        ctx.search(state.engine.now()).bookable_dates()
    };
    let ctx = state
        .engine
        .slot_context(commune.id, appointment.service_id, from, last.max(from))
        .await?;
    let slots = state
        .engine
        .free_slots_in(
            &ctx,
            SlotFilter {
                persons: appointment.persons as u32,
                location: None,
                from,
                to: last.max(from),
                limit: Some(NEAREST),
            },
        )
        .await?;
    let heading = "Ce créneau n'est plus réservé pour vous";
    let html = render(&SlotsPage {
        l: Layout::new(heading, Some(commune), csrf),
        step: 3,
        heading: heading.to_owned(),
        intro: format!(
            "Le créneau du {} n'est plus disponible : il n'a pas été confirmé à temps, ou la mairie a changé ses horaires. Voici les créneaux libres les plus proches : choisissez-en un, il vous sera réservé {} minutes.",
            when(commune, appointment.starts_at),
            state.config.hold_minutes
        ),
        errors: Vec::new(),
        service_name: ctx.service.name.clone(),
        persons_text: persons_text(appointment.persons),
        location_text: location_text(&ctx, None),
        change_url: String::new(),
        range_text: String::new(),
        earlier: String::new(),
        later: String::new(),
        next_free: String::new(),
        days: day_views(commune, &ctx, &slots),
        empty_message: no_slot_message(commune),
        slot_action: format!("/{}/reserver", commune.slug),
        hidden: vec![
            ("service".to_owned(), appointment.service_id.to_string()),
            ("persons".to_owned(), appointment.persons.to_string()),
            ("location".to_owned(), String::new()),
        ],
    })?;
    Ok(super::page(state, csrf, StatusCode::GONE, html))
}

fn already_confirmed(state: &AppState, csrf: &Csrf, held: &Held) -> Result<Response, PageError> {
    message_page(
        state,
        csrf,
        Some(&held.details.commune),
        StatusCode::OK,
        "Rendez-vous déjà confirmé",
        vec![
            "Ce rendez-vous est déjà confirmé. Le lien pour le voir, le déplacer ou l'annuler vous a été envoyé avec la confirmation.".to_owned(),
        ],
        ("/rdv/retrouver", "Recevoir le lien de nouveau"),
    )
}

/// The GET pages of a hold that is gone (lapsed and taken, cancelled, confirmed) say what
/// happened instead of showing a form.
async fn not_held_any_more(
    state: &AppState,
    csrf: &Csrf,
    held: &Held,
) -> Result<Option<Response>, PageError> {
    let now = state.engine.now();
    Ok(match held.appointment.effective_status(now) {
        Status::Held => None,
        Status::Expired if held.appointment.starts_at > now => {
            // Lapsed, but perhaps still free: the next POST takes it again if so.
            None
        }
        Status::Confirmed => Some(already_confirmed(state, csrf, held)?),
        _ => Some(slipped_away(state, csrf, held).await?),
    })
}

// --- The code -------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "pages/code.html")]
struct CodePage {
    l: Layout,
    errors: Vec<FieldError>,
    info: String,
    sent_to: String,
    when: String,
    place: String,
    action: String,
    resend_action: String,
    resend_wait: i64,
    details_url: String,
    code_field: Field,
}

#[derive(Deserialize)]
pub struct CodeQuery {
    renvoye: Option<String>,
}

/// The last code sent for this hold: when, and where it went as the page says it ("par SMS
/// au +33 6 ** ** ** 78") — read from the outbox, so that a code that fell back to e-mail
/// (the commune's SMS budget spent) is not announced as an SMS.
struct LastCode {
    sent_to: String,
    /// Seconds before another code may be asked for.
    wait: i64,
}

async fn last_code(state: &AppState, held: &Held) -> Result<LastCode, PageError> {
    let sent = state.store().notifications_of(held.appointment.id).await?;
    let last = sent
        .iter()
        .filter(|n| n.message.kind == NotificationKind::Code)
        .max_by_key(|n| n.created_at);
    let Some(last) = last else {
        return Ok(LastCode {
            sent_to: "à vos coordonnées".to_owned(),
            wait: 0,
        });
    };
    let citizen = &held.appointment.citizen;
    let destination = match (last.message.channel, &citizen.phone, &citizen.email) {
        (MessageChannel::Sms, Some(phone), _) => Some(CodeDestination::Sms(phone.clone())),
        (MessageChannel::Email, _, Some(email)) => Some(CodeDestination::Email(email.clone())),
        _ => None,
    };
    let sent_to = match destination {
        Some(d @ CodeDestination::Sms(_)) => format!("par SMS au {}", d.masked()),
        Some(d @ CodeDestination::Email(_)) => format!("par e-mail à {}", d.masked()),
        None => "à vos coordonnées".to_owned(),
    };
    let since = (state.engine.now() - last.created_at).num_seconds();
    Ok(LastCode {
        sent_to,
        wait: (RESEND_AFTER_SECONDS - since).max(0),
    })
}

async fn render_code(
    state: &AppState,
    csrf: &Csrf,
    held: &Held,
    info: String,
    errors: Vec<FieldError>,
) -> Result<Response, PageError> {
    let commune = &held.details.commune;
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let code_field = Field::text("code", "Code à 6 chiffres")
        .autocomplete("one-time-code")
        .inputmode("numeric")
        .with_error_from(&errors);
    let id = held.appointment.id;
    let last = last_code(state, held).await?;
    let html = render(&CodePage {
        l: Layout::new("Étape 5 sur 5, saisir le code", Some(commune), csrf).with_errors(&errors),
        errors,
        info,
        sent_to: last.sent_to,
        when: when(commune, held.appointment.starts_at),
        place: held.details.location.name.clone(),
        action: format!("/rdv/{id}/code"),
        resend_action: format!("/rdv/{id}/renvoyer"),
        resend_wait: last.wait,
        details_url: format!("/rdv/{id}"),
        code_field,
    })?;
    Ok(page(state, csrf, status, html))
}

pub async fn code(
    State(state): State<AppState>,
    csrf: Csrf,
    Path(id): Path<String>,
    Query(q): Query<CodeQuery>,
) -> Result<Response, PageError> {
    let held = held(&state, &id).await?;
    if let Some(response) = not_held_any_more(&state, &csrf, &held).await? {
        return Ok(response);
    }
    if held.appointment.citizen.phone.is_none() && held.appointment.citizen.email.is_none() {
        // No details yet: nothing was sent.
        return Ok(see_other(&format!("/rdv/{}", held.appointment.id)));
    }
    let info = if q.renvoye.is_some() {
        "Un nouveau code vient d'être envoyé ; le précédent ne fonctionne plus.".to_owned()
    } else {
        String::new()
    };
    render_code(&state, &csrf, &held, info, Vec::new()).await
}

pub async fn code_post(
    State(state): State<AppState>,
    csrf: Csrf,
    Path(id): Path<String>,
    Form(form): Form<Fields>,
) -> Result<Response, PageError> {
    check_csrf(&csrf, form.get("csrf"))?;
    let held = held(&state, &id).await?;
    let code = match OtpCode::parse(get(&form, "code")) {
        Ok(code) => code,
        Err(e) => {
            let errors = vec![FieldError::new("code", e.0)];
            return render_code(&state, &csrf, &held, String::new(), errors).await;
        }
    };
    match state
        .engine
        .confirm_with_code(held.appointment.id, &code)
        .await
    {
        Ok((_, token)) => Ok(see_other(&format!("/r/{token}?confirme=1"))),
        Err(e @ (BookingError::WrongCode { .. }
        | BookingError::CodeExpired
        | BookingError::CodeBurnt)) => {
            let message = match e {
                BookingError::WrongCode { attempts_left: 1 } => {
                    "Ce code n'est pas le bon. Il vous reste 1 essai.".to_owned()
                }
                BookingError::WrongCode { attempts_left } => {
                    format!("Ce code n'est pas le bon. Il vous reste {attempts_left} essais.")
                }
                other => other.message(),
            };
            let errors = vec![FieldError::new("code", message)];
            render_code(&state, &csrf, &held, String::new(), errors).await
        }
        Err(BookingError::HoldExpired | BookingError::SlotTaken) => {
            slipped_away(&state, &csrf, &held).await
        }
        Err(BookingError::AlreadyConfirmed) => already_confirmed(&state, &csrf, &held),
        Err(BookingError::Duplicate(_)) => message_page(
            &state,
            &csrf,
            Some(&held.details.commune),
            StatusCode::CONFLICT,
            "Vous avez déjà un rendez-vous",
            vec!["Un autre rendez-vous pour cette démarche a été confirmé avec ces coordonnées entre-temps. Utilisez le lien reçu à sa confirmation pour le voir, le déplacer ou l'annuler.".to_owned()],
            ("/rdv/retrouver", "Recevoir ce lien de nouveau"),
        ),
        Err(e) => Err(e.into()),
    }
}

pub async fn resend(
    State(state): State<AppState>,
    csrf: Csrf,
    ip: ClientIp,
    Path(id): Path<String>,
    Form(form): Form<Fields>,
) -> Result<Response, PageError> {
    check_csrf(&csrf, form.get("csrf"))?;
    let held = held(&state, &id).await?;
    let wait = last_code(&state, &held).await?.wait;
    if wait > 0 {
        let errors = vec![FieldError::new(
            "",
            format!(
                "Attendez encore {wait} secondes avant de demander un nouveau code : le premier est peut-être en route."
            ),
        )];
        return render_code(&state, &csrf, &held, String::new(), errors).await;
    }
    if !state.limits.take(Allowance::Send, ip.0) {
        return Err(PageError::TooMany);
    }
    match state.engine.resend_code(held.appointment.id).await {
        Ok(_) => Ok(see_other(&format!(
            "/rdv/{}/code?renvoye=1",
            held.appointment.id
        ))),
        Err(BookingError::HoldExpired) => slipped_away(&state, &csrf, &held).await,
        Err(BookingError::AlreadyConfirmed) => already_confirmed(&state, &csrf, &held),
        Err(e @ (BookingError::TooManyCodes | BookingError::SmsBudgetExhausted)) => {
            let errors = vec![FieldError::new("", e.message())];
            render_code(&state, &csrf, &held, String::new(), errors).await
        }
        Err(e) => Err(e.into()),
    }
}

/// The summary of an appointment, for the personal page and the cancellation step.
pub(super) fn appointment_view(held: &Held) -> AppointmentView {
    let commune = &held.details.commune;
    let a = &held.appointment;
    AppointmentView {
        service: held.details.service.name.clone(),
        when: when(commune, a.starts_at),
        duration: minutes_text((a.ends_at - a.starts_at).num_minutes()),
        persons: persons_text(a.persons),
        place: held.details.location.name.clone(),
        address: address(&held.details.location),
        access_notes: held.details.location.access_notes.clone(),
        name: a.citizen.name.as_str().to_owned(),
    }
}
