//! Repeatable completion on the command line: a `task complete` or `task fail` sent again
//! after its answer was lost exits 0 and says it was already recorded; anything else on a
//! finished attempt exits 5. Neither changes the history.

use serde_json::Value;

use crate::sandbox::Sandbox;

/// Claims the one ready task as `worker`; its attempt id.
#[track_caller]
fn claim_attempt(sandbox: &Sandbox, worker: &str) -> String {
    let claimed = sandbox.json(&["task", "claim", "--worker", worker]);
    assert_eq!(claimed.as_array().map(Vec::len), Some(1), "{claimed}");
    claimed[0]["lease"]["attempt_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The history of every task, as `task history --json` shows it.
#[track_caller]
fn histories(sandbox: &Sandbox, ids: &[&str]) -> Vec<Value> {
    ids.iter()
        .map(|id| sandbox.json(&["task", "history", id]))
        .collect()
}

#[test]
fn a_repeated_complete_exits_0_says_so_and_changes_nothing() {
    let s = Sandbox::new();
    let a = s.submit(&["A"]);
    let b = s.submit(&["B", "--depends-on", &a]);
    let attempt = claim_attempt(&s, "w1");
    let first = s.json(&[
        "task",
        "complete",
        &attempt,
        "--result",
        r#"{"n": 1, "ok": true}"#,
    ]);
    assert_eq!(first["already_recorded"], false);
    assert_eq!(first["ready"], serde_json::json!([b]));
    let before = histories(&s, &[&a, &b]);

    let human = s.ok(&[
        "task",
        "complete",
        &attempt,
        "--result",
        r#"{"ok":true,"n":1}"#,
    ]);
    assert!(
        human.starts_with(&format!(
            "attempt {attempt} was already completed with this result; nothing changed\n"
        )),
        "{human}"
    );
    let again = s.json(&[
        "task",
        "complete",
        &attempt,
        "--result",
        r#"{"n": 1, "ok": true}"#,
    ]);
    assert_eq!(again["already_recorded"], true);
    assert_eq!(
        again["ready"],
        serde_json::json!([b]),
        "made ready then, not again"
    );

    assert_eq!(
        histories(&s, &[&a, &b]),
        before,
        "the repeats wrote no event"
    );
    let b_became_ready = before[1]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["to"] == "ready")
        .count();
    assert_eq!(b_became_ready, 1, "the dependent was released once");
}

#[test]
fn a_complete_with_another_result_or_a_fail_after_a_complete_exits_5() {
    let s = Sandbox::new();
    let a = s.submit(&["A"]);
    let attempt = claim_attempt(&s, "w1");
    s.ok(&["task", "complete", &attempt, "--result", "1"]);
    let before = histories(&s, &[&a]);
    let shown = s.json(&["task", "show", &a]);

    let other = s.fails(&["task", "complete", &attempt, "--result", "2"], 5);
    assert!(other.contains("different result"), "{other}");
    let none = s.fails(&["task", "complete", &attempt], 5);
    assert!(none.contains("different result"), "{none}");
    let verb = s.fails(&["task", "fail", &attempt, "--error", "boom"], 5);
    assert!(verb.contains("already ended (completed)"), "{verb}");

    assert_eq!(histories(&s, &[&a]), before);
    assert_eq!(s.json(&["task", "show", &a]), shown);
}

#[test]
fn a_repeated_fail_exits_0_with_the_recorded_retry_even_after_the_task_was_claimed_again() {
    let s = Sandbox::new();
    let a = s.submit(&["A", "--max-retries", "1"]);
    let first_attempt = claim_attempt(&s, "w1");
    let first = s.json(&["task", "fail", &first_attempt, "--error", "flaky"]);
    assert_eq!(first["outcome"], "retrying");
    assert_eq!(first["already_recorded"], false);

    // The backoff (1 s by default) has to pass before the next claim: claim until the task
    // comes back, giving up only after a minute, which would mean a hang.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let second_attempt = loop {
        let claimed = s.json(&["task", "claim", "--worker", "w2"]);
        if let Some(lease) = claimed.get(0) {
            break lease["lease"]["attempt_id"].as_str().unwrap().to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the task never came back"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let before = histories(&s, &[&a]);

    let again = s.json(&["task", "fail", &first_attempt, "--error", "flaky"]);
    assert_eq!(again["already_recorded"], true);
    assert_eq!(again["outcome"], "retrying");
    assert_eq!(again["retry_count"], first["retry_count"]);
    assert_eq!(again["run_after"], first["run_after"]);
    let human = s.ok(&["task", "fail", &first_attempt, "--error", "flaky"]);
    assert!(
        human.starts_with("already recorded with this error; nothing changed: will retry"),
        "{human}"
    );
    let other = s.fails(&["task", "fail", &first_attempt, "--error", "not flaky"], 5);
    assert!(other.contains("different error"), "{other}");

    assert_eq!(histories(&s, &[&a]), before, "the repeats wrote no event");
    // The new attempt is untouched: it is the one that completes the task.
    let done = s.json(&["task", "complete", &second_attempt]);
    assert_eq!(done["already_recorded"], false);
    assert_eq!(s.json(&["task", "show", &a])["status"], "completed");
}
