//! How the server starts and stops: over raw JSON-RPC lines, so the test controls stdin and
//! the process directly.

use std::process::ExitStatus;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::client::{open_db, Store, PATIENCE};

/// An `abathur mcp` process spoken to line by line.
pub struct RawSession {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    next_id: u64,
}

impl RawSession {
    /// Starts the server and performs the MCP handshake by hand.
    pub async fn start(store: &Store) -> Self {
        Self::start_with(store.command(&[])).await
    }

    /// Starts the server `cmd` runs and performs the MCP handshake by hand.
    pub async fn start_with(mut cmd: tokio::process::Command) -> Self {
        let mut child = cmd.spawn().expect("abathur mcp starts");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let mut raw = Self {
            child,
            stdin,
            stdout,
            next_id: 1,
        };
        let init = raw
            .request(
                "initialize",
                json!({
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": { "name": "raw-test", "version": "1" },
                }),
            )
            .await;
        assert_eq!(init["result"]["serverInfo"]["name"], "abathur", "{init}");
        raw.send_line(
            &json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }).to_string(),
        )
        .await;
        raw
    }

    pub async fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(line.as_bytes()).await.expect("write");
        stdin.write_all(b"\n").await.expect("write");
        stdin.flush().await.expect("flush");
    }

    /// The next message the server writes.
    pub async fn next_message(&mut self) -> Value {
        let line = tokio::time::timeout(PATIENCE, self.stdout.next_line())
            .await
            .expect("a message in time")
            .expect("read stdout")
            .expect("the server closed stdout");
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("stdout carries only JSON-RPC, not {line:?}: {e}"))
    }

    /// The server's stderr, to read its log.
    pub fn stderr(&mut self) -> tokio::process::ChildStderr {
        self.child.stderr.take().expect("piped stderr, taken once")
    }

    /// Sends a request and returns the response with its id.
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        self.send_line(&request.to_string()).await;
        loop {
            let line = tokio::time::timeout(PATIENCE, self.stdout.next_line())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} in time"))
                .expect("read stdout")
                .unwrap_or_else(|| panic!("the server closed stdout before answering {method}"));
            let message: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("stdout carries only JSON-RPC, not {line:?}: {e}"));
            if message["id"] == id {
                return message;
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("the server is running")
    }

    /// Closes stdin and waits for the server to exit.
    pub async fn finish(mut self) -> ExitStatus {
        drop(self.stdin.take());
        self.wait().await
    }

    pub async fn wait(&mut self) -> ExitStatus {
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("the server exits in time")
            .expect("the server's status")
    }
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}

#[tokio::test]
async fn closing_stdin_ends_the_server_cleanly() {
    let store = Store::new();
    let mut raw = RawSession::start(&store).await;
    raw.request(
        "tools/call",
        json!({ "name": "task_enqueue", "arguments": { "description": "kept" } }),
    )
    .await;
    let started = std::time::Instant::now();
    assert!(raw.finish().await.success());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let pool = open_db(&store.db_path()).await;
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM tasks")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn sigterm_and_sigint_stop_the_server_promptly_with_success() {
    for name in ["TERM", "INT"] {
        let store = Store::new();
        let mut raw = RawSession::start(&store).await;
        raw.request(
            "tools/call",
            json!({ "name": "memory_add", "arguments": { "namespace": "n", "key": "k", "value": name } }),
        )
        .await;
        let started = std::time::Instant::now();
        signal(raw.pid(), name);
        let status = raw.wait().await;
        assert!(status.success(), "SIG{name}: {status}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "SIG{name} took {:?}",
            started.elapsed()
        );
        let pool = open_db(&store.db_path()).await;
        let (value,): (String,) = sqlx::query_as("SELECT value FROM memories WHERE key = 'k'")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(
            value,
            format!("\"{name}\""),
            "the write survived the signal"
        );
    }
}
