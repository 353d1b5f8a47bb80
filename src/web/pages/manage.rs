//! The personal page behind the link (see, cancel with a confirmation step, move), its `.ics`
//! file, and "find my appointment".

use super::booking::{Held, SlotsPage, appointment_view, parse_slot, slot_window};
use super::{
    AppointmentView, Field, FieldError, Layout, PageError, check_csrf, page, persons_text, render,
    see_other, when,
};
use crate::booking::{BookingError, Cancellation};
use crate::domain::otp::token_hash;
use crate::domain::{Email, PhoneE164, Status};
use crate::notify::CodeDestination;
use crate::notify::templates::{self, Subject};
use crate::web::AppState;
use crate::web::security::{Allowance, ClientIp, Csrf};
use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use serde::Deserialize;
use std::collections::HashMap;

type Fields = HashMap<String, String>;

fn unknown_link() -> PageError {
    PageError::NotFound(
        "Ce lien ne correspond à aucun rendez-vous. Vérifiez qu'il est complet, ou demandez à recevoir un nouveau lien (« Retrouver mon rendez-vous »).".to_owned(),
    )
}

async fn by_token(state: &AppState, token: &str) -> Result<Held, PageError> {
    let appointment = state
        .store()
        .appointment_by_token(&token_hash(token))
        .await?
        .ok_or_else(unknown_link)?;
    let details = state.engine.details(&appointment).await?;
    Ok(Held {
        appointment,
        details,
    })
}

fn is_open(state: &AppState, held: &Held) -> bool {
    let now = state.engine.now();
    held.appointment.effective_status(now) == Status::Confirmed && held.appointment.starts_at > now
}

#[derive(Template)]
#[template(path = "pages/appointment.html")]
struct AppointmentPage {
    l: Layout,
    banner: String,
    heading: String,
    status: String,
    cancel_reason: String,
    a: AppointmentView,
    what_to_bring: String,
    open: bool,
    manage_url: String,
    ics_url: String,
    move_url: String,
    cancel_url: String,
    booking_url: String,
    /// A replacement offered by the commune after it cancelled, waiting for an answer.
    proposal: Option<ProposalView>,
}

struct ProposalView {
    /// Its 48 hours have passed: accepting works only if nobody took the seat since.
    lapsed: bool,
    old_when: String,
    reason: String,
    until: String,
    accept_url: String,
    decline_url: String,
}

#[derive(Deserialize)]
pub struct ShowQuery {
    confirme: Option<String>,
    annule: Option<String>,
    deplace: Option<String>,
    refuse: Option<String>,
}

