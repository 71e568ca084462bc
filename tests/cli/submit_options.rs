//! `--idempotency-key` and `--run-after` on `task submit`, and their fields in `task import`:
//! a retried submission prints the task it made, a different one under the same key exits 5,
//! and a delayed task is not claimed before its time.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use abathur::domain::clock::Clock;
use abathur::domain::queue::TaskQueue;
use abathur::infrastructure::database::{DatabaseConnection, QueueStoreImpl};
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::sandbox::Sandbox;

/// A clock stopped at one instant.
#[derive(Debug)]
struct At(DateTime<Utc>);

impl Clock for At {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

impl Sandbox {
    /// Claims through the library with the clock at `at`: what a worker would get then.
    fn claim_at(&self, at: DateTime<Utc>) -> Vec<String> {
        let url = format!("sqlite:{}", self.db_path().display());
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let db = DatabaseConnection::new(&url).await.unwrap();
                let queue = TaskQueue::new(Arc::new(QueueStoreImpl::new(db.pool().clone())))
                    .with_clock(Arc::new(At(at)));
                let claimed = queue
                    .claim("test", &[], Duration::from_secs(60), 10)
                    .await
                    .unwrap();
                db.close().await;
                claimed.into_iter().map(|c| c.task.id.to_string()).collect()
            })
    }
}

#[test]
fn submitting_again_with_an_idempotency_key_prints_the_same_task_and_stores_one() {
    let s = Sandbox::new();
    let id = s.submit(&["build it", "--idempotency-key", "build-1"]);
    let out = s
        .abathur()
        .args(["task", "submit", "build it", "--idempotency-key", "build-1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{id}\n"));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("\"build-1\"") && stderr.contains(&id),
        "{stderr}"
    );
    let again = s.json(&["task", "submit", "build it", "--idempotency-key", "build-1"]);
    assert_eq!(again["id"], id.as_str());
    assert_eq!(again["existing"], true);
    assert_eq!(again["idempotency_key"], "build-1");
    assert_eq!(s.tasks().len(), 1);
    let shown = s.json(&["task", "show", &id]);
    assert_eq!(shown["idempotency_key"], "build-1");
    let text = s.ok(&["task", "show", &id]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("idempotency key:") && l.ends_with(" build-1")),
        "{text}"
    );
}

#[test]
fn the_same_key_with_another_task_exits_5_naming_the_key_and_the_task() {
    let s = Sandbox::new();
    let id = s.submit(&["build it", "--idempotency-key", "build-1"]);
    let before = s.tasks();
    let stderr = s.fails(
        &[
            "task",
            "submit",
            "build it",
            "--priority",
            "9",
            "--idempotency-key",
            "build-1",
        ],
        5,
    );
    assert!(
        stderr.contains("\"build-1\"") && stderr.contains(&id),
        "{stderr}"
    );
    assert_eq!(s.tasks(), before);
}

#[test]
fn an_empty_or_overlong_key_exits_4_with_nothing_stored() {
    let s = Sandbox::new();
    s.ok(&["init"]);
    for bad in [String::new(), "k".repeat(257)] {
        let stderr = s.fails(&["task", "submit", "x", "--idempotency-key", &bad], 4);
        assert!(stderr.contains("idempotency_key"), "{stderr}");
    }
    assert_eq!(s.tasks(), Vec::<Value>::new());
}

