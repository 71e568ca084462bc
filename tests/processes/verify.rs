//! What must hold after a run, checked from the database file and the workers' logs.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Row};

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

/// Checks the run's outcome. With `logs_complete`, no worker was killed, so the logs must
/// hold every completion; otherwise a worker may have died between its completion's commit and
/// its log line.
pub fn verify(db: &Path, logs: &Logs, logs_complete: bool) -> Report {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
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

        let statuses: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM tasks GROUP BY status")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        let total: i64 = statuses.iter().map(|(_, n)| n).sum();
        assert_eq!(
            statuses,
            vec![("completed".to_string(), total)],
            "every task must be completed"
        );

        // Exactly once: one completed event and one completed attempt per task, and no
        // attempt left open.
        let twice: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT task_id FROM task_events WHERE to_status = 'completed'
                                   GROUP BY task_id HAVING COUNT(*) <> 1)",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(twice, 0, "tasks completed other than once");
        let completed_attempts: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT task_id, id, worker_id FROM task_attempts WHERE outcome = 'completed'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert_eq!(completed_attempts.len() as i64, total);
        let open: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM task_attempts WHERE finished_at IS NULL")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        assert_eq!(open, 0, "attempts left open");

        // Never before the dependencies: every move to running comes after the completion of
        // each dependency, in the order the events were committed.
        let early: i64 = sqlx::query_scalar(
            "SELECT COUNT(*)
             FROM task_dependencies d
             JOIN task_events r ON r.task_id = d.task_id AND r.to_status = 'running'
             LEFT JOIN task_events c ON c.task_id = d.depends_on_task_id
                                    AND c.to_status = 'completed'
             WHERE c.id IS NULL OR r.id < c.id",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(early, 0, "attempts started before a dependency completed");
        // And in the times recorded: the time is read once the write lock is held, so an
        // attempt never starts, by its own record, before a dependency's recorded completion.
        let early_by_the_clock: i64 = sqlx::query_scalar(
            "SELECT COUNT(*)
             FROM task_dependencies d
             JOIN task_attempts a ON a.task_id = d.task_id
             JOIN task_events c ON c.task_id = d.depends_on_task_id
                                AND c.to_status = 'completed'
             WHERE a.started_at < c.at",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(
            early_by_the_clock, 0,
            "attempts recorded as starting before a dependency's recorded completion"
        );

        // The result was written by the worker that held the completed attempt.
        let results: HashMap<String, String> =
            sqlx::query("SELECT id, json_extract(result_data, '$.by') AS by FROM tasks")
                .fetch_all(&mut conn)
                .await
                .unwrap()
                .into_iter()
                .map(|row| (row.get("id"), row.get("by")))
                .collect();
        let completed_by: HashMap<&str, (&str, &str)> = completed_attempts
            .iter()
            .map(|(task, attempt, worker)| (task.as_str(), (attempt.as_str(), worker.as_str())))
            .collect();
        for (task, (_, worker)) in &completed_by {
            assert_eq!(results[*task], *worker, "task {task}'s result");
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

        let attempts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM task_attempts")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let lost_attempts: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM task_attempts WHERE outcome = 'lost'")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        conn.close().await.unwrap();
        Report {
            tasks: total as usize,
            attempts,
            lost_attempts,
        }
    })
}
