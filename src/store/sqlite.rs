//! The embedded SQLite store: one file, WAL (readers never wait for the writer), a busy timeout,
//! foreign keys on, and `BEGIN IMMEDIATE` for every write transaction — a deferred transaction
//! that upgrades to a write can fail at once with `SQLITE_BUSY`, whatever the timeout. Instants
//! are stored as Unix seconds.

use super::rows::*;
use super::{
    Backend, Claim, ClaimHolder, LOCK_WAIT, NewClosure, NewCommune, NewLocation, NewOpeningRule,
    NewPlanning, NewService, Result, Store, StoreError, StoreTx, sql,
};
use crate::domain::{
    Appointment, AppointmentId, AppointmentPlace, Closure, ClosureId, Commune, CommuneId, Location,
    LocationId, OpeningRule, OpeningRuleId, Planning, PlanningId, Service, ServiceId,
    slots::Occupied,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};
use std::str::FromStr;

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

/// Instants as SQLite stores them.
fn ts(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

fn opt_ts(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(ts)
}

/// Maps SQLite's errors to the store's: busy and locked are transient; a unique violation is
/// named `{table}_{columns}_key` (PostgreSQL's default name, which the PostgreSQL schema also
/// uses for primary keys that callers care about); our triggers and named CHECKs by their name.
fn map_err(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        let code = db.code().unwrap_or_default();
        let primary = code.parse::<i32>().unwrap_or(0) & 0xff;
        // SQLITE_BUSY = 5, SQLITE_LOCKED = 6.
        if primary == 5 || primary == 6 {
            return StoreError::Transient(e.to_string());
        }
        let message = db.message();
        // Unique indexes and primary keys alike ("PRIMARY KEY" for rowid tables).
        if let Some(cols) = message
            .strip_prefix("UNIQUE constraint failed: ")
            .or_else(|| message.strip_prefix("PRIMARY KEY constraint failed: "))
        {
            return StoreError::Constraint(unique_name(cols));
        }
        if let Some(name) = message.strip_prefix("CHECK constraint failed: ") {
            return StoreError::Constraint(name.trim().to_owned());
        }
        // RAISE(ABORT, 'name') in our triggers: the message is the constraint's name.
        if code == "1811" || !message.contains(' ') {
            return StoreError::Constraint(message.to_owned());
        }
    }
    StoreError::Database(e)
}

/// `communes.slug` → `communes_slug_key`.
fn unique_name(cols: &str) -> String {
    let mut table = "";
    let mut names = Vec::new();
    for col in cols.split(',') {
        if let Some((t, c)) = col.trim().split_once('.') {
            table = t;
            names.push(c);
        }
    }
    format!("{table}_{}_key", names.join("_"))
}

/// The occupancy query of [`sql::OCCUPANCY`], one row per planning: SQLite hands rows over one
/// at a time from its worker thread, at about a microsecond each, and a 90-day search reads
/// thousands. Each span is `seat start end`, instants in Unix seconds.
const OCCUPANCY_PACKED: &str = "SELECT planning_id, \
    string_agg(seat || ' ' || starts_at || ' ' || ends_at, ',') AS spans FROM appointments \
    WHERE commune_id = $1 AND starts_at < $3 AND ends_at > $2 AND seat IS NOT NULL \
    AND (status <> 'held' OR hold_expires_at > $4) GROUP BY planning_id";

fn unpack_span(planning_id: i64, span: &str) -> Result<Occupied> {
    let corrupt = || StoreError::Corrupt(format!("occupancy span {span}"));
    let mut parts = span.split(' ').map(|p| p.parse::<i64>());
    let mut next = || parts.next().and_then(|p| p.ok()).ok_or_else(corrupt);
    let seat = i32::try_from(next()?).map_err(|_| corrupt())?;
    let starts_at = DateTime::from_timestamp(next()?, 0).ok_or_else(corrupt)?;
    let ends_at = DateTime::from_timestamp(next()?, 0).ok_or_else(corrupt)?;
    Ok(Occupied {
        planning_id,
        seat,
        starts_at,
        ends_at,
    })
}

