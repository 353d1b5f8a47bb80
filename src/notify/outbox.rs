//! The outbox worker: sends what is due, once.
//!
//! Guarantees:
//! - a notification is claimed by one worker at a time: `FOR UPDATE SKIP LOCKED` on
//!   PostgreSQL, one atomic `UPDATE … RETURNING` on SQLite; the claim is a lease
//!   ([`Outbox::LEASE`]), so the messages of a worker that died before sending are sent by
//!   another;
//! - just before handing a message to the provider, the worker writes that it started; a worker
//!   that dies after that point leaves the message `unknown`, not resent — it may have left;
//! - 429 and refused connections are retried with back-off (30 s doubling to an hour, 8 tries);
//!   a timeout or 5xx from the SMS provider is `unknown` and waits for the delivery report;
//! - reminders are checked once more before sending: the appointment must still be confirmed and
//!   ahead, and the number must not have replied STOP.

use super::email::{MailOutcome, Mailer, OutgoingEmail};
use super::sms::{OutgoingSms, SmsOutcome, SmsSender};
use crate::domain::reminders::{end_of_quiet_hours, is_quiet};
use crate::domain::{Clock, MessageChannel, MinuteOfDay, NotificationKind, Status, gsm7};
use crate::store::{Notification, NotificationId, SendResult, Store};
use chrono::Duration;
use futures::StreamExt;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct Outbox {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    sms: Arc<dyn SmsSender>,
    mail: Arc<dyn Mailer>,
    worker: String,
    /// `GUICHET_PUBLIC_URL`, for the SMS status callback.
    public_url: String,
    sms_price_micro_eur: i64,
    wake: Arc<Notify>,
}

