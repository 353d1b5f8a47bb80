//! The embedded SQLite store: one file, WAL (readers never wait for the writer), a busy timeout,
//! foreign keys on, and `BEGIN IMMEDIATE` for every write transaction — a deferred transaction
//! that upgrades to a write can fail at once with `SQLITE_BUSY`, whatever the timeout. Instants
//! are stored as Unix seconds.
//!
//! Reads go through sqlx's pool. The booking engine's transactions ([`Store::begin`]) run on a
//! write connection of their own, on the calling thread (see `sqlite_direct` for why).

use super::rows::*;
use super::sqlite_direct::{self, WriteTx, from_row};
use super::sqlite_direct::{query as wquery, query_as as wquery_as, query_scalar as wquery_scalar};
use super::sqlite_direct::{query_as as rquery_as, query_scalar as rquery_scalar};
use super::{
    Agent, AgentId, AuditEntry, Backend, CallRecord, Claim, ClaimHolder, CommunePlatformSettings,
    CommuneSettings, IdempotencyState, LOCK_WAIT, NewAgent, NewClosure, NewCommune, NewLocation,
    NewNotification, NewOpeningRule, NewPlanning, NewService, Notification, NotificationId,
    OtpRecord, Result, SendResult, SmsAction, Store, StoreError, StoreTx, VoiceSettings, sql,
};
use crate::domain::{
    Appointment, AppointmentId, AppointmentPlace, Closure, ClosureId, Commune, CommuneId, Location,
    LocationId, NotificationKind, NotificationStatus, OpeningRule, OpeningRuleId, Planning,
    PlanningId, Service, ServiceId, slots::Occupied,
};
use chrono::{DateTime, Utc};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::sync::Arc;
use tokio::sync::{Mutex, OwnedMutexGuard};

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// One writer at a time in this process, and the direct write connection. SQLite allows
    /// one writer anyway; waiting here is a queue, while waiting in SQLite's busy handler is
    /// sleeping in steps of up to 100 ms — latency spikes under a rush. (Other processes on the
    /// same file still meet the busy timeout.) Writes through the pool take the turn too.
    writer: Arc<Mutex<rusqlite::Connection>>,
    /// The hot reads' connections (see [`SqliteStore::read_conn`]).
    readers: Arc<sqlite_direct::Readers>,
}

impl std::fmt::Debug for sqlite_direct::Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Readers")
    }
}

pub type WriteGuard = OwnedMutexGuard<rusqlite::Connection>;

