//! P5 `pg-processes`: 8 worker processes (this executable re-run as `pg-worker`), each with a
//! pool of its own, claiming and completing 10,000 ready no-op tasks on one new database,
//! claiming 1 and then 10 at a time. Every error that reaches a worker (our API's caller) is
//! counted; none may be a serialization failure or a deadlock, and every task must end
//! completed exactly once. The baseline is the raw loop of P1 on one connection.

use crate::pg::db;
use crate::pg::scenarios::claim::{self, claim_percentiles, BATCH};
use crate::pg::worker::run_processes;
use crate::pg::{PgContext, PgFindings, PgScenario};
use crate::report::Row;
use crate::scenarios::claim::measure;
use crate::scenarios::count;
use crate::BenchError;

pub async fn run(cx: &PgContext, findings: &mut PgFindings) -> Result<Vec<Row>, BenchError> {
    let total = cx.sizes.claim_tasks;
    let processes = cx.sizes.processes;
    let mut rows = Vec::new();
    let mut errors = 0;
    let mut conflicts = 0;
    for max in [1, BATCH] {
        let baseline = measure(claim::run_baseline(max, total).await?);
        let fresh = claim::ready_database(total, 1).await?;
        let exe = cx.worker_exe.clone();
        let url = fresh.url().to_string();
        let run =
            tokio::task::spawn_blocking(move || run_processes(&exe, &url, processes, max)).await;
        let mut conn = fresh.connection().await?;
        let completed = db::count_status(&mut conn, "completed").await?;
        let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM task_attempts")
            .fetch_one(&mut conn)
            .await?;
        sqlx::Connection::close(conn).await?;
        fresh.finish().await;
        let run = run??;
        if run.stats.completed != total || completed != total as i64 {
            return Err(BenchError(format!(
                "the workers reported {} completions and the database holds {completed} \
                 completed tasks, expected {total}",
                run.stats.completed
            )));
        }
        errors += run.errors;
        conflicts += run.conflicts;
        let claims = claim_percentiles(&run.stats);
        let row = Row::new(
            PgScenario::Processes.title(),
            format!(
                "{processes} worker processes, claim {max}, {} tasks",
                count(total)
            ),
            measure(run.stats),
        )
        .baseline(baseline);
        row.print();
        println!(
            "    claim p50/p99 {claims}; attempts opened {attempts}; errors that reached the workers: {} \
             (serialization failures, deadlocks or lock timeouts: {})",
            run.errors, run.conflicts
        );
        for shown in &run.shown {
            println!("      {shown}");
        }
        let rate = row.ours.rate.unwrap_or(0.0);
        if findings.process_rate.is_none_or(|best| rate > best) {
            findings.process_rate = Some(rate);
        }
        rows.push(row);
    }
    findings.process_errors = Some(errors);
    findings.process_conflicts = Some(conflicts);
    Ok(rows)
}
