//! Statements run on a pooled sqlx connection's own SQLite handle, for the queue's writes.
//!
//! sqlx runs each SQLite connection on a thread of its own and sends every statement there and
//! back: about 40 to 70 µs a statement on a 2-core machine, where SQLite itself takes a few.
//! A queue operation is five to ten statements, so that hop, not the commit, bounds it.
//! [`with_handle`] parks the connection's thread (`lock_handle`) and runs a closure on the
//! connection's handle through `rusqlite`'s statement API, with prepared statements, in one
//! hop. The connection is the pool's, so its pragmas, its file (or in-memory database) and its
//! transaction are the same.
//!
//! The closure runs on the calling task's thread and must not wait on locks: [`transaction`]
//! takes the write lock without waiting when it is free, and otherwise waits for it on sqlx's
//! thread, under the busy timeout, before running the closure.

use std::time::Duration;

use abathur_core::error::DatabaseError;
use rusqlite::Connection;
use sqlx::{Connection as _, SqliteConnection, SqlitePool};

use super::errors::{classify, raw_on};

/// Runs `f` on `conn`'s SQLite handle while sqlx's thread for it waits.
///
/// # Errors
/// The error of parking the connection's thread (a closed connection).
pub(crate) async fn with_handle<T>(
    conn: &mut SqliteConnection,
    f: impl FnOnce(&Connection) -> T,
) -> Result<T, DatabaseError> {
    let mut locked = conn
        .lock_handle()
        .await
        .map_err(|e| classify(e, "connection", ""))?;
    // SAFETY: `locked` keeps sqlx's worker thread from touching the handle until it is
    // dropped, and it outlives `raw`. `from_handle` does not take ownership: dropping `raw`
    // finalizes only the statements it prepared, and never closes the handle. Nothing between
    // here and the drop awaits, so the future cannot be cancelled half-way.
    let raw = unsafe { Connection::from_handle(locked.as_raw_handle().as_ptr()) }
        .map_err(raw_on("transaction", ""))?;
    let out = {
        let guard = EndTransaction {
            raw: &raw,
            began_autocommit: raw.is_autocommit(),
        };
        let out = f(guard.raw);
        std::mem::forget(guard);
        out
    };
    drop(raw);
    drop(locked);
    Ok(out)
}

/// Rolls back a transaction the closure of [`with_handle`] began, if the closure unwinds: a
/// connection must never go back to the pool holding the write lock.
struct EndTransaction<'a> {
    raw: &'a Connection,
    began_autocommit: bool,
}

impl Drop for EndTransaction<'_> {
    fn drop(&mut self) {
        if self.began_autocommit && !self.raw.is_autocommit() {
            let _ = self.raw.execute_batch("ROLLBACK");
        }
    }
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
        if !begin_without_waiting(raw)? {
            return Ok(None);
        }
        let run = body.take().expect("the body runs once");
        let (value, finish) = run(raw);
        let sql = match finish {
            Finish::Commit => "COMMIT",
            Finish::Rollback => "ROLLBACK",
        };
        let ended = raw.execute_batch(sql).map_err(raw_on("transaction", ""));
        if ended.is_err() && !raw.is_autocommit() {
            let _ = raw.execute_batch("ROLLBACK");
        }
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
/// write lock. The connection's busy timeout is restored either way.
fn begin_without_waiting(raw: &Connection) -> Result<bool, DatabaseError> {
    let timeout: i64 = raw
        .query_row("PRAGMA busy_timeout", [], |row| row.get(0))
        .map_err(raw_on("transaction", ""))?;
    raw.busy_timeout(Duration::ZERO)
        .map_err(raw_on("transaction", ""))?;
    let begun = raw.execute_batch("BEGIN IMMEDIATE");
    raw.busy_timeout(Duration::from_millis(u64::try_from(timeout).unwrap_or(0)))
        .map_err(raw_on("transaction", ""))?;
    match begun {
        Ok(()) => Ok(true),
        Err(e) => match raw_on("transaction", "")(e) {
            DatabaseError::Busy => Ok(false),
            other => Err(other),
        },
    }
}