impl SqliteStore {
    /// `url` is `sqlite://path`, `sqlite:path`, or a bare path; the file is created if missing.
    pub async fn connect(url: &str) -> Result<Self> {
        let url = if url.starts_with("sqlite:") {
            url.to_owned()
        } else {
            format!("sqlite://{url}")
        };
        let in_memory = url.contains(":memory:");
        let options = SqliteConnectOptions::from_str(&url)
            .map_err(|e| StoreError::BadUrl(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(LOCK_WAIT)
            .foreign_keys(true);
        let mut pool = SqlitePoolOptions::new();
        if in_memory {
            // Each in-memory connection is a database of its own, gone when it closes: keep
            // exactly one, forever.
            pool = pool
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        } else {
            pool = pool.max_connections(8);
        }
        let pool = pool
            .acquire_timeout(LOCK_WAIT * 3)
            .connect_with(options)
            .await
            .map_err(map_err)?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn begin(&self) -> Result<Box<dyn StoreTx>> {
        Ok(Box::new(SqliteTx {
            tx: self.write_tx().await?,
        }))
    }

    async fn insert_commune(&self, c: &NewCommune) -> Result<CommuneId> {
        let mut tx = self.write_tx().await?;
        let hours = serde_json::to_string(&c.switchboard_hours)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let id: i64 = sqlx::query_scalar(sql::INSERT_COMMUNE)
            .bind(&c.slug)
            .bind(&c.name)
            .bind(&c.insee_code)
            .bind(c.timezone.name())
            .bind(c.population)
            .bind(&c.switchboard_number)
            .bind(hours)
            .bind(c.reminder_delay_hours)
            .bind(i32::from(c.quiet_start.0))
            .bind(i32::from(c.quiet_end.0))
            .bind(&c.sms_sender)
            .bind(c.allow_multiple_per_category)
            .bind(ts(Utc::now()))
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
        for number in &c.phone_numbers {
            sqlx::query(sql::INSERT_PHONE_NUMBER)
                .bind(number)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(id)
    }

    async fn communes(&self) -> Result<Vec<Commune>> {
        let rows: Vec<CommuneRow> = sqlx::query_as(sql::COMMUNES)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.into_iter().map(CommuneRow::into_domain).collect()
    }

    async fn commune(&self, id: CommuneId) -> Result<Option<Commune>> {
        let row: Option<CommuneRow> = sqlx::query_as(sql::COMMUNE)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.map(CommuneRow::into_domain).transpose()
    }

    async fn commune_by_slug(&self, slug: &str) -> Result<Option<Commune>> {
        let row: Option<CommuneRow> = sqlx::query_as(sql::COMMUNE_BY_SLUG)
            .bind(slug)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.map(CommuneRow::into_domain).transpose()
    }

    async fn commune_by_phone_number(&self, number: &str) -> Result<Option<Commune>> {
        let id: Option<i64> = sqlx::query_scalar(sql::COMMUNE_OF_NUMBER)
            .bind(number)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        match id {
            Some(id) => self.commune(id).await,
            None => Ok(None),
        }
    }

    async fn insert_location(&self, l: &NewLocation) -> Result<LocationId> {
        sqlx::query_scalar(sql::INSERT_LOCATION)
            .bind(l.commune_id)
            .bind(&l.name)
            .bind(&l.address)
            .bind(&l.postcode)
            .bind(&l.city)
            .bind(&l.access_notes)
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)
    }

    async fn locations(&self, commune: CommuneId) -> Result<Vec<Location>> {
        let rows: Vec<LocationRow> = sqlx::query_as(sql::LOCATIONS)
            .bind(commune)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(rows.into_iter().map(Location::from).collect())
    }

    async fn insert_service(&self, s: &NewService) -> Result<ServiceId> {
        sqlx::query_scalar(sql::INSERT_SERVICE)
            .bind(s.commune_id)
            .bind(&s.name)
            .bind(&s.spoken_name)
            .bind(s.category.as_str())
            .bind(s.duration_minutes)
            .bind(s.max_persons)
            .bind(s.min_notice_minutes)
            .bind(s.horizon_days)
            .bind(s.channels.web)
            .bind(s.channels.phone)
            .bind(s.channels.agent)
            .bind(&s.what_to_bring)
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)
    }

    async fn services(&self, commune: CommuneId) -> Result<Vec<Service>> {
        let rows: Vec<ServiceRow> = sqlx::query_as(sql::SERVICES)
            .bind(commune)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.into_iter().map(Service::try_from).collect()
    }

    async fn service(&self, id: ServiceId) -> Result<Option<Service>> {
        let row: Option<ServiceRow> = sqlx::query_as(sql::SERVICE)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.map(Service::try_from).transpose()
    }

    async fn insert_planning(&self, p: &NewPlanning) -> Result<PlanningId> {
        sqlx::query_scalar(sql::INSERT_PLANNING)
            .bind(p.commune_id)
            .bind(&p.name)
            .bind(p.capacity)
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)
    }

    async fn plannings(&self, commune: CommuneId) -> Result<Vec<Planning>> {
        let rows: Vec<PlanningRow> = sqlx::query_as(sql::PLANNINGS)
            .bind(commune)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(rows.into_iter().map(Planning::from).collect())
    }

    async fn insert_opening_rule(&self, r: &NewOpeningRule) -> Result<OpeningRuleId> {
        let mut tx = self.write_tx().await?;
        let id: i64 = sqlx::query_scalar(sql::INSERT_RULE)
            .bind(r.planning_id)
            .bind(r.location_id)
            .bind(i32::from(r.weekdays.0))
            .bind(i32::from(r.start.0))
            .bind(i32::from(r.end.0))
            .bind(r.step_minutes)
            .bind(r.valid_from)
            .bind(r.valid_until)
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
        for service in &r.service_ids {
            sqlx::query(sql::INSERT_RULE_SERVICE)
                .bind(id)
                .bind(service)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(id)
    }

    async fn opening_rules(&self, commune: CommuneId) -> Result<Vec<OpeningRule>> {
        let rules: Vec<RuleRow> = sqlx::query_as(sql::RULES)
            .bind(commune)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rules.into_iter().map(OpeningRule::try_from).collect()
    }

    async fn insert_closure(&self, c: &NewClosure) -> Result<ClosureId> {
        sqlx::query_scalar(sql::INSERT_CLOSURE)
            .bind(c.commune_id)
            .bind(c.planning_id)
            .bind(c.location_id)
            .bind(ts(c.starts_at))
            .bind(ts(c.ends_at))
            .bind(&c.reason)
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)
    }

    async fn closures(
        &self,
        commune: CommuneId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Closure>> {
        let rows: Vec<ClosureRow> = sqlx::query_as(sql::CLOSURES)
            .bind(commune)
            .bind(ts(from))
            .bind(ts(to))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(rows.into_iter().map(Closure::from).collect())
    }

    async fn occupancy(
        &self,
        commune: CommuneId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Occupied>> {
        let rows: Vec<(i64, String)> = sqlx::query_as(OCCUPANCY_PACKED)
            .bind(commune)
            .bind(ts(from))
            .bind(ts(to))
            .bind(ts(now))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        let mut occupied = Vec::new();
        for (planning_id, spans) in rows {
            for span in spans.split(',') {
                occupied.push(unpack_span(planning_id, span)?);
            }
        }
        Ok(occupied)
    }

    async fn appointment(&self, id: AppointmentId) -> Result<Option<Appointment>> {
        let row: Option<AppointmentRow> = sqlx::query_as(sql::APPOINTMENT)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.map(Appointment::try_from).transpose()
    }

    async fn appointments(
        &self,
        commune: CommuneId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Appointment>> {
        let rows: Vec<AppointmentRow> = sqlx::query_as(sql::APPOINTMENTS)
            .bind(commune)
            .bind(ts(from))
            .bind(ts(to))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.into_iter().map(Appointment::try_from).collect()
    }

    async fn appointment_place(&self, id: AppointmentId) -> Result<Option<AppointmentPlace>> {
        let row: Option<PlaceRow> = sqlx::query_as(sql::APPOINTMENT_PLACE)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.map(AppointmentPlace::try_from).transpose()
    }
}

pub struct SqliteTx {
    tx: Transaction<'static, Sqlite>,
}

#[async_trait]
impl StoreTx for SqliteTx {
    async fn lock_planning(&mut self, id: PlanningId) -> Result<Option<Planning>> {
        // BEGIN IMMEDIATE already made this transaction the only writer.
        let row: Option<PlanningRow> = sqlx::query_as(sql::PLANNING)
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(map_err)?;
        Ok(row.map(Planning::from))
    }

    async fn release_expired_holds(
        &mut self,
        planning: PlanningId,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let done = sqlx::query(sql::RELEASE_EXPIRED)
            .bind(planning)
            .bind(ts(now))
            .execute(&mut *self.tx)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected())
    }

    async fn busy_seats(
        &mut self,
        planning: PlanningId,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<i32>> {
        sqlx::query_scalar(sql::BUSY_SEATS)
            .bind(planning)
            .bind(ts(start))
            .bind(ts(end))
            .fetch_all(&mut *self.tx)
            .await
            .map_err(map_err)
    }

    async fn appointment(&mut self, id: AppointmentId) -> Result<Option<Appointment>> {
        let row: Option<AppointmentRow> = sqlx::query_as(sql::APPOINTMENT)
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(map_err)?;
        row.map(Appointment::try_from).transpose()
    }

    async fn insert_appointment(&mut self, a: &Appointment) -> Result<()> {
        sqlx::query(sql::INSERT_APPOINTMENT)
            .bind(a.id)
            .bind(a.commune_id)
            .bind(a.planning_id)
            .bind(a.location_id)
            .bind(a.service_id)
            .bind(ts(a.starts_at))
            .bind(ts(a.ends_at))
            .bind(a.seat)
            .bind(a.persons)
            .bind(a.citizen.name.as_str())
            .bind(a.citizen.phone.as_ref().map(|p| p.as_str()))
            .bind(a.citizen.email.as_ref().map(|e| e.as_str()))
            .bind(ants_ids_text(a))
            .bind(a.channel.as_str())
            .bind(a.status.as_str())
            .bind(opt_ts(a.hold_expires_at))
            .bind(a.replaces_id)
            .bind(&a.cancel_reason)
            .bind(a.version)
            .bind(ts(a.created_at))
            .bind(ts(a.updated_at))
            .bind(opt_ts(a.confirmed_at))
            .bind(opt_ts(a.cancelled_at))
            .execute(&mut *self.tx)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn update_appointment(&mut self, a: &Appointment) -> Result<()> {
        sqlx::query(sql::UPDATE_APPOINTMENT)
            .bind(a.id)
            .bind(a.planning_id)
            .bind(a.location_id)
            .bind(ts(a.starts_at))
            .bind(ts(a.ends_at))
            .bind(a.seat)
            .bind(a.persons)
            .bind(a.citizen.name.as_str())
            .bind(a.citizen.phone.as_ref().map(|p| p.as_str()))
            .bind(a.citizen.email.as_ref().map(|e| e.as_str()))
            .bind(ants_ids_text(a))
            .bind(a.status.as_str())
            .bind(opt_ts(a.hold_expires_at))
            .bind(&a.cancel_reason)
            .bind(a.version)
            .bind(ts(a.updated_at))
            .bind(opt_ts(a.confirmed_at))
            .bind(opt_ts(a.cancelled_at))
            .execute(&mut *self.tx)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn claim(
        &mut self,
        claim: &Claim,
        holder: &ClaimHolder,
        now: DateTime<Utc>,
    ) -> Result<Option<AppointmentId>> {
        let (category, kind) = (claim.category.as_str(), claim.kind.as_str());
        sqlx::query(sql::DELETE_STALE_CLAIM)
            .bind(category)
            .bind(kind)
            .bind(&claim.key)
            .bind(ts(now))
            .execute(&mut *self.tx)
            .await
            .map_err(map_err)?;
        let conflicting: Option<AppointmentId> = sqlx::query_scalar(sql::CONFLICTING_CLAIM)
            .bind(category)
            .bind(kind)
            .bind(&claim.key)
            .bind(holder.appointment)
            .bind(holder.commune)
            .bind(holder.exclusive)
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(map_err)?;
        if conflicting.is_some() {
            return Ok(conflicting);
        }
        // Inserting twice for the same appointment is a no-op.
        sqlx::query(sql::INSERT_CLAIM)
            .bind(category)
            .bind(kind)
            .bind(&claim.key)
            .bind(holder.appointment)
            .bind(holder.commune)
            .bind(holder.exclusive)
            .execute(&mut *self.tx)
            .await
            .map_err(map_err)?;
        Ok(None)
    }

    async fn release_claims(&mut self, appointment: AppointmentId) -> Result<()> {
        sqlx::query(sql::RELEASE_CLAIMS)
            .bind(appointment)
            .execute(&mut *self.tx)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn transfer_claims(&mut self, from: AppointmentId, to: AppointmentId) -> Result<()> {
        sqlx::query(sql::TRANSFER_CLAIMS)
            .bind(from)
            .bind(to)
            .execute(&mut *self.tx)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.tx.commit().await.map_err(map_err)
    }
}
