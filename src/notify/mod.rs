//! Notifications: what guichet tells citizens, and how it gets there.
//!
//! Guarantees (invariant 4 of SPEC.md):
//! - a notification is written in the same transaction as the change that causes it — the
//!   [`Notifier`] only ever writes into the engine's [`StoreTx`]; if the change rolls back, so
//!   does the message;
//! - (appointment, kind, version, channel) is unique: a replayed change cannot write a message
//!   twice;
//! - the [`outbox`] worker delivers each message at least once and, for SMS, never twice: a
//!   provider timeout or 5xx is recorded as `unknown` and reconciled from delivery reports, not
//!   resent; claims hold a lease, so a crashed worker's messages are picked up by another;
//! - reminders of an appointment that was cancelled or moved are cancelled in that transaction,
//!   and checked again just before sending.

pub mod email;
pub mod outbox;
pub mod sms;
pub mod templates;

use crate::domain::otp::{new_token, token_hash};
use crate::domain::reminders::reminder_due;
use crate::domain::{
    Appointment, AppointmentPlace, Commune, Email as EmailAddress, MessageChannel,
    NotificationKind, PhoneE164, Service,
};
use crate::store::{NewNotification, Result, StoreTx};
use chrono::{DateTime, Utc};
use templates::{Email, Proposal, Subject};
use uuid::Uuid;

/// Writes the messages of each change into the change's transaction.
#[derive(Debug, Clone)]
pub struct Notifier {
    public_url: String,
}

/// The contacts of an appointment that can be written to.
pub struct Recipients {
    pub sms: Option<PhoneE164>,
    pub email: Option<EmailAddress>,
}

impl Recipients {
    pub fn of(commune: &Commune, appointment: &Appointment, sms_opted_out: bool) -> Self {
        let citizen = &appointment.citizen;
        Self {
            sms: citizen
                .phone
                .clone()
                .filter(|p| !sms_opted_out && p.can_receive_sms(commune.allow_foreign_mobiles)),
            email: citizen.email.clone(),
        }
    }
}

fn dedupe_key(
    appointment: &Appointment,
    kind: NotificationKind,
    channel: MessageChannel,
) -> String {
    format!(
        "{}:{}:{}:{}",
        appointment.id, kind, appointment.version, channel
    )
}

/// The message of `kind` about `appointment` to each destination given, due at `due_at`,
/// de-duplicated per (appointment, kind, version, channel).
fn messages(
    appointment: &Appointment,
    kind: NotificationKind,
    sms: Option<(&PhoneE164, String)>,
    email: Option<(&EmailAddress, Email)>,
    due_at: DateTime<Utc>,
) -> Vec<NewNotification> {
    let mut out = Vec::with_capacity(2);
    let base = |channel, destination: String| NewNotification {
        id: Uuid::new_v4(),
        commune_id: Some(appointment.commune_id),
        appointment_id: Some(appointment.id),
        kind,
        channel,
        destination,
        dedupe_key: Some(dedupe_key(appointment, kind, channel)),
        subject: None,
        body: String::new(),
        html: None,
        ics: None,
        due_at,
    };
    if let Some((phone, text)) = sms {
        out.push(NewNotification {
            body: text,
            ..base(MessageChannel::Sms, phone.as_str().to_owned())
        });
    }
    if let Some((address, mail)) = email {
        out.push(NewNotification {
            subject: Some(mail.subject),
            body: mail.text,
            html: Some(mail.html),
            ics: mail.ics,
            ..base(MessageChannel::Email, address.as_str().to_owned())
        });
    }
    out
}

async fn enqueue(
    tx: &mut dyn StoreTx,
    messages: Vec<NewNotification>,
    now: DateTime<Utc>,
) -> Result<()> {
    for message in &messages {
        tx.enqueue(message, now).await?;
    }
    Ok(())
}

