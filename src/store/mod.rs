//! Storage: one trait, two implementations (SQLite, the embedded default, and PostgreSQL), picked
//! from the database URL at start-up; each backend has its own migrations under `migrations/`.
//!
//! The store knows SQL, not rules. Operations that decide capacity run inside a [`StoreTx`], a
//! write transaction that the booking engine drives step by step: SQLite opens it with
//! `BEGIN IMMEDIATE` (one writer at a time, waiting up to the busy timeout), PostgreSQL locks the
//! planning rows it books on (`SELECT … FOR UPDATE`). Whatever the code does, the database itself
//! refuses two overlapping appointments on one seat (`appointments_no_overlap`: an exclusion
//! constraint on PostgreSQL, a trigger on SQLite) and a seat beyond the planning's capacity
//! (`appointments_seat_capacity`). The same conformance suite (`tests/it/store.rs`) runs on both.

#[macro_use]
mod shared;
mod postgres;
mod rows;
mod sqlite;
mod sqlite_direct;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use crate::domain::{
    Appointment, AppointmentId, AppointmentPlace, Category, Closure, ClosureId, Commune, CommuneId,
    Location, LocationId, MessageChannel, MinuteOfDay, NotificationKind, NotificationStatus,
    OpeningRule, OpeningRuleId, Planning, PlanningId, Service, ServiceId, Weekdays, WeeklyHours,
    slots::Occupied,
};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Errors of the storage layer. Constraint violations are named so that callers can turn them into
/// domain errors; `Transient` errors (lock timeouts, serialization failures, deadlocks) mean
/// "nothing was written, run the whole transaction again".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("constraint {0} violated")]
    Constraint(String),
    #[error("transient database conflict, retry: {0}")]
    Transient(String),
    #[error("stored data cannot be read: {0}")]
    Corrupt(String),
    #[error("invalid database URL: {0}")]
    BadUrl(String),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Database(sqlx::Error),
    /// From SQLite's direct write connection (see `sqlite_direct`).
    #[error(transparent)]
    Sqlite(rusqlite::Error),
}

impl StoreError {
    pub fn is_constraint(&self, name: &str) -> bool {
        matches!(self, StoreError::Constraint(n) if n == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Opens the store named by a database URL: `postgres://…` selects PostgreSQL, anything else
/// (`sqlite://guichet.db`, `sqlite::memory:`, or a bare file path) SQLite. Migrations are applied.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> =
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Arc::new(PgStore::connect(url).await?)
        } else {
            Arc::new(SqliteStore::connect(url).await?)
        };
    store.migrate().await?;
    Ok(store)
}

/// How long a writer waits for another writer before giving up (SQLite busy timeout, PostgreSQL
/// lock timeout): long enough for a burst of 200 bookings on one planning, short enough that a
/// wedged transaction shows up as an error rather than a hung web page.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

/// A seat is locked by the spans of [`SEAT_BUCKET_SECONDS`] its appointment covers: two
/// appointments that overlap share one at least, and neighbours that do not overlap share
/// none when their times fall on the bucket grid.
pub const SEAT_BUCKET_SECONDS: i64 = 300;

/// The name of the lock [`StoreTx::lock_destination`] takes for `destination`.
pub(crate) fn destination_lock(destination: &str) -> String {
    format!("destination:{destination}")
}

/// The name of the lock that serialises the claims on `claim`'s identity ([`StoreTx::claim`]).
pub(crate) fn claim_lock(claim: &Claim) -> String {
    let (category, kind) = (claim.category.as_str(), claim.kind.as_str());
    format!("claim:{category}:{kind}:{}", claim.key)
}

/// The name of the locks [`StoreTx::lock_seat`] takes for `seat` of `planning` (one per bucket).
pub(crate) fn seat_lock_key(planning: PlanningId, seat: i32) -> String {
    format!("{}{seat}", seat_lock_prefix(planning))
}

/// What the names of `planning`'s seat locks begin with, the seat's number after.
pub(crate) fn seat_lock_prefix(planning: PlanningId) -> String {
    format!("seat:{planning}:")
}

/// The first and last bucket numbers covering `[start, end)`.
pub fn seat_buckets(start: DateTime<Utc>, end: DateTime<Utc>) -> (i32, i32) {
    let bucket = |t: i64| i32::try_from(t.div_euclid(SEAT_BUCKET_SECONDS)).unwrap_or(i32::MAX);
    let first = bucket(start.timestamp());
    (first, bucket(end.timestamp() - 1).max(first))
}

/// The longest an appointment lasts: its slot lies within a day's opening hours, and the schema
/// refuses longer ones (`appointments_within_a_day`).
pub const LONGEST_APPOINTMENT: chrono::Duration = chrono::Duration::hours(24);

/// The earliest start of an appointment that overlaps a span beginning at `from`: reads of the
/// appointments over a span look back no further. Without this lower bound their index scans
/// (planning or commune, then start) ran through the whole history: with three years of a busy
/// passport station, 9 ms for every hold's seat read.
pub fn looked_back_from(from: DateTime<Utc>) -> DateTime<Utc> {
    from - LONGEST_APPOINTMENT
}

/// The usual hold, written by [`Store::hold_at_once`]: the appointment on the lowest seat of its
/// planning free and not being taken, the citizen's claims, a one-time code and its message.
pub struct HoldAtOnce<'a> {
    /// Its `seat` is chosen by the store.
    pub appointment: &'a Appointment,
    pub claims: &'a [Claim],
    /// The claims are exclusive (see [`ClaimHolder`]).
    pub exclusive: bool,
    /// The index in `claims` of the code's destination, whose lock is taken with its claim
    /// (see the engine's `claims_lock`); none: taken after all claims.
    pub destination_claim: Option<usize>,
    pub otp: &'a OtpRecord,
    pub message: &'a NewNotification,
    /// Sends to the destination since `recent` and since `day_ago` must stay under `max_recent`
    /// and `max_per_day`.
    pub recent: (DateTime<Utc>, i64),
    pub day_ago: (DateTime<Utc>, i64),
    /// The commune and its local date, whose SMS are counted; with the budget when the code
    /// goes by SMS.
    pub sms_day: (CommuneId, NaiveDate),
    pub budget: Option<i32>,
    pub now: DateTime<Utc>,
}

/// What [`Store::hold_at_once`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldAtOnce {
    /// Everything is written and committed; the appointment sits on this seat.
    Held(i32),
    /// Nothing written: every seat is taken or being taken.
    Taken,
    /// Nothing written: the planning is closed there, out of service, or gone; or a claim, a
    /// limit or the budget needs a look that only the step-by-step booking gives (a conflict
    /// to explain, a stale claim, a code to send by e-mail instead); or the store cannot do it
    /// at once (SQLite, whose transactions are not slowed by round trips).
    StepByStep,
}

/// The usual confirmation, written by [`Store::confirm_at_once`]: a hold still good, confirmed
/// with its right code, its personal link and its messages.
pub struct ConfirmAtOnce<'a> {
    /// The appointment as the engine read it: written only if it is still so (same version,
    /// held, its hold not lapsed).
    pub before: &'a Appointment,
    pub confirmed: &'a Appointment,
    pub code_hash: &'a str,
    pub token_hash: &'a str,
    /// At most [`ConfirmAtOnce::MESSAGES`]: the confirmation by SMS and by e-mail, and the
    /// reminder.
    pub messages: &'a [NewNotification],
    pub now: DateTime<Utc>,
}

impl ConfirmAtOnce<'_> {
    pub const MESSAGES: usize = 3;
}

/// A planning's seats over a slot, as a booking reads them (see [`StoreTx::seats_of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seats {
    pub planning: Planning,
    /// Seats taken at some instant of the slot.
    pub busy: Vec<i32>,
    /// A closure covers the slot there.
    pub closed: bool,
}

impl Seats {
    /// Open for booking there: the planning in service, no closure.
    pub fn open(&self) -> bool {
        self.planning.active && !self.closed
    }

    /// The seat a booking would take, if open and one is free.
    pub fn free_seat(&self) -> Option<i32> {
        self.open()
            .then(|| crate::domain::slots::choose_seat(self.planning.capacity, &self.busy))
            .flatten()
    }
}

#[derive(Debug, Clone)]
pub struct NewCommune {
    pub slug: String,
    pub name: String,
    pub insee_code: String,
    pub timezone: chrono_tz::Tz,
    pub population: i64,
    pub phone_numbers: Vec<String>,
    pub switchboard_number: Option<String>,
    pub switchboard_hours: WeeklyHours,
    pub reminder_delay_hours: i32,
    pub quiet_start: MinuteOfDay,
    pub quiet_end: MinuteOfDay,
    pub sms_sender: String,
    pub allow_multiple_per_category: bool,
    pub sms_daily_budget: i32,
    pub allow_foreign_mobiles: bool,
}

#[derive(Debug, Clone)]
pub struct NewLocation {
    pub commune_id: CommuneId,
    pub name: String,
    pub address: String,
    pub postcode: String,
    pub city: String,
    pub access_notes: String,
}

#[derive(Debug, Clone)]
pub struct NewService {
    pub commune_id: CommuneId,
    pub name: String,
    pub spoken_name: String,
    pub category: Category,
    pub duration_minutes: i32,
    pub max_persons: i32,
    pub min_notice_minutes: i32,
    pub horizon_days: i32,
    pub channels: crate::domain::Channels,
    pub what_to_bring: String,
}

