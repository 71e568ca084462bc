//! Bad command lines and commands that cannot run: refused with the documented exit codes.

use std::time::Duration;

use abathur_core::limits::MAX_NAME_BYTES;
use abathur_core::queue::{MAX_CLAIM, MAX_CLAIM_AGENT_TYPES};

use crate::sandbox::Sandbox;

#[test]
fn a_worker_without_a_command_or_with_bad_options_is_a_usage_error() {
    let sb = Sandbox::new();
    for args in [
        &["worker"][..],
        &["worker", "--"],
        &["worker", "true"],
        &["worker", "--concurrency", "many", "--", "true"],
        &["worker", "--lease", "soon", "--", "true"],
        &["worker", "--grace", "soon", "--", "true"],
    ] {
        let output = sb.abathur().args(args).output().expect("abathur runs");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}

/// Issue 10, item 9: a lease of zero was a usage error (2) while one below the minimum was
/// invalid input (4); both sides of the range are now invalid input.
#[test]
fn a_worker_lease_outside_its_range_is_invalid_input_on_either_side() {
    let sb = Sandbox::new();
    for lease in ["0", "-1m", "500ms", "25h"] {
        let args = ["worker", "--lease", lease, "--", "true"];
        let output = sb.abathur().args(args).output().expect("abathur runs");
        assert_eq!(output.status.code(), Some(4), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("lease"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_command_that_cannot_start_stops_the_worker_and_costs_the_task_nothing() {
    let sb = Sandbox::new();
    let task = sb.submit(&["needs a real command", "--max-retries", "0"]);
    let started = std::time::Instant::now();
    let stderr = sb.fails(
        &[
            "worker",
            "--once",
            "--",
            "/nonexistent/abathur-test-program",
        ],
        4,
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        stderr.contains("error: cannot start the command")
            && stderr.contains("/nonexistent/abathur-test-program"),
        "{stderr}"
    );
    let stored = sb.task(&task);
    assert_eq!(stored["status"], "ready");
    assert_eq!(stored["retry_count"], 0);
}

#[test]
fn settings_the_queue_would_refuse_on_every_claim_are_refused_at_start_and_run_nothing() {
    let sb = Sandbox::new();
    let task = sb.submit(&["must not run"]);
    let over_claim = (MAX_CLAIM + 1).to_string();
    let long_name = "w".repeat(MAX_NAME_BYTES + 1);
    let mut many_types = Vec::new();
    for i in 0..=MAX_CLAIM_AGENT_TYPES {
        many_types.push("--agent-type".to_string());
        many_types.push(format!("generic{i}"));
    }
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec!["--concurrency".into(), over_claim.clone()],
            format!("outside 1 to {MAX_CLAIM}"),
        ),
        (
            vec!["--concurrency".into(), "0".into()],
            format!("outside 1 to {MAX_CLAIM}"),
        ),
        (vec!["--lease".into(), "25h".into()], "24 hours".into()),
        (vec!["--lease".into(), "500ms".into()], "24 hours".into()),
        (
            vec!["--name".into(), " ".into()],
            "invalid --name: must not be empty".into(),
        ),
        (
            vec!["--name".into(), long_name],
            "invalid --name: is".into(),
        ),
        (
            vec!["--agent-type".into(), "".into()],
            "invalid --agent-type: must not be empty".into(),
        ),
        (many_types, format!("at most {MAX_CLAIM_AGENT_TYPES}")),
    ];
    for (options, expected) in cases {
        let output = sb
            .abathur()
            .arg("worker")
            .args(&options)
            .args(["--once", "--", "sh", "-c", "touch ran"])
            .output()
            .expect("abathur runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let shown: Vec<&String> = options.iter().take(2).collect();
        // Out of range is invalid input (4), as it is for every other value.
        assert_eq!(output.status.code(), Some(4), "{shown:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{shown:?}: {stderr}");
        assert!(stderr.contains(&expected), "{shown:?}: {stderr}");
        assert!(!stderr.contains("cannot claim"), "{shown:?}: {stderr}");
    }
    assert!(!sb.path("ran").exists(), "a refused worker ran its command");
    let stored = sb.task(&task);
    assert_eq!(stored["status"], "ready");
    assert_eq!(sb.history(&task).len(), 1, "only the submission");
}

#[test]
fn the_widest_settings_the_queue_accepts_run_tasks() {
    let sb = Sandbox::new();
    let task = sb.submit(&["runs"]);
    let concurrency = MAX_CLAIM.to_string();
    let mut worker = sb.worker(
        "w1",
        &[
            "--once",
            "--concurrency",
            &concurrency,
            "--lease",
            "24h",
            "--grace",
            "0",
        ],
        "echo done",
    );
    worker.exits_cleanly_within(Duration::from_secs(20));
    assert_eq!(sb.status(&task), "completed");
    assert!(!worker.log().contains("cannot claim"), "{}", worker.log());
}
