//! Statements run on a pooled sqlx connection's own SQLite handle, for the queue's writes.
//!
//! sqlx runs each SQLite connection on a thread of its own and sends every statement there and
//! back: about 70 µs a statement on a 2-core machine (the `statement_hop` example of the
//! bench), where SQLite itself takes well under one for a simple update. A queue operation is
//! five to ten statements, so that hop, not the commit, bounded it. [`with_handle`] parks the
//! connection's thread (`lock_handle`) and runs a closure on the connection's handle through
//! `rusqlite`'s statement API, with prepared statements, in one hop. The connection is the
//! pool's, so its pragmas, its file (or in-memory database) and its transaction are the same.
//!
//! The closure runs on the calling task's thread, so that thread is busy for as long as the
//! operation takes: microseconds for most, about 150 ms to make 10,000 dependents ready, and
//! a commit that triggers a WAL checkpoint also waits for its `fsync`. On a current-thread
//! runtime the other tasks wait that long. The closure never waits on locks: [`transaction`]
//! takes the write lock without waiting when it is free, and otherwise waits for it on sqlx's
//! thread, under the busy timeout, before running the closure.

use std::marker::PhantomData;
use std::time::Duration;

use abathur_core::error::DatabaseError;
use rusqlite::Connection;
use sqlx::sqlite::LockedSqliteHandle;
use sqlx::{Connection as _, SqliteConnection, SqlitePool};

use super::errors::{classify, raw_on};

/// How many prepared statements a [`Handle`] keeps: more than the queue's operations use
/// between them, so that a warm writer never prepares one twice.
const STATEMENTS: usize = 64;

/// A connection's SQLite handle seen through `rusqlite`, for as long as the sqlx thread of the
/// connection is parked by `locked`: the borrow keeps the guard alive as long as the handle.
///
/// A transaction begun through it and still open when it is dropped (a panic half-way) is
/// rolled back: a connection must never go back to the pool holding the write lock.
pub(crate) struct Handle<'a> {
    raw: Connection,
    began_autocommit: bool,
    _locked: PhantomData<&'a mut ()>,
}

impl<'a> Handle<'a> {
    /// The handle of the parked connection.
    pub(crate) fn new(locked: &'a mut LockedSqliteHandle<'_>) -> Result<Self, DatabaseError> {
        // SAFETY: `locked` keeps sqlx's worker thread from touching the handle until it is
        // dropped, and the returned value borrows it mutably, so it cannot be dropped first.
        // `from_handle` does not take ownership: dropping `raw` finalizes only the statements
        // it prepared, and never closes the handle.
        let raw = unsafe { Connection::from_handle(locked.as_raw_handle().as_ptr()) }
            .map_err(raw_on("connection", ""))?;
        // Every statement of the queue's operations stays prepared (rusqlite keeps 16).
        raw.set_prepared_statement_cache_capacity(STATEMENTS);
        Ok(Self {
            began_autocommit: raw.is_autocommit(),
            raw,
            _locked: PhantomData,
        })
    }
}

impl Drop for Handle<'_> {
    fn drop(&mut self) {
        if self.began_autocommit && !self.raw.is_autocommit() {
            let _ = self.raw.execute_batch("ROLLBACK");
        }
    }
}

impl std::ops::Deref for Handle<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.raw
    }
}

/// Parks `conn`'s sqlx thread, for a [`Handle`].
///
/// With sqlx 0.8.6, parking one held connection again and again with no statement through
/// sqlx between hangs: in a standalone test the 51st parking never returned (sqlx's command
/// channel holds 50, and its thread did not get the connection back to read them). A
/// connection given back to the pool is pinged, a statement, before it is used again; the
/// group-commit writer parks its connection once and keeps it parked; the slow path of
/// [`transaction`] parks after sqlx's own `BEGIN` and commits through sqlx. None of them
/// parks twice in a row more than once.
///
/// # Errors
/// The error of parking the thread (a closed connection).
pub(crate) async fn park(
    conn: &mut SqliteConnection,
) -> Result<LockedSqliteHandle<'_>, DatabaseError> {
    conn.lock_handle()
        .await
        .map_err(|e| classify(e, "connection", ""))
}

