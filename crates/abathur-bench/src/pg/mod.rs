//! The PostgreSQL benchmarks, `abathur-bench pg [SCENARIO...] [--scale tiny|full]`: each
//! scenario runs on databases of its own, created fresh on the server `ABATHUR_TEST_POSTGRES`
//! names (the test server by default, through `abathur_postgres::testing::TestDatabase`) and
//! dropped after, through our adapter and, in the same process, through a raw sqlx baseline
//! that runs the adapter's own statements ([`raw`]).

pub mod db;
pub mod ours;
pub mod raw;
pub mod scenarios;
pub mod targets;
pub mod worker;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::report::{Row, Verdict};
use crate::{BenchError, Scale};

/// The PostgreSQL scenarios, numbered P1 to P6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PgScenario {
    Claim,
    Latency,
    Fanout,
    Ready,
    Processes,
    Peers,
}

impl PgScenario {
    pub const ALL: [PgScenario; 6] = [
        Self::Claim,
        Self::Latency,
        Self::Fanout,
        Self::Ready,
        Self::Processes,
        Self::Peers,
    ];

    /// The name given on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Claim => "pg-claim",
            Self::Latency => "pg-latency",
            Self::Fanout => "pg-fanout",
            Self::Ready => "pg-ready",
            Self::Processes => "pg-processes",
            Self::Peers => "pg-peers",
        }
    }

    /// The heading: its number and name, as the table's first two columns show it.
    pub fn title(self) -> &'static str {
        match self {
            Self::Claim => "P1 pg-claim",
            Self::Latency => "P2 pg-latency",
            Self::Fanout => "P3 pg-fanout",
            Self::Ready => "P4 pg-ready",
            Self::Processes => "P5 pg-processes",
            Self::Peers => "P6 pg-peers",
        }
    }
}

impl std::str::FromStr for PgScenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|sc| {
                sc.name() == s
                    || sc.name().strip_prefix("pg-") == Some(s)
                    || sc.title().split(' ').next() == Some(s)
            })
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|s| s.name()).collect();
                format!(
                    "unknown PostgreSQL scenario {s:?}: use one of {}",
                    names.join(", ")
                )
            })
    }
}

/// Every size the PostgreSQL scenarios use.
#[derive(Debug, Clone, Copy)]
pub struct PgSizes {
    /// P1, P5 and P6: no-op tasks per claim + complete run.
    pub claim_tasks: usize,
    /// P2: tasks submitted one at a time to an idle worker.
    pub latency_tasks: usize,
    /// P3: dependents of the one task completed, and how many times it is repeated.
    pub fanout: usize,
    pub fanout_repeats: usize,
    /// P4: tasks in the table, how many are ready, and the calls timed.
    pub ready_table: usize,
    pub ready_ready: usize,
    pub ready_queries: usize,
    pub ready_claims: usize,
    /// P5: worker processes.
    pub processes: usize,
}