/// The reminder of a confirmed appointment when one is due: by SMS when the number can take
/// it, otherwise by e-mail.
fn reminder(
    subject: &Subject<'_>,
    link: &str,
    to: &Recipients,
    now: DateTime<Utc>,
) -> Vec<NewNotification> {
    let booked_at = subject.appointment.confirmed_at.unwrap_or(now);
    let Some(due) = reminder_due(subject.commune, subject.appointment.starts_at, booked_at) else {
        return Vec::new();
    };
    let (sms, email) = match (&to.sms, &to.email) {
        (Some(phone), _) => (Some((phone, templates::reminder_sms(subject, link))), None),
        (None, Some(address)) => (
            None,
            Some((address, templates::reminder_email(subject, link))),
        ),
        (None, None) => return Vec::new(),
    };
    messages(
        subject.appointment,
        NotificationKind::Reminder,
        sms,
        email,
        due,
    )
}

impl Notifier {
    pub fn new(public_url: &str) -> Self {
        Self {
            public_url: public_url.trim_end_matches('/').to_owned(),
        }
    }

    /// The commune's booking page.
    pub fn booking_url(&self, commune: &Commune) -> String {
        format!("{}/{}", self.public_url, commune.slug)
    }

    /// The citizen's personal page for a token.
    pub fn manage_url(&self, token: &str) -> String {
        format!("{}/r/{token}", self.public_url)
    }

    /// Creates a personal link to `appointment` (only the token's hash is stored); returns the
    /// token.
    pub async fn new_link(
        &self,
        tx: &mut dyn StoreTx,
        appointment: Uuid,
        now: DateTime<Utc>,
    ) -> Result<String> {
        let token = new_token();
        tx.insert_manage_token(&token_hash(&token), appointment, now)
            .await?;
        Ok(token)
    }

    #[allow(clippy::too_many_arguments)]
    async fn write(
        &self,
        tx: &mut dyn StoreTx,
        appointment: &Appointment,
        kind: NotificationKind,
        sms: Option<(&PhoneE164, String)>,
        email: Option<(&EmailAddress, Email)>,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        enqueue(tx, messages(appointment, kind, sms, email, due_at), now).await
    }

    /// A message to one destination, now, not de-duplicated: the SMS text or the e-mail,
    /// whichever the destination takes.
    fn direct(
        appointment: &Appointment,
        kind: NotificationKind,
        destination: &CodeDestination,
        sms: impl FnOnce() -> String,
        email: impl FnOnce() -> Email,
        now: DateTime<Utc>,
    ) -> NewNotification {
        let base = NewNotification {
            id: Uuid::new_v4(),
            commune_id: Some(appointment.commune_id),
            appointment_id: Some(appointment.id),
            kind,
            channel: destination.channel(),
            destination: destination.key(),
            dedupe_key: None,
            subject: None,
            body: String::new(),
            html: None,
            ics: None,
            due_at: now,
        };
        match destination {
            CodeDestination::Sms(_) => NewNotification {
                body: sms(),
                ..base
            },
            CodeDestination::Email(_) => {
                let mail = email();
                NewNotification {
                    subject: Some(mail.subject),
                    body: mail.text,
                    html: Some(mail.html),
                    ..base
                }
            }
        }
    }

    /// The message of a one-time code, to one destination, now, for the engine to write with
    /// the code ([`crate::store::StoreTx::put_code`]). Not de-duplicated: each send is a new
    /// code (the engine limits how many).
    pub fn code(
        &self,
        subject: (&Commune, &Service),
        appointment: &Appointment,
        destination: &CodeDestination,
        code: &str,
        now: DateTime<Utc>,
    ) -> NewNotification {
        let (commune, service) = subject;
        Self::direct(
            appointment,
            NotificationKind::Code,
            destination,
            || templates::code_sms(commune, code),
            || templates::code_email(commune, service, code),
            now,
        )
    }

