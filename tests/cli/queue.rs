//! The queue commands: claim, heartbeat, complete, fail, cancel, retry, history and reap, as a
//! person or a script types them.

use serde_json::Value;

use crate::sandbox::Sandbox;

const UNKNOWN_ID: &str = "67e55044-10b1-426f-9247-bb680e5fe0c8";

impl Sandbox {
    /// `task claim --json` with `args`; the claimed tasks.
    #[track_caller]
    fn claim(&self, args: &[&str]) -> Vec<Value> {
        let mut full = vec!["task", "claim"];
        full.extend_from_slice(args);
        match self.json(&full) {
            Value::Array(claimed) => claimed,
            other => panic!("task claim --json printed {other}, not an array"),
        }
    }

    /// Claims one task as `worker` and returns (task id, attempt id).
    #[track_caller]
    fn claim_one(&self, worker: &str) -> (String, String) {
        let claimed = self.claim(&["--worker", worker]);
        assert_eq!(claimed.len(), 1, "{claimed:?}");
        (
            claimed[0]["task"]["id"].as_str().unwrap().to_string(),
            claimed[0]["lease"]["attempt_id"]
                .as_str()
                .unwrap()
                .to_string(),
        )
    }

    #[track_caller]
    fn status_of(&self, id: &str) -> String {
        self.json(&["task", "show", id])["status"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

fn ids(value: &Value) -> Vec<String> {
    let mut ids: Vec<String> = value
        .as_array()
        .unwrap_or_else(|| panic!("{value} is not an array"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[test]
fn the_diamond_runs_fails_cascades_and_recovers_by_commands() {
    let s = Sandbox::new();
    let a = s.submit(&["A"]);
    let b = s.submit(&["B", "--depends-on", &a]);
    let c = s.submit(&["C", "--depends-on", &a, "--max-retries", "1"]);
    let d = s.submit(&["D", "--depends-on", &b, "--depends-on", &c]);

    let (claimed, attempt) = s.claim_one("w1");
    assert_eq!(claimed, a);
    let done = s.json(&["task", "complete", &attempt, "--result", r#"{"n": 1}"#]);
    assert_eq!(done["attempt_id"], attempt.as_str());
    assert_eq!(ids(&done["ready"]), sorted(vec![b.clone(), c.clone()]));
    assert_eq!(s.json(&["task", "show", &a])["result_data"]["n"], 1);

    let both = s.claim(&["--worker", "w1", "--max", "5"]);
    assert_eq!(both.len(), 2, "B and C, and nothing else: {both:?}");
    let attempt_of = |id: &str| {
        both.iter()
            .find(|x| x["task"]["id"] == id)
            .map(|x| x["lease"]["attempt_id"].as_str().unwrap().to_string())
            .unwrap()
    };
    s.ok(&["task", "complete", &attempt_of(&b)]);
    let outcome = s.json(&["task", "fail", &attempt_of(&c), "--error", "flaky"]);
    assert_eq!(outcome["outcome"], "retrying");
    assert_eq!(outcome["retry_count"], 1);
    assert_eq!(s.status_of(&c), "ready");
    // The backoff's run-after time is in the future: C is not claimable yet.
    assert!(s.claim(&["--worker", "w1"]).is_empty());

    // Wait out the backoff (at most 1 s for the first retry); give up after 10 s.
    let waiting_since = std::time::Instant::now();
    let (again, attempt) = loop {
        assert!(
            waiting_since.elapsed() < std::time::Duration::from_secs(10),
            "C never became claimable again"
        );
        let claimed = s.claim(&["--worker", "w2"]);
        if let Some(first) = claimed.first() {
            break (
                first["task"]["id"].as_str().unwrap().to_string(),
                first["lease"]["attempt_id"].as_str().unwrap().to_string(),
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(again, c);
    let outcome = s.json(&["task", "fail", &attempt, "--error", "broken for good"]);
    assert_eq!(outcome["outcome"], "failed");
    assert_eq!(ids(&outcome["cascaded"]), vec![d.clone()]);
    let failed_d = s.json(&["task", "show", &d]);
    assert_eq!(failed_d["status"], "failed");
    // The dependent names its root; the root's error stays on the root.
    assert_eq!(
        failed_d["error_message"],
        format!("dependency {c} failed").as_str()
    );
    assert_eq!(
        s.json(&["task", "show", &c])["error_message"],
        "broken for good"
    );

    let retried = s.json(&["task", "retry", &c]);
    assert_eq!(ids(&retried["tasks"]), vec![d.clone()]);
    assert_eq!(s.status_of(&c), "ready");
    assert_eq!(s.status_of(&d), "blocked");

    let (_, attempt) = s.claim_one("w3");
    s.ok(&["task", "complete", &attempt]);
    let (last, attempt) = s.claim_one("w3");
    assert_eq!(last, d);
    s.ok(&["task", "complete", &attempt]);
    assert!(s.tasks().iter().all(|t| t["status"] == "completed"));

    let history = s.json(&["task", "history", &d]);
    let changes: Vec<(Value, Value)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["from"].clone(), e["to"].clone()))
        .collect();
    let expected: Vec<(Value, Value)> = [
        (Value::Null, "blocked"),
        ("blocked".into(), "failed"),
        ("failed".into(), "blocked"),
        ("blocked".into(), "ready"),
        ("ready".into(), "running"),
        ("running".into(), "completed"),
    ]
    .into_iter()
    .map(|(from, to)| (from, Value::from(to)))
    .collect();
    assert_eq!(changes, expected);
    let human = s.ok(&["task", "history", &d]);
    assert!(human.contains("running -> completed"), "{human}");
}

#[test]
fn claiming_from_an_empty_queue_says_so_and_succeeds() {
    let s = Sandbox::new();
    assert_eq!(
        s.ok(&["task", "claim", "--worker", "w"]),
        "no task is ready\n"
    );
    assert!(s.claim(&["--worker", "w"]).is_empty());
}

#[test]
fn claim_takes_only_the_agent_types_asked_for() {
    let s = Sandbox::new();
    s.submit(&["for a coder", "--agent-type", "coder"]);
    let reviewer = s.submit(&["for a reviewer", "--agent-type", "reviewer"]);
    let claimed = s.claim(&["--worker", "w", "--agent-type", "reviewer", "--max", "10"]);
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0]["task"]["id"], reviewer.as_str());
    let human = s.ok(&["task", "claim", "--worker", "w", "--agent-type", "coder"]);
    assert!(human.contains("for a coder"), "{human}");
}

#[test]
fn heartbeat_extends_the_lease() {
    let s = Sandbox::new();
    s.submit(&["long job"]);
    let claimed = s.claim(&["--worker", "w", "--lease", "30s"]);
    let attempt = claimed[0]["lease"]["attempt_id"].as_str().unwrap();
    let first = claimed[0]["lease"]["expires_at"]
        .as_str()
        .unwrap()
        .to_string();
    let lease = s.json(&["task", "heartbeat", attempt, "--lease", "1h"]);
    let extended = lease["expires_at"].as_str().unwrap();
    // Fixed-width timestamps compare as text.
    assert!(extended > first.as_str(), "{extended} <= {first}");
    assert_eq!(lease["attempt_id"], attempt);
}

#[test]
fn a_finished_attempt_cannot_finish_another_way_and_exits_with_5() {
    let s = Sandbox::new();
    let id = s.submit(&["once"]);
    let (_, attempt) = s.claim_one("w");
    s.ok(&["task", "complete", &attempt]);
    // The same call again is a repeat (`tests/cli/repeat.rs`); another result is not.
    let stderr = s.fails(&["task", "complete", &attempt, "--result", "1"], 5);
    assert!(
        stderr.contains("lease") && stderr.contains(&attempt),
        "{stderr}"
    );
    s.fails(&["task", "fail", &attempt, "--error", "late"], 5);
    s.fails(&["task", "heartbeat", &attempt], 5);
    assert_eq!(s.status_of(&id), "completed");
    assert_eq!(
        s.json(&["task", "history", &id]).as_array().unwrap().len(),
        3
    );
}

#[test]
fn an_unknown_attempt_exits_with_3() {
    let s = Sandbox::new();
    let stderr = s.fails(&["task", "complete", UNKNOWN_ID], 3);
    assert_eq!(
        stderr,
        format!("error: no attempt has the id {UNKNOWN_ID}\n")
    );
    s.fails(&["task", "heartbeat", UNKNOWN_ID], 3);
    s.fails(&["task", "fail", UNKNOWN_ID, "--error", "x"], 3);
}

#[test]
fn a_result_that_is_not_json_exits_with_4_and_the_task_keeps_running() {
    let s = Sandbox::new();
    let id = s.submit(&["job"]);
    let (_, attempt) = s.claim_one("w");
    let stderr = s.fails(&["task", "complete", &attempt, "--result", "{oops"], 4);
    assert!(stderr.contains("result"), "{stderr}");
    assert_eq!(s.status_of(&id), "running");
    s.ok(&["task", "complete", &attempt, "--result", "[1, 2]"]);
}

#[test]
fn malformed_durations_and_ids_are_usage_errors_and_out_of_range_ones_invalid_input() {
    let s = Sandbox::new();
    s.submit(&["job"]);
    for lease in ["soon", "5 parsecs"] {
        let flag = format!("--lease={lease}");
        let stderr = s.fails(&["task", "claim", "--worker", "w", &flag], 2);
        assert!(stderr.contains("--lease"), "{stderr}");
    }
    // Issue 10, item 9: a value below the range is as invalid as one above it.
    for lease in ["0", "0s", "-5m", "25h"] {
        let flag = format!("--lease={lease}");
        let stderr = s.fails(&["task", "claim", "--worker", "w", &flag], 4);
        assert!(stderr.contains("lease"), "{stderr}");
    }
    for max in ["-1", "0", "1001"] {
        let stderr = s.fails(&["task", "claim", "--worker", "w", "--max", max], 4);
        assert!(stderr.contains("is outside 1 to 1000"), "{stderr}");
    }
    s.fails(&["task", "claim"], 2);
    s.fails(&["task", "complete", "not-an-id"], 2);
    s.fails(&["task", "fail", UNKNOWN_ID], 2);
    // Nothing was claimed by any of them.
    assert_eq!(s.tasks()[0]["status"], "ready");
}

#[test]
fn claiming_zero_tasks_or_as_a_blank_worker_is_invalid() {
    let s = Sandbox::new();
    s.submit(&["job"]);
    s.fails(&["task", "claim", "--worker", "w", "--max", "0"], 4);
    s.fails(&["task", "claim", "--worker", "  "], 4);
    assert_eq!(s.tasks()[0]["status"], "ready");
}

#[test]
fn cancel_takes_the_dependents_and_revokes_the_lease() {
    let s = Sandbox::new();
    let a = s.submit(&["A"]);
    let b = s.submit(&["B", "--depends-on", &a]);
    let other = s.submit(&["unrelated"]);
    // Equal priorities go oldest first: A is claimed.
    let claimed = s.claim(&["--worker", "w", "--max", "1"]);
    let attempt = claimed[0]["lease"]["attempt_id"].as_str().unwrap();
    assert_eq!(claimed[0]["task"]["id"], a.as_str());

    let cancelled = s.json(&["task", "cancel", &a]);
    assert_eq!(cancelled["task_id"], a.as_str());
    assert_eq!(ids(&cancelled["tasks"]), sorted(vec![a.clone(), b.clone()]));
    let stderr = s.fails(&["task", "complete", attempt], 5);
    assert!(stderr.contains("cancelled"), "{stderr}");
    assert_eq!(s.status_of(&a), "cancelled");
    assert_eq!(s.status_of(&b), "cancelled");
    assert_eq!(s.status_of(&other), "ready");
    // Cancelling it again is a conflict; an unknown task is not found.
    s.fails(&["task", "cancel", &a], 5);
    s.fails(&["task", "cancel", UNKNOWN_ID], 3);
}

#[test]
fn retrying_a_task_that_has_not_failed_exits_with_5() {
    let s = Sandbox::new();
    let id = s.submit(&["fine"]);
    let stderr = s.fails(&["task", "retry", &id], 5);
    assert!(
        stderr.contains("retry") && stderr.contains("ready"),
        "{stderr}"
    );
    s.fails(&["task", "retry", UNKNOWN_ID], 3);
    s.fails(&["task", "history", UNKNOWN_ID], 3);
    assert_eq!(s.status_of(&id), "ready");
}

#[test]
fn reap_takes_back_an_expired_lease() {
    let s = Sandbox::new();
    assert_eq!(s.ok(&["reap"]), "nothing to reap\n");
    let id = s.submit(&["job of a worker that dies"]);
    let claimed = s.claim(&["--worker", "doomed", "--lease", "200ms"]);
    let attempt = claimed[0]["lease"]["attempt_id"].as_str().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let report = s.json(&["reap"]);
    assert_eq!(ids(&report["lost"]), vec![id.clone()]);
    assert_eq!(report["timed_out"], serde_json::json!([]));
    assert!(report.get("reprioritised").is_none(), "{report}");
    assert_eq!(s.status_of(&id), "ready");
    s.fails(&["task", "complete", attempt], 5);
}

#[test]
fn status_shows_counts_the_oldest_ready_task_and_leases() {
    let s = Sandbox::new();
    s.ok(&["init"]);
    let human = s.ok(&["status"]);
    assert!(human.contains("oldest ready: none"), "{human}");
    let old = s.submit(&["the old one"]);
    let new = s.submit(&["the new one"]);
    s.submit(&["the next one"]);
    let claimed = s.claim(&["--worker", "busy-bee", "--lease", "1h"]);
    let status = s.json(&["status"]);
    assert_eq!(status["counts"]["running"], 1);
    assert_eq!(status["counts"]["ready"], 2);
    assert_eq!(status["counts"]["failed"], 0);
    assert_eq!(status["running"][0]["worker_id"], "busy-bee");
    assert_eq!(
        status["running"][0]["attempt_id"],
        claimed[0]["lease"]["attempt_id"]
    );
    assert_eq!(status["expired_leases"], 0);
    // Equal priorities go oldest first, so the old task was claimed and the new one waits
    // longest.
    assert_eq!(claimed[0]["task"]["id"], old.as_str());
    assert_eq!(status["oldest_ready"]["task_id"], new.as_str());
    let human = s.ok(&["status"]);
    assert!(
        human.contains("busy-bee") && human.contains("59m"),
        "{human}"
    );
}

#[test]
fn leases_and_claims_have_bounds() {
    let s = Sandbox::new();
    s.submit(&["job"]);
    let stderr = s.fails(&["task", "claim", "--worker", "w", "--lease", "2d"], 4);
    assert!(stderr.contains("lease"), "{stderr}");
    let stderr = s.fails(&["task", "claim", "--worker", "w", "--max", "1001"], 4);
    assert!(stderr.contains("1000"), "{stderr}");
    // A worker's lease out of range is invalid input too, refused before it starts.
    let stderr = s.fails(&["worker", "--lease", "500ms", "--", "true"], 4);
    assert!(stderr.contains("lease"), "{stderr}");
    assert_eq!(s.tasks()[0]["status"], "ready");
}
