//! Databases for the PostgreSQL scenarios: each a new database on the test server, migrated by
//! our adapter, bulk-loaded raw in one statement, and dropped when done.

use abathur_core::queue::PriorityPolicy;
use abathur_postgres::testing::{server_url, TestDatabase};
use abathur_postgres::{PgConfig, PgDatabase};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use sqlx::{Connection, Executor, PgConnection, Row as _};

use crate::fixture::AGENT_TYPE;
use crate::BenchError;

impl From<sqlx::Error> for BenchError {
    fn from(e: sqlx::Error) -> Self {
        BenchError(e.to_string())
    }
}

/// A new, migrated database with our pool on it; dropped from the server with this value.
pub struct Fresh {
    /// Dropped last: the database goes once every connection is closed.
    test: TestDatabase,
    pub db: PgDatabase,
}

impl Fresh {
    /// A new database, migrated, with a pool of at most `max_connections`.
    pub async fn new(max_connections: u32) -> Result<Self, BenchError> {
        let test = new_database().await?;
        let db = test.connect(pool_config(max_connections)).await?;
        db.migrate().await?;
        Ok(Self { test, db })
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        self.test.url()
    }

    /// Another pool on the same database.
    pub async fn pool(&self, max_connections: u32) -> Result<PgDatabase, BenchError> {
        Ok(self.test.connect(pool_config(max_connections)).await?)
    }

    /// A plain connection of its own, outside any pool: the raw baseline's and the loaders'.
    pub async fn connection(&self) -> Result<PgConnection, BenchError> {
        Ok(PgConnection::connect(self.test.url()).await?)
    }

    /// Closes our pool and drops the database.
    pub async fn finish(self) {
        self.db.close().await;
        drop(self.test);
    }
}

/// A new, empty database on the test server. `TestDatabase::create` panics when the server
/// refuses (it is made for tests); here that is one scenario's error, not the whole run's.
pub async fn new_database() -> Result<TestDatabase, BenchError> {
    tokio::spawn(TestDatabase::create()).await.map_err(|e| {
        let why = e
            .try_into_panic()
            .ok()
            .and_then(|p| {
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            })
            .unwrap_or_else(|| "the task was cancelled".to_string());
        BenchError(format!("cannot create a database: {why}"))
    })
}

/// Our pool's settings for a run with `max_connections` at most: one connection kept open.
pub fn pool_config(max_connections: u32) -> PgConfig {
    PgConfig {
        min_connections: 1,
        max_connections: max_connections.max(1),
        ..PgConfig::default()
    }
}

/// The server's version and the settings that decide what a commit costs, in one line.
pub async fn server_version() -> Result<String, BenchError> {
    let url = server_url();
    let mut conn = PgConnection::connect(&url).await.map_err(|e| {
        BenchError(format!(
            "cannot reach the PostgreSQL server {} (set ABATHUR_TEST_POSTGRES): {e}",
            abathur_postgres::redact(&url)
        ))
    })?;
    let version = show(&mut conn, "server_version").await?;
    let fsync = show(&mut conn, "fsync").await?;
    let synchronous = show(&mut conn, "synchronous_commit").await?;
    let buffers = show(&mut conn, "shared_buffers").await?;
    let _ = conn.close().await;
    Ok(format!(
        "PostgreSQL {version} at {} (fsync={fsync}, synchronous_commit={synchronous}, shared_buffers={buffers})",
        abathur_postgres::redact(&url)
    ))
}

/// A setting of the server, as `SHOW` prints it.
async fn show(conn: &mut PgConnection, name: &str) -> Result<String, BenchError> {
    Ok(sqlx::query_scalar(&format!("SHOW {name}"))
        .fetch_one(&mut *conn)
        .await?)
}

/// How bulk-loaded tasks are shaped.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Every `ready_every`-th task (from the first) is ready, the others completed.
    pub ready_every: usize,
    /// Priorities spread over 0 to 10 (`(i * 7919 % 1000) / 100`), else all 5.
    pub spread: bool,
}

