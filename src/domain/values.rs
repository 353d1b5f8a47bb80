//! Values parsed once at the edge into types that cannot be invalid. A `PhoneE164` is always a
//! valid number in E.164 form, an `AntsApplicationId` always ten upper-case letters or digits; the
//! engine and the store never re-check them. Parse errors carry a French sentence for the person
//! who typed the value.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a value typed by a person was refused, in French, ready to show next to the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

fn invalid(message: impl Into<String>) -> InvalidValue {
    InvalidValue(message.into())
}

/// A telephone number in E.164 form (`+33639980001`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct PhoneE164(String);

impl PhoneE164 {
    /// Parses a number as people write it ("06 39 98 00 01", "+33 6 39 98 00 01",
    /// "0033639980001"); French numbering is assumed when no country code is given.
    pub fn parse(input: &str) -> Result<Self, InvalidValue> {
        let cleaned: String = input
            .trim()
            .chars()
            .filter(|c| !matches!(c, ' ' | '.' | '-' | '(' | ')' | '\u{a0}'))
            .collect();
        let cleaned = match cleaned.strip_prefix("00") {
            Some(rest) => format!("+{rest}"),
            None => cleaned,
        };
        if cleaned.is_empty() {
            return Err(invalid("Indiquez un numéro de téléphone."));
        }
        let number =
            phonenumber::parse(Some(phonenumber::country::Id::FR), &cleaned).map_err(|_| {
                invalid("Ce numéro de téléphone n'est pas valide. Exemple : 06 12 34 56 78.")
            })?;
        // French numbers are checked by their structure (nine digits after the 0), not against
        // the ranges libphonenumber knows: the ranges reserved for fiction (06 39 98, 04 65 71),
        // which demos and tests use, are not in its tables.
        let national = number.national().value().to_string();
        let french_ok =
            number.code().value() == 33 && national.len() == 9 && !national.starts_with('0');
        if !french_ok && (number.code().value() == 33 || !number.is_valid()) {
            return Err(invalid(
                "Ce numéro de téléphone n'existe pas. Vérifiez-le, par exemple : 06 12 34 56 78.",
            ));
        }
        Ok(Self(
            number.format().mode(phonenumber::Mode::E164).to_string(),
        ))
    }

    /// Trusts a value that was stored after parsing (the database only holds parsed numbers).
    pub fn from_trusted(e164: String) -> Self {
        Self(e164)
    }

