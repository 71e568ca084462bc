//! The benchmark suite: each scenario runs through our API and, in the same process, through a
//! raw rusqlite baseline on the same schema and the same kind of database file, and prints both
//! with their ratio. `--scale tiny` runs everything in seconds, for the smoke test.
//!
//! Every database is a file in a temporary folder, in WAL mode with `synchronous=NORMAL`, as
//! our adapter opens it.
//!
//! [`pg`] holds the PostgreSQL scenarios (`abathur-bench pg ...`): our PostgreSQL adapter
//! against a raw sqlx baseline and against graphile-worker and apalis-postgres, on new
//! databases of the test server.

pub mod dashboard;
pub mod fixture;
pub mod machine;
pub mod ours;
pub mod pg;
pub mod raw;
pub mod report;
pub mod scale;
pub mod scenarios;
pub mod soak;
pub mod stats;
pub mod targets;
pub mod worker;

use std::path::PathBuf;
use std::time::Instant;

pub use report::{Row, Verdict};
pub use scale::Scale;

/// Why a scenario or a run stopped.
#[derive(Debug, Clone)]
pub struct BenchError(pub String);

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BenchError {}

macro_rules! from_error {
    ($($t:ty),*) => {$(
        impl From<$t> for BenchError {
            fn from(e: $t) -> Self {
                BenchError(e.to_string())
            }
        }
    )*};
}
from_error!(
    abathur::domain::error::DatabaseError,
    abathur::domain::queue::QueueError,
    rusqlite::Error,
    std::io::Error,
    tokio::task::JoinError
);

/// The scenarios, numbered as in the issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    Submit,
    ClaimComplete,
    Fanout,
    Dag,
    Ready,
    Memory,
    Peer,
}

impl Scenario {
    pub const ALL: [Scenario; 7] = [
        Self::Submit,
        Self::ClaimComplete,
        Self::Fanout,
        Self::Dag,
        Self::Ready,
        Self::Memory,
        Self::Peer,
    ];

    /// The name given on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Submit => "submit",
            Self::ClaimComplete => "claim",
            Self::Fanout => "fanout",
            Self::Dag => "dag",
            Self::Ready => "ready",
            Self::Memory => "memory",
            Self::Peer => "peer",
        }
    }

    /// The heading: its number and name, as the table's first columns show it.
    pub fn title(self) -> &'static str {
        match self {
            Self::Submit => "1 submit",
            Self::ClaimComplete => "2 claim + complete",
            Self::Fanout => "3 fan-out",
            Self::Dag => "4 DAG scale",
            Self::Ready => "5 ready query",
            Self::Memory => "6 memory",
            Self::Peer => "7 peer",
        }
    }
}

impl std::str::FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|sc| sc.name() == s || sc.title().starts_with(&format!("{s} ")))
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|s| s.name()).collect();
                format!("unknown scenario {s:?}: use one of {}", names.join(", "))
            })
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub scale: Scale,
    /// In order; empty means all.
    pub scenarios: Vec<Scenario>,
    /// This benchmark's own executable, re-run as `worker` for the worker-process variants.
    pub worker_exe: PathBuf,
    /// The apalis-sqlite peer's Cargo.toml.
    pub peer_manifest: PathBuf,
}

impl Options {
    /// The peer project shipped beside this crate.
    pub fn default_peer_manifest() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peer-apalis/Cargo.toml")
    }
}

