//! What the commune does to its citizens' appointments: cancel one with a reason and a concrete
//! replacement held for the citizen (48 h by default), which they accept by link or by replying
//! OUI; close a planning, a location or the whole commune for a period, which does the same for
//! every appointment in it. Each cancellation is one transaction: the old appointment is
//! cancelled, the replacement seat taken, the citizen's identities and personal links move to
//! the replacement and the notice is queued — all or nothing.

use super::{BookingError, Engine, Result, offered, take_seat, touch};
use crate::domain::slots::SlotFilter;
use crate::domain::{Appointment, AppointmentId, Closure, Commune, CommuneId, Status};
use crate::notify::Recipients;
use crate::notify::templates::Proposal;
use crate::store::{NewClosure, SmsAction};
use chrono::{DateTime, Duration, Utc};

/// How one appointment's cancellation by the commune went.
#[derive(Debug, Clone)]
pub struct CommuneCancellation {
    pub cancelled: Appointment,
    /// The replacement held for the citizen, when a free slot could be found.
    pub proposal: Option<Appointment>,
    /// How the citizen was told.
    pub told: Told,
}

/// How a citizen hears of the commune's cancellation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Told {
    Sms,
    Email,
    SmsAndEmail,
    /// No mobile that takes SMS, no e-mail: someone must call them.
    Nobody,
    /// A booking still being made (a hold never confirmed): nothing to tell.
    NotNeeded,
}

impl Told {
    /// Whom the notice of a commune's cancellation reaches (the notifier's own rule).
    fn of(commune: &Commune, appointment: &Appointment) -> Self {
        let to = Recipients::of(commune, appointment, false);
        match (to.sms.is_some(), to.email.is_some()) {
            (true, true) => Told::SmsAndEmail,
            (true, false) => Told::Sms,
            (false, true) => Told::Email,
            (false, false) => Told::Nobody,
        }
    }

    /// What the agent reads in a closure's report.
    pub fn label(self) -> &'static str {
        match self {
            Told::Sms => "prévenu par SMS",
            Told::Email => "prévenu par e-mail",
            Told::SmsAndEmail => "prévenu par SMS et e-mail",
            Told::Nobody => "injoignable : à appeler",
            Told::NotNeeded => "réservation en cours, non confirmée : rien à prévenir",
        }
    }
}

/// How many candidate slots are tried before giving up on a replacement (each may be taken by
/// someone else between the search and the transaction).
const CANDIDATES: usize = 5;

impl Engine {
    /// Cancels a confirmed appointment, or a replacement still offered, for the commune with
    /// `reason`. With `propose`, the first free slot of the same service from the day of the
    /// cancelled one on, not overlapping it (at the same location if there is one, otherwise
    /// anywhere in the commune), is held for the citizen and offered in the notice. A booking
    /// still being made (a hold never confirmed) is simply released.
    pub async fn cancel_with_proposal(
        &self,
        id: AppointmentId,
        reason: &str,
        propose: bool,
    ) -> Result<CommuneCancellation> {
        let now = self.clock.now();
        let before = self.appointment(id).await?;
        match before.effective_status(now) {
            Status::Confirmed => {}
            Status::Held if self.proposal_origin(&before).await?.is_some() => {}
            Status::Held => {
                let cancelled = self
                    .cancel(
                        id,
                        &super::Cancellation::ByCommune {
                            reason: reason.to_owned(),
                        },
                    )
                    .await?;
                return Ok(CommuneCancellation {
                    cancelled,
                    proposal: None,
                    told: Told::NotNeeded,
                });
            }
            other => return Err(BookingError::NotModifiable(other)),
        }
        if propose {
            // No replacement can be found for a service or place the commune has just
            // withdrawn: the cancellation goes ahead without one.
            let candidates = match self.replacement_candidates(&before).await {
                Ok(c) => c,
                Err(BookingError::ServiceNotFound | BookingError::LocationNotFound) => Vec::new(),
                Err(e) => return Err(e),
            };
            for candidate in candidates {
                match self
                    .retry(|| self.cancel_and_propose_once(id, reason, Some(candidate)))
                    .await
                {
                    Err(BookingError::SlotTaken)
                    | Err(BookingError::SlotUnavailable)
                    | Err(BookingError::ServiceNotFound)
                    | Err(BookingError::LocationNotFound) => continue,
                    other => return other,
                }
            }
        }
        self.retry(|| self.cancel_and_propose_once(id, reason, None))
            .await
    }

