//! The French texts guichet sends. Every SMS is one GSM-7 segment: each template lists variants
//! from the most to the least detailed, names are transliterated to GSM-7, and the first variant
//! that fits 160 characters is sent (a test renders every template for every demo service with
//! the longest values). E-mails carry the full detail: what to bring, the address and access
//! notes, the personal link, and an `.ics` file for confirmations and moves.

use crate::domain::gsm7::{SINGLE_SEGMENT, fits_one_segment, transliterate};
use crate::domain::wording::{day_of_month, de, month_name, weekday_name, written_date_time};
use crate::domain::{Appointment, AppointmentPlace, Commune, Location, Service};
use chrono::{DateTime, Datelike, NaiveDateTime, Timelike, Utc};
use icalendar::{Calendar, Component, EventLike};

/// What the texts about one appointment need.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub commune: &'a Commune,
    pub service: &'a Service,
    pub location: &'a Location,
    pub appointment: &'a Appointment,
    /// The commune's booking page (`https://…/annecy`).
    pub booking_url: &'a str,
}

/// A replacement offered when the commune cancels.
#[derive(Debug, Clone)]
pub struct Proposal {
    pub start: DateTime<Utc>,
    pub location_name: String,
    pub accept_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub subject: String,
    pub text: String,
    pub html: String,
    pub ics: Option<String>,
}

/// The first variant that is one GSM-7 segment once transliterated; the last one, cut, if none
/// is (only a public URL of absurd length could cause that).
fn sms(variants: impl IntoIterator<Item = String>) -> String {
    let mut last = String::new();
    for variant in variants {
        let text = transliterate(&variant);
        if fits_one_segment(&text) {
            return text;
        }
        last = text;
    }
    last.chars().take(SINGLE_SEGMENT - 3).collect::<String>() + "..."
}

fn local(commune: &Commune, at: DateTime<Utc>) -> NaiveDateTime {
    at.with_timezone(&commune.timezone).naive_local()
}

/// "9h30", "14h" — the written form that fits an SMS.
fn short_time(at: NaiveDateTime) -> String {
    match at.minute() {
        0 => format!("{}h", at.hour()),
        m => format!("{}h{m:02}", at.hour()),
    }
}

/// "mardi 1er décembre".
fn long_date(at: NaiveDateTime) -> String {
    format!(
        "{} {} {}",
        weekday_name(at.weekday()),
        day_of_month(at.day()),
        month_name(at.month())
    )
}

/// "mar. 01/12".
fn short_date(at: NaiveDateTime) -> String {
    format!(
        "{}. {:02}/{:02}",
        &weekday_name(at.weekday())[..3],
        at.day(),
        at.month()
    )
}

fn persons_line(appointment: &Appointment) -> String {
    match appointment.persons {
        1 => "1 personne".to_owned(),
        n => format!("{n} personnes"),
    }
}

/// Minimal HTML escaping for the few values that go into e-mails.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// An e-mail from paragraphs: plain text, and the same as simple, accessible HTML. A paragraph
/// that is a URL becomes a link.
fn email(subject: String, heading: &str, paragraphs: &[String], ics: Option<String>) -> Email {
    let text = format!("{heading}\n\n{}\n", paragraphs.join("\n\n"));
    let body: String = paragraphs
        .iter()
        .map(|p| {
            if p.starts_with("http://") || p.starts_with("https://") {
                format!("<p><a href=\"{0}\">{0}</a></p>\n", escape_html(p))
            } else {
                format!("<p>{}</p>\n", escape_html(p).replace('\n', "<br>\n"))
            }
        })
        .collect();
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"fr\">\n<head><meta charset=\"utf-8\"><title>{}</title></head>\n\
         <body style=\"font-family: sans-serif; line-height: 1.5; max-width: 40em\">\n<h1 style=\"font-size: 1.3em\">{}</h1>\n{body}</body>\n</html>\n",
        escape_html(&subject),
        escape_html(heading)
    );
    Email {
        subject,
        text,
        html,
        ics,
    }
}

