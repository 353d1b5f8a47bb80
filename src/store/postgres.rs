//! The PostgreSQL store, for platforms that run several guichet instances. Write transactions run
//! at READ COMMITTED and lock what they decide on: the planning rows a booking may take a seat
//! on, and the appointment being changed (`SELECT … FOR UPDATE`). The exclusion constraint
//! `appointments_no_overlap` backs this up in the schema itself. A lock wait longer than
//! [`LOCK_WAIT`], a deadlock or a serialization failure is reported as transient, and the engine
//! runs the transaction again.

use super::rows::*;
use super::{
    Agent, AgentId, AuditEntry, Backend, CallRecord, Claim, ClaimHolder, CommunePlatformSettings,
    CommuneSettings, ConfirmAtOnce, HeldAtOnce, HoldAtOnce, IdempotencyState, LOCK_WAIT, NewAgent,
    NewClosure, NewCommune, NewLocation, NewNotification, NewOpeningRule, NewPlanning, NewService,
    Notification, NotificationId, OtpRecord, Result, Seats, SendResult, SmsAction, Store,
    StoreError, StoreTx, VoiceSettings, sql,
};
use crate::domain::{
    Appointment, AppointmentId, AppointmentPlace, Closure, ClosureId, Commune, CommuneId, Location,
    LocationId, NotificationKind, NotificationStatus, OpeningRule, OpeningRuleId, Planning,
    PlanningId, Service, ServiceId, slots::Occupied,
};
use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{PgPool, Postgres, Transaction, query, query_as, query_scalar};
use sqlx::{query as wquery, query_as as wquery_as, query_scalar as wquery_scalar};
use sqlx::{query_as as rquery_as, query_scalar as rquery_scalar};
use std::str::FromStr;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Holds waiting to be written together ([`HoldQueue`]).
    holds: Arc<HoldQueue>,
    /// Where they are written ([`HoldLane`]).
    lane: Arc<HoldLane>,
}

/// Instants are bound as they are (`timestamptz`); the shared code calls these for SQLite's sake.
fn ts(t: DateTime<Utc>) -> DateTime<Utc> {
    t
}

fn opt_ts(t: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    t
}

const APPOINTMENT_LOCKED: &str = sql::APPOINTMENT_FOR_UPDATE;
/// Two workers never wait for each other: each skips the rows the other has locked.
const CLAIM_NOTIFICATIONS: &str = sql::CLAIM_NOTIFICATIONS_SKIP_LOCKED;

/// Serialises the transactions that take any of buckets `first..=last` of `key` until they
/// end, waiting in ascending order. True when it had to wait.
async fn lock_buckets(
    tx: &mut Transaction<'static, Postgres>,
    key: &str,
    first: i32,
    last: i32,
) -> Result<bool> {
    use sqlx::Row;
    let over_buckets = |sql| sqlx::query(sql).bind(key).bind(first).bind(last);
    // Most of the time nobody holds them: one statement, no waiting.
    let free: Option<bool> = over_buckets(concat!("SELECT ", try_bucket_locks!("$1", "$2", "$3")))
        .fetch_one(&mut **tx)
        .await
        .map_err(map_err)?
        .get(0);
    if free == Some(true) {
        return Ok(false);
    }
    over_buckets(concat!(
        "SELECT count(pg_advisory_xact_lock(",
        lock_id!("$1"),
        ", b)) FROM generate_series($2, $3) AS b"
    ))
    .execute(&mut **tx)
    .await
    .map_err(map_err)?;
    Ok(true)
}

/// [`StoreTx::seats_of`] in one statement, in a transaction or on its own.
async fn seats_of<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    planning: PlanningId,
    location: LocationId,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Option<Seats>> {
    // The planning's columns, its busy seats, whether it is closed there.
    type Row = (i64, i64, String, i32, bool, Vec<i32>, bool);
    let row: Option<Row> = sqlx::query_as(sql::SEATS_OF)
        .bind(planning)
        .bind(start)
        .bind(end)
        .bind(now)
        .bind(location)
        .bind(crate::store::looked_back_from(start))
        .fetch_optional(executor)
        .await
        .map_err(map_err)?;
    Ok(row.map(
        |(id, commune_id, name, capacity, active, busy, closed)| Seats {
            planning: Planning::from(PlanningRow {
                id,
                commune_id,
                name,
                capacity,
                active,
            }),
            busy,
            closed,
        },
    ))
}

/// Takes the lock of a claim's identity ([`lock_key`]) and deletes its stale claims
/// ([`sql::DELETE_STALE_CLAIM`]) in one statement. The delete may run before the lock is
/// granted: it removes only claims of appointments no longer active, which no transaction
/// brings back, and waits for a transaction deleting the same row. What is decided under the
/// lock — the insert, the conflict — comes in the statements after, which see everything
/// committed before it was granted. `locks`: the claim's, and a destination's to take after it.
async fn delete_stale_claims_locked(
    tx: &mut Transaction<'static, Postgres>,
    locks: (&str, Option<String>),
    claim: &Claim,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(sql::DELETE_STALE_CLAIM_LOCKED)
        .bind(claim.category.as_str())
        .bind(claim.kind.as_str())
        .bind(&claim.key)
        .bind(ts(now))
        .bind(locks.0)
        .bind(locks.1)
        .execute(&mut **tx)
        .await
        .map_err(map_err)?;
    Ok(())
}

const LOCK_KEY: &str = concat!("SELECT pg_advisory_xact_lock(", lock_id!("$1"), ")");

/// Serialises the transactions that decide on `key` (a citizen's identity, a destination)
/// until they end.
async fn lock_key(tx: &mut Transaction<'static, Postgres>, key: &str) -> Result<()> {
    sqlx::query(LOCK_KEY)
        .bind(key)
        .execute(&mut **tx)
        .await
        .map_err(map_err)?;
    Ok(())
}

/// A call found no such function on its connection (undefined_function): the connection did
/// not open through this pool's `after_connect` — a pooler in transaction mode (PgBouncer) hands
/// each statement to any server connection — or could not create it. Bookings stay correct,
/// written step by step, but slower: said once, for whoever runs the platform.
fn function_missing(name: &str) {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            function = name,
            "a connection lacks guichet's functions (a pooler in transaction mode?): \
             holds and confirmations are written step by step, more slowly"
        );
    }
}

/// Whether to connect without TLS although the URL does not say so: the database is on this
/// machine (a loopback host), and nothing asks for TLS — no `ssl…` parameter in the URL (a
/// mode in either spelling, a certificate) nor in the environment (`PGSSLMODE`, …).
/// sqlx's default (`prefer`) negotiates TLS whenever the server offers it, as Debian's does,
/// and over loopback it protects nothing: measured with the load tool, it cost 2.2 ms of CPU
/// per booking (8.3 → 6.0 ms, both ends together), a quarter of the machine.
fn tls_pointless(url: &str, host: &str, env_asks: Option<&str>) -> bool {
    let in_url = url.split_once('?').is_some_and(|(_, query)| {
        query.split('&').any(|pair| {
            pair.split('=')
                .next()
                .is_some_and(|key| key.to_ascii_lowercase().starts_with("ssl"))
        })
    });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    loopback && !in_url && env_asks.is_none()
}

