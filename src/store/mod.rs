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

mod postgres;
mod rows;
mod sqlite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use crate::domain::{
    Appointment, AppointmentId, AppointmentPlace, Category, Closure, ClosureId, Commune, CommuneId,
    Location, LocationId, MinuteOfDay, OpeningRule, OpeningRuleId, Planning, PlanningId, Service,
    ServiceId, Weekdays, WeeklyHours, slots::Occupied,
};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use std::sync::Arc;
use std::time::Duration;

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

#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;
    async fn migrate(&self) -> Result<()>;
    /// A cheap round trip, for `/readyz`.
    async fn ping(&self) -> Result<()>;
    /// Opens a write transaction (see the module documentation).
    async fn begin(&self) -> Result<Box<dyn StoreTx>>;

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
}

/// A write transaction. Dropping it without [`StoreTx::commit`] rolls everything back.
#[async_trait]
pub trait StoreTx: Send {
    /// Reads a planning and, on PostgreSQL, locks it until the end of the transaction, so that
    /// bookings on one planning are decided one after the other.
    async fn lock_planning(&mut self, id: PlanningId) -> Result<Option<Planning>>;
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
    /// Reads an appointment and, on PostgreSQL, locks it.
    async fn appointment(&mut self, id: AppointmentId) -> Result<Option<Appointment>>;
    async fn insert_appointment(&mut self, appointment: &Appointment) -> Result<()>;
    /// Writes every mutable field of an existing appointment.
    async fn update_appointment(&mut self, appointment: &Appointment) -> Result<()>;
    /// Records that `appointment` holds `claim`, first deleting the claims on that identity
    /// whose appointments are no longer active at `now`. Returns an appointment whose claim
    /// conflicts (in another commune, or in this one when either claim is exclusive) instead.
    /// Claims on one identity are decided one transaction at a time; the schema backs this up
    /// (`citizen_claims_conflict` trigger on SQLite; an exclusion constraint across communes and
    /// a unique index on exclusive claims on PostgreSQL).
    async fn claim(
        &mut self,
        claim: &Claim,
        holder: &ClaimHolder,
        now: DateTime<Utc>,
    ) -> Result<Option<AppointmentId>>;
    async fn release_claims(&mut self, appointment: AppointmentId) -> Result<()>;
    async fn transfer_claims(&mut self, from: AppointmentId, to: AppointmentId) -> Result<()>;
    async fn commit(self: Box<Self>) -> Result<()>;
}

/// SQL shared by both backends: `$n` placeholders work on SQLite too, and the schemas use the
/// same names, so only locking, typing of instants and error codes differ.
mod sql {
    macro_rules! commune_columns {
        () => {
            "SELECT id, slug, name, insee_code, timezone, population, switchboard_number, switchboard_hours, \
             reminder_delay_hours, quiet_start_minute, quiet_end_minute, sms_sender, \
             allow_multiple_per_category, (SELECT string_agg(n.number, ',' ORDER BY n.number) \
             FROM commune_phone_numbers n WHERE n.commune_id = communes.id) AS phone_numbers FROM communes"
        };
    }
    pub const COMMUNES: &str = concat!(commune_columns!(), " ORDER BY name");
    pub const COMMUNE: &str = concat!(commune_columns!(), " WHERE id = $1");
    pub const COMMUNE_BY_SLUG: &str = concat!(commune_columns!(), " WHERE slug = $1");
    pub const INSERT_COMMUNE: &str = "INSERT INTO communes (slug, name, insee_code, timezone, population, \
        switchboard_number, switchboard_hours, reminder_delay_hours, quiet_start_minute, quiet_end_minute, \
        sms_sender, allow_multiple_per_category, created_at) \
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id";
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
    pub const PLANNING_FOR_UPDATE: &str =
        "SELECT id, commune_id, name, capacity, active FROM plannings WHERE id = $1 FOR UPDATE";

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

    /// `$4` is now. A hold counts until its expiry; the rest of the seat-taking statuses always.
    pub const OCCUPANCY: &str = "SELECT planning_id, seat, starts_at, ends_at FROM appointments \
        WHERE commune_id = $1 AND starts_at < $3 AND ends_at > $2 AND seat IS NOT NULL \
        AND (status <> 'held' OR hold_expires_at > $4)";

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
        hold_expires_at, replaces_id, cancel_reason, version, created_at, updated_at, confirmed_at, cancelled_at) \
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)";
    pub const UPDATE_APPOINTMENT: &str = "UPDATE appointments SET planning_id = $2, location_id = $3, \
        starts_at = $4, ends_at = $5, seat = $6, persons = $7, citizen_name = $8, phone = $9, email = $10, \
        ants_ids = $11, status = $12, hold_expires_at = $13, cancel_reason = $14, version = $15, \
        updated_at = $16, confirmed_at = $17, cancelled_at = $18 WHERE id = $1";
    pub const APPOINTMENT_PLACE: &str = "SELECT a.id, c.name AS commune_name, c.slug AS commune_slug, \
        l.name AS location_name, l.address || ', ' || l.postcode || ' ' || l.city AS location_address, \
        s.name AS service_name, a.starts_at, c.timezone FROM appointments a \
        JOIN communes c ON c.id = a.commune_id JOIN locations l ON l.id = a.location_id \
        JOIN services s ON s.id = a.service_id WHERE a.id = $1";

    pub const RELEASE_EXPIRED: &str = "UPDATE appointments SET status = 'expired', seat = NULL, \
        version = version + 1, updated_at = $2 \
        WHERE planning_id = $1 AND status = 'held' AND hold_expires_at <= $2";
    pub const BUSY_SEATS: &str = "SELECT seat FROM appointments WHERE planning_id = $1 AND seat IS NOT NULL \
        AND starts_at < $3 AND ends_at > $2";

    /// `$4` is now: a claim is stale when its appointment is neither a live hold nor a
    /// confirmed appointment still to come.
    pub const DELETE_STALE_CLAIM: &str = "DELETE FROM citizen_claims WHERE category = $1 AND kind = $2 AND key = $3 \
        AND NOT EXISTS (SELECT 1 FROM appointments a WHERE a.id = citizen_claims.appointment_id \
            AND ((a.status = 'held' AND a.hold_expires_at > $4) OR (a.status = 'confirmed' AND a.ends_at > $4)))";
    pub const INSERT_CLAIM: &str = "INSERT INTO citizen_claims (category, kind, key, appointment_id, commune_id, \
        exclusive) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING";
    /// Another appointment whose claim on the identity conflicts with ours (`$5` our commune,
    /// `$6` whether ours is exclusive).
    pub const CONFLICTING_CLAIM: &str = "SELECT appointment_id FROM citizen_claims \
        WHERE category = $1 AND kind = $2 AND key = $3 AND appointment_id <> $4 \
        AND (commune_id <> $5 OR exclusive OR $6) LIMIT 1";
    /// PostgreSQL: serialises the claims on one identity until the end of the transaction.
    pub const LOCK_IDENTITY: &str =
        "SELECT pg_advisory_xact_lock(hashtext($1 || ':' || $2 || ':' || $3))";
    pub const RELEASE_CLAIMS: &str = "DELETE FROM citizen_claims WHERE appointment_id = $1";
    pub const TRANSFER_CLAIMS: &str =
        "UPDATE citizen_claims SET appointment_id = $2 WHERE appointment_id = $1";
}
