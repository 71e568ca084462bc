//! P6 `pg-peers`: the queues PostgreSQL users pick, on the same workload (10,000 no-op jobs)
//! and the same server in the same run, each run on a new database: graphile-worker (node,
//! `peer-graphile/bench.mjs`) at concurrency 1, 4, 16 and 32, each with its defaults (one job
//! fetched and completed at a time) and with its batching (a local queue of 1,000 jobs and
//! batched completions, `--local-queue 1000 --complete-batch-delay 0`, the configuration its
//! README found best), and apalis-postgres (its own
//! cargo project, `peer-apalis-postgres/`) with 1 and 4 workers. Ours runs beside them through
//! `PgQueueStore`. Each peer prints one JSON line, `{"jobs", "concurrency" or "workers",
//! "seconds", "jobs_per_second"}`, timed by the peer itself from its workers' start until every
//! job is done.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::ours::RunStats;
use crate::pg::scenarios::claim::{self, workers_label, Ours, BATCH, LOCAL_QUEUE};
use crate::pg::scenarios::latency;
use crate::pg::{PgContext, PgFindings, PgScenario};
use crate::report::{Measure, Row};
use crate::scenarios::claim::measure;
use crate::scenarios::{count, warm_up};
use crate::stats::{fmt_rate, Samples};
use crate::BenchError;

/// graphile-worker's concurrencies; its best is the figure the target compares with.
const GRAPHILE_CONCURRENCY: [usize; 4] = [1, 4, 16, 32];
/// graphile-worker's configurations: a label and the options given to `bench.mjs`.
const GRAPHILE_MODES: [(&str, &[&str]); 2] = [
    ("defaults", &[]),
    (
        "local queue 1,000 + batched completions",
        &["--local-queue", "1000", "--complete-batch-delay", "0"],
    ),
];
/// apalis-postgres's workers.
const APALIS_WORKERS: [usize; 2] = [1, 4];
/// Our configurations run beside them: (in-process workers, tasks per claim).
const OURS: [Ours; 6] = [
    Ours {
        workers: 1,
        max: 1,
        grouped: false,
    },
    Ours {
        workers: 4,
        max: 1,
        grouped: false,
    },
    Ours {
        workers: 4,
        max: BATCH,
        grouped: false,
    },
    Ours {
        workers: 16,
        max: BATCH,
        grouped: false,
    },
    Ours {
        workers: 1,
        max: LOCAL_QUEUE,
        grouped: true,
    },
    Ours {
        workers: 4,
        max: LOCAL_QUEUE,
        grouped: true,
    },
];

/// The JSON line a peer printed: jobs done and the seconds they took.
fn parse_result(stdout: &str, jobs: usize) -> Result<Duration, BenchError> {
    let line = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| BenchError(format!("the peer printed no JSON line: {stdout:?}")))?;
    let value: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| BenchError(format!("the peer's line {line:?} is not JSON: {e}")))?;
    let done = value.get("jobs").and_then(serde_json::Value::as_u64);
    if done != Some(jobs as u64) {
        return Err(BenchError(format!(
            "the peer reports {done:?} jobs, expected {jobs}: {line}"
        )));
    }
    let seconds = value
        .get("seconds")
        .and_then(serde_json::Value::as_f64)
        .filter(|s| *s > 0.0)
        .ok_or_else(|| BenchError(format!("the peer's line has no seconds: {line}")))?;
    Ok(Duration::from_secs_f64(seconds))
}

