//! A temporary directory with its own database, and the `abathur` command pointed at it.

use std::path::PathBuf;

use assert_cmd::Command;
use serde_json::Value;
use tempfile::TempDir;

/// One test's private directory. The database lives at `<dir>/abathur.db`.
pub struct Sandbox {
    pub dir: TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("abathur.db")
    }

    /// `abathur --db <dir>/abathur.db`, run in the sandbox, with a clean environment for the
    /// variables the command reads.
    pub fn abathur(&self) -> Command {
        let mut cmd = self.bare();
        cmd.arg("--db").arg(self.db_path());
        cmd
    }

    /// `abathur` run in the sandbox, without `--db`.
    pub fn bare(&self) -> Command {
        let mut cmd = Command::cargo_bin("abathur").expect("the abathur binary");
        cmd.current_dir(self.dir.path())
            .env_remove("ABATHUR_DB")
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .env_remove("CLICOLOR")
            .env_remove("CLICOLOR_FORCE");
        cmd
    }

    /// Runs `abathur <args>` and returns its stdout, failing the test unless it exits 0 with
    /// nothing on stderr.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.abathur().args(args).output().expect("abathur runs");
        let stdout = String::from_utf8(output.stdout).expect("stdout is UTF-8");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "abathur {args:?} failed with {:?}\nstderr: {stderr}",
            output.status.code()
        );
        assert!(
            stderr.is_empty(),
            "abathur {args:?} wrote to stderr: {stderr}"
        );
        stdout
    }

    /// Runs `abathur --json <args>` and parses its stdout.
    #[track_caller]
    pub fn json(&self, args: &[&str]) -> Value {
        let mut with_flag = vec!["--json"];
        with_flag.extend_from_slice(args);
        let stdout = self.ok(&with_flag);
        serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!("abathur {with_flag:?} printed invalid JSON ({e}):\n{stdout}")
        })
    }

    /// Submits a task and returns its id.
    #[track_caller]
    pub fn submit(&self, args: &[&str]) -> String {
        let mut full = vec!["task", "submit"];
        full.extend_from_slice(args);
        let stdout = self.ok(&full);
        let id = stdout.trim_end_matches('\n');
        assert!(
            !id.contains('\n'),
            "submit printed more than one line: {stdout:?}"
        );
        uuid::Uuid::parse_str(id)
            .unwrap_or_else(|e| panic!("submit printed {stdout:?}, not an id: {e}"));
        id.to_string()
    }

    /// The stored tasks, as `task list --json` shows them.
    #[track_caller]
    pub fn tasks(&self) -> Vec<Value> {
        match self.json(&["task", "list"]) {
            Value::Array(tasks) => tasks,
            other => panic!("task list --json printed {other}, not an array"),
        }
    }

    /// Runs `abathur <args>`, expecting it to fail with `code`, and returns its stderr, which
    /// must be an `error: ...` message and leave stdout empty.
    #[track_caller]
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let output = self.abathur().args(args).output().expect("abathur runs");
        let stderr = String::from_utf8(output.stderr).expect("stderr is UTF-8");
        assert_eq!(
            output.status.code(),
            Some(code),
            "abathur {args:?} exit code\nstderr: {stderr}"
        );
        assert!(
            stderr.starts_with("error: "),
            "abathur {args:?} stderr: {stderr}"
        );
        assert!(
            output.stdout.is_empty(),
            "abathur {args:?} wrote to stdout on failure"
        );
        stderr
    }
}

/// The newest migration this build carries: what a fresh database reports as its version.
pub fn latest_schema_version() -> i64 {
    abathur::infrastructure::database::MIGRATOR
        .iter()
        .map(|m| m.version)
        .max()
        .expect("at least one migration")
}
