//! Issue 10, items 9 and 15: one range and one exit code per value, on either side of it;
//! deadlines in the future only; blank names refused; `memory add --text @FILE`.

use std::fs;

use serde_json::Value;

use crate::sandbox::Sandbox;

impl Sandbox {
    fn tables(&self) -> Value {
        self.json(&["db", "status"])["tables"].clone()
    }
}

/// `--priority -1` said `0..=4294967295` (exit 2) while `11` exited 4.
#[test]
fn every_numeric_option_refuses_both_sides_of_its_range_with_exit_4_and_one_message() {
    let s = Sandbox::new();
    let session = s.ok(&["session", "create", "--app", "a", "--user", "u"]);
    let session = session.trim().to_string();
    let before = s.tables();
    let cases: Vec<(Vec<&str>, &str, [&str; 2], &str)> = vec![
        (
            vec!["task", "submit", "x"],
            "--priority",
            ["-1", "11"],
            "0 to 10",
        ),
        (
            vec!["task", "submit", "x"],
            "--timeout",
            ["-1", "0"],
            "1 to 4294967295",
        ),
        (
            vec!["task", "submit", "x"],
            "--max-retries",
            ["-1", "4294967296"],
            "0 to 4294967295",
        ),
        (vec!["task", "list"], "--limit", ["0", "1001"], "1 to 1000"),
        (
            vec!["task", "list"],
            "--min-priority",
            ["-1", "11"],
            "0 to 10",
        ),
        (
            vec!["task", "list"],
            "--max-priority",
            ["-1", "11"],
            "0 to 10",
        ),
        (
            vec!["task", "list"],
            "--offset",
            ["-1", "4294967296"],
            "0 to 4294967295",
        ),
        (
            vec!["task", "claim", "--worker", "w"],
            "--max",
            ["-1", "1001"],
            "1 to 1000",
        ),
        (vec!["status"], "--running", ["-1", "1001"], "0 to 1000"),
        (
            vec!["memory", "search", "ns"],
            "--limit",
            ["0", "1001"],
            "1 to 1000",
        ),
        (
            vec!["memory", "get", "ns", "k"],
            "--version",
            ["0", "-3"],
            "1 to 4294967295",
        ),
        (
            vec!["session", "events", &session],
            "--limit",
            ["0", "1001"],
            "1 to 1000",
        ),
    ];
    for (command, option, values, range) in cases {
        let mut messages = Vec::new();
        for value in values.into_iter().chain(["99999999999999999999999"]) {
            let mut args = command.clone();
            args.extend([option, value]);
            let stderr = s.fails(&args, 4);
            assert!(
                stderr.contains(&format!("{value} is outside {range}")),
                "{args:?}: {stderr}"
            );
            messages.push(stderr.replacen(&format!("'{value}'"), "'N'", 1).replacen(
                &format!(" {value} is"),
                " N is",
                1,
            ));
        }
        assert_eq!(messages[0], messages[1], "{command:?} {option}");
        let mut args = command.clone();
        args.extend([option, "seven"]);
        s.fails(&args, 2);
    }
    assert_eq!(s.tables(), before);
}

/// `--deadline -2h` was refused with a hint that suggested `-30m`, and absolute past deadlines
/// were accepted.
#[test]
fn past_deadlines_relative_or_absolute_exit_4_and_store_nothing() {
    let s = Sandbox::new();
    s.ok(&["init"]);
    let before = s.tables();
    for deadline in ["-2h", "+0s", "2020-01-01T00:00:00Z"] {
        let flag = format!("--deadline={deadline}");
        let stderr = s.fails(&["task", "submit", "x", &flag], 4);
        assert!(stderr.contains("deadline"), "{stderr}");
        assert!(stderr.contains("is not in the future"), "{stderr}");
    }
    s.fails(&["task", "submit", "x", "--deadline", "-2h"], 4);
    // Past the supported range: the same exit code, and the range named.
    for deadline in ["9999-12-31T23:59:59.9999Z", "+100000y"] {
        let flag = format!("--deadline={deadline}");
        let stderr = s.fails(&["task", "submit", "x", &flag], 4);
        assert!(stderr.contains("9999-12-31T23:59:59Z"), "{stderr}");
    }
    // List filters go through the same range.
    for filter in [
        "--submitted-after=9999-12-31T23:59:59.9999Z",
        "--submitted-before=-100000y",
    ] {
        let stderr = s.fails(&["task", "list", filter], 4);
        assert!(stderr.contains("9999-12-31T23:59:59Z"), "{stderr}");
    }
    let file = s.dir.path().join("late.jsonl");
    fs::write(
        &file,
        "{\"description\": \"late\", \"deadline\": \"2020-01-01T00:00:00Z\"}\n",
    )
    .unwrap();
    let stderr = s.fails(&["task", "import", file.to_str().unwrap()], 4);
    assert!(stderr.contains("is not in the future"), "{stderr}");
    assert_eq!(s.tables(), before);
    s.submit(&["on time", "--deadline", "+2h"]);
}

