//! Scenario 7: apalis-sqlite on the same no-op claim + complete workload, next to ours and the
//! baseline. apalis-sqlite links another SQLite (through sqlx 0.9), so it lives in its own
//! project (`peer-apalis/`), which this scenario builds and runs with cargo.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::claim::{self, Workers, BATCH};
use super::count;
use crate::ours::CommitMode;
use crate::report::{Measure, Row};
use crate::stats::Samples;
use crate::{BenchError, Context, Findings, Scenario};

/// Runs the peer on a new database with `jobs` jobs and `workers` workers; returns its wall
/// time from the first claim until every job is stored as done.
fn run_peer(
    manifest: &Path,
    db: &Path,
    jobs: usize,
    workers: usize,
) -> Result<Duration, BenchError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["run", "--release", "--quiet", "--manifest-path"])
        .arg(manifest)
        .arg("--")
        .arg(db)
        .args([jobs.to_string(), workers.to_string()])
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(BenchError(format!(
            "the apalis-sqlite peer failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let line = stdout
        .lines()
        .find(|l| l.starts_with("result "))
        .ok_or_else(|| BenchError(format!("the peer printed no result: {stdout:?}")))?;
    let seconds = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("seconds="))
        .and_then(|s| s.parse::<f64>().ok())
        .ok_or_else(|| BenchError(format!("the peer's result has no seconds: {line:?}")))?;
    Ok(Duration::from_secs_f64(seconds))
}

pub async fn run(cx: &Context, findings: &mut Findings) -> Result<Vec<Row>, BenchError> {
    let total = cx.sizes.claim_tasks;
    let title = Scenario::Peer.title();
    let template = claim::template(cx, total).await?;
    let baseline = claim::measure(claim::run_baseline(cx, &template, 1, total)?);
    let mut rows = Vec::new();
    for (workers, max, peer_workers) in [
        (Workers::Tasks(1), 1, 1),
        (Workers::Tasks(4), 1, 4),
        (Workers::Tasks(4), BATCH, 4),
    ] {
        // A failed peer run is reported and tried once more on a new file; the row goes
        // without a peer figure if the second fails too.
        let mut peer = None;
        for attempt in 1..=2 {
            let manifest = cx.peer_manifest.clone();
            let db = cx.db_path("peer-apalis");
            match tokio::task::spawn_blocking(move || run_peer(&manifest, &db, total, peer_workers))
                .await?
            {
                Ok(elapsed) => {
                    peer = Some(Measure::throughput(total, elapsed, Samples::default()));
                    break;
                }
                Err(e) => {
                    println!("  apalis-sqlite, {peer_workers} workers, run {attempt}: {e}");
                    findings.peer_failures += 1;
                }
            }
        }
        for mode in CommitMode::ALL {
            let stats = claim::run_ours(cx, &template, mode, workers, max, total).await?;
            let variant = format!(
                "{} tasks: ours {} workers claiming {max}, apalis {peer_workers} workers (its default fetch of 10), {}",
                count(total),
                match workers {
                    Workers::Tasks(n) | Workers::Processes(n) => n,
                },
                mode.label()
            );
            let mut row =
                Row::new(title, variant, claim::measure(stats)).baseline(baseline.clone());
            if let Some(peer) = &peer {
                row = row.peer(peer.clone());
                if peer_workers == 4 && max == 1 {
                    // The best of our modes against the peer.
                    if let Some(pair) = row.ours.rate.zip(peer.rate) {
                        if findings.peer_four.is_none_or(|(best, _)| pair.0 > best) {
                            findings.peer_four = Some(pair);
                        }
                    }
                }
            }
            row.print();
            rows.push(row);
        }
    }
    Ok(rows)
}
