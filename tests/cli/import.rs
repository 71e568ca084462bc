//! `task import`: JSON Lines in, one atomic batch.

use std::io::Write;
use std::process::Stdio;

use crate::sandbox::Sandbox;

impl Sandbox {
    /// Runs `abathur [--json] task import -` with `input` on stdin; returns (exit code,
    /// stdout, stderr).
    pub fn import(&self, input: &str, json: bool) -> (i32, String, String) {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("abathur"));
        cmd.current_dir(self.dir.path())
            .env_remove("ABATHUR_DB")
            .env_remove("RUST_LOG")
            .arg("--db")
            .arg(self.db_path());
        if json {
            cmd.arg("--json");
        }
        let mut child = cmd
            .args(["task", "import", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }
}

const DAG: &str = r#"{"key": "fetch", "description": "Fetch the sources", "agent_type": "git"}
{"key": "test", "description": "Test", "depends_on": ["build", "fetch"], "priority": 8, "max_retries": 1}

{"key": "build", "description": "Build\nwith details", "depends_on": ["fetch"], "input": {"target": "x86"}}
"#;

#[test]
fn a_file_of_tasks_goes_in_with_references_by_key_in_any_order() {
    let s = Sandbox::new();
    let (code, stdout, stderr) = s.import(DAG, true);
    assert_eq!(code, 0, "{stderr}");
    let imported: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let by_key = |key: &str| {
        imported
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["key"] == key)
            .unwrap_or_else(|| panic!("{key} missing from {imported}"))
            .clone()
    };
    assert_eq!(by_key("fetch")["line"], 1);
    assert_eq!(by_key("build")["line"], 4);
    assert_eq!(by_key("fetch")["status"], "ready");
    assert_eq!(by_key("test")["status"], "blocked");

    let build_id = by_key("build")["id"].as_str().unwrap().to_string();
    let build = s.json(&["task", "show", &build_id]);
    assert_eq!(build["summary"], "Build");
    assert_eq!(build["input_data"]["target"], "x86");
    assert_eq!(build["dependencies"][0], by_key("fetch")["id"]);
    let test = s.json(&["task", "show", by_key("test")["id"].as_str().unwrap()]);
    assert_eq!(test["priority"], 8);
    assert_eq!(test["max_retries"], 1);
    assert_eq!(test["dependency_depth"], 2);
}

#[test]
fn a_line_may_depend_on_a_stored_task_by_id() {
    let s = Sandbox::new();
    let stored = s.submit(&["already here"]);
    let line = format!(r#"{{"description": "after it", "depends_on": ["{stored}"]}}"#);
    let (code, stdout, stderr) = s.import(&line, false);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("imported 1 tasks\n"), "{stdout}");
}

#[test]
fn any_bad_line_names_its_line_and_nothing_is_imported() {
    let s = Sandbox::new();
    let cases = [
        ("{\"description\": \"ok\"}\nnot json\n", 4, "line 2"),
        ("{\"description\": \"x\", \"prio\": 1}", 4, "unknown field"),
        ("{\"summary\": \"no description\"}", 4, "description"),
        ("{\"description\": \"x\", \"priority\": 11}", 4, "priority"),
        (
            "{\"key\": \"a\", \"description\": \"A\"}\n{\"key\": \"a\", \"description\": \"B\"}",
            4,
            "already used on line 1",
        ),
        (
            "{\"description\": \"x\", \"depends_on\": [\"nowhere\"]}",
            4,
            "neither a key in this file nor an id",
        ),
        (
            "{\"key\": \"a\", \"description\": \"A\", \"depends_on\": [\"b\"]}\n{\"key\": \"b\", \"description\": \"B\", \"depends_on\": [\"a\"]}",
            4,
            "cycle",
        ),
        (
            "{\"description\": \"x\", \"depends_on\": [\"67e55044-10b1-426f-9247-bb680e5fe0c8\"]}",
            3,
            "does not exist",
        ),
        ("\n\n", 4, "no tasks"),
    ];
    for (input, code, expected) in cases {
        let (got, stdout, stderr) = s.import(input, false);
        assert_eq!(got, code, "{input:?}: {stderr}");
        assert!(stderr.contains(expected), "{input:?}: {stderr}");
        assert!(stdout.is_empty(), "{input:?}: {stdout}");
    }
    assert!(s.tasks().is_empty());
}

#[test]
fn a_file_that_cannot_be_read_is_invalid_input() {
    let s = Sandbox::new();
    let stderr = s.fails(&["task", "import", "no-such-file.jsonl"], 4);
    assert!(stderr.contains("no-such-file.jsonl"), "{stderr}");
}