/// Connections per instance: twice the instance's cores and two more, at least six (the
/// database is taken to run on a machine of the same size, as here). Every connection is a
/// PostgreSQL backend process; more of them than the cores can run only take turns, and they did so at a
/// cost: on this 2-core machine the 10,000-slot rush ran at 324 bookings/s with 16 connections,
/// 370 with 6 (PostgreSQL's CPU per booking 3.2 → 2.4 ms), 341 with 4 (too few to overlap the
/// transactions' round trips). The holds' writers have [`hold_writers`] more, of their own
/// ([`HoldLane`]).
fn pool_size() -> u32 {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    // Never fewer than this machine's six: transactions waiting on a seat or a destination
    // keep their connection while they wait.
    u32::try_from(cores * 2 + 2).map_or(u32::MAX, |n| n.max(6))
}

/// Maps PostgreSQL's SQLSTATEs to the store's errors.
fn map_err(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        match db.code().as_deref() {
            // serialization_failure, deadlock_detected, lock_not_available
            Some("40001" | "40P01" | "55P03") => return StoreError::Transient(e.to_string()),
            // unique_violation, exclusion_violation, check_violation, foreign_key_violation
            Some("23505" | "23P01" | "23514" | "23503") => {
                if let Some(name) = db.constraint() {
                    return StoreError::Constraint(name.to_owned());
                }
            }
            _ => {}
        }
    }
    StoreError::Database(e)
}

/// The function a new connection creates in its own temporary schema: the hold's on the
/// holds' own connections ([`HoldLane`]), the confirmation's on the others. Without it (a role
/// that may not create temporary objects) holds or confirmations are written step by step.
#[derive(Clone, Copy)]
enum Function {
    Hold,
    Confirm,
}

/// Creates `function` on a new connection.
async fn create_function(
    conn: &mut sqlx::PgConnection,
    function: Function,
) -> std::result::Result<(), sqlx::Error> {
    let (create, dry_run, otherwise) = match function {
        Function::Hold => (
            &*HOLD_FUNCTION,
            &*DRY_HOLD,
            "holds will be booked step by step",
        ),
        Function::Confirm => (
            &*CONFIRM_FUNCTION,
            &*DRY_CONFIRM,
            "confirmations will be written step by step",
        ),
    };
    let created = sqlx::raw_sql(sqlx::AssertSqlSafe(create.as_str()))
        .execute(&mut *conn)
        .await;
    if let Err(e) = created {
        tracing::warn!(error = %e, "{otherwise}");
        return Ok(());
    }
    // PostgreSQL compiles a PL/pgSQL function at its first call on a connection (about 2 ms for
    // the hold's): done now, on a call that finds nothing and writes nothing, rather than by the
    // first hold of a rush, which the others wait for. Its statements are still planned by their
    // first real run (the first holds took 10 to 25 ms in all).
    let ran = sqlx::raw_sql(sqlx::AssertSqlSafe(dry_run.as_str()))
        .execute(&mut *conn)
        .await;
    if let Err(e) = ran {
        tracing::debug!(error = %e, "a function's first call failed");
    }
    Ok(())
}

impl PgStore {
    /// `url` is a `postgres://` URL; `?options[search_path]=…` selects a schema (the tests give
    /// each test a schema of its own).
    pub async fn connect(url: &str) -> Result<Self> {
        let mut options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::BadUrl(e.to_string()))?
            .options([("lock_timeout", format!("{}ms", LOCK_WAIT.as_millis()))]);
        let asked = std::env::vars_os()
            .find(|(name, _)| name.to_string_lossy().starts_with("PGSSL"))
            .map(|(name, _)| name.to_string_lossy().into_owned());
        if tls_pointless(url, options.get_host(), asked.as_deref()) {
            options = options.ssl_mode(PgSslMode::Disable);
        }
        let pool = PgPoolOptions::new()
            .max_connections(pool_size())
            // Kept open: the first requests of a rush after a quiet hour would otherwise start
            // server processes and prepare every statement again, all at once.
            .min_connections(pool_size())
            .acquire_timeout(LOCK_WAIT * 3)
            .after_connect(|conn, _| Box::pin(create_function(conn, Function::Confirm)))
            .connect_with(options.clone())
            .await
            .map_err(map_err)?;
        let lane = HoldLane::start(options).await?;
        Ok(Self {
            pool,
            holds: Arc::default(),
            lane: Arc::new(lane),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The connections holds are written on ([`HoldLane`]).
    pub fn hold_pool(&self) -> &PgPool {
        &self.lane.pool
    }

    /// How many statements of holds may be under way at once ([`HoldQueue`]).
    pub fn hold_writers(&self) -> usize {
        hold_writers()
    }

    /// How many statements have written holds through this store ([`HoldQueue`]): fewer than
    /// the holds when they arrived together.
    pub fn hold_statements(&self) -> u64 {
        self.holds
            .statements
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many holds wait in the queue, and how many writers are at work ([`HoldQueue`]).
    pub fn hold_queue(&self) -> (usize, usize) {
        let state = self.holds.lock();
        (state.waiting.len(), state.writers)
    }

    async fn read_conn(&self) -> Result<PoolConnection<Postgres>> {
        self.pool.acquire().await.map_err(map_err)
    }

    /// PostgreSQL takes concurrent writers well: nothing to serialise in the process.
    async fn write_conn(&self) -> Result<PoolConnection<Postgres>> {
        self.pool.acquire().await.map_err(map_err)
    }

    async fn write_tx(&self) -> Result<((), Transaction<'static, Postgres>)> {
        Ok(((), self.pool.begin().await.map_err(map_err)?))
    }
}

impl_store!(PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("./migrations/postgres").run(&self.pool).await?;
        Ok(())
    }

    async fn begin(&self) -> Result<Box<dyn StoreTx>> {
        Ok(Box::new(PgTx {
            tx: self.pool.begin().await.map_err(map_err)?,
        }))
    }

    async fn begin_after_seats(
        &self,
        planning: PlanningId,
        location: LocationId,
        slot: (DateTime<Utc>, DateTime<Utc>),
        now: DateTime<Utc>,
        wanted: &(dyn for<'s> Fn(Option<&'s Seats>) -> bool + Send + Sync),
    ) -> Result<(Option<Seats>, Option<Box<dyn StoreTx>>)> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        let seats = seats_of(&mut *conn, planning, location, slot.0, slot.1, now).await?;
        if !wanted(seats.as_ref()) {
            return Ok((seats, None));
        }
        // `Pool::begin` does the same with a connection it has just acquired (sqlx has no
        // public way to begin on a pooled connection it gave out, and keep it).
        let tx = sqlx::Transaction::begin(conn, None).await.map_err(map_err)?;
        Ok((seats, Some(Box::new(PgTx { tx }))))
    }

