//! The main use: a DAG run to the end by several workers, with a failure retried.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use crate::sandbox::{changes, reasons, wait_until, Sandbox};

/// Each run appends its task id to `runs.log`; the build fails on its first run only (the
/// marker file remembers), and every successful run appends to `done.log` and prints which
/// worker ran it, as JSON.
fn script(worker: &str) -> String {
    format!(
        r#"task=$(cat)
echo "$ABATHUR_TASK_ID" >> runs.log
case "$task" in
  *'"summary":"build"'*)
    if mkdir build.failed 2>/dev/null; then echo "compiler crashed" >&2; exit 1; fi ;;
esac
echo "$ABATHUR_TASK_ID" >> done.log
printf '{{"by": "{worker}"}}'"#
    )
}

#[test]
fn two_workers_run_a_three_task_dag_retrying_a_failure_once() {
    let sb = Sandbox::new();
    let fetch = sb.submit(&["fetch"]);
    let build = sb.submit(&["build", "--depends-on", &fetch, "--max-retries", "2"]);
    let release = sb.submit(&["release", "--depends-on", &build]);
    let mut w1 = sb.worker("w1", &["--lease", "3s"], &script("w1"));
    let mut w2 = sb.worker("w2", &["--lease", "3s"], &script("w2"));

    wait_until(Duration::from_secs(20), "the release to complete", || {
        sb.status(&release) == "completed"
    });
    w1.signal(libc::SIGTERM);
    w2.signal(libc::SIGTERM);
    w1.exits_cleanly_within(Duration::from_secs(5));
    w2.exits_cleanly_within(Duration::from_secs(5));

    // Every task completed exactly once, its result the JSON its command printed.
    let mut done: HashMap<String, usize> = HashMap::new();
    for id in sb.read("done.log").lines() {
        *done.entry(id.to_string()).or_default() += 1;
    }
    let expected: HashMap<String, usize> =
        [(fetch.clone(), 1), (build.clone(), 1), (release.clone(), 1)].into();
    assert_eq!(done, expected);
    let runs: Vec<String> = sb.read("runs.log").lines().map(String::from).collect();
    assert_eq!(
        runs,
        vec![fetch.clone(), build.clone(), build.clone(), release.clone()],
        "each task ran after its dependency, the build twice"
    );
    for id in [&fetch, &build, &release] {
        let task = sb.task(id);
        assert_eq!(task["status"], "completed");
        let by = &task["result_data"]["by"];
        assert!(by == &json!("w1") || by == &json!("w2"), "{task}");
        let history = sb.history(id);
        let completions = changes(&history)
            .iter()
            .filter(|c| c.as_str() == "running -> completed")
            .count();
        assert_eq!(completions, 1, "{history:?}");
    }

    // The build failed once, was retried after a backoff, and says why in its history.
    let build_task = sb.task(&build);
    assert_eq!(build_task["retry_count"], 1);
    let history = sb.history(&build);
    assert_eq!(
        changes(&history),
        vec![
            " -> blocked",
            "blocked -> ready",
            "ready -> running",
            "running -> ready",
            "ready -> running",
            "running -> completed"
        ]
    );
    let failure = &reasons(&history)[3];
    assert!(
        failure.contains("exited with status 1") && failure.contains("compiler crashed"),
        "{failure}"
    );
    // Both workers logged what they did, one line per start and finish.
    let logs = format!("{}{}", w1.log(), w2.log());
    assert_eq!(logs.matches("started: ").count(), 4, "{logs}");
    assert_eq!(logs.matches("completed in ").count(), 3, "{logs}");
}

/// Independent tasks that each take a while: both workers must take a share.
#[test]
fn two_workers_share_a_fan_out_between_them() {
    let sb = Sandbox::new();
    let root = sb.submit(&["root"]);
    let leaves: Vec<String> = (0..4)
        .map(|i| sb.submit(&[&format!("leaf {i}"), "--depends-on", &root]))
        .collect();
    let script =
        |worker: &str| format!(r#"cat > /dev/null; sleep 0.5; printf '{{"by": "{worker}"}}'"#);
    let mut w1 = sb.worker("w1", &["--lease", "3s"], &script("w1"));
    let mut w2 = sb.worker("w2", &["--lease", "3s"], &script("w2"));
    wait_until(Duration::from_secs(20), "every leaf to complete", || {
        leaves.iter().all(|leaf| sb.status(leaf) == "completed")
    });
    w1.signal(libc::SIGTERM);
    w2.signal(libc::SIGTERM);
    w1.exits_cleanly_within(Duration::from_secs(5));
    w2.exits_cleanly_within(Duration::from_secs(5));
    let mut by: HashMap<String, usize> = HashMap::new();
    for leaf in &leaves {
        let worker = sb.task(leaf)["result_data"]["by"]
            .as_str()
            .expect("a result")
            .to_string();
        *by.entry(worker).or_default() += 1;
    }
    assert_eq!(by.len(), 2, "both workers ran leaves: {by:?}");
}
