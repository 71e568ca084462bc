//! After a command exits, with no other process holding the database, the `.db` file alone
//! holds everything: SQLite merged the WAL into it when the last connection closed. A user
//! who copies only the `.db` file (a backup, a move) gets all of it. Regression tests for issue
//! 10, item 14: the worker left everything in `abathur.db-wal`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::mounts::names;
use crate::sandbox::Sandbox;

/// Copies only `<dir>/abathur.db` to a fresh folder and returns the tasks the copy holds.
#[track_caller]
fn tasks_in_a_copy_of_the_db_file_alone(s: &Sandbox) -> Vec<serde_json::Value> {
    assert_eq!(
        names(s.dir.path()),
        vec!["abathur.db".to_string()],
        "no -wal or -shm file is left beside the database"
    );
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("copy.db");
    std::fs::copy(s.db_path(), &copy).unwrap();
    let output = s
        .bare()
        .arg("--db")
        .arg(&copy)
        .args(["--json", "task", "list"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&output.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn after_init_and_a_submit_the_db_file_alone_holds_the_task() {
    let s = Sandbox::new();
    s.ok(&["init"]);
    let id = s.submit(&["kept in the file"]);
    let tasks = tasks_in_a_copy_of_the_db_file_alone(&s);
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["id"], id.as_str());
}

#[test]
fn a_command_that_creates_the_database_leaves_it_whole_in_the_db_file_every_time() {
    // A connection that went back to the pool while it closed used to escape the close, one
    // run in four: repeat, so that the race would show.
    for _ in 0..20 {
        let s = Sandbox::new();
        let id = s.submit(&["kept in the file"]);
        let tasks = tasks_in_a_copy_of_the_db_file_alone(&s);
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0]["id"], id.as_str());
    }
}

#[test]
fn after_a_reading_command_or_a_failed_one_no_wal_file_is_left() {
    let s = Sandbox::new();
    s.submit(&["kept"]);
    s.ok(&["task", "list"]);
    s.fails(&["task", "show", "67e55044-10b1-426f-9247-bb680e5fe0c8"], 3);
    assert_eq!(tasks_in_a_copy_of_the_db_file_alone(&s).len(), 1);
}

#[test]
fn after_worker_once_the_db_file_alone_holds_the_results() {
    let s = Sandbox::new();
    s.submit(&["run me"]);
    let output = s
        .abathur()
        .args(["worker", "--once", "--", "echo", "done"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tasks = tasks_in_a_copy_of_the_db_file_alone(&s);
    assert_eq!(tasks[0]["status"], "completed");
}

/// Waits for a line of `lines` that contains `text`, or panics after a timeout that only
/// catches hangs.
#[track_caller]
fn wait_for(lines: &mpsc::Receiver<String>, text: &str) {
    loop {
        match lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.contains(text) => return,
            Ok(_) => {}
            Err(e) => panic!("the worker never logged {text:?}: {e}"),
        }
    }
}

#[test]
fn after_a_worker_stops_on_sigterm_the_db_file_alone_holds_the_results() {
    let s = Sandbox::new();
    s.ok(&["init"]);
    let mut worker = Command::new(env!("CARGO_BIN_EXE_abathur"))
        .arg("--db")
        .arg(s.db_path())
        .args(["worker", "--", "echo", "done"])
        .current_dir(s.dir.path())
        .env("RUST_LOG", "abathur::worker=info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = worker.stderr.take().unwrap();
    let (send, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            if send.send(line.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    wait_for(&lines, "waiting for tasks");
    s.submit(&["run me"]);
    wait_for(&lines, "completed");
    // SAFETY: kill(2) on the id of a child this test started and has not yet waited for.
    let sent = unsafe { libc::kill(worker.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0);
    let status = worker.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let tasks = tasks_in_a_copy_of_the_db_file_alone(&s);
    assert_eq!(tasks[0]["status"], "completed");
}

#[test]
fn after_the_mcp_server_ends_the_db_file_alone_holds_what_it_wrote() {
    use std::io::Write;
    let s = Sandbox::new();
    let mut server = Command::new(env!("CARGO_BIN_EXE_abathur"))
        .arg("--db")
        .arg(s.db_path())
        .arg("mcp")
        .current_dir(s.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = server.stdin.take().unwrap();
    let mut stdout = BufReader::new(server.stdout.take().unwrap());
    let mut send = |message: serde_json::Value| {
        writeln!(stdin, "{message}").unwrap();
        stdin.flush().unwrap();
    };
    send(
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-03-26", "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"}}}),
    );
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    send(serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    send(
        serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "task_enqueue", "arguments": {"description": "from an agent"}}}),
    );
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert!(
        line.contains("task_id") || line.contains("\"id\""),
        "{line}"
    );
    drop(stdin);
    let status = server.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let tasks = tasks_in_a_copy_of_the_db_file_alone(&s);
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["summary"], "from an agent");
}
