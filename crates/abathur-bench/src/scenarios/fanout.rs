//! Scenario 3: completing one task that 10,000 others wait for, until all of them are ready.
//! The completion makes them ready in its own transaction, so the time of that one call is the
//! time until all are ready.

use std::time::Instant;

use abathur::domain::queue::NewTask;

use super::count;
use crate::fixture::{self, AGENT_TYPE};
use crate::ours::{CommitMode, LEASE};
use crate::raw::RawQueue;
use crate::report::{Measure, Row};
use crate::stats::Samples;
use crate::{BenchError, Context, Findings, Scenario};

/// How many dependents are submitted per batch.
const BATCH: usize = 1_000;

pub async fn run(cx: &Context, findings: &mut Findings) -> Result<Vec<Row>, BenchError> {
    let s = cx.sizes;
    let template = cx.db_path("fanout-template");
    fixture::create(&template).await?;
    {
        let (db, queue) = CommitMode::PerOperation.open(&template).await?;
        let root = queue.submit(NewTask::new("root", "", AGENT_TYPE)).await?;
        let mut left = s.fanout;
        while left > 0 {
            let n = left.min(BATCH);
            let batch = (0..n)
                .map(|i| {
                    let mut t = NewTask::new(format!("dependent {i}"), "", AGENT_TYPE);
                    t.dependencies = vec![root.id];
                    t
                })
                .collect();
            queue.submit_batch(batch).await?;
            left -= n;
        }
        db.close().await;
    }

    let mut base = Samples::default();
    for _ in 0..s.fanout_repeats {
        let path = cx.db_path("fanout-baseline");
        fixture::copy(&template, &path)?;
        let mut raw = RawQueue::open(&path)?;
        let claimed = raw.claim("bench-baseline", 1)?;
        let attempt = &claimed
            .first()
            .ok_or_else(|| BenchError("the root is not ready".into()))?
            .attempt_id;
        let t = Instant::now();
        let released = raw.complete(attempt)?;
        base.push(t.elapsed());
        drop(raw);
        check(released, s.fanout, &path)?;
    }

    let mut rows = Vec::new();
    for mode in CommitMode::ALL {
        let mut ours = Samples::default();
        for _ in 0..s.fanout_repeats {
            let path = cx.db_path("fanout");
            fixture::copy(&template, &path)?;
            let (db, queue) = mode.open(&path).await?;
            let claimed = queue.claim("bench", &[], LEASE, 1).await?;
            let attempt = claimed
                .first()
                .ok_or_else(|| BenchError("the root is not ready".into()))?
                .lease
                .attempt_id;
            let t = Instant::now();
            let released = queue.complete(attempt, None).await?;
            ours.push(t.elapsed());
            db.close().await;
            check(released.outcome.len(), s.fanout, &path)?;
        }
        let worst = ours.percentile(100.0).unwrap_or_default();
        if mode == CommitMode::PerOperation {
            findings.fanout_worst = Some(worst);
        }
        let variant = format!(
            "complete 1 task with {} dependents, {} runs (p99 = worst), {}",
            count(s.fanout),
            s.fanout_repeats,
            mode.label()
        );
        let row = Row::new(
            Scenario::Fanout.title(),
            variant,
            Measure::latency(worst, ours),
        )
        .baseline(Measure::latency(
            base.percentile(100.0).unwrap_or_default(),
            base.clone(),
        ));
        row.print();
        rows.push(row);
    }
    Ok(rows)
}

/// The completion reported every dependent released, and the database holds them all ready,
/// each with its history row, a claim key, and a priority of at least its own plus its
/// depth's (5 + 0.5).
fn check(released: usize, expected: usize, path: &std::path::Path) -> Result<(), BenchError> {
    let conn = fixture::raw(path)?;
    let count =
        |sql: &str| -> Result<i64, BenchError> { Ok(conn.query_row(sql, [], |r| r.get(0))?) };
    let ready = count("SELECT COUNT(*) FROM tasks WHERE status = 'ready'")?;
    let events = count(
        "SELECT COUNT(*) FROM task_events WHERE from_status = 'blocked' AND to_status = 'ready'",
    )?;
    let low = count(
        "SELECT COUNT(*) FROM tasks WHERE status = 'ready'
         AND (calculated_priority < 5.5 OR claim_key IS NULL)",
    )?;
    let expected_i64 = i64::try_from(expected).map_err(|e| BenchError(e.to_string()))?;
    if released != expected || ready != expected_i64 || events != expected_i64 || low != 0 {
        return Err(BenchError(format!(
            "fan-out released {released}, left {ready} ready with {events} history rows and \
             {low} under-prioritised, expected {expected}"
        )));
    }
    Ok(())
}