    fn holds_at_once(&self) -> bool {
        true
    }

    async fn hold_at_once(&self, h: &HoldAtOnce<'_>) -> Result<HeldAtOnce> {
        self.queue_hold(h).await
    }

    fn confirms_at_once(&self) -> bool {
        true
    }

    async fn confirm_at_once(&self, c: &ConfirmAtOnce<'_>) -> Result<bool> {
        if c.messages.len() > ConfirmAtOnce::MESSAGES {
            return Ok(false);
        }
        let mut query = bind_appointment_update!(
            sqlx::query_scalar(sqlx::AssertSqlSafe(CALL_CONFIRM.as_str())),
            c.confirmed
        )
        .bind(c.code_hash)
        .bind(c.now)
        .bind(c.before.version)
        .bind(c.token_hash);
        for k in 0..ConfirmAtOnce::MESSAGES {
            query = match c.messages.get(k) {
                Some(m) => bind_new_notification!(query, m),
                // No message in this place: its id is null.
                None => query
                    .bind(None::<uuid::Uuid>)
                    .bind(None::<i64>)
                    .bind(None::<uuid::Uuid>)
                    .bind(None::<&str>)
                    .bind(None::<&str>)
                    .bind(None::<&str>)
                    .bind(None::<&str>)
                    .bind(None::<&str>)
                    .bind(None::<&str>)
                    .bind(None::<&str>)
                    .bind(None::<&str>)
                    .bind(None::<DateTime<Utc>>),
            };
        }
        let written: std::result::Result<i32, sqlx::Error> = query.fetch_one(&self.pool).await;
        match written {
            Ok(written) => Ok(written == 1),
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42883") => {
                function_missing("guichet_confirm");
                Ok(false)
            }
            Err(e) => Err(map_err(e)),
        }
    }

    async fn occupancy(
        &self,
        commune: CommuneId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Occupied>> {
        let rows: Vec<OccupiedRow> = sqlx::query_as(sql::OCCUPANCY)
            .bind(commune)
            .bind(from)
            .bind(to)
            .bind(now)
            .bind(crate::store::looked_back_from(from))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(rows.into_iter().map(Occupied::from).collect())
    }

    /// The whole batch in one statement. Each row stands alone (no transaction needed): a
    /// worker's batch of sixteen was otherwise sixteen statements and a transaction, twice per
    /// message — a sixth of a booking's round trips under a rush.
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
        let started: Vec<NotificationId> = sqlx::query_scalar(sql::START_SENDS_AT_ONCE)
            .bind(ids)
            .bind(worker)
            .bind(now)
            .bind(lease_until)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        // In the order asked, as SQLite answers.
        Ok(ids.iter().copied().filter(|id| started.contains(id)).collect())
    }

    /// The messages sent in one statement; the rarer outcomes one by one.
    async fn finish_sends(
        &self,
        worker: &str,
        outcomes: &[(NotificationId, SendResult)],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut sent: (Vec<NotificationId>, Vec<Option<String>>, Vec<i32>, Vec<i64>, Vec<String>) =
            Default::default();
        for (id, result) in outcomes {
            if let SendResult::Sent {
                provider_id,
                segments,
                cost_micro_eur,
                kept_body,
            } = result
            {
                sent.0.push(*id);
                sent.1.push(provider_id.clone());
                sent.2.push(*segments);
                sent.3.push(*cost_micro_eur);
                sent.4.push(kept_body.clone());
            }
        }
        if !sent.0.is_empty() {
            let recorded: Vec<NotificationId> = sqlx::query_scalar(sql::FINISH_SENT_AT_ONCE)
                .bind(worker)
                .bind(now)
                .bind(&sent.0)
                .bind(&sent.1)
                .bind(&sent.2)
                .bind(&sent.3)
                .bind(&sent.4)
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
            for id in sent.0.iter().filter(|id| !recorded.contains(id)) {
                super::claim_lapsed(*id);
            }
        }
        for (id, result) in outcomes {
            if matches!(result, SendResult::Sent { .. }) {
                continue;
            }
            let done = finish_statement!(*id, result, worker, now)
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
            if done.rows_affected() == 0 {
                super::claim_lapsed(*id);
            }
        }
        Ok(())
    }
});

pub struct PgTx {
    tx: Transaction<'static, Postgres>,
}

/// `sql` with its parameters `$1`, `$2`, … numbered from `$1 + by`: to put statements written
/// on their own side by side in one.
fn shift_params(sql: &str, by: usize) -> String {
    rename_params(sql, |n| format!("${}", n + by))
}

/// `sql` with each parameter `$n` replaced by `name(n)`: to run a statement written on its own
/// in a function, on the function's arguments and variables.
fn rename_params(sql: &str, name: impl Fn(usize) -> String) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let mut digits = String::new();
        while let Some(d) = chars.next_if(char::is_ascii_digit) {
            digits.push(d);
        }
        match digits.parse::<usize>() {
            Ok(n) => out.push_str(&name(n)),
            Err(_) => {
                out.push(c);
                out.push_str(&digits);
            }
        }
    }
    out
}

/// The SQLSTATE by which [`HOLD_FUNCTION`]'s statements say "step by step" (the function
/// catches it, and the schema's refusals, undoes what it wrote and answers −2).
const STEP_BY_STEP: &str = "GH001";

/// [`HOLD_FUNCTION`]'s arguments, named and typed.
fn hold_arguments() -> Vec<String> {
    // The types sqlx binds them with (`bind_new_appointment!`, `bind_new_notification!`).
    const APPOINTMENT: &str = "uuid bigint bigint bigint bigint timestamptz timestamptz integer \
        integer text text text text text text timestamptz uuid text integer timestamptz timestamptz \
        timestamptz timestamptz text";
    let mut args: Vec<String> = typed_arguments("a", APPOINTMENT).collect();
    args.extend(
        [
            "p_now timestamptz",
            "p_seats_since timestamptz",
            "p_seat_lock text",
            "p_first integer",
            "p_last integer",
            "p_category text",
            "p_kinds text[]",
            "p_keys text[]",
            "p_claim_locks text[]",
            "p_exclusive boolean",
            "p_destination_claim integer",
            "p_destination_lock text",
            "p_destination text",
            "p_recent timestamptz",
            "p_max_recent bigint",
            "p_day_ago timestamptz",
            "p_max_day bigint",
            "p_commune bigint",
            "p_day text",
            "p_budget integer",
            "p_code_hash text",
            "p_code_expires timestamptz",
            "p_code_attempts integer",
        ]
        .map(String::from),
    );
    args.extend(typed_arguments("n", NOTIFICATION_TYPES));
    args
}

