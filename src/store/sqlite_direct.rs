//! SQLite write transactions run on the calling thread, through a connection of their own, rather
//! than through sqlx's worker thread.
//!
//! Why: sqlx runs each SQLite connection on a thread of its own, so every statement is two thread
//! hand-offs. Under a rush on a small, virtualised machine each hand-off waits for a CPU: about
//! 200 µs per statement was measured, some twenty statements per booking, all of them inside the
//! one writer's turn — the turn, not SQLite, was what limited bookings per second. Run here, a
//! statement costs what SQLite costs (a few microseconds; the commit's WAL write more).
//!
//! The builder mirrors the part of sqlx's that the shared store code uses — `query(sql).bind(v)
//! .execute(&mut *tx)`, `query_as`, `query_scalar`, `fetch_one`/`fetch_optional`/`fetch_all` —
//! so the SQL and its bindings stay written once for both backends (`store/shared.rs`). The work
//! is done when the method is called; the returned future is only ready. Values
//! are stored as sqlx stores them (UUIDs as 16-byte blobs, instants as Unix seconds, booleans as
//! 0/1), so what one writes the other reads.

use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::types::{FromSql, FromSqlError, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, Row, Statement};
use std::future::{Ready, ready};
use std::marker::PhantomData;
use std::time::Duration;
use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;

/// Prepared statements kept per connection: every statement the write paths run, with room.
const STATEMENT_CACHE: usize = 128;

/// Opens the write connection with the settings sqlx gives its own (see `SqliteStore::connect`):
/// WAL, `synchronous = NORMAL`, foreign keys, a busy timeout for other processes on the file.
pub fn open(filename: &str, in_memory: bool, busy: Duration) -> rusqlite::Result<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let name = if in_memory {
        // sqlx names its in-memory databases `file:sqlx-in-memory-N` in shared-cache mode:
        // the same name reaches the same database.
        flags |= OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_MEMORY
            | OpenFlags::SQLITE_OPEN_SHARED_CACHE;
        format!("{filename}?mode=memory&cache=shared")
    } else {
        filename.to_owned()
    };
    let conn = Connection::open_with_flags(name, flags)?;
    conn.busy_timeout(busy)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    if !in_memory {
        conn.pragma_update(None, "journal_mode", "WAL")?;
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Read connections used on the calling thread, for the reads every booking makes (the same
/// hand-off as writes otherwise). Taken one per read, given back after it; opened as needed.
pub struct Readers {
    idle: std::sync::Mutex<Vec<Connection>>,
    filename: String,
    in_memory: bool,
    busy: Duration,
}

/// Idle read connections kept; more are opened when reads overlap, and closed after.
const READERS_KEPT: usize = 4;

impl Readers {
    pub fn new(filename: &str, in_memory: bool, busy: Duration) -> Self {
        Self {
            idle: std::sync::Mutex::default(),
            filename: filename.to_owned(),
            in_memory,
            busy,
        }
    }

    pub fn take(&self) -> rusqlite::Result<Reader<'_>> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => open(&self.filename, self.in_memory, self.busy)?,
        };
        Ok(Reader {
            conn: Some(conn),
            readers: self,
        })
    }
}

pub struct Reader<'a> {
    conn: Option<Connection>,
    readers: &'a Readers,
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let mut idle = self.readers.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < READERS_KEPT && conn.is_autocommit() {
                idle.push(conn);
            }
        }
    }
}

impl std::ops::Deref for Reader<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("taken until dropped")
    }
}

impl std::ops::DerefMut for Reader<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn.as_mut().expect("taken until dropped")
    }
}

/// A write transaction on the write connection, holding the writer's turn. Rolled back when
/// dropped without [`WriteTx::commit`].
pub struct WriteTx {
    conn: OwnedMutexGuard<Connection>,
    open: bool,
}

impl WriteTx {
    /// `BEGIN IMMEDIATE`: the write lock is taken now, not at the first write (a deferred
    /// transaction that upgrades can fail at once with `SQLITE_BUSY`).
    pub fn begin(conn: OwnedMutexGuard<Connection>) -> rusqlite::Result<Self> {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(Self { conn, open: true })
    }

    pub fn commit(mut self) -> Ready<rusqlite::Result<()>> {
        let done = self.conn.execute_batch("COMMIT");
        self.open = done.is_err();
        ready(done)
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        // A failed COMMIT leaves the transaction open too; either way the connection must be
        // back in autocommit before the next writer's turn.
        if self.open
            && !self.conn.is_autocommit()
            && let Err(e) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::error!(error = %e, "rollback of an SQLite write transaction failed");
        }
    }
}

