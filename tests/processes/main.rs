//! Several OS processes working one queue on one database, with and without crashes: a SQLite
//! file, and a database on the test PostgreSQL server (`ABATHUR_TEST_POSTGRES`).
//!
//! This target has its own `main` (`harness = false`): run with `worker ...` as its first
//! argument, it is one worker process; otherwise it runs the scenarios below, each of which
//! spawns this same executable as its workers. A positional argument filters scenarios by
//! name, as libtest does.
//!
//! Each scenario submits a layered DAG of 5,000 tasks, runs it to completion with worker
//! processes (one claim loop each, or four sharing group commits), and then checks, from the database and from each worker's log of the
//! completions it was told succeeded:
//! - the database passes `integrity_check` and `foreign_key_check`;
//! - every task completed, exactly once, by exactly one attempt;
//! - no attempt of any task started before all of its dependencies had completed;
//! - no worker was told a completion succeeded that the database does not hold.
//!
//! Two scenarios on PostgreSQL put faults in the middle of the run: every worker connection
//! terminated (`pg_terminate_backend`), five times; the server stopped and started again
//! (`pg_ctlcluster`, so the test server must be a local cluster). The workers must reconnect
//! and finish, every task completed exactly once, and what they print must be plain.
//!
//! The scenarios run one after another, never at once: the server restart ends every session
//! on the server, which only this scenario's may see.

mod scenario;
mod verify;
mod worker;

use std::panic;
use std::process::ExitCode;
use std::time::Instant;

type Scenario = (&'static str, fn());

const SCENARIOS: &[Scenario] = &[
    (
        "four_processes_run_a_5000_task_dag_exactly_once",
        scenario::four_processes_run_a_5000_task_dag_exactly_once,
    ),
    (
        "four_processes_with_group_commit_run_a_5000_task_dag_exactly_once",
        scenario::four_processes_with_group_commit_run_a_5000_task_dag_exactly_once,
    ),
    (
        "workers_killed_20_times_lose_and_repeat_nothing",
        scenario::workers_killed_20_times_lose_and_repeat_nothing,
    ),
    (
        "group_commit_workers_killed_20_times_lose_and_repeat_nothing",
        scenario::group_commit_workers_killed_20_times_lose_and_repeat_nothing,
    ),
    (
        "postgres_four_processes_run_a_5000_task_dag_exactly_once",
        scenario::postgres_four_processes_run_a_5000_task_dag_exactly_once,
    ),
    (
        "postgres_four_processes_of_four_loops_run_a_5000_task_dag_exactly_once",
        scenario::postgres_four_processes_of_four_loops_run_a_5000_task_dag_exactly_once,
    ),
    (
        "postgres_workers_killed_20_times_lose_and_repeat_nothing",
        scenario::postgres_workers_killed_20_times_lose_and_repeat_nothing,
    ),
    (
        "postgres_worker_connections_terminated_mid_run_lose_and_repeat_nothing",
        scenario::postgres_worker_connections_terminated_mid_run_lose_and_repeat_nothing,
    ),
    // Restarts the server: safe because the scenarios run one after another (below).
    (
        "postgres_server_restarted_mid_run_loses_and_repeats_nothing",
        scenario::postgres_server_restarted_mid_run_loses_and_repeats_nothing,
    ),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("worker") {
        return worker::main(&args[1..]);
    }
    if args.iter().any(|a| a == "--list") {
        for (name, _) in SCENARIOS {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    let filters: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let exact = args.iter().any(|a| a == "--exact");
    let selected: Vec<&Scenario> = SCENARIOS
        .iter()
        .filter(|(name, _)| {
            filters.is_empty()
                || filters
                    .iter()
                    .any(|f| if exact { name == f } else { name.contains(f) })
        })
        .collect();

    println!("\nrunning {} tests", selected.len());
    let mut failed = Vec::new();
    for (name, scenario) in &selected {
        let started = Instant::now();
        let outcome = panic::catch_unwind(scenario);
        let secs = started.elapsed().as_secs_f64();
        match outcome {
            Ok(()) => println!("test {name} ... ok ({secs:.1} s)"),
            Err(_) => {
                println!("test {name} ... FAILED ({secs:.1} s)");
                failed.push(*name);
            }
        }
    }
    let passed = selected.len() - failed.len();
    if failed.is_empty() {
        println!("\ntest result: ok. {passed} passed; 0 failed\n");
        ExitCode::SUCCESS
    } else {
        println!("\nfailures:\n    {}", failed.join("\n    "));
        println!(
            "\ntest result: FAILED. {passed} passed; {} failed\n",
            failed.len()
        );
        ExitCode::FAILURE
    }
}
