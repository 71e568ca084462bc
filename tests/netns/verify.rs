//! What must hold after a run, read from the database with SQL of the test's own.

use std::collections::BTreeMap;

use sqlx::postgres::PgConnection;

/// Figures of a verified run.
#[derive(Debug)]
pub struct Report {
    pub tasks: i64,
    pub attempts: i64,
    pub lost_attempts: i64,
    /// Completed attempts per worker.
    pub completed_by: BTreeMap<String, i64>,
}

/// Every task completed, exactly once, by exactly one attempt; no attempt left open; no
/// attempt started before each of its dependencies completed; and each task's result was
/// written by the command of the attempt that completed it (`{"host": "x"}` from worker
/// `host-x`), so that no refused completion left its result behind.
pub async fn verify(conn: &mut PgConnection) -> Report {
    let tasks = count(conn, "SELECT COUNT(*) FROM tasks").await;
    assert!(tasks > 0, "the run has no tasks");
    let unfinished: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, COUNT(*) FROM tasks WHERE status <> 'completed' GROUP BY status",
    )
    .fetch_all(&mut *conn)
    .await
    .expect("read the statuses");
    assert!(
        unfinished.is_empty(),
        "every task must be completed; not: {unfinished:?}"
    );
    assert_eq!(
        count(
            conn,
            "SELECT COUNT(*) FROM (SELECT task_id FROM task_events WHERE to_status = 'completed'
                                   GROUP BY task_id HAVING COUNT(*) <> 1) AS t"
        )
        .await,
        0,
        "tasks with other than one completion in their history"
    );
    assert_eq!(
        count(
            conn,
            "SELECT COUNT(*) FROM tasks t
             WHERE (SELECT COUNT(*) FROM task_attempts a
                    WHERE a.task_id = t.id AND a.outcome = 'completed') <> 1"
        )
        .await,
        0,
        "tasks with other than one completed attempt"
    );
    assert_eq!(
        count(
            conn,
            "SELECT COUNT(*) FROM task_attempts WHERE finished_at IS NULL"
        )
        .await,
        0,
        "attempts left open"
    );
    // In the order the events were committed: every move to running after the completion of
    // each dependency.
    assert_eq!(
        count(
            conn,
            "SELECT COUNT(*)
             FROM task_dependencies d
             JOIN task_events r ON r.task_id = d.task_id AND r.to_status = 'running'
             LEFT JOIN task_events c
               ON c.task_id = d.depends_on_task_id AND c.to_status = 'completed'
             WHERE c.id IS NULL OR r.id < c.id"
        )
        .await,
        0,
        "attempts started before a dependency completed (commit order)"
    );
    // And by the server's clock, which every host's operation reads.
    let early: Vec<(String, String, String, String, String)> = sqlx::query_as(
        "SELECT a.task_id::text, a.worker_id, a.started_at::text, d.depends_on_task_id::text,
                c.at::text
         FROM task_dependencies d
         JOIN task_attempts a ON a.task_id = d.task_id
         JOIN task_events c
           ON c.task_id = d.depends_on_task_id AND c.to_status = 'completed'
         WHERE a.started_at < c.at
         ORDER BY a.started_at",
    )
    .fetch_all(&mut *conn)
    .await
    .expect("read the attempts started early");
    assert!(
        early.is_empty(),
        "{} attempts recorded as starting before a dependency's recorded completion \
         (task, worker, started at, dependency, its completion at):\n{}",
        early.len(),
        early
            .iter()
            .take(10)
            .map(|row| format!("  {row:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        count(
            conn,
            "SELECT COUNT(*) FROM tasks t
             JOIN task_attempts a ON a.task_id = t.id AND a.outcome = 'completed'
             WHERE 'host-' || (t.result_data ->> 'host') IS DISTINCT FROM a.worker_id
                OR (t.result_data ->> 'attempt') IS DISTINCT FROM a.id::text"
        )
        .await,
        0,
        "tasks whose result is not the one of the attempt that completed them"
    );
    let completed_by: Vec<(String, i64)> = sqlx::query_as(
        "SELECT worker_id, COUNT(*) FROM task_attempts WHERE outcome = 'completed'
         GROUP BY worker_id ORDER BY worker_id",
    )
    .fetch_all(&mut *conn)
    .await
    .expect("read the completions per worker");
    Report {
        tasks,
        attempts: count(conn, "SELECT COUNT(*) FROM task_attempts").await,
        lost_attempts: count(
            conn,
            "SELECT COUNT(*) FROM task_attempts WHERE outcome = 'lost'",
        )
        .await,
        completed_by: completed_by.into_iter().collect(),
    }
}

/// The one number `sql` selects.
pub async fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}