#[derive(Debug, Clone)]
pub struct NewPlanning {
    pub commune_id: CommuneId,
    pub name: String,
    pub capacity: i32,
}

#[derive(Debug, Clone)]
pub struct NewOpeningRule {
    pub planning_id: PlanningId,
    pub location_id: LocationId,
    pub weekdays: Weekdays,
    pub start: MinuteOfDay,
    pub end: MinuteOfDay,
    pub step_minutes: i32,
    pub valid_from: NaiveDate,
    pub valid_until: Option<NaiveDate>,
    pub service_ids: Vec<ServiceId>,
}

#[derive(Debug, Clone)]
pub struct NewClosure {
    pub commune_id: CommuneId,
    pub planning_id: Option<PlanningId>,
    pub location_id: Option<LocationId>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub reason: String,
}

/// One identity of a citizen (a mobile number, an e-mail, an ANTS application id) claiming an
/// active appointment of a category — the database's way of enforcing invariant 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub category: Category,
    pub kind: ClaimKind,
    pub key: String,
}

/// Who claims: an appointment of a commune; `exclusive` unless that commune lets a citizen hold
/// several appointments of a category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimHolder {
    pub appointment: AppointmentId,
    pub commune: CommuneId,
    pub exclusive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimKind {
    Phone,
    Email,
    Ants,
}

impl ClaimKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimKind::Phone => "phone",
            ClaimKind::Email => "email",
            ClaimKind::Ants => "ants",
        }
    }
}

pub type NotificationId = Uuid;

/// A message to send, as the engine writes it into the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    pub id: NotificationId,
    pub commune_id: Option<CommuneId>,
    pub appointment_id: Option<AppointmentId>,
    pub kind: NotificationKind,
    pub channel: MessageChannel,
    /// E.164 number or e-mail address.
    pub destination: String,
    /// At most one notification per key: `{appointment}:{kind}:{version}:{channel}`.
    pub dedupe_key: Option<String>,
    pub subject: Option<String>,
    pub body: String,
    pub html: Option<String>,
    /// An iCalendar attachment (confirmations).
    pub ics: Option<String>,
    pub due_at: DateTime<Utc>,
}

/// A notification as the outbox holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub message: NewNotification,
    pub status: NotificationStatus,
    pub attempts: i32,
    pub provider_id: Option<String>,
    pub delivery_status: Option<String>,
    pub segments: Option<i32>,
    pub cost_micro_eur: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

/// One telephone call as the voice menu keeps it between webhooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub call_sid: String,
    pub commune_id: CommuneId,
    pub caller: String,
    /// The step being answered (claimed) …
    pub seq: i64,
    /// … and the last one whose answer is written: equal when no request is acting.
    pub answered: i64,
    /// The interpreter's state (JSON).
    pub state: String,
    /// The TwiML of the last step, for a replayed webhook.
    pub last_twiml: String,
    pub outcome: Option<String>,
    pub spoken_name: Option<String>,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// A commune's voice settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoiceSettings {
    pub voice: String,
    pub language: String,
    pub flow: String,
}

/// How sending a claimed notification ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendResult {
    Sent {
        provider_id: Option<String>,
        segments: i32,
        cost_micro_eur: i64,
        /// What is kept of the text: codes and personal links masked.
        kept_body: String,
    },
    /// Nothing left: try again at `due_at`.
    Retry {
        due_at: DateTime<Utc>,
        error: String,
    },
    /// Refused for good.
    Failed { error: String },
    /// Maybe sent, maybe not (timeout, provider 5xx): never resent blindly. Counted, with the
    /// segments it would have cost, until a delivery report says otherwise.
    Unknown {
        error: String,
        segments: i32,
        cost_micro_eur: i64,
    },
    /// No longer worth sending (the appointment changed, the number said STOP).
    Cancelled { reason: String },
}

/// The counts a new one-time code is checked against ([`StoreTx::code_limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeLimits {
    /// Codes sent to the destination within the short window, and within the day.
    pub recent: i64,
    pub today: i64,
    /// SMS the commune has used on the day.
    pub sms_used: i64,
}

/// The one-time code of a held appointment (only its keyed hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtpRecord {
    pub appointment_id: AppointmentId,
    pub destination: String,
    pub code_hash: String,
    pub expires_at: DateTime<Utc>,
    pub attempts_left: i32,
    pub used_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// Where a request with an `Idempotency-Key` stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyState {
    /// First time: run it, then record the answer.
    Started,
    /// Already answered: replay this.
    Replay { status: u16, body: String },
    /// The first request with this key is still running.
    InProgress,
    /// The key was used for a different request.
    Mismatch,
}

pub type AgentId = i64;

/// A back-office account as stored (its password only as an argon2id hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub id: AgentId,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub role: crate::domain::Role,
    /// `None` for a platform administrator, and only for them (the schema says so).
    pub commune_id: Option<CommuneId>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewAgent {
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub role: crate::domain::Role,
    pub commune_id: Option<CommuneId>,
}

/// One line of the audit log: who did what, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub commune_id: Option<CommuneId>,
    pub agent_id: Option<AgentId>,
    pub agent_email: String,
    pub at: DateTime<Utc>,
    pub action: String,
    pub detail: String,
}

/// What a commune administrator sets about their commune.
#[derive(Debug, Clone, PartialEq)]
pub struct CommuneSettings {
    pub switchboard_number: Option<String>,
    pub switchboard_hours: WeeklyHours,
    pub reminder_delay_hours: i32,
    pub quiet_start: MinuteOfDay,
    pub quiet_end: MinuteOfDay,
    pub sms_sender: String,
}

/// What the platform administrator sets about a commune.
#[derive(Debug, Clone, PartialEq)]
pub struct CommunePlatformSettings {
    pub name: String,
    pub population: i64,
    pub phone_numbers: Vec<String>,
    pub sms_daily_budget: i32,
}

/// A pending question asked by SMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmsAction {
    Cancel,
    /// Accept the replacement the commune offered.
    Accept,
}

