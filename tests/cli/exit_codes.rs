//! The documented exit codes, and error messages in the user's terms.

use predicates::prelude::*;

use crate::sandbox::Sandbox;

const UNKNOWN_ID: &str = "67e55044-10b1-426f-9247-bb680e5fe0c8";

#[test]
fn showing_an_unknown_id_exits_with_3() {
    let sandbox = Sandbox::new();
    sandbox.ok(&["init"]);
    let stderr = sandbox.fails(&["task", "show", UNKNOWN_ID], 3);
    assert_eq!(stderr, format!("error: task {UNKNOWN_ID} was not found\n"));
}

#[test]
fn priority_11_exits_with_4_and_stores_nothing() {
    let sandbox = Sandbox::new();
    sandbox.ok(&["init"]);
    let stderr = sandbox.fails(&["task", "submit", "too urgent", "--priority", "11"], 4);
    assert!(stderr.contains("priority"), "{stderr}");
    assert!(sandbox.tasks().is_empty());
}

#[test]
fn a_priority_too_big_for_a_byte_is_also_invalid_input() {
    let sandbox = Sandbox::new();
    sandbox.ok(&["init"]);
    sandbox.fails(
        &["task", "submit", "way too urgent", "--priority", "300"],
        4,
    );
    assert!(sandbox.tasks().is_empty());
}

#[test]
fn a_141_character_summary_exits_with_4_and_stores_nothing() {
    let sandbox = Sandbox::new();
    let summary = "s".repeat(141);
    let stderr = sandbox.fails(&["task", "submit", "long", "--summary", &summary], 4);
    assert!(stderr.contains("summary"), "{stderr}");
    assert!(sandbox.tasks().is_empty());
}

#[test]
fn a_140_character_summary_is_accepted() {
    let sandbox = Sandbox::new();
    sandbox.submit(&["just fits", "--summary", &"ü".repeat(140)]);
}

#[test]
fn input_that_is_not_json_exits_with_4_and_stores_nothing() {
    let sandbox = Sandbox::new();
    let stderr = sandbox.fails(&["task", "submit", "bad input", "--input", "{bad"], 4);
    assert!(stderr.contains("JSON"), "{stderr}");
    assert!(sandbox.tasks().is_empty());
}

#[test]
fn a_malformed_task_id_is_a_usage_error() {
    let sandbox = Sandbox::new();
    let stderr = sandbox.fails(&["task", "show", "not-a-uuid"], 2);
    assert!(stderr.contains("hex digits"), "{stderr}");
    sandbox.fails(&["task", "submit", "x", "--depends-on", "123"], 2);
    sandbox.fails(&["task", "submit", "x", "--parent", "12x4"], 2);
    assert!(!sandbox.db_path().exists(), "a usage error opens nothing");
}

#[test]
fn an_unknown_flag_is_a_usage_error() {
    let sandbox = Sandbox::new();
    sandbox.fails(&["task", "list", "--colour"], 2);
    sandbox.fails(&["task", "list", "--status", "done"], 2);
    sandbox.fails(&["frobnicate"], 2);
}

#[test]
fn a_dependency_on_an_unknown_task_is_rejected() {
    let sandbox = Sandbox::new();
    let stderr = sandbox.fails(&["task", "submit", "orphan", "--depends-on", UNKNOWN_ID], 3);
    assert!(stderr.contains("dependency"), "{stderr}");
    assert!(stderr.contains(UNKNOWN_ID), "{stderr}");
    assert!(sandbox.tasks().is_empty());
}

#[test]
fn an_unknown_parent_is_rejected() {
    let sandbox = Sandbox::new();
    let stderr = sandbox.fails(&["task", "submit", "orphan", "--parent", UNKNOWN_ID], 3);
    assert!(stderr.contains("parent task"), "{stderr}");
    assert!(sandbox.tasks().is_empty());
}

#[test]
fn a_dependency_listed_twice_is_invalid_input() {
    let sandbox = Sandbox::new();
    let first = sandbox.submit(&["first"]);
    sandbox.fails(
        &[
            "task",
            "submit",
            "twice",
            "--depends-on",
            &first,
            "--depends-on",
            &first,
        ],
        4,
    );
    assert_eq!(sandbox.tasks().len(), 1);
}

#[test]
fn a_file_that_is_not_a_database_exits_with_6_without_driver_text() {
    let sandbox = Sandbox::new();
    std::fs::write(sandbox.db_path(), "not a database, just text\n".repeat(100)).unwrap();
    let stderr = sandbox.fails(&["task", "list"], 6);
    assert!(stderr.contains("not a SQLite database"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("code:"), "{stderr}");
}

#[test]
fn help_documents_the_exit_codes() {
    let sandbox = Sandbox::new();
    sandbox
        .bare()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("Exit codes:"))
        .stdout(predicate::str::contains("3  not found"))
        .stdout(predicate::str::contains("4  invalid input"))
        .stdout(predicate::str::contains("5  conflict"))
        .stdout(predicate::str::contains("6  no usable database"))
        .stdout(predicate::str::contains("7  storage refused"));
}

#[test]
fn logs_stay_off_unless_rust_log_asks_for_them() {
    let sandbox = Sandbox::new();
    sandbox.ok(&["init"]);
    sandbox
        .abathur()
        .env("RUST_LOG", "debug")
        .arg("init")
        .assert()
        .success()
        .stderr(predicate::str::contains("DEBUG"));
}

#[test]
fn a_submit_error_calls_the_unstored_task_the_new_task() {
    let sandbox = Sandbox::new();
    let gone = sandbox.submit(&["gone"]);
    sandbox.ok(&["task", "cancel", &gone]);
    let stderr = sandbox.fails(&["task", "submit", "late", "--depends-on", &gone], 5);
    assert!(
        stderr.starts_with(&format!(
            "error: the new task depends on {gone}, which is cancelled"
        )),
        "{stderr}"
    );
}