/// Instants as SQLite stores them.
fn ts(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

fn opt_ts(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(ts)
}

/// BEGIN IMMEDIATE already made the transaction the only writer: reads need no lock.
const APPOINTMENT_LOCKED: &str = sql::APPOINTMENT;
/// A single UPDATE … RETURNING is atomic: no two workers can claim the same row.
const CLAIM_NOTIFICATIONS: &str = sql::CLAIM_NOTIFICATIONS;

/// Serialising on a key needs nothing more than BEGIN IMMEDIATE.
async fn lock_key(_tx: &mut WriteTx, _key: &str) -> Result<()> {
    Ok(())
}

/// [`sql::DELETE_STALE_CLAIM`] (the transaction is the only writer: nothing to lock).
async fn delete_stale_claims_locked(
    tx: &mut WriteTx,
    _locks: (&str, Option<String>),
    claim: &Claim,
    now: DateTime<Utc>,
) -> Result<()> {
    wquery(sql::DELETE_STALE_CLAIM)
        .bind(claim.category.as_str())
        .bind(claim.kind.as_str())
        .bind(&claim.key)
        .bind(ts(now))
        .execute(tx)
        .await
        .map_err(map_err)?;
    Ok(())
}

/// Likewise (never waits).
async fn lock_buckets(_tx: &mut WriteTx, _key: &str, _first: i32, _last: i32) -> Result<bool> {
    Ok(false)
}

// Rows the direct write connection reads, by column name as sqlx's `FromRow`.
from_row! {
    PlanningRow { id, commune_id, name, capacity, active }
    AppointmentRow {
        id, commune_id, planning_id, location_id, service_id, starts_at, ends_at, seat,
        persons, citizen_name, phone, email, ants_ids, channel, status, hold_expires_at,
        replaces_id, cancel_reason, version, created_at, updated_at, confirmed_at,
        cancelled_at,
    }
    OtpRow { appointment_id, destination, code_hash, expires_at, attempts_left, used_at, created_at }
    ClosureRow { id, commune_id, planning_id, location_id, starts_at, ends_at, reason }
    CallRow {
        call_sid, commune_id, caller, seq, answered, state, last_twiml, outcome, spoken_name,
        started_at, ended_at,
    }
    NotificationRow {
        id, commune_id, appointment_id, kind, channel, destination, dedupe_key, subject, body,
        html, ics, due_at, status, attempts, provider_id, delivery_status, segments,
        cost_micro_eur, last_error, created_at, sent_at,
    }
}

/// Maps SQLite's errors to the store's: busy and locked are transient; a unique violation is
/// named `{table}_{columns}_key` (PostgreSQL's default name, which the PostgreSQL schema also
/// uses for primary keys that callers care about); our triggers and named CHECKs by their name.
fn map_err(e: impl SqliteError) -> StoreError {
    e.into_store_error()
}

/// Errors from sqlx's pool (reads, migrations) and from the direct write connection.
trait SqliteError {
    fn into_store_error(self) -> StoreError;
}

impl SqliteError for sqlx::Error {
    fn into_store_error(self) -> StoreError {
        if let sqlx::Error::Database(db) = &self {
            let code = db.code().unwrap_or_default().parse::<i32>().unwrap_or(0);
            if let Some(mapped) = classify(code, db.message(), || self.to_string()) {
                return mapped;
            }
        }
        StoreError::Database(self)
    }
}

impl SqliteError for rusqlite::Error {
    fn into_store_error(self) -> StoreError {
        if let rusqlite::Error::SqliteFailure(failure, message) = &self {
            let message = message.as_deref().unwrap_or_default();
            if let Some(mapped) = classify(failure.extended_code, message, || self.to_string()) {
                return mapped;
            }
        }
        StoreError::Sqlite(self)
    }
}

/// `code` is SQLite's extended result code.
fn classify(code: i32, message: &str, describe: impl Fn() -> String) -> Option<StoreError> {
    // SQLITE_BUSY = 5, SQLITE_LOCKED = 6.
    let primary = code & 0xff;
    if primary == 5 || primary == 6 {
        return Some(StoreError::Transient(describe()));
    }
    // Unique indexes and primary keys alike ("PRIMARY KEY" for rowid tables).
    if let Some(cols) = message
        .strip_prefix("UNIQUE constraint failed: ")
        .or_else(|| message.strip_prefix("PRIMARY KEY constraint failed: "))
    {
        return Some(StoreError::Constraint(unique_name(cols)));
    }
    if let Some(name) = message.strip_prefix("CHECK constraint failed: ") {
        return Some(StoreError::Constraint(name.trim().to_owned()));
    }
    // RAISE(ABORT, 'name') in our triggers (SQLITE_CONSTRAINT_TRIGGER): the message is the
    // constraint's name.
    if code == 1811 || (!message.is_empty() && !message.contains(' ')) {
        return Some(StoreError::Constraint(message.to_owned()));
    }
    None
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

/// The occupancy query of [`sql::OCCUPANCY`] as a single row: SQLite hands rows over one at a
/// time from its worker thread, at about a microsecond each, and a 90-day search reads
/// thousands. Each span is `planning seat start end`, instants in Unix seconds. (One string for
/// all: grouping by planning would sort every row first.)
const OCCUPANCY_PACKED: &str = concat!(
    "SELECT string_agg(planning_id || ' ' || seat || ' ' || starts_at || ' ' || ends_at, ',') \
     AS spans ",
    occupied_in_span!()
);

fn unpack_span(span: &str) -> Result<Occupied> {
    let corrupt = || StoreError::Corrupt(format!("occupancy span {span}"));
    let mut parts = span.split(' ').map(|p| p.parse::<i64>());
    let mut next = || parts.next().and_then(|p| p.ok()).ok_or_else(corrupt);
    let planning_id = next()?;
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
            // sqlx names each in-memory database (shared cache) for its connections, and it
            // lives while one is open: keep exactly one, forever (the write connection opens
            // the same name).
            pool = pool
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        } else {
            // Few connections: SQLite writes one at a time anyway, and each connection is a
            // thread of its own; on a small machine, 32 of them cost more in thread switches
            // than they gain (the load tool: 220 → 240 bookings/s with 6).
            pool = pool.max_connections(6);
        }
        let filename = options.get_filename().to_string_lossy().into_owned();
        let pool = pool
            .acquire_timeout(LOCK_WAIT * 3)
            .connect_with(options)
            .await
            .map_err(map_err)?;
        // After the pool: the file exists, in WAL mode.
        let direct = sqlite_direct::open(&filename, in_memory, LOCK_WAIT).map_err(map_err)?;
        Ok(Self {
            pool,
            writer: Arc::new(Mutex::new(direct)),
            readers: Arc::new(sqlite_direct::Readers::new(&filename, in_memory, LOCK_WAIT)),
        })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A read connection used on this thread, for the reads every booking makes; the others go
    /// through sqlx's pool.
    async fn read_conn(&self) -> Result<sqlite_direct::Reader<'_>> {
        self.readers.take().map_err(map_err)
    }

    /// The writer's turn, with the direct write connection (autocommit).
    async fn write_conn(&self) -> Result<WriteGuard> {
        Ok(self.writer.clone().lock_owned().await)
    }

    /// A write transaction on the direct write connection; it holds the writer's turn until it
    /// ends. `BEGIN IMMEDIATE` waits here, on this thread, only if another process holds the
    /// file's write lock (this process's writers queue on the mutex). (The unit is PostgreSQL's
    /// separate guard.)
    async fn write_tx(&self) -> Result<((), WriteTx)> {
        let tx = WriteTx::begin(self.write_conn().await?).map_err(map_err)?;
        Ok(((), tx))
    }
}