/// Runs `f` on `conn`'s SQLite handle while sqlx's thread for it waits. Nothing between the
/// parking and the end of `f` awaits, so the future cannot be cancelled half-way.
///
/// # Errors
/// The error of parking the connection's thread (a closed connection).
pub(crate) async fn with_handle<T>(
    conn: &mut SqliteConnection,
    f: impl FnOnce(&Connection) -> T,
) -> Result<T, DatabaseError> {
    let mut locked = park(conn).await?;
    let handle = Handle::new(&mut locked)?;
    Ok(f(&handle))
}

/// How a transaction's body wants it to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    Commit,
    Rollback,
}

/// Runs `body` in a `BEGIN IMMEDIATE` transaction on a connection of `pool`, and ends the
/// transaction as the body says.
///
/// Returns the body's value with the outcome of ending the transaction (a failed commit keeps
/// nothing of it).
///
/// # Errors
/// When the body could not run: no connection in time, or the write lock held past the busy
/// timeout.
pub(crate) async fn transaction<T>(
    pool: &SqlitePool,
    body: impl FnOnce(&Connection) -> (T, Finish),
) -> Result<(T, Result<(), DatabaseError>), DatabaseError> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(|e| classify(e, "connection", ""))?;
    let mut body = Some(body);
    // The lock is usually free: take it and run the body in one hop.
    let fast = with_handle(&mut conn, |raw| {
        if !begin_without_waiting(raw, busy_timeout(raw)?)? {
            return Ok(None);
        }
        let run = body.take().expect("the body runs once");
        let (value, finish) = run(raw);
        let sql = match finish {
            Finish::Commit => "COMMIT",
            Finish::Rollback => "ROLLBACK",
        };
        // A transaction that could not be ended is rolled back when the handle is dropped.
        let ended = statement(raw, sql).map_err(raw_on("transaction", ""));
        Ok::<_, DatabaseError>(Some((value, ended)))
    })
    .await??;
    if let Some(done) = fast {
        return Ok(done);
    }
    // Another connection writes: wait for the lock on sqlx's thread, whose busy handler
    // sleeps, rather than on this one.
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(|e| classify(e, "transaction", ""))?;
    let run = body.take().expect("the body runs once");
    let (value, finish) = with_handle(&mut tx, run).await?;
    let ended = match finish {
        Finish::Commit => tx.commit().await,
        Finish::Rollback => tx.rollback().await,
    }
    .map_err(|e| classify(e, "transaction", ""));
    Ok((value, ended))
}

/// `BEGIN IMMEDIATE` with the busy handler off: `false` when another connection holds the
/// write lock. The busy timeout is then set back to `timeout`, the connection's own.
pub(crate) fn begin_without_waiting(
    raw: &Connection,
    timeout: Duration,
) -> Result<bool, DatabaseError> {
    raw.busy_timeout(Duration::ZERO)
        .map_err(raw_on("transaction", ""))?;
    let begun = statement(raw, "BEGIN IMMEDIATE");
    if let Err(e) = raw.busy_timeout(timeout) {
        if begun.is_ok() {
            let _ = statement(raw, "ROLLBACK");
        }
        return Err(raw_on("transaction", "")(e));
    }
    match begun {
        Ok(()) => Ok(true),
        Err(e) => match raw_on("transaction", "")(e) {
            DatabaseError::Busy => Ok(false),
            other => Err(other),
        },
    }
}

/// Runs a statement that returns no rows (`BEGIN`, `COMMIT`, `SAVEPOINT`, a pragma that sets),
/// prepared once per handle.
pub(crate) fn statement(raw: &Connection, sql: &str) -> rusqlite::Result<()> {
    raw.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// The busy timeout `raw` was opened with: how long a writer waits for the write lock.
pub(crate) fn busy_timeout(raw: &Connection) -> Result<Duration, DatabaseError> {
    let ms: i64 = raw
        .query_row("PRAGMA busy_timeout", [], |row| row.get(0))
        .map_err(raw_on("connection", ""))?;
    Ok(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}
