//! `abathur task claim --wait`: a claim that waits for work is answered as soon as a task is
//! claimable (submitted by another process, or back from a retry's backoff), answers empty when
//! its wait ends, and refuses a wait above the cap.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::sandbox::Sandbox;

/// Longer than any wait in these tests, so that only a hang fails them.
const HANG: Duration = Duration::from_secs(120);

/// Starts `task claim --json --wait 5m` and returns once it has found nothing and waits.
fn start_waiting_claim(s: &Sandbox) -> Child {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_abathur"))
        .arg("--db")
        .arg(s.db_path())
        .args([
            "--json", "task", "claim", "--worker", "waiter", "--wait", "5m",
        ])
        .env_remove("ABATHUR_DB")
        .env("RUST_LOG", "abathur=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("abathur runs");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if line.contains("waiting for work") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(HANG).expect("the claim logs that it waits");
    child
}

/// Waits for the claim to exit and returns what it printed.
fn claimed(child: Child) -> Vec<Value> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = rx
        .recv_timeout(HANG)
        .expect("the waiting claim answers")
        .expect("its output");
    assert!(output.status.success(), "{:?}", output.status);
    match serde_json::from_slice(&output.stdout).expect("JSON on stdout") {
        Value::Array(claimed) => claimed,
        other => panic!("not an array: {other}"),
    }
}

#[test]
fn a_waiting_claim_is_answered_when_another_process_submits_a_task() {
    let s = Sandbox::new();
    s.ok(&["init"]);
    let waiting = start_waiting_claim(&s);
    let id = s.submit(&["arrives while the claim waits"]);
    let claimed = claimed(waiting);
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    assert_eq!(claimed[0]["task"]["id"], id.as_str());
    assert_eq!(claimed[0]["lease"]["worker_id"], "waiter");
}

#[test]
fn a_waiting_claim_takes_a_retried_task_when_its_backoff_ends() {
    let s = Sandbox::new();
    let id = s.submit(&["fails once"]);
    let first = s.json(&["task", "claim", "--worker", "w"]);
    let attempt = first[0]["lease"]["attempt_id"]
        .as_str()
        .unwrap()
        .to_string();
    s.json(&["task", "fail", &attempt, "--error", "flaky"]);
    assert_eq!(
        s.json(&["task", "show", &id])["status"],
        "ready",
        "back for a retry"
    );
    // Nothing commits when the backoff ends: the claim looks again on its own.
    let claimed = claimed(start_waiting_claim(&s));
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    assert_eq!(claimed[0]["task"]["id"], id.as_str());
}

#[test]
fn a_wait_that_ends_with_nothing_claimable_answers_empty() {
    let s = Sandbox::new();
    s.ok(&["init"]);
    let claimed = s.json(&["task", "claim", "--worker", "w", "--wait", "1s"]);
    assert_eq!(claimed, serde_json::json!([]));
}

#[test]
fn a_wait_above_five_minutes_is_refused_and_nothing_is_claimed() {
    let s = Sandbox::new();
    let id = s.submit(&["stays ready"]);
    let stderr = s.fails(&["task", "claim", "--worker", "w", "--wait", "301s"], 4);
    assert!(stderr.contains("300 s"), "{stderr}");
    assert_eq!(s.json(&["task", "show", &id])["status"], "ready");
}
