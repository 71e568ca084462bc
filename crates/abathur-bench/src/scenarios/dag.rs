//! Scenario 4: a layered DAG of 10,000 and of 100,000 tasks, submitted and run to completion.
//! Each task below the first layer waits for two tasks of the layer above. The run of the large
//! DAG should take about ten times the small one's, not a hundred.

use std::time::Instant;

use abathur::domain::queue::NewTask;
use uuid::Uuid;

use super::count;
use crate::fixture::{self, AGENT_TYPE};
use crate::ours::{self, CommitMode};
use crate::raw::{RawQueue, RawTask};
use crate::report::{Measure, Row};
use crate::stats::Samples;
use crate::{BenchError, Context, Findings, Scenario};

/// Workers, and tasks per claim, of every run.
const WORKERS: usize = 4;
const CLAIM: u32 = 10;
/// Tasks per submitted batch.
const BATCH: usize = 1_000;

/// The DAG: ids and dependencies in layer order, so each batch only names tasks already
/// submitted or in the batch itself.
fn layered(tasks: usize, layers: usize) -> Vec<RawTask> {
    let width = (tasks / layers).max(1);
    let mut ids: Vec<Uuid> = Vec::with_capacity(tasks);
    let mut out = Vec::with_capacity(tasks);
    for i in 0..tasks {
        let (layer, j) = (i / width, i % width);
        let id = Uuid::new_v4();
        let mut dependencies = Vec::new();
        if layer > 0 {
            let above = (layer - 1) * width;
            dependencies.push(ids[above + j]);
            let other = ids[above + (j * 7 + 3) % width];
            if other != dependencies[0] {
                dependencies.push(other);
            }
        }
        ids.push(id);
        out.push(RawTask { id, dependencies });
    }
    out
}

pub async fn run(cx: &Context, findings: &mut Findings) -> Result<Vec<Row>, BenchError> {
    let s = cx.sizes;
    let title = Scenario::Dag.title();
    let mut rows = Vec::new();
    let mut run_times = Vec::new();
    for tasks in [s.dag_small, s.dag_large] {
        let dag = layered(tasks, s.dag_layers);
        let label = format!("{} tasks in {} layers", count(tasks), s.dag_layers);

        let path = cx.db_path("dag-baseline");
        fixture::create(&path).await?;
        let mut raw = RawQueue::open(&path)?;
        let mut latency = Samples::default();
        let started = Instant::now();
        for batch in dag.chunks(BATCH) {
            let t = Instant::now();
            raw.submit(batch)?;
            latency.push(t.elapsed());
        }
        let base_submit = Measure::throughput(tasks, started.elapsed(), latency);
        let base_run = ours::run_raw(&mut raw, CLAIM, tasks)?;
        let base_run = Measure::throughput(tasks, base_run.elapsed, base_run.complete);

        for mode in CommitMode::ALL {
            let path = cx.db_path("dag");
            fixture::create(&path).await?;
            let (db, queue) = mode.open(&path).await?;
            let mut latency = Samples::default();
            let started = Instant::now();
            for batch in dag.chunks(BATCH) {
                let batch = batch
                    .iter()
                    .map(|t| {
                        let mut new = NewTask::new("dag task", "", AGENT_TYPE);
                        new.id = t.id;
                        new.dependencies = t.dependencies.clone();
                        new
                    })
                    .collect();
                let t = Instant::now();
                queue.submit_batch(batch).await?;
                latency.push(t.elapsed());
            }
            let submit = Measure::throughput(tasks, started.elapsed(), latency);
            let stats = match ours::run_workers(&queue, WORKERS, CLAIM, tasks).await {
                Ok(stats) => stats,
                Err(e) => return Err(BenchError(format!("{e}; {}", diagnose(&path)))),
            };
            db.close().await;
            let busy = stats.busy;
            let run = Measure::throughput(tasks, stats.elapsed, stats.complete);
            if mode == CommitMode::PerOperation {
                run_times.push((run.elapsed, base_run.elapsed));
            }
            let row = Row::new(
                title,
                format!(
                    "{label}: submit in batches of {}, {}",
                    count(BATCH),
                    mode.label()
                ),
                submit,
            )
            .baseline(base_submit.clone());
            row.print();
            rows.push(row);
            let row = Row::new(
                title,
                format!(
                    "{label}: run, {WORKERS} workers claiming {CLAIM} (baseline: 1 loop), {}",
                    mode.label()
                ),
                run,
            )
            .baseline(base_run.clone());
            row.print();
            println!(
                "    run time: ours {:.2} s, baseline {:.2} s; calls retried after the busy timeout: {busy}",
                row.ours.elapsed.as_secs_f64(),
                base_run.elapsed.as_secs_f64()
            );
            rows.push(row);
        }
    }
    if let [(small, base_small), (large, base_large)] = run_times[..] {
        let ratio = large.as_secs_f64() / small.as_secs_f64().max(1e-9);
        let base_ratio = base_large.as_secs_f64() / base_small.as_secs_f64().max(1e-9);
        println!(
            "  run time {} / {} tasks: ours {ratio:.1}, baseline {base_ratio:.1} (tasks ratio {:.0})",
            count(s.dag_large),
            count(s.dag_small),
            s.dag_large as f64 / s.dag_small as f64
        );
        findings.dag_ratio = Some(ratio);
        findings.dag_baseline_ratio = Some(base_ratio);
    }
    Ok(rows)
}

/// What the database holds when a run is stuck: tasks per status, and blocked tasks whose
/// dependencies have all completed (which the queue should have made ready).
fn diagnose(path: &std::path::Path) -> String {
    let look = || -> Result<String, BenchError> {
        let conn = fixture::raw(path)?;
        let statuses: Vec<(String, i64)> = conn
            .prepare("SELECT status, COUNT(*) FROM tasks GROUP BY status ORDER BY status")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let stranded: i64 = conn.query_row(
            "SELECT COUNT(*) FROM tasks t WHERE t.status = 'blocked' AND NOT EXISTS (
                 SELECT 1 FROM task_dependencies d JOIN tasks u ON u.id = d.depends_on_task_id
                 WHERE d.task_id = t.id AND u.status <> 'completed')",
            [],
            |r| r.get(0),
        )?;
        let open: i64 = conn.query_row(
            "SELECT COUNT(*) FROM task_attempts WHERE finished_at IS NULL",
            [],
            |r| r.get(0),
        )?;
        Ok(format!(
            "the database holds {statuses:?}, {stranded} blocked tasks whose dependencies all \
             completed, {open} open attempts"
        ))
    };
    look().unwrap_or_else(|e| format!("no diagnosis: {e}"))
}
