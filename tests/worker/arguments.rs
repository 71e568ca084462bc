//! Bad command lines and commands that cannot run: refused with the documented exit codes.

use std::time::Duration;

use crate::sandbox::Sandbox;

#[test]
fn a_worker_without_a_command_or_with_bad_options_is_a_usage_error() {
    let sb = Sandbox::new();
    for args in [
        &["worker"][..],
        &["worker", "--"],
        &["worker", "true"],
        &["worker", "--concurrency", "0", "--", "true"],
        &["worker", "--concurrency", "many", "--", "true"],
        &["worker", "--lease", "0", "--", "true"],
        &["worker", "--lease", "soon", "--", "true"],
        &["worker", "--grace", "-1", "--", "true"],
    ] {
        let output = sb.abathur().args(args).output().expect("abathur runs");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
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
