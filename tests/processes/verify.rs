//! What must hold after a run, checked from the database and the workers' logs. The facts are
//! read with SQL of each backend's own ([`facts_sqlite`], [`facts_postgres`]); the checks on
//! them are one function for both.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// Every worker's log of the completions the queue confirmed to it: (task id, attempt id).
pub struct Logs {
    entries: Vec<(String, String)>,
}

impl Logs {
    /// Reads every `*.log` file in `dir`.
    pub fn read(dir: &Path) -> Self {
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(dir).expect("read the run's folder") {
            let path = entry.expect("a folder entry").path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&path).expect("read a log");
                // Only whole lines count: a line is written in one piece after its completion
                // committed, and a worker killed before the end of that write has told nobody.
                let whole = text.rfind('\n').map_or("", |end| &text[..=end]);
                for line in whole.lines() {
                    let (task, attempt) = line
                        .split_once(' ')
                        .unwrap_or_else(|| panic!("a torn log line in {path:?}: {line:?}"));
                    entries.push((task.to_string(), attempt.to_string()));
                }
            }
        }
        Self { entries }
    }
}

/// Figures of a verified run.
pub struct Report {
    pub tasks: usize,
    pub attempts: i64,
    pub lost_attempts: i64,
}

/// What the database holds after a run, as plain values.
struct Facts {
    /// Tasks per status.
    statuses: Vec<(String, i64)>,
    /// Tasks with other than one `completed` event.
    completed_other_than_once: i64,
    /// (task, attempt, worker) of every completed attempt.
    completed_attempts: Vec<(String, String, String)>,
    /// Attempts never finished.
    open_attempts: i64,
    /// Moves to running committed before a dependency's completion.
    early_in_commit_order: i64,
    /// Attempts recorded as starting before a dependency's recorded completion.
    early_by_the_clock: i64,
    /// Each task's result's `by` field.
    results: HashMap<String, String>,
    attempts: i64,
    lost_attempts: i64,
}

/// The queries of [`Facts`], in SQL both backends take; the ones that differ are written
/// out in each reader.
const STATUSES: &str = "SELECT status, COUNT(*) FROM tasks GROUP BY status";
const COMPLETED_OTHER_THAN_ONCE: &str =
    "SELECT COUNT(*) FROM (SELECT task_id FROM task_events WHERE to_status = 'completed'
                           GROUP BY task_id HAVING COUNT(*) <> 1) AS t";
const OPEN_ATTEMPTS: &str = "SELECT COUNT(*) FROM task_attempts WHERE finished_at IS NULL";
// Never before the dependencies: every move to running comes after the completion of each
// dependency, in the order the events were committed.
const EARLY_IN_COMMIT_ORDER: &str = "SELECT COUNT(*)
     FROM task_dependencies d
     JOIN task_events r ON r.task_id = d.task_id AND r.to_status = 'running'
     LEFT JOIN task_events c ON c.task_id = d.depends_on_task_id AND c.to_status = 'completed'
     WHERE c.id IS NULL OR r.id < c.id";
// And in the times recorded: the time is read once the locks are held, so an attempt never
// starts, by its own record, before a dependency's recorded completion.
const EARLY_BY_THE_CLOCK: &str = "SELECT COUNT(*)
     FROM task_dependencies d
     JOIN task_attempts a ON a.task_id = d.task_id
     JOIN task_events c ON c.task_id = d.depends_on_task_id AND c.to_status = 'completed'
     WHERE a.started_at < c.at";
const ATTEMPTS: &str = "SELECT COUNT(*) FROM task_attempts";
const LOST_ATTEMPTS: &str = "SELECT COUNT(*) FROM task_attempts WHERE outcome = 'lost'";

/// Checks the run's outcome in the database at `db` (a SQLite file or a `postgres://` URL).
/// With `logs_complete`, no worker was killed, so the logs must hold every completion;
/// otherwise a worker may have died between its completion's commit and its log line.
pub fn verify(db: &str, logs: &Logs, logs_complete: bool) -> Report {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let facts = runtime.block_on(async {
        if db.starts_with("postgres://") {
            facts_postgres(db).await
        } else {
            facts_sqlite(Path::new(db)).await
        }
    });
    check(&facts, logs, logs_complete)
}

