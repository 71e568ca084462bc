//! Workers that stop: killed outright, or asked to stop. No task is lost or left running.

use std::time::{Duration, Instant};

use crate::sandbox::{changes, group_alive, process_alive, reasons, wait_until, Sandbox};

/// Runs long the first time (leaving `pgid` with its process group), quickly after that.
const LONG_THEN_SHORT: &str = r#"
if mkdir first.run 2>/dev/null; then echo $$ > pgid; sleep 30; fi
echo "$ABATHUR_TASK_ID" >> done.log
echo '{"second": true}'"#;

#[test]
fn a_task_of_a_worker_killed_mid_task_is_reaped_by_another_worker_and_run_again() {
    let sb = Sandbox::new();
    let task = sb.submit(&["survives a crash"]);
    let mut w1 = sb.worker("w1", &["--lease", "1s"], LONG_THEN_SHORT);
    wait_until(Duration::from_secs(10), "the first run to start", || {
        !sb.read("pgid").trim().is_empty()
    });
    // The worker found `setpriv`, which sets the parent-death signal before it becomes the
    // command (docs/WORKER.md); without it the worker would have said so.
    assert!(!w1.log().contains("setpriv"), "{}", w1.log());
    w1.signal(libc::SIGKILL);
    w1.exits_within(Duration::from_secs(5));
    // The command dies with its worker (the parent-death signal), so the task does not go on
    // running twice. Its own children (here `sleep`) are not covered: end them here, as they
    // would otherwise run on.
    let orphan: i32 = sb.read("pgid").trim().parse().expect("a pgid");
    wait_until(
        Duration::from_secs(3),
        "the command to die with its worker",
        || !process_alive(orphan),
    );
    if let Some(group) = rustix::process::Pid::from_raw(orphan) {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    }
    assert_eq!(sb.status(&task), "running", "only a reap takes it back");

    // Another worker's periodic reap finds the expired lease, and runs the task again.
    let mut w2 = sb.worker("w2", &["--lease", "1s"], LONG_THEN_SHORT);
    wait_until(Duration::from_secs(20), "the task to complete", || {
        sb.status(&task) == "completed"
    });
    w2.signal(libc::SIGTERM);
    w2.exits_cleanly_within(Duration::from_secs(5));
    let history = sb.history(&task);
    assert_eq!(
        changes(&history),
        vec![
            " -> ready",
            "ready -> running",
            "running -> ready",
            "ready -> running",
            "running -> completed"
        ]
    );
    assert_eq!(history[2]["actor"], "reaper");
    let reason = reasons(&history).swap_remove(2);
    assert!(reason.contains("lease expired"), "{reason}");
    assert_eq!(history[3]["actor"], "w2");
    assert_eq!(sb.read("done.log").lines().count(), 1);
    assert_eq!(sb.task(&task)["result_data"]["second"], true);
}

#[test]
fn a_worker_sent_sigterm_gives_its_task_back_kills_the_command_and_exits_promptly() {
    let sb = Sandbox::new();
    // No retries: if giving the task back counted as a failure, the task would fail.
    let task = sb.submit(&["interrupted", "--max-retries", "0"]);
    let mut worker = sb.worker("w1", &["--grace", "1s"], "echo $$ > pgid; sleep 30");
    wait_until(Duration::from_secs(10), "the command to start", || {
        !sb.read("pgid").trim().is_empty()
    });
    let pgid: i32 = sb.read("pgid").trim().parse().expect("a pgid");
    let told = Instant::now();
    worker.signal(libc::SIGTERM);
    worker.exits_cleanly_within(Duration::from_secs(6));
    let took = told.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "the grace period was not given: {took:?}"
    );
    // Killed processes vanish once reaped (by init, for the grandchildren): allow a moment.
    wait_until(
        Duration::from_secs(3),
        "the command's processes to end",
        || !group_alive(pgid),
    );

    let stored = sb.task(&task);
    assert_eq!(stored["status"], "ready", "{stored}");
    assert_eq!(stored["retry_count"], 0);
    let history = sb.history(&task);
    assert_eq!(
        changes(&history).last().map(String::as_str),
        Some("running -> ready")
    );
    let reason = reasons(&history).pop().unwrap_or_default();
    assert!(
        reason.starts_with("released unfinished: worker w1 shut down"),
        "{reason}"
    );
    assert!(worker.log().contains("released after"), "{}", worker.log());

    // It is claimable at once, by anyone.
    let claimed = sb.json(&["task", "claim", "--worker", "w2"]);
    assert_eq!(claimed[0]["task"]["id"], task.as_str());
}

/// At the end of the grace period the command is asked to stop (SIGTERM) before it is killed,
/// so it can clean up.
#[test]
fn a_command_still_running_when_the_grace_period_ends_is_asked_to_stop_first() {
    let sb = Sandbox::new();
    let task = sb.submit(&["cleans up", "--max-retries", "0"]);
    let mut worker = sb.worker(
        "w1",
        &["--grace", "500ms"],
        r#"trap 'echo cleaned > term.log; exit 1' TERM; touch started; sleep 30 & wait"#,
    );
    wait_until(Duration::from_secs(10), "the command to start", || {
        sb.path("started").exists()
    });
    worker.signal(libc::SIGTERM);
    worker.exits_cleanly_within(Duration::from_secs(6));
    assert_eq!(sb.read("term.log"), "cleaned\n");
    // Its task went back without costing a retry, though the command exited with 1.
    assert_eq!(sb.status(&task), "ready");
}

