//! The day at the counter: the appointments of a day by location and planning, the search, one
//! appointment (attendance, cancellation with a replacement), booking for someone in a few
//! keystrokes, and closing a period.

use super::super::pages::booking::{Fields, get};
use super::super::pages::booking::{citizen_from, details_error, parse_slot, spaced_phone};
use super::super::pages::{FieldError, PageError, check_csrf, local_time, render, see_other, when};
use super::{AgentLayout, CommuneAgent, agent_page, not_found};
use crate::booking::{
    Attendance, BookingError, BookingMode, BookingRequest, CommuneCancellation, CommuneConfig, Told,
};
use crate::domain::reminders::resolve;
use crate::domain::slots::SlotFilter;
use crate::domain::{Appointment, Category, Channel, Commune, Status};
use crate::store::NewClosure;
use crate::web::AppState;
use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::response::Response;
use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

/// Local midnight to midnight of `date`, as UTC instants.
pub fn day_bounds(commune: &Commune, date: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = resolve(commune.timezone, date.and_time(NaiveTime::MIN));
    let end = resolve(
        commune.timezone,
        (date + Duration::days(1)).and_time(NaiveTime::MIN),
    );
    (start, end)
}

/// One appointment as the agents' tables show it.
pub struct Row {
    pub id: String,
    pub time: String,
    pub date: String,
    pub name: String,
    /// The name was heard on the telephone (speech recognition): spell it back to be sure.
    pub spoken: bool,
    pub service: String,
    pub persons: i32,
    pub contact: String,
    pub channel: &'static str,
    pub status: &'static str,
    pub status_code: &'static str,
    /// Attendance can be recorded (confirmed or marked, on or before today).
    pub markable: bool,
}

pub fn row(config: &CommuneConfig, a: &Appointment, now: DateTime<Utc>) -> Row {
    let commune = &config.commune;
    let status = a.effective_status(now);
    let service = config
        .services
        .iter()
        .find(|s| s.id == a.service_id)
        .map_or_else(String::new, |s| s.name.clone());
    let mut contact = Vec::new();
    if let Some(phone) = &a.citizen.phone {
        contact.push(spaced_phone(phone.as_str()));
    }
    if let Some(email) = &a.citizen.email {
        contact.push(email.as_str().to_owned());
    }
    Row {
        id: a.id.to_string(),
        time: format!(
            "{} – {}",
            local_time(commune, a.starts_at),
            local_time(commune, a.ends_at)
        ),
        date: when(commune, a.starts_at),
        name: a.citizen.name.as_str().to_owned(),
        spoken: a.channel == Channel::Phone,
        service,
        persons: a.persons,
        contact: contact.join(" · "),
        channel: crate::domain::stats::channel_label(a.channel),
        status: status.label(),
        status_code: status.as_str(),
        markable: matches!(
            status,
            Status::Confirmed | Status::Honoured | Status::NoShow
        ) && commune.local_date(a.starts_at) <= commune.local_date(now),
    }
}

/// The appointments of one location and planning.
pub struct Group {
    pub title: String,
    pub rows: Vec<Row>,
}

pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "agent/day.html")]
pub struct DayPage {
    pub l: AgentLayout,
    pub date_title: String,
    pub date: String,
    pub previous: String,
    pub next: String,
    pub today: String,
    pub locations: Vec<Choice>,
    pub plannings: Vec<Choice>,
    pub groups: Vec<Group>,
    pub total: usize,
    pub back: String,
}

#[derive(Deserialize, Default)]
pub struct DayQuery {
    date: Option<String>,
    lieu: Option<String>,
    planning: Option<String>,
}

fn choices<T>(items: &[T], selected: Option<i64>, f: impl Fn(&T) -> (i64, String)) -> Vec<Choice> {
    items
        .iter()
        .map(|item| {
            let (id, label) = f(item);
            Choice {
                value: id.to_string(),
                label,
                selected: selected == Some(id),
            }
        })
        .collect()
}

