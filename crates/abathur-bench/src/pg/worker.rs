//! PostgreSQL worker processes: the bench executable re-run as `pg-worker URL NAME MAX`. A
//! worker opens our queue on the database, says `ready`, waits for a line on stdin so that
//! every process starts at once, then claims and completes until nothing is ready. Every error
//! that reaches it (the caller of our API) is counted and printed, and the call is made again
//! (a completion is repeatable); it reports its counts and latencies on stdout.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use abathur_core::queue::QueueError;

use super::db::pool_config;
use super::ours::{self, is_conflict};
use crate::ours::{RunStats, LEASE};
use crate::stats::Samples;
use crate::BenchError;

/// A worker that met this many errors gives up: something is wrong beyond a conflict.
const MAX_ERRORS: usize = 100;

/// The worker process's `main`, given the arguments after `pg-worker`.
pub fn main(args: &[String]) -> ExitCode {
    let [url, name, max] = args else {
        eprintln!("usage: abathur-bench pg-worker DATABASE_URL NAME MAX_PER_CLAIM");
        return ExitCode::from(2);
    };
    let Ok(max) = max.parse::<u32>() else {
        eprintln!("pg-worker: MAX_PER_CLAIM must be a positive number, not {max:?}");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("pg-worker {name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work(url, name, max)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pg-worker {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The errors one worker met.
#[derive(Debug, Default)]
struct Errors {
    all: usize,
    conflicts: usize,
    /// The first few, as printed.
    shown: Vec<String>,
}

impl Errors {
    fn record(&mut self, call: &str, e: &QueueError) -> Result<(), BenchError> {
        self.all += 1;
        if is_conflict(e) {
            self.conflicts += 1;
        }
        if self.shown.len() < 5 {
            self.shown.push(format!("{call}: {e}"));
        }
        if self.all >= MAX_ERRORS {
            return Err(BenchError(format!(
                "{} errors reached the worker, the last: {call}: {e}",
                self.all
            )));
        }
        Ok(())
    }
}

async fn work(url: &str, name: &str, max: u32) -> Result<(), BenchError> {
    let db = abathur_postgres::PgDatabase::connect(url, pool_config(2)).await?;
    let queue = ours::queue(&db);
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    let mut go = String::new();
    std::io::stdin().lock().read_line(&mut go)?;
    let mut claims = Vec::new();
    let mut completes = Vec::new();
    let mut errors = Errors::default();
    loop {
        let t = Instant::now();
        let claimed = match queue.claim(name, &[], LEASE, max).await {
            Ok(claimed) => claimed,
            Err(e) => {
                errors.record("claim", &e)?;
                continue;
            }
        };
        if claimed.is_empty() {
            break;
        }
        claims.push(t.elapsed().as_micros());
        for task in claimed {
            loop {
                let t = Instant::now();
                match queue.complete(task.lease.attempt_id, None).await {
                    Ok(_) => {
                        completes.push(t.elapsed().as_micros());
                        break;
                    }
                    Err(e) => errors.record("complete", &e)?,
                }
            }
        }
    }
    let join = |v: &[u128]| v.iter().map(u128::to_string).collect::<Vec<_>>().join(" ");
    writeln!(out, "claim {}", join(&claims))?;
    writeln!(out, "complete {}", join(&completes))?;
    for shown in &errors.shown {
        writeln!(out, "error {}", shown.replace('\n', " "))?;
    }
    writeln!(out, "errors {} {}", errors.all, errors.conflicts)?;
    writeln!(out, "done {}", completes.len())?;
    out.flush()?;
    drop(out);
    db.close().await;
    Ok(())
}

/// What the worker processes of one run reported.
#[derive(Debug, Default)]
pub struct ProcessRun {
    pub stats: RunStats,
    /// Errors that reached the workers, and of those the conflicts (serialization failures,
    /// deadlocks, lock timeouts).
    pub errors: usize,
    pub conflicts: usize,
    /// The first errors of each worker, as they printed them.
    pub shown: Vec<String>,
}

/// One worker's report.
struct Report {
    finished: Duration,
    count: usize,
    errors: usize,
    conflicts: usize,
    shown: Vec<String>,
    claim: Samples,
    complete: Samples,
}

/// Runs `processes` workers on the database at `url` until nothing is ready. Timed from the
/// moment all are told to go until the last reports done, so connecting is left out.
pub fn run_processes(
    exe: &std::path::Path,
    url: &str,
    processes: usize,
    max: u32,
) -> Result<ProcessRun, BenchError> {
    let mut children = Vec::with_capacity(processes);
    for p in 0..processes {
        let mut child = Command::new(exe)
            .args([
                "pg-worker",
                url,
                &format!("pg-process-{p}"),
                &max.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| BenchError("worker has no stdout".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        match lines.next() {
            Some(Ok(line)) if line == "ready" => {}
            other => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(BenchError(format!(
                    "pg-worker {p} did not start: {other:?}"
                )));
            }
        }
        children.push((child, lines));
    }
    let started = Instant::now();
    for (child, _) in &mut children {
        let stdin = child
            .stdin
            .as_mut()
            .ok_or_else(|| BenchError("worker has no stdin".into()))?;
        stdin.write_all(b"go\n")?;
        stdin.flush()?;
    }
    let readers: Vec<_> = children
        .into_iter()
        .map(|(mut child, lines)| {
            std::thread::spawn(move || -> Result<Report, BenchError> {
                let mut report = Report {
                    finished: Duration::ZERO,
                    count: 0,
                    errors: 0,
                    conflicts: 0,
                    shown: Vec::new(),
                    claim: Samples::default(),
                    complete: Samples::default(),
                };
                let mut done = false;
                for line in lines {
                    let line = line?;
                    let (kind, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                    let number = |text: &str| {
                        text.parse::<usize>()
                            .map_err(|e| BenchError(format!("bad worker line {line:?}: {e}")))
                    };
                    let samples = || {
                        rest.split_whitespace()
                            .map(|us| us.parse::<u64>().map(Duration::from_micros))
                            .collect::<Result<Vec<_>, _>>()
                            .map_err(|e| BenchError(format!("bad worker line {line:?}: {e}")))
                    };
                    match kind {
                        "claim" => samples()?.into_iter().for_each(|d| report.claim.push(d)),
                        "complete" => samples()?.into_iter().for_each(|d| report.complete.push(d)),
                        "error" => report.shown.push(rest.to_string()),
                        "errors" => {
                            let (all, conflicts) = rest.split_once(' ').unwrap_or((rest, "0"));
                            report.errors = number(all)?;
                            report.conflicts = number(conflicts)?;
                        }
                        "done" => {
                            report.finished = started.elapsed();
                            report.count = number(rest)?;
                            done = true;
                        }
                        other => {
                            return Err(BenchError(format!("unexpected worker line {other:?}")))
                        }
                    }
                }
                let status = child.wait()?;
                if !done {
                    return Err(BenchError(format!(
                        "pg-worker exited ({status}) without reporting"
                    )));
                }
                if !status.success() {
                    return Err(BenchError(format!("pg-worker exited with {status}")));
                }
                Ok(report)
            })
        })
        .collect();
    let mut run = ProcessRun::default();
    let mut failures = Vec::new();
    for reader in readers {
        match reader.join() {
            Ok(Ok(report)) => {
                run.stats.elapsed = run.stats.elapsed.max(report.finished);
                run.stats.completed += report.count;
                run.stats.claim.extend(report.claim);
                run.stats.complete.extend(report.complete);
                run.errors += report.errors;
                run.conflicts += report.conflicts;
                run.shown.extend(report.shown);
            }
            Ok(Err(e)) => failures.push(e.to_string()),
            Err(_) => failures.push("a worker reader panicked".to_string()),
        }
    }
    if !failures.is_empty() {
        return Err(BenchError(format!(
            "{} of {processes} worker processes failed: {}",
            failures.len(),
            failures.join("; ")
        )));
    }
    Ok(run)
}
