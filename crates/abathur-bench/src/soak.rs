//! The retention soak: `abathur-bench soak [--tasks N] [--workers W] [--retention SECS]`.
//!
//! Runs N no-op tasks through W in-process workers on one database file, through the store
//! `abathur worker` uses (`GroupCommitQueueStore`), while the worker's own retention loop
//! (`abathur::worker::retention::prune_until`) prunes what finished longer ago than the
//! retention. A submitter keeps a bounded backlog ahead of the workers; a sampler reads the
//! size of the file and its WAL every 250 ms. It prints the largest sizes, the throughput and
//! the longest prune batch: the figures of `docs/BENCHMARKS.md`, "Retention".

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use abathur::domain::queue::{NewTask, TaskQueue};
use abathur::worker::retention::{prune_until, Retention};
use tokio::sync::watch;

use crate::fixture::{self, AGENT_TYPE};
use crate::ours::{is_busy, CommitMode, LEASE};
use crate::BenchError;

/// What the soak is asked to do.
#[derive(Debug, Clone, Copy)]
struct Settings {
    tasks: u64,
    workers: u32,
    retention: Duration,
}

/// Tasks per submitted batch, and the most submitted but not yet completed.
const SUBMIT_BATCH: u64 = 500;
const BACKLOG: u64 = 5_000;
/// Tasks per claim of a worker.
const CLAIM: u32 = 16;

/// The soak's `main`, given the arguments after `soak`.
pub fn main(args: &[String]) -> std::process::ExitCode {
    let settings = match parse(args) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!(
                "{e}\nusage: abathur-bench soak [--tasks N] [--workers W] [--retention SECONDS]"
            );
            return std::process::ExitCode::from(2);
        }
    };
    crate::run_command("soak", soak(settings))
}