impl std::ops::Deref for WriteTx {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

/// What an execution changed, as sqlx reports it.
#[derive(Debug)]
pub struct Done(u64);

impl Done {
    pub fn rows_affected(&self) -> u64 {
        self.0
    }
}

type Param<'q> = Box<dyn ToSql + Send + Sync + 'q>;

pub struct Query<'q> {
    sql: &'q str,
    params: Vec<Param<'q>>,
}

pub fn query(sql: &str) -> Query<'_> {
    Query {
        sql,
        params: Vec::new(),
    }
}

pub fn query_as<T: FromRow>(sql: &str) -> QueryAs<'_, T> {
    QueryAs {
        query: query(sql),
        row: PhantomData,
    }
}

pub fn query_scalar<T: Decode>(sql: &str) -> QueryScalar<'_, T> {
    QueryScalar {
        query: query(sql),
        value: PhantomData,
    }
}

/// Values bound to a statement: what sqlx binds, encoded as sqlx encodes it for SQLite.
pub trait Bind: Send + Sync {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>>;
}

struct Bound<T>(T);

impl<T: Bind> ToSql for Bound<T> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        self.0.to_sql()
    }
}

macro_rules! bind_as_rusqlite {
    ($($t:ty),*) => {
        $(impl Bind for $t {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                ToSql::to_sql(self)
            }
        })*
    };
}
bind_as_rusqlite!(i64, i32, bool, String, str);

impl Bind for Uuid {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Blob(self.as_bytes())))
    }
}

/// Dates as sqlx writes them: `YYYY-MM-DD`.
impl Bind for NaiveDate {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.format("%Y-%m-%d").to_string()))
    }
}

impl<T: Bind> Bind for Option<T> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        match self {
            Some(v) => v.to_sql(),
            None => Ok(ToSqlOutput::Borrowed(ValueRef::Null)),
        }
    }
}

impl<T: Bind + ?Sized> Bind for &T {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        (**self).to_sql()
    }
}

impl<'q> Query<'q> {
    pub fn bind<T: Bind + 'q>(mut self, value: T) -> Self {
        self.params.push(Box::new(Bound(value)));
        self
    }

    pub fn execute(self, conn: &Connection) -> Ready<rusqlite::Result<Done>> {
        let run = || {
            let mut stmt = conn.prepare_cached(self.sql)?;
            bind_all(&mut stmt, &self.params)?;
            Ok(Done(stmt.raw_execute()? as u64))
        };
        ready(run())
    }

    fn rows<T>(
        self,
        conn: &Connection,
        limit: usize,
        mut each: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<Vec<T>> {
        let mut stmt = conn.prepare_cached(self.sql)?;
        bind_all(&mut stmt, &self.params)?;
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while out.len() < limit {
            match rows.next()? {
                Some(row) => out.push(each(row)?),
                None => break,
            }
        }
        Ok(out)
    }

    fn optional<T>(
        self,
        conn: &Connection,
        each: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<Option<T>> {
        self.rows(conn, 1, each).map(|mut rows| rows.pop())
    }

    fn one<T>(
        self,
        conn: &Connection,
        each: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.optional(conn, each)?
            .ok_or(rusqlite::Error::QueryReturnedNoRows)
    }
}

/// Binds by the number in `$N` (or `?N`), as sqlx does: SQLite numbers named parameters in
/// order of first appearance, which is not always `N`.
fn bind_all(stmt: &mut Statement<'_>, params: &[Param<'_>]) -> rusqlite::Result<()> {
    let mut next = 0;
    for index in 1..=stmt.parameter_count() {
        let n = match stmt.parameter_name(index) {
            Some(name) => name[1..]
                .parse::<usize>()
                .map_err(|_| rusqlite::Error::InvalidParameterName(name.to_owned()))?,
            None => {
                next += 1;
                next
            }
        };
        match params.get(n.wrapping_sub(1)) {
            Some(value) => stmt.raw_bind_parameter(index, value)?,
            // Unbound parameters are NULL, as with sqlx (a cached statement keeps its last
            // bindings otherwise).
            None => stmt.raw_bind_parameter(index, rusqlite::types::Null)?,
        }
    }
    Ok(())
}

pub struct QueryAs<'q, T> {
    query: Query<'q>,
    row: PhantomData<fn() -> T>,
}