/// The figures the targets are judged on, filled in by the scenarios that measure them.
#[derive(Debug, Clone, Default)]
pub struct Findings {
    /// Scenario 1: ours/baseline rates of single submits, in the better commit mode, named.
    /// With one caller, the group-commit writer runs groups of one: no batching.
    pub submit_single_ratio: Option<(f64, &'static str)>,
    /// Scenario 2: ours/baseline rates of one worker, single claims, as above.
    pub claim_single_ratio: Option<(f64, &'static str)>,
    /// Scenario 2: rates of 4 in-process workers (single claims), the baseline's
    /// one-commit-per-operation loop, and the best 4-worker variant with its name.
    pub four_workers: Option<f64>,
    pub baseline_loop: Option<f64>,
    pub best_four: Option<(String, f64)>,
    /// Scenario 2: the best rate of the baseline loop with raw group commit, the ceiling of
    /// what batching gives SQLite on this machine.
    pub raw_group_ceiling: Option<f64>,
    /// The best 4-worker rate with group commit, and its variant.
    pub best_four_grouped: Option<(String, f64)>,
    /// Scenario 7: ours with 4 workers claiming 1 and apalis-sqlite with 4 workers, measured
    /// side by side.
    pub peer_four: Option<(f64, f64)>,
    /// Scenario 7: peer runs that failed (each is printed).
    pub peer_failures: usize,
    /// Scenario 3: the slowest completion that released the fan-out.
    pub fanout_worst: Option<std::time::Duration>,
    /// Scenario 4: run time of the large DAG over the small one.
    pub dag_ratio: Option<f64>,
    /// The same ratio for the baseline's loop.
    pub dag_baseline_ratio: Option<f64>,
    /// Scenario 5: p99 of the ready query and of a claim.
    pub ready_p99: Option<std::time::Duration>,
    pub claim_p99: Option<std::time::Duration>,
    /// Scenario 6: p99 of a memory get.
    pub memory_get_p99: Option<std::time::Duration>,
}

/// The better of two (ratio, mode) findings.
pub fn better(
    a: Option<(f64, &'static str)>,
    b: Option<(f64, &'static str)>,
) -> Option<(f64, &'static str)> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.0 > a.0 { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// What one run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub rows: Vec<Row>,
    pub findings: Findings,
    pub verdicts: Vec<Verdict>,
    /// The scenarios that failed, with why; the others ran.
    pub failures: Vec<(Scenario, BenchError)>,
}

/// What the scenarios share: sizes, a temporary folder, and how to start worker processes.
pub struct Context {
    pub scale: Scale,
    pub sizes: scale::Sizes,
    pub dir: tempfile::TempDir,
    pub worker_exe: PathBuf,
    pub peer_manifest: PathBuf,
    counter: std::sync::atomic::AtomicUsize,
}

impl Context {
    /// A new database file path in the run's folder, named after `what`.
    pub fn db_path(&self, what: &str) -> PathBuf {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.dir.path().join(format!("{n:02}-{what}.db"))
    }
}

/// Runs the chosen scenarios, printing each row as it is measured, then the targets.
///
/// # Errors
/// Only when the run cannot start (no runtime, no temporary folder); a scenario that fails is
/// reported in [`Outcome::failures`] and the others still run.
pub fn run(options: &Options) -> Result<Outcome, BenchError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(options))
}

async fn run_async(options: &Options) -> Result<Outcome, BenchError> {
    let cx = Context {
        scale: options.scale,
        sizes: options.scale.sizes(),
        dir: tempfile::Builder::new().prefix("abathur-bench").tempdir()?,
        worker_exe: options.worker_exe.clone(),
        peer_manifest: options.peer_manifest.clone(),
        counter: Default::default(),
    };
    let mut chosen = if options.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        options.scenarios.clone()
    };
    chosen.sort();
    chosen.dedup();
    let mut rows = Vec::new();
    let mut findings = Findings::default();
    let mut failures = Vec::new();
    for scenario in chosen {
        println!("\n{} ({} scale)", scenario.title(), cx.scale);
        let started = Instant::now();
        let produced = match scenario {
            Scenario::Submit => scenarios::submit::run(&cx, &mut findings).await,
            Scenario::ClaimComplete => scenarios::claim::run(&cx, &mut findings).await,
            Scenario::Fanout => scenarios::fanout::run(&cx, &mut findings).await,
            Scenario::Dag => scenarios::dag::run(&cx, &mut findings).await,
            Scenario::Ready => scenarios::ready::run(&cx, &mut findings).await,
            Scenario::Memory => scenarios::memory::run(&cx, &mut findings).await,
            Scenario::Peer => scenarios::peer::run(&cx, &mut findings).await,
        };
        match produced {
            Ok(produced) => {
                println!(
                    "  ({} took {:.1} s in all, setup included)",
                    scenario.name(),
                    started.elapsed().as_secs_f64()
                );
                rows.extend(produced);
            }
            // The other scenarios still run: one failure should not cost the whole run.
            Err(e) => {
                println!(
                    "  FAILED after {:.1} s: {e}",
                    started.elapsed().as_secs_f64()
                );
                failures.push((scenario, e));
            }
        }
    }
    let verdicts = targets::judge(&findings, cx.scale);
    Ok(Outcome {
        rows,
        findings,
        verdicts,
        failures,
    })
}

/// Runs `work` on a runtime of two worker threads, as the `soak` and `dashboard` commands do,
/// and turns its outcome into the process's exit code, printing an error as `name: error`.
pub fn run_command(
    name: &str,
    work: impl std::future::Future<Output = Result<(), BenchError>>,
) -> std::process::ExitCode {
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(BenchError::from)
        .and_then(|runtime| runtime.block_on(work));
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