async fn facts_sqlite(db: &Path) -> Facts {
    let mut conn = SqliteConnectOptions::new()
        .filename(db)
        .connect()
        .await
        .expect("open the database");
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(integrity, "ok");
    let fk_problems = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert!(fk_problems.is_empty(), "foreign key problems");
    let facts = Facts {
        statuses: sqlx::query_as(STATUSES).fetch_all(&mut conn).await.unwrap(),
        completed_other_than_once: count(&mut conn, COMPLETED_OTHER_THAN_ONCE).await,
        completed_attempts: sqlx::query_as(
            "SELECT task_id, id, worker_id FROM task_attempts WHERE outcome = 'completed'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap(),
        open_attempts: count(&mut conn, OPEN_ATTEMPTS).await,
        early_in_commit_order: count(&mut conn, EARLY_IN_COMMIT_ORDER).await,
        early_by_the_clock: count(&mut conn, EARLY_BY_THE_CLOCK).await,
        results: sqlx::query_as::<_, (String, String)>(
            "SELECT id, json_extract(result_data, '$.by') FROM tasks",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .collect(),
        attempts: count(&mut conn, ATTEMPTS).await,
        lost_attempts: count(&mut conn, LOST_ATTEMPTS).await,
    };
    conn.close().await.unwrap();
    facts
}

async fn count(conn: &mut sqlx::SqliteConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(conn).await.unwrap()
}

/// PostgreSQL enforces foreign keys on every write, so there is nothing to check for them;
/// ids are `uuid`, read as text.
async fn facts_postgres(db: &str) -> Facts {
    let mut conn = PgConnection::connect(db)
        .await
        .expect("connect to the database");
    let facts = Facts {
        statuses: sqlx::query_as(STATUSES).fetch_all(&mut conn).await.unwrap(),
        completed_other_than_once: pg_count(&mut conn, COMPLETED_OTHER_THAN_ONCE).await,
        completed_attempts: sqlx::query_as(
            "SELECT task_id::text, id::text, worker_id FROM task_attempts
             WHERE outcome = 'completed'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap(),
        open_attempts: pg_count(&mut conn, OPEN_ATTEMPTS).await,
        early_in_commit_order: pg_count(&mut conn, EARLY_IN_COMMIT_ORDER).await,
        early_by_the_clock: pg_count(&mut conn, EARLY_BY_THE_CLOCK).await,
        results: sqlx::query_as::<_, (String, String)>(
            "SELECT id::text, result_data->>'by' FROM tasks",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .collect(),
        attempts: pg_count(&mut conn, ATTEMPTS).await,
        lost_attempts: pg_count(&mut conn, LOST_ATTEMPTS).await,
    };
    conn.close().await.unwrap();
    facts
}

async fn pg_count(conn: &mut PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(conn).await.unwrap()
}

fn check(facts: &Facts, logs: &Logs, logs_complete: bool) -> Report {
    let total: i64 = facts.statuses.iter().map(|(_, n)| n).sum();
    assert_eq!(
        facts.statuses,
        vec![("completed".to_string(), total)],
        "every task must be completed"
    );
    // Exactly once: one completed event and one completed attempt per task, and no attempt
    // left open.
    assert_eq!(
        facts.completed_other_than_once, 0,
        "tasks completed other than once"
    );
    assert_eq!(facts.completed_attempts.len() as i64, total);
    assert_eq!(facts.open_attempts, 0, "attempts left open");
    assert_eq!(
        facts.early_in_commit_order, 0,
        "attempts started before a dependency completed"
    );
    assert_eq!(
        facts.early_by_the_clock, 0,
        "attempts recorded as starting before a dependency's recorded completion"
    );

    // The result was written by the worker that held the completed attempt.
    let completed_by: HashMap<&str, (&str, &str)> = facts
        .completed_attempts
        .iter()
        .map(|(task, attempt, worker)| (task.as_str(), (attempt.as_str(), worker.as_str())))
        .collect();
    for (task, (_, worker)) in &completed_by {
        assert_eq!(facts.results[*task], *worker, "task {task}'s result");
    }

    // What the workers were told matches what was stored.
    let mut seen = HashSet::new();
    for (task, attempt) in &logs.entries {
        assert!(seen.insert(task), "task {task} confirmed complete twice");
        assert_eq!(
            completed_by.get(task.as_str()).map(|(a, _)| *a),
            Some(attempt.as_str()),
            "task {task} confirmed complete by attempt {attempt}, which the database \
             does not hold as completed"
        );
    }
    if logs_complete {
        assert_eq!(
            seen.len() as i64,
            total,
            "completions missing from the logs"
        );
    }
    Report {
        tasks: total as usize,
        attempts: facts.attempts,
        lost_attempts: facts.lost_attempts,
    }
}