    /// Free slots that could replace `old`: same service and persons, not overlapping it, the
    /// same location first.
    async fn replacement_candidates(&self, old: &Appointment) -> Result<Vec<(DateTime<Utc>, i64)>> {
        let config = self.config(old.commune_id).await?;
        let commune = &config.commune;
        // From the day the citizen had planned for: they arranged that day, and a slot
        // sooner than expected (in two hours, say) is rarely one they can take.
        let today = commune
            .local_date(self.clock.now())
            .max(commune.local_date(old.starts_at));
        let horizon = config
            .services
            .iter()
            .find(|s| s.id == old.service_id)
            .map_or(60, |s| i64::from(s.horizon_days.max(1)));
        let mut found = Vec::new();
        for location in [Some(old.location_id), None] {
            let filter = SlotFilter {
                persons: old.persons.max(1) as u32,
                location,
                from: today,
                to: today + Duration::days(horizon),
                limit: Some(CANDIDATES + 4),
            };
            let slots = match self
                .free_slots(old.commune_id, old.service_id, filter)
                .await
            {
                Ok(slots) => slots,
                Err(BookingError::LocationNotFound) => continue,
                Err(e) => return Err(e),
            };
            found.extend(
                slots
                    .into_iter()
                    .filter(|s| s.end <= old.starts_at || s.start >= old.ends_at)
                    .map(|s| (s.start, s.location_id)),
            );
            if found.len() >= CANDIDATES {
                break;
            }
        }
        found.dedup();
        found.truncate(CANDIDATES);
        Ok(found)
    }

