//! P1 `pg-claim`: no-op tasks claimed and completed through our `PgQueueStore` by 1, 4 and 16
//! tokio workers sharing one pool, claiming 1 and 10 at a time, each run on a new database. The
//! baseline is the raw loop on one connection, one transaction per operation, claiming as many
//! at a time as the variant, on a new database of its own.

use std::time::Instant;

use crate::ours::{self as shared, Completing, RunStats};
use crate::pg::db::{self, Fresh, Shape};
use crate::pg::ours;
use crate::pg::raw::RawPg;
use crate::pg::{PgContext, PgFindings, PgScenario};
use crate::report::{Measure, Row};
use crate::scenarios::claim::measure;
use crate::scenarios::count;
use crate::stats::fmt_rate;
use crate::BenchError;

/// How many tasks a batched claim asks for.
pub const BATCH: u32 = 10;

/// How many tasks a worker of a group-commit variant claims at once, and then runs (and
/// completes) at once, as graphile-worker's local queue does.
pub const LOCAL_QUEUE: u32 = 200;

/// How our queue is driven in a variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ours {
    /// In-process workers (tokio tasks) sharing one pool.
    pub workers: usize,
    /// Tasks per claim.
    pub max: u32,
    /// Through `PgGroupCommitQueueStore`, each worker completing what it claimed at once;
    /// else `PgQueueStore`, each worker completing one task after another.
    pub grouped: bool,
}

impl Ours {
    const fn plain(workers: usize, max: u32) -> Self {
        Self {
            workers,
            max,
            grouped: false,
        }
    }

    const fn grouped(workers: usize, max: u32) -> Self {
        Self {
            workers,
            max,
            grouped: true,
        }
    }

    /// As printed: "4 workers, claim 10", with how it completes when grouped.
    pub fn label(self) -> String {
        let label = format!("{}, claim {}", workers_label(self.workers), self.max);
        if self.grouped {
            format!("{label}, group commit (each claim's tasks completed at once)")
        } else {
            label
        }
    }
}

/// The variants, in the order printed.
pub const VARIANTS: [Ours; 9] = [
    Ours::plain(1, 1),
    Ours::plain(4, 1),
    Ours::plain(16, 1),
    Ours::plain(1, BATCH),
    Ours::plain(4, BATCH),
    Ours::plain(16, BATCH),
    Ours::grouped(16, BATCH),
    Ours::grouped(1, LOCAL_QUEUE),
    Ours::grouped(4, LOCAL_QUEUE),
];

/// The label of `workers` in-process workers.
pub fn workers_label(workers: usize) -> String {
    if workers == 1 {
        "1 worker".to_string()
    } else {
        format!("{workers} workers")
    }
}

/// A new database holding `tasks` ready no-op tasks (priority 5), and a pool of at most
/// `max_connections` on it.
pub async fn ready_database(tasks: usize, max_connections: u32) -> Result<Fresh, BenchError> {
    let fresh = Fresh::new(max_connections).await?;
    let mut conn = fresh.connection().await?;
    db::load_tasks(
        &mut conn,
        tasks,
        Shape {
            ready_every: 1,
            spread: false,
        },
    )
    .await?;
    sqlx::Connection::close(conn).await?;
    Ok(fresh)
}

/// Our queue worked as `how` says until `total` tasks are completed, on a new database. The
/// pool has a connection per worker and one to spare, and two more for the group commit's
/// writers.
pub async fn run_ours(how: Ours, total: usize) -> Result<RunStats, BenchError> {
    let connections = how.workers + 1 + if how.grouped { 2 } else { 0 };
    let pool = u32::try_from(connections).map_err(|e| BenchError(e.to_string()))?;
    let fresh = ready_database(total, pool).await?;
    let (queue, completing) = if how.grouped {
        (ours::grouped_queue(&fresh.db), Completing::AtOnce)
    } else {
        (ours::queue(&fresh.db), Completing::OneByOne)
    };
    let stats =
        shared::run_workers_completing(&queue, how.workers, how.max, total, completing).await;
    let mut conn = fresh.connection().await?;
    let completed = db::count_status(&mut conn, "completed").await?;
    sqlx::Connection::close(conn).await?;
    fresh.finish().await;
    let stats = stats?;
    if completed != total as i64 {
        return Err(BenchError(format!(
            "the database holds {completed} completed tasks, expected {total}"
        )));
    }
    Ok(stats)
}

/// The raw loop on one connection claiming `max` at a time until `total` tasks are completed,
/// on a new database.
pub async fn run_baseline(max: u32, total: usize) -> Result<RunStats, BenchError> {
    let fresh = ready_database(total, 1).await?;
    let mut raw = RawPg::new(fresh.connection().await?);
    let mut stats = RunStats::default();
    let started = Instant::now();
    while stats.completed < total {
        let t = Instant::now();
        let claimed = raw.claim("bench-baseline", max).await?;
        if claimed.is_empty() {
            return Err(BenchError(format!(
                "the baseline found nothing ready with {} of {total} tasks done",
                stats.completed
            )));
        }
        stats.claim.push(t.elapsed());
        for attempt in claimed {
            let t = Instant::now();
            raw.complete(attempt).await?;
            stats.complete.push(t.elapsed());
            stats.completed += 1;
        }
    }
    stats.elapsed = started.elapsed();
    let completed = db::count_status(raw.connection(), "completed").await?;
    raw.close().await;
    fresh.finish().await;
    if completed != total as i64 {
        return Err(BenchError(format!(
            "the baseline left {completed} completed tasks, expected {total}"
        )));
    }
    Ok(stats)
}

/// The claim latencies of a run, as `p50 / p99`.
pub fn claim_percentiles(stats: &RunStats) -> String {
    Measure::latency(stats.elapsed, stats.claim.clone())
        .percentiles()
        .unwrap_or_else(|| "–".into())
}

pub async fn run(cx: &PgContext, findings: &mut PgFindings) -> Result<Vec<Row>, BenchError> {
    let total = cx.sizes.claim_tasks;
    let title = PgScenario::Claim.title();
    let base_single = run_baseline(1, total).await?;
    let base_batch = run_baseline(BATCH, total).await?;
    println!(
        "  baseline loop: claim 1 {} (claim p50/p99 {}), claim {BATCH} {} (claim p50/p99 {})",
        fmt_rate(base_single.rate()),
        claim_percentiles(&base_single),
        fmt_rate(base_batch.rate()),
        claim_percentiles(&base_batch),
    );
    findings.claim_baseline = Some(base_single.rate());
    let base_single = measure(base_single);
    let base_batch = measure(base_batch);
    let mut rows = Vec::new();
    for how in VARIANTS {
        let stats = run_ours(how, total).await?;
        let claim = claim_percentiles(&stats);
        let busy = stats.busy;
        let baseline = if how.max == 1 {
            &base_single
        } else {
            &base_batch
        };
        let variant = format!("{}, {} tasks", how.label(), count(total));
        let row = Row::new(title, variant, measure(stats)).baseline(baseline.clone());
        row.print();
        println!("    claim p50/p99 {claim}; calls that failed as busy and were retried: {busy}");
        let rate = row.ours.rate.unwrap_or(0.0);
        if findings
            .claim_best
            .as_ref()
            .is_none_or(|(_, best)| rate > *best)
        {
            findings.claim_best = Some((row.variant.clone(), rate));
        }
        rows.push(row);
    }
    Ok(rows)
}
