//! Errors of the booking engine. Every variant but `Store` is something the citizen or agent did
//! or can act on: it has a stable machine `code()` and a French `message()` saying what to do
//! next. `Store` is our failure: logged with its cause, never shown.

use crate::domain::wording::written_date_time;
use crate::domain::{AppointmentPlace, Channel, Status};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum BookingError {
    #[error("commune not found")]
    CommuneNotFound,
    #[error("service not found")]
    ServiceNotFound,
    #[error("location not found")]
    LocationNotFound,
    #[error("appointment not found")]
    AppointmentNotFound,
    #[error("persons out of range (max {max})")]
    InvalidPersons { max: i32 },
    #[error("channel {0} may not book this service")]
    ChannelNotAllowed(Channel),
    #[error("no contact to send the code to")]
    ContactRequired,
    #[error("ANTS application ids given for a service that is not CNI/passport")]
    AntsNotExpected,
    #[error("more ANTS application ids than persons ({persons})")]
    TooManyAntsIds { persons: u32 },
    #[error("the same ANTS application id twice")]
    RepeatedAntsId,
    #[error("no such slot")]
    SlotUnavailable,
    #[error("slot already taken")]
    SlotTaken,
    #[error("citizen already has an active appointment of this category")]
    Duplicate(Option<Box<AppointmentPlace>>),
    #[error("hold expired and its seat was taken")]
    HoldExpired,
    #[error("appointment is {0} and cannot change")]
    NotModifiable(Status),
    #[error("appointment has already started")]
    AlreadyStarted,
    #[error("appointment is not today yet")]
    TooEarlyToMark,
    #[error("already confirmed")]
    AlreadyConfirmed,
    #[error("wrong code ({attempts_left} tries left)")]
    WrongCode { attempts_left: i32 },
    #[error("code expired or replaced")]
    CodeExpired,
    #[error("too many wrong codes")]
    CodeBurnt,
    #[error("too many codes sent to this destination")]
    TooManyCodes,
    #[error("the commune's SMS budget for today is spent")]
    SmsBudgetExhausted,
    #[error("this number cannot receive SMS")]
    CannotReceiveSms,
    #[error("the replacement offered lapsed and its seat was taken")]
    ProposalLapsed,
    #[error("period ends before it starts")]
    InvalidPeriod,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl BookingError {
    /// Stable identifier for machines (JSON `code`).
    pub fn code(&self) -> &'static str {
        match self {
            BookingError::CommuneNotFound => "commune_not_found",
            BookingError::ServiceNotFound => "service_not_found",
            BookingError::LocationNotFound => "location_not_found",
            BookingError::AppointmentNotFound => "appointment_not_found",
            BookingError::InvalidPersons { .. } => "invalid_persons",
            BookingError::ChannelNotAllowed(_) => "channel_not_allowed",
            BookingError::ContactRequired => "contact_required",
            BookingError::AntsNotExpected => "ants_not_expected",
            BookingError::TooManyAntsIds { .. } => "too_many_ants_ids",
            BookingError::RepeatedAntsId => "repeated_ants_id",
            BookingError::SlotUnavailable => "slot_unavailable",
            BookingError::SlotTaken => "slot_taken",
            BookingError::Duplicate(_) => "duplicate_appointment",
            BookingError::HoldExpired => "hold_expired",
            BookingError::NotModifiable(_) => "appointment_not_modifiable",
            BookingError::AlreadyStarted => "appointment_started",
            BookingError::TooEarlyToMark => "too_early_to_mark",
            BookingError::AlreadyConfirmed => "already_confirmed",
            BookingError::WrongCode { .. } => "wrong_code",
            BookingError::CodeExpired => "code_expired",
            BookingError::CodeBurnt => "code_burnt",
            BookingError::TooManyCodes => "too_many_codes",
            BookingError::SmsBudgetExhausted => "sms_budget_exhausted",
            BookingError::CannotReceiveSms => "cannot_receive_sms",
            BookingError::ProposalLapsed => "proposal_lapsed",
            BookingError::InvalidPeriod => "invalid_period",
            BookingError::Store(_) => "internal_error",
        }
    }

    /// What the person reads (or hears), in French.
    pub fn message(&self) -> String {
        match self {
            BookingError::CommuneNotFound => {
                "Cette commune ne prend pas de rendez-vous sur guichet.".into()
            }
            BookingError::ServiceNotFound => {
                "Cette démarche n'est pas proposée par cette commune. Choisissez une démarche dans la liste.".into()
            }
            BookingError::LocationNotFound => {
                "Ce lieu n'accueille pas de rendez-vous dans cette commune. Choisissez un lieu dans la liste.".into()
            }
            BookingError::AppointmentNotFound => "Ce rendez-vous est introuvable.".into(),
            BookingError::InvalidPersons { max: 1 } => {
                "Cette démarche se fait pour une seule personne par rendez-vous.".into()
            }
            BookingError::InvalidPersons { max } => format!(
                "Cette démarche accepte de 1 à {max} personnes par rendez-vous."
            ),
            BookingError::ChannelNotAllowed(Channel::Web) => {
                "Ce rendez-vous ne se prend pas en ligne : appelez la mairie.".into()
            }
            BookingError::ChannelNotAllowed(Channel::Phone) => {
                "Ce rendez-vous ne se prend pas par le serveur vocal : demandez un agent de la mairie.".into()
            }
            BookingError::ChannelNotAllowed(Channel::Agent) => {
                "Ce rendez-vous ne se prend pas au guichet.".into()
            }
            BookingError::ContactRequired => {
                "Indiquez un numéro de mobile ou une adresse e-mail : nous y enverrons le code de confirmation.".into()
            }
            BookingError::AntsNotExpected => {
                "Les numéros de pré-demande ANTS ne servent que pour les cartes d'identité et les passeports.".into()
            }
            BookingError::TooManyAntsIds { persons } => format!(
                "Indiquez au plus un numéro de pré-demande ANTS par personne ({persons} personne{}).",
                if *persons > 1 { "s" } else { "" }
            ),
            BookingError::RepeatedAntsId => {
                "Le même numéro de pré-demande ANTS est indiqué deux fois : chaque personne a le sien.".into()
            }
            BookingError::SlotUnavailable => {
                "Ce créneau n'est pas proposé. Choisissez un créneau dans la liste des créneaux libres.".into()
            }
            BookingError::SlotTaken => {
                "Ce créneau vient d'être réservé par quelqu'un d'autre. Choisissez un autre créneau.".into()
            }
            BookingError::Duplicate(Some(place)) => {
                let local = place.starts_at.with_timezone(&place.timezone).naive_local();
                format!(
                    "Vous avez déjà un rendez-vous pour cette démarche : {}, le {}, {} ({}), mairie {}. \
                     Pour en changer, déplacez ou annulez ce rendez-vous avec le lien reçu à sa confirmation.",
                    place.service_name,
                    written_date_time(local),
                    place.location_name,
                    place.location_address,
                    crate::domain::wording::de(&place.commune_name),
                )
            }
            BookingError::Duplicate(None) => {
                "Vous avez déjà un rendez-vous pour cette démarche. Pour en changer, déplacez ou annulez-le avec le lien reçu à sa confirmation.".into()
            }
            BookingError::HoldExpired => {
                "Le créneau n'était réservé pour vous que quelques minutes et il a été pris entre-temps. Choisissez un autre créneau.".into()
            }
            BookingError::NotModifiable(status) => format!(
                "Ce rendez-vous est {} : il ne peut plus être modifié.",
                status.label()
            ),
            BookingError::AlreadyStarted => {
                "Ce rendez-vous a déjà commencé : il ne peut plus être annulé ni déplacé. Contactez la mairie.".into()
            }
            BookingError::TooEarlyToMark => {
                "On ne peut noter la venue ou l'absence qu'à partir du jour du rendez-vous.".into()
            }
            BookingError::AlreadyConfirmed => {
                "Ce rendez-vous est déjà confirmé : le lien pour le gérer vous a été envoyé.".into()
            }
            BookingError::WrongCode { attempts_left: 1 } => {
                "Ce code n'est pas le bon. Il vous reste un dernier essai.".into()
            }
            BookingError::WrongCode { attempts_left } => format!(
                "Ce code n'est pas le bon. Il vous reste {attempts_left} essais."
            ),
            BookingError::CodeExpired => {
                "Ce code n'est plus valable (il sert 10 minutes, une seule fois). Demandez un nouveau code.".into()
            }
            BookingError::CodeBurnt => {
                "Trop d'essais avec un code erroné : ce code ne fonctionne plus. Demandez un nouveau code.".into()
            }
            BookingError::TooManyCodes => {
                "Trois codes ont déjà été envoyés à ces coordonnées en 10 minutes. Patientez quelques minutes avant d'en redemander un.".into()
            }
            BookingError::SmsBudgetExhausted => {
                "La mairie ne peut plus envoyer de SMS aujourd'hui. Indiquez une adresse e-mail pour recevoir le code, ou appelez la mairie.".into()
            }
            BookingError::CannotReceiveSms => {
                "Ce numéro ne peut pas recevoir le code par SMS (numéro fixe, surtaxé ou étranger). Indiquez un numéro de mobile français ou une adresse e-mail.".into()
            }
            BookingError::ProposalLapsed => {
                "Le créneau qui vous était proposé n'a pas été accepté à temps et il a été réservé depuis. Choisissez un autre créneau sur la page de votre mairie, ou appelez-la.".into()
            }
            BookingError::InvalidPeriod => {
                "La fin de la période doit venir après son début.".into()
            }
            BookingError::Store(_) => {
                "Le service est momentanément indisponible. Réessayez dans quelques minutes.".into()
            }
        }
    }
}