/// The details every e-mail about an appointment gives.
fn details(s: &Subject<'_>) -> Vec<String> {
    let at = local(s.commune, s.appointment.starts_at);
    let mut lines = vec![
        format!(
            "Démarche : {} ({})",
            s.service.name,
            persons_line(s.appointment)
        ),
        format!("Date : {}", written_date_time(at)),
        format!(
            "Lieu : {}\n{}\n{} {}",
            s.location.name, s.location.address, s.location.postcode, s.location.city
        ),
    ];
    if !s.location.access_notes.is_empty() {
        lines.push(format!("Accès : {}", s.location.access_notes));
    }
    if !s.service.what_to_bring.is_empty() {
        lines.push(format!("À apporter : {}", s.service.what_to_bring));
    }
    let ants = &s.appointment.citizen.ants_application_ids;
    if !ants.is_empty() {
        let ids: Vec<_> = ants.iter().map(|a| a.as_str()).collect();
        lines.push(format!("Numéros de pré-demande ANTS : {}", ids.join(", ")));
    }
    lines
}

/// An iCalendar file for the appointment, for the citizen's agenda.
pub fn ics(s: &Subject<'_>) -> String {
    let address = format!(
        "{}, {}, {} {}",
        s.location.name, s.location.address, s.location.postcode, s.location.city
    );
    let event = icalendar::Event::new()
        .uid(&format!("{}@guichet", s.appointment.id))
        .summary(&format!(
            "Mairie {} : {}",
            de(&s.commune.name),
            s.service.name
        ))
        .description(&format!(
            "À apporter : {}\nPersonnes : {}",
            s.service.what_to_bring, s.appointment.persons
        ))
        .location(&address)
        .starts(s.appointment.starts_at)
        .ends(s.appointment.ends_at)
        .timestamp(s.appointment.updated_at)
        .done();
    Calendar::new()
        .name(&format!("Rendez-vous, mairie {}", de(&s.commune.name)))
        .push(event)
        .done()
        .to_string()
}

// --- One-time code -------------------------------------------------------------------------

pub fn code_sms(commune: &Commune, code: &str) -> String {
    sms([
        format!(
            "Mairie {} : votre code de confirmation est {code}. Il est valable 10 minutes. Ne le communiquez à personne.",
            de(&commune.name)
        ),
        format!("Votre code de confirmation : {code} (valable 10 minutes)."),
        format!("Code : {code}"),
    ])
}

pub fn code_email(commune: &Commune, service: &Service, code: &str) -> Email {
    email(
        format!("Votre code de confirmation : {code}"),
        &format!("Mairie {}", de(&commune.name)),
        &[
            format!("Pour confirmer votre rendez-vous « {} », saisissez ce code :", service.name),
            code.to_owned(),
            "Il est valable 10 minutes. Si vous n'avez rien demandé, ignorez ce message : le créneau sera libéré."
                .to_owned(),
        ],
        None,
    )
}

// --- Confirmation ---------------------------------------------------------------------------

pub fn confirmation_sms(s: &Subject<'_>, link: &str) -> String {
    let at = local(s.commune, s.appointment.starts_at);
    let (long, short, time) = (long_date(at), short_date(at), short_time(at));
    let (commune, place) = (&s.commune.name, &s.location.name);
    sms([
        format!(
            "{commune} : RDV confirmé le {long} à {time}, {place}. Pièces à apporter et gestion : {link}"
        ),
        format!("RDV confirmé le {long} à {time}, {place}. Gérer votre RDV : {link}"),
        format!("RDV confirmé le {short} à {time}, {place}. Gérer : {link}"),
        format!("RDV confirmé le {short} à {time}. Gérer : {link}"),
        format!("RDV confirmé le {short} à {time}."),
    ])
}

pub fn confirmation_email(s: &Subject<'_>, link: &str) -> Email {
    let mut paragraphs = details(s);
    paragraphs.push(
        "Pour déplacer ou annuler ce rendez-vous, utilisez votre lien personnel :".to_owned(),
    );
    paragraphs.push(link.to_owned());
    paragraphs.push("Le fichier joint ajoute le rendez-vous à votre agenda.".to_owned());
    email(
        format!(
            "Rendez-vous confirmé : {}",
            written_date_time(local(s.commune, s.appointment.starts_at))
        ),
        &format!(
            "Mairie {} : votre rendez-vous est confirmé",
            de(&s.commune.name)
        ),
        &paragraphs,
        Some(ics(s)),
    )
}