/// [`Store::hold_at_once`]'s function, made of the statements the step-by-step booking runs
/// (the same text, on the function's arguments), in the same order and under the same locks.
/// Its statements each see what was committed when they began, as in a transaction at READ
/// COMMITTED: a claim inserted after its lock is granted sees the claims committed before.
/// Its statements are planned once per connection, not for each of the first five calls as
/// PostgreSQL otherwise does (the plans are the same: every statement looks up by key).
/// It is created in the temporary schema of each of the holds' connections ([`HoldLane`]) when
/// the connection opens: always the definition of the running guichet, whatever another
/// instance or version runs beside it.
/// Arguments: the appointment as [`sql::INSERT_APPOINTMENT`] binds it (`a1`–`a24`, its seat
/// chosen here), then as [`PgStore::hold_at_once`] binds them. It answers the seat taken, 0 when
/// every seat is taken or being taken, −1 when the planning does not take bookings there, −2
/// when the step-by-step booking is to decide (nothing written, no lock held).
static HOLD_FUNCTION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let a = |n: usize| format!("a{n}");
    let seats = rename_params(sql::SEATS_OF, |n| {
        ["a3", "a6", "a7", "p_now", "a4", "p_seats_since"][n - 1].to_owned()
    });
    let insert = rename_params(insert_on_free_seat_sql(), |n| match n {
        8 => "v_seat".to_owned(),
        25 => "(p_seat_lock || v_seat)".to_owned(),
        26 => "p_first".to_owned(),
        27 => "p_last".to_owned(),
        n => a(n),
    });
    let claim_names = |n: usize, fourth: &str, fifth: &str, sixth: &str| match n {
        1 => "p_category".to_owned(),
        2 => "p_kinds[i]".to_owned(),
        3 => "p_keys[i]".to_owned(),
        4 => fourth.to_owned(),
        5 => fifth.to_owned(),
        _ => sixth.to_owned(),
    };
    let stale = rename_params(sql::DELETE_STALE_CLAIM_LOCKED, |n| {
        let destination = "(CASE WHEN i = p_destination_claim THEN p_destination_lock END)";
        claim_names(n, "p_now", "p_claim_locks[i]", destination)
    });
    let claim = rename_params(sql::INSERT_CLAIM, |n| {
        claim_names(n, "a1", "a2", "p_exclusive")
    });
    let lock_destination = rename_params(LOCK_KEY, |_| "p_destination_lock".to_owned());
    let limits = rename_params(sql::CODE_LIMITS, |n| {
        [
            "p_destination",
            "p_recent",
            "p_day_ago",
            "p_commune",
            "p_day",
        ][n - 1]
            .to_owned()
    });
    let code = |budget: bool| {
        rename_params(put_code_sql(budget), |n| match n {
            1 => "a1".to_owned(),
            2 => "p_destination".to_owned(),
            3 => "p_code_hash".to_owned(),
            4 => "p_code_expires".to_owned(),
            5 => "p_code_attempts".to_owned(),
            6 => "CAST(NULL AS timestamptz)".to_owned(),
            7 | 20 => "p_now".to_owned(),
            21 => "p_commune".to_owned(),
            22 => "p_day".to_owned(),
            23 => "p_budget".to_owned(),
            n => format!("n{}", n - 7),
        })
    };
    let (code_by_email, code_by_sms) = (code(false), code(true));
    let args = hold_arguments().join(", ");
    format!(
        "CREATE OR REPLACE FUNCTION pg_temp.guichet_hold({args}) RETURNS integer LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $hold$
DECLARE
    v_id bigint; v_commune bigint; v_name text; v_capacity integer; v_active boolean;
    v_busy integer[]; v_closed boolean; v_seat integer; v_placed boolean := false;
    v_locked record; v_recent bigint; v_today bigint; v_used bigint; v_taken bigint; i integer;
BEGIN
    {seats} INTO v_id, v_commune, v_name, v_capacity, v_active, v_busy, v_closed;
    IF NOT FOUND OR NOT v_active OR v_closed THEN
        RETURN -1;
    END IF;
    -- What is written from here is undone, its locks let go, before the answer leaves when the
    -- step-by-step booking is to decide: an error's answer would leave before them, and that
    -- booking, trying the same seat at once, would find its lock still held.
    BEGIN
        -- The lowest free seat first, as choose_seat: one another transaction is taking is skipped.
        FOR v_seat IN SELECT s FROM generate_series(1, v_capacity) AS s WHERE s <> ALL (v_busy) ORDER BY s LOOP
            {insert};
            IF FOUND THEN
                v_placed := true;
                EXIT;
            END IF;
        END LOOP;
        IF NOT v_placed THEN
            RETURN 0;
        END IF;
        FOR i IN 1 .. coalesce(array_length(p_kinds, 1), 0) LOOP
            {stale} INTO v_locked;
            {claim};
            IF NOT FOUND THEN
                RAISE EXCEPTION USING ERRCODE = '{STEP_BY_STEP}', MESSAGE = 'a claim to look at';
            END IF;
        END LOOP;
        IF p_destination_claim IS NULL THEN
            PERFORM {lock_destination};
        END IF;
        {limits} INTO v_recent, v_today, v_used;
        IF v_recent >= p_max_recent OR v_today >= p_max_day OR v_used >= p_budget THEN
            RAISE EXCEPTION USING ERRCODE = '{STEP_BY_STEP}', MESSAGE = 'a limit or the budget reached';
        END IF;
        IF p_budget IS NULL THEN
            {code_by_email} INTO v_taken;
        ELSE
            {code_by_sms} INTO v_taken;
            IF v_taken <> 1 THEN
                RAISE EXCEPTION USING ERRCODE = '{STEP_BY_STEP}', MESSAGE = 'the budget spent meanwhile';
            END IF;
        END IF;
        RETURN v_seat;
    EXCEPTION WHEN SQLSTATE '{STEP_BY_STEP}' OR integrity_constraint_violation THEN
        RETURN -2;
    END;
END $hold$",
        lock_destination = lock_destination
            .strip_prefix("SELECT ")
            .expect("LOCK_KEY is a SELECT"),
    )
});

/// The calls of [`HOLD_FUNCTION`] for batches of 1 to [`HOLDS_PER_BATCH`] holds, their
/// arguments as parameters: `CALL_HOLDS[n - 1]` answers n seats, one column each.
static CALL_HOLDS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
    (1..=HOLDS_PER_BATCH)
        .map(|calls| calls_sql("guichet_hold", hold_arguments().len(), calls))
        .collect()
});

/// Calls of the functions with every argument null: they find no planning, no appointment, and
/// answer at once, nothing written (see [`PgStore::connect`]).
static DRY_HOLD: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| dry_call_sql("guichet_hold", &hold_arguments()));
static DRY_CONFIRM: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| dry_call_sql("guichet_confirm", &confirm_arguments()));

/// `SELECT pg_temp.{function}(NULL::type, …)` for `arguments` as `name type`.
fn dry_call_sql(function: &str, arguments: &[String]) -> String {
    let nulls: Vec<String> = arguments
        .iter()
        .map(|a| {
            let (_, ty) = a.split_once(' ').expect("an argument is a name and a type");
            format!("NULL::{ty}")
        })
        .collect();
    format!("SELECT pg_temp.{function}({})", nulls.join(", "))
}

