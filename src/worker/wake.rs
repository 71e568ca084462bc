//! How an idle worker learns that work may have appeared, without claiming in a busy loop.
//!
//! A claim is a write transaction: it takes the database's write lock, even when it finds
//! nothing. Idle workers that claimed every few milliseconds would compete with every writer
//! for that lock. So an idle worker waits on a [`Wake`] instead, and claims only when it fires.
//!
//! [`DataVersion`] is the SQLite one. `PRAGMA data_version` on a connection of its own changes
//! whenever any other connection, in this process or another, commits to the database file.
//! Reading it takes no lock and touches no table (it reads the WAL index in shared memory), so
//! it can be polled every 50 ms for next to nothing; a submission by another process is seen
//! within one poll. A claim that finds nothing writes nothing and so does not wake the worker
//! again. Nothing commits when a retried task's backoff runs out, so the worker also claims
//! once in a while without a change (the `at_most` of [`Wake::wait`]).
//!
//! File notifications on the WAL (inotify) would wake a little sooner, but they need a
//! platform-specific dependency and their own handling of WAL resets; a 50 ms poll of a
//! counter costs next to nothing and works wherever SQLite does.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::{Sqlite, SqliteConnection};
use tokio::time::{sleep, Instant};

/// A signal that the queue may have changed.
#[async_trait]
pub trait Wake: Send {
    /// Returns when the queue may hold new work, or after `at_most`, whichever comes first.
    /// Cancel-safe: a change seen by a call that is dropped is reported by the next.
    async fn wait(&mut self, at_most: Duration);
}

/// Waits the full `at_most` every time: polling at that period, for stores with no cheaper
/// way to tell a change.
#[derive(Debug, Clone, Copy, Default)]
pub struct Interval;

#[async_trait]
impl Wake for Interval {
    async fn wait(&mut self, at_most: Duration) {
        sleep(at_most).await;
    }
}

/// Fires when `PRAGMA data_version` changes on a connection kept for this alone.
#[derive(Debug)]
pub struct DataVersion {
    conn: SqliteConnection,
    last: i64,
    poll: Duration,
}

/// How often [`DataVersion`] reads the counter: the worst-case wake-up delay.
pub const DATA_VERSION_POLL: Duration = Duration::from_millis(50);

impl DataVersion {
    /// Takes `conn` out of its pool for good: the counter only means something when read on
    /// the same connection every time.
    ///
    /// # Errors
    /// The driver's error when the counter cannot be read.
    pub async fn new(conn: PoolConnection<Sqlite>) -> Result<Self, sqlx::Error> {
        let mut conn = conn.detach();
        let last = read(&mut conn).await?;
        Ok(Self {
            conn,
            last,
            poll: DATA_VERSION_POLL,
        })
    }
}

impl DataVersion {
    /// Closes the connection and waits until it is closed. Dropping it would close it later,
    /// on its own thread: a process that exits first leaves the WAL unmerged, because SQLite
    /// checkpoints only when the last connection to the file closes.
    pub async fn close(self) {
        use sqlx::Connection;
        if let Err(e) = self.conn.close().await {
            tracing::debug!(error = %e, "closing the change counter's connection");
        }
    }
}

async fn read(conn: &mut SqliteConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar::<_, i64>("PRAGMA data_version")
        .fetch_one(conn)
        .await
}

#[async_trait]
impl Wake for DataVersion {
    async fn wait(&mut self, at_most: Duration) {
        let deadline = Instant::now() + at_most;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            sleep(self.poll.min(deadline - now)).await;
            match read(&mut self.conn).await {
                Ok(version) if version != self.last => {
                    self.last = version;
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    // Claiming still works through the pool; fall back to the slow period.
                    tracing::warn!(error = %e, "cannot read the database's change counter");
                    sleep(deadline.saturating_duration_since(Instant::now())).await;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::{DataVersion, Wake};
    use crate::infrastructure::database::{DatabaseConfig, DatabaseConnection};

    async fn open(path: &std::path::Path) -> DatabaseConnection {
        let db = DatabaseConnection::open_path(path, DatabaseConfig::default())
            .await
            .expect("open");
        db.migrate().await.expect("migrate");
        db
    }

    #[tokio::test]
    async fn a_commit_from_another_process_wakes_within_a_poll_and_silence_waits_it_out() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("abathur.db");
        let watcher = open(&path).await;
        let mut wake = DataVersion::new(watcher.pool().acquire().await.expect("a connection"))
            .await
            .expect("the counter");

        // Nothing commits: the wait lasts its full bound.
        let started = Instant::now();
        wake.wait(Duration::from_millis(300)).await;
        assert!(started.elapsed() >= Duration::from_millis(300));

        // Another pool, as another process would have, commits while the worker waits.
        let writer = open(&path).await;
        let write = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let before = Instant::now();
            sqlx::query("CREATE TABLE wake_probe (x INTEGER)")
                .execute(writer.pool())
                .await
                .expect("a write");
            before
        });
        wake.wait(Duration::from_secs(30)).await;
        let woke = Instant::now();
        let writing = write.await.expect("the writer");
        assert!(
            woke >= writing && woke - writing < Duration::from_millis(500),
            "woke {:?} after the write began",
            woke.checked_duration_since(writing)
        );
    }
}
