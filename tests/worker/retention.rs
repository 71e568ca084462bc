//! `abathur worker --retention`: the worker prunes finished tasks on its own, and only when
//! asked to.

use crate::sandbox::Sandbox;

#[test]
fn a_worker_with_a_retention_prunes_old_finished_tasks_and_only_then() {
    let sb = Sandbox::new();
    let done = sb.submit(&["finished before the worker starts"]);
    sb.ok(&["worker", "--once", "--", "true"]);
    assert_eq!(sb.status(&done), "completed");
    let waiting = sb.submit(&["not this worker's type", "--agent-type", "other"]);

    // Without a retention nothing finished is removed.
    sb.ok(&["worker", "--once", "--agent-type", "generic", "--", "true"]);
    assert_eq!(sb.status(&done), "completed");

    // With one, the worker prunes when it starts, even with nothing to run.
    sb.ok(&[
        "worker",
        "--once",
        "--agent-type",
        "generic",
        "--retention",
        "1ms",
        "--",
        "true",
    ]);
    sb.fails(&["task", "show", &done], 3);
    assert_eq!(
        sb.status(&waiting),
        "ready",
        "unfinished work is left alone"
    );
}

#[test]
fn a_malformed_retention_is_a_usage_error_and_one_out_of_range_is_invalid() {
    let sb = Sandbox::new();
    sb.fails(
        &["worker", "--once", "--retention", "soon", "--", "true"],
        2,
    );
    for bad in ["0", "-1h"] {
        sb.fails(&["worker", "--once", "--retention", bad, "--", "true"], 4);
    }
}

/// `worker --retention 100000000d` started and then failed every prune; `prune` refused the same
/// value at once.
#[test]
fn a_retention_the_queue_would_refuse_is_refused_at_start() {
    let sb = Sandbox::new();
    let stderr = sb.fails(
        &[
            "worker",
            "--once",
            "--retention",
            "100000000d",
            "--",
            "true",
        ],
        4,
    );
    assert!(stderr.contains("--retention"), "{stderr}");
    assert!(!stderr.contains("cannot prune"), "{stderr}");
}
