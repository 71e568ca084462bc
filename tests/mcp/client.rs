//! A real MCP client (rmcp's) connected over stdio to a real `abathur mcp` process, with its
//! own database in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

/// The longest any single step may take before the test fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A temporary directory holding one database file that any number of servers can share.
pub struct Store {
    pub dir: TempDir,
}

impl Store {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("abathur.db")
    }

    /// `abathur --db <db> mcp ARGS...`, with piped stdio and no inherited settings.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_abathur"));
        cmd.arg("--db")
            .arg(self.db_path())
            .arg("mcp")
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("ABATHUR_DB")
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // The servers' logs, shown when a handshake fails: ABATHUR_MCP_TEST_LOG=debug.
        if let Some(filter) = std::env::var_os("ABATHUR_MCP_TEST_LOG") {
            cmd.env("RUST_LOG", filter);
        }
        cmd
    }

    /// Starts `abathur mcp` on this store and completes the MCP handshake with it.
    pub async fn connect(&self) -> Session {
        Session::start(self.command(&[])).await
    }
}

/// One `abathur mcp` process and the client talking to it.
pub struct Session {
    pub client: RunningService<RoleClient, ()>,
    pub child: Child,
}

impl Session {
    pub async fn start(mut cmd: Command) -> Self {
        let mut child = cmd.spawn().expect("abathur mcp starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take().expect("piped stdin");
        let handshake = tokio::time::timeout(PATIENCE, ().serve((stdout, stdin)))
            .await
            .expect("the handshake finishes in time");
        match handshake {
            Ok(client) => Self { client, child },
            Err(e) => {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = tokio::time::timeout(PATIENCE, pipe.read_to_string(&mut stderr)).await;
                }
                let status = child.wait().await;
                panic!("the server did not complete the MCP handshake ({e}); it exited with {status:?}:\n{stderr}");
            }
        }
    }

    /// Calls `tool` with `arguments` (a JSON object) and returns the raw result.
    pub async fn call_raw(&self, tool: &str, arguments: Value) -> CallToolResult {
        let Value::Object(arguments) = arguments else {
            panic!("tool arguments must be a JSON object, not {arguments}");
        };
        let params = CallToolRequestParams::new(tool.to_string()).with_arguments(arguments);
        tokio::time::timeout(PATIENCE, self.client.call_tool(params))
            .await
            .unwrap_or_else(|_| panic!("{tool} answered in time"))
            .unwrap_or_else(|e| panic!("{tool} got a protocol error: {e}"))
    }

    /// Calls `tool`, expects success, and returns its JSON result.
    #[track_caller]
    pub fn call<'a>(
        &'a self,
        tool: &'a str,
        arguments: Value,
    ) -> impl std::future::Future<Output = Value> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let result = self.call_raw(tool, arguments).await;
            let body = body_of(&result);
            assert_ne!(
                result.is_error,
                Some(true),
                "{tool} failed at {caller}: {body}"
            );
            body
        }
    }

    /// Calls `tool`, expects a tool error, and returns its `(kind, message)`.
    #[track_caller]
    pub fn call_err<'a>(
        &'a self,
        tool: &'a str,
        arguments: Value,
    ) -> impl std::future::Future<Output = (String, String)> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let result = self.call_raw(tool, arguments).await;
            let body = body_of(&result);
            assert_eq!(
                result.is_error,
                Some(true),
                "{tool} succeeded at {caller}, but an error was expected: {body}"
            );
            let kind = body["error"]["kind"].as_str().map(str::to_string);
            let message = body["error"]["message"].as_str().map(str::to_string);
            match (kind, message) {
                (Some(kind), Some(message)) => (kind, message),
                _ => panic!("{tool}'s error is not {{error: {{kind, message}}}}: {body}"),
            }
        }
    }

    /// Closes the client's end (the server sees EOF on stdin) and returns the server's exit
    /// status.
    pub async fn close(mut self) -> std::process::ExitStatus {
        let _ = self.client.cancel().await;
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("the server exits once its stdin is closed")
            .expect("the server's status")
    }
}

/// The JSON document in a tool result's single text block.
#[track_caller]
pub fn body_of(result: &CallToolResult) -> Value {
    assert_eq!(
        result.content.len(),
        1,
        "a tool result is one content block: {result:?}"
    );
    let text = &result.content[0]
        .as_text()
        .expect("the content block is text")
        .text;
    serde_json::from_str(text).unwrap_or_else(|e| panic!("the result is not JSON ({e}): {text}"))
}

/// A task's id from a `task_enqueue` or `task_get` result.
#[track_caller]
pub fn id_of(task: &Value) -> String {
    task["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {task}"))
        .to_string()
}

/// Enqueues a task with this description and these dependencies; returns its id.
pub async fn enqueue(session: &Session, description: &str, depends_on: &[&str]) -> String {
    let task = session
        .call(
            "task_enqueue",
            json!({ "description": description, "depends_on": depends_on }),
        )
        .await;
    id_of(&task)
}

/// Opens the store's database directly, as a second process would, to check what the servers
/// wrote.
pub async fn open_db(path: &Path) -> sqlx::SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true);
    sqlx::SqlitePool::connect_with(options)
        .await
        .expect("the database opens")
}