// --- A fresh personal link ("find my appointment") ---------------------------------------

pub fn link_sms(s: &Subject<'_>, link: &str) -> String {
    let at = local(s.commune, s.appointment.starts_at);
    let (long, short, time) = (long_date(at), short_date(at), short_time(at));
    let commune = &s.commune.name;
    sms([
        format!("{commune} : votre RDV du {long} à {time}. Voir, déplacer ou annuler : {link}"),
        format!("Votre RDV du {long} à {time}. Voir, déplacer ou annuler : {link}"),
        format!("Votre RDV du {short} à {time} : {link}"),
    ])
}

pub fn link_email(s: &Subject<'_>, link: &str) -> Email {
    let mut paragraphs = vec![
        "Vous avez demandé le lien de votre rendez-vous. Le voici :".to_owned(),
        link.to_owned(),
    ];
    paragraphs.extend(details(s));
    paragraphs.push(
        "Si vous n'avez rien demandé, ignorez ce message : le lien ne sert qu'à la personne qui le reçoit."
            .to_owned(),
    );
    email(
        format!(
            "Votre lien de rendez-vous : {}",
            written_date_time(local(s.commune, s.appointment.starts_at))
        ),
        &format!("Mairie {} : votre rendez-vous", de(&s.commune.name)),
        &paragraphs,
        None,
    )
}

// --- Reminder -------------------------------------------------------------------------------

pub fn reminder_sms(s: &Subject<'_>, link: &str) -> String {
    let at = local(s.commune, s.appointment.starts_at);
    let (long, short, time) = (long_date(at), short_date(at), short_time(at));
    let (commune, place) = (&s.commune.name, &s.location.name);
    sms([
        format!(
            "Rappel {commune} : RDV le {long} à {time}, {place}. Pour annuler, répondez ANNULER. Détails : {link}"
        ),
        format!(
            "Rappel : RDV le {short} à {time}, {place}. Pour annuler, répondez ANNULER. {link}"
        ),
        format!("Rappel : RDV le {short} à {time}. Pour annuler, répondez ANNULER. {link}"),
        format!("Rappel : RDV le {short} à {time}. Pour annuler, répondez ANNULER."),
    ])
}

pub fn reminder_email(s: &Subject<'_>, link: &str) -> Email {
    let mut paragraphs = details(s);
    paragraphs.push(
        "Vous ne pouvez pas venir ? Annulez ou déplacez le rendez-vous pour libérer la place :"
            .to_owned(),
    );
    paragraphs.push(link.to_owned());
    email(
        format!(
            "Rappel : rendez-vous le {}",
            written_date_time(local(s.commune, s.appointment.starts_at))
        ),
        &format!(
            "Mairie {} : rappel de votre rendez-vous",
            de(&s.commune.name)
        ),
        &paragraphs,
        None,
    )
}

// --- Cancellation by the citizen -----------------------------------------------------------

pub fn cancellation_sms(s: &Subject<'_>) -> String {
    let at = local(s.commune, s.appointment.starts_at);
    let (long, short, time) = (long_date(at), short_date(at), short_time(at));
    let (commune, url) = (&s.commune.name, s.booking_url);
    sms([
        format!("{commune} : votre RDV du {long} à {time} est annulé. Pour reprendre RDV : {url}"),
        format!("Votre RDV du {short} à {time} est annulé. Nouveau RDV : {url}"),
        format!("Votre RDV du {short} à {time} est annulé."),
    ])
}

pub fn cancellation_email(s: &Subject<'_>) -> Email {
    let at = local(s.commune, s.appointment.starts_at);
    email(
        format!("Rendez-vous annulé : {}", written_date_time(at)),
        &format!("Mairie {} : rendez-vous annulé", de(&s.commune.name)),
        &[
            format!(
                "Votre rendez-vous « {} » du {} est annulé, comme vous l'avez demandé.",
                s.service.name,
                written_date_time(at)
            ),
            "Pour prendre un nouveau rendez-vous :".to_owned(),
            s.booking_url.to_owned(),
        ],
        None,
    )
}