/// Inserts `count` dependency-free tasks of agent type [`AGENT_TYPE`] in one statement
/// (`INSERT ... SELECT FROM generate_series`), submitted a microsecond apart an hour ago.
/// A ready one gets the claim key our queue writes ([`PriorityPolicy::key`] of the default
/// policy, depth 0, ready since its submission), so claims read the claim index as they do on a
/// database our queue filled; a sample of keys is checked against the policy's own function.
/// Then `VACUUM ANALYZE`, as autovacuum would leave a table that settled.
pub async fn load_tasks(
    conn: &mut PgConnection,
    count: usize,
    shape: Shape,
) -> Result<(), BenchError> {
    let policy = PriorityPolicy::default();
    let start: DateTime<Utc> = Utc::now() - ChronoDuration::hours(1);
    // The key of depth 0 is `priority - epoch(ready_since) / aging`: the depth part is zero.
    let aging = policy.aging_interval.as_secs_f64();
    let inserted = sqlx::query(
        "INSERT INTO tasks (id, summary, description, agent_type, priority, calculated_priority,
             status, dependency_type, dependency_depth, retry_count, max_retries,
             max_execution_timeout_seconds, submitted_at, completed_at, last_updated_at, source,
             claim_key)
         SELECT gen_random_uuid(), 'bench task ' || i, '', $1, p, cp, st, 'sequential', 0, 0, 3,
                3600, sub, CASE WHEN st = 'completed' THEN sub END, sub, 'human',
                CASE WHEN st = 'ready' THEN p::float8 - extract(epoch FROM sub)::float8 / $5 END
         FROM (
             SELECT i, cp, least(greatest(floor(cp), 0), 10)::smallint AS p,
                    CASE WHEN i % $3 = 0 THEN 'ready' ELSE 'completed' END AS st,
                    $4::timestamptz + i * interval '1 microsecond' AS sub
             FROM (
                 SELECT i, (CASE WHEN $6 THEN ((i * 7919) % 1000) / 100.0 ELSE 5.0 END)::float8 AS cp
                 FROM generate_series(0::bigint, $2::bigint - 1) AS i
             ) AS g
         ) AS t",
    )
    .bind(AGENT_TYPE)
    .bind(i64::try_from(count).map_err(|e| BenchError(e.to_string()))?)
    .bind(i64::try_from(shape.ready_every.max(1)).map_err(|e| BenchError(e.to_string()))?)
    .bind(start)
    .bind(aging)
    .bind(shape.spread)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted != count as u64 {
        return Err(BenchError(format!(
            "loaded {inserted} tasks, expected {count}"
        )));
    }
    // The keys written by SQL are those of the policy's function, to rounding.
    let sample = sqlx::query(
        "SELECT priority, submitted_at, claim_key FROM tasks WHERE status = 'ready' LIMIT 20",
    )
    .fetch_all(&mut *conn)
    .await?;
    for row in sample {
        let priority: i16 = row.try_get(0)?;
        let submitted: DateTime<Utc> = row.try_get(1)?;
        let key: Option<f64> = row.try_get(2)?;
        let expected = policy.key(
            u8::try_from(priority).map_err(|e| BenchError(e.to_string()))?,
            0,
            submitted,
        );
        if key.is_none_or(|k| (k - expected).abs() > 1e-6) {
            return Err(BenchError(format!(
                "a loaded claim key is {key:?}, the policy gives {expected}"
            )));
        }
    }
    conn.execute("VACUUM ANALYZE tasks").await?;
    Ok(())
}

/// How many tasks have `status`.
pub async fn count_status(conn: &mut PgConnection, status: &str) -> Result<i64, BenchError> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM tasks WHERE status = $1")
            .bind(status)
            .fetch_one(&mut *conn)
            .await?,
    )
}
