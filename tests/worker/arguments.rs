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
        &["worker", "--lease", "soon", "--", "true"],
        &["worker", "--grace", "-1", "--", "true"],
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