// --- Cancellation by the commune ------------------------------------------------------------

pub fn commune_cancellation_sms(
    s: &Subject<'_>,
    reason: &str,
    proposal: Option<&Proposal>,
) -> String {
    let at = local(s.commune, s.appointment.starts_at);
    let (long, short, time) = (long_date(at), short_date(at), short_time(at));
    let (commune, url) = (&s.commune.name, s.booking_url);
    match proposal {
        Some(p) => {
            let new = local(s.commune, p.start);
            let (new_short, new_time) = (short_date(new), short_time(new));
            let accept = &p.accept_url;
            // The offer is accepted by replying OUI or through the link: both are said.
            sms([
                format!(
                    "{commune} doit annuler votre RDV du {short} à {time} ({reason}). Nouveau RDV proposé : {new_short} à {new_time}. Pour accepter, répondez OUI ou ouvrez {accept}"
                ),
                format!(
                    "{commune} annule votre RDV du {short} à {time}. Proposé : {new_short} à {new_time}. Pour accepter, répondez OUI ou ouvrez {accept}"
                ),
                format!(
                    "RDV du {short} annulé par la mairie. Proposé : {new_short} à {new_time}. Pour accepter, répondez OUI ou ouvrez {accept}"
                ),
                format!(
                    "RDV du {short} annulé. Proposé : {new_short} à {new_time}. Acceptez : OUI par SMS ou {accept}"
                ),
                format!(
                    "RDV du {short} annulé par la mairie. Proposé : {new_short} à {new_time}. Pour accepter, répondez OUI."
                ),
            ])
        }
        None => sms([
            format!(
                "{commune} doit annuler votre RDV du {long} à {time} : {reason}. Reprendre RDV : {url}"
            ),
            format!(
                "La mairie annule votre RDV du {short} à {time} : {reason}. Reprendre RDV : {url}"
            ),
            format!("La mairie annule votre RDV du {short} à {time}. Reprendre RDV : {url}"),
            format!("La mairie annule votre RDV du {short} à {time}."),
        ]),
    }
}

pub fn commune_cancellation_email(
    s: &Subject<'_>,
    reason: &str,
    proposal: Option<&Proposal>,
) -> Email {
    let at = local(s.commune, s.appointment.starts_at);
    let mut paragraphs = vec![format!(
        "Nous devons annuler votre rendez-vous « {} » du {}. Motif : {}. Veuillez nous en excuser.",
        s.service.name,
        written_date_time(at),
        reason
    )];
    match proposal {
        Some(p) => {
            paragraphs.push(format!(
                "Nous vous proposons un nouveau rendez-vous le {}, {}. Il vous est réservé ; pour l'accepter :",
                written_date_time(local(s.commune, p.start)),
                p.location_name
            ));
            paragraphs.push(p.accept_url.clone());
        }
        None => {
            paragraphs.push("Pour prendre un nouveau rendez-vous :".to_owned());
            paragraphs.push(s.booking_url.to_owned());
        }
    }
    email(
        format!(
            "Rendez-vous annulé par la mairie : {}",
            written_date_time(at)
        ),
        &format!("Mairie {} : rendez-vous annulé", de(&s.commune.name)),
        &paragraphs,
        None,
    )
}

// --- Move -----------------------------------------------------------------------------------

pub fn moved_sms(s: &Subject<'_>, link: &str) -> String {
    let at = local(s.commune, s.appointment.starts_at);
    let (long, short, time) = (long_date(at), short_date(at), short_time(at));
    let (commune, place) = (&s.commune.name, &s.location.name);
    sms([
        format!("{commune} : RDV déplacé au {long} à {time}, {place}. Gérer : {link}"),
        format!("RDV déplacé au {short} à {time}, {place}. Gérer : {link}"),
        format!("RDV déplacé au {short} à {time}. Gérer : {link}"),
        format!("RDV déplacé au {short} à {time}."),
    ])
}

