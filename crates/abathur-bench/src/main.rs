//! `abathur-bench [SCENARIO...] [--scale tiny|full]`: runs the benchmark scenarios (all when
//! none is named) and prints each against its raw baseline, then the targets and a
//! Markdown table of the whole run. `abathur-bench worker ...` is one worker process of the
//! multi-process variants. `abathur-bench soak ...` is the retention soak ([`abathur_bench::soak`]).
//! `abathur-bench pg [SCENARIO...] [--scale tiny|full]` runs the PostgreSQL scenarios
//! ([`abathur_bench::pg`]) on the server `ABATHUR_TEST_POSTGRES` names; `abathur-bench pg-worker
//! ...` is one worker process of `pg-processes`.

use std::process::ExitCode;

use abathur_bench::pg::{PgOptions, PgScenario};
use abathur_bench::{machine, report, worker, Options, Scale, Scenario};

const USAGE: &str = "usage: abathur-bench [SCENARIO...] [--scale tiny|full]
scenarios: submit claim fanout dag ready memory peer (or 1-7); all when none is named
       abathur-bench soak [--tasks N] [--workers W] [--retention SECONDS]
the retention soak: N no-op tasks through in-process workers that prune as `abathur worker
--retention` does, sampling the file and WAL sizes (default 1,000,000 tasks, 8 workers, 60 s)
       abathur-bench pg [SCENARIO...] [--scale tiny|full]
the PostgreSQL scenarios, on new databases of the server ABATHUR_TEST_POSTGRES names (default
postgres://postgres@127.0.0.1:5432/postgres): pg-claim pg-latency pg-fanout pg-ready
pg-processes pg-peers (or P1-P6); all when none is named
       abathur-bench dashboard [sqlite] [pg] [--tasks N] [--samples N]
the dashboard's API at N tasks (default 1,000,000) on each backend named (both when none is),
each call beside the raw SQL of the same read";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("worker") {
        return worker::main(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("pg-worker") {
        return abathur_bench::pg::worker::main(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("pg") {
        return pg_main(&args);
    }
    if args.first().map(String::as_str) == Some("dashboard") {
        return abathur_bench::dashboard::main(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("soak") {
        println!(
            "command: cargo run --release -p abathur-bench -- {}",
            args.join(" ")
        );
        println!("machine: {}", machine::describe());
        return abathur_bench::soak::main(&args[1..]);
    }
    let options = match parse(&args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    println!(
        "command: cargo run --release -p abathur-bench -- {}",
        args.join(" ")
    );
    println!("machine: {}", machine::describe());
    match abathur_bench::run(&options) {
        Ok(outcome) => {
            println!("\ntargets ({} scale):", options.scale);
            for verdict in &outcome.verdicts {
                verdict.print();
            }
            println!("\n{}", report::markdown_table(&outcome.rows));
            if outcome.failures.is_empty() {
                return ExitCode::SUCCESS;
            }
            for (scenario, e) in &outcome.failures {
                eprintln!("abathur-bench: scenario {} failed: {e}", scenario.title());
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("abathur-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `abathur-bench pg ...`: the PostgreSQL scenarios.
fn pg_main(args: &[String]) -> ExitCode {
    let options = match parse_pg(&args[1..]) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    println!(
        "command: cargo run --release -p abathur-bench -- {}",
        args.join(" ")
    );
    let server = match abathur_bench::pg::server_version() {
        Ok(server) => server,
        Err(e) => {
            eprintln!("abathur-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("machine: {}", machine::describe_pg(&server));
    match abathur_bench::pg::run(&options) {
        Ok(outcome) => {
            println!("\ntargets ({} scale):", options.scale);
            for verdict in &outcome.verdicts {
                verdict.print();
            }
            println!("\n{}", report::markdown_table(&outcome.rows));
            if outcome.failures.is_empty() {
                return ExitCode::SUCCESS;
            }
            for (scenario, e) in &outcome.failures {
                eprintln!("abathur-bench: scenario {} failed: {e}", scenario.title());
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("abathur-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_pg(args: &[String]) -> Result<PgOptions, String> {
    let mut scale = Scale::Full;
    let mut scenarios = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--scale" => {
                scale = it.next().ok_or("--scale needs tiny or full")?.parse()?;
            }
            "-h" | "--help" => return Err(String::new()),
            other if other.starts_with('-') => return Err(format!("unknown option {other}")),
            name => scenarios.push(name.parse::<PgScenario>()?),
        }
    }
    let worker_exe =
        std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    Ok(PgOptions {
        scale,
        scenarios,
        worker_exe,
        peers_dir: PgOptions::default_peers_dir(),
    })
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut scale = Scale::Full;
    let mut scenarios = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--scale" => {
                scale = it.next().ok_or("--scale needs tiny or full")?.parse()?;
            }
            "-h" | "--help" => return Err(String::new()),
            other if other.starts_with('-') => return Err(format!("unknown option {other}")),
            name => scenarios.push(name.parse::<Scenario>()?),
        }
    }
    let worker_exe =
        std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    Ok(Options {
        scale,
        scenarios,
        worker_exe,
        peer_manifest: Options::default_peer_manifest(),
    })
}