#[test]
fn a_command_that_finishes_within_the_grace_period_completes_its_task() {
    let sb = Sandbox::new();
    let task = sb.submit(&["almost done"]);
    let mut worker = sb.worker(
        "w1",
        &["--grace", "20s"],
        "touch started; sleep 1; echo finished",
    );
    wait_until(Duration::from_secs(10), "the command to start", || {
        sb.path("started").exists()
    });
    worker.signal(libc::SIGINT);
    worker.exits_cleanly_within(Duration::from_secs(10));
    let stored = sb.task(&task);
    assert_eq!(stored["status"], "completed", "{stored}");
    assert_eq!(stored["result_data"]["stdout"], "finished\n");
}

#[test]
fn heartbeats_keep_the_lease_of_a_command_that_outlasts_it() {
    let sb = Sandbox::new();
    let task = sb.submit(&["longer than its lease"]);
    let mut worker = sb.worker(
        "w1",
        &["--lease", "1s"],
        "touch started; sleep 2.5; echo done",
    );
    wait_until(Duration::from_secs(10), "the command to start", || {
        sb.path("started").exists()
    });
    std::thread::sleep(Duration::from_millis(1800));
    // Past the first lease: without heartbeats this reap would take the task back.
    let reaped = sb.json(&["reap"]);
    assert_eq!(reaped["lost"], serde_json::json!([]), "{reaped}");
    wait_until(Duration::from_secs(10), "the task to complete", || {
        sb.status(&task) == "completed"
    });
    worker.signal(libc::SIGTERM);
    worker.exits_cleanly_within(Duration::from_secs(5));
    assert_eq!(
        changes(&sb.history(&task)),
        vec![" -> ready", "ready -> running", "running -> completed"]
    );
}

#[test]
fn a_task_cancelled_while_its_command_runs_has_the_command_killed() {
    let sb = Sandbox::new();
    let task = sb.submit(&["cancelled midway"]);
    let mut worker = sb.worker("w1", &["--lease", "1s"], "echo $$ > pgid; sleep 30");
    wait_until(Duration::from_secs(10), "the command to start", || {
        !sb.read("pgid").trim().is_empty()
    });
    let pgid: i32 = sb.read("pgid").trim().parse().expect("a pgid");
    sb.ok(&["task", "cancel", &task]);
    // The next heartbeat (a third of the lease) learns of it.
    wait_until(Duration::from_secs(3), "the command to be killed", || {
        !group_alive(pgid)
    });
    assert!(
        worker.log().contains("the task is no longer this worker's"),
        "{}",
        worker.log()
    );
    assert_eq!(sb.status(&task), "cancelled");
    // The worker goes on serving the queue.
    let next = sb.submit(&["next"]);
    std::fs::remove_file(sb.path("pgid")).expect("pgid");
    wait_until(Duration::from_secs(5), "the next task to start", || {
        !sb.read("pgid").trim().is_empty()
    });
    assert_eq!(sb.status(&next), "running");
    worker.signal(libc::SIGTERM);
    worker.exits_cleanly_within(Duration::from_secs(15));
}

#[test]
fn grace_zero_asks_running_commands_to_stop_at_once_and_gives_their_tasks_back() {
    let sb = Sandbox::new();
    let task = sb.submit(&["interrupted at once", "--max-retries", "0"]);
    let mut worker = sb.worker("w1", &["--grace", "0"], "echo $$ > pgid; sleep 1000");
    wait_until(Duration::from_secs(10), "the command to start", || {
        !sb.read("pgid").trim().is_empty()
    });
    worker.signal(libc::SIGTERM);
    // `sleep` ends at the SIGTERM; a generous bound that only catches a worker that waits
    // for the command's thousand seconds.
    worker.exits_cleanly_within(Duration::from_secs(30));
    let pgid: i32 = sb.read("pgid").trim().parse().expect("a pgid");
    wait_until(
        Duration::from_secs(10),
        "the command's group to end",
        || !group_alive(pgid),
    );
    let stored = sb.task(&task);
    assert_eq!(stored["status"], "ready");
    assert_eq!(stored["retry_count"], 0);
    let reason = reasons(&sb.history(&task)).pop().unwrap_or_default();
    assert!(
        reason.contains("shut down before the command finished"),
        "{reason}"
    );
}

#[test]
fn a_grace_too_long_to_represent_is_waited_out_without_a_crash() {
    let sb = Sandbox::new();
    // u64::MAX seconds: past what a clock can add, so the worker must not add it blindly.
    let mut worker = sb.worker("w1", &["--grace", "18446744073709551615"], "true");
    wait_until(Duration::from_secs(10), "the worker to start", || {
        worker.log().contains("waiting for tasks")
    });
    worker.signal(libc::SIGTERM);
    worker.exits_cleanly_within(Duration::from_secs(10));
    assert!(!worker.log().contains("panicked"), "{}", worker.log());
}
