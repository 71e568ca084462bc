//! The worker's retention: every so often, finished tasks older than the setting are pruned
//! ([`TaskQueue::prune`]), by a task of their own, so that claims and completions never wait
//! for a prune, and a prune is never cut off in the middle of a batch.

use std::time::Duration;

use abathur_core::queue::TaskQueue;
use tokio::sync::watch;
use tokio::time::{interval, MissedTickBehavior};

/// How long finished tasks are kept, and how often the worker looks for older ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Finished tasks are pruned once they finished longer ago than this.
    pub keep: Duration,
    /// How often to prune.
    pub every: Duration,
}

impl Retention {
    /// Keeps finished tasks for `keep`, pruning every quarter of it, but at least every 10
    /// minutes and at most every second: a task is gone between `keep` and `keep * 1.25`
    /// (or `keep` + 10 minutes) after it finished.
    pub fn new(keep: Duration) -> Self {
        Self {
            keep,
            every: (keep / 4).clamp(Duration::from_secs(1), Duration::from_secs(600)),
        }
    }
}

/// What the prunes of [`prune_until`] did, in all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneTotals {
    /// Prunes run.
    pub prunes: u64,
    /// Tasks removed.
    pub tasks: u64,
    /// Write transactions.
    pub batches: u64,
    /// The longest of them.
    pub longest_batch: Duration,
}

/// Prunes at once and then every `retention.every`, until `stop` says so (or its sender is
/// gone). The first prune always runs; one under way when the stop comes runs to its end.
/// Returns what they did.
pub async fn prune_until(
    queue: TaskQueue,
    retention: Retention,
    mut stop: watch::Receiver<bool>,
) -> PruneTotals {
    let mut tick = interval(retention.every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick is at once: consumed here, so the first prune runs before any stop is
    // looked at, and even a `--once` worker that finds nothing to do prunes once.
    tick.tick().await;
    let mut totals = PruneTotals::default();
    // Whether the last prune met the database down or busy: told once, not at every prune.
    let mut failing = false;
    loop {
        let outcome = queue.prune(retention.keep, &[]).await;
        if let Ok(report) = &outcome {
            totals.prunes += 1;
            totals.tasks += report.tasks;
            totals.batches += report.batches;
            totals.longest_batch = totals.longest_batch.max(report.longest_batch);
            failing = false;
        }
        match outcome {
            Ok(report) if report.tasks > 0 => tracing::info!(
                pruned = report.tasks,
                batches = report.batches,
                longest_batch_ms = report.longest_batch.as_millis() as u64,
                "pruned finished tasks older than {}",
                humantime::format_duration(retention.keep)
            ),
            Ok(_) => {}
            Err(e) if super::outage::transient(&e).is_some() => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(error = %e, "cannot prune finished tasks until the database answers");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot prune finished tasks"),
        }
        tokio::select! {
            _ = tick.tick() => {}
            changed = stop.wait_for(|stop| *stop) => {
                let _ = changed;
                return totals;
            }
        }
    }
}