/// Runs `command`, returning its stdout, or an error with its stderr.
fn output(mut command: Command, what: &str) -> Result<String, BenchError> {
    let output = command
        .output()
        .map_err(|e| BenchError(format!("{what} could not start: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        return Err(BenchError(format!(
            "{what} failed ({}): {}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Installs graphile-worker's locked dependencies once (`npm ci`) when they are missing.
fn graphile_install(dir: &Path) -> Result<(), BenchError> {
    if dir.join("node_modules").is_dir() {
        return Ok(());
    }
    println!("  installing graphile-worker (npm ci in {})", dir.display());
    let mut npm = Command::new("npm");
    npm.arg("ci")
        .arg("--no-audit")
        .arg("--no-fund")
        .current_dir(dir);
    output(npm, "npm ci").map(|_| ())
}

fn graphile_run(
    dir: &Path,
    url: &str,
    jobs: usize,
    concurrency: usize,
    options: &[&str],
) -> Result<Duration, BenchError> {
    let mut node = Command::new("node");
    node.arg("bench.mjs")
        .arg(url)
        .arg(jobs.to_string())
        .arg(concurrency.to_string())
        .args(options)
        .current_dir(dir);
    parse_result(&output(node, "graphile-worker")?, jobs)
}

/// graphile-worker's enqueue to start (`--latency`, one idle worker): p50 and p99, from
/// `addJob` returning to the task function starting.
fn graphile_latency(
    dir: &Path,
    url: &str,
    jobs: usize,
) -> Result<(Duration, Duration), BenchError> {
    let mut node = Command::new("node");
    node.arg("bench.mjs")
        .arg(url)
        .arg(jobs.to_string())
        .arg("1")
        .arg("--latency")
        .current_dir(dir);
    let stdout = output(node, "graphile-worker --latency")?;
    let line = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| BenchError(format!("the peer printed no JSON line: {stdout:?}")))?;
    let value: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| BenchError(format!("the peer's line {line:?} is not JSON: {e}")))?;
    let ms = |key: &str| {
        value
            .get(key)
            .and_then(serde_json::Value::as_f64)
            .map(|ms| Duration::from_secs_f64(ms / 1e3))
            .ok_or_else(|| BenchError(format!("the peer's line has no {key}: {line}")))
    };
    Ok((ms("p50_ms")?, ms("p99_ms")?))
}

fn apalis_run(
    manifest: &Path,
    url: &str,
    jobs: usize,
    workers: usize,
) -> Result<Duration, BenchError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut run = Command::new(cargo);
    run.args(["run", "--release", "--quiet", "--manifest-path"])
        .arg(manifest)
        .arg("--")
        .arg(url)
        .arg(jobs.to_string())
        .arg(workers.to_string());
    parse_result(&output(run, "apalis-postgres")?, jobs)
}

/// Runs one peer configuration on a new, empty database (the peer makes its own schema).
async fn on_new_database<F>(run: F) -> Result<Duration, BenchError>
where
    F: FnOnce(&str) -> Result<Duration, BenchError> + Send + 'static,
{
    let test = crate::pg::db::new_database().await?;
    let url = test.url().to_string();
    let result = tokio::task::spawn_blocking(move || run(&url)).await;
    drop(test);
    result?
}

/// Enqueue to start, ours (as P2 measures it) beside graphile-worker's own measure of it: the
/// time from adding a job to an idle worker starting it.
async fn latency_row(
    cx: &PgContext,
    graphile_dir: &Path,
    findings: &mut PgFindings,
) -> Result<Row, BenchError> {
    let calls = cx.sizes.latency_tasks;
    let dir = graphile_dir.to_path_buf();
    let peer = {
        let test = crate::pg::db::new_database().await?;
        let url = test.url().to_string();
        let measured =
            tokio::task::spawn_blocking(move || graphile_latency(&dir, &url, calls)).await;
        drop(test);
        measured?
    };
    let warm = warm_up(calls);
    let (raw, _, raw_elapsed) = latency::measure_raw(calls, warm).await?;
    let (ours, _, elapsed) = latency::measure_ours(calls, warm).await?;
    let mut row = Row::new(
        PgScenario::Peers.title(),
        format!(
            "enqueue to start, {} tasks: ours (as P2) vs graphile-worker, 1 idle worker (--latency)",
            count(calls)
        ),
        Measure::latency(elapsed, ours),
    )
    .baseline(Measure::latency(raw_elapsed, raw));
    match peer {
        Ok((p50, p99)) => {
            // The peer reports its p50 and p99 only: two samples whose nearest-rank p50 and
            // p99 are exactly those.
            let mut samples = Samples::default();
            samples.push(p50);
            samples.push(p99);
            row = row.peer(Measure::latency(p99, samples));
        }
        Err(e) => {
            println!("  graphile-worker --latency: {e}");
            findings.peer_failures += 1;
        }
    }
    row.print();
    Ok(row)
}

pub async fn run(cx: &PgContext, findings: &mut PgFindings) -> Result<Vec<Row>, BenchError> {
    let jobs = cx.sizes.claim_tasks;
    let title = PgScenario::Peers.title();
    let graphile_dir = cx.peers_dir.join("peer-graphile");
    let apalis_manifest = cx.peers_dir.join("peer-apalis-postgres/Cargo.toml");

    let mut graphile: Vec<(String, Option<Measure>)> = Vec::new();
    let installed = {
        let dir = graphile_dir.clone();
        tokio::task::spawn_blocking(move || graphile_install(&dir)).await?
    };
    if let Err(e) = &installed {
        println!("  graphile-worker: {e}");
        findings.peer_failures += 1;
    }
    for (mode, options) in GRAPHILE_MODES {
        for concurrency in GRAPHILE_CONCURRENCY {
            let label = format!("concurrency {concurrency}, {mode}");
            let mut measured = None;
            if installed.is_ok() {
                let dir = graphile_dir.clone();
                match on_new_database(move |url| {
                    graphile_run(&dir, url, jobs, concurrency, options)
                })
                .await
                {
                    Ok(elapsed) => {
                        let m = Measure::throughput(jobs, elapsed, Samples::default());
                        println!("  graphile-worker, {label}: {}", m.headline());
                        measured = Some(m);
                    }
                    Err(e) => {
                        println!("  graphile-worker, {label}: {e}");
                        findings.peer_failures += 1;
                    }
                }
            }
            graphile.push((label, measured));
        }
    }
    let mut apalis: Vec<(usize, Option<Measure>)> = Vec::new();
    for workers in APALIS_WORKERS {
        let manifest = apalis_manifest.clone();
        let measured =
            match on_new_database(move |url| apalis_run(&manifest, url, jobs, workers)).await {
                Ok(elapsed) => {
                    let m = Measure::throughput(jobs, elapsed, Samples::default());
                    println!("  apalis-postgres, {workers} workers: {}", m.headline());
                    Some(m)
                }
                Err(e) => {
                    println!("  apalis-postgres, {workers} workers: {e}");
                    findings.peer_failures += 1;
                    None
                }
            };
        apalis.push((workers, measured));
    }

    let mut rows = Vec::new();
    if installed.is_ok() {
        rows.push(latency_row(cx, &graphile_dir, findings).await?);
    }

    let baseline = measure(claim::run_baseline(1, jobs).await?);
    let mut ours: Vec<(usize, u32, String, Measure)> = Vec::new();
    for how in OURS {
        let stats: RunStats = claim::run_ours(how, jobs).await?;
        let label = how.label();
        let m = measure(stats);
        println!("  ours, {label}: {}", m.headline());
        ours.push((how.workers, how.max, label, m));
    }
    let best = ours
        .iter()
        .max_by(|a, b| a.3.rate.unwrap_or(0.0).total_cmp(&b.3.rate.unwrap_or(0.0)))
        .map(|(_, _, label, m)| (label.clone(), m.clone()))
        .ok_or_else(|| BenchError("ours did not run".into()))?;
    findings.peers_ours = best.1.rate.map(|r| (best.0.clone(), r));

    for (workers, peer) in &apalis {
        for (ours_workers, max, label, m) in &ours {
            if ours_workers != workers || (*workers == 1 && *max != 1) {
                continue;
            }
            let mut row = Row::new(
                title,
                format!(
                    "{} jobs: ours {label} vs apalis-postgres {}",
                    count(jobs),
                    workers_label(*workers)
                ),
                m.clone(),
            )
            .baseline(baseline.clone());
            if let Some(peer) = peer {
                row = row.peer(peer.clone());
            }
            row.print();
            rows.push(row);
        }
        if let Some(rate) = peer.as_ref().and_then(|p| p.rate) {
            if findings.apalis_best.is_none_or(|(_, best)| rate > best) {
                findings.apalis_best = Some((*workers, rate));
            }
        }
    }
    for (label, peer) in &graphile {
        let mut row = Row::new(
            title,
            format!(
                "{} jobs: ours at its best here ({}) vs graphile-worker {label}",
                count(jobs),
                best.0
            ),
            best.1.clone(),
        )
        .baseline(baseline.clone());
        if let Some(peer) = peer {
            row = row.peer(peer.clone());
            if let Some(rate) = peer.rate {
                if findings
                    .graphile_best
                    .as_ref()
                    .is_none_or(|(_, b)| rate > *b)
                {
                    findings.graphile_best = Some((label.clone(), rate));
                }
            }
        }
        row.print();
        rows.push(row);
    }
    if let (Some((c, g)), Some((label, o))) = (&findings.graphile_best, &findings.peers_ours) {
        println!(
            "  ours at its best ({label}) {} / graphile-worker at its best ({c}) {} = {:.2}x",
            fmt_rate(*o),
            fmt_rate(*g),
            o / g
        );
    }
    Ok(rows)
}
