//! The repositories' one way to write: [`write`] runs an operation on a rusqlite connection
//! inside a `BEGIN IMMEDIATE` transaction of the database, committed when the operation
//! succeeds and rolled back when it fails.
//!
//! It runs on [`super::handle::transaction`], a pooled connection's own handle, until the
//! database's writer thread takes its place with the same signature.

use abathur_core::error::DatabaseError;
use sqlx::SqlitePool;

use super::handle::{transaction, Finish};

/// Runs `op` inside a write transaction on `pool`'s database (BEGIN IMMEDIATE). `Err` rolls
/// back everything `op` wrote. Answers once the transaction committed.
///
/// # Errors
/// `op`'s error; or, converted into `E`, the error of taking the write lock (`Busy` past the
/// busy timeout, no connection in time) or of committing.
pub(crate) async fn write<T, E>(
    pool: &SqlitePool,
    op: impl FnOnce(&rusqlite::Connection) -> Result<T, E> + Send + 'static,
) -> Result<T, E>
where
    T: Send + 'static,
    E: From<DatabaseError> + Send + 'static,
{
    let (outcome, ended) = transaction(pool, |conn| {
        let outcome = op(conn);
        let finish = if outcome.is_ok() {
            Finish::Commit
        } else {
            Finish::Rollback
        };
        (outcome, finish)
    })
    .await
    .map_err(E::from)?;
    let value = outcome?;
    ended.map_err(E::from)?;
    Ok(value)
}