impl<'q, T: FromRow> QueryAs<'q, T> {
    pub fn bind<V: Bind + 'q>(mut self, value: V) -> Self {
        self.query = self.query.bind(value);
        self
    }

    pub fn fetch_all(self, conn: &Connection) -> Ready<rusqlite::Result<Vec<T>>> {
        ready(self.query.rows(conn, usize::MAX, T::from_row))
    }

    pub fn fetch_optional(self, conn: &Connection) -> Ready<rusqlite::Result<Option<T>>> {
        ready(self.query.optional(conn, T::from_row))
    }

    pub fn fetch_one(self, conn: &Connection) -> Ready<rusqlite::Result<T>> {
        ready(self.query.one(conn, T::from_row))
    }
}

pub struct QueryScalar<'q, T> {
    query: Query<'q>,
    value: PhantomData<fn() -> T>,
}

impl<'q, T: Decode> QueryScalar<'q, T> {
    pub fn bind<V: Bind + 'q>(mut self, value: V) -> Self {
        self.query = self.query.bind(value);
        self
    }

    pub fn fetch_all(self, conn: &Connection) -> Ready<rusqlite::Result<Vec<T>>> {
        ready(self.query.rows(conn, usize::MAX, |row| column(row, 0)))
    }

    pub fn fetch_optional(self, conn: &Connection) -> Ready<rusqlite::Result<Option<T>>> {
        ready(self.query.optional(conn, |row| column(row, 0)))
    }

    pub fn fetch_one(self, conn: &Connection) -> Ready<rusqlite::Result<T>> {
        ready(self.query.one(conn, |row| column(row, 0)))
    }
}

/// A column's value, decoded as sqlx decodes it from SQLite.
pub trait Decode: Sized {
    fn decode(value: ValueRef<'_>) -> Result<Self, FromSqlError>;
}

macro_rules! decode_as_rusqlite {
    ($($t:ty),*) => {
        $(impl Decode for $t {
            fn decode(value: ValueRef<'_>) -> Result<Self, FromSqlError> {
                <$t as FromSql>::column_result(value)
            }
        })*
    };
}
decode_as_rusqlite!(i64, i32, bool, String);

impl Decode for Uuid {
    fn decode(value: ValueRef<'_>) -> Result<Self, FromSqlError> {
        Uuid::from_slice(value.as_blob()?).map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

/// Instants are stored as Unix seconds.
impl Decode for DateTime<Utc> {
    fn decode(value: ValueRef<'_>) -> Result<Self, FromSqlError> {
        let seconds = value.as_i64()?;
        DateTime::from_timestamp(seconds, 0).ok_or(FromSqlError::OutOfRange(seconds))
    }
}

impl<T: Decode> Decode for Option<T> {
    fn decode(value: ValueRef<'_>) -> Result<Self, FromSqlError> {
        match value {
            ValueRef::Null => Ok(None),
            value => T::decode(value).map(Some),
        }
    }
}

pub fn column<T: Decode, I: rusqlite::RowIndex + Copy>(
    row: &Row<'_>,
    index: I,
) -> rusqlite::Result<T> {
    let value = row.get_ref(index)?;
    let data_type = value.data_type();
    T::decode(value).map_err(|e| {
        let at = index.idx(row.as_ref()).unwrap_or_default();
        match e {
            FromSqlError::InvalidType => rusqlite::Error::InvalidColumnType(
                at,
                row.as_ref().column_name(at).unwrap_or("?").to_owned(),
                data_type,
            ),
            e => rusqlite::Error::FromSqlConversionFailure(at, data_type, Box::new(e)),
        }
    })
}

/// A row decoded by column name, as sqlx's `FromRow` does.
pub trait FromRow: Sized {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self>;
}

impl<A: Decode, B: Decode> FromRow for (A, B) {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok((column(row, 0)?, column(row, 1)?))
    }
}

impl<A: Decode, B: Decode, C: Decode> FromRow for (A, B, C) {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok((column(row, 0)?, column(row, 1)?, column(row, 2)?))
    }
}

/// `FromRow` for row structs, field by field by name.
macro_rules! from_row {
    ($($row:ident { $($field:ident),* $(,)? })*) => {
        $(impl $crate::store::sqlite_direct::FromRow for $row {
            fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
                Ok($row { $($field: $crate::store::sqlite_direct::column(row, stringify!($field))?),* })
            }
        })*
    };
}
pub(crate) use from_row;