#[test]
fn blank_branches_agent_types_and_names_exit_4_and_store_nothing() {
    let s = Sandbox::new();
    s.ok(&["init"]);
    let before = s.tables();
    for (option, field) in [
        ("--branch", "feature_branch"),
        ("--agent-type", "agent_type"),
    ] {
        for blank in ["", "   "] {
            let stderr = s.fails(&["task", "submit", "x", option, blank], 4);
            assert!(stderr.contains(field), "{stderr}");
            assert!(stderr.contains("must not be empty"), "{stderr}");
        }
    }
    let stderr = s.fails(&["task", "claim", "--worker", "w", "--agent-type", ""], 4);
    assert!(stderr.contains("agent_type"), "{stderr}");
    let stderr = s.fails(&["agent", "register", "--type", " "], 4);
    assert!(stderr.contains("agent_type"), "{stderr}");
    let stderr = s.fails(
        &[
            "session",
            "create",
            "--app",
            "a",
            "--user",
            "u",
            "--project",
            "",
        ],
        4,
    );
    assert!(stderr.contains("project_id"), "{stderr}");
    let file = s.dir.path().join("blank.jsonl");
    fs::write(&file, "{\"description\": \"x\", \"branch\": \" \"}\n").unwrap();
    let stderr = s.fails(&["task", "import", file.to_str().unwrap()], 4);
    // Named by the file's own key, not the task's field.
    assert!(stderr.contains("invalid branch"), "{stderr}");
    assert_eq!(s.tables(), before);
}

/// `memory add --text @file` stored the text "@file".
#[test]
fn memory_text_at_file_stores_the_files_contents() {
    let s = Sandbox::new();
    let path = s.dir.path().join("note.txt");
    fs::write(&path, "line one\nline two\n").unwrap();
    let at = format!("@{}", path.display());
    s.ok(&["memory", "add", "notes", "n", &at, "--text"]);
    let stored = s.json(&["memory", "get", "notes", "n"]);
    assert_eq!(stored["value"], "line one\nline two\n");
    s.ok(&["memory", "update", "notes", "n", &at, "--text"]);
    assert_eq!(
        s.json(&["memory", "get", "notes", "n"])["value"],
        "line one\nline two\n"
    );
    let missing = format!("@{}", s.dir.path().join("absent.txt").display());
    let stderr = s.fails(&["memory", "add", "notes", "m", &missing, "--text"], 4);
    assert!(stderr.contains("cannot read value"), "{stderr}");
    s.ok(&["memory", "add", "notes", "plain", "just text", "--text"]);
    assert_eq!(
        s.json(&["memory", "get", "notes", "plain"])["value"],
        "just text"
    );
}

/// A negative value written after a space (`--wait -5s`) was taken by the command-line parser
/// for an unknown flag (exit 2), while `--wait=-5s` was out of range (exit 4).
#[test]
fn negative_durations_and_times_after_a_space_are_values_not_flags() {
    let s = Sandbox::new();
    s.ok(&["init"]);
    let stderr = s.fails(&["task", "claim", "--worker", "w", "--wait", "-5s"], 4);
    assert!(stderr.contains("below zero"), "{stderr}");
    let stderr = s.fails(&["worker", "--grace", "-1s", "--", "true"], 4);
    assert!(stderr.contains("below zero"), "{stderr}");
    assert_eq!(s.tasks(), Vec::<Value>::new());
    // A run-after time already past holds nothing back, however it is written.
    let id = s.submit(&["now", "--run-after", "-10m"]);
    let claimed = s.ok(&["task", "claim", "--worker", "w"]);
    assert!(claimed.contains(&id), "{claimed}");
}

/// `--wait 0` was refused while MCP's `wait_seconds: 0` answers at once.
#[test]
fn a_claim_that_waits_zero_answers_at_once() {
    let s = Sandbox::new();
    s.ok(&["init"]);
    assert_eq!(
        s.ok(&["task", "claim", "--worker", "w", "--wait", "0"]),
        "no task is ready\n"
    );
    let id = s.submit(&["ready"]);
    let claimed = s.ok(&["task", "claim", "--worker", "w", "--wait", "0s"]);
    assert!(claimed.contains(&id), "{claimed}");
}