#[test]
fn lines_may_name_stored_tasks_and_sessions_by_prefix() {
    let s = Sandbox::new();
    let stored = s.submit(&["stored"]);
    let session = s.ok(&["session", "create", "--app", "a", "--user", "u"]);
    let line = format!(
        r#"{{"description": "after", "depends_on": ["{}"], "session": "{}"}}"#,
        &stored[..8],
        &session.trim()[..8]
    );
    let (code, stdout, stderr) = s.import(&line, true);
    assert_eq!(code, 0, "{stderr}");
    let imported: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let task = s.json(&["task", "show", imported[0]["id"].as_str().unwrap()]);
    assert_eq!(task["dependencies"], serde_json::json!([stored]));
    assert_eq!(task["session_id"], session.trim());
}

#[test]
fn errors_name_lines_and_keys_not_ids_that_were_never_stored() {
    let s = Sandbox::new();
    let (code, _, stderr) = s.import(
        "{\"key\": \"a\", \"description\": \"A\", \"depends_on\": [\"b\"]}\n{\"key\": \"b\", \"description\": \"B\", \"depends_on\": [\"a\"]}",
        false,
    );
    assert_eq!(code, 4);
    assert!(
        stderr.contains("line 1 (a) -> line 2 (b) -> line 1 (a)"),
        "{stderr}"
    );
}

/// Whether `text` holds a UUID: a message about a file's lines must name its keys instead.
fn holds_a_uuid(text: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
        .any(|word| uuid::Uuid::parse_str(word).is_ok())
}

#[test]
fn every_bad_field_is_named_by_the_files_key_on_its_line_never_by_an_internal_name_or_id() {
    let s = Sandbox::new();
    let deep = format!("{}{}", "[".repeat(101), "]".repeat(101));
    let cases = [
        // The summary is made from the description: a NUL there is the description's fault.
        (
            r#"{"description": "a\u0000b"}"#.to_string(),
            "line 1: invalid description: must not contain a NUL",
        ),
        (
            r#"{"description": "  "}"#.to_string(),
            "line 1: invalid description: must not be empty",
        ),
        (
            r#"{"description": "x", "summary": "a\u0000b"}"#.to_string(),
            "line 1: invalid summary",
        ),
        (
            r#"{"description": 5}"#.to_string(),
            "line 1: description: invalid type",
        ),
        (
            r#"{"description": "x", "priority": 300}"#.to_string(),
            "line 1: priority: invalid value",
        ),
        (
            r#"{"description": "x", "priority": 11}"#.to_string(),
            "line 1: invalid priority",
        ),
        (
            r#"{"description": "x", "deadline": "soon"}"#.to_string(),
            "line 1: deadline:",
        ),
        (
            r#"{"description": "x", "depends_on": "a"}"#.to_string(),
            "line 1: depends_on: invalid type",
        ),
        (
            format!(r#"{{"description": "x", "input": {deep}}}"#),
            "line 1: invalid input: nests",
        ),
        (
            r#"{"description": "x", "timeout_seconds": 0}"#.to_string(),
            "line 1: invalid timeout_seconds",
        ),
        (
            r#"{"description": "x", "branch": "a\u0000b"}"#.to_string(),
            "line 1: invalid branch",
        ),
        (
            r#"{"key": "a", "description": "x", "depends_on": ["a"]}"#.to_string(),
            "line 1: invalid depends_on: a task cannot depend on itself",
        ),
        (
            r#"{"key": "a", "description": "x", "parent": "a"}"#.to_string(),
            "line 1: invalid parent",
        ),
        ("[1, 2]".to_string(), "line 1: is not a JSON object"),
        (
            "{\"description\": \"x\"}\n{\"description\": ".to_string(),
            "line 2: is not JSON",
        ),
    ];
    for (input, expected) in cases {
        let (code, stdout, stderr) = s.import(&input, false);
        assert_eq!(code, 4, "{input}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{input}:\n  wanted {expected}\n  got {stderr}"
        );
        assert!(!holds_a_uuid(&stderr), "{input}: {stderr}");
        assert!(!stderr.contains("at line 1 column"), "{input}: {stderr}");
        assert!(stdout.is_empty());
    }
    assert!(s.tasks().is_empty());
}

#[test]
fn a_dependency_listed_twice_is_named_by_its_key_or_by_the_two_names_it_goes_by() {
    let s = Sandbox::new();
    let stored = s.submit(&["stored"]);
    let twice = "{\"key\": \"fetch\", \"description\": \"F\"}\n\
                 {\"key\": \"build\", \"description\": \"B\", \"depends_on\": [\"fetch\", \"fetch\"]}";
    let (code, _, stderr) = s.import(twice, false);
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains(r#"line 2: depends_on: "fetch" is listed more than once"#),
        "{stderr}"
    );
    let two_names = format!(
        r#"{{"description": "B", "depends_on": ["{stored}", "{}"]}}"#,
        &stored[..8]
    );
    let (code, _, stderr) = s.import(&two_names, false);
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("name the same task"), "{stderr}");
    assert_eq!(s.tasks().len(), 1, "only the task stored before");
}