    async fn cancel_and_propose_once(
        &self,
        id: AppointmentId,
        reason: &str,
        candidate: Option<(DateTime<Utc>, i64)>,
    ) -> Result<CommuneCancellation> {
        let now = self.clock.now();
        let before = self.appointment(id).await?;
        let details = self.details(&before).await?;
        let target = match candidate {
            Some((start, location)) => {
                let ctx = self
                    .context_at(before.commune_id, before.service_id, start, Some(true))
                    .await?;
                let persons = before.persons.max(1) as u32;
                let offers = offered(&ctx, now, start, persons, Some(location))?;
                let end = start + ctx.service.duration_for(persons);
                let location = ctx
                    .locations
                    .iter()
                    .find(|l| l.id == location)
                    .cloned()
                    .ok_or(BookingError::LocationNotFound)?;
                Some((start, end, offers, location))
            }
            None => None,
        };
        let (mut tx, mut old) = self.open(&before).await?;
        match old.effective_status(now) {
            Status::Confirmed => {}
            // An offer the citizen has not answered yet (checked by the caller).
            Status::Held if old.replaces_id.is_some() => {}
            other => return Err(BookingError::NotModifiable(other)),
        }
        old.status = Status::CancelledByCommune;
        old.seat = None;
        old.hold_expires_at = None;
        old.cancelled_at = Some(now);
        old.cancel_reason = Some(reason.to_owned());
        touch(&mut old, now);
        tx.update_appointment(&old).await?;

        let mut proposal = None;
        if let Some((start, end, offers, location)) = target {
            let Some((planning_id, location_id, seat)) =
                take_seat(tx.as_mut(), &offers, start, end, now).await?
            else {
                return Err(BookingError::SlotTaken);
            };
            // Held long enough to be read and answered, never past the appointment itself.
            let expires = (now + self.proposal_hold).min(start);
            let new = Appointment {
                id: AppointmentId::new_v4(),
                planning_id,
                location_id,
                starts_at: start,
                ends_at: end,
                seat: Some(seat),
                status: Status::Held,
                hold_expires_at: Some(expires),
                replaces_id: Some(old.id),
                cancel_reason: None,
                version: 1,
                created_at: now,
                updated_at: now,
                confirmed_at: None,
                cancelled_at: None,
                ..old.clone()
            };
            tx.insert_appointment(&new)
                .await
                .map_err(super::seat_conflict)?;
            // The citizen keeps their place in the duplicate rule and their links lead to the
            // offer.
            tx.transfer_claims(old.id, new.id).await?;
            tx.move_manage_tokens(old.id, new.id).await?;
            let token = self.notifier.new_link(tx.as_mut(), new.id, now).await?;
            if let Some(phone) = new
                .citizen
                .phone
                .as_ref()
                .filter(|p| p.can_receive_sms(details.commune.allow_foreign_mobiles))
            {
                // A late OUI is still an answer while the offered time is ahead.
                tx.set_sms_conversation(phone.as_str(), new.id, SmsAction::Accept, start)
                    .await?;
            }
            proposal = Some((
                new,
                Proposal {
                    start,
                    location_name: location.name.clone(),
                    accept_url: self.notifier.manage_url(&token),
                },
            ));
        } else {
            tx.release_claims(old.id).await?;
        }
        let booking_url = self.notifier.booking_url(&details.commune);
        let subject = self.subject(&details, &old, &booking_url);
        self.notifier
            .cancelled_by_commune(
                tx.as_mut(),
                &subject,
                reason,
                proposal.as_ref().map(|(_, p)| p),
                now,
            )
            .await?;
        tx.commit().await?;
        self.seat_released(old.commune_id);
        if let Some((offer, _)) = &proposal {
            self.seat_taken(offer);
        }
        self.wake.notify_one();
        tracing::info!(appointment = %id, proposal = proposal.is_some(), "appointment cancelled by the commune");
        Ok(CommuneCancellation {
            told: Told::of(&details.commune, &old),
            cancelled: old,
            proposal: proposal.map(|(a, _)| a),
        })
    }

    /// The appointment the commune cancelled and replaced with `proposal`, if `proposal` is an
    /// offer it made that was never confirmed.
    pub async fn proposal_origin(&self, proposal: &Appointment) -> Result<Option<Appointment>> {
        let Some(old_id) = proposal.replaces_id else {
            return Ok(None);
        };
        // A lapsed or declined offer is still one: accepting it late works if the seat is free.
        if proposal.confirmed_at.is_some()
            || !matches!(proposal.status, Status::Held | Status::Expired)
        {
            return Ok(None);
        }
        let old = self.store.appointment(old_id).await?;
        Ok(old.filter(|o| o.status == Status::CancelledByCommune))
    }

    /// The citizen accepts the replacement offered to them: it is confirmed (with its
    /// confirmation message and reminder), even after the offer lapsed if the seat is still free.
    pub async fn accept_proposal(&self, id: AppointmentId) -> Result<Appointment> {
        let proposal = self.appointment(id).await?;
        if proposal.confirmed_at.is_some() {
            // Accepting twice is harmless; accepting what was cancelled since is not possible.
            return match proposal.status {
                Status::Confirmed => Ok(proposal),
                other => Err(BookingError::NotModifiable(other)),
            };
        }
        if self.proposal_origin(&proposal).await?.is_none() {
            return Err(BookingError::AppointmentNotFound);
        }
        self.confirm(id).await.map_err(|e| match e {
            BookingError::HoldExpired => BookingError::ProposalLapsed,
            other => other,
        })
    }

    /// The citizen declines the offer: it is cancelled by them (so that a later OUI does not
    /// revive it) and its seat goes back to everyone.
    pub async fn decline_proposal(&self, id: AppointmentId) -> Result<()> {
        let proposal = self.appointment(id).await?;
        if self.proposal_origin(&proposal).await?.is_none() {
            return Err(BookingError::AppointmentNotFound);
        }
        self.cancel(id, &super::Cancellation::ByCitizen).await?;
        Ok(())
    }