/// `SELECT pg_temp.{function}($1, …, ${arguments})`: the call of a function of
/// [`PgStore::connect`]'s, each argument a parameter.
fn call_sql(function: &str, arguments: usize) -> String {
    calls_sql(function, arguments, 1)
}

/// `SELECT pg_temp.{function}($1, …), pg_temp.{function}(…), …`: `calls` calls in one
/// statement, one column each, their arguments numbered on.
fn calls_sql(function: &str, arguments: usize, calls: usize) -> String {
    let call = |k: usize| {
        let params: Vec<String> = (k * arguments + 1..=(k + 1) * arguments)
            .map(|n| format!("${n}"))
            .collect();
        format!("pg_temp.{function}({})", params.join(", "))
    };
    let calls: Vec<String> = (0..calls).map(call).collect();
    format!("SELECT {}", calls.join(", "))
}

/// Arguments `{prefix}1 type`, `{prefix}2 type`, … of the space-separated `types`.
fn typed_arguments(prefix: &str, types: &'static str) -> impl Iterator<Item = String> {
    let prefix = prefix.to_owned();
    types
        .split_whitespace()
        .enumerate()
        .map(move |(i, t)| format!("{prefix}{} {t}", i + 1))
}

/// The types of a notification's columns as [`sql::INSERT_NOTIFICATION`] binds them
/// (`bind_new_notification!`).
const NOTIFICATION_TYPES: &str =
    "uuid bigint uuid text text text text text text text text timestamptz";

/// [`CONFIRM_FUNCTION`]'s arguments, named and typed: the confirmed appointment as
/// [`sql::UPDATE_APPOINTMENT`] binds it (`u1`–`u19`), the code's hash, now, the version read,
/// the personal link's hash, then [`ConfirmAtOnce::MESSAGES`] messages (`m1_1`–`m1_12`, …; a
/// null id where there is none).
fn confirm_arguments() -> Vec<String> {
    // The types sqlx binds them with (`bind_appointment_update!`).
    const APPOINTMENT: &str = "uuid bigint bigint timestamptz timestamptz integer integer text text \
        text text text timestamptz text integer timestamptz timestamptz timestamptz text";
    let mut args: Vec<String> = typed_arguments("u", APPOINTMENT).collect();
    args.extend(
        [
            "p_code_hash text",
            "p_now timestamptz",
            "p_version integer",
            "p_token_hash text",
        ]
        .map(String::from),
    );
    for k in 1..=ConfirmAtOnce::MESSAGES {
        args.extend(typed_arguments(&format!("m{k}_"), NOTIFICATION_TYPES));
    }
    args
}

/// [`Store::confirm_at_once`]'s function, made of the statements the step-by-step confirmation
/// runs (the same text, on the function's arguments), in the same order: the appointment
/// locked, the code used up with the confirmation ([`update_with_otp_sql`]), the personal link,
/// the messages. Created on each connection but the holds' own, planned once, as
/// [`HOLD_FUNCTION`]. It answers 1 when written; 0 when nothing was (the appointment changed or
/// lapsed since it was read, the code wrong or spent, a refusal of the schema).
static CONFIRM_FUNCTION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let lock = rename_params(sql::APPOINTMENT_FOR_UPDATE, |_| "u1".to_owned());
    let confirm = rename_params(update_with_otp_sql(), |n| match n {
        1 => "u1".to_owned(),
        2 => "p_code_hash".to_owned(),
        3 => "p_now".to_owned(),
        n => format!("u{}", n - 3),
    });
    let token = rename_params(sql::INSERT_TOKEN, |n| {
        ["p_token_hash", "u1", "p_now"][n - 1].to_owned()
    });
    let messages: String = (1..=ConfirmAtOnce::MESSAGES)
        .map(|k| {
            let insert = rename_params(sql::INSERT_NOTIFICATION, |n| match n {
                13 => "p_now".to_owned(),
                n => format!("m{k}_{n}"),
            });
            format!("        IF m{k}_1 IS NOT NULL THEN\n            {insert};\n        END IF;\n")
        })
        .collect();
    let args = confirm_arguments().join(", ");
    format!(
        "CREATE OR REPLACE FUNCTION pg_temp.guichet_confirm({args}) RETURNS integer LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $confirm$
DECLARE
    v_row record;
BEGIN
    {lock} INTO v_row;
    IF NOT FOUND OR v_row.version <> p_version OR v_row.status <> 'held'
        OR v_row.hold_expires_at <= p_now THEN
        RETURN 0;
    END IF;
    BEGIN
        {confirm};
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = '{STEP_BY_STEP}', MESSAGE = 'a code to look at';
        END IF;
        {token};
{messages}        RETURN 1;
    EXCEPTION WHEN SQLSTATE '{STEP_BY_STEP}' OR integrity_constraint_violation THEN
        RETURN 0;
    END;
END $confirm$"
    )
});

/// The call of [`CONFIRM_FUNCTION`], its arguments as parameters.
static CALL_CONFIRM: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| call_sql("guichet_confirm", confirm_arguments().len()));

/// [`StoreTx::put_code`] in one statement: the code (`$1`–`$7`, as [`sql::PUT_OTP`]), its message
/// (`$8`–`$20`, as [`sql::INSERT_NOTIFICATION`]) and, with `budget`, the SMS taken from it
/// (`$21`–`$23`, as [`sql::TAKE_SMS_BUDGET`]); it answers how many SMS were taken. Data-modifying
/// `WITH`s always run to the end.
fn put_code_sql(budget: bool) -> &'static str {
    static SQL: std::sync::LazyLock<[String; 2]> = std::sync::LazyLock::new(|| {
        let writes = format!(
            "WITH otp AS ({} RETURNING 1), message AS ({} RETURNING 1)",
            sql::PUT_OTP,
            shift_params(sql::INSERT_NOTIFICATION, 7)
        );
        [
            format!("{writes} SELECT CAST(1 AS BIGINT)"),
            format!(
                "{writes}, taken AS ({} RETURNING 1) SELECT count(*) FROM taken",
                shift_params(sql::TAKE_SMS_BUDGET, 20)
            ),
        ]
    });
    &SQL[usize::from(budget)]
}

/// [`StoreTx::insert_appointment_on_free_seat`] in one statement: [`sql::INSERT_APPOINTMENT`]'s
/// row (`$1`–`$24`) is only produced once the seat's locks (`$25`, buckets `$26`–`$27`, as
/// [`lock_buckets`] takes them) are taken without waiting: the subquery is evaluated once,
/// before the row is built and its constraints checked.
fn insert_on_free_seat_sql() -> &'static str {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let values = sql::INSERT_APPOINTMENT
            .strip_suffix(')')
            .expect("INSERT_APPOINTMENT ends with its VALUES");
        format!(
            "{} WHERE {}",
            values.replacen(" VALUES (", " SELECT ", 1),
            try_bucket_locks!("$25", "$26", "$27")
        )
    });
    &SQL
}

