//! Scenario 2: claim + complete of no-op tasks, by 1, 4 and 16 workers in one process and by 4
//! worker processes, with single-task and batched claims. The baseline is the raw loop on one
//! connection, one commit per operation, claiming as many at a time as the variant.

use std::path::{Path, PathBuf};

use super::count;
use crate::fixture::{self, LoadedTask};
use crate::ours::{self, CommitMode, RunStats};
use crate::raw::RawQueue;
use crate::report::{Measure, Row};
use crate::worker::run_processes;
use crate::{BenchError, Context, Findings, Scenario};

/// How many tasks a batched claim asks for.
pub const BATCH: u32 = 10;

/// Who does the work.
#[derive(Debug, Clone, Copy)]
pub enum Workers {
    /// Tokio tasks sharing one queue (one pool) in this process.
    Tasks(usize),
    /// Separate OS processes, each with its own queue and pool.
    Processes(usize),
}

impl Workers {
    fn label(self) -> String {
        match self {
            Self::Tasks(1) => "1 worker".to_string(),
            Self::Tasks(n) => format!("{n} workers"),
            Self::Processes(n) => format!("{n} worker processes"),
        }
    }

    fn count(self) -> usize {
        match self {
            Self::Tasks(n) | Self::Processes(n) => n,
        }
    }
}

/// The variants, in the order printed.
pub const VARIANTS: [(Workers, u32); 8] = [
    (Workers::Tasks(1), 1),
    (Workers::Tasks(4), 1),
    (Workers::Tasks(16), 1),
    (Workers::Processes(4), 1),
    (Workers::Tasks(1), BATCH),
    (Workers::Tasks(4), BATCH),
    (Workers::Tasks(16), BATCH),
    (Workers::Processes(4), BATCH),
];

/// A database file holding `tasks` ready no-op tasks, to copy for each run.
pub async fn template(cx: &Context, tasks: usize) -> Result<PathBuf, BenchError> {
    let path = cx.db_path("claim-template");
    fixture::create(&path).await?;
    let mut conn = fixture::raw(&path)?;
    fixture::load_tasks(&mut conn, tasks, |_| LoadedTask {
        status: "ready",
        calculated_priority: 5.0,
    })?;
    conn.close().map_err(|(_, e)| e)?;
    Ok(path)
}

/// Our queue with `workers` claiming `max` at a time over a copy of `template`.
pub async fn run_ours(
    cx: &Context,
    template: &Path,
    mode: CommitMode,
    workers: Workers,
    max: u32,
    total: usize,
) -> Result<RunStats, BenchError> {
    let path = cx.db_path("claim");
    fixture::copy(template, &path)?;
    match workers {
        Workers::Tasks(n) => {
            let (db, queue) = mode.open(&path).await?;
            let stats = ours::run_workers(&queue, n, max, total).await?;
            db.close().await;
            Ok(stats)
        }
        Workers::Processes(n) => {
            let exe = cx.worker_exe.clone();
            tokio::task::spawn_blocking(move || run_processes(&exe, &path, n, max, mode, total))
                .await?
        }
    }
}

/// The baseline loop claiming `max` at a time over a copy of `template`.
pub fn run_baseline(
    cx: &Context,
    template: &Path,
    max: u32,
    total: usize,
) -> Result<RunStats, BenchError> {
    let path = cx.db_path("claim-baseline");
    fixture::copy(template, &path)?;
    let mut raw = RawQueue::open(&path)?;
    ours::run_raw(&mut raw, max, total)
}

/// Operations per commit of the raw group-commit loop.
const RAW_GROUP: usize = 64;

/// The baseline loop with raw group commit ([`RawQueue::grouped`]): what batching gives
/// SQLite itself, the ceiling for any group commit on this machine.
pub fn run_baseline_grouped(
    cx: &Context,
    template: &Path,
    max: u32,
    total: usize,
) -> Result<RunStats, BenchError> {
    let path = cx.db_path("claim-baseline-grouped");
    fixture::copy(template, &path)?;
    let mut raw = RawQueue::grouped(&path, RAW_GROUP)?;
    let mut stats = ours::run_raw(&mut raw, max, total)?;
    let t = std::time::Instant::now();
    raw.flush()?;
    stats.elapsed += t.elapsed();
    Ok(stats)
}