    /// Closes a planning, a location or the whole commune for a period: the closure is recorded
    /// at once (no new booking lands in it), then every appointment in it is cancelled with a
    /// replacement, one by one. Returns the closure and what happened to each appointment
    /// (errors included, so that the agent sees whom to call).
    pub async fn close_period(
        &self,
        closure: &NewClosure,
        propose: bool,
    ) -> Result<(Closure, Vec<(Appointment, Result<CommuneCancellation>)>)> {
        if closure.ends_at <= closure.starts_at {
            return Err(BookingError::InvalidPeriod);
        }
        let id = self.store.insert_closure(closure).await?;
        self.forget_config(closure.commune_id);
        let closure = Closure {
            id,
            commune_id: closure.commune_id,
            planning_id: closure.planning_id,
            location_id: closure.location_id,
            starts_at: closure.starts_at,
            ends_at: closure.ends_at,
            reason: closure.reason.clone(),
        };
        let outcomes = self.cancel_in_closure(&closure, propose).await?;
        Ok((closure, outcomes))
    }

    /// Cancels what a closure strands, one appointment at a time (each with its own offer).
    /// Run again on an existing closure, it finishes what an interrupted run left.
    pub async fn cancel_in_closure(
        &self,
        closure: &Closure,
        propose: bool,
    ) -> Result<Vec<(Appointment, Result<CommuneCancellation>)>> {
        let affected = self.appointments_in(&as_new(closure)).await?;
        let mut outcomes = Vec::with_capacity(affected.len());
        for appointment in affected {
            let outcome = self
                .cancel_with_proposal(appointment.id, &closure.reason, propose)
                .await;
            outcomes.push((appointment, outcome));
        }
        Ok(outcomes)
    }

    /// Confirmed or held appointments, still to come, that a closure would strand.
    pub async fn appointments_in(&self, closure: &NewClosure) -> Result<Vec<Appointment>> {
        let now = self.clock.now();
        let all = self
            .store
            .appointments(
                closure.commune_id,
                closure.starts_at - Duration::hours(24),
                closure.ends_at,
            )
            .await?;
        Ok(all
            .into_iter()
            .filter(|a| a.starts_at < closure.ends_at && a.ends_at > closure.starts_at)
            .filter(|a| a.ends_at > now)
            .filter(|a| matches!(a.effective_status(now), Status::Confirmed | Status::Held))
            .filter(|a| closure.planning_id.is_none_or(|p| p == a.planning_id))
            .filter(|a| closure.location_id.is_none_or(|l| l == a.location_id))
            .collect())
    }

    /// After the commune changed its reminder delay or quiet hours: the reminders not sent
    /// yet move to their new time, or go when none is due any more. Returns (moved, dropped).
    pub async fn reschedule_reminders(&self, commune: CommuneId) -> Result<(usize, usize)> {
        self.forget_config(commune);
        let config = self.config(commune).await?;
        let now = self.clock.now();
        let (mut moved, mut dropped) = (0, 0);
        for (id, starts_at, confirmed_at) in self.store.pending_reminders(commune).await? {
            let due = crate::domain::reminders::reminder_due(
                &config.commune,
                starts_at,
                confirmed_at.unwrap_or(now),
            );
            match due {
                Some(_) => moved += 1,
                None => dropped += 1,
            }
            self.store.reschedule(id, due, now).await?;
        }
        self.wake.notify_one();
        Ok((moved, dropped))
    }
}

/// A stored closure as the one that created it.
pub fn as_new(c: &Closure) -> NewClosure {
    NewClosure {
        commune_id: c.commune_id,
        planning_id: c.planning_id,
        location_id: c.location_id,
        starts_at: c.starts_at,
        ends_at: c.ends_at,
        reason: c.reason.clone(),
    }
}
