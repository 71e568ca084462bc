//! `--json`: every command prints one JSON document of a stable shape.

use serde_json::Value;

use crate::sandbox::{latest_schema_version, Sandbox};

/// The fields of a task's JSON form.
const TASK_KEYS: [&str; 29] = [
    "id",
    "summary",
    "description",
    "agent_type",
    "priority",
    "calculated_priority",
    "status",
    "dependencies",
    "dependency_type",
    "dependency_depth",
    "input_data",
    "result_data",
    "error_message",
    "retry_count",
    "max_retries",
    "max_execution_timeout_seconds",
    "submitted_at",
    "started_at",
    "completed_at",
    "last_updated_at",
    "created_by",
    "parent_task_id",
    "session_id",
    "source",
    "deadline",
    "estimated_duration_seconds",
    "feature_branch",
    "task_branch",
    "worktree_path",
];

#[track_caller]
fn assert_keys(value: &Value, keys: &[&str]) {
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"));
    let mut found: Vec<&str> = object.keys().map(String::as_str).collect();
    let mut expected = keys.to_vec();
    found.sort_unstable();
    expected.sort_unstable();
    assert_eq!(found, expected);
}

#[test]
fn init_prints_the_database_and_schema_version() {
    let sandbox = Sandbox::new();
    let init = sandbox.json(&["init"]);
    assert_keys(&init, &["database", "schema_version"]);
    assert!(init["database"].as_str().unwrap().ends_with("abathur.db"));
    assert_eq!(init["schema_version"], latest_schema_version());
}

#[test]
fn submit_prints_the_stored_task() {
    let sandbox = Sandbox::new();
    let task = sandbox.json(&["task", "submit", "with json"]);
    assert_keys(&task, &TASK_KEYS);
    let id = task["id"].as_str().unwrap();
    assert_eq!(sandbox.json(&["task", "show", id]), task);
}

#[test]
fn show_prints_every_field_of_the_task() {
    let sandbox = Sandbox::new();
    let id = sandbox.submit(&["inspect me", "--priority", "3"]);
    let task = sandbox.json(&["task", "show", &id]);
    assert_keys(&task, &TASK_KEYS);
    assert_eq!(task["id"], id.as_str());
    assert_eq!(task["priority"], 3);
    assert_eq!(task["agent_type"], "generic");
}

#[test]
fn list_prints_an_array_of_tasks() {
    let sandbox = Sandbox::new();
    sandbox.ok(&["init"]);
    assert_eq!(sandbox.json(&["task", "list"]), Value::Array(vec![]));
    sandbox.submit(&["one"]);
    sandbox.submit(&["two"]);
    let tasks = sandbox.tasks();
    assert_eq!(tasks.len(), 2);
    for task in &tasks {
        assert_keys(task, &TASK_KEYS);
    }
}

#[test]
fn db_status_prints_an_object() {
    let sandbox = Sandbox::new();
    sandbox.ok(&["init"]);
    let status = sandbox.json(&["db", "status"]);
    assert_keys(
        &status,
        &[
            "database",
            "schema_version",
            "journal_mode",
            "tables",
            "tasks_by_status",
            "storage",
        ],
    );
    assert_keys(
        &status["tasks_by_status"],
        &[
            "pending",
            "blocked",
            "ready",
            "running",
            "completed",
            "failed",
            "cancelled",
        ],
    );
}