pub fn moved_email(s: &Subject<'_>, link: &str) -> Email {
    let mut paragraphs = details(s);
    paragraphs.push("Votre lien personnel reste valable :".to_owned());
    paragraphs.push(link.to_owned());
    paragraphs.push("Le fichier joint met votre agenda à jour.".to_owned());
    email(
        format!(
            "Rendez-vous déplacé au {}",
            written_date_time(local(s.commune, s.appointment.starts_at))
        ),
        &format!("Mairie {} : rendez-vous déplacé", de(&s.commune.name)),
        &paragraphs,
        Some(ics(s)),
    )
}

// --- Somebody tried to book again with these details -----------------------------------------

pub fn duplicate_notice_sms(place: &AppointmentPlace) -> String {
    let at = place.starts_at.with_timezone(&place.timezone).naive_local();
    let (long, short, time) = (long_date(at), short_date(at), short_time(at));
    let (commune, name) = (&place.commune_name, &place.location_name);
    sms([
        format!(
            "{commune} : vous avez déjà un RDV le {long} à {time}, {name}. Pour le changer, utilisez le lien reçu à sa confirmation."
        ),
        format!(
            "Vous avez déjà un RDV le {short} à {time}, {name}. Pour le changer, utilisez le lien reçu à sa confirmation."
        ),
        format!(
            "Vous avez déjà un RDV le {short} à {time}. Pour le changer, utilisez le lien de confirmation."
        ),
    ])
}

pub fn duplicate_notice_email(place: &AppointmentPlace) -> Email {
    let at = place.starts_at.with_timezone(&place.timezone).naive_local();
    email(
        "Vous avez déjà un rendez-vous".to_owned(),
        &format!("Mairie {}", de(&place.commune_name)),
        &[
            format!(
                "Quelqu'un a demandé un rendez-vous « {} » avec vos coordonnées, mais vous en avez déjà un : le {}, {} ({}).",
                place.service_name,
                written_date_time(at),
                place.location_name,
                place.location_address
            ),
            "Pour le déplacer ou l'annuler, utilisez le lien reçu à sa confirmation. Si vous n'avez rien demandé, ignorez ce message."
                .to_owned(),
        ],
        None,
    )
}

// --- Answers to SMS replies --------------------------------------------------------------------

pub fn sms_cancel_question(commune: &Commune, appointment: &Appointment) -> String {
    let at = local(commune, appointment.starts_at);
    let (long, short, time) = (long_date(at), short_date(at), short_time(at));
    let of = de(&commune.name);
    sms([
        format!(
            "Vous allez annuler votre RDV du {long} à {time} (mairie {of}). Pour confirmer, répondez OUI."
        ),
        format!("Annuler votre RDV du {short} à {time} (mairie {of}) ? Répondez OUI."),
        format!("Annuler votre RDV du {short} à {time} ? Répondez OUI."),
    ])
}

pub fn sms_nothing_to_cancel() -> String {
    sms(["Aucun rendez-vous à venir n'est enregistré pour ce numéro.".to_owned()])
}

pub fn sms_cancelled(commune: &Commune, appointment: &Appointment, booking_url: &str) -> String {
    let at = local(commune, appointment.starts_at);
    let (short, time) = (short_date(at), short_time(at));
    sms([
        format!("Votre RDV du {short} à {time} est annulé. Pour en reprendre un : {booking_url}"),
        format!("Votre RDV du {short} à {time} est annulé."),
    ])
}

/// A refusal (the engine's message for people) as an SMS reply: whole when it fits one segment,
/// else its first sentence, else a short pointer to the town hall.
pub fn sms_refusal(message: &str) -> String {
    let first_sentence = message
        .split_once(". ")
        .map_or(message, |(first, _)| first)
        .trim_end_matches('.');
    sms([
        message.to_owned(),
        format!("{first_sentence}."),
        "Votre réponse n'a pas pu être prise en compte. Appelez la mairie.".to_owned(),
    ])
}

pub fn sms_help() -> String {
    sms(["Pour annuler votre prochain RDV, répondez ANNULER. Pour ne plus recevoir de rappels, répondez STOP.".to_owned()])
}

pub fn sms_stopped() -> String {
    sms(["Vous ne recevrez plus de rappels par SMS. Les codes de confirmation restent envoyés quand vous les demandez.".to_owned()])
}