#[test]
fn a_byte_order_mark_at_the_start_of_the_file_is_skipped() {
    let s = Sandbox::new();
    let input = "\u{FEFF}{\"key\": \"a\", \"description\": \"first\"}\r\n{\"description\": \"second\", \"depends_on\": [\"a\"]}\r\n";
    let (code, stdout, stderr) = s.import(input, true);
    assert_eq!(code, 0, "{stderr}");
    let imported: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(imported.as_array().map(Vec::len), Some(2));
    assert_eq!(imported[0]["key"], "a");
    let summaries: Vec<String> = s
        .tasks()
        .iter()
        .map(|t| t["summary"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(summaries.contains(&"first".to_string()), "{summaries:?}");
}

#[test]
fn files_concatenated_with_their_byte_order_marks_go_in_whole() {
    // `cat a.jsonl b.jsonl`, each written on Windows: the second mark opens a later line.
    let s = Sandbox::new();
    let input = "\u{FEFF}{\"key\": \"a\", \"description\": \"first\"}\r\n\u{FEFF}{\"description\": \"second\", \"depends_on\": [\"a\"]}\r\n";
    let (code, stdout, stderr) = s.import(input, true);
    assert_eq!(code, 0, "{stderr}");
    let imported: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(imported.as_array().map(Vec::len), Some(2));
    assert_eq!(imported[1]["line"], 2);
    let mut summaries: Vec<String> = s
        .tasks()
        .iter()
        .map(|t| t["summary"].as_str().unwrap_or_default().to_string())
        .collect();
    summaries.sort();
    assert_eq!(summaries, ["first", "second"]);
}

#[test]
fn a_directory_given_as_the_file_is_named_and_nothing_is_imported() {
    let s = Sandbox::new();
    std::fs::create_dir(s.dir.path().join("tasks")).unwrap();
    let stderr = s.fails(&["task", "import", "tasks"], 4);
    assert!(stderr.contains("cannot read tasks"), "{stderr}");
    assert!(!stderr.contains("line 1"), "{stderr}");
    assert!(s.tasks().is_empty());
}

/// Writes an import's input to its stdin.
type Feed = Box<dyn FnOnce(&mut dyn Write) + Send>;

/// Where a limited import reads from.
enum Source<'a> {
    File(&'a std::path::Path),
    Stdin(Feed),
}

impl Sandbox {
    /// Runs `abathur task import` with its address space limited to `memory` bytes (as
    /// `prlimit --as` would), and `RUST_BACKTRACE=1`, under which Rust's own reports of a panic
    /// or an allocation failure print a stack trace. Returns (how it ended, stdout, stderr).
    fn import_limited(
        &self,
        source: Source<'_>,
        memory: u64,
    ) -> (std::process::ExitStatus, String, String) {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("abathur"));
        cmd.current_dir(self.dir.path())
            .env_remove("ABATHUR_DB")
            .env_remove("RUST_LOG")
            .env("RUST_BACKTRACE", "1")
            .arg("--db")
            .arg(self.db_path())
            .args(["task", "import"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: the closure runs in the child between fork and exec, and calls only
        // setrlimit, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: memory,
                    rlim_max: memory,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = match source {
            Source::File(path) => cmd.arg(path).stdin(Stdio::null()).output().unwrap(),
            Source::Stdin(write) => {
                let mut child = cmd.arg("-").stdin(Stdio::piped()).spawn().unwrap();
                let mut stdin = child.stdin.take().unwrap();
                // The import may stop reading before the end: a broken pipe is expected.
                let writer = std::thread::spawn(move || write(&mut stdin));
                let out = child.wait_with_output().unwrap();
                writer.join().unwrap();
                out
            }
        };
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }
}

/// Room for the command itself and the limit's worth of input, not for much more.
const TIGHT_MEMORY: u64 = 3 * abathur::cli::MAX_IMPORT_BYTES + 64 * 1024 * 1024;

#[track_caller]
fn assert_plain_error(stderr: &str) {
    assert!(stderr.starts_with("error: "), "{stderr}");
    for trace in [
        "panicked",
        "stack backtrace",
        "RUST_BACKTRACE",
        "memory allocation of",
    ] {
        assert!(!stderr.contains(trace), "{stderr}");
    }
}

#[test]
fn input_over_the_size_limit_is_refused_cleanly_under_a_memory_limit_and_stores_nothing() {
    use abathur::cli::MAX_IMPORT_BYTES;
    let s = Sandbox::new();
    s.ok(&["init"]);
    let limit = abathur_core::limits::bytes(MAX_IMPORT_BYTES as usize);

    // A file: refused by its size, before a byte is read.
    let path = s.dir.path().join("huge.jsonl");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(MAX_IMPORT_BYTES + 1).unwrap();
    let (status, stdout, stderr) = s.import_limited(Source::File(&path), TIGHT_MEMORY);
    assert_eq!(status.code(), Some(4), "{stderr}");
    assert_plain_error(&stderr);
    assert!(
        stderr.contains(&limit) && stderr.contains("huge.jsonl"),
        "{stderr}"
    );
    assert!(stdout.is_empty());

    // Stdin, in valid lines: refused as the limit is passed.
    let line = format!("{{\"description\": \"{}\"}}\n", "d".repeat(200 * 1024));
    let lines = (MAX_IMPORT_BYTES as usize / line.len()) + 2;
    let (status, stdout, stderr) = s.import_limited(
        Source::Stdin(Box::new(move |stdin| {
            for _ in 0..lines {
                if stdin.write_all(line.as_bytes()).is_err() {
                    return;
                }
            }
        })),
        TIGHT_MEMORY,
    );
    assert_eq!(status.code(), Some(4), "{stderr}");
    assert_plain_error(&stderr);
    assert!(stderr.contains(&limit), "{stderr}");
    assert!(stdout.is_empty());
    assert!(s.tasks().is_empty());
}

#[test]
fn more_tasks_than_one_import_takes_are_refused_naming_the_limit() {
    use abathur::cli::MAX_IMPORT_TASKS;
    let s = Sandbox::new();
    s.ok(&["init"]);
    let (status, _, stderr) = s.import_limited(
        Source::Stdin(Box::new(|stdin| {
            let mut text = String::new();
            for _ in 0..=MAX_IMPORT_TASKS {
                text.push_str("{\"description\": \"t\"}\n");
            }
            let _ = stdin.write_all(text.as_bytes());
        })),
        TIGHT_MEMORY,
    );
    assert_eq!(status.code(), Some(4), "{stderr}");
    assert_plain_error(&stderr);
    assert!(
        stderr.contains(&format!("line {}", MAX_IMPORT_TASKS + 1))
            && stderr.contains(&format!("more than {MAX_IMPORT_TASKS} tasks")),
        "{stderr}"
    );
    assert!(s.tasks().is_empty());
}

/// Out of memory is the one failure that is not a plain `error:` line: stable Rust has no hook
/// for a failed allocation short of a custom global allocator, which abathur's own code does
/// without, so Rust's handler reports it and aborts. The import's transaction never commits.
#[test]
fn an_import_that_runs_out_of_memory_is_aborted_by_sigabrt_with_rusts_one_line_message_and_stores_nothing(
) {
    use abathur::cli::MAX_IMPORT_TASKS;
    let s = Sandbox::new();
    s.ok(&["init"]);
    let path = s.dir.path().join("many.jsonl");
    let mut text = String::new();
    for i in 0..MAX_IMPORT_TASKS {
        let depends = if i % 50 == 0 {
            String::new()
        } else {
            format!(r#", "depends_on": ["k{}"]"#, i - 1)
        };
        text.push_str(&format!(
            "{{\"key\": \"k{i}\", \"description\": \"task {i}\"{depends}}}\n"
        ));
    }
    std::fs::write(&path, text).unwrap();
    // Within the size limits, but far more than this memory holds.
    let (status, stdout, stderr) = s.import_limited(Source::File(&path), 128 * 1024 * 1024);
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGABRT), "{status}: {stderr}");
    }
    // Rust's one line opens stderr. (Under `RUST_BACKTRACE`, as here, Rust then tries to
    // print a stack trace, which needs memory too.)
    let first = stderr.lines().next().unwrap_or_default();
    let size = first
        .strip_prefix("memory allocation of ")
        .and_then(|rest| rest.strip_suffix(" bytes failed"));
    assert!(size.is_some_and(|n| n.parse::<u64>().is_ok()), "{stderr}");
    assert!(stdout.is_empty());
    assert!(s.tasks().is_empty());
}