pub async fn show(
    State(state): State<AppState>,
    csrf: Csrf,
    Path(token): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Result<Response, PageError> {
    let held = by_token(&state, &token).await?;
    let now = state.engine.now();
    let status = held.appointment.effective_status(now);
    let open = is_open(&state, &held);
    // An offer past its 48 hours can still be taken while its time is ahead and its seat free.
    let answerable =
        matches!(status, Status::Held | Status::Expired) && held.appointment.starts_at > now;
    let origin = if answerable {
        state.engine.proposal_origin(&held.appointment).await?
    } else {
        None
    };
    let commune = &held.details.commune;
    let proposal = origin.map(|old| ProposalView {
        lapsed: status == Status::Expired,
        old_when: when(commune, old.starts_at),
        reason: old.cancel_reason.unwrap_or_default(),
        // Held until the appointment itself: nothing worth saying.
        until: held
            .appointment
            .hold_expires_at
            .filter(|t| *t < held.appointment.starts_at)
            .map_or_else(String::new, |t| when(commune, t)),
        accept_url: format!("/r/{token}/accepter"),
        decline_url: format!("/r/{token}/refuser"),
    });
    let (banner, heading) = if proposal.is_some() {
        ("", "Nouveau rendez-vous proposé")
    } else if q.refuse.is_some() {
        ("Vous avez refusé le créneau proposé.", "Créneau refusé")
    } else if q.confirme.is_some() && open {
        ("Votre rendez-vous est confirmé.", "Rendez-vous confirmé")
    } else if q.deplace.is_some() && open {
        ("Votre rendez-vous a été déplacé.", "Votre rendez-vous")
    } else if q.annule.is_some() && !open {
        ("Votre rendez-vous est annulé.", "Rendez-vous annulé")
    } else {
        ("", "Votre rendez-vous")
    };
    let title = if banner.is_empty() {
        heading.to_owned()
    } else {
        banner.trim_end_matches('.').to_owned()
    };
    let html = render(&AppointmentPage {
        l: Layout::new(&title, Some(commune), &csrf),
        banner: banner.to_owned(),
        heading: heading.to_owned(),
        status: status.label().to_owned(),
        cancel_reason: held.appointment.cancel_reason.clone().unwrap_or_default(),
        a: appointment_view(&held),
        what_to_bring: held.details.service.what_to_bring.clone(),
        open,
        manage_url: state.engine.notifier().manage_url(&token),
        ics_url: format!("/r/{token}/rdv.ics"),
        move_url: format!("/r/{token}/deplacer"),
        cancel_url: format!("/r/{token}/annuler"),
        booking_url: format!("/{}", commune.slug),
        proposal,
    })?;
    Ok(page(&state, &csrf, StatusCode::OK, html))
}

/// The citizen accepts the replacement the commune offered.
pub async fn accept(
    State(state): State<AppState>,
    csrf: Csrf,
    Path(token): Path<String>,
    Form(form): Form<Fields>,
) -> Result<Response, PageError> {
    check_csrf(&csrf, form.get("csrf"))?;
    let held = by_token(&state, &token).await?;
    state.engine.accept_proposal(held.appointment.id).await?;
    Ok(see_other(&format!("/r/{token}?confirme=1")))
}

/// The citizen declines it: the seat goes back to everyone.
pub async fn decline(
    State(state): State<AppState>,
    csrf: Csrf,
    Path(token): Path<String>,
    Form(form): Form<Fields>,
) -> Result<Response, PageError> {
    check_csrf(&csrf, form.get("csrf"))?;
    let held = by_token(&state, &token).await?;
    state.engine.decline_proposal(held.appointment.id).await?;
    Ok(see_other(&format!("/r/{token}?refuse=1")))
}

/// The appointment as a calendar file.
pub async fn ics(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, PageError> {
    let held = by_token(&state, &token).await?;
    let booking_url = state.engine.notifier().booking_url(&held.details.commune);
    let subject = Subject {
        commune: &held.details.commune,
        service: &held.details.service,
        location: &held.details.location,
        appointment: &held.appointment,
        booking_url: &booking_url,
    };
    Ok((
        [
            (header::CONTENT_TYPE, "text/calendar; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"rendez-vous-mairie.ics\"",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        templates::ics(&subject),
    )
        .into_response())
}

// --- Cancel ---------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "pages/cancel.html")]
struct CancelPage {
    l: Layout,
    a: AppointmentView,
    action: String,
    back_url: String,
}

pub async fn cancel(
    State(state): State<AppState>,
    csrf: Csrf,
    Path(token): Path<String>,
) -> Result<Response, PageError> {
    let held = by_token(&state, &token).await?;
    if !is_open(&state, &held) {
        return Ok(see_other(&format!("/r/{token}")));
    }
    let html = render(&CancelPage {
        l: Layout::new(
            "Annuler le rendez-vous ?",
            Some(&held.details.commune),
            &csrf,
        ),
        a: appointment_view(&held),
        action: format!("/r/{token}/annuler"),
        back_url: format!("/r/{token}"),
    })?;
    Ok(page(&state, &csrf, StatusCode::OK, html))
}

pub async fn cancel_post(
    State(state): State<AppState>,
    csrf: Csrf,
    Path(token): Path<String>,
    Form(form): Form<Fields>,
) -> Result<Response, PageError> {
    check_csrf(&csrf, form.get("csrf"))?;
    let held = by_token(&state, &token).await?;
    state
        .engine
        .cancel(held.appointment.id, &Cancellation::ByCitizen)
        .await?;
    Ok(see_other(&format!("/r/{token}?annule=1")))
}

// --- Move -----------------------------------------------------------------------------------

#[derive(Deserialize)]
pub struct MoveQuery {
    from: Option<String>,
    erreur: Option<String>,
}

pub async fn move_slots(
    State(state): State<AppState>,
    csrf: Csrf,
    Path(token): Path<String>,
    Query(q): Query<MoveQuery>,
) -> Result<Response, PageError> {
    let held = by_token(&state, &token).await?;
    if !is_open(&state, &held) {
        return Ok(see_other(&format!("/r/{token}")));
    }
    let commune = &held.details.commune;
    let from = q
        .from
        .as_deref()
        .and_then(|f| NaiveDate::parse_from_str(f, "%Y-%m-%d").ok());
    let persons = held.appointment.persons as u32;
    let today = commune.local_date(state.engine.now());
    let probe = state
        .engine
        .slot_context(commune.id, held.appointment.service_id, today, today)
        .await?;
    let (ctx, window) = slot_window(&state, commune, &probe, persons, None, from).await?;
    let url = |d: Option<NaiveDate>| {
        d.map(|d| format!("/r/{token}/deplacer?from={d}"))
            .unwrap_or_default()
    };
    let errors = match q.erreur.as_deref() {
        Some("pris") => vec![FieldError::new(
            "",
            "Ce créneau vient d'être pris par quelqu'un d'autre. Votre rendez-vous n'a pas changé : choisissez un autre créneau.",
        )],
        _ => Vec::new(),
    };
    let current = appointment_view(&held);
    let html = render(&SlotsPage {
        l: Layout::new("Déplacer le rendez-vous", Some(commune), &csrf).with_errors(&errors),
        step: 0,
        heading: "Déplacer le rendez-vous".to_owned(),
        intro: format!(
            "Votre rendez-vous actuel : {}, {}. Il reste le vôtre jusqu'à ce que le nouveau créneau soit pris.",
            current.when, current.place
        ),
        errors,
        service_name: ctx.service.name.clone(),
        persons_text: persons_text(held.appointment.persons),
        location_text: "tous les lieux".to_owned(),
        change_url: String::new(),
        range_text: window.range_text,
        earlier: url(window.earlier),
        later: url(window.later),
        next_free: url(window.next_free),
        days: window.days,
        empty_message: "Aucun autre créneau libre sur ces dates. Essayez d'autres dates."
            .to_owned(),
        slot_action: format!("/r/{token}/deplacer"),
        hidden: Vec::new(),
    })?;
    Ok(page(&state, &csrf, StatusCode::OK, html))
}

pub async fn move_post(
    State(state): State<AppState>,
    csrf: Csrf,
    ip: ClientIp,
    Path(token): Path<String>,
    Form(form): Form<Fields>,
) -> Result<Response, PageError> {
    check_csrf(&csrf, form.get("csrf"))?;
    let held = by_token(&state, &token).await?;
    let (start, location) = parse_slot(form.get("slot").map_or("", String::as_str))?;
    // Each move sends a notice: bouncing between two slots must not run up the SMS bill.
    if !state.limits.take(Allowance::Send, ip.0) {
        return Err(PageError::TooMany);
    }
    match state
        .engine
        .move_to(held.appointment.id, start, Some(location))
        .await
    {
        // The old appointment's links now lead to the new one.
        Ok(_) => Ok(see_other(&format!("/r/{token}?deplace=1"))),
        Err(BookingError::SlotTaken | BookingError::SlotUnavailable) => {
            let from = held.details.commune.local_date(start);
            Ok(see_other(&format!(
                "/r/{token}/deplacer?from={from}&erreur=pris"
            )))
        }
        Err(e) => Err(e.into()),
    }
}

// --- Find my appointment --------------------------------------------------------------------

#[derive(Template)]
#[template(path = "pages/find.html")]
struct FindPage {
    l: Layout,
    errors: Vec<FieldError>,
    sent: bool,
    contact: String,
    contact_field: Field,
}

fn contact_field(value: &str, errors: &[FieldError]) -> Field {
    Field::text("contact", "Numéro de mobile ou adresse e-mail")
        .hint("Par exemple 06 12 34 56 78 ou nom@exemple.fr.")
        .autocomplete("email")
        .value(value)
        .with_error_from(errors)
}

fn render_find(
    state: &AppState,
    csrf: &Csrf,
    value: &str,
    sent: bool,
    errors: Vec<FieldError>,
) -> Result<Response, PageError> {
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let title = if sent {
        "Lien envoyé, retrouver mon rendez-vous"
    } else {
        "Retrouver mon rendez-vous"
    };
    let html = render(&FindPage {
        l: Layout::new(title, None, csrf).with_errors(&errors),
        contact_field: contact_field(value, &errors),
        errors,
        sent,
        contact: value.to_owned(),
    })?;
    Ok(page(state, csrf, status, html))
}

#[derive(Deserialize)]
pub struct FindQuery {
    /// The masked contact links were sent to.
    envoye: Option<String>,
}

pub async fn find(
    State(state): State<AppState>,
    csrf: Csrf,
    Query(q): Query<FindQuery>,
) -> Result<Response, PageError> {
    match q.envoye {
        Some(masked) => render_find(&state, &csrf, &masked, true, Vec::new()),
        None => render_find(&state, &csrf, "", false, Vec::new()),
    }
}

pub async fn find_post(
    State(state): State<AppState>,
    csrf: Csrf,
    ip: ClientIp,
    Form(form): Form<Fields>,
) -> Result<Response, PageError> {
    check_csrf(&csrf, form.get("csrf"))?;
    let value = form.get("contact").map_or("", |v| v.trim());
    let destination = if value.is_empty() {
        Err(
            "Indiquez le numéro de mobile ou l'adresse e-mail donnés en prenant rendez-vous."
                .to_owned(),
        )
    } else if value.contains('@') {
        Email::parse(value)
            .map(CodeDestination::Email)
            .map_err(|e| e.0)
    } else {
        PhoneE164::parse(value)
            .map_err(|e| e.0)
            .and_then(|p| {
                if p.can_receive_sms(true) {
                    Ok(CodeDestination::Sms(p))
                } else {
                    Err("Ce numéro ne peut pas recevoir de SMS : indiquez le mobile ou l'adresse e-mail donnés en prenant rendez-vous.".to_owned())
                }
            })
    };
    let destination = match destination {
        Ok(d) => d,
        Err(message) => {
            return render_find(
                &state,
                &csrf,
                value,
                false,
                vec![FieldError::new("contact", message)],
            );
        }
    };
    if !state.limits.take(Allowance::Send, ip.0) {
        return Err(PageError::TooMany);
    }
    // The same answer whatever was found: the page must not tell who has appointments.
    state.engine.send_links(&destination).await?;
    // A reload of the answer must not send again.
    let masked = destination.masked();
    let query = serde_urlencoded::to_string([("envoye", masked.as_str())])
        .map_err(|e| PageError::Render(e.to_string()))?;
    Ok(see_other(&format!("/rdv/retrouver?{query}")))
}
