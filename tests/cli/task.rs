//! `abathur task submit`, `list` and `show`.

use serde_json::Value;

use crate::sandbox::Sandbox;

#[test]
fn a_submitted_task_is_shown_by_its_id() {
    let sandbox = Sandbox::new();
    let id = sandbox.submit(&["Write the release notes", "--agent-type", "writer"]);
    let shown = sandbox.ok(&["task", "show", &id]);
    assert!(shown.contains(&id), "{shown}");
    assert!(shown.contains("Write the release notes"), "{shown}");
    assert!(shown.contains("writer"), "{shown}");
    assert!(shown.contains("ready"), "{shown}");
}

#[test]
fn a_submitted_task_appears_in_the_list() {
    let sandbox = Sandbox::new();
    let id = sandbox.submit(&["Refactor the parser", "--priority", "7"]);
    let list = sandbox.ok(&["task", "list"]);
    let row = list
        .lines()
        .find(|line| line.starts_with(&id))
        .unwrap_or_else(|| panic!("no row for {id} in:\n{list}"));
    for column in ["ready", "7", "generic", "Refactor the parser"] {
        assert!(row.contains(column), "row lacks {column:?}: {row}");
    }
}

#[test]
fn the_list_filters_by_status_and_agent_type_and_pages() {
    let sandbox = Sandbox::new();
    let first = sandbox.submit(&["first", "--agent-type", "coder", "--priority", "9"]);
    let second = sandbox.submit(&["second", "--agent-type", "coder"]);
    let _blocked = sandbox.submit(&["third", "--depends-on", &first]);

    let ids = |args: &[&str]| -> Vec<String> {
        let mut full = vec!["task", "list"];
        full.extend_from_slice(args);
        match sandbox.json(&full) {
            Value::Array(tasks) => tasks
                .iter()
                .map(|t| t["id"].as_str().unwrap().to_string())
                .collect(),
            other => panic!("not an array: {other}"),
        }
    };
    assert_eq!(
        ids(&["--agent-type", "coder"]),
        [first.clone(), second.clone()]
    );
    assert_eq!(
        ids(&["--status", "ready", "--limit", "1", "--offset", "1"]),
        [second]
    );
    assert_eq!(ids(&["--status", "blocked"]).len(), 1);
}

#[test]
fn the_summary_defaults_to_the_first_line_of_the_description() {
    let sandbox = Sandbox::new();
    let id = sandbox.submit(&["Fix the flaky test\n\nIt fails one run in ten."]);
    let task = sandbox.json(&["task", "show", &id]);
    assert_eq!(task["summary"], "Fix the flaky test");
    assert_eq!(
        task["description"],
        "Fix the flaky test\n\nIt fails one run in ten."
    );
}

#[test]
fn a_long_first_line_is_cut_to_140_characters_not_bytes() {
    let sandbox = Sandbox::new();
    let id = sandbox.submit(&[&"é".repeat(300)]);
    let task = sandbox.json(&["task", "show", &id]);
    assert_eq!(task["summary"].as_str().unwrap().chars().count(), 140);
}

#[test]
fn a_task_depending_on_another_is_blocked_at_depth_1() {
    let sandbox = Sandbox::new();
    let first = sandbox.submit(&["build"]);
    let second = sandbox.submit(&["test", "--depends-on", &first]);
    let third = sandbox.submit(&["release", "--depends-on", &second, "--depends-on", &first]);

    let task = sandbox.json(&["task", "show", &second]);
    assert_eq!(task["status"], "blocked");
    assert_eq!(task["dependency_depth"], 1);
    assert_eq!(task["dependencies"], serde_json::json!([first]));

    let task = sandbox.json(&["task", "show", &third]);
    assert_eq!(
        task["dependency_depth"], 2,
        "one more than the deepest dependency"
    );

    let shown = sandbox.ok(&["task", "show", &second]);
    assert!(shown.contains("blocked"), "{shown}");
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("dependency depth:") && l.ends_with(" 1")),
        "{shown}"
    );
}

#[test]
fn a_task_without_dependencies_is_ready_at_depth_0() {
    let sandbox = Sandbox::new();
    let id = sandbox.submit(&["alone"]);
    let task = sandbox.json(&["task", "show", &id]);
    assert_eq!(task["status"], "ready");
    assert_eq!(task["dependency_depth"], 0);
}

#[test]
fn submit_keeps_the_input_and_the_parent() {
    let sandbox = Sandbox::new();
    let parent = sandbox.submit(&["epic"]);
    let child = sandbox.submit(&[
        "story",
        "--parent",
        &parent,
        "--input",
        r#"{"files":["a.rs"]}"#,
    ]);
    let task = sandbox.json(&["task", "show", &child]);
    assert_eq!(task["parent_task_id"], parent.as_str());
    assert_eq!(task["input_data"], serde_json::json!({"files": ["a.rs"]}));
}