fn parse(args: &[String]) -> Result<Settings, String> {
    let mut settings = Settings {
        tasks: 1_000_000,
        workers: 8,
        retention: Duration::from_secs(60),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            it.next()
                .ok_or(format!("{name} needs a number"))?
                .replace('_', "")
                .parse::<u64>()
                .map_err(|e| format!("{name}: {e}"))
                .and_then(|n| {
                    if n == 0 {
                        Err(format!("{name} must be above 0"))
                    } else {
                        Ok(n)
                    }
                })
        };
        match arg.as_str() {
            "--tasks" => settings.tasks = value("--tasks")?,
            "--workers" => {
                settings.workers = u32::try_from(value("--workers")?).map_err(|e| e.to_string())?
            }
            "--retention" => settings.retention = Duration::from_secs(value("--retention")?),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(settings)
}

/// The bytes of the file at `path`, 0 when it does not exist.
fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

async fn soak(settings: Settings) -> Result<(), BenchError> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("soak.db");
    let wal = dir.path().join("soak.db-wal");
    fixture::create(&path).await?;
    let (db, queue) = CommitMode::Group.open(&path).await?;
    println!(
        "soak: {} no-op tasks, {} workers, retention {} s, through the worker's store and retention loop",
        settings.tasks,
        settings.workers,
        settings.retention.as_secs()
    );

    let submitted = Arc::new(AtomicU64::new(0));
    let completed = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let pruner = tokio::spawn(prune_until(
        queue.clone(),
        Retention::new(settings.retention),
        stop_rx,
    ));
    let submitter = tokio::spawn(submit(
        queue.clone(),
        settings.tasks,
        submitted.clone(),
        completed.clone(),
    ));
    let mut workers = Vec::new();
    for w in 0..settings.workers {
        workers.push(tokio::spawn(work(
            queue.clone(),
            format!("soak-{w}"),
            settings.tasks,
            completed.clone(),
        )));
    }

    let started = Instant::now();
    let (mut max_db, mut max_wal, mut max_sum) = (0u64, 0u64, 0u64);
    let mut last_report = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    while completed.load(Ordering::Relaxed) < settings.tasks {
        tick.tick().await;
        let (d, w) = (size(&path), size(&wal));
        max_db = max_db.max(d);
        max_wal = max_wal.max(w);
        max_sum = max_sum.max(d + w);
        if last_report.elapsed() >= Duration::from_secs(30) {
            last_report = Instant::now();
            let done = completed.load(Ordering::Relaxed);
            println!(
                "  {:>5.0} s  completed {done:>9}  ({:>6.0}/s)  file {:>7.1} MiB  WAL {:>6.1} MiB",
                started.elapsed().as_secs_f64(),
                done as f64 / started.elapsed().as_secs_f64(),
                mib(d),
                mib(w)
            );
        }
        if submitter.is_finished() || workers.iter().any(|w| w.is_finished()) {
            // A task that ended early ended with an error: stop and say which.
            if completed.load(Ordering::Relaxed) < settings.tasks {
                if let Some(done) = workers.iter_mut().find(|w| w.is_finished()) {
                    done.await.map_err(|e| BenchError(e.to_string()))??;
                }
            }
        }
    }
    let elapsed = started.elapsed();
    submitter.await.map_err(|e| BenchError(e.to_string()))??;
    for worker in workers {
        worker.await.map_err(|e| BenchError(e.to_string()))??;
    }
    let _ = stop_tx.send(true);
    let totals = pruner.await.map_err(|e| BenchError(e.to_string()))?;
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tasks")
        .fetch_one(db.pool())
        .await
        .map_err(|e| BenchError(e.to_string()))?;
    let (final_db, final_wal) = (size(&path), size(&wal));
    let free: i64 = sqlx::query_scalar("SELECT freelist_count FROM pragma_freelist_count")
        .fetch_one(db.pool())
        .await
        .map_err(|e| BenchError(e.to_string()))?;
    db.close().await;

    println!("soak done in {:.0} s", elapsed.as_secs_f64());
    println!(
        "  throughput:         {:.0} tasks/s (claim + complete, with submission)",
        settings.tasks as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  largest file:       {:.1} MiB; largest WAL {:.1} MiB; largest file + WAL {:.1} MiB",
        mib(max_db),
        mib(max_wal),
        mib(max_sum)
    );
    println!(
        "  at the end:         file {:.1} MiB ({free} free pages), WAL {:.1} MiB, {left} tasks kept",
        mib(final_db),
        mib(final_wal)
    );
    println!(
        "  retention:          {} prunes removed {} tasks in {} batches; longest batch {:.1} ms",
        totals.prunes,
        totals.tasks,
        totals.batches,
        totals.longest_batch.as_secs_f64() * 1000.0
    );
    Ok(())
}

/// Submits `total` tasks in batches, never more than [`BACKLOG`] ahead of the completions.
async fn submit(
    queue: TaskQueue,
    total: u64,
    submitted: Arc<AtomicU64>,
    completed: Arc<AtomicU64>,
) -> Result<(), BenchError> {
    let mut done = 0;
    while done < total {
        if done - completed.load(Ordering::Relaxed).min(done) >= BACKLOG {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let n = SUBMIT_BATCH.min(total - done);
        let batch: Vec<NewTask> = (0..n)
            .map(|i| NewTask::new(format!("no-op {}", done + i), "", AGENT_TYPE))
            .collect();
        loop {
            match queue.submit_batch(batch.clone()).await {
                Err(e) if is_busy(&e) => continue,
                other => {
                    other?;
                    break;
                }
            }
        }
        done += n;
        submitted.store(done, Ordering::Relaxed);
    }
    Ok(())
}

/// Claims and completes until `total` tasks are completed, by all workers together.
async fn work(
    queue: TaskQueue,
    name: String,
    total: u64,
    completed: Arc<AtomicU64>,
) -> Result<(), BenchError> {
    let types = [AGENT_TYPE.to_string()];
    while completed.load(Ordering::Relaxed) < total {
        let claimed = match queue.claim(&name, &types, LEASE, CLAIM).await {
            Err(e) if is_busy(&e) => continue,
            other => other?,
        };
        if claimed.is_empty() {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        for task in claimed {
            loop {
                match queue.complete(task.lease.attempt_id, None).await {
                    Err(e) if is_busy(&e) => continue,
                    other => {
                        other?;
                        break;
                    }
                }
            }
            completed.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}