    /// Confirmation now (with the personal link), and the reminder when it is due.
    pub async fn confirmed(
        &self,
        tx: &mut dyn StoreTx,
        subject: &Subject<'_>,
        token: &str,
        sms_opted_out: bool,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let messages = self.confirmed_messages(subject, token, sms_opted_out, now);
        enqueue(tx, messages, now).await
    }

    /// What [`Notifier::confirmed`] writes, for a store that writes it itself
    /// ([`crate::store::Store::confirm_at_once`]).
    pub fn confirmed_messages(
        &self,
        subject: &Subject<'_>,
        token: &str,
        sms_opted_out: bool,
        now: DateTime<Utc>,
    ) -> Vec<NewNotification> {
        let link = self.manage_url(token);
        let to = Recipients::of(subject.commune, subject.appointment, sms_opted_out);
        // The confirmation is expected even by a number that said STOP to reminders.
        let confirmation_sms = Recipients::of(subject.commune, subject.appointment, false).sms;
        let mut out = messages(
            subject.appointment,
            NotificationKind::Confirmation,
            confirmation_sms
                .as_ref()
                .map(|p| (p, templates::confirmation_sms(subject, &link))),
            to.email
                .as_ref()
                .map(|e| (e, templates::confirmation_email(subject, &link))),
            now,
        );
        out.extend(reminder(subject, &link, &to, now));
        out
    }

    /// The citizen cancelled: a notice, and no more reminders.
    pub async fn cancelled_by_citizen(
        &self,
        tx: &mut dyn StoreTx,
        subject: &Subject<'_>,
        sms_notice: bool,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.forget_pending(tx, subject.appointment.id, now).await?;
        let to = Recipients::of(subject.commune, subject.appointment, false);
        self.write(
            tx,
            subject.appointment,
            NotificationKind::Cancellation,
            to.sms
                .as_ref()
                .filter(|_| sms_notice)
                .map(|p| (p, templates::cancellation_sms(subject))),
            to.email
                .as_ref()
                .map(|e| (e, templates::cancellation_email(subject))),
            now,
            now,
        )
        .await
    }

    /// The commune cancelled, with its reason and perhaps a replacement.
    pub async fn cancelled_by_commune(
        &self,
        tx: &mut dyn StoreTx,
        subject: &Subject<'_>,
        reason: &str,
        proposal: Option<&Proposal>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.forget_pending(tx, subject.appointment.id, now).await?;
        let to = Recipients::of(subject.commune, subject.appointment, false);
        self.write(
            tx,
            subject.appointment,
            NotificationKind::CommuneCancellation,
            to.sms.as_ref().map(|p| {
                (
                    p,
                    templates::commune_cancellation_sms(subject, reason, proposal),
                )
            }),
            to.email.as_ref().map(|e| {
                (
                    e,
                    templates::commune_cancellation_email(subject, reason, proposal),
                )
            }),
            now,
            now,
        )
        .await
    }

    /// The appointment moved: the old one's reminders go, the new one gets its notice and its
    /// own reminder.
    pub async fn moved(
        &self,
        tx: &mut dyn StoreTx,
        old: Uuid,
        subject: &Subject<'_>,
        token: &str,
        sms_opted_out: bool,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.forget_pending(tx, old, now).await?;
        let link = self.manage_url(token);
        let to = Recipients::of(subject.commune, subject.appointment, sms_opted_out);
        let notice_sms = Recipients::of(subject.commune, subject.appointment, false).sms;
        self.write(
            tx,
            subject.appointment,
            NotificationKind::Moved,
            notice_sms
                .as_ref()
                .map(|p| (p, templates::moved_sms(subject, &link))),
            to.email
                .as_ref()
                .map(|e| (e, templates::moved_email(subject, &link))),
            now,
            now,
        )
        .await?;
        enqueue(tx, reminder(subject, &link, &to, now), now).await
    }