/// The day view, rendered (shared by the handler and the benchmark).
pub fn day_page(
    l: AgentLayout,
    config: &CommuneConfig,
    appointments: &[Appointment],
    date: NaiveDate,
    location: Option<i64>,
    planning: Option<i64>,
    now: DateTime<Utc>,
) -> DayPage {
    let commune = &config.commune;
    let mut groups: Vec<Group> = Vec::new();
    let mut total = 0;
    for loc in config
        .locations
        .iter()
        .filter(|l| location.is_none_or(|id| id == l.id))
    {
        for plan in config
            .plannings
            .iter()
            .filter(|p| planning.is_none_or(|id| id == p.id))
        {
            let rows: Vec<Row> = appointments
                .iter()
                .filter(|a| a.location_id == loc.id && a.planning_id == plan.id)
                .filter(|a| !matches!(a.effective_status(now), Status::Expired | Status::Moved))
                .map(|a| row(config, a, now))
                .collect();
            if rows.is_empty() {
                continue;
            }
            total += rows.len();
            groups.push(Group {
                title: format!("{} — {}", loc.name, plan.name),
                rows,
            });
        }
    }
    let query = |d: NaiveDate| {
        let mut q = format!("/agent/jour?date={d}");
        if let Some(l) = location {
            q.push_str(&format!("&lieu={l}"));
        }
        if let Some(p) = planning {
            q.push_str(&format!("&planning={p}"));
        }
        q
    };
    DayPage {
        l,
        date_title: crate::domain::wording::written_date(date),
        date: date.to_string(),
        previous: query(date - Duration::days(1)),
        next: query(date + Duration::days(1)),
        today: query(commune.local_date(now)),
        locations: choices(&config.locations, location, |l| (l.id, l.name.clone())),
        plannings: choices(&config.plannings, planning, |p| (p.id, p.name.clone())),
        groups,
        total,
        back: query(date),
    }
}

fn id_param(value: Option<&str>) -> Option<i64> {
    value.and_then(|v| v.parse().ok())
}

pub async fn day(
    State(state): State<AppState>,
    a: CommuneAgent,
    Query(q): Query<DayQuery>,
) -> Result<Response, PageError> {
    let now = state.engine.now();
    let commune = &a.commune;
    let date = q
        .date
        .as_deref()
        .and_then(super::parse_date)
        .unwrap_or_else(|| commune.local_date(now));
    let config = state.engine.config(commune.id).await?;
    let (from, to) = day_bounds(commune, date);
    let appointments = state.store().appointments(commune.id, from, to).await?;
    let page = day_page(
        a.layout("Journée", "/agent/jour"),
        &config,
        &appointments,
        date,
        id_param(q.lieu.as_deref()),
        id_param(q.planning.as_deref()),
        now,
    );
    Ok(agent_page(&state, &a.csrf, render(&page)?))
}

#[derive(Template)]
#[template(path = "agent/search.html")]
struct SearchPage {
    l: AgentLayout,
    q: String,
    searched: bool,
    rows: Vec<Row>,
}

#[derive(Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
}

pub async fn search(
    State(state): State<AppState>,
    a: CommuneAgent,
    Query(query): Query<SearchQuery>,
) -> Result<Response, PageError> {
    let q = query.q.unwrap_or_default().trim().to_owned();
    let now = state.engine.now();
    let config = state.engine.config(a.commune.id).await?;
    let mut rows = Vec::new();
    if q.chars().count() >= 2 {
        // A number is searched as the citizen's mobile is stored: "06 39 98…" → "+33639 98…".
        let digits: String = q.chars().filter(char::is_ascii_digit).collect();
        let needle = if digits.len() >= 4 && digits.len() * 2 >= q.len() {
            match digits.strip_prefix('0') {
                Some(rest) => format!("+33{rest}"),
                None => digits,
            }
        } else {
            q.clone()
        };
        let found = state
            .store()
            .search_appointments(a.commune.id, &needle, 50, now)
            .await?;
        rows = found.iter().map(|ap| row(&config, ap, now)).collect();
    }
    let html = render(&SearchPage {
        l: a.layout("Rechercher", "/agent/recherche"),
        searched: q.chars().count() >= 2,
        q,
        rows,
    })?;
    Ok(agent_page(&state, &a.csrf, html))
}

