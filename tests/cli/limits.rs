//! Issue 10, item 4: values over their size limits exit 4 with the field and the limit named,
//! and leave the database as it was, whichever command brings them.

use std::fs;

use abathur::domain::limits;
use serde_json::Value;

use crate::sandbox::Sandbox;

impl Sandbox {
    /// The row count of every table.
    fn counts(&self) -> Value {
        self.json(&["db", "status"])["tables"].clone()
    }

    /// Writes `contents` to `name` in the sandbox and returns `@<path>`.
    fn at_file(&self, name: &str, contents: &str) -> String {
        let path = self.dir.path().join(name);
        fs::write(&path, contents).unwrap();
        format!("@{}", path.display())
    }
}

/// A JSON string whose compact encoding is `bytes` bytes long.
fn json_text_of(bytes: usize) -> String {
    format!("\"{}\"", "x".repeat(bytes - 2))
}

#[track_caller]
fn assert_names(stderr: &str, field: &str, limit: usize) {
    assert!(stderr.contains(field), "{stderr}");
    assert!(
        stderr.contains(&format!("limit of {limit} bytes")),
        "{stderr}"
    );
}

#[test]
fn oversized_task_fields_exit_4_and_store_nothing() {
    let s = Sandbox::new();
    s.ok(&["init"]);
    let before = s.counts();
    let input = s.at_file("input.json", &json_text_of(limits::MAX_TASK_JSON_BYTES + 1));
    let stderr = s.fails(&["task", "submit", "x", "--input", &input], 4);
    assert_names(&stderr, "input_data", limits::MAX_TASK_JSON_BYTES);
    let branch = "b".repeat(limits::MAX_NAME_BYTES + 1);
    let stderr = s.fails(&["task", "submit", "x", "--branch", &branch], 4);
    assert_names(&stderr, "feature_branch", limits::MAX_NAME_BYTES);
    let agent_type = "a".repeat(limits::MAX_NAME_BYTES + 1);
    let stderr = s.fails(&["task", "submit", "x", "--agent-type", &agent_type], 4);
    assert_names(&stderr, "agent_type", limits::MAX_NAME_BYTES);
    // A description too big for one argument comes in through import.
    let line = serde_json::json!({
        "description": "d".repeat(limits::MAX_DESCRIPTION_BYTES + 1),
    });
    let file = s.dir.path().join("tasks.jsonl");
    fs::write(&file, format!("{line}\n")).unwrap();
    let stderr = s.fails(&["task", "import", file.to_str().unwrap()], 4);
    assert_names(&stderr, "description", limits::MAX_DESCRIPTION_BYTES);
    assert_eq!(s.counts(), before);
}

#[test]
fn an_oversized_error_or_result_exits_4_and_the_task_stays_running() {
    let s = Sandbox::new();
    s.submit(&["x"]);
    let claimed = s.json(&["task", "claim", "--worker", "w"]);
    let attempt = claimed[0]["lease"]["attempt_id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = s.counts();
    let error = "e".repeat(limits::MAX_ERROR_BYTES + 1);
    let stderr = s.fails(&["task", "fail", &attempt, "--error", &error], 4);
    assert_names(&stderr, "error", limits::MAX_ERROR_BYTES);
    let result = s.at_file(
        "result.json",
        &json_text_of(limits::MAX_TASK_JSON_BYTES + 1),
    );
    let stderr = s.fails(&["task", "complete", &attempt, "--result", &result], 4);
    assert_names(&stderr, "result", limits::MAX_TASK_JSON_BYTES);
    assert_eq!(s.counts(), before);
    assert_eq!(s.tasks()[0]["status"], "running");
}

#[test]
fn oversized_memory_and_session_values_exit_4_and_store_nothing() {
    let s = Sandbox::new();
    let session = s.ok(&["session", "create", "--app", "a", "--user", "u"]);
    let session = session.trim();
    s.ok(&["memory", "add", "ns", "k", "1"]);
    let before = s.counts();
    let value = s.at_file(
        "value.json",
        &json_text_of(limits::MAX_MEMORY_VALUE_BYTES + 1),
    );
    let stderr = s.fails(&["memory", "add", "ns", "k2", &value], 4);
    assert_names(&stderr, "value", limits::MAX_MEMORY_VALUE_BYTES);
    let stderr = s.fails(&["memory", "update", "ns", "k", &value], 4);
    assert_names(&stderr, "value", limits::MAX_MEMORY_VALUE_BYTES);
    let metadata = s.at_file("meta.json", &json_text_of(limits::MAX_METADATA_BYTES + 1));
    let stderr = s.fails(
        &["memory", "add", "ns", "k3", "1", "--metadata", &metadata],
        4,
    );
    assert_names(&stderr, "metadata", limits::MAX_METADATA_BYTES);
    let content = s.at_file(
        "content.json",
        &json_text_of(limits::MAX_EVENT_CONTENT_BYTES + 1),
    );
    let stderr = s.fails(
        &[
            "session",
            "append",
            session,
            "--type",
            "note",
            "--content",
            &content,
        ],
        4,
    );
    assert_names(&stderr, "content", limits::MAX_EVENT_CONTENT_BYTES);
    let stderr = s.fails(&["session", "state", "set", session, "k", &content], 4);
    assert_names(&stderr, "value", limits::MAX_EVENT_CONTENT_BYTES);
    assert_eq!(s.counts(), before);
}
