//! The PostgreSQL store, for platforms that run several guichet instances. Write transactions run
//! at READ COMMITTED and lock what they decide on: the planning rows a booking may take a seat
//! on, and the appointment being changed (`SELECT … FOR UPDATE`). The exclusion constraint
//! `appointments_no_overlap` backs this up in the schema itself. A lock wait longer than
//! [`LOCK_WAIT`], a deadlock or a serialization failure is reported as transient, and the engine
//! runs the transaction again.

use super::rows::*;
use super::{
    Agent, AgentId, AuditEntry, Backend, CallRecord, Claim, ClaimHolder, CommunePlatformSettings,
    CommuneSettings, IdempotencyState, LOCK_WAIT, NewAgent, NewClosure, NewCommune, NewLocation,
    NewNotification, NewOpeningRule, NewPlanning, NewService, Notification, NotificationId,
    OtpRecord, Result, Seats, SendResult, SmsAction, Store, StoreError, StoreTx, VoiceSettings,
    sql,
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

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
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

/// Advisory locks are named by `hashtext(current_schema() || key)`: they are shared by the
/// whole database, and two installations in two schemas of one database (or the tests, a
/// schema each) must not hold each other's — a booking does not wait for a seat whose lock is
/// held, it counts it taken.
///
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
    let free: Option<bool> = over_buckets(
        "SELECT bool_and(pg_try_advisory_xact_lock(hashtext(current_schema() || $1), b)) \
         FROM generate_series($2, $3) AS b",
    )
    .fetch_one(&mut **tx)
    .await
    .map_err(map_err)?
    .get(0);
    if free == Some(true) {
        return Ok(false);
    }
    over_buckets(
        "SELECT count(pg_advisory_xact_lock(hashtext(current_schema() || $1), b)) FROM generate_series($2, $3) AS b",
    )
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

/// Serialises the transactions that decide on `key` (a citizen's identity, a destination)
/// until they end.
async fn lock_key(tx: &mut Transaction<'static, Postgres>, key: &str) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext(current_schema() || $1))")
        .bind(key)
        .execute(&mut **tx)
        .await
        .map_err(map_err)?;
    Ok(())
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
/// transactions' round trips).
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
            .connect_with(options)
            .await
            .map_err(map_err)?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
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
    let mut out = String::with_capacity(sql.len() + 16);
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '$' {
            let mut digits = String::new();
            while let Some(d) = chars.next_if(char::is_ascii_digit) {
                digits.push(d);
            }
            if let Ok(n) = digits.parse::<usize>() {
                out.push_str(&(n + by).to_string());
            } else {
                out.push_str(&digits);
            }
        }
    }
    out
}

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
            "{} WHERE (SELECT bool_and(pg_try_advisory_xact_lock(hashtext(current_schema() || $25), b)) \
             FROM generate_series($26, $27) AS b)",
            values.replacen(" VALUES (", " SELECT ", 1)
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