/// An appointment of the agent's commune, or 404.
async fn own_appointment(
    state: &AppState,
    a: &CommuneAgent,
    id: &str,
) -> Result<Appointment, PageError> {
    let id: Uuid = id.parse().map_err(|_| not_found())?;
    let appointment = state.store().appointment(id).await?.ok_or_else(not_found)?;
    a.own(appointment.commune_id)?;
    Ok(appointment)
}

struct Line {
    label: &'static str,
    value: String,
}

struct MessageLine {
    what: String,
    channel: &'static str,
    status: String,
    at: String,
}

#[derive(Template)]
#[template(path = "agent/appointment.html")]
struct AppointmentPage {
    l: AgentLayout,
    r: Row,
    lines: Vec<Line>,
    banner: String,
    cancellable: bool,
    proposal: Option<Row>,
    replaces: Option<Row>,
    messages: Vec<MessageLine>,
    back: String,
}

#[derive(Deserialize)]
pub struct AppointmentQuery {
    reserve: Option<String>,
    proposition: Option<String>,
    annule: Option<String>,
    marque: Option<String>,
}

fn notification_label(kind: crate::domain::NotificationKind) -> &'static str {
    use crate::domain::NotificationKind as K;
    match kind {
        K::Code => "code de confirmation",
        K::Confirmation => "confirmation",
        K::Reminder => "rappel",
        K::Cancellation => "annulation par l'usager",
        K::CommuneCancellation => "annulation par la mairie",
        K::Moved => "déplacement",
        K::DuplicateNotice => "avis de doublon",
        K::SmsReply => "réponse SMS",
        K::Link => "lien personnel",
    }
}

fn notification_status(status: crate::domain::NotificationStatus) -> &'static str {
    use crate::domain::NotificationStatus as N;
    match status {
        N::Pending => "à envoyer",
        N::Sending => "en cours d'envoi",
        N::Sent => "envoyé",
        N::Failed => "échec",
        N::Unknown => "envoi incertain",
        N::Cancelled => "annulé",
    }
}