/// [`StoreTx::update_with_otp`] in one statement: [`sql::USE_OTP`] (`$1`–`$3`) in a
/// data-modifying `WITH`, and [`sql::UPDATE_APPOINTMENT`] (`$4`–`$22`) only where it used the
/// code up.
fn update_with_otp_sql() -> &'static str {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "WITH used AS ({} RETURNING 1) {} AND EXISTS (SELECT 1 FROM used)",
            sql::USE_OTP,
            shift_params(sql::UPDATE_APPOINTMENT, 3)
        )
    });
    &SQL
}

impl_store_tx!(PgTx {
    async fn commit(self: Box<Self>) -> Result<()> {
        self.tx.commit().await.map_err(map_err)
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        self.tx.rollback().await.map_err(map_err)
    }

    async fn update_with_otp(
        &mut self,
        a: &Appointment,
        code_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let used = query(sqlx::AssertSqlSafe(update_with_otp_sql()))
            .bind(a.id)
            .bind(code_hash)
            .bind(now);
        let updated = bind_appointment_update!(used, a)
            .execute(&mut *self.tx)
            .await
            .map_err(map_err)?
            .rows_affected();
        Ok(updated == 1)
    }

    async fn insert_appointment_on_free_seat(&mut self, a: &Appointment) -> Result<bool> {
        let (first, last) = crate::store::seat_buckets(a.starts_at, a.ends_at);
        let seat = a.seat.unwrap_or_default();
        let inserted = bind_new_appointment!(query(sqlx::AssertSqlSafe(insert_on_free_seat_sql())), a)
            .bind(crate::store::seat_lock_key(a.planning_id, seat))
            .bind(first)
            .bind(last)
            .execute(&mut *self.tx)
            .await
            .map_err(map_err)?
            .rows_affected();
        Ok(inserted == 1)
    }

    async fn put_code(
        &mut self,
        otp: &OtpRecord,
        n: &NewNotification,
        budget: Option<(CommuneId, chrono::NaiveDate, i32)>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        if budget.is_some_and(|(_, _, budget)| budget <= 0) {
            return Ok(false);
        }
        let query = sqlx::query_scalar(sqlx::AssertSqlSafe(put_code_sql(budget.is_some())))
            .bind(otp.appointment_id)
            .bind(&otp.destination)
            .bind(&otp.code_hash)
            .bind(otp.expires_at)
            .bind(otp.attempts_left)
            .bind(otp.used_at)
            .bind(otp.created_at);
        let query = bind_new_notification!(query, n).bind(now);
        let query = match budget {
            Some((commune, day, budget)) => query
                .bind(commune)
                .bind(day.format("%Y-%m-%d").to_string())
                .bind(budget),
            None => query,
        };
        let taken: i64 = query.fetch_one(&mut *self.tx).await.map_err(map_err)?;
        Ok(taken == 1)
    }

    async fn seats_of(
        &mut self,
        planning: PlanningId,
        location: LocationId,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<Seats>> {
        seats_of(&mut *self.tx, planning, location, start, end, now).await
    }
});

/// At most this many holds go to the database in one statement.
const HOLDS_PER_BATCH: usize = 32;

/// At most this many statements of holds are under way at once: as many as the machine has cores
/// (and two at least). More would not write faster: the holds of one commune wait for each
/// other on its SMS counter, and PostgreSQL shares the cores with guichet.
fn hold_writers() -> usize {
    // Read once: on Linux the answer comes from cgroup files.
    static WRITERS: std::sync::LazyLock<usize> = std::sync::LazyLock::new(|| {
        std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
    });
    *WRITERS
}

/// The holds waiting to be written, and how many writers are writing.
///
/// When a commune opens its slots, a hundred holds arrive within a few tens of milliseconds, on
/// a machine whose cores PostgreSQL and guichet share. Written one by one, each paid for its
/// own round trip, statement, transaction and commit, and they queued for connections behind
/// one another. Holds that arrive while [`hold_writers`] statements are under way now wait here
/// instead, and the next statement writes up to [`HOLDS_PER_BATCH`] of them, one call of the
/// hold function each: with the load tool, 15 to 30 % more bookings per second, for less CPU
/// per booking.
/// A hold arriving alone is written at once, alone.
///
/// The holds of one statement are one transaction, committed together. Each call still decides
/// alone: it sees the seats, claims and codes the calls before it wrote (a seat lock another
/// call of the same transaction holds does not stop it, but the exclusion constraint does), and
/// what it writes is undone alone when it answers "step by step" (its block is a savepoint).
/// The constraints that keep invariants 1 and 2 hold within a transaction as between
/// transactions. If the statement itself fails (a lock waited for too long, a deadlock),
/// nothing of it is written and each hold is written again alone.
#[derive(Default)]
pub(super) struct HoldQueue {
    state: std::sync::Mutex<HoldQueueState>,
    /// Statements that wrote holds, for [`PgStore::hold_statements`].
    statements: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct HoldQueueState {
    waiting: std::collections::VecDeque<QueuedHold>,
    writers: usize,
    /// The citizens (claims' keys and codes' destinations) of the holds being written, with how
    /// many holds of theirs: a hold of one of them waits for that statement to end.
    writing: std::collections::HashMap<String, usize>,
}

impl HoldQueueState {
    /// Takes the next batch from the waiting holds, in order: up to [`HOLDS_PER_BATCH`] of
    /// them, skipping (and keeping in place) those of citizens whose other holds are being
    /// written. Two statements with holds of one citizen (a double tap) would wait for each
    /// other: one on the citizen's claim that the other made, the other on the commune's SMS
    /// counter that the first holds — a deadlock, found after a second, and a statement's
    /// holds all written again alone.
    /// Answers the batch and its citizens, to give back to [`HoldQueueState::written`].
    fn take_batch(&mut self) -> (Vec<QueuedHold>, Vec<String>) {
        let mut batch = Vec::new();
        let mut kept = std::collections::VecDeque::new();
        while let Some(hold) = self.waiting.pop_front() {
            if batch.len() == HOLDS_PER_BATCH
                || hold.citizen().any(|key| self.writing.contains_key(key))
            {
                kept.push_back(hold);
            } else {
                batch.push(hold);
            }
        }
        self.waiting = kept;
        let citizens: Vec<String> = batch
            .iter()
            .flat_map(QueuedHold::citizen)
            .map(str::to_owned)
            .collect();
        for key in &citizens {
            *self.writing.entry(key.clone()).or_default() += 1;
        }
        (batch, citizens)
    }

    /// The citizens of a batch that [`HoldQueueState::take_batch`] gave, whose statement has
    /// ended.
    fn written(&mut self, citizens: &[String]) {
        for key in citizens {
            if let Some(count) = self.writing.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    self.writing.remove(key);
                }
            }
        }
    }
}

impl HoldQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, HoldQueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a statement that wrote `holds`.
    fn written(&self, holds: usize) {
        self.statements
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics::histogram!("guichet_holds_per_statement").record(holds as f64);
    }
}

impl std::fmt::Debug for HoldQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("HoldQueue")
            .field("waiting", &state.waiting.len())
            .field("writers", &state.writers)
            .finish()
    }
}

