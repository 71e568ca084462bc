//! Database files for the scenarios: made and migrated by our adapter, opened raw with rusqlite
//! under the same pragmas, bulk-loaded fast, and copied so ours and the baseline start from the
//! same bytes.

use std::path::{Path, PathBuf};

use abathur::domain::queue::PriorityPolicy;
use abathur::domain::timestamp;
use abathur::infrastructure::database::{DatabaseConfig, DatabaseConnection};
use chrono::{Duration as ChronoDuration, Utc};
use rusqlite::{params, Connection};
use uuid::Uuid;

use crate::BenchError;

/// The agent type of every benchmark task.
pub const AGENT_TYPE: &str = "bench";

/// A fresh database file at `path`, with the schema our migrations make.
pub async fn create(path: &Path) -> Result<(), BenchError> {
    let db = DatabaseConnection::open_path(path, DatabaseConfig::default()).await?;
    db.migrate().await?;
    db.close().await;
    Ok(())
}

/// A raw connection with the pragmas our adapter sets on each of its own: WAL,
/// `synchronous=NORMAL`, foreign keys on, a 5 s busy timeout.
pub fn raw(path: &Path) -> Result<Connection, BenchError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(BenchError(format!("journal_mode is {mode}, not wal")));
    }
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")?;
    Ok(conn)
}

/// Copies a closed database file (and its WAL, if one was left) to `to`.
pub fn copy(from: &Path, to: &Path) -> Result<(), BenchError> {
    std::fs::copy(from, to)?;
    for suffix in ["-wal", "-shm"] {
        let side = sidecar(from, suffix);
        if side.exists() {
            std::fs::copy(&side, sidecar(to, suffix))?;
        }
    }
    Ok(())
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// How a bulk-loaded task is stored.
#[derive(Debug, Clone, Copy)]
pub struct LoadedTask {
    pub status: &'static str,
    pub calculated_priority: f64,
}

/// Inserts `count` dependency-free tasks in one transaction, with ids in ascending order so
/// the primary key grows at its end; `shape(i)` says each one's status and priority. Each is
/// submitted a microsecond after the previous one, all in the past. A ready one gets the claim
/// key our queue writes ([`PriorityPolicy::key`] of the default policy, ready since its
/// submission), so claims read the claim index as they do on a database our queue filled.
pub fn load_tasks(
    conn: &mut Connection,
    count: usize,
    shape: impl Fn(usize) -> LoadedTask,
) -> Result<(), BenchError> {
    let mut ids: Vec<Uuid> = (0..count).map(|_| Uuid::new_v4()).collect();
    ids.sort_unstable();
    let start = Utc::now() - ChronoDuration::hours(1);
    let policy = PriorityPolicy::default();
    // A larger page cache for the load only: the indexes of a million rows stay in memory.
    conn.execute_batch("PRAGMA cache_size = -262144")?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO tasks (id, summary, description, agent_type, priority, calculated_priority,
                 status, dependency_type, dependency_depth, retry_count, max_retries,
                 max_execution_timeout_seconds, submitted_at, completed_at, last_updated_at, source,
                 claim_key)
             VALUES (?1, ?2, '', ?3, ?4, ?5, ?6, 'sequential', 0, 0, 3, 3600, ?7, ?8, ?7, 'human',
                     ?9)",
        )?;
        for (i, id) in ids.iter().enumerate() {
            let shape = shape(i);
            let submitted_at = start + ChronoDuration::microseconds(i as i64);
            let at = timestamp::format(&submitted_at);
            let completed_at = (shape.status == "completed").then_some(at.as_str());
            let priority = shape.calculated_priority.floor().clamp(0.0, 10.0) as u8;
            let claim_key =
                (shape.status == "ready").then(|| policy.key(priority, 0, submitted_at));
            insert.execute(params![
                id.to_string(),
                format!("bench task {i}"),
                AGENT_TYPE,
                priority,
                shape.calculated_priority,
                shape.status,
                at,
                completed_at,
                claim_key,
            ])?;
        }
    }
    tx.commit()?;
    conn.execute_batch("PRAGMA cache_size = -2000")?;
    Ok(())
}

/// The namespace and key of memory `i` of a store of `count`: namespaces
/// `agentNNNN/topicT` of 100 keys each, so a prefix search of one topic finds 100 entries.
pub fn memory_address(i: usize) -> (String, String) {
    (
        format!("agent{:04}/topic{}", i / 1_000, (i / 100) % 10),
        format!("key{:03}", i % 100),
    )
}

/// Inserts `count` memories (one version each) in one transaction, in primary-key order.
pub fn load_memories(conn: &mut Connection, count: usize) -> Result<(), BenchError> {
    let now = timestamp::format(&Utc::now());
    conn.execute_batch("PRAGMA cache_size = -262144")?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO memories (namespace, key, version, value, memory_type, is_deleted,
                 metadata, created_by, updated_by, created_at, updated_at)
             VALUES (?1, ?2, 1, ?3, 'semantic', 0, NULL, 'bench', 'bench', ?4, ?4)",
        )?;
        for i in 0..count {
            let (namespace, key) = memory_address(i);
            let value = format!("{{\"n\":{i},\"note\":\"a remembered fact\"}}");
            insert.execute(params![namespace, key, value, now])?;
        }
    }
    tx.commit()?;
    conn.execute_batch("PRAGMA cache_size = -2000")?;
    Ok(())
}