impl Outbox {
    /// How long a claim lasts: far longer than a send takes (the SMS timeout is 10 s).
    pub const LEASE: Duration = Duration::seconds(60);
    pub const MAX_ATTEMPTS: i32 = 8;
    /// Messages claimed, started and recorded together (one transaction each step).
    const BATCH: usize = 16;
    /// Batches on their way at once: a batch waits for its slowest send before recording,
    /// so new messages are claimed meanwhile.
    const BATCHES_IN_FLIGHT: usize = 4;
    /// How often the background loop looks for sends a vanished worker left half-done.
    const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        sms: Arc<dyn SmsSender>,
        mail: Arc<dyn Mailer>,
        public_url: &str,
        sms_price_micro_eur: i64,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            clock,
            sms,
            mail,
            worker: format!("worker-{}", uuid::Uuid::new_v4().simple()),
            public_url: public_url.trim_end_matches('/').to_owned(),
            sms_price_micro_eur,
            wake,
        }
    }

    /// Sends one batch of what is due; returns how many notifications it handled.
    pub async fn run_once(&self) -> crate::store::Result<usize> {
        let now = self.clock.now();
        let abandoned = self.store.abandon_stale_sends(now).await?;
        if abandoned > 0 {
            tracing::warn!(
                abandoned,
                "messages left unknown by a worker that stopped while sending"
            );
        }
        let claimed = self.claim().await?;
        let count = claimed.len();
        self.deliver_batch(claimed).await?;
        Ok(count)
    }

    /// Sends until nothing is due (tests and the load tool use it to drain the outbox).
    pub async fn run_until_idle(&self) -> crate::store::Result<usize> {
        let mut total = 0;
        loop {
            let n = self.run_once().await?;
            total += n;
            if n == 0 {
                return Ok(total);
            }
        }
    }

    async fn claim(&self) -> crate::store::Result<Vec<Notification>> {
        let now = self.clock.now();
        self.store
            .claim_notifications(&self.worker, now, now + Self::LEASE, Self::BATCH as i64)
            .await
    }

    /// The background loop: woken when a change enqueues something, and every second for
    /// what other instances wrote or what became due. Batches flow without waiting for each
    /// other: a new one is claimed as soon as a change wakes the loop and fewer than
    /// [`Outbox::BATCHES_IN_FLIGHT`] are on their way, so a code written during a rush leaves
    /// within a round trip or two. Sends abandoned by a vanished worker are looked for every
    /// [`Outbox::SWEEP_EVERY`], not on every claim (that is a write each time).
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(worker = %self.worker, "outbox worker started");
        // Tasks of their own, not futures polled by this loop: a batch paused while the loop
        // awaits its claim could hold the store's writer lock the claim waits for.
        let mut in_flight = tokio::task::JoinSet::new();
        let mut last_sweep: Option<std::time::Instant> = None;
        loop {
            if last_sweep.is_none_or(|t| t.elapsed() >= Self::SWEEP_EVERY) {
                last_sweep = Some(std::time::Instant::now());
                match self.store.abandon_stale_sends(self.clock.now()).await {
                    Ok(0) => {}
                    Ok(abandoned) => tracing::warn!(
                        abandoned,
                        "messages left unknown by a worker that stopped while sending"
                    ),
                    Err(e) => tracing::error!(error = %e, "outbox: cannot sweep stale sends"),
                }
            }
            let mut full_batch = false;
            if in_flight.len() < Self::BATCHES_IN_FLIGHT {
                match self.claim().await {
                    Ok(claimed) if claimed.is_empty() => {}
                    Ok(claimed) => {
                        full_batch = claimed.len() == Self::BATCH;
                        let outbox = self.clone();
                        in_flight.spawn(async move {
                            if let Err(e) = outbox.deliver_batch(claimed).await {
                                tracing::error!(error = %e, "could not record sends");
                            }
                        });
                    }
                    Err(e) => tracing::error!(error = %e, "outbox: cannot claim notifications"),
                }
            }
            if in_flight.is_empty() {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
                continue;
            }
            if full_batch && in_flight.len() < Self::BATCHES_IN_FLIGHT {
                // More may be due already.
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => {
                    // What was handed to the provider is recorded before stopping.
                    while in_flight.join_next().await.is_some() {}
                    break;
                }
                _ = in_flight.join_next() => {}
                () = self.wake.notified() => {}
            }
        }
        tracing::info!(worker = %self.worker, "outbox worker stopped");
    }

    /// Sends a claimed batch: reminders that should not go now are set aside, the rest are
    /// marked as being handed to the provider (one transaction), sent side by side, and every
    /// outcome is recorded (one transaction). A worker that dies before the first write leaves
    /// its claims to lapse and be sent by another; one that dies after it leaves them
    /// `unknown`, never sent twice.
    async fn deliver_batch(&self, claimed: Vec<Notification>) -> crate::store::Result<()> {
        if claimed.is_empty() {
            return Ok(());
        }
        let mut outcomes = Vec::with_capacity(claimed.len());
        let mut to_send = Vec::with_capacity(claimed.len());
        // A batch of reminders reads each one's appointment: side by side, not in turn.
        let looked: Vec<_> = futures::stream::iter(claimed)
            .map(|n| async move { (self.hold_back(&n).await, n) })
            .buffered(Self::BATCH)
            .collect()
            .await;
        for (held_back, n) in looked {
            match held_back? {
                Some(outcome) => outcomes.push((n.message.id, outcome)),
                None => to_send.push(n),
            }
        }
        if !to_send.is_empty() {
            let now = self.clock.now();
            let ids: Vec<NotificationId> = to_send.iter().map(|n| n.message.id).collect();
            let started = self
                .store
                .start_sends(&ids, &self.worker, now, now + Self::LEASE)
                .await?;
            // A lapsed claim: another worker has that message now.
            to_send.retain(|n| started.contains(&n.message.id));
            let sent: Vec<(NotificationId, SendResult)> = futures::stream::iter(to_send)
                .map(|n| async move {
                    let result = match n.message.channel {
                        MessageChannel::Sms => self.send_sms(&n).await,
                        MessageChannel::Email => self.send_email(&n).await,
                    };
                    if !matches!(result, SendResult::Sent { .. }) {
                        tracing::warn!(notification = %n.message.id, kind = %n.message.kind, outcome = ?result, "message not delivered");
                    }
                    (n.message.id, result)
                })
                .buffer_unordered(Self::BATCH)
                .collect()
                .await;
            outcomes.extend(sent);
        }
        let now = self.clock.now();
        self.store.finish_sends(&self.worker, &outcomes, now).await
    }

    /// For a reminder: how it ends without being sent, if it should not be sent now — the
    /// appointment was cancelled or moved, the number said STOP (cancelled), or it is quiet
    /// hours in the commune (moved to the end of the quiet hours, or dropped if that is too
    /// late). The transaction that cancels an appointment cancels its reminders; this is the
    /// last look before sending.
    async fn hold_back(&self, n: &Notification) -> crate::store::Result<Option<SendResult>> {
        let message = &n.message;
        if message.kind != NotificationKind::Reminder {
            return Ok(None);
        }
        let now = self.clock.now();
        let cancel = |reason: &str| {
            Ok(Some(SendResult::Cancelled {
                reason: reason.to_owned(),
            }))
        };
        let Some(appointment) = (match message.appointment_id {
            Some(id) => self.store.appointment(id).await?,
            None => None,
        }) else {
            return cancel("no appointment");
        };
        if appointment.status != Status::Confirmed || appointment.starts_at <= now {
            return cancel("the appointment is no longer ahead and confirmed");
        }
        if message.channel == MessageChannel::Sms
            && self.store.is_sms_opted_out(&message.destination).await?
        {
            return cancel("the number replied STOP");
        }
        if let Some(commune) = self.store.commune(appointment.commune_id).await? {
            let local = now.with_timezone(&commune.timezone).naive_local();
            let minute = MinuteOfDay::of_time(local.time());
            if is_quiet(minute, commune.quiet_start, commune.quiet_end) {
                // Late (a retry, a worker down overnight): never at night.
                let morning = end_of_quiet_hours(
                    commune.timezone,
                    now,
                    commune.quiet_start,
                    commune.quiet_end,
                );
                return if morning < appointment.starts_at {
                    Ok(Some(SendResult::Retry {
                        due_at: morning,
                        error: "quiet hours: sent in the morning".into(),
                    }))
                } else {
                    cancel("only quiet hours were left before the appointment")
                };
            }
        }
        Ok(None)
    }

    fn backoff(attempts: i32) -> Duration {
        let shift = attempts.clamp(1, 8) - 1;
        (Duration::seconds(30) * 2i32.pow(shift as u32)).min(Duration::hours(1))
    }

    fn retry(&self, n: &Notification, error: String) -> SendResult {
        if n.attempts >= Self::MAX_ATTEMPTS {
            SendResult::Failed {
                error: format!("gave up after {} tries: {error}", n.attempts),
            }
        } else {
            SendResult::Retry {
                due_at: self.clock.now() + Self::backoff(n.attempts),
                error,
            }
        }
    }

    async fn send_sms(&self, n: &Notification) -> SendResult {
        let sms = OutgoingSms {
            to: n.message.destination.clone(),
            body: n.message.body.clone(),
            status_callback: Some(format!(
                "{}/twilio/sms/status?n={}",
                self.public_url, n.message.id
            )),
        };
        let cost = |segments: i32| i64::from(segments) * self.sms_price_micro_eur;
        match self.sms.send(&sms).await {
            SmsOutcome::Accepted { sid, segments } => SendResult::Sent {
                provider_id: Some(sid),
                segments,
                cost_micro_eur: cost(segments),
                kept_body: super::redact(&n.message.body),
            },
            SmsOutcome::RetryLater { reason } => self.retry(n, reason),
            SmsOutcome::Ambiguous { reason } => {
                let segments = gsm7::segments(&n.message.body) as i32;
                SendResult::Unknown {
                    error: reason,
                    segments,
                    cost_micro_eur: cost(segments),
                }
            }
            SmsOutcome::Rejected { reason } => SendResult::Failed { error: reason },
        }
    }

    async fn send_email(&self, n: &Notification) -> SendResult {
        let email = OutgoingEmail {
            to: n.message.destination.clone(),
            subject: n.message.subject.clone().unwrap_or_default(),
            text: n.message.body.clone(),
            html: n.message.html.clone(),
            ics: n.message.ics.clone(),
        };
        match self.mail.send(&email).await {
            MailOutcome::Sent => SendResult::Sent {
                provider_id: None,
                segments: 0,
                cost_micro_eur: 0,
                kept_body: super::redact(&n.message.body),
            },
            MailOutcome::RetryLater { reason } => self.retry(n, reason),
            MailOutcome::Rejected { reason } => SendResult::Failed { error: reason },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_up_to_an_hour() {
        let waits: Vec<_> = (1..=9).map(|a| Outbox::backoff(a).num_seconds()).collect();
        assert_eq!(waits, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
    }
}