impl_store!(SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("./migrations/sqlite").run(&self.pool).await?;
        Ok(())
    }

    async fn begin(&self) -> Result<Box<dyn StoreTx>> {
        let ((), tx) = self.write_tx().await?;
        Ok(Box::new(direct::SqliteTx { tx }))
    }

    async fn occupancy(
        &self,
        commune: CommuneId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Occupied>> {
        let spans: Option<String> = rquery_scalar(OCCUPANCY_PACKED)
            .bind(commune)
            .bind(ts(from))
            .bind(ts(to))
            .bind(ts(now))
            .bind(ts(crate::store::looked_back_from(from)))
            .fetch_one(&*self.read_conn().await?)
            .await
            .map_err(map_err)?;
        spans
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(unpack_span)
            .collect()
    }

    /// One write transaction for the batch: one sync to disk for all of it.
    async fn start_sends(
        &self,
        ids: &[NotificationId],
        worker: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<NotificationId>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let (_writer, tx) = self.write_tx().await?;
        let mut started = Vec::with_capacity(ids.len());
        for &id in ids {
            let done = wquery(sql::START_SEND)
                .bind(id)
                .bind(worker)
                .bind(ts(now))
                .bind(ts(lease_until))
                .execute(&tx)
                .await
                .map_err(map_err)?;
            if done.rows_affected() == 1 {
                started.push(id);
            }
        }
        tx.commit().await.map_err(map_err)?;
        Ok(started)
    }

    async fn finish_sends(
        &self,
        worker: &str,
        outcomes: &[(NotificationId, SendResult)],
        now: DateTime<Utc>,
    ) -> Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let (_writer, tx) = self.write_tx().await?;
        for (id, result) in outcomes {
            let done = finish_statement!(*id, result, worker, now)
                .execute(&tx)
                .await
                .map_err(map_err)?;
            if done.rows_affected() == 0 {
                super::claim_lapsed(*id);
            }
        }
        tx.commit().await.map_err(map_err)?;
        Ok(())
    }
});