    /// Someone tried to book with the contact details of an existing appointment: its owner is
    /// told where and when it is (the person asking is not).
    pub async fn duplicate_notice(
        &self,
        tx: &mut dyn StoreTx,
        existing: &Appointment,
        place: &AppointmentPlace,
        destination: &CodeDestination,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let message = Self::direct(
            existing,
            NotificationKind::DuplicateNotice,
            destination,
            || templates::duplicate_notice_sms(place),
            || templates::duplicate_notice_email(place),
            now,
        );
        tx.enqueue(&message, now).await?;
        Ok(())
    }

    /// A fresh personal link to one destination, now (the citizen asked for it).
    pub async fn link(
        &self,
        tx: &mut dyn StoreTx,
        subject: &Subject<'_>,
        destination: &CodeDestination,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let link = self.manage_url(token);
        let message = Self::direct(
            subject.appointment,
            NotificationKind::Link,
            destination,
            || templates::link_sms(subject, &link),
            || templates::link_email(subject, &link),
            now,
        );
        tx.enqueue(&message, now).await?;
        Ok(())
    }

    async fn forget_pending(
        &self,
        tx: &mut dyn StoreTx,
        appointment: Uuid,
        now: DateTime<Utc>,
    ) -> Result<()> {
        tx.cancel_pending(
            appointment,
            &[NotificationKind::Reminder, NotificationKind::Confirmation],
            now,
        )
        .await?;
        Ok(())
    }
}

/// What is kept of a message once sent: six-digit codes and personal-link tokens are masked, so
/// that the outbox table never holds what the keyed hashes protect.
pub fn redact(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(i) = rest.find("/r/") {
        out.push_str(&rest[..i + 3]);
        rest = &rest[i + 3..];
        let token_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(rest.len());
        out.push('…');
        rest = &rest[token_len..];
    }
    out.push_str(rest);
    // Six digits standing alone are a code.
    let chars: Vec<char> = out.chars().collect();
    let mut masked = String::with_capacity(out.len());
    let mut i = 0;
    while i < chars.len() {
        let run = chars[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if run == 6 {
            masked.push_str("******");
            i += 6;
        } else if run > 0 {
            masked.extend(&chars[i..i + run]);
            i += run;
        } else {
            masked.push(chars[i]);
            i += 1;
        }
    }
    masked
}

/// Where a one-time code goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeDestination {
    Sms(PhoneE164),
    Email(EmailAddress),
}

impl CodeDestination {
    pub fn channel(&self) -> MessageChannel {
        match self {
            CodeDestination::Sms(_) => MessageChannel::Sms,
            CodeDestination::Email(_) => MessageChannel::Email,
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            CodeDestination::Sms(p) => p.as_str(),
            CodeDestination::Email(e) => e.as_str(),
        }
    }

    /// The destination as stored and counted: e-mail addresses in lower case, so that
    /// `Marie@…` and `marie@…` share one send limit.
    pub fn key(&self) -> String {
        match self {
            CodeDestination::Sms(p) => p.as_str().to_owned(),
            CodeDestination::Email(e) => e.dedup_key(),
        }
    }

    /// As shown to the person ("+33 6 ** ** ** 78", "m***@exemple.fr").
    pub fn masked(&self) -> String {
        match self {
            CodeDestination::Sms(p) => p.masked(),
            CodeDestination::Email(e) => e.masked(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_once_sent() {
        assert_eq!(
            redact("Mairie d'Annecy : votre code est 042042. Valable 10 minutes."),
            "Mairie d'Annecy : votre code est ******. Valable 10 minutes."
        );
        assert_eq!(
            redact(
                "RDV le mar. 01/12 à 9h30. Gérer : https://rdv.example.fr/r/Abcdefghij0123456789_- merci"
            ),
            "RDV le mar. 01/12 à 9h30. Gérer : https://rdv.example.fr/r/… merci"
        );
        assert_eq!(redact("le 2026-12-03 à 9 h"), "le 2026-12-03 à 9 h");
    }
}
