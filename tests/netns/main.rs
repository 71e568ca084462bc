//! Several machines on one PostgreSQL server: worker "hosts" in network namespaces of their
//! own, each reaching the server over its own link (a veth pair, and a forwarder on the root
//! end, since the server listens on 127.0.0.1 only), running `abathur worker` processes.
//!
//! - `a_partitioned_hosts_late_complete_is_refused_and_the_task_completes_once`: host A holds
//!   a task while its link is cut for longer than its lease; host B's reaper takes the task
//!   back and B completes it; A's completion, sent during the partition, arrives once the link
//!   is back and is refused (fencing). Every task completes exactly once, in dependency order.
//! - `a_dag_completes_exactly_once_with_5ms_of_latency_on_one_host`: host B's link has 5 ms
//!   of added latency (`tc netem`, or the forwarder's own delay on a kernel without netem);
//!   both hosts run one DAG to completion, exactly once.
//!
//! The namespaces need root and iproute2 (`ip`, `tc`). Without them the test says it was
//! skipped and passes, unless `ABATHUR_REQUIRE_NETNS=1` (as in CI), which makes that a
//! failure. The server is the one `ABATHUR_TEST_POSTGRES` names, as for every PostgreSQL test.
//!
//! This target has its own `main` (`harness = false`): run as `probe ADDR PORT N` (inside a
//! namespace), it measures round trips to the server through a forwarder. A positional
//! argument filters scenarios by name, as libtest does.

mod forward;
mod net;
mod probe;
mod scenario;
mod verify;

use std::panic;
use std::process::ExitCode;
use std::time::Instant;

type Scenario = (&'static str, fn());

const SCENARIOS: &[Scenario] = &[
    (
        "a_partitioned_hosts_late_complete_is_refused_and_the_task_completes_once",
        scenario::partition,
    ),
    (
        "a_dag_completes_exactly_once_with_5ms_of_latency_on_one_host",
        scenario::latency,
    ),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("probe") {
        return probe::main(&args[1..]);
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
    if selected.is_empty() {
        println!("\ntest result: ok. 0 passed; 0 failed\n");
        return ExitCode::SUCCESS;
    }
    if let Some(why) = net::unavailable() {
        let required = std::env::var("ABATHUR_REQUIRE_NETNS").is_ok_and(|v| v == "1");
        for (name, _) in &selected {
            let verdict = if required { "FAILED" } else { "skipped" };
            println!("test {name} ... {verdict}: {why}");
        }
        if required {
            println!(
                "\nABATHUR_REQUIRE_NETNS=1: the multi-machine test must run here, and cannot: \
                 {why}\n\ntest result: FAILED. 0 passed; {} failed\n",
                selected.len()
            );
            return ExitCode::FAILURE;
        }
        println!(
            "\nthe multi-machine test was skipped ({why}); set ABATHUR_REQUIRE_NETNS=1 to make \
             that a failure\n\ntest result: ok. 0 passed; 0 failed; {} skipped\n",
            selected.len()
        );
        return ExitCode::SUCCESS;
    }

    let mut failed = Vec::new();
    for (name, scenario) in &selected {
        println!("test {name} ...");
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