impl PgSizes {
    pub fn of(scale: Scale) -> Self {
        match scale {
            Scale::Full => Self {
                claim_tasks: 10_000,
                latency_tasks: 200,
                fanout: 10_000,
                fanout_repeats: 3,
                ready_table: 1_000_000,
                ready_ready: 100_000,
                ready_queries: 2_000,
                ready_claims: 1_000,
                processes: 8,
            },
            Scale::Tiny => Self {
                claim_tasks: 40,
                latency_tasks: 10,
                fanout: 100,
                fanout_repeats: 1,
                ready_table: 2_000,
                ready_ready: 200,
                ready_queries: 30,
                ready_claims: 10,
                processes: 8,
            },
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct PgOptions {
    pub scale: Scale,
    /// In order; empty means all.
    pub scenarios: Vec<PgScenario>,
    /// This benchmark's own executable, re-run as `pg-worker` for P5.
    pub worker_exe: PathBuf,
    /// The folder holding the peers' projects (`peer-graphile/`, `peer-apalis-postgres/`).
    pub peers_dir: PathBuf,
}

impl PgOptions {
    /// The peers' folder shipped beside this crate.
    pub fn default_peers_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }
}

/// The figures the targets are judged on, filled in by the scenarios that measure them.
#[derive(Debug, Clone, Default)]
pub struct PgFindings {
    /// P1: the best in-process variant (label, tasks/s) and the baseline's claim-1 loop.
    pub claim_best: Option<(String, f64)>,
    pub claim_baseline: Option<f64>,
    /// P2: p50 and p99 from a submit returning to the idle worker's claim returning the task.
    pub latency: Option<(Duration, Duration)>,
    /// P3: the slowest completion that released the fan-out.
    pub fanout_worst: Option<Duration>,
    /// P4: p99 of the ready query and of a claim of 1.
    pub ready_p99: Option<Duration>,
    pub claim_p99: Option<Duration>,
    /// P5: errors that reached the worker processes (all kinds), of which serialization
    /// failures and deadlocks, and whether every task completed.
    pub process_errors: Option<usize>,
    pub process_conflicts: Option<usize>,
    pub process_rate: Option<f64>,
    /// P6: our best configuration in that run (label, rate), graphile-worker's best
    /// (configuration, rate) and apalis-postgres's best (workers, rate).
    pub peers_ours: Option<(String, f64)>,
    pub graphile_best: Option<(String, f64)>,
    pub apalis_best: Option<(usize, f64)>,
    /// P6: peer runs that failed (each is printed).
    pub peer_failures: usize,
}

/// What one run produced.
#[derive(Debug, Clone)]
pub struct PgOutcome {
    pub rows: Vec<Row>,
    pub findings: PgFindings,
    pub verdicts: Vec<Verdict>,
    /// The scenarios that failed, with why; the others ran.
    pub failures: Vec<(PgScenario, BenchError)>,
}

/// What the scenarios share.
pub struct PgContext {
    pub scale: Scale,
    pub sizes: PgSizes,
    pub worker_exe: PathBuf,
    pub peers_dir: PathBuf,
}

/// The server's version, for the machine line (`SHOW server_version`).
pub fn server_version() -> Result<String, BenchError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(db::server_version())
}

/// Runs the chosen scenarios, printing each row as it is measured, then judges the targets.
///
/// # Errors
/// Only when the run cannot start (no runtime); a scenario that fails is reported in
/// [`PgOutcome::failures`] and the others still run.
pub fn run(options: &PgOptions) -> Result<PgOutcome, BenchError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(options))
}

async fn run_async(options: &PgOptions) -> Result<PgOutcome, BenchError> {
    let cx = PgContext {
        scale: options.scale,
        sizes: PgSizes::of(options.scale),
        worker_exe: options.worker_exe.clone(),
        peers_dir: options.peers_dir.clone(),
    };
    let mut chosen = if options.scenarios.is_empty() {
        PgScenario::ALL.to_vec()
    } else {
        options.scenarios.clone()
    };
    chosen.sort();
    chosen.dedup();
    let mut rows = Vec::new();
    let mut findings = PgFindings::default();
    let mut failures = Vec::new();
    for scenario in chosen {
        println!("\n{} ({} scale)", scenario.title(), cx.scale);
        let started = Instant::now();
        let produced = match scenario {
            PgScenario::Claim => scenarios::claim::run(&cx, &mut findings).await,
            PgScenario::Latency => scenarios::latency::run(&cx, &mut findings).await,
            PgScenario::Fanout => scenarios::fanout::run(&cx, &mut findings).await,
            PgScenario::Ready => scenarios::ready::run(&cx, &mut findings).await,
            PgScenario::Processes => scenarios::processes::run(&cx, &mut findings).await,
            PgScenario::Peers => scenarios::peers::run(&cx, &mut findings).await,
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
    Ok(PgOutcome {
        rows,
        findings,
        verdicts,
        failures,
    })
}
