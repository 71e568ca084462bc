//! Worker processes: the bench executable re-run as `worker DB NAME MAX`. A worker opens our
//! queue, says `ready`, waits for a line on stdin so that every process starts at once, then
//! claims and completes until nothing is ready, and reports its count and latencies on stdout.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use crate::ours::{is_busy, CommitMode, RunStats, LEASE};
use crate::stats::Samples;
use crate::BenchError;

/// The worker process's `main`, given the arguments after `worker`.
pub fn main(args: &[String]) -> ExitCode {
    let [db, name, max, mode] = args else {
        eprintln!("usage: abathur-bench worker DB NAME MAX_PER_CLAIM per-op|group");
        return ExitCode::from(2);
    };
    let mode = match mode.as_str() {
        "per-op" => CommitMode::PerOperation,
        "group" => CommitMode::Group,
        other => {
            eprintln!("worker: the mode is per-op or group, not {other:?}");
            return ExitCode::from(2);
        }
    };
    let Ok(max) = max.parse::<u32>() else {
        eprintln!("worker: MAX_PER_CLAIM must be a positive number, not {max:?}");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("worker {name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work(Path::new(db), name, max, mode)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("worker {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn work(db: &Path, name: &str, max: u32, mode: CommitMode) -> Result<(), BenchError> {
    let (conn, queue) = mode.open(db).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    let mut go = String::new();
    std::io::stdin().lock().read_line(&mut go)?;
    let mut claims = Vec::new();
    let mut completes = Vec::new();
    let mut busy = 0;
    loop {
        let t = Instant::now();
        let claimed = match queue.claim(name, &[], LEASE, max).await {
            Err(e) if is_busy(&e) => {
                busy += 1;
                continue;
            }
            other => other?,
        };
        if claimed.is_empty() {
            break;
        }
        claims.push(t.elapsed().as_micros());
        for task in claimed {
            loop {
                let t = Instant::now();
                match queue.complete(task.lease.attempt_id, None).await {
                    Err(e) if is_busy(&e) => busy += 1,
                    other => {
                        other?;
                        completes.push(t.elapsed().as_micros());
                        break;
                    }
                }
            }
        }
    }
    let join = |v: &[u128]| v.iter().map(u128::to_string).collect::<Vec<_>>().join(" ");
    writeln!(out, "claim {}", join(&claims))?;
    writeln!(out, "complete {}", join(&completes))?;
    writeln!(out, "busy {busy}")?;
    writeln!(out, "done {}", completes.len())?;
    out.flush()?;
    drop(out);
    conn.close().await;
    Ok(())
}

/// Runs `processes` workers on the queue at `db` until nothing is ready; they must complete
/// `total` tasks between them. Timed from the moment all are told to go until the last reports
/// done, so opening the database and closing it are left out.
pub fn run_processes(
    exe: &Path,
    db: &Path,
    processes: usize,
    max: u32,
    mode: CommitMode,
    total: usize,
) -> Result<RunStats, BenchError> {
    let mut children = Vec::with_capacity(processes);
    for p in 0..processes {
        let mut child = Command::new(exe)
            .args([
                "worker",
                &db.display().to_string(),
                &format!("process-{p}"),
                &max.to_string(),
                match mode {
                    CommitMode::PerOperation => "per-op",
                    CommitMode::Group => "group",
                },
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
                return Err(BenchError(format!("worker {p} did not start: {other:?}")));
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
            std::thread::spawn(
                move || -> Result<(Duration, usize, usize, Samples, Samples), BenchError> {
                    let mut claim = Samples::default();
                    let mut complete = Samples::default();
                    let mut count = None;
                    let mut busy = 0;
                    let mut finished = Duration::ZERO;
                    for line in lines {
                        let line = line?;
                        let (kind, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                        let samples = || {
                            rest.split_whitespace()
                                .map(|us| us.parse::<u64>().map(Duration::from_micros))
                                .collect::<Result<Vec<_>, _>>()
                                .map_err(|e| BenchError(format!("bad worker line {line:?}: {e}")))
                        };
                        match kind {
                            "claim" => samples()?.into_iter().for_each(|d| claim.push(d)),
                            "complete" => samples()?.into_iter().for_each(|d| complete.push(d)),
                            "busy" => {
                                busy = rest
                                    .parse::<usize>()
                                    .map_err(|e| BenchError(e.to_string()))?;
                            }
                            "done" => {
                                finished = started.elapsed();
                                count = Some(
                                    rest.parse::<usize>()
                                        .map_err(|e| BenchError(e.to_string()))?,
                                );
                            }
                            other => {
                                return Err(BenchError(format!("unexpected worker line {other:?}")))
                            }
                        }
                    }
                    let status = child.wait()?;
                    let count = count.ok_or_else(|| {
                        BenchError(format!("worker exited ({status}) without reporting"))
                    })?;
                    if !status.success() {
                        return Err(BenchError(format!("worker exited with {status}")));
                    }
                    Ok((finished, count, busy, claim, complete))
                },
            )
        })
        .collect();
    let mut stats = RunStats::default();
    for reader in readers {
        let (finished, count, busy, claim, complete) = reader
            .join()
            .map_err(|_| BenchError("a worker reader panicked".into()))??;
        stats.elapsed = stats.elapsed.max(finished);
        stats.completed += count;
        stats.busy += busy;
        stats.claim.extend(claim);
        stats.complete.extend(complete);
    }
    if stats.completed != total {
        return Err(BenchError(format!(
            "worker processes completed {} tasks, expected {total}",
            stats.completed
        )));
    }
    Ok(stats)
}