/// A run as a measure: tasks per second, with the latency of each complete call (the one
/// operation every task pays for).
pub fn measure(stats: RunStats) -> Measure {
    Measure::throughput(stats.completed, stats.elapsed, stats.complete)
}

pub async fn run(cx: &Context, findings: &mut Findings) -> Result<Vec<Row>, BenchError> {
    let total = cx.sizes.claim_tasks;
    let template = template(cx, total).await?;
    let title = Scenario::ClaimComplete.title();
    let base_single = run_baseline(cx, &template, 1, total)?;
    let base_batch = run_baseline(cx, &template, BATCH, total)?;
    println!(
        "  baseline claim p50/p99 {} (claim 1), {} (claim {BATCH})",
        Measure::latency(base_single.elapsed, base_single.claim.clone())
            .percentiles()
            .unwrap_or_default(),
        Measure::latency(base_batch.elapsed, base_batch.claim.clone())
            .percentiles()
            .unwrap_or_default(),
    );
    let grouped_single = run_baseline_grouped(cx, &template, 1, total)?;
    let grouped_batch = run_baseline_grouped(cx, &template, BATCH, total)?;
    let ceiling = |grouped: &RunStats, base: &RunStats| grouped.rate() / base.rate().max(1e-9);
    let ceilings = (
        ceiling(&grouped_single, &base_single),
        ceiling(&grouped_batch, &base_batch),
    );
    println!(
        "  baseline with raw group commit (a commit every {RAW_GROUP} operations, each in a savepoint): \
         claim 1 {} = {:.2}x its one-commit-per-operation loop; claim {BATCH} {} = {:.2}x",
        crate::stats::fmt_rate(grouped_single.rate()),
        ceilings.0,
        crate::stats::fmt_rate(grouped_batch.rate()),
        ceilings.1
    );
    findings.raw_group_ceiling = Some(grouped_single.rate().max(grouped_batch.rate()));
    let base_single = measure(base_single);
    let base_batch = measure(base_batch);
    findings.baseline_loop = base_single.rate;
    let mut rows = Vec::new();
    for mode in CommitMode::ALL {
        for (workers, max) in VARIANTS {
            let stats = run_ours(cx, &template, mode, workers, max, total).await?;
            let claim_latency = Measure::latency(stats.elapsed, stats.claim.clone());
            let busy = stats.busy;
            let baseline = if max == 1 { &base_single } else { &base_batch };
            let variant = format!(
                "{}, claim {max}, {} tasks, {}",
                workers.label(),
                count(total),
                mode.label()
            );
            let row = Row::new(title, variant, measure(stats)).baseline(baseline.clone());
            row.print();
            println!(
                "    claim p50/p99 {}; calls retried after the busy timeout: {busy}",
                claim_latency.percentiles().unwrap_or_default()
            );
            let rate = row.ours.rate.unwrap_or(0.0);
            if workers.count() == 4 {
                if matches!(workers, Workers::Tasks(_))
                    && max == 1
                    && mode == CommitMode::PerOperation
                {
                    findings.four_workers = Some(rate);
                }
                if mode == CommitMode::Group
                    && findings
                        .best_four_grouped
                        .as_ref()
                        .is_none_or(|(_, best)| rate > *best)
                {
                    findings.best_four_grouped = Some((row.variant.clone(), rate));
                }
                if findings
                    .best_four
                    .as_ref()
                    .is_none_or(|(_, best)| rate > *best)
                {
                    findings.best_four = Some((row.variant.clone(), rate));
                }
            }
            if matches!(workers, Workers::Tasks(1)) && max == 1 {
                let ratio = row.ratio().and_then(|r| match r {
                    crate::report::Ratio::Throughput(r) => Some((r, mode.label())),
                    crate::report::Ratio::Time { .. } => None,
                });
                findings.claim_single_ratio = crate::better(findings.claim_single_ratio, ratio);
            }
            rows.push(row);
        }
    }
    Ok(rows)
}
