//! The API against its own OpenAPI document, by schemathesis (PyPI): generated requests, valid
//! and not, to every operation, on a database with tasks of every kind, memories, a session and
//! an agent. No answer may be a 5xx, and every answer must match the document: its status, its
//! content type and its body's schema.
//!
//! `ABATHUR_SCHEMATHESIS` names the `st` command (CI installs schemathesis in a venv); without
//! it the test says so and passes, unless `ABATHUR_REQUIRE_SCHEMATHESIS` is set, as in CI.

use std::process::Stdio;

use crate::server::{Store, PATIENCE};

#[tokio::test]
async fn the_api_answers_as_its_openapi_document_says() {
    let Some(st) = std::env::var_os("ABATHUR_SCHEMATHESIS") else {
        assert!(
            std::env::var_os("ABATHUR_REQUIRE_SCHEMATHESIS").is_none(),
            "the schemathesis test must run here, but ABATHUR_SCHEMATHESIS is not set"
        );
        eprintln!("skipped: ABATHUR_SCHEMATHESIS does not name schemathesis's `st`");
        return;
    };
    let store = Store::new();
    let root = store.submit("root", &[]);
    store.submit("waits", &[&root]);
    let failing = store.cli(&["task", "submit", "fails", "--max-retries", "0"]);
    let claimed: serde_json::Value = serde_json::from_str(
        &store.cli(&["--json", "task", "claim", "--worker", "w", "--max", "5"]),
    )
    .expect("JSON");
    for claim in claimed.as_array().expect("claims") {
        if claim["task"]["id"] == failing.as_str() {
            let attempt = claim["lease"]["attempt_id"].as_str().expect("an attempt");
            store.cli(&["task", "fail", attempt, "--error", "boom"]);
        }
    }
    store.cli(&["memory", "add", "team/rust", "style", r#"{"indent": 4}"#]);
    let session = store.cli(&["session", "create", "--app", "planner", "--user", "ada"]);
    store.cli(&["session", "append", &session, "--type", "message"]);
    store.cli(&["agent", "register", "--type", "planner"]);
    let served = store.serve(&[]).await;

    // Its cache goes into the folder it runs in: not the source tree.
    let scratch = tempfile::tempdir().expect("a folder to run in");
    let run = tokio::process::Command::new(st)
        .current_dir(scratch.path())
        .args([
            "run",
            &served.url("/api/v1/openapi.json"),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance",
            "--max-examples",
            "25",
            "--seed",
            "20261130",
            "--request-timeout",
            "10",
            "--workers",
            "1",
            "--no-color",
        ])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(PATIENCE * 5, run)
        .await
        .expect("schemathesis finishes in time")
        .expect("schemathesis runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{text}"
    );
    served.stop().await;
}