impl SmsAction {
    pub fn as_str(self) -> &'static str {
        match self {
            SmsAction::Cancel => "cancel",
            SmsAction::Accept => "accept",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "cancel" => Some(SmsAction::Cancel),
            "accept" => Some(SmsAction::Accept),
            _ => None,
        }
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;
    async fn migrate(&self) -> Result<()>;
    /// A cheap round trip, for `/readyz`.
    async fn ping(&self) -> Result<()>;
    /// Opens a write transaction (see the module documentation).
    async fn begin(&self) -> Result<Box<dyn StoreTx>>;
    /// Reads the seats of `planning` at `location` ([`StoreTx::seats_of`]), then opens the
    /// transaction that books only if `wanted` says so of them. PostgreSQL reads them on the
    /// transaction's connection just before its `BEGIN` (the release of lapsed holds commits
    /// at once): a booking they show taken — most of them under a rush — costs one round trip
    /// instead of three. Read committed, a statement sees what was committed when it began, in
    /// a transaction or not; the transaction's locks and the schema decide, as ever. SQLite
    /// reads them in the transaction.
    async fn begin_after_seats(
        &self,
        planning: PlanningId,
        location: LocationId,
        slot: (DateTime<Utc>, DateTime<Utc>),
        now: DateTime<Utc>,
        wanted: &(dyn for<'s> Fn(Option<&'s Seats>) -> bool + Send + Sync),
    ) -> Result<(Option<Seats>, Option<Box<dyn StoreTx>>)> {
        let mut tx = self.begin().await?;
        let seats = tx.seats_of(planning, location, slot.0, slot.1, now).await?;
        let wanted = wanted(seats.as_ref());
        Ok((seats, wanted.then_some(tx)))
    }

    /// PostgreSQL: the usual hold, as the step-by-step booking would write it — the planning's
    /// seats read, the appointment on a free seat not being taken, each claim under its lock,
    /// the code's limits read under the destination's lock, the code, its message and the SMS
    /// taken from the budget — in one statement that commits: one round trip instead of eight
    /// (and one more per claim beyond the first: an e-mail, ANTS numbers).
    /// In a rush the step-by-step transaction's connection spends most of its time waiting for
    /// the next statement, and the commune's budget row stays locked across a round trip; here
    /// neither. Anything out of the ordinary is left to the step-by-step booking, nothing
    /// written ([`HeldAtOnce::StepByStep`]).
    async fn hold_at_once(&self, _hold: &HoldAtOnce<'_>) -> Result<HeldAtOnce> {
        Ok(HeldAtOnce::StepByStep)
    }
    /// Whether [`Store::hold_at_once`] can do anything: no code is prepared for it otherwise.
    fn holds_at_once(&self) -> bool {
        false
    }

    /// PostgreSQL: the usual confirmation, as the step-by-step one would write it — the
    /// appointment locked and found as read, the code used up and the appointment confirmed,
    /// the personal link, the messages — in one statement that commits: one round trip instead
    /// of six or seven. True when written; false when nothing was (a wrong or spent code, a
    /// lapsed hold, an appointment changed since it was read, a store that cannot: SQLite):
    /// the step-by-step confirmation decides.
    async fn confirm_at_once(&self, _confirm: &ConfirmAtOnce<'_>) -> Result<bool> {
        Ok(false)
    }
    /// Whether [`Store::confirm_at_once`] can do anything: no message is prepared for it
    /// otherwise.
    fn confirms_at_once(&self) -> bool {
        false
    }

    async fn insert_commune(&self, commune: &NewCommune) -> Result<CommuneId>;
    async fn communes(&self) -> Result<Vec<Commune>>;
    async fn commune(&self, id: CommuneId) -> Result<Option<Commune>>;
    async fn commune_by_slug(&self, slug: &str) -> Result<Option<Commune>>;
    /// The commune that answers calls to this E.164 number.
    async fn commune_by_phone_number(&self, number: &str) -> Result<Option<Commune>>;

    async fn insert_location(&self, location: &NewLocation) -> Result<LocationId>;
    async fn locations(&self, commune: CommuneId) -> Result<Vec<Location>>;
    async fn insert_service(&self, service: &NewService) -> Result<ServiceId>;
    async fn services(&self, commune: CommuneId) -> Result<Vec<Service>>;
    async fn service(&self, id: ServiceId) -> Result<Option<Service>>;
    async fn insert_planning(&self, planning: &NewPlanning) -> Result<PlanningId>;
    async fn plannings(&self, commune: CommuneId) -> Result<Vec<Planning>>;
    async fn insert_opening_rule(&self, rule: &NewOpeningRule) -> Result<OpeningRuleId>;
    async fn opening_rules(&self, commune: CommuneId) -> Result<Vec<OpeningRule>>;
    async fn insert_closure(&self, closure: &NewClosure) -> Result<ClosureId>;
    /// Closures of a commune overlapping `[from, to)`.
    async fn closures(
        &self,
        commune: CommuneId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Closure>>;

    /// Seats taken at `now` by appointments of the commune overlapping `[from, to)`: confirmed
    /// (or past) ones, and holds that have not expired — an expired hold stops counting by
    /// itself, whether or not anything has tidied it up yet.
    async fn occupancy(
        &self,
        commune: CommuneId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Occupied>>;
    async fn appointment(&self, id: AppointmentId) -> Result<Option<Appointment>>;
    /// Appointments of a commune starting in `[from, to)`, in start order, whatever their status.
    async fn appointments(
        &self,
        commune: CommuneId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Appointment>>;
    /// Where and when an appointment is, with names a citizen understands.
    async fn appointment_place(&self, id: AppointmentId) -> Result<Option<AppointmentPlace>>;

    /// The appointment a personal link (its SHA-256) leads to.
    async fn appointment_by_token(&self, token_hash: &str) -> Result<Option<Appointment>>;
    /// The appointment of the last confirmation, move notice or reminder sent to a number —
    /// what a reply to that SMS is about.
    async fn last_messaged_appointment(&self, phone: &str) -> Result<Option<AppointmentId>>;
    /// The next confirmed, not yet started appointment of a mobile number.
    async fn next_appointment_of_phone(
        &self,
        phone: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Appointment>>;
    /// The confirmed, not yet started appointments booked with a mobile number or an e-mail
    /// (compared without case), soonest first, at most `limit`.
    async fn upcoming_appointments_of(
        &self,
        phone: Option<&str>,
        email: Option<&str>,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Appointment>>;

    /// Records a new call (step 0) unless it is known already; true when it was new.
    #[allow(clippy::too_many_arguments)]
    async fn start_call(
        &self,
        call_sid: &str,
        commune: CommuneId,
        caller: &str,
        state: &str,
        twiml: &str,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    async fn call(&self, call_sid: &str) -> Result<Option<CallRecord>>;
    /// Claims step `seq` of a live call for the request answering it; false when another
    /// request has it or had it (a replay, a duplicate), or the call ended.
    async fn claim_call_step(&self, call_sid: &str, seq: i64, now: DateTime<Utc>) -> Result<bool>;
    /// Writes the answer to the claimed step `seq`: the new state and TwiML.
    #[allow(clippy::too_many_arguments)]
    async fn advance_call(
        &self,
        call_sid: &str,
        seq: i64,
        state: &str,
        twiml: &str,
        outcome: Option<&str>,
        spoken_name: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    /// Ends a call once (the status callback); its outcome stays if one was recorded,
    /// otherwise becomes `outcome`. Returns the call as it was, or `None` if unknown or
    /// already ended.
    async fn end_call(
        &self,
        call_sid: &str,
        outcome: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<CallRecord>>;
    async fn voice_settings(&self, commune: CommuneId) -> Result<Option<VoiceSettings>>;
    async fn set_voice_settings(&self, commune: CommuneId, settings: &VoiceSettings) -> Result<()>;

    /// Claims up to `limit` due notifications for `worker` until `lease_until`: pending ones
    /// whose time has come, and ones whose worker vanished before it started sending.
    async fn claim_notifications(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Notification>>;
    /// Notifications whose worker vanished after it started sending become `unknown`: the
    /// message may have left, so it is not sent again.
    async fn abandon_stale_sends(&self, now: DateTime<Utc>) -> Result<u64>;
    /// Records that `worker` is about to hand these messages to the provider, and renews their
    /// lease until `lease_until`; returns those it may send — not the ones whose claim has
    /// lapsed (another worker may have them). One transaction for all: on SQLite a commit costs
    /// far more than a statement, and a rush sends messages by the dozen.
    async fn start_sends(
        &self,
        ids: &[NotificationId],
        worker: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<NotificationId>>;
    /// Records how sends ended, in one transaction. An outcome whose claim has lapsed is
    /// dropped (and logged): the message is someone else's now.
    async fn finish_sends(
        &self,
        worker: &str,
        outcomes: &[(NotificationId, SendResult)],
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// [`Store::start_sends`] for one message: false if its claim has lapsed.
    async fn start_send(
        &self,
        id: NotificationId,
        worker: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<bool> {
        Ok(!self
            .start_sends(&[id], worker, now, lease_until)
            .await?
            .is_empty())
    }
    /// A delivery report: by our id (carried in the callback URL) or the provider's.
    async fn record_delivery(
        &self,
        id: Option<NotificationId>,
        provider_id: &str,
        delivery_status: &str,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    async fn notification(&self, id: NotificationId) -> Result<Option<Notification>>;
    async fn notifications_of(&self, appointment: AppointmentId) -> Result<Vec<Notification>>;
    /// Records a message sent outside the outbox (an SMS reply in TwiML), for accounting.
    async fn record_sent_message(
        &self,
        message: &NewNotification,
        segments: i32,
        cost_micro_eur: i64,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// (sent at, segments, cost) of the SMS a commune sent in `[from, to)`.
    async fn sms_sent(
        &self,
        commune: CommuneId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(DateTime<Utc>, i32, i64)>>;

    /// A random secret shared by every instance, created on first use.
    async fn shared_secret(&self, name: &str, fresh: &str) -> Result<String>;
    /// A platform setting, if it was ever written.
    async fn setting(&self, name: &str) -> Result<Option<String>>;

    async fn begin_idempotent(
        &self,
        scope: &str,
        key: &str,
        request_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<IdempotencyState>;
    async fn finish_idempotent(
        &self,
        scope: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<()>;
    /// Forgets a key whose request failed on our side, so that it can be retried.
    async fn forget_idempotent(&self, scope: &str, key: &str) -> Result<()>;

    async fn add_sms_opt_out(&self, phone: &str, now: DateTime<Utc>) -> Result<()>;

    // --- The back-office -------------------------------------------------------------------
    async fn insert_agent(&self, agent: &NewAgent, now: DateTime<Utc>) -> Result<AgentId>;
    /// An account by e-mail (compared without case).
    async fn agent_by_email(&self, email: &str) -> Result<Option<Agent>>;
    async fn agent(&self, id: AgentId) -> Result<Option<Agent>>;
    /// The accounts of a commune, or every account with `None`.
    async fn agents(&self, commune: Option<CommuneId>) -> Result<Vec<Agent>>;
    /// Deactivating an account also closes its sessions.
    async fn set_agent_active(&self, id: AgentId, active: bool) -> Result<()>;
    async fn insert_session(
        &self,
        token_hash: &str,
        agent: AgentId,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<()>;
    /// The active account a live session belongs to.
    async fn session_agent(&self, token_hash: &str, now: DateTime<Utc>) -> Result<Option<Agent>>;
    async fn delete_session(&self, token_hash: &str) -> Result<()>;
    /// Records a sign-in attempt (counted as failed until cleared) against `key` and returns
    /// the attempts since `since`, this one included (forgetting older ones, of every key).
    async fn record_signin_failure(
        &self,
        key: &str,
        now: DateTime<Utc>,
        since: DateTime<Utc>,
    ) -> Result<i64>;
    async fn signin_failures(&self, key: &str, since: DateTime<Utc>) -> Result<i64>;
    async fn clear_signin_failures(&self, key: &str) -> Result<()>;
    async fn insert_audit(&self, entry: &AuditEntry) -> Result<()>;
    /// A commune's audit log, newest first.
    async fn audit_log(&self, commune: CommuneId, limit: i64) -> Result<Vec<AuditEntry>>;
    /// Appointments of a commune whose citizen's name, mobile or e-mail contains `needle`
    /// (without case), those still to come at `now` first (soonest first), then the most
    /// recent, at most `limit`.
    async fn search_appointments(
        &self,
        commune: CommuneId,
        needle: &str,
        limit: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<Appointment>>;
    /// Calls a commune received in `[from, to)`.
    async fn calls_between(
        &self,
        commune: CommuneId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<CallRecord>>;
    async fn update_commune_settings(&self, id: CommuneId, s: &CommuneSettings) -> Result<()>;
    /// Numbers move with it: a number already answered by another commune is refused
    /// (`commune_phone_numbers_number_key`).
    async fn update_commune_platform(
        &self,
        id: CommuneId,
        s: &CommunePlatformSettings,
    ) -> Result<()>;
    async fn update_location(&self, location: &Location) -> Result<()>;
    async fn update_service(&self, service: &Service) -> Result<()>;
    async fn update_planning(&self, planning: &Planning) -> Result<()>;
    async fn update_opening_rule(&self, id: OpeningRuleId, rule: &NewOpeningRule) -> Result<()>;
    async fn delete_opening_rule(&self, id: OpeningRuleId) -> Result<()>;
    async fn delete_closure(&self, id: ClosureId) -> Result<()>;
    /// The reminders of a commune not sent yet: (notification, appointment start, when it was
    /// confirmed).
    async fn pending_reminders(
        &self,
        commune: CommuneId,
    ) -> Result<Vec<(NotificationId, DateTime<Utc>, Option<DateTime<Utc>>)>>;
    /// Moves a notification not sent yet to `due_at`, or with `None` cancels it.
    async fn reschedule(
        &self,
        id: NotificationId,
        due_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<()>;

    async fn is_sms_opted_out(&self, phone: &str) -> Result<bool>;
    async fn set_sms_conversation(
        &self,
        phone: &str,
        appointment: AppointmentId,
        action: SmsAction,
        expires_at: DateTime<Utc>,
    ) -> Result<()>;
    /// Takes (and forgets) the pending question of a number, if it has not expired.
    async fn take_sms_conversation(
        &self,
        phone: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<(AppointmentId, SmsAction)>>;
}

/// A worker's outcome found its claim gone (the lease ran out and another worker took the
/// message): nothing recorded, said in the log.
fn claim_lapsed(id: NotificationId) {
    tracing::warn!(notification = %id, "the claim lapsed before the outcome was recorded");
}

/// A write transaction. Dropping it without [`StoreTx::commit`] rolls everything back.
#[async_trait]
pub trait StoreTx: Send {
    /// Reads a planning without locking it: bookings of one planning are serialised only where
    /// they meet, on a seat at a time ([`StoreTx::lock_seat`]), and the database refuses a seat
    /// taken twice (`appointments_no_overlap`) whatever happens.
    async fn planning(&mut self, id: PlanningId) -> Result<Option<Planning>>;
    /// Turns the holds of a planning that expired by `now` into `expired`, freeing their seats.
    async fn release_expired_holds(
        &mut self,
        planning: PlanningId,
        now: DateTime<Utc>,
    ) -> Result<u64>;
    /// Seats of `planning` taken at some instant of `[start, end)`.
    async fn busy_seats(
        &mut self,
        planning: PlanningId,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<i32>>;
    /// Whether a closure of the commune, of `planning` or of `location` overlaps
    /// `[start, end)` (as [`crate::domain::Closure::closes`] decides).
    async fn closed(
        &mut self,
        commune: CommuneId,
        planning: PlanningId,
        location: LocationId,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<bool>;
    /// What a booking chooses a seat from: the planning (None if there is none), once its
    /// expired holds are released ([`StoreTx::release_expired_holds`]), its seats taken over
    /// `[start, end)` ([`StoreTx::busy_seats`]), and whether a closure covers that time at
    /// `location` ([`StoreTx::closed`]), read inside the transaction that books: a closure
    /// made a moment ago on another instance is seen. PostgreSQL answers in one statement:
    /// three round trips less, on the path of every booking.
    async fn seats_of(
        &mut self,
        planning: PlanningId,
        location: LocationId,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<Seats>> {
        let Some(found) = self.planning(planning).await? else {
            return Ok(None);
        };
        self.release_expired_holds(planning, now).await?;
        let busy = self.busy_seats(planning, start, end).await?;
        let closed = self
            .closed(found.commune_id, planning, location, start, end)
            .await?;
        Ok(Some(Seats {
            planning: found,
            busy,
            closed,
        }))
    }
    /// Reads an appointment and, on PostgreSQL, locks it.
    async fn appointment(&mut self, id: AppointmentId) -> Result<Option<Appointment>>;
    async fn insert_appointment(&mut self, appointment: &Appointment) -> Result<()>;
    /// Inserts `appointment` if its seat's lock ([`StoreTx::lock_seat`]) is taken at once;
    /// false, nothing written, when another transaction holds it (or the lock had to be waited
    /// for: the seat may be gone). PostgreSQL: one statement, the lock taken before the row is.
    async fn insert_appointment_on_free_seat(&mut self, appointment: &Appointment) -> Result<bool> {
        let seat = appointment.seat.unwrap_or_default();
        let waited = self
            .lock_seat(
                appointment.planning_id,
                seat,
                appointment.starts_at,
                appointment.ends_at,
            )
            .await?;
        if waited {
            return Ok(false);
        }
        self.insert_appointment(appointment).await?;
        Ok(true)
    }
    /// Writes every mutable field of an existing appointment.
    async fn update_appointment(&mut self, appointment: &Appointment) -> Result<()>;
    /// Records that `appointment` holds `claim`, first deleting the claims on that identity
    /// whose appointments are no longer active at `now`. Returns an appointment whose claim
    /// conflicts (in another commune, or in this one when either claim is exclusive) instead.
    /// Claims on one identity are decided one transaction at a time; the schema backs this up
    /// (`citizen_claims_conflict` trigger on SQLite; an exclusion constraint across communes and
    /// a unique index on exclusive claims on PostgreSQL).
    /// With `destination`, the lock of a code's destination ([`StoreTx::lock_destination`]) is
    /// taken too, after the claim's (PostgreSQL: in the same statement).
    async fn claim(
        &mut self,
        claim: &Claim,
        holder: &ClaimHolder,
        destination: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<AppointmentId>>;
    async fn release_claims(&mut self, appointment: AppointmentId) -> Result<()>;
    async fn transfer_claims(&mut self, from: AppointmentId, to: AppointmentId) -> Result<()>;
    /// Writes a notification; false if its `dedupe_key` was already used (nothing written).
    async fn enqueue(&mut self, notification: &NewNotification, now: DateTime<Utc>)
    -> Result<bool>;
    /// Cancels the notifications of an appointment that have not left yet.
    async fn cancel_pending(
        &mut self,
        appointment: AppointmentId,
        kinds: &[NotificationKind],
        now: DateTime<Utc>,
    ) -> Result<u64>;
    /// PostgreSQL: serialises, until the end of the transaction, the transactions that put
    /// overlapping appointments on one seat. Without it, two such inserts can each wait for the
    /// other in `appointments_no_overlap`'s check — a deadlock, found only after a second.
    /// True when it had to wait for another transaction: the seats read before may have
    /// changed.
    async fn lock_seat(
        &mut self,
        planning: PlanningId,
        seat: i32,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<bool>;
    /// PostgreSQL: serialises the sends to one destination until the end of the transaction
    /// (so that "at most 3 codes in 10 minutes" holds under concurrency).
    async fn lock_destination(&mut self, destination: &str) -> Result<()>;
    /// Notifications of `kind` created for `destination` since `recent` and since `day` (the
    /// short and the long window of a limit, in one read).
    async fn count_sent_to(
        &mut self,
        destination: &str,
        kind: NotificationKind,
        recent: DateTime<Utc>,
        day: DateTime<Utc>,
    ) -> Result<(i64, i64)>;
    /// What a new code is checked against, in one read: [`StoreTx::count_sent_to`] for
    /// codes, and the SMS the commune has used on `day` (its local date), read without taking
    /// one nor locking anything.
    async fn code_limits(
        &mut self,
        destination: &str,
        recent: DateTime<Utc>,
        day_ago: DateTime<Utc>,
        commune: CommuneId,
        day: NaiveDate,
    ) -> Result<CodeLimits>;
    /// Takes one code SMS from the commune's budget for `day` (its local date); false when the
    /// budget is spent. On PostgreSQL the commune's counter stays locked until the transaction
    /// ends: take it last.
    async fn take_sms_budget(
        &mut self,
        commune: CommuneId,
        day: NaiveDate,
        budget: i32,
    ) -> Result<bool>;
    async fn put_otp(&mut self, otp: &OtpRecord) -> Result<()>;
    /// Writes a new one-time code ([`StoreTx::put_otp`]) and its message
    /// ([`StoreTx::enqueue`]), and for an SMS takes it from the commune's budget of `budget.1`
    /// ([`StoreTx::take_sms_budget`]): false when the budget is spent — the caller undoes the
    /// rest. PostgreSQL writes the three in one statement.
    async fn put_code(
        &mut self,
        otp: &OtpRecord,
        message: &NewNotification,
        budget: Option<(CommuneId, NaiveDate, i32)>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.put_otp(otp).await?;
        self.enqueue(message, now).await?;
        match budget {
            Some((commune, day, budget)) => self.take_sms_budget(commune, day, budget).await,
            None => Ok(true),
        }
    }
    async fn otp(&mut self, appointment: AppointmentId) -> Result<Option<OtpRecord>>;
    /// Uses up the appointment's one-time code if `code_hash` is its hash and it is still
    /// good (unused, unexpired at `now`, tries left): true. False, nothing changed, otherwise
    /// — the caller reads the code to say why.
    async fn use_otp(
        &mut self,
        appointment: AppointmentId,
        code_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    /// Writes `appointment` (as [`StoreTx::update_appointment`]) once its one-time code is used
    /// up ([`StoreTx::use_otp`]): true. False, nothing changed, when `code_hash` is not its
    /// code's or the code is no longer good. PostgreSQL: one statement.
    async fn update_with_otp(
        &mut self,
        appointment: &Appointment,
        code_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        if !self.use_otp(appointment.id, code_hash, now).await? {
            return Ok(false);
        }
        self.update_appointment(appointment).await?;
        Ok(true)
    }
    async fn insert_manage_token(
        &mut self,
        token_hash: &str,
        appointment: AppointmentId,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// The links of a moved appointment lead to its replacement.
    async fn move_manage_tokens(&mut self, from: AppointmentId, to: AppointmentId) -> Result<()>;
    /// Asks the number a question whose answer (OUI) acts on `appointment`.
    async fn set_sms_conversation(
        &mut self,
        phone: &str,
        appointment: AppointmentId,
        action: SmsAction,
        expires_at: DateTime<Utc>,
    ) -> Result<()>;
    async fn commit(self: Box<Self>) -> Result<()>;
    /// Undoes the transaction now. Dropping it undoes it too, but on PostgreSQL the ROLLBACK
    /// leaves from a task the pool spawns when the connection comes back to it: the locks are
    /// held until that task has run.
    async fn rollback(self: Box<Self>) -> Result<()>;
}

/// SQL shared by both backends: `$n` placeholders work on SQLite too, and the schemas use the
/// same names, so only locking, typing of instants and error codes differ.
mod sql {
    macro_rules! commune_columns {
        () => {
            "SELECT id, slug, name, insee_code, timezone, population, switchboard_number, switchboard_hours, \
             reminder_delay_hours, quiet_start_minute, quiet_end_minute, sms_sender, \
             allow_multiple_per_category, sms_daily_budget, allow_foreign_mobiles, (SELECT string_agg(n.number, ',' ORDER BY n.number) \
             FROM commune_phone_numbers n WHERE n.commune_id = communes.id) AS phone_numbers FROM communes"
        };
    }
    pub const COMMUNES: &str = concat!(commune_columns!(), " ORDER BY name");
    pub const COMMUNE: &str = concat!(commune_columns!(), " WHERE id = $1");
    pub const COMMUNE_BY_SLUG: &str = concat!(commune_columns!(), " WHERE slug = $1");
    pub const INSERT_COMMUNE: &str = "INSERT INTO communes (slug, name, insee_code, timezone, population, \
        switchboard_number, switchboard_hours, reminder_delay_hours, quiet_start_minute, quiet_end_minute, \
        sms_sender, allow_multiple_per_category, sms_daily_budget, allow_foreign_mobiles, created_at) \
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING id";
    pub const INSERT_PHONE_NUMBER: &str =
        "INSERT INTO commune_phone_numbers (number, commune_id) VALUES ($1, $2)";
    pub const COMMUNE_OF_NUMBER: &str =
        "SELECT commune_id FROM commune_phone_numbers WHERE number = $1";

    pub const INSERT_LOCATION: &str = "INSERT INTO locations (commune_id, name, address, postcode, city, access_notes) \
        VALUES ($1, $2, $3, $4, $5, $6) RETURNING id";
    pub const LOCATIONS: &str = "SELECT id, commune_id, name, address, postcode, city, access_notes, active \
        FROM locations WHERE commune_id = $1 ORDER BY id";

    macro_rules! service_columns {
        () => {
            "SELECT id, commune_id, name, spoken_name, category, duration_minutes, max_persons, \
             min_notice_minutes, horizon_days, channel_web, channel_phone, channel_agent, what_to_bring, active \
             FROM services"
        };
    }
    pub const SERVICES: &str = concat!(service_columns!(), " WHERE commune_id = $1 ORDER BY id");
    pub const SERVICE: &str = concat!(service_columns!(), " WHERE id = $1");
    pub const INSERT_SERVICE: &str = "INSERT INTO services (commune_id, name, spoken_name, category, duration_minutes, \
        max_persons, min_notice_minutes, horizon_days, channel_web, channel_phone, channel_agent, what_to_bring) \
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id";

    pub const INSERT_PLANNING: &str =
        "INSERT INTO plannings (commune_id, name, capacity) VALUES ($1, $2, $3) RETURNING id";
    pub const PLANNINGS: &str = "SELECT id, commune_id, name, capacity, active FROM plannings \
        WHERE commune_id = $1 ORDER BY id";
    pub const PLANNING: &str =
        "SELECT id, commune_id, name, capacity, active FROM plannings WHERE id = $1";

    pub const INSERT_RULE: &str = "INSERT INTO opening_rules (planning_id, location_id, weekdays, start_minute, \
        end_minute, step_minutes, valid_from, valid_until) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id";
    pub const INSERT_RULE_SERVICE: &str =
        "INSERT INTO opening_rule_services (rule_id, service_id) VALUES ($1, $2)";
    /// One row per rule, its services aggregated (`string_agg` exists in both databases).
    pub const RULES: &str = "SELECT r.id, r.planning_id, r.location_id, r.weekdays, r.start_minute, r.end_minute, \
        r.step_minutes, r.valid_from, r.valid_until, (SELECT string_agg(CAST(rs.service_id AS TEXT), ',' \
        ORDER BY rs.service_id) FROM opening_rule_services rs WHERE rs.rule_id = r.id) AS service_ids \
        FROM opening_rules r JOIN plannings p ON p.id = r.planning_id WHERE p.commune_id = $1 ORDER BY r.id";

    pub const INSERT_CLOSURE: &str = "INSERT INTO closures (commune_id, planning_id, location_id, starts_at, ends_at, reason) \
        VALUES ($1, $2, $3, $4, $5, $6) RETURNING id";
    pub const CLOSURES: &str = "SELECT id, commune_id, planning_id, location_id, starts_at, ends_at, reason \
        FROM closures WHERE commune_id = $1 AND starts_at < $3 AND ends_at > $2 ORDER BY starts_at, id";

    /// The seats taken over a span ([`occupied_in_span`]).
    pub const OCCUPANCY: &str = concat!(
        "SELECT planning_id, seat, starts_at, ends_at ",
        occupied_in_span!()
    );

    macro_rules! appointment_columns {
        () => {
            "SELECT id, commune_id, planning_id, location_id, service_id, starts_at, ends_at, seat, persons, \
             citizen_name, phone, email, ants_ids, channel, status, hold_expires_at, replaces_id, \
             cancel_reason, version, created_at, updated_at, confirmed_at, cancelled_at FROM appointments"
        };
    }
    pub const APPOINTMENT: &str = concat!(appointment_columns!(), " WHERE id = $1");
    pub const APPOINTMENT_FOR_UPDATE: &str =
        concat!(appointment_columns!(), " WHERE id = $1 FOR UPDATE");
    pub const APPOINTMENTS: &str = concat!(
        appointment_columns!(),
        " WHERE commune_id = $1 AND starts_at >= $2 AND starts_at < $3 ORDER BY starts_at, id"
    );
    pub const INSERT_APPOINTMENT: &str = "INSERT INTO appointments (id, commune_id, planning_id, location_id, \
        service_id, starts_at, ends_at, seat, persons, citizen_name, phone, email, ants_ids, channel, status, \
        hold_expires_at, replaces_id, cancel_reason, version, created_at, updated_at, confirmed_at, cancelled_at, \
        search_name) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
        $19, $20, $21, $22, $23, $24)";
    pub const UPDATE_APPOINTMENT: &str = "UPDATE appointments SET planning_id = $2, location_id = $3, \
        starts_at = $4, ends_at = $5, seat = $6, persons = $7, citizen_name = $8, phone = $9, email = $10, \
        ants_ids = $11, status = $12, hold_expires_at = $13, cancel_reason = $14, version = $15, \
        updated_at = $16, confirmed_at = $17, cancelled_at = $18, search_name = $19 WHERE id = $1";
    pub const APPOINTMENT_PLACE: &str = "SELECT a.id, c.name AS commune_name, c.slug AS commune_slug, \
        l.name AS location_name, l.address || ', ' || l.postcode || ' ' || l.city AS location_address, \
        s.name AS service_name, a.starts_at, c.timezone FROM appointments a \
        JOIN communes c ON c.id = a.commune_id JOIN locations l ON l.id = a.location_id \
        JOIN services s ON s.id = a.service_id WHERE a.id = $1";

    pub const RELEASE_EXPIRED: &str = "UPDATE appointments SET status = 'expired', seat = NULL, \
        version = version + 1, updated_at = $2 \
        WHERE planning_id = $1 AND status = 'held' AND hold_expires_at <= $2";
    /// `$4`: [`super::looked_back_from`] `$2`.
    pub const BUSY_SEATS: &str = "SELECT seat FROM appointments WHERE planning_id = $1 AND seat IS NOT NULL \
        AND starts_at < $3 AND ends_at > $2 AND starts_at > $4";
    /// PostgreSQL only (a data-modifying `WITH`): [`RELEASE_EXPIRED`] and [`BUSY_SEATS`]
    /// with the planning, `$4` now, `$5` the location, `$6` [`super::looked_back_from`] `$2`. The query sees the rows as they were when it began: the
    /// holds it releases are left out by id, and so are holds expired by then that another
    /// transaction was releasing meanwhile (the release skips those once it has waited for it).
    /// Should one of them still sit on its seat — or an appointment committed after the query
    /// began, which it does not see — the schema refuses the insert and the booking runs again.
    pub const SEATS_OF: &str = "WITH released AS (UPDATE appointments SET status = 'expired', seat = NULL, \
            version = version + 1, updated_at = $4 \
            WHERE planning_id = $1 AND status = 'held' AND hold_expires_at <= $4 RETURNING id) \
        SELECT p.id, p.commune_id, p.name, p.capacity, p.active, \
            ARRAY(SELECT a.seat FROM appointments a WHERE a.planning_id = $1 AND a.seat IS NOT NULL \
                AND a.starts_at < $3 AND a.ends_at > $2 AND a.starts_at > $6 \
                AND NOT (a.status = 'held' AND a.hold_expires_at <= $4) \
                AND a.id NOT IN (SELECT id FROM released)), \
            EXISTS (SELECT 1 FROM closures c WHERE c.commune_id = p.commune_id \
                AND (c.planning_id IS NULL OR c.planning_id = $1) \
                AND (c.location_id IS NULL OR c.location_id = $5) \
                AND c.starts_at < $3 AND c.ends_at > $2) \
        FROM plannings p WHERE p.id = $1";
    /// `$1` commune, `$2` planning, `$3` location, `$4`..`$5` the slot.
    pub const CLOSED: &str = "SELECT COUNT(*) FROM closures WHERE commune_id = $1 \
        AND (planning_id IS NULL OR planning_id = $2) AND (location_id IS NULL OR location_id = $3) \
        AND starts_at < $5 AND ends_at > $4";

    /// `$4` is now: a claim is stale when its appointment is neither a live hold nor a
    /// confirmed appointment still to come.
    macro_rules! delete_stale_claim {
        () => {
            "DELETE FROM citizen_claims WHERE category = $1 AND kind = $2 AND key = $3 \
             AND NOT EXISTS (SELECT 1 FROM appointments a WHERE a.id = citizen_claims.appointment_id \
                 AND ((a.status = 'held' AND a.hold_expires_at > $4) OR (a.status = 'confirmed' AND a.ends_at > $4)))"
        };
    }
    pub const DELETE_STALE_CLAIM: &str = delete_stale_claim!();
    /// PostgreSQL only: [`DELETE_STALE_CLAIM`] and the lock of the identity (`$5`), then that of
    /// a destination (`$6`, none when null), in one statement (a data-modifying `WITH` always
    /// runs; the locks are taken by the time it ends, in that order).
    pub const DELETE_STALE_CLAIM_LOCKED: &str = concat!(
        "WITH stale AS (",
        delete_stale_claim!(),
        " RETURNING 1) SELECT pg_advisory_xact_lock(",
        lock_id!("$5"),
        "), pg_advisory_xact_lock(",
        lock_id!("$6"),
        "), (SELECT count(*) FROM stale)"
    );
    /// The claims on an identity that conflict with ours: another appointment's claim in another
    /// commune, or where either side is exclusive (`$4` our appointment, `$5` our commune, `$6`
    /// whether ours is exclusive).
    macro_rules! conflicting_claims {
        () => {
            "FROM citizen_claims WHERE category = $1 AND kind = $2 AND key = $3 \
             AND appointment_id <> $4 AND (commune_id <> $5 OR exclusive OR $6)"
        };
    }
    /// The claim, unless another one conflicts: one statement in the usual case, where nobody
    /// else holds the identity. Inserting twice for the same appointment is a no-op.
    pub const INSERT_CLAIM: &str = concat!(
        "INSERT INTO citizen_claims (category, kind, key, appointment_id, commune_id, exclusive) \
         SELECT $1, $2, $3, $4, $5, $6 WHERE NOT EXISTS (SELECT 1 ",
        conflicting_claims!(),
        ") ON CONFLICT DO NOTHING"
    );
    /// Another appointment whose claim on the identity conflicts with ours.
    pub const CONFLICTING_CLAIM: &str =
        concat!("SELECT appointment_id ", conflicting_claims!(), " LIMIT 1");
    pub const RELEASE_CLAIMS: &str = "DELETE FROM citizen_claims WHERE appointment_id = $1";
    pub const TRANSFER_CLAIMS: &str =
        "UPDATE citizen_claims SET appointment_id = $2 WHERE appointment_id = $1";

    macro_rules! notification_columns {
        () => {
            "SELECT id, commune_id, appointment_id, kind, channel, destination, dedupe_key, subject, body, \
             html, ics, due_at, status, attempts, provider_id, delivery_status, segments, cost_micro_eur, \
             last_error, created_at, sent_at FROM notifications"
        };
    }
    pub const NOTIFICATION: &str = concat!(notification_columns!(), " WHERE id = $1");
    pub const NOTIFICATIONS_OF: &str = concat!(
        notification_columns!(),
        " WHERE appointment_id = $1 ORDER BY created_at, kind, channel"
    );
    /// Claimed rows come back whole. `$1` worker, `$2` now, `$3` lease end, `$4` how many.
    /// The `status IN` term is what lets SQLite use the partial index `notifications_due`
    /// (it does not infer it from the two cases): without it every claim scanned the whole
    /// table, inside the writer's turn. A row left `sending` was due when it was claimed.
    macro_rules! claim_notifications {
        ($lock:literal) => {
            concat!(
                "UPDATE notifications SET status = 'sending', claimed_by = $1, lease_until = $3, \
                 attempts = attempts + 1, send_started_at = NULL, updated_at = $2 \
                 WHERE id IN (SELECT id FROM notifications \
                 WHERE status IN ('pending', 'sending') AND due_at <= $2 \
                 AND (status = 'pending' OR (lease_until < $2 AND send_started_at IS NULL)) \
                 ORDER BY due_at LIMIT $4",
                $lock,
                ") RETURNING id, commune_id, appointment_id, kind, channel, destination, dedupe_key, subject, \
                 body, html, ics, due_at, status, attempts, provider_id, delivery_status, segments, \
                 cost_micro_eur, last_error, created_at, sent_at"
            )
        };
    }
    pub const CLAIM_NOTIFICATIONS: &str = claim_notifications!("");
    pub const CLAIM_NOTIFICATIONS_SKIP_LOCKED: &str =
        claim_notifications!(" FOR UPDATE SKIP LOCKED");
    pub const INSERT_NOTIFICATION: &str = "INSERT INTO notifications (id, commune_id, appointment_id, kind, channel, \
        destination, dedupe_key, subject, body, html, ics, due_at, status, created_at, updated_at) \
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'pending', $13, $13) ON CONFLICT DO NOTHING";
    pub const INSERT_SENT_MESSAGE: &str = "INSERT INTO notifications (id, commune_id, appointment_id, kind, \
        channel, destination, dedupe_key, subject, body, html, ics, due_at, status, segments, cost_micro_eur, \
        created_at, updated_at, sent_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'sent', \
        $13, $14, $15, $15, $15)";
    pub const CANCEL_PENDING: &str = "UPDATE notifications SET status = 'cancelled', updated_at = $3, \
        last_error = 'appointment changed before sending' \
        WHERE appointment_id = $1 AND kind = $2 AND status = 'pending'";
    /// `$3` the start of the short window, `$4` of the long one (the earlier).
    pub const COUNT_SENT_TO: &str = "SELECT COALESCE(SUM(CASE WHEN created_at >= $3 THEN 1 ELSE 0 END), 0), \
        COUNT(*) FROM notifications WHERE destination = $1 AND kind = $2 AND created_at >= $4";
    /// One statement: the day's row is created with this SMS, or counts it while under `$3`.
    /// [`COUNT_SENT_TO`] for codes, and the SMS commune `$5` used on day `$6`.
    pub const CODE_LIMITS: &str = "SELECT COALESCE(SUM(CASE WHEN created_at >= $2 THEN 1 ELSE 0 END), 0), \
        COUNT(*), CAST(COALESCE((SELECT sent FROM sms_daily_usage WHERE commune_id = $4 AND day = $5), 0) AS BIGINT) \
        FROM notifications WHERE destination = $1 AND kind = 'code' AND created_at >= $3";
    pub const TAKE_SMS_BUDGET: &str = "INSERT INTO sms_daily_usage (commune_id, day, sent) \
        VALUES ($1, $2, 1) ON CONFLICT (commune_id, day) DO UPDATE SET sent = sms_daily_usage.sent + 1 \
        WHERE sms_daily_usage.sent < $3";
    /// `$1` now. An SMS whose worker vanished after it started sending may have left: it
    /// becomes `unknown`. An e-mail may be sent again: it goes back to the queue.
    pub const ABANDON_STALE_SENDS: &str = "UPDATE notifications SET \
        status = CASE WHEN channel = 'sms' THEN 'unknown' ELSE 'pending' END, \
        claimed_by = CASE WHEN channel = 'sms' THEN claimed_by ELSE NULL END, \
        send_started_at = CASE WHEN channel = 'sms' THEN send_started_at ELSE NULL END, \
        lease_until = NULL, updated_at = $1, last_error = 'the worker stopped while sending' \
        WHERE status = 'sending' AND lease_until < $1 AND send_started_at IS NOT NULL";
    /// Only while the claim lasts, and it renews the lease (`$4`) for the send itself.
    pub const START_SEND: &str = "UPDATE notifications SET send_started_at = $3, lease_until = $4, \
        updated_at = $3 WHERE id = $1 AND claimed_by = $2 AND status = 'sending' AND lease_until > $3";
    /// PostgreSQL: [`START_SEND`] for every id of array `$1`, answering the ids started.
    pub const START_SENDS_AT_ONCE: &str = "UPDATE notifications SET send_started_at = $3, lease_until = $4, \
        updated_at = $3 WHERE id = ANY($1) AND claimed_by = $2 AND status = 'sending' AND lease_until > $3 \
        RETURNING id";
    /// PostgreSQL: [`FINISH_SENT`] for rows given as arrays (`$3` ids, `$4` provider ids, `$5`
    /// segments, `$6` costs, `$7` bodies), by worker `$1` at `$2`; answers the ids recorded.
    pub const FINISH_SENT_AT_ONCE: &str = "UPDATE notifications AS n SET status = 'sent', \
        provider_id = v.provider_id, segments = v.segments, cost_micro_eur = v.cost, sent_at = $2, \
        updated_at = $2, lease_until = NULL, body = v.body \
        FROM UNNEST($3::uuid[], $4::text[], $5::int4[], $6::int8[], $7::text[]) \
            AS v(id, provider_id, segments, cost, body) \
        WHERE n.id = v.id AND n.claimed_by = $1 AND n.status = 'sending' RETURNING n.id";
    /// `$7` the body with its secrets (code, personal link) masked: sent is sent.
    pub const FINISH_SENT: &str = "UPDATE notifications SET status = 'sent', provider_id = $3, segments = $4, \
        cost_micro_eur = $5, sent_at = $6, updated_at = $6, lease_until = NULL, body = $7 \
        WHERE id = $1 AND claimed_by = $2 AND status = 'sending'";
    pub const FINISH_RETRY: &str = "UPDATE notifications SET status = 'pending', due_at = $3, last_error = $4, \
        updated_at = $5, lease_until = NULL, claimed_by = NULL, send_started_at = NULL \
        WHERE id = $1 AND claimed_by = $2 AND status = 'sending'";
    /// `$3` the final status (failed, unknown, cancelled); `$5`, `$6` the segments and cost a
    /// message whose fate is unknown may have cost.
    pub const FINISH_OTHER: &str = "UPDATE notifications SET status = $3, last_error = $4, segments = $5, \
        cost_micro_eur = $6, updated_at = $7, lease_until = NULL \
        WHERE id = $1 AND claimed_by = $2 AND status = 'sending'";
    /// Where a provider's message status comes in the order a message goes through them
    /// (accepted or queued, sending, sent, then a final one): reports may arrive out of
    /// order, and a late "sent" must not take a "delivered" back.
    macro_rules! delivery_rank {
        ($status:literal) => {
            concat!(
                "(CASE ",
                $status,
                " WHEN 'sending' THEN 2 WHEN 'sent' THEN 3 \
                 WHEN 'delivered' THEN 4 WHEN 'undelivered' THEN 4 WHEN 'failed' THEN 4 \
                 WHEN 'canceled' THEN 4 WHEN 'read' THEN 5 ELSE 1 END)"
            )
        };
    }
    /// A report settles a message whose fate was unknown: the provider had it. Only "failed"
    /// (never sent on, not charged) makes it failed; "undelivered" was sent, and paid for.
    macro_rules! record_delivery {
        ($where:literal) => {
            concat!(
                "UPDATE notifications SET delivery_status = CASE WHEN delivery_status IS NULL OR ",
                delivery_rank!("$3"),
                " >= ",
                delivery_rank!("delivery_status"),
                " THEN $3 ELSE delivery_status END, provider_id = COALESCE(provider_id, $2), \
                 last_error = COALESCE($4, last_error), \
                 status = CASE WHEN status = 'unknown' THEN \
                   (CASE WHEN $3 = 'failed' THEN 'failed' ELSE 'sent' END) ELSE status END, \
                 sent_at = CASE WHEN status = 'unknown' AND sent_at IS NULL THEN $5 ELSE sent_at END, \
                 updated_at = $5 WHERE ",
                $where
            )
        };
    }
    pub const RECORD_DELIVERY_BY_ID: &str = record_delivery!("id = $1");
    pub const RECORD_DELIVERY_BY_PROVIDER_ID: &str =
        record_delivery!("provider_id = $2 AND $1 IS NULL");
    pub const SMS_SENT: &str = "SELECT COALESCE(sent_at, created_at), COALESCE(segments, 0), \
        COALESCE(cost_micro_eur, 0) FROM notifications WHERE commune_id = $1 AND channel = 'sms' \
        AND status IN ('sent', 'unknown') AND COALESCE(sent_at, created_at) >= $2 \
        AND COALESCE(sent_at, created_at) < $3";

    pub const PUT_OTP: &str = "INSERT INTO otp_codes (appointment_id, destination, code_hash, expires_at, \
        attempts_left, used_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
        ON CONFLICT (appointment_id) DO UPDATE SET destination = excluded.destination, \
        code_hash = excluded.code_hash, expires_at = excluded.expires_at, \
        attempts_left = excluded.attempts_left, used_at = excluded.used_at, created_at = excluded.created_at";
    /// `$1` the appointment, `$2` the hash of the code given, `$3` now.
    pub const USE_OTP: &str = "UPDATE otp_codes SET used_at = $3 WHERE appointment_id = $1 \
        AND code_hash = $2 AND used_at IS NULL AND expires_at > $3 AND attempts_left > 0";
    pub const OTP: &str = "SELECT appointment_id, destination, code_hash, expires_at, attempts_left, used_at, \
        created_at FROM otp_codes WHERE appointment_id = $1";

    pub const INSERT_TOKEN: &str =
        "INSERT INTO manage_tokens (token_hash, appointment_id, created_at) VALUES ($1, $2, $3)";
    pub const MOVE_TOKENS: &str =
        "UPDATE manage_tokens SET appointment_id = $2 WHERE appointment_id = $1";
    pub const APPOINTMENT_BY_TOKEN: &str = concat!(
        appointment_columns!(),
        " WHERE id = (SELECT appointment_id FROM manage_tokens WHERE token_hash = $1)"
    );
    pub const NEXT_APPOINTMENT_OF_PHONE: &str = concat!(
        appointment_columns!(),
        " WHERE phone = $1 AND status = 'confirmed' AND starts_at > $2 ORDER BY starts_at LIMIT 1"
    );

    pub const UPCOMING_APPOINTMENTS_OF: &str = concat!(
        appointment_columns!(),
        " WHERE (phone = $1 OR lower(email) = lower($2)) AND status = 'confirmed' \
        AND starts_at > $3 ORDER BY starts_at LIMIT $4"
    );

    pub const START_CALL: &str = "INSERT INTO calls (call_sid, commune_id, caller, seq, state, \
        last_twiml, started_at, updated_at) VALUES ($1, $2, $3, 0, $4, $5, $6, $6) \
        ON CONFLICT (call_sid) DO NOTHING";
    pub const CALL: &str = "SELECT call_sid, commune_id, caller, seq, answered, state, last_twiml, \
        outcome, spoken_name, started_at, ended_at FROM calls WHERE call_sid = $1";
    pub const CLAIM_CALL_STEP: &str = "UPDATE calls SET seq = seq + 1, updated_at = $3 \
        WHERE call_sid = $1 AND seq = $2 AND answered = $2 AND ended_at IS NULL";
    pub const ADVANCE_CALL: &str = "UPDATE calls SET answered = seq, state = $3, last_twiml = $4, \
        outcome = $5, spoken_name = COALESCE($6, spoken_name), updated_at = $7 \
        WHERE call_sid = $1 AND seq = $2 + 1";
    pub const END_CALL: &str = "UPDATE calls SET ended_at = $3, outcome = COALESCE(outcome, $2), \
        updated_at = $3 WHERE call_sid = $1 AND ended_at IS NULL RETURNING call_sid, commune_id, \
        caller, seq, answered, state, last_twiml, outcome, spoken_name, started_at, ended_at";
    pub const VOICE_SETTINGS: &str =
        "SELECT voice, language, flow FROM commune_voice WHERE commune_id = $1";
    pub const SET_VOICE_SETTINGS: &str = "INSERT INTO commune_voice (commune_id, voice, language, \
        flow) VALUES ($1, $2, $3, $4) ON CONFLICT (commune_id) DO UPDATE SET voice = $2, \
        language = $3, flow = $4";

    pub const LAST_MESSAGED_APPOINTMENT: &str = "SELECT appointment_id FROM notifications \
        WHERE destination = $1 AND channel = 'sms' AND appointment_id IS NOT NULL \
        AND kind IN ('confirmation', 'moved', 'reminder') AND status IN ('sent', 'unknown') \
        ORDER BY COALESCE(sent_at, created_at) DESC LIMIT 1";
    pub const INSERT_SETTING: &str =
        "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING";
    pub const SETTING: &str = "SELECT value FROM settings WHERE name = $1";

    /// Keys older than a day go (their answers may hold a personal token); so does a key whose
    /// first request never finished (the client gave up, the instance died) after a minute.
    pub const DELETE_OLD_KEYS: &str = "DELETE FROM idempotency_keys WHERE created_at < $1 \
        OR (scope = $2 AND key = $3 AND status_code IS NULL AND created_at < $4)";
    pub const INSERT_KEY: &str = "INSERT INTO idempotency_keys (scope, key, request_hash, created_at) \
        VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";
    pub const KEY: &str = "SELECT request_hash, status_code, response FROM idempotency_keys \
        WHERE scope = $1 AND key = $2";
    pub const FINISH_KEY: &str =
        "UPDATE idempotency_keys SET status_code = $3, response = $4 WHERE scope = $1 AND key = $2";
    pub const FORGET_KEY: &str = "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2";

    pub const INSERT_OPT_OUT: &str =
        "INSERT INTO sms_opt_outs (phone, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING";
    pub const OPT_OUT: &str = "SELECT COUNT(*) FROM sms_opt_outs WHERE phone = $1";
    pub const PUT_CONVERSATION: &str = "INSERT INTO sms_conversations (phone, appointment_id, action, expires_at) \
        VALUES ($1, $2, $3, $4) ON CONFLICT (phone) DO UPDATE SET appointment_id = excluded.appointment_id, \
        action = excluded.action, expires_at = excluded.expires_at";
    macro_rules! agent_columns {
        () => {
            "SELECT id, email, name, password_hash, role, commune_id, active, created_at FROM agents"
        };
    }
    pub const INSERT_AGENT: &str = "INSERT INTO agents (email, name, password_hash, role, commune_id, \
        created_at) VALUES (lower($1), $2, $3, $4, $5, $6) RETURNING id";
    pub const AGENT_BY_EMAIL: &str = concat!(agent_columns!(), " WHERE email = lower($1)");
    pub const AGENT: &str = concat!(agent_columns!(), " WHERE id = $1");
    pub const AGENTS_OF: &str = concat!(agent_columns!(), " WHERE commune_id = $1 ORDER BY email");
    pub const ALL_AGENTS: &str = concat!(
        agent_columns!(),
        " ORDER BY commune_id IS NOT NULL, commune_id, email"
    );
    pub const SET_AGENT_ACTIVE: &str = "UPDATE agents SET active = $2 WHERE id = $1";
    pub const DELETE_AGENT_SESSIONS: &str = "DELETE FROM agent_sessions WHERE agent_id = $1";
    pub const INSERT_SESSION: &str = "INSERT INTO agent_sessions (token_hash, agent_id, created_at, \
        expires_at) VALUES ($1, $2, $3, $4)";
    pub const SESSION_AGENT: &str = "SELECT a.id, a.email, a.name, a.password_hash, a.role, \
        a.commune_id, a.active, a.created_at FROM agent_sessions s JOIN agents a ON a.id = s.agent_id \
        WHERE s.token_hash = $1 AND s.expires_at > $2 AND a.active";
    pub const DELETE_SESSION: &str = "DELETE FROM agent_sessions WHERE token_hash = $1";
    /// Every key's old failures go, so that guesses at made-up e-mails do not pile up.
    pub const FORGET_OLD_FAILURES: &str = "DELETE FROM signin_failures WHERE at < $1";
    pub const INSERT_FAILURE: &str = "INSERT INTO signin_failures (key, at) VALUES ($1, $2)";
    pub const COUNT_FAILURES: &str =
        "SELECT COUNT(*) FROM signin_failures WHERE key = $1 AND at >= $2";
    pub const CLEAR_FAILURES: &str = "DELETE FROM signin_failures WHERE key = $1";
    pub const INSERT_AUDIT: &str = "INSERT INTO audit_log (commune_id, agent_id, agent_email, at, \
        action, detail) VALUES ($1, $2, $3, $4, $5, $6)";
    pub const AUDIT_LOG: &str = "SELECT commune_id, agent_id, agent_email, at, action, detail \
        FROM audit_log WHERE commune_id = $1 ORDER BY at DESC, id DESC LIMIT $2";
    /// `$2` a LIKE pattern, already lower-case with its wildcards escaped, `$5` the same of the
    /// folded text (see `search_name`); `$4` now.
    pub const SEARCH_APPOINTMENTS: &str = concat!(
        appointment_columns!(),
        " WHERE commune_id = $1 AND status NOT IN ('expired', 'moved') \
        AND (search_name LIKE $5 ESCAPE '\\' OR phone LIKE $2 ESCAPE '\\' \
        OR lower(email) LIKE $2 ESCAPE '\\') \
        ORDER BY CASE WHEN starts_at >= $4 THEN 0 ELSE 1 END, \
        CASE WHEN starts_at >= $4 THEN starts_at END, starts_at DESC LIMIT $3"
    );
    pub const CALLS_BETWEEN: &str = "SELECT call_sid, commune_id, caller, seq, answered, state, \
        last_twiml, outcome, spoken_name, started_at, ended_at FROM calls \
        WHERE commune_id = $1 AND started_at >= $2 AND started_at < $3 ORDER BY started_at";
    pub const UPDATE_COMMUNE_SETTINGS: &str = "UPDATE communes SET switchboard_number = $2, \
        switchboard_hours = $3, reminder_delay_hours = $4, quiet_start_minute = $5, \
        quiet_end_minute = $6, sms_sender = $7 WHERE id = $1";
    pub const UPDATE_COMMUNE_PLATFORM: &str = "UPDATE communes SET name = $2, population = $3, \
        sms_daily_budget = $4 WHERE id = $1";
    pub const DELETE_PHONE_NUMBERS: &str =
        "DELETE FROM commune_phone_numbers WHERE commune_id = $1";
    pub const UPDATE_LOCATION: &str = "UPDATE locations SET name = $2, address = $3, postcode = $4, \
        city = $5, access_notes = $6, active = $7 WHERE id = $1";
    pub const UPDATE_SERVICE: &str = "UPDATE services SET name = $2, spoken_name = $3, category = $4, \
        duration_minutes = $5, max_persons = $6, min_notice_minutes = $7, horizon_days = $8, \
        channel_web = $9, channel_phone = $10, channel_agent = $11, what_to_bring = $12, active = $13 \
        WHERE id = $1";
    pub const UPDATE_PLANNING: &str =
        "UPDATE plannings SET name = $2, capacity = $3, active = $4 WHERE id = $1";
    pub const UPDATE_RULE: &str = "UPDATE opening_rules SET planning_id = $2, location_id = $3, \
        weekdays = $4, start_minute = $5, end_minute = $6, step_minutes = $7, valid_from = $8, \
        valid_until = $9 WHERE id = $1";
    pub const DELETE_RULE_SERVICES: &str = "DELETE FROM opening_rule_services WHERE rule_id = $1";
    pub const DELETE_RULE: &str = "DELETE FROM opening_rules WHERE id = $1";
    pub const DELETE_CLOSURE: &str = "DELETE FROM closures WHERE id = $1";
    pub const PENDING_REMINDERS: &str = "SELECT n.id, a.starts_at, a.confirmed_at FROM notifications n \
        JOIN appointments a ON a.id = n.appointment_id WHERE n.commune_id = $1 \
        AND n.kind = 'reminder' AND n.status = 'pending'";
    pub const RESCHEDULE: &str = "UPDATE notifications SET due_at = $2, updated_at = $3 \
        WHERE id = $1 AND status = 'pending'";
    pub const CANCEL_NOTIFICATION: &str = "UPDATE notifications SET status = 'cancelled', \
        last_error = 'no longer due after a change of settings', updated_at = $2 \
        WHERE id = $1 AND status = 'pending'";
    pub const TAKE_CONVERSATION: &str = "DELETE FROM sms_conversations WHERE phone = $1 RETURNING appointment_id, action, expires_at";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_appointments_share_a_seat_bucket_and_neighbours_do_not() {
        let at = |hm: &str| -> DateTime<Utc> { format!("2026-12-01T{hm}:00Z").parse().unwrap() };
        let shares = |a: (i32, i32), b: (i32, i32)| a.0 <= b.1 && b.0 <= a.1;
        let five = seat_buckets(at("09:00"), at("09:05"));
        assert_eq!(five.0, five.1, "a slot on the grid is one bucket");
        let next = seat_buckets(at("09:05"), at("09:10"));
        assert!(
            !shares(five, next),
            "neighbours on the grid never wait for each other"
        );
        let half_hour = seat_buckets(at("09:00"), at("09:30"));
        assert_eq!(half_hour.1 - half_hour.0 + 1, 6);
        let off_grid = seat_buckets(at("09:27"), at("09:41"));
        assert!(shares(half_hour, off_grid), "overlapping off the grid");
        assert!(!shares(off_grid, seat_buckets(at("09:45"), at("10:00"))));
    }
}