#[test]
fn concurrent_processes_submitting_one_key_make_one_task() {
    let s = Sandbox::new();
    s.ok(&["init"]);
    let children: Vec<_> = (0..8)
        .map(|_| {
            std::process::Command::new(assert_cmd::cargo::cargo_bin("abathur"))
                .current_dir(s.dir.path())
                .env_remove("ABATHUR_DB")
                .env_remove("RUST_LOG")
                .arg("--db")
                .arg(s.db_path())
                .args(["task", "submit", "once", "--idempotency-key", "race"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ids = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ids.push(String::from_utf8(out.stdout).unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every process printed the same task: {ids:?}");
    assert_eq!(s.tasks().len(), 1);
}

#[test]
fn a_task_submitted_with_run_after_is_not_claimed_until_then() {
    let s = Sandbox::new();
    let id = s.submit(&["later", "--run-after", "+1h"]);
    assert_eq!(
        s.ok(&["task", "claim", "--worker", "w"]),
        "no task is ready\n"
    );
    let shown = s.json(&["task", "show", &id]);
    let run_after: DateTime<Utc> = shown["run_after"].as_str().unwrap().parse().unwrap();
    let ahead = run_after - Utc::now();
    assert!(
        ahead > chrono::Duration::minutes(50) && ahead <= chrono::Duration::hours(1),
        "{run_after}"
    );
    assert!(s.ok(&["task", "show", &id]).contains("run after:"));
    assert!(s
        .claim_at(run_after - chrono::Duration::seconds(1))
        .is_empty());
    assert_eq!(s.claim_at(run_after), vec![id]);

    // A time already past holds nothing back.
    let now = s.submit(&["now", "--run-after", "2020-01-01T00:00:00Z"]);
    assert!(s.ok(&["task", "claim", "--worker", "w"]).contains(&now));
}

#[test]
fn an_invalid_run_after_is_refused_with_nothing_stored() {
    let s = Sandbox::new();
    s.ok(&["init"]);
    for bad in ["soon", "2026-13-01T00:00:00Z"] {
        let out = s
            .abathur()
            .args(["task", "submit", "x", "--run-after", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
    }
    // Parsed, but past the range a timestamp is stored in.
    let stderr = s.fails(&["task", "submit", "x", "--run-after", "+9000years"], 4);
    assert!(stderr.contains("run_after"), "{stderr}");
    assert_eq!(s.tasks(), Vec::<Value>::new());
}

const KEYED: &str = r#"{"key": "fetch", "idempotency_key": "p-fetch", "description": "Fetch"}
{"key": "build", "idempotency_key": "p-build", "description": "Build", "depends_on": ["fetch"], "run_after": "+1h"}
"#;

#[test]
fn importing_a_keyed_file_again_returns_the_stored_tasks_and_adds_only_new_lines() {
    let s = Sandbox::new();
    let (code, first, stderr) = s.import(KEYED, true);
    assert_eq!(code, 0, "{stderr}");
    let first: Value = serde_json::from_str(&first).unwrap();
    let build_id = first[1]["id"].as_str().unwrap().to_string();
    assert_eq!(first[1]["existing"], false);
    assert!(s.json(&["task", "show", &build_id])["run_after"].is_string());

    let (code, second, stderr) = s.import(KEYED, true);
    assert_eq!(code, 0, "{stderr}");
    let second: Value = serde_json::from_str(&second).unwrap();
    for (a, b) in first
        .as_array()
        .unwrap()
        .iter()
        .zip(second.as_array().unwrap())
    {
        assert_eq!(a["id"], b["id"]);
        assert_eq!(b["existing"], true);
    }
    assert_eq!(s.tasks().len(), 2);

    // A new line that depends on a stored one by its key in the file.
    let more = format!(
        "{KEYED}{}\n",
        r#"{"idempotency_key": "p-test", "description": "Test", "depends_on": ["build"]}"#
    );
    let (code, third, stderr) = s.import(&more, true);
    assert_eq!(code, 0, "{stderr}");
    let third: Value = serde_json::from_str(&third).unwrap();
    assert_eq!(third[2]["existing"], false);
    let test_id = third[2]["id"].as_str().unwrap();
    assert_eq!(
        s.json(&["task", "show", test_id])["dependencies"],
        serde_json::json!([build_id])
    );
    assert_eq!(s.tasks().len(), 3);
}

#[test]
fn an_import_line_whose_key_names_another_task_exits_5_naming_the_line_and_stores_nothing() {
    let s = Sandbox::new();
    let (code, _, stderr) = s.import(KEYED, true);
    assert_eq!(code, 0, "{stderr}");
    let before = s.tasks();
    let changed = KEYED.replace("\"Build\"", "\"Build it differently\"");
    let extra = format!(
        "{changed}{}\n",
        r#"{"idempotency_key": "p-new", "description": "New"}"#
    );
    let (code, stdout, stderr) = s.import(&extra, true);
    assert_eq!(code, 5, "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("line 2") && stderr.contains("\"p-build\""),
        "{stderr}"
    );
    assert_eq!(s.tasks(), before);
}

#[test]
fn an_import_line_with_a_bad_run_after_or_key_is_refused_naming_the_line() {
    let s = Sandbox::new();
    s.ok(&["init"]);
    for (line, field) in [
        (r#"{"description": "x", "run_after": "soon"}"#, "run_after"),
        (
            r#"{"description": "x", "run_after": "+9000years"}"#,
            "run_after",
        ),
        (
            r#"{"description": "x", "idempotency_key": ""}"#,
            "idempotency_key",
        ),
    ] {
        let input = format!("{}\n{line}\n", r#"{"description": "fine"}"#);
        let (code, _, stderr) = s.import(&input, true);
        assert_eq!(code, 4, "{line}: {stderr}");
        assert!(
            stderr.contains("line 2") && stderr.contains(field),
            "{line}: {stderr}"
        );
    }
    assert_eq!(s.tasks(), Vec::<Value>::new());
}
