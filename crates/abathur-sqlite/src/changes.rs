//! The change port on SQLite: `PRAGMA data_version`, polled on a connection of its own.
//!
//! `data_version` changes whenever any other connection, in this process or another, commits
//! to the database file. Reading it takes no lock and touches no table (it reads the WAL index
//! in shared memory), so it can be polled every [`DATA_VERSION_POLL`] for next to nothing; a
//! commit by another process is seen within one poll. The value only means something when it
//! is read on the same connection every time, so each subscription takes a connection out of
//! the pool for good and closes it when it ends.
//!
//! File notifications on the WAL (inotify) would wake a little sooner, but they need a
//! platform-specific dependency and their own handling of WAL resets; a 50 ms poll of a
//! counter costs next to nothing and works wherever SQLite does.

use std::time::Duration;

use abathur_core::error::DatabaseError;
use abathur_core::ports::{Change, ChangeSubscription, Changes};
use async_trait::async_trait;
use sqlx::{SqliteConnection, SqlitePool};
use tokio::time::{sleep, Instant};

use super::errors::classify;

/// How often a subscription reads the counter: the worst-case delay before a change is seen.
pub const DATA_VERSION_POLL: Duration = Duration::from_millis(50);

/// The counter SQLite bumps when another connection commits.
const READ_DATA_VERSION: &str = "PRAGMA data_version";

/// [`Changes`] for the SQLite database of a pool.
#[derive(Debug, Clone)]
pub struct SqliteChanges {
    pool: SqlitePool,
}

impl SqliteChanges {
    /// Watches the database `pool` opens; each subscription takes one of its connections.
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl Changes for SqliteChanges {
    async fn subscribe(&self) -> Result<Box<dyn ChangeSubscription>, DatabaseError> {
        let conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| classify(e, "database", ""))?;
        Ok(Box::new(DataVersion::new(conn.detach()).await?))
    }
}

/// A subscription: the counter as last read, on the connection it is read on.
#[derive(Debug)]
pub struct DataVersion {
    conn: SqliteConnection,
    last: i64,
    poll: Duration,
}

impl DataVersion {
    /// Starts watching on `conn`, which is kept for this alone.
    ///
    /// # Errors
    /// The classified error when the counter cannot be read.
    pub async fn new(mut conn: SqliteConnection) -> Result<Self, DatabaseError> {
        let last = read(&mut conn).await?;
        Ok(Self {
            conn,
            last,
            poll: DATA_VERSION_POLL,
        })
    }
}

async fn read(conn: &mut SqliteConnection) -> Result<i64, DatabaseError> {
    sqlx::query_scalar::<_, i64>(READ_DATA_VERSION)
        .fetch_one(conn)
        .await
        .map_err(|e| classify(e, "database", ""))
}

#[async_trait]
impl ChangeSubscription for DataVersion {
    async fn changed(&mut self, at_most: Duration) -> Result<Change, DatabaseError> {
        let deadline = Instant::now() + at_most;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(Change::TimedOut);
            }
            sleep(self.poll.min(deadline - now)).await;
            let version = read(&mut self.conn).await?;
            if version != self.last {
                self.last = version;
                return Ok(Change::Seen);
            }
        }
    }

    async fn close(self: Box<Self>) {
        use sqlx::Connection;
        // Dropping it would close it later, on its own thread: a process that exits first
        // leaves the WAL unmerged, because SQLite checkpoints only when the last connection
        // to the file closes.
        if let Err(e) = self.conn.close().await {
            tracing::debug!(error = %e, "closing the change counter's connection");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use abathur_core::ports::{Change, Changes};

    use super::SqliteChanges;
    use crate::{DatabaseConfig, DatabaseConnection};

    async fn open(path: &std::path::Path) -> DatabaseConnection {
        let db = DatabaseConnection::open_path(path, DatabaseConfig::default())
            .await
            .expect("open");
        db.migrate().await.expect("migrate");
        db
    }

    #[tokio::test]
    async fn a_commit_by_another_process_after_subscribing_is_seen_once_and_silence_times_out() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("abathur.db");
        let watcher = open(&path).await;
        let mut changes = SqliteChanges::new(watcher.pool().clone())
            .subscribe()
            .await
            .expect("the counter");

        // Nothing commits: the wait ends at its bound.
        let seen = changes
            .changed(Duration::from_millis(100))
            .await
            .expect("a read");
        assert_eq!(seen, Change::TimedOut);

        // Another pool, as another process would have, commits after the subscription was
        // taken: the next wait reports it, however long it was allowed to last.
        let writer = open(&path).await;
        sqlx::query("CREATE TABLE wake_probe (x INTEGER)")
            .execute(writer.pool())
            .await
            .expect("a write");
        let seen = changes
            .changed(Duration::from_secs(60))
            .await
            .expect("a read");
        assert_eq!(seen, Change::Seen);

        // The change was reported once: with nothing more committed, the next wait times out.
        let seen = changes
            .changed(Duration::from_millis(100))
            .await
            .expect("a read");
        assert_eq!(seen, Change::TimedOut);

        // The watcher's own pool writing is seen too: any other connection counts.
        sqlx::query("INSERT INTO wake_probe (x) VALUES (1)")
            .execute(watcher.pool())
            .await
            .expect("a write");
        let seen = changes
            .changed(Duration::from_secs(60))
            .await
            .expect("a read");
        assert_eq!(seen, Change::Seen);
        changes.close().await;
        writer.close().await;
        watcher.close().await;
    }
}
