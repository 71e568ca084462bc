//! P3 `pg-fanout`: completing one task that 10,000 tasks depend on. The completion makes them
//! ready in its own transaction, so the duration of that one call is the time until all are
//! ready. Each run (ours and the baseline's) is on a new database filled through our queue; the
//! baseline completes the same claimed root with the adapter's statements, raw.

use std::time::{Duration, Instant};

use abathur_core::queue::NewTask;
use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

use crate::fixture::AGENT_TYPE;
use crate::ours::LEASE;
use crate::pg::db::{self, Fresh};
use crate::pg::ours;
use crate::pg::raw::RawPg;
use crate::pg::{PgContext, PgFindings, PgScenario};
use crate::report::{Measure, Row};
use crate::scenarios::count;
use crate::stats::Samples;
use crate::BenchError;

/// How many dependents are submitted per batch.
const BATCH: usize = 1_000;

/// A new database holding a claimed root and `fanout` tasks waiting for it; returns the root's
/// attempt id. Vacuumed and analysed, so both sides start from a settled table.
async fn setup(fanout: usize) -> Result<(Fresh, Uuid), BenchError> {
    let fresh = Fresh::new(2).await?;
    let queue = ours::queue(&fresh.db);
    let root = queue.submit(NewTask::new("root", "", AGENT_TYPE)).await?;
    let mut left = fanout;
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
    let claimed = queue.claim("bench", &[], LEASE, 1).await?;
    let attempt = claimed
        .first()
        .filter(|c| c.task.id == root.id)
        .ok_or_else(|| BenchError("the root is not the one task ready".into()))?
        .lease
        .attempt_id;
    let mut conn = fresh.connection().await?;
    conn.execute("VACUUM ANALYZE").await?;
    conn.close().await?;
    Ok((fresh, attempt))
}

/// The completion reported every dependent released, and the database holds them all ready,
/// each with its history row and a claim key.
async fn check(
    conn: &mut PgConnection,
    released: usize,
    expected: usize,
) -> Result<(), BenchError> {
    let ready = db::count_status(conn, "ready").await?;
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM task_events WHERE from_status = 'blocked' AND to_status = 'ready'",
    )
    .fetch_one(&mut *conn)
    .await?;
    let keyless: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasks WHERE status = 'ready' AND claim_key IS NULL",
    )
    .fetch_one(&mut *conn)
    .await?;
    let expected_i64 = expected as i64;
    if released != expected || ready != expected_i64 || events != expected_i64 || keyless != 0 {
        return Err(BenchError(format!(
            "fan-out released {released}, left {ready} ready with {events} history rows and \
             {keyless} without a claim key, expected {expected}"
        )));
    }
    Ok(())
}

async fn ours_once(fanout: usize) -> Result<Duration, BenchError> {
    let (fresh, attempt) = setup(fanout).await?;
    let queue = ours::queue(&fresh.db);
    let t = Instant::now();
    let released = queue.complete(attempt, None).await?;
    let elapsed = t.elapsed();
    let mut conn = fresh.connection().await?;
    let checked = check(&mut conn, released.outcome.len(), fanout).await;
    conn.close().await?;
    fresh.finish().await;
    checked?;
    Ok(elapsed)
}

async fn raw_once(fanout: usize) -> Result<Duration, BenchError> {
    let (fresh, attempt) = setup(fanout).await?;
    let mut raw = RawPg::new(fresh.connection().await?);
    let t = Instant::now();
    let released = raw.complete(attempt).await?;
    let elapsed = t.elapsed();
    let checked = check(raw.connection(), released, fanout).await;
    raw.close().await;
    fresh.finish().await;
    checked?;
    Ok(elapsed)
}

pub async fn run(cx: &PgContext, findings: &mut PgFindings) -> Result<Vec<Row>, BenchError> {
    let s = cx.sizes;
    let mut base = Samples::default();
    let mut ours = Samples::default();
    for _ in 0..s.fanout_repeats {
        base.push(raw_once(s.fanout).await?);
        ours.push(ours_once(s.fanout).await?);
    }
    let worst = ours.percentile(100.0).unwrap_or_default();
    let base_worst = base.percentile(100.0).unwrap_or_default();
    findings.fanout_worst = Some(worst);
    let row = Row::new(
        PgScenario::Fanout.title(),
        format!(
            "complete 1 task with {} dependents, {} runs (p99 = worst)",
            count(s.fanout),
            s.fanout_repeats
        ),
        Measure::latency(worst, ours),
    )
    .baseline(Measure::latency(base_worst, base));
    row.print();
    Ok(vec![row])
}