    /// Loads the numbering tables the first parse would otherwise load: all countries' rules,
    /// with their patterns compiled — tens of milliseconds of CPU, during which every other
    /// parse waits. A server does it before its first citizen, not during a rush.
    pub fn warm_up() {
        let french = Self::parse("06 12 34 56 78");
        let foreign = Self::parse("+44 7400 123456");
        debug_assert!(french.is_ok() && foreign.is_ok());
        if let Ok(foreign) = foreign {
            foreign.can_receive_sms(true);
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// French mobile numbers (06, 07) can receive a code by SMS.
    pub fn is_french_mobile(&self) -> bool {
        self.0.starts_with("+336") || self.0.starts_with("+337")
    }

    /// Whether codes and reminders can go to this number by SMS: French mobiles always, mobiles
    /// of other countries only where the commune allows them, never landlines or premium-rate
    /// numbers.
    pub fn can_receive_sms(&self, allow_foreign: bool) -> bool {
        if self.0.starts_with("+33") {
            return self.is_french_mobile();
        }
        allow_foreign
            && phonenumber::parse(None, &self.0).is_ok_and(|n| {
                matches!(
                    n.number_type(&phonenumber::metadata::DATABASE),
                    phonenumber::Type::Mobile | phonenumber::Type::FixedLineOrMobile
                )
            })
    }

    /// For logs: only the country code, the first digit and the last two digits are kept
    /// (`+33 6 ** ** ** 78`), enough to tell two callers apart, not enough to call anyone.
    pub fn masked(&self) -> String {
        mask_phone(&self.0)
    }
}

pub fn mask_phone(e164: &str) -> String {
    let digits = e164.trim_start_matches('+');
    if let Some(national) = digits.strip_prefix("33").filter(|n| n.len() == 9) {
        format!("+33 {} ** ** ** {}", &national[..1], &national[7..])
    } else if digits.len() > 4 {
        format!("+{}***{}", &digits[..2], &digits[digits.len() - 2..])
    } else {
        "***".to_owned()
    }
}

impl fmt::Display for PhoneE164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An e-mail address, lower-cased in its domain, of a plausible shape. Deliverability is proven
/// by the one-time code, not by a regex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(input: &str) -> Result<Self, InvalidValue> {
        let s = input.trim();
        let bad = || invalid("Cette adresse e-mail n'est pas valide. Exemple : nom@exemple.fr.");
        if s.is_empty() {
            return Err(invalid("Indiquez une adresse e-mail."));
        }
        if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let (local, domain) = s.rsplit_once('@').ok_or_else(bad)?;
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '.');
        if local.is_empty() || local.len() > 64 || local.contains('@') || !domain_ok {
            return Err(bad());
        }
        Ok(Self(format!("{local}@{}", domain.to_lowercase())))
    }

    pub fn from_trusted(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key used to detect duplicates: case is ignored in the whole address.
    pub fn dedup_key(&self) -> String {
        self.0.to_lowercase()
    }

    /// For logs: `j***@exemple.fr`.
    pub fn masked(&self) -> String {
        match self.0.split_once('@') {
            Some((local, domain)) => {
                format!("{}***@{domain}", local.chars().next().unwrap_or('*'))
            }
            None => "***".to_owned(),
        }
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An ANTS pre-application number ("numéro de pré-demande"): ten characters `[A-Z0-9]`,
/// upper-cased; people often type it with spaces or in lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct AntsApplicationId(String);

impl AntsApplicationId {
    pub fn parse(input: &str) -> Result<Self, InvalidValue> {
        let s: String = input
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect::<String>()
            .to_uppercase();
        if s.len() == 10
            && s.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        {
            Ok(Self(s))
        } else {
            Err(invalid(format!(
                "« {} » n'est pas un numéro de pré-demande ANTS : il compte 10 lettres ou chiffres, par exemple ABCDE12345.",
                input.trim()
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AntsApplicationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of the person coming, as typed or spoken ("Dupont Marie").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct CitizenName(String);

impl CitizenName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(input: &str) -> Result<Self, InvalidValue> {
        let s = input.split_whitespace().collect::<Vec<_>>().join(" ");
        if s.is_empty() {
            return Err(invalid(
                "Indiquez le nom de la personne qui vient au rendez-vous.",
            ));
        }
        if s.chars().count() > Self::MAX_CHARS {
            return Err(invalid(format!(
                "Le nom est trop long ({} caractères au plus).",
                Self::MAX_CHARS
            )));
        }
        if s.chars().any(|c| c.is_control()) {
            return Err(invalid("Le nom contient des caractères non autorisés."));
        }
        Ok(Self(s))
    }

    pub fn from_trusted(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A commune's slug, the first segment of its booking page (`/annecy`). Slugs never take a name
/// the application uses at the top level of its URLs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Slug(String);

impl Slug {
    pub const RESERVED: &'static [&'static str] = &[
        "accessibilite",
        "agent",
        "api",
        "assets",
        "dev",
        "donnees-personnelles",
        "favicon.ico",
        "healthz",
        "metrics",
        "readyz",
        "r",
        "rdv",
        "robots.txt",
        "static",
        "twilio",
    ];

    pub fn parse(input: &str) -> Result<Self, InvalidValue> {
        let s = input.trim();
        let shape_ok = !s.is_empty()
            && s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        if !shape_ok {
            return Err(invalid(
                "L'identifiant d'une commune s'écrit en minuscules sans accents, avec des tirets (ex. thonon-les-bains).",
            ));
        }
        if Self::RESERVED.contains(&s) {
            return Err(invalid(format!(
                "« {s} » est réservé par l'application ; choisissez un autre identifiant."
            )));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Generates the string form of a closed set of names shared by the code, the database and the
/// JSON API, so the three can never disagree.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name { $(#[serde(rename = $text)] $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named_enum!(
    /// The kind of procedure; duplicates are counted per category (invariant 2).
    Category {
        Titres = "titres",
        Scolaire = "scolaire",
        Elus = "elus",
        EtatCivil = "etat_civil",
        Autre = "autre",
    }
);

named_enum!(
    /// What a back-office account may do: an agent runs one commune's days; a commune
    /// administrator also configures it and reads its audit log; a platform administrator runs
    /// the platform (communes, accounts, SMS usage) and belongs to no commune.
    Role {
        Agent = "agent",
        CommuneAdmin = "commune_admin",
        PlatformAdmin = "platform_admin",
    }
);

impl Role {
    pub fn label(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::CommuneAdmin => "administrateur de la commune",
            Role::PlatformAdmin => "administrateur de la plateforme",
        }
    }
}

named_enum!(
    /// How an appointment was booked.
    Channel {
        Web = "web",
        Phone = "phone",
        Agent = "agent",
    }
);

named_enum!(
    /// Life of an appointment. `Moved` marks the old appointment once its replacement exists
    /// (the new one links back to it); `Expired` is a hold that lapsed before confirmation.
    Status {
        Held = "held",
        Confirmed = "confirmed",
        CancelledByCitizen = "cancelled_by_citizen",
        CancelledByCommune = "cancelled_by_commune",
        Honoured = "honoured",
        NoShow = "no_show",
        Moved = "moved",
        Expired = "expired",
    }
);

named_enum!(
    /// What a notification is about.
    NotificationKind {
        Code = "code",
        Confirmation = "confirmation",
        Reminder = "reminder",
        Cancellation = "cancellation",
        CommuneCancellation = "commune_cancellation",
        Moved = "moved",
        DuplicateNotice = "duplicate_notice",
        SmsReply = "sms_reply",
        Link = "link",
    }
);

named_enum!(
    /// How a notification travels.
    MessageChannel {
        Sms = "sms",
        Email = "email",
    }
);

named_enum!(
    /// Life of a notification in the outbox (see `notify::outbox`).
    NotificationStatus {
        Pending = "pending",
        Sending = "sending",
        Sent = "sent",
        Failed = "failed",
        Unknown = "unknown",
        Cancelled = "cancelled",
    }
);

impl Category {
    /// French label for pages and messages.
    pub fn label(self) -> &'static str {
        match self {
            Category::Titres => "carte d'identité ou passeport",
            Category::Scolaire => "inscription scolaire",
            Category::Elus => "rencontre avec un élu",
            Category::EtatCivil => "état civil",
            Category::Autre => "autre démarche",
        }
    }
}

impl Status {
    /// Whether an appointment in this status takes a seat of its planning. Held appointments take
    /// one only until their hold expires (see [`crate::domain::Appointment::occupies_at`]).
    pub fn occupies_seat(self) -> bool {
        matches!(
            self,
            Status::Held | Status::Confirmed | Status::Honoured | Status::NoShow
        )
    }

    pub fn label(self) -> &'static str {
        match self {
            Status::Held => "en attente de confirmation",
            Status::Confirmed => "confirmé",
            Status::CancelledByCitizen => "annulé par l'usager",
            Status::CancelledByCommune => "annulé par la mairie",
            Status::Honoured => "honoré",
            Status::NoShow => "absent",
            Status::Moved => "déplacé",
            Status::Expired => "expiré",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_are_parsed_to_e164() {
        for input in [
            "06 39 98 00 01",
            "0639980001",
            "+33 6 39 98 00 01",
            "0033639980001",
            "06.39.98.00.01",
        ] {
            assert_eq!(
                PhoneE164::parse(input).unwrap().as_str(),
                "+33639980001",
                "{input}"
            );
        }
        assert!(PhoneE164::parse("+33639980001").unwrap().is_french_mobile());
        assert!(
            !PhoneE164::parse("04 65 71 00 01")
                .unwrap()
                .is_french_mobile()
        );
        assert!(PhoneE164::parse("12").is_err());
        let german_mobile = PhoneE164::parse("+49 151 23456789").unwrap();
        assert!(german_mobile.can_receive_sms(true));
        assert!(!german_mobile.can_receive_sms(false));
        assert!(
            !PhoneE164::parse("04 65 71 00 01")
                .unwrap()
                .can_receive_sms(true)
        );
        assert!(
            !PhoneE164::parse("08 99 12 34 56")
                .unwrap()
                .can_receive_sms(true)
        );
        assert!(
            PhoneE164::parse("07 81 23 45 67")
                .unwrap()
                .can_receive_sms(false)
        );
        assert!(PhoneE164::parse("").is_err());
        assert!(PhoneE164::parse("bonjour").is_err());
    }

    #[test]
    fn phone_numbers_are_masked_in_logs() {
        assert_eq!(mask_phone("+33639980078"), "+33 6 ** ** ** 78");
        assert_eq!(mask_phone("+4930123456"), "+49***56");
    }

    #[test]
    fn emails() {
        assert_eq!(
            Email::parse(" Marie.Dupont@Exemple.FR ").unwrap().as_str(),
            "Marie.Dupont@exemple.fr"
        );
        for bad in [
            "",
            "marie",
            "marie@",
            "@exemple.fr",
            "marie@exemple",
            "a b@c.fr",
            "a@b..fr",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Email::parse("jean@exemple.fr").unwrap().masked(),
            "j***@exemple.fr"
        );
    }

    #[test]
    fn ants_application_ids() {
        assert_eq!(
            AntsApplicationId::parse("abcde 12345").unwrap().as_str(),
            "ABCDE12345"
        );
        assert!(AntsApplicationId::parse("ABCDE1234").is_err());
        assert!(AntsApplicationId::parse("ABCDE123456").is_err());
        let err = AntsApplicationId::parse("ABCDÉ12345").unwrap_err();
        assert!(err.0.contains("10 lettres ou chiffres"), "{err}");
    }

    #[test]
    fn names_and_slugs() {
        assert_eq!(
            CitizenName::parse("  Marie   Dupont ").unwrap().as_str(),
            "Marie Dupont"
        );
        assert!(CitizenName::parse("   ").is_err());
        assert!(CitizenName::parse(&"a".repeat(101)).is_err());
        assert!(Slug::parse("thonon-les-bains").is_ok());
        assert!(Slug::parse("api").is_err());
        assert!(Slug::parse("Annecy").is_err());
        assert!(Slug::parse("-annecy").is_err());
    }

    #[test]
    fn enums_round_trip_through_their_names() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(*s));
        }
        for c in Category::ALL {
            assert_eq!(Category::parse(c.as_str()), Some(*c));
        }
        assert_eq!(Channel::parse("fax"), None);
    }
}