pub async fn appointment(
    State(state): State<AppState>,
    a: CommuneAgent,
    Path(id): Path<String>,
    Query(q): Query<AppointmentQuery>,
) -> Result<Response, PageError> {
    let ap = own_appointment(&state, &a, &id).await?;
    let now = state.engine.now();
    let config = state.engine.config(a.commune.id).await?;
    let commune = &config.commune;
    let location = config.locations.iter().find(|l| l.id == ap.location_id);
    let planning = config.plannings.iter().find(|p| p.id == ap.planning_id);
    let mut lines = vec![
        Line {
            label: "Lieu",
            value: location.map_or_else(String::new, |l| {
                format!("{} — {}", l.name, super::super::pages::address(l))
            }),
        },
        Line {
            label: "Planning",
            value: planning.map_or_else(String::new, |p| p.name.clone()),
        },
        Line {
            label: "Pris le",
            value: when(commune, ap.created_at),
        },
    ];
    if !ap.citizen.ants_application_ids.is_empty() {
        lines.push(Line {
            label: "Pré-demandes ANTS",
            value: ap
                .citizen
                .ants_application_ids
                .iter()
                .map(|i| i.as_str().to_owned())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    if let Some(reason) = &ap.cancel_reason {
        lines.push(Line {
            label: "Motif d'annulation",
            value: reason.clone(),
        });
    }
    let proposal = match q
        .proposition
        .as_deref()
        .and_then(|p| p.parse::<Uuid>().ok())
    {
        Some(pid) => state
            .store()
            .appointment(pid)
            .await?
            .filter(|p| p.commune_id == a.commune.id && p.replaces_id == Some(ap.id))
            .map(|p| row(&config, &p, now)),
        None => None,
    };
    let replaces = match ap.replaces_id {
        Some(rid) => state
            .store()
            .appointment(rid)
            .await?
            .filter(|r| r.commune_id == a.commune.id)
            .map(|r| row(&config, &r, now)),
        None => None,
    };
    let banner = if q.reserve.is_some() {
        let by_sms = ap
            .citizen
            .phone
            .as_ref()
            .is_some_and(|p| p.can_receive_sms(commune.allow_foreign_mobiles));
        if by_sms || ap.citizen.email.is_some() {
            "Rendez-vous réservé. La confirmation part à l'usager.".to_owned()
        } else {
            "Rendez-vous réservé. Ni mobile ni e-mail : remettez l'heure à l'usager par écrit."
                .to_owned()
        }
    } else if q.annule.is_some() {
        match &proposal {
            Some(p) => format!(
                "Rendez-vous annulé. Nouveau créneau proposé et réservé pour l'usager : {}.",
                p.date
            ),
            None => "Rendez-vous annulé. Aucun créneau libre n'a pu être proposé.".to_owned(),
        }
    } else if q.marque.is_some() {
        "C'est noté.".to_owned()
    } else {
        String::new()
    };
    let messages = state
        .store()
        .notifications_of(ap.id)
        .await?
        .into_iter()
        .map(|n| MessageLine {
            what: notification_label(n.message.kind).to_owned(),
            channel: match n.message.channel {
                crate::domain::MessageChannel::Sms => "SMS",
                crate::domain::MessageChannel::Email => "e-mail",
            },
            status: notification_status(n.status).to_owned(),
            at: when(commune, n.sent_at.unwrap_or(n.created_at)),
        })
        .collect();
    let status = ap.effective_status(now);
    let html = render(&AppointmentPage {
        l: a.layout("Rendez-vous", ""),
        r: row(&config, &ap, now),
        lines,
        banner,
        cancellable: matches!(status, Status::Confirmed | Status::Held) && ap.ends_at > now,
        proposal,
        replaces,
        messages,
        back: format!("/agent/jour?date={}", commune.local_date(ap.starts_at)),
    })?;
    Ok(agent_page(&state, &a.csrf, html))
}

/// Where a form sends the agent back: a back-office page only.
fn back_to(form: &Fields, fallback: &str) -> String {
    match get(form, "retour") {
        r if r.starts_with("/agent/") => r.to_owned(),
        _ => fallback.to_owned(),
    }
}

pub async fn attendance(
    State(state): State<AppState>,
    a: CommuneAgent,
    Path(id): Path<String>,
    Form(form): Form<Fields>,
) -> Result<Response, PageError> {
    check_csrf(&a.csrf, form.get("csrf"))?;
    let ap = own_appointment(&state, &a, &id).await?;
    let (attendance, label) = match get(&form, "presence") {
        "venu" => (Attendance::Honoured, "venu"),
        "absent" => (Attendance::NoShow, "absent"),
        _ => {
            return Err(PageError::BadRequest(
                "Indiquez si l'usager est venu ou absent.".to_owned(),
            ));
        }
    };
    state.engine.mark(ap.id, attendance).await?;
    a.audit(
        &state,
        "presence",
        format!("{} : {} ({})", label, ap.citizen.name.as_str(), ap.id),
    )
    .await;
    Ok(see_other(&back_to(
        &form,
        &format!("/agent/rdv/{}?marque=1", ap.id),
    )))
}

pub async fn cancel(
    State(state): State<AppState>,
    a: CommuneAgent,
    Path(id): Path<String>,
    Form(form): Form<Fields>,
) -> Result<Response, PageError> {
    check_csrf(&a.csrf, form.get("csrf"))?;
    let ap = own_appointment(&state, &a, &id).await?;
    let reason = get(&form, "motif");
    if reason.is_empty() || reason.chars().count() > 120 {
        return Err(PageError::BadRequest(
            "Indiquez le motif de l'annulation (120 caractères au plus) : il est envoyé à l'usager."
                .to_owned(),
        ));
    }
    let propose = form.contains_key("proposer");
    let outcome = state
        .engine
        .cancel_with_proposal(ap.id, reason, propose)
        .await?;
    a.audit(
        &state,
        "annulation",
        format!(
            "{} du {} ({}) : {}{}",
            ap.citizen.name.as_str(),
            when(&a.commune, ap.starts_at),
            ap.id,
            reason,
            outcome
                .proposal
                .as_ref()
                .map_or_else(String::new, |p| format!(
                    " — proposé : {}",
                    when(&a.commune, p.starts_at)
                ))
        ),
    )
    .await;
    let mut to = format!("/agent/rdv/{}?annule=1", ap.id);
    if let Some(p) = &outcome.proposal {
        to.push_str(&format!("&proposition={}", p.id));
    }
    Ok(see_other(&to))
}

// --- Booking for someone ------------------------------------------------------------------

pub struct SlotChoice {
    pub value: String,
    pub label: String,
    pub checked: bool,
}

#[derive(Template)]
#[template(path = "agent/book.html")]
struct BookPage {
    l: AgentLayout,
    errors: Vec<FieldError>,
    services: Vec<Choice>,
    locations: Vec<Choice>,
    persons: String,
    date: String,
    searched: bool,
    service_id: String,
    location_id: String,
    slots: Vec<SlotChoice>,
    /// One ANTS number field per person, for CNI/passport.
    ants_fields: Vec<String>,
    max_persons: i32,
    form: Fields,
}

impl BookPage {
    fn value(&self, name: &str) -> &str {
        self.form.get(name).map_or("", String::as_str)
    }

    fn error(&self, name: &str) -> &str {
        self.errors
            .iter()
            .find(|e| e.field == name)
            .map_or("", |e| e.message.as_str())
    }
}

async fn render_book(
    state: &AppState,
    a: &CommuneAgent,
    form: Fields,
    errors: Vec<FieldError>,
) -> Result<Response, PageError> {
    let config = state.engine.config(a.commune.id).await?;
    let commune = &config.commune;
    let now = state.engine.now();
    let service = id_param(form.get("demarche").map(String::as_str))
        .and_then(|id| config.services.iter().find(|s| s.id == id && s.active));
    let location = id_param(form.get("lieu").map(String::as_str));
    let persons: u32 = get(&form, "personnes").parse().unwrap_or(1).max(1);
    let from = get(&form, "date")
        .parse::<NaiveDate>()
        .unwrap_or_else(|_| commune.local_date(now));
    let mut errors = errors;
    let mut slots = Vec::new();
    if let Some(service) = service {
        let filter = SlotFilter {
            persons,
            location,
            from,
            to: from + Duration::days(i64::from(service.horizon_days.max(1))),
            limit: Some(12),
        };
        match state
            .engine
            .free_slots(commune.id, service.id, filter)
            .await
        {
            Ok(found) => {
                let chosen = get(&form, "creneau");
                slots = found
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let value = format!("{}.{}", s.start.timestamp(), s.location_id);
                        let place = config
                            .locations
                            .iter()
                            .find(|l| l.id == s.location_id)
                            .map_or_else(String::new, |l| l.name.clone());
                        SlotChoice {
                            checked: if chosen.is_empty() {
                                i == 0
                            } else {
                                chosen == value
                            },
                            value,
                            label: format!("{} — {}", when(commune, s.start), place),
                        }
                    })
                    .collect();
                if slots.is_empty() {
                    errors.push(FieldError::new(
                        "demarche",
                        "Aucun créneau libre pour cette démarche et ce nombre de personnes dans les semaines qui viennent.",
                    ));
                }
            }
            Err(e) => errors.push(FieldError::new("personnes", e.message())),
        }
    }
    let page = BookPage {
        l: a.layout(
            if errors.is_empty() {
                "Prendre un rendez-vous"
            } else {
                "Erreur : Prendre un rendez-vous"
            },
            "/agent/reserver",
        ),
        services: choices(
            &config
                .services
                .iter()
                .filter(|s| s.active && s.channels.agent)
                .cloned()
                .collect::<Vec<_>>(),
            service.map(|s| s.id),
            |s| (s.id, s.name.clone()),
        ),
        locations: choices(&config.locations, location, |l| (l.id, l.name.clone())),
        persons: persons.to_string(),
        date: from.to_string(),
        searched: service.is_some(),
        service_id: service.map_or_else(String::new, |s| s.id.to_string()),
        location_id: location.map_or_else(String::new, |l| l.to_string()),
        slots,
        ants_fields: if service.is_some_and(|s| s.category == Category::Titres) {
            (1..=persons).map(|n| format!("ants{n}")).collect()
        } else {
            Vec::new()
        },
        max_persons: service.map_or(1, |s| s.max_persons),
        errors,
        form,
    };
    let mut response = agent_page(state, &a.csrf, render(&page)?);
    if !page.errors.is_empty() && page.form.contains_key("nom") {
        *response.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(response)
}

pub async fn book(
    State(state): State<AppState>,
    a: CommuneAgent,
    Query(q): Query<Fields>,
) -> Result<Response, PageError> {
    render_book(&state, &a, q, Vec::new()).await
}

pub async fn book_post(
    State(state): State<AppState>,
    a: CommuneAgent,
    Form(form): Form<Fields>,
) -> Result<Response, PageError> {
    check_csrf(&a.csrf, form.get("csrf"))?;
    let config = state.engine.config(a.commune.id).await?;
    let Some(service) = id_param(form.get("demarche").map(String::as_str))
        .and_then(|id| config.services.iter().find(|s| s.id == id))
    else {
        return render_book(
            &state,
            &a,
            form,
            vec![FieldError::new("demarche", "Choisissez une démarche.")],
        )
        .await;
    };
    let persons: u32 = get(&form, "personnes").parse().unwrap_or(0);
    let slot = match parse_slot(get(&form, "creneau")) {
        Ok(slot) => slot,
        Err(_) => {
            let errors = vec![FieldError::new(
                "creneau",
                "Choisissez un créneau dans la liste.",
            )];
            return render_book(&state, &a, form, errors).await;
        }
    };
    let ants = if service.category == Category::Titres {
        persons as usize
    } else {
        0
    };
    let citizen = match citizen_from(&form, ants, true) {
        Ok(c) => c,
        Err(errors) => return render_book(&state, &a, form, errors).await,
    };
    let request = BookingRequest {
        commune: a.commune.id,
        service: service.id,
        start: slot.0,
        location: Some(slot.1),
        persons,
        citizen,
        channel: Channel::Agent,
    };
    match state.engine.book(&request, BookingMode::Confirmed).await {
        Ok(booked) => {
            a.audit(
                &state,
                "reservation",
                format!(
                    "{} — {} le {} ({})",
                    booked.citizen.name.as_str(),
                    service.name,
                    when(&a.commune, booked.starts_at),
                    booked.id
                ),
            )
            .await;
            Ok(see_other(&format!("/agent/rdv/{}?reserve=1", booked.id)))
        }
        Err(e @ BookingError::Store(_)) => Err(e.into()),
        Err(BookingError::Duplicate(place)) => {
            // Where the other appointment is, only if it is this commune's: another commune's
            // appointments are none of this agent's business.
            let message = match place.filter(|p| p.commune_slug == a.commune.slug) {
                Some(p) => format!(
                    "Cette personne a déjà un rendez-vous pour cette démarche : {}, le {}, {}. Déplacez-le ou annulez-le d'abord (recherchez-la dans « Rechercher »).",
                    p.service_name,
                    when(&a.commune, p.starts_at),
                    p.location_name
                ),
                None => "Cette personne a déjà un rendez-vous pour cette démarche dans une autre commune. Elle peut le déplacer ou l'annuler avec le lien reçu à sa confirmation.".to_owned(),
            };
            render_book(&state, &a, form, vec![FieldError::new("nom", message)]).await
        }
        Err(e) => {
            let error = details_error(&e).unwrap_or_else(|| {
                let field = match e {
                    BookingError::InvalidPersons { .. } => "personnes",
                    _ => "creneau",
                };
                FieldError::new(field, e.message())
            });
            render_book(&state, &a, form, vec![error]).await
        }
    }
}

// --- Closing a period ---------------------------------------------------------------------

#[derive(Template)]
#[template(path = "agent/close.html")]
struct ClosePage {
    l: AgentLayout,
    errors: Vec<FieldError>,
    scopes: Vec<Choice>,
    form: Fields,
    /// The appointments the closure would cancel, once the agent asked to see them.
    preview: Option<Vec<Row>>,
}

impl ClosePage {
    fn value(&self, name: &str) -> &str {
        self.form.get(name).map_or("", String::as_str)
    }
}

struct Outcome {
    r: Row,
    told: String,
    proposal: String,
    call: bool,
}

#[derive(Template)]
#[template(path = "agent/closed.html")]
struct ClosedPage {
    l: AgentLayout,
    period: String,
    outcomes: Vec<Outcome>,
    to_call: usize,
}

fn scopes(config: &CommuneConfig, selected: &str) -> Vec<Choice> {
    let mut all = vec![("commune".to_owned(), "Toute la commune".to_owned())];
    all.extend(
        config
            .locations
            .iter()
            .map(|l| (format!("lieu:{}", l.id), format!("Lieu : {}", l.name))),
    );
    all.extend(config.plannings.iter().map(|p| {
        (
            format!("planning:{}", p.id),
            format!("Planning : {}", p.name),
        )
    }));
    all.into_iter()
        .map(|(value, label)| Choice {
            selected: value == selected,
            value,
            label,
        })
        .collect()
}

pub async fn close(
    State(state): State<AppState>,
    a: CommuneAgent,
    Query(q): Query<Fields>,
) -> Result<Response, PageError> {
    let config = state.engine.config(a.commune.id).await?;
    let today = a.commune.local_date(state.engine.now()).to_string();
    let mut form = q;
    form.entry("du".into()).or_insert_with(|| today.clone());
    form.entry("au".into()).or_insert(today);
    form.entry("de".into()).or_insert_with(|| "00:00".into());
    form.entry("a".into()).or_insert_with(|| "23:59".into());
    let html = render(&ClosePage {
        l: a.layout("Fermer une période", "/agent/fermer"),
        errors: Vec::new(),
        scopes: scopes(
            &config,
            form.get("portee").map_or("commune", String::as_str),
        ),
        form,
        preview: None,
    })?;
    Ok(agent_page(&state, &a.csrf, html))
}

/// The closure a form describes, or what is wrong with it.
fn closure_from(config: &CommuneConfig, form: &Fields) -> Result<NewClosure, Vec<FieldError>> {
    let commune = &config.commune;
    let mut errors = Vec::new();
    let (mut planning_id, mut location_id) = (None, None);
    match get(form, "portee") {
        "commune" | "" => {}
        scope => {
            let found = match scope.split_once(':') {
                Some(("lieu", id)) => id
                    .parse()
                    .ok()
                    .filter(|id| config.locations.iter().any(|l| l.id == *id))
                    .map(|id| location_id = Some(id)),
                Some(("planning", id)) => id
                    .parse()
                    .ok()
                    .filter(|id| config.plannings.iter().any(|p| p.id == *id))
                    .map(|id| planning_id = Some(id)),
                _ => None,
            };
            if found.is_none() {
                errors.push(FieldError::new(
                    "portee",
                    "Choisissez ce qui ferme dans la liste.",
                ));
            }
        }
    }
    let instant = |date: &str, time: &str, field: &str, errors: &mut Vec<FieldError>| {
        let date = super::parse_date(date);
        let time = NaiveTime::parse_from_str(time, "%H:%M");
        match (date, time) {
            (Some(d), Ok(t)) => Some(resolve(commune.timezone, NaiveDateTime::new(d, t))),
            _ => {
                errors.push(FieldError::new(
                    field,
                    "Indiquez une date et une heure valides (par exemple 03/12/2026 et 14:00).",
                ));
                None
            }
        }
    };
    let start = instant(get(form, "du"), get(form, "de"), "du", &mut errors);
    // The end time is the last minute closed: 23:59 closes the whole day.
    let end = instant(get(form, "au"), get(form, "a"), "au", &mut errors).map(|e| {
        if get(form, "a") == "23:59" {
            e + Duration::minutes(1)
        } else {
            e
        }
    });
    let reason = get(form, "motif");
    if reason.is_empty() || reason.chars().count() > 120 {
        errors.push(FieldError::new(
            "motif",
            "Indiquez le motif (120 caractères au plus) : il est envoyé aux usagers.",
        ));
    }
    if let (Some(s), Some(e)) = (start, end)
        && e <= s
    {
        errors.push(FieldError::new(
            "au",
            "La fin de la période doit venir après son début.",
        ));
    }
    match (start, end, errors.is_empty()) {
        (Some(starts_at), Some(ends_at), true) => Ok(NewClosure {
            commune_id: commune.id,
            planning_id,
            location_id,
            starts_at,
            ends_at,
            reason: reason.to_owned(),
        }),
        _ => Err(errors),
    }
}

pub async fn close_post(
    State(state): State<AppState>,
    a: CommuneAgent,
    Form(form): Form<Fields>,
) -> Result<Response, PageError> {
    check_csrf(&a.csrf, form.get("csrf"))?;
    let config = state.engine.config(a.commune.id).await?;
    let now = state.engine.now();
    let closure = match closure_from(&config, &form) {
        Ok(c) => c,
        Err(errors) => {
            let html = render(&ClosePage {
                l: a.layout("Erreur : Fermer une période", "/agent/fermer"),
                errors,
                scopes: scopes(&config, get(&form, "portee")),
                form,
                preview: None,
            })?;
            let mut response = agent_page(&state, &a.csrf, html);
            *response.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
            return Ok(response);
        }
    };
    if get(&form, "confirmer") != "1" {
        // First the list of who will be told; nothing is written yet.
        let affected = state.engine.appointments_in(&closure).await?;
        let html = render(&ClosePage {
            l: a.layout("Vérifier la fermeture", "/agent/fermer"),
            errors: Vec::new(),
            scopes: scopes(&config, get(&form, "portee")),
            preview: Some(affected.iter().map(|ap| row(&config, ap, now)).collect()),
            form,
        })?;
        return Ok(agent_page(&state, &a.csrf, html));
    }
    let propose = form.contains_key("proposer");
    let (closure, results) = state.engine.close_period(&closure, propose).await?;
    closure_report(&state, &a, &closure, &results).await
}

/// What a closure did to each appointment in it, and whom to call.
pub async fn closure_report(
    state: &AppState,
    a: &CommuneAgent,
    closure: &crate::domain::Closure,
    results: &[(Appointment, Result<CommuneCancellation, BookingError>)],
) -> Result<Response, PageError> {
    let config = state.engine.config(a.commune.id).await?;
    let now = state.engine.now();
    let commune = &config.commune;
    let period = format!(
        "du {} au {}",
        when(commune, closure.starts_at),
        when(commune, closure.ends_at)
    );
    let mut outcomes = Vec::new();
    for (ap, result) in results {
        let r = row(&config, ap, now);
        outcomes.push(match result {
            Ok(CommuneCancellation { proposal, told, .. }) => Outcome {
                r,
                told: told.label().to_owned(),
                proposal: match (proposal, told) {
                    (Some(p), _) => when(commune, p.starts_at),
                    (None, Told::NotNeeded) => String::new(),
                    (None, _) => "aucun créneau libre".to_owned(),
                },
                call: *told == Told::Nobody,
            },
            Err(e) => Outcome {
                r,
                told: format!("non annulé : {}", e.message()),
                proposal: String::new(),
                call: true,
            },
        });
    }
    let to_call = outcomes.iter().filter(|o| o.call).count();
    a.audit(
        state,
        "fermeture",
        format!(
            "{period} ({}) : {} — {} rendez-vous annulé(s), {} à appeler",
            scope_label(&config, closure),
            closure.reason,
            results.iter().filter(|(_, r)| r.is_ok()).count(),
            to_call
        ),
    )
    .await;
    let html = render(&ClosedPage {
        l: a.layout("Période fermée", "/agent/fermer"),
        period,
        outcomes,
        to_call,
    })?;
    Ok(agent_page(state, &a.csrf, html))
}

pub fn scope_label(config: &CommuneConfig, c: &crate::domain::Closure) -> String {
    if let Some(p) = c
        .planning_id
        .and_then(|id| config.plannings.iter().find(|p| p.id == id))
    {
        return format!("planning {}", p.name);
    }
    if let Some(l) = c
        .location_id
        .and_then(|id| config.locations.iter().find(|l| l.id == id))
    {
        return format!("lieu {}", l.name);
    }
    "toute la commune".to_owned()
}
