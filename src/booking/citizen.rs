//! What the citizens' web pages need beyond the operations every channel shares:
//! - a slot held the moment it is chosen, before the citizen has typed who they are;
//! - the details given afterwards, which claim the citizen's identities (invariant 2) and send
//!   the code, in one transaction — a hold that lapsed meanwhile is taken again if its seat is
//!   still free, exactly as a late confirmation is;
//! - fresh personal links sent to a mobile number or e-mail, without telling the person asking
//!   whether that contact has appointments.

use super::{
    BookingMode, BookingRequest, Engine, Result, claim_identities, claims_lock, code_destination,
    retake_seat, touch, validate_citizen,
};
use crate::booking::BookingError;
use crate::domain::otp::{self, OtpCode};
use crate::domain::{
    Appointment, AppointmentId, Channel, Citizen, CitizenName, CommuneId, LocationId,
    MessageChannel, NotificationKind, ServiceId, Status,
};
use crate::notify::CodeDestination;
use chrono::{DateTime, Duration, Utc};

/// The name an appointment carries while its citizen is still typing their details (agents
/// may see it in the day view).
pub const PENDING_NAME: &str = "Réservation en cours";

/// How many appointments "find my appointment" sends links for, soonest first.
const LINKS_AT_MOST: i64 = 5;

impl Engine {
    /// Holds a slot for a citizen who has not yet said who they are (on the web, or on the
    /// telephone before the mobile number and the name).
    pub async fn hold_for_details(
        &self,
        channel: Channel,
        commune: CommuneId,
        service: ServiceId,
        start: DateTime<Utc>,
        location: Option<LocationId>,
        persons: u32,
    ) -> Result<Appointment> {
        let request = BookingRequest {
            commune,
            service,
            start,
            location,
            persons,
            citizen: Citizen {
                name: CitizenName::from_trusted(PENDING_NAME.to_owned()),
                phone: None,
                email: None,
                ants_application_ids: Vec::new(),
            },
            channel,
        };
        self.book(&request, BookingMode::HoldForDetails).await
    }

    /// Gives a held appointment its citizen and sends the one-time code; the hold runs again
    /// from now (up to twice its length from the first choice), so that the citizen has time
    /// to type the code. Giving details a second time (a typo corrected) replaces the first
    /// ones.
    pub async fn provide_details(
        &self,
        id: AppointmentId,
        citizen: &Citizen,
    ) -> Result<(Appointment, CodeDestination)> {
        let result = self.retry(|| self.provide_details_once(id, citizen)).await;
        if let Err(BookingError::Duplicate(Some(place))) = &result {
            // The person typing may not own these details: the owner is told, not them.
            if let Err(e) = self.notify_duplicate(place.appointment_id, place).await {
                tracing::warn!(error = %e, "could not tell the owner of a duplicate");
            }
        }
        result
    }

    async fn provide_details_once(
        &self,
        id: AppointmentId,
        citizen: &Citizen,
    ) -> Result<(Appointment, CodeDestination)> {
        let now = self.clock.now();
        let before = self.appointment(id).await?;
        let details = self.details(&before).await?;
        validate_citizen(
            citizen,
            before.channel,
            &details.service,
            before.persons as u32,
        )?;
        let destination = code_destination(citizen, &details.commune)?;
        self.check_lapsed_hold(&before, now).await?;
        let (mut tx, mut appointment) = self.open(&before).await?;
        match appointment.effective_status(now) {
            Status::Held => {}
            Status::Expired if appointment.starts_at > now => {
                appointment = retake_seat(tx.as_mut(), &appointment, now).await?;
            }
            Status::Expired => return Err(BookingError::HoldExpired),
            Status::Confirmed => return Err(BookingError::AlreadyConfirmed),
            other => return Err(BookingError::NotModifiable(other)),
        }
        tx.release_claims(id).await?;
        appointment.citizen = citizen.clone();
        appointment.status = Status::Held;
        // A full hold to type the code, but no squatting a slot by giving details again and
        // again: never beyond twice the hold from the first choice (a lapsed hold is still
        // confirmed if its seat is free).
        let cap = appointment.created_at + self.hold_duration * 2;
        appointment.hold_expires_at = Some((now + self.hold_duration).min(cap).max(now));
        touch(&mut appointment, now);
        tx.update_appointment(&appointment).await?;
        let exclusive = !details.commune.allow_multiple_per_category;
        let mut freed = false;
        if let Some(holder) = claim_identities(
            tx.as_mut(),
            &appointment,
            Some(&destination),
            details.service.category,
            exclusive,
            now,
            &mut freed,
        )
        .await?
        {
            drop(tx);
            return Err(self.duplicate(holder).await);
        }
        let locked = claims_lock(&appointment.citizen, details.service.category, &destination);
        let destination = self
            .send_code(
                tx.as_mut(),
                &details.commune,
                &details.service,
                &appointment,
                (destination, locked),
                now,
            )
            .await?;
        tx.commit().await?;
        if freed {
            self.seat_released(appointment.commune_id);
        }
        self.wake.notify_one();
        Ok((appointment, destination))
    }