/// A thread of its own, with connections of its own, for the statements that write holds.
///
/// In a rush the request threads have hundreds of tasks queued: each listing, each request read
/// or answered. A task of theirs waiting on the database was polled again only when its turn
/// came round, after each step of a statement (a connection, the query sent, the answer read).
/// With the load tool (1,000 citizens on 100 slots), the first writer started 7 to 13 ms after
/// the first hold, and a statement of 32 holds took 27 to 80 ms. The writers now have a thread
/// to themselves that sleeps while PostgreSQL works and wakes as soon as it answers; the
/// connections are opened on it, so that their sockets are watched by its own event loop. The
/// first writer starts at once, and a statement of 32 holds takes 18 to 30 ms when it waits
/// for no other.
/// The thread ends, its connections closed, when the last clone of its store is dropped.
struct HoldLane {
    runtime: tokio::runtime::Handle,
    pool: PgPool,
    /// Dropped with the lane: the thread then closes its connections and ends.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl std::fmt::Debug for HoldLane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HoldLane")
            .field("pool", &self.pool)
            .finish()
    }
}

impl HoldLane {
    /// Starts the thread and opens its connections ([`hold_writers`] of them, each with the
    /// hold's function, [`HOLD_FUNCTION`]).
    async fn start(options: PgConnectOptions) -> Result<Self> {
        let (ready, started) = tokio::sync::oneshot::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("guichet-holds")
            .build()
            .map_err(|e| StoreError::Transient(format!("the holds' thread: {e}")))?;
        std::thread::Builder::new()
            .name("guichet-holds".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let writers = u32::try_from(hold_writers()).unwrap_or(u32::MAX);
                    let pool = PgPoolOptions::new()
                        .max_connections(writers)
                        .min_connections(writers)
                        .acquire_timeout(LOCK_WAIT * 3)
                        .after_connect(|conn, _| Box::pin(create_function(conn, Function::Hold)))
                        .connect_with(options)
                        .await;
                    let pool = match pool {
                        Ok(pool) => pool,
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return;
                        }
                    };
                    let lane = (tokio::runtime::Handle::current(), pool.clone());
                    if ready.send(Ok(lane)).is_ok() {
                        // Until the store is dropped (an error: the sender is gone).
                        let _ = stopped.await;
                    }
                    pool.close().await;
                });
            })
            .map_err(|e| StoreError::Transient(format!("the holds' thread: {e}")))?;
        let (runtime, pool) = started
            .await
            .map_err(|_| StoreError::Transient("the holds' thread stopped".into()))?
            .map_err(map_err)?;
        Ok(Self {
            runtime,
            pool,
            _stop: stop,
        })
    }
}

/// A [`HoldAtOnce`], owned while it waits, and where its answer goes.
struct QueuedHold {
    appointment: Appointment,
    claims: Vec<Claim>,
    exclusive: bool,
    destination_claim: Option<usize>,
    otp: OtpRecord,
    message: NewNotification,
    recent: (DateTime<Utc>, i64),
    day_ago: (DateTime<Utc>, i64),
    sms_day: (CommuneId, chrono::NaiveDate),
    budget: Option<i32>,
    now: DateTime<Utc>,
    answer: tokio::sync::oneshot::Sender<Result<HeldAtOnce>>,
}

impl QueuedHold {
    fn new(h: &HoldAtOnce<'_>, answer: tokio::sync::oneshot::Sender<Result<HeldAtOnce>>) -> Self {
        Self {
            appointment: h.appointment.clone(),
            claims: h.claims.to_vec(),
            exclusive: h.exclusive,
            destination_claim: h.destination_claim,
            otp: h.otp.clone(),
            message: h.message.clone(),
            recent: h.recent,
            day_ago: h.day_ago,
            sms_day: h.sms_day,
            budget: h.budget,
            now: h.now,
            answer,
        }
    }

    /// Who the hold is for: its claims' keys (phone, e-mail, ANTS numbers) and its code's
    /// destination.
    fn citizen(&self) -> impl Iterator<Item = &str> {
        self.claims
            .iter()
            .map(|claim| claim.key.as_str())
            .chain([self.otp.destination.as_str()])
    }

    fn hold(&self) -> HoldAtOnce<'_> {
        HoldAtOnce {
            appointment: &self.appointment,
            claims: &self.claims,
            exclusive: self.exclusive,
            destination_claim: self.destination_claim,
            otp: &self.otp,
            message: &self.message,
            recent: self.recent,
            day_ago: self.day_ago,
            sms_day: self.sms_day,
            budget: self.budget,
            now: self.now,
        }
    }

    /// Tells the hold's request (gone if it was given up: the seat stays held until it lapses).
    fn answer(self, answer: Result<HeldAtOnce>) {
        let _ = self.answer.send(answer);
    }
}

/// What the hold function's answer means (see [`HOLD_FUNCTION`]).
fn held(seat: i32) -> HeldAtOnce {
    match seat {
        seat if seat > 0 => HeldAtOnce::Held(seat),
        0 => HeldAtOnce::Taken,
        _ => HeldAtOnce::StepByStep,
    }
}

/// A writer's place. It gives it back when it finds nothing left to write, in the same lock as
/// it looks, so that a hold queued meanwhile never lacks a writer. A writer that stops otherwise
/// is dropped: after a panic another writer takes over what waits; when its runtime shuts down,
/// what waits is dropped, and each waiting request hears that its hold was not written.
struct HoldWriter {
    store: PgStore,
    done: bool,
    /// The citizens of the batch being written ([`HoldQueueState::writing`]).
    citizens: Vec<String>,
}

impl Drop for HoldWriter {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.store.holds.lock();
        state.writers -= 1;
        state.written(&self.citizens);
        if state.waiting.is_empty() {
            return;
        }
        // Not when the runtime is closing: a task spawned then is dropped at once, and with it
        // a writer that would spawn another, and so on.
        if std::thread::panicking()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            state.writers += 1;
            drop(state);
            runtime.spawn(HoldWriter::new(self.store.clone()).write());
        } else {
            state.waiting.clear();
        }
    }
}

impl HoldWriter {
    fn new(store: PgStore) -> Self {
        Self {
            store,
            done: false,
            citizens: Vec::new(),
        }
    }

