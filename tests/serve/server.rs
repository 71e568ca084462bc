//! A served database: the CLI on it, `abathur serve` over it, and an HTTP client.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long anything may take before a test gives up: a guard against a hang, never a
/// measurement.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A database in a folder of its own.
pub struct Store {
    dir: tempfile::TempDir,
}

impl Store {
    /// A new, initialised database.
    pub fn new() -> Self {
        let store = Self {
            dir: tempfile::tempdir().expect("a temporary folder"),
        };
        store.cli(&["init"]);
        store
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("abathur.db")
    }

    /// Runs the CLI on this database and returns its stdout; panics unless it succeeds.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = self.cli_output(args);
        assert!(
            output.status.success(),
            "abathur {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .expect("UTF-8")
            .trim()
            .to_string()
    }

    pub fn cli_output(&self, args: &[&str]) -> Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_abathur"))
            .arg("--db")
            .arg(self.path())
            .args(args)
            .env_remove("ABATHUR_DB")
            .env_remove("ABATHUR_TOKEN")
            .output()
            .expect("abathur runs")
    }

    /// A task submitted through the CLI; its id.
    pub fn submit(&self, summary: &str, depends_on: &[&str]) -> String {
        let mut args = vec!["task", "submit", summary];
        for id in depends_on {
            args.extend(["--depends-on", id]);
        }
        self.cli(&args)
    }

    /// The task as `abathur task show --json` prints it.
    pub fn show(&self, id: &str) -> Value {
        serde_json::from_str(&self.cli(&["--json", "task", "show", id])).expect("JSON")
    }

    /// The `abathur serve` command on this database, not yet started.
    pub fn serve_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_abathur"));
        cmd.arg("--db")
            .arg(self.path())
            .arg("serve")
            .args(args)
            .env_remove("ABATHUR_DB")
            .env_remove("ABATHUR_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// `abathur serve --listen 127.0.0.1:0 ARGS...`, started and listening.
    pub async fn serve(&self, args: &[&str]) -> Served {
        let mut cmd = self.serve_command(&["--listen", "127.0.0.1:0"]);
        cmd.args(args);
        Served::start(cmd).await
    }
}

/// A running server.
pub struct Served {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    pub http: reqwest::Client,
}

impl Served {
    pub async fn start(mut cmd: Command) -> Self {
        let mut child = cmd.spawn().expect("abathur serve starts");
        let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let addr = loop {
            let line = tokio::time::timeout(PATIENCE, stderr.next_line())
                .await
                .expect("the address in time")
                .expect("stderr")
                .expect("the address on stderr before it closes");
            if let Some(rest) = line.strip_prefix("abathur serve: the dashboard is at http://") {
                break rest.split('/').next().expect("an address").to_string();
            }
        };
        // Keep reading stderr, so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(PATIENCE)
            .build()
            .expect("an HTTP client");
        Self { child, addr, http }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("an answer")
    }

    pub async fn post(&self, path: &str) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .send()
            .await
            .expect("an answer")
    }

    /// GET, expecting `status` and a JSON body.
    pub async fn get_json(&self, path: &str, status: u16) -> Value {
        json_of(self.get(path).await, status).await
    }

    /// POST, expecting `status` and a JSON body.
    pub async fn post_json(&self, path: &str, status: u16) -> Value {
        json_of(self.post(path).await, status).await
    }

    /// Sends SIGTERM and expects a clean exit.
    pub async fn stop(mut self) {
        let pid = self.child.id().expect("running").to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("the server stops on SIGTERM")
            .expect("wait");
        assert!(status.success(), "{status}");
    }
}

/// The body of `response` as JSON, after checking its status and content type.
pub async fn json_of(response: reqwest::Response, status: u16) -> Value {
    let got = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = response.text().await.expect("a body");
    assert_eq!(got, status, "{body}");
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}: {body}"
    );
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Asserts that `value` is an API error of `kind` whose message contains `needle`.
pub fn assert_error(value: &Value, kind: &str, needle: &str) {
    assert_eq!(value["error"]["kind"], kind, "{value}");
    let message = value["error"]["message"].as_str().expect("a message");
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
}