    /// Lets go of a hold nobody will confirm (a caller who hung up): its seat is free at once
    /// rather than when the hold lapses. Anything but a live hold is left as it is.
    pub async fn release_hold(&self, id: AppointmentId) -> Result<()> {
        self.retry(|| self.release_hold_once(id)).await
    }

    async fn release_hold_once(&self, id: AppointmentId) -> Result<()> {
        let now = self.clock.now();
        let before = self.appointment(id).await?;
        if before.effective_status(now) != Status::Held {
            return Ok(());
        }
        let (mut tx, mut appointment) = self.open(&before).await?;
        if appointment.effective_status(now) != Status::Held {
            return Ok(());
        }
        appointment.status = Status::Expired;
        appointment.seat = None;
        appointment.hold_expires_at = Some(now);
        touch(&mut appointment, now);
        tx.update_appointment(&appointment).await?;
        tx.release_claims(id).await?;
        tx.commit().await?;
        self.seat_released(appointment.commune_id);
        tracing::info!(appointment = %id, "hold released");
        Ok(())
    }

    /// Sends a one-time code about a confirmed appointment to its own contact, to prove that
    /// whoever asks to cancel or move it (on the telephone) holds that mobile.
    pub async fn send_check_code(&self, id: AppointmentId) -> Result<CodeDestination> {
        self.retry(|| self.send_check_code_once(id)).await
    }

    async fn send_check_code_once(&self, id: AppointmentId) -> Result<CodeDestination> {
        let now = self.clock.now();
        let appointment = self.appointment(id).await?;
        match appointment.effective_status(now) {
            Status::Confirmed if appointment.starts_at > now => {}
            Status::Confirmed => return Err(BookingError::AlreadyStarted),
            other => return Err(BookingError::NotModifiable(other)),
        }
        let details = self.details(&appointment).await?;
        let destination = code_destination(&appointment.citizen, &details.commune)?;
        let mut tx = self.store.begin().await?;
        let destination = self
            .send_code(
                tx.as_mut(),
                &details.commune,
                &details.service,
                &appointment,
                (destination, false),
                now,
            )
            .await?;
        tx.commit().await?;
        self.wake.notify_one();
        Ok(destination)
    }

    /// Checks and uses up the code sent by [`Engine::send_check_code`].
    pub async fn check_code(&self, id: AppointmentId, code: &OtpCode) -> Result<()> {
        let now = self.clock.now();
        let tx = self.store.begin().await?;
        let tx = self.use_code(tx, id, code, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// "Find my appointment": sends a fresh personal link for each coming appointment booked
    /// with this mobile number or e-mail, to that contact only. Says nothing of what it found —
    /// the page answers the same whether or not there was anything — and sends at most three
    /// times per contact in ten minutes. Returns how many links went (for tests and logs).
    pub async fn send_links(&self, to: &CodeDestination) -> Result<usize> {
        self.retry(|| self.send_links_once(to)).await
    }

    async fn send_links_once(&self, to: &CodeDestination) -> Result<usize> {
        let now = self.clock.now();
        let (phone, email) = match to {
            CodeDestination::Sms(p) => (Some(p.as_str()), None),
            CodeDestination::Email(e) => (None, Some(e.as_str())),
        };
        let found = self
            .store
            .upcoming_appointments_of(phone, email, now, LINKS_AT_MOST)
            .await?;
        if found.is_empty() {
            return Ok(0);
        }
        // Read before the transaction: it must not wait on the pool while holding a connection.
        let mut all_details = Vec::with_capacity(found.len());
        for appointment in &found {
            all_details.push(self.details(appointment).await?);
        }
        let mut tx = self.store.begin().await?;
        let key = to.key();
        tx.lock_destination(&key).await?;
        let (recent, today) = tx
            .count_sent_to(
                &key,
                NotificationKind::Link,
                now - otp::SEND_WINDOW,
                now - Duration::hours(24),
            )
            .await?;
        if recent >= otp::MAX_SENDS || today >= otp::MAX_SENDS_PER_DAY {
            tracing::info!(to = %to.masked(), "links asked for too often; none sent");
            return Ok(0);
        }
        let mut sent = 0;
        for (appointment, details) in found.iter().zip(&all_details) {
            if to.channel() == MessageChannel::Sms
                && !tx
                    .take_sms_budget(
                        details.commune.id,
                        details.commune.local_date(now),
                        details.commune.sms_daily_budget,
                    )
                    .await?
            {
                continue;
            }
            let token = self
                .notifier
                .new_link(tx.as_mut(), appointment.id, now)
                .await?;
            let booking_url = self.notifier.booking_url(&details.commune);
            let subject = self.subject(details, appointment, &booking_url);
            self.notifier
                .link(tx.as_mut(), &subject, to, &token, now)
                .await?;
            sent += 1;
        }
        tx.commit().await?;
        self.wake.notify_one();
        tracing::info!(to = %to.masked(), sent, "personal links sent on request");
        Ok(sent)
    }
}