/// Regression: `task submit --depends-on` once set the status itself and left a task whose
/// dependencies had all completed blocked for ever.
#[test]
fn a_task_depending_on_a_completed_task_is_ready() {
    use std::sync::Arc;
    use std::time::Duration;

    use abathur::domain::queue::TaskQueue;
    use abathur::infrastructure::database::{DatabaseConfig, DatabaseConnection, QueueStoreImpl};

    let sandbox = Sandbox::new();
    let first = sandbox.submit(&["build"]);
    // Run the first task to completion through the library, as a worker would.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let db = DatabaseConnection::open_path(&sandbox.db_path(), DatabaseConfig::default())
            .await
            .unwrap();
        let queue = TaskQueue::new(Arc::new(QueueStoreImpl::new(db.pool().clone())));
        let claimed = queue
            .claim("worker", &[], Duration::from_secs(30), 1)
            .await
            .unwrap();
        queue
            .complete(claimed[0].lease.attempt_id, None)
            .await
            .unwrap();
        db.close().await;
    });
    let second = sandbox.submit(&["test", "--depends-on", &first]);
    let task = sandbox.json(&["task", "show", &second]);
    assert_eq!(task["status"], "ready");
    assert_eq!(task["dependency_depth"], 1);
}

#[test]
fn submit_takes_every_option_and_list_filters_by_them() {
    let s = Sandbox::new();
    let session = s.ok(&["session", "create", "--app", "a", "--user", "u"]);
    let session = session.trim();
    let parent = s.submit(&["parent", "--priority", "2"]);
    let input = s.dir.path().join("input.json");
    std::fs::write(&input, r#"{"file": true}"#).unwrap();
    let child = s.submit(&[
        "child",
        "--parent",
        &parent[..6],
        "--session",
        &session[..6],
        "--branch",
        "feature/x",
        "--deadline",
        "2030-01-02T03:04:05Z",
        "--input",
        &format!("@{}", input.display()),
        "--max-retries",
        "7",
        "--timeout",
        "90",
        "--priority",
        "9",
    ]);
    let task = s.json(&["task", "show", &child]);
    assert_eq!(task["parent_task_id"], parent.as_str());
    assert_eq!(task["session_id"], session);
    assert_eq!(task["feature_branch"], "feature/x");
    assert_eq!(task["deadline"], "2030-01-02T03:04:05Z");
    assert_eq!(task["input_data"]["file"], true);
    assert_eq!(task["max_retries"], 7);
    assert_eq!(task["max_execution_timeout_seconds"], 90);

    let only = |args: &[&str]| -> Vec<String> {
        let mut full = vec!["task", "list"];
        full.extend_from_slice(args);
        s.json(&full)
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(only(&["--parent", &parent]), vec![child.clone()]);
    assert_eq!(only(&["--session", session]), vec![child.clone()]);
    assert_eq!(only(&["--branch", "feature/x"]), vec![child.clone()]);
    assert_eq!(only(&["--min-priority", "8"]), vec![child.clone()]);
    assert_eq!(only(&["--max-priority", "3"]), vec![parent.clone()]);
    assert_eq!(only(&["--source", "human"]).len(), 2);
    assert!(only(&["--source", "agent_planner"]).is_empty());
}

#[test]
fn a_relative_deadline_counts_from_now() {
    let s = Sandbox::new();
    let id = s.submit(&["soon", "--deadline", "+2h"]);
    let deadline = s.json(&["task", "show", &id])["deadline"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = chrono::DateTime::parse_from_rfc3339(&deadline).unwrap();
    let ahead = deadline.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(
        ahead > chrono::Duration::minutes(119) && ahead <= chrono::Duration::hours(2),
        "{ahead}"
    );
}

#[test]
fn bad_deadlines_and_unknown_sessions_are_refused() {
    let s = Sandbox::new();
    for bad in ["tomorrow", "+soon", "2030-13-01T00:00:00Z"] {
        let flag = format!("--deadline={bad}");
        let stderr = s.fails(&["task", "submit", "x", &flag], 2);
        // Issue 10, item 9: the hint shows only times a deadline can be.
        assert!(!stderr.contains("-30m"), "{stderr}");
    }
    s.fails(
        &[
            "task",
            "submit",
            "x",
            "--session",
            "67e55044-10b1-426f-9247-bb680e5fe0c8",
        ],
        3,
    );
    s.fails(&["task", "list", "--source", "robot"], 2);
    assert!(s.tasks().is_empty());
}

#[test]
fn list_filters_by_submission_time() {
    let s = Sandbox::new();
    let id = s.submit(&["now"]);
    let ids = |args: &[&str]| -> Vec<String> {
        let mut full = vec!["task", "list"];
        full.extend_from_slice(args);
        s.json(&full)
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&["--submitted-after", "-1h"]), vec![id.clone()]);
    assert!(ids(&["--submitted-after", "+1h"]).is_empty());
    assert_eq!(ids(&["--submitted-before", "+1m"]), vec![id.clone()]);
    assert!(ids(&["--submitted-before", "2020-01-01T00:00:00Z"]).is_empty());
    s.fails(&["task", "list", "--submitted-after", "yesterday"], 2);
}
