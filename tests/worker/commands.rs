//! What a command gets and what becomes of its output, its exit and its running time; how a
//! worker waits for work.

use std::time::{Duration, Instant};

use abathur_core::limits::{self, MAX_ERROR_BYTES, MAX_TASK_JSON_BYTES};
use abathur_core::models::MAX_JSON_DEPTH;
use serde_json::{json, Value};

use crate::sandbox::{group_alive, process_alive, wait_until, Sandbox};

#[test]
fn the_command_gets_the_task_on_stdin_and_its_ids_and_database_in_the_environment() {
    let sb = Sandbox::new();
    let task = sb.submit(&["with input", "--input", r#"{"n": 7}"#]);
    let mut worker = sb.worker(
        "w1",
        &["--once"],
        r#"cat > stdin.json; env | grep -E '^ABATHUR_(TASK_ID|ATTEMPT_ID|DB)=' | sort > env.txt; echo '{"ok": true}'"#,
    );
    worker.exits_cleanly_within(Duration::from_secs(10));

    let stdin: Value = serde_json::from_str(&sb.read("stdin.json")).expect("stdin is JSON");
    assert_eq!(stdin["id"], task.as_str());
    assert_eq!(stdin["summary"], "with input");
    assert_eq!(stdin["input_data"], json!({"n": 7}));
    assert_eq!(stdin["status"], "running");

    let history = sb.history(&task);
    let attempt = history[1]["attempt_id"]
        .as_str()
        .expect("the claim's attempt");
    let db = std::fs::canonicalize(sb.db_path()).expect("the database exists");
    assert_eq!(
        sb.read("env.txt"),
        format!(
            "ABATHUR_ATTEMPT_ID={attempt}\nABATHUR_DB={}\nABATHUR_TASK_ID={task}\n",
            db.display()
        )
    );
    assert_eq!(sb.task(&task)["result_data"], json!({"ok": true}));
}

#[test]
fn stdout_that_is_not_json_becomes_text_and_empty_stdout_no_result() {
    let sb = Sandbox::new();
    let text = sb.submit(&["text"]);
    let empty = sb.submit(&["quiet"]);
    let mut worker = sb.worker(
        "w1",
        &["--once"],
        r#"case "$(cat)" in *'"summary":"quiet"'*) ;; *) printf 'hello\nworld\n' ;; esac"#,
    );
    worker.exits_cleanly_within(Duration::from_secs(10));
    assert_eq!(
        sb.task(&text)["result_data"],
        json!({"stdout": "hello\nworld\n"})
    );
    let quiet = sb.task(&empty);
    assert_eq!(quiet["status"], "completed");
    assert_eq!(quiet["result_data"], Value::Null);
}

#[test]
fn a_failing_command_fails_the_task_with_the_bounded_end_of_its_stderr() {
    let sb = Sandbox::new();
    let task = sb.submit(&["noisy", "--max-retries", "0"]);
    let mut worker = sb.worker(
        "w1",
        &["--once"],
        "i=0; while [ $i -lt 2000 ]; do echo \"line $i of noise\" >&2; i=$((i+1)); done; \
         echo 'the real reason' >&2; exit 3",
    );
    worker.exits_cleanly_within(Duration::from_secs(20));
    let stored = sb.task(&task);
    assert_eq!(stored["status"], "failed");
    let error = stored["error_message"].as_str().expect("an error message");
    assert!(
        error.starts_with("the command exited with status 3"),
        "{error}"
    );
    assert!(error.ends_with("the real reason"), "{error}");
    assert!(
        !error.contains("line 0 of noise"),
        "the start of stderr was kept"
    );
    assert!(error.len() <= MAX_ERROR_BYTES, "{} bytes kept", error.len());
}

#[test]
fn a_command_past_its_timeout_is_killed_with_its_children_and_the_task_failed() {
    let sb = Sandbox::new();
    let task = sb.submit(&["stuck", "--timeout", "1", "--max-retries", "0"]);
    let started = Instant::now();
    let mut worker = sb.worker(
        "w1",
        &["--once"],
        "echo $$ > pgid; echo 'stuck on a lock' >&2; sleep 30",
    );
    worker.exits_cleanly_within(Duration::from_secs(10));
    assert!(started.elapsed() < Duration::from_secs(8));
    let pgid: i32 = sb.read("pgid").trim().parse().expect("a pgid");
    wait_until(
        Duration::from_secs(3),
        "the command's `sleep` to end",
        || !group_alive(pgid),
    );
    let stored = sb.task(&task);
    assert_eq!(stored["status"], "failed");
    let error = stored["error_message"].as_str().unwrap_or_default();
    assert!(
        error.contains("ran past the task's timeout of 1 s and was killed")
            && error.contains("stuck on a lock"),
        "{error}"
    );
}

#[test]
fn once_runs_what_it_can_claim_at_most_concurrency_at_a_time_then_exits() {
    let sb = Sandbox::new();
    let first: Vec<String> = (0..4).map(|i| sb.submit(&[&format!("t{i}")])).collect();
    let mut deps = vec!["last"];
    for id in &first {
        deps.extend(["--depends-on", id.as_str()]);
    }
    let last = sb.submit(&deps);
    // Each run counts the runs in progress (the files in `running/`) while it lasts.
    let script = r#"mkdir -p running; touch running/$ABATHUR_TASK_ID
ls running | wc -l >> in_flight.log
sleep 0.5
rm running/$ABATHUR_TASK_ID"#;
    let mut worker = sb.worker("w1", &["--once", "--concurrency", "2"], script);
    worker.exits_cleanly_within(Duration::from_secs(20));
    for id in first.iter().chain([&last]) {
        assert_eq!(sb.status(id), "completed");
    }
    let in_flight: Vec<u32> = sb
        .read("in_flight.log")
        .lines()
        .map(|l| l.trim().parse().expect("a count"))
        .collect();
    assert_eq!(in_flight.len(), 5);
    assert_eq!(in_flight.iter().max(), Some(&2), "{in_flight:?}");
}

#[test]
fn once_on_an_empty_queue_exits_at_once() {
    let sb = Sandbox::new();
    let mut worker = sb.worker("w1", &["--once"], "exit 1");
    worker.exits_cleanly_within(Duration::from_secs(5));
}

#[test]
fn an_idle_worker_does_not_spin_and_wakes_promptly_when_work_arrives() {
    let sb = Sandbox::new();
    let mut worker = sb.worker("w1", &[], "touch ran.$ABATHUR_TASK_ID");
    wait_until(Duration::from_secs(10), "the worker to start", || {
        worker.log().contains("waiting for tasks")
    });
    std::thread::sleep(Duration::from_millis(500));

    // Idle for two seconds: a busy loop would burn ~200 ticks (at 100 Hz); a poll of a
    // counter every 50 ms and a claim a second, a few.
    let before = worker.cpu_ticks();
    std::thread::sleep(Duration::from_secs(2));
    let idle_ticks = worker.cpu_ticks() - before;
    assert!(
        idle_ticks < 30,
        "an idle worker used {idle_ticks} ticks in 2 s"
    );

    let mut latencies = Vec::new();
    for i in 0..3 {
        // From before `task submit` starts: the figure includes that process's own run.
        let submitted = Instant::now();
        let id = sb.submit(&[&format!("wake {i}")]);
        let marker = sb.path(&format!("ran.{id}"));
        wait_until(Duration::from_secs(5), "the task to start", || {
            marker.exists()
        });
        latencies.push(submitted.elapsed());
        wait_until(Duration::from_secs(5), "the task to complete", || {
            sb.status(&id) == "completed"
        });
        // Idle again before the next one, past the once-a-second recheck.
        std::thread::sleep(Duration::from_millis(1300));
    }
    eprintln!("idle CPU: {idle_ticks} ticks in 2 s; wake-up latencies: {latencies:?}");
    for latency in &latencies {
        assert!(*latency < Duration::from_secs(2), "{latencies:?}");
    }
    worker.signal(libc::SIGTERM);
    worker.exits_cleanly_within(Duration::from_secs(5));
}

/// Prints `depth` nested arrays, the depth read from the task's input.
const NESTED: &str = r#"d=$(cat | sed -n 's/.*"depth":\([0-9]*\).*/\1/p')
head -c "$d" /dev/zero | tr '\0' '['; head -c "$d" /dev/zero | tr '\0' ']'"#;

#[test]
fn json_nested_too_deep_to_store_is_stored_as_text_whatever_its_depth() {
    let sb = Sandbox::new();
    let depths = [MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 127, 128, 10_000];
    let tasks: Vec<(usize, String)> = depths
        .iter()
        .map(|&depth| {
            let input = format!(r#"{{"depth": {depth}}}"#);
            let id = sb.submit(&[
                &format!("depth {depth}"),
                "--input",
                &input,
                "--max-retries",
                "0",
            ]);
            (depth, id)
        })
        .collect();
    let mut worker = sb.worker("w1", &["--once"], NESTED);
    worker.exits_cleanly_within(Duration::from_secs(30));
    for (depth, id) in tasks {
        let stored = sb.task(&id);
        assert_eq!(stored["status"], "completed", "depth {depth}: {stored}");
        let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        if depth <= MAX_JSON_DEPTH {
            let result = serde_json::to_string(&stored["result_data"]).expect("JSON");
            assert_eq!(result, text, "depth {depth}: stored as JSON");
        } else {
            assert_eq!(
                stored["result_data"],
                json!({ "stdout": text }),
                "depth {depth}"
            );
        }
    }
}

#[test]
fn a_result_over_the_limit_fails_the_attempt_naming_the_limit_and_a_result_at_it_completes() {
    let sb = Sandbox::new();
    // Text is stored as {"stdout":"..."}: 13 bytes around the text itself.
    let fits = sb.submit(&[
        "fits",
        "--input",
        &format!(r#"{{"n": {}}}"#, MAX_TASK_JSON_BYTES - 13),
    ]);
    let over = sb.submit(&[
        "over",
        "--input",
        &format!(r#"{{"n": {}}}"#, MAX_TASK_JSON_BYTES - 12),
        "--max-retries",
        "0",
    ]);
    let script = r#"n=$(cat | sed -n 's/.*"n":\([0-9]*\).*/\1/p')
echo "about to print $n bytes" >&2
head -c "$n" /dev/zero | tr '\0' a"#;
    let mut worker = sb.worker("w1", &["--once"], script);
    worker.exits_cleanly_within(Duration::from_secs(30));

    let stored = sb.task(&fits);
    assert_eq!(stored["status"], "completed", "{}", stored["error_message"]);
    let kept = stored["result_data"]["stdout"]
        .as_str()
        .unwrap_or_default()
        .len();
    assert_eq!(kept, MAX_TASK_JSON_BYTES - 13);

    let stored = sb.task(&over);
    assert_eq!(stored["status"], "failed");
    assert_eq!(stored["result_data"], Value::Null);
    let error = stored["error_message"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("the command exited with status 0, but its result is over the limit")
            && error.contains(&limits::bytes(MAX_TASK_JSON_BYTES))
            && error.ends_with(&format!(
                "about to print {} bytes",
                MAX_TASK_JSON_BYTES - 12
            )),
        "{error}"
    );
}

#[test]
fn a_background_process_left_holding_stdout_is_ended_with_its_command_and_does_not_hold_the_task() {
    let sb = Sandbox::new();
    let task = sb.submit(&["leaves a job behind"]);
    // `sleep` inherits the command's stdout and would keep the pipe open for 1000 s.
    let mut worker = sb.worker(
        "w1",
        &["--once"],
        r#"sleep 1000 & echo $! > background.pid; echo '{"done": true}'"#,
    );
    worker.exits_cleanly_within(Duration::from_secs(30));
    let stored = sb.task(&task);
    assert_eq!(stored["status"], "completed");
    assert_eq!(stored["result_data"], json!({"done": true}));
    let pid: i32 = sb.read("background.pid").trim().parse().expect("a pid");
    wait_until(
        Duration::from_secs(10),
        "the background sleep to end",
        || !process_alive(pid),
    );
}

/// Programs that cannot be started, each with the system's own error for it (as `execvp`
/// gives it), made in the sandbox.
fn unstartable(sb: &Sandbox) -> Vec<(String, &'static str)> {
    use std::os::unix::fs::PermissionsExt;
    let plain = sb.path("not-executable");
    std::fs::write(&plain, "#!/bin/sh\necho hi\n").expect("a file");
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).expect("0644");
    std::fs::create_dir(sb.path("folder")).expect("a folder");
    // Executable, but its interpreter is missing: only the exec itself finds that out.
    let interpreter = sb.path("bad-interpreter");
    std::fs::write(&interpreter, "#!/nonexistent/interpreter\n").expect("a file");
    std::fs::set_permissions(&interpreter, std::fs::Permissions::from_mode(0o755)).expect("0755");
    vec![
        (
            "./bad-interpreter".to_string(),
            "No such file or directory (os error 2)",
        ),
        (
            "/nonexistent/abathur-test-program".to_string(),
            "No such file or directory (os error 2)",
        ),
        (
            "abathur-test-program-on-no-path".to_string(),
            "No such file or directory (os error 2)",
        ),
        (
            "./not-executable".to_string(),
            "Permission denied (os error 13)",
        ),
        ("./folder".to_string(), "Permission denied (os error 13)"),
    ]
}

#[test]
fn a_program_that_cannot_start_is_reported_with_the_systems_own_error_not_the_launchers() {
    let sb = Sandbox::new();
    let task = sb.submit(&["needs a real command", "--max-retries", "0"]);
    for (program, error) in unstartable(&sb) {
        let stderr = sb.fails(&["worker", "--once", "--", &program], 4);
        assert!(
            stderr.contains(&format!(
                "error: cannot start the command {program:?}: {error}"
            )),
            "{program}: {stderr}"
        );
        assert!(!stderr.contains("setpriv"), "{program}: {stderr}");
        let stored = sb.task(&task);
        assert_eq!(stored["status"], "ready", "{program}");
        assert_eq!(stored["retry_count"], 0, "{program}");
    }
}

#[test]
fn without_setpriv_the_worker_warns_once_and_runs_commands_as_before() {
    let sb = Sandbox::new();
    let first = sb.submit(&["first"]);
    let second = sb.submit(&["second"]);
    // No PATH that holds `setpriv`: the command is named by its path.
    let output = sb
        .abathur()
        .env("PATH", sb.path("no-such-folder"))
        .args(["worker", "--once", "--", "/bin/sh", "-c"])
        .arg(r#"read -r input; echo "{\"task\": \"$ABATHUR_TASK_ID\", \"db\": \"$ABATHUR_DB\"}""#)
        .output()
        .expect("the worker runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("no `setpriv`").count(),
        1,
        "one warning, at start: {stderr}"
    );
    assert!(stderr.contains("parent-death signal"), "{stderr}");
    let db = std::fs::canonicalize(sb.db_path()).expect("the database exists");
    for task in [&first, &second] {
        let stored = sb.task(task);
        assert_eq!(stored["status"], "completed", "{stderr}");
        assert_eq!(stored["result_data"]["task"], task.as_str());
        assert_eq!(
            stored["result_data"]["db"],
            db.to_str().expect("a UTF-8 path")
        );
    }

    // A program that cannot start is reported in the same words as with `setpriv`.
    let task = sb.submit(&["needs a real command", "--max-retries", "0"]);
    for (program, error) in unstartable(&sb) {
        let output = sb
            .abathur()
            .env("PATH", sb.path("no-such-folder"))
            .args(["worker", "--once", "--", &program])
            .output()
            .expect("the worker runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(4), "{program}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "error: cannot start the command {program:?}: {error}"
            )),
            "{program}: {stderr}"
        );
        assert_eq!(sb.status(&task), "ready", "{program}");
    }
}