    /// Writes what waits, a batch at a time, until nothing does.
    async fn write(mut self) {
        loop {
            let batch: Vec<QueuedHold> = {
                let mut state = self.store.holds.lock();
                state.written(&std::mem::take(&mut self.citizens));
                // A request given up before its hold is written: nothing is written for it.
                state.waiting.retain(|hold| !hold.answer.is_closed());
                let (mut batch, citizens) = state.take_batch();
                self.citizens = citizens;
                if batch.is_empty() {
                    // Nothing waits, or what waits is for the writers under way to take next.
                    state.writers -= 1;
                    self.done = true;
                    return;
                }
                // Each call takes its commune's SMS counter for the day and keeps it until the
                // statement commits: two statements take them in the same order, never each
                // waiting for the other's.
                batch.sort_by_key(|hold| hold.sms_day);
                batch
            };
            match self.store.write_holds(&batch).await {
                Ok(seats) => {
                    self.store.holds.written(batch.len());
                    for (hold, seat) in batch.into_iter().zip(seats) {
                        hold.answer(Ok(held(seat)));
                    }
                }
                Err(e) if batch.len() == 1 => {
                    let hold = batch.into_iter().next().expect("a batch of one");
                    hold.answer(hold_error(e));
                }
                // Refused by the database: nothing of it was written. Alone, each hold gets
                // its own answer (a function missing on this connection included).
                Err(sqlx::Error::Database(e)) => {
                    tracing::debug!(error = %e, holds = batch.len(), "holds written together were refused; each is written alone");
                    for hold in batch {
                        if hold.answer.is_closed() {
                            continue;
                        }
                        let seat = self.store.write_holds(std::slice::from_ref(&hold)).await;
                        let answer = seat.map_or_else(hold_error, |seats| {
                            self.store.holds.written(1);
                            Ok(held(seats[0]))
                        });
                        hold.answer(answer);
                    }
                }
                // The database out of reach: every hold hears it.
                Err(e) => {
                    for hold in batch {
                        hold.answer(hold_error(copy_of(&e)));
                    }
                }
            }
        }
    }
}

/// A hold's error: the store's, or "step by step" when this connection lacks the function.
fn hold_error(e: sqlx::Error) -> Result<HeldAtOnce> {
    match e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("42883") => {
            function_missing("guichet_hold");
            Ok(HeldAtOnce::StepByStep)
        }
        e => Err(map_err(e)),
    }
}

/// The same error for another of the holds it stopped (sqlx's errors cannot be cloned).
fn copy_of(e: &sqlx::Error) -> sqlx::Error {
    match e {
        sqlx::Error::PoolTimedOut => sqlx::Error::PoolTimedOut,
        sqlx::Error::PoolClosed => sqlx::Error::PoolClosed,
        sqlx::Error::Io(io) => sqlx::Error::Io(std::io::Error::new(io.kind(), io.to_string())),
        e => sqlx::Error::Protocol(e.to_string()),
    }
}

impl PgStore {
    /// Writes `h` with the holds that wait with it ([`HoldQueue`]).
    async fn queue_hold(&self, h: &HoldAtOnce<'_>) -> Result<HeldAtOnce> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let start_writer = {
            let mut state = self.holds.lock();
            state.waiting.push_back(QueuedHold::new(h, answer));
            let start = state.writers < hold_writers();
            if start {
                state.writers += 1;
            }
            start
        };
        if start_writer {
            // A task of its own: the request that starts it may be given up, the holds it
            // writes for others may not.
            self.lane
                .runtime
                .spawn(HoldWriter::new(self.clone()).write());
        }
        answered.await.unwrap_or_else(|_| {
            Err(StoreError::Transient(
                "the writer of this hold stopped before answering".into(),
            ))
        })
    }

    /// One statement that calls the hold function for each of `batch`, in order: the seats.
    async fn write_holds(
        &self,
        batch: &[QueuedHold],
    ) -> std::result::Result<Vec<i32>, sqlx::Error> {
        use sqlx::Row;
        let mut query = sqlx::query(sqlx::AssertSqlSafe(CALL_HOLDS[batch.len() - 1].as_str()));
        for queued in batch {
            query = bind_hold(query, &queued.hold());
        }
        let row = query.fetch_one(&self.lane.pool).await?;
        (0..batch.len()).map(|i| row.try_get::<i32, _>(i)).collect()
    }
}

/// `query` with the arguments of one call of [`HOLD_FUNCTION`] for `h` bound after the others.
fn bind_hold<'q>(
    query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    h: &HoldAtOnce<'_>,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    let a = h.appointment;
    let (first, last) = crate::store::seat_buckets(a.starts_at, a.ends_at);
    let kinds: Vec<&str> = h.claims.iter().map(|c| c.kind.as_str()).collect();
    let keys: Vec<&str> = h.claims.iter().map(|c| c.key.as_str()).collect();
    let locks: Vec<String> = h.claims.iter().map(crate::store::claim_lock).collect();
    let category = h.claims.first().map(|c| c.category.as_str());
    let query = bind_new_appointment!(query, a)
        .bind(h.now)
        .bind(crate::store::looked_back_from(a.starts_at))
        // The function adds the seat's number.
        .bind(crate::store::seat_lock_prefix(a.planning_id))
        .bind(first)
        .bind(last)
        .bind(category)
        .bind(kinds)
        .bind(keys)
        .bind(locks)
        .bind(h.exclusive)
        .bind(h.destination_claim.and_then(|i| i32::try_from(i + 1).ok()))
        .bind(crate::store::destination_lock(&h.otp.destination))
        .bind(&h.otp.destination)
        .bind(h.recent.0)
        .bind(h.recent.1)
        .bind(h.day_ago.0)
        .bind(h.day_ago.1)
        .bind(h.sms_day.0)
        .bind(h.sms_day.1.format("%Y-%m-%d").to_string())
        .bind(h.budget)
        .bind(&h.otp.code_hash)
        .bind(h.otp.expires_at)
        .bind(h.otp.attempts_left);
    bind_new_notification!(query, h.message)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parameters_are_numbered_on() {
        assert_eq!(
            super::shift_params("VALUES ($1, $2, 'a$', $10) WHERE x < $3", 7),
            "VALUES ($8, $9, 'a$', $17) WHERE x < $10"
        );
    }

    use super::tls_pointless;

    #[test]
    fn tls_is_left_out_only_for_this_machine_and_when_nobody_asked() {
        let local = "postgres://postgres@127.0.0.1/test";
        assert!(tls_pointless(local, "127.0.0.1", None));
        assert!(tls_pointless(
            "postgres://u@localhost/db",
            "localhost",
            None
        ));
        assert!(tls_pointless("postgres://u@[::1]/db", "[::1]", None));
        assert!(tls_pointless(
            "postgres://u@127.0.0.2:5433/db?application_name=x",
            "127.0.0.2",
            None
        ));
        // Another machine, or a mode asked for in the URL or the environment: as asked.
        assert!(!tls_pointless(
            "postgres://u@db.example.org/db",
            "db.example.org",
            None
        ));
        assert!(!tls_pointless("postgres://u@10.0.0.5/db", "10.0.0.5", None));
        assert!(!tls_pointless(
            &format!("{local}?sslmode=require"),
            "127.0.0.1",
            None
        ));
        assert!(!tls_pointless(
            &format!("{local}?a=b&sslmode=prefer"),
            "127.0.0.1",
            None
        ));
        assert!(!tls_pointless(
            &format!("{local}?ssl-mode=require"),
            "127.0.0.1",
            None
        ));
        assert!(!tls_pointless(
            &format!("{local}?sslcert=c.pem&sslkey=k.pem"),
            "127.0.0.1",
            None
        ));
        assert!(!tls_pointless(local, "127.0.0.1", Some("PGSSLMODE")));
    }
}