/// The booking engine's transactions, on the direct write connection: the shared SQL of
/// `impl_store_tx!` with `sqlite_direct`'s query builders.
mod direct {
    use super::super::sqlite_direct::{query, query_as, query_scalar};
    use super::*;

    pub struct SqliteTx {
        pub(super) tx: WriteTx,
    }

    impl_store_tx!(SqliteTx {
        async fn commit(self: Box<Self>) -> Result<()> {
            self.tx.commit().await.map_err(map_err)
        }

        async fn rollback(self: Box<Self>) -> Result<()> {
            // Dropping the write transaction rolls it back at once.
            drop(self);
            Ok(())
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use uuid::Uuid;

    /// What the direct write connection writes, sqlx's pool reads as sqlx itself would have
    /// written it (and the other way round); `$N` binds by number whatever the order of first
    /// appearance; an in-memory store is one database for both.
    #[tokio::test]
    async fn the_write_connection_and_the_pool_agree() {
        let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
        store.migrate().await.unwrap();
        let ((), tx) = store.write_tx().await.unwrap();
        wquery("CREATE TABLE t (id BLOB, at INTEGER, day TEXT, flag INTEGER, note TEXT)")
            .execute(&tx)
            .await
            .unwrap();
        let id = Uuid::new_v4();
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let day = NaiveDate::from_ymd_opt(2026, 12, 3).unwrap();
        let done = wquery("INSERT INTO t (note, flag, day, at, id) VALUES ($5, $4, $3, $2, $1)")
            .bind(id)
            .bind(ts(at))
            .bind(day)
            .bind(true)
            .bind(None::<String>)
            .execute(&tx)
            .await
            .unwrap();
        assert_eq!(done.rows_affected(), 1);
        let back: Option<(Uuid, DateTime<Utc>)> = wquery_as("SELECT id, at FROM t WHERE flag = $1")
            .bind(true)
            .fetch_optional(&tx)
            .await
            .unwrap();
        assert_eq!(back, Some((id, at)));
        tx.commit().await.unwrap();

        let row: (Uuid, DateTime<Utc>, NaiveDate, bool, Option<String>) =
            sqlx::query_as("SELECT id, at, day, flag, note FROM t")
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!(row, (id, at, day, true, None));

        // sqlx writes, the write connection reads.
        let other = Uuid::new_v4();
        sqlx::query("INSERT INTO t (id, at, flag) VALUES ($1, $2, $3)")
            .bind(other)
            .bind(at)
            .bind(false)
            .execute(store.pool())
            .await
            .unwrap();
        let writer = store.write_conn().await.unwrap();
        let found: Vec<Uuid> = wquery_scalar("SELECT id FROM t WHERE flag = $1")
            .bind(false)
            .fetch_all(&writer)
            .await
            .unwrap();
        assert_eq!(found, [other]);
        // A constraint's refusal maps as on the pool: a unique index by its conventional name.
        wquery("CREATE UNIQUE INDEX t_id ON t (id)")
            .execute(&writer)
            .await
            .unwrap();
        let refused = wquery("INSERT INTO t (id) VALUES ($1)")
            .bind(other)
            .execute(&writer)
            .await
            .map_err(map_err)
            .unwrap_err();
        assert!(refused.is_constraint("t_id_key"), "{refused:?}");
    }

    /// The outbox claims inside the writer's turn, several times a second under a rush: it
    /// must find due messages through `notifications_due`, not by reading every message ever
    /// sent (SQLite does not infer the partial index's condition from the claim's two cases).
    #[tokio::test]
    async fn claims_use_the_due_index() {
        let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
        store.migrate().await.unwrap();
        use sqlx::Row;
        let plan: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {CLAIM_NOTIFICATIONS}"
        )))
        .fetch_all(store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("detail"))
        .collect();
        assert!(
            plan.iter()
                .any(|d| d.contains("USING INDEX notifications_due")),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|d| d.starts_with("SCAN notifications")),
            "{plan:?}"
        );
    }
}
