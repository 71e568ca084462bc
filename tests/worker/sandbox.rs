//! A temporary directory with its own database, the `abathur` command pointed at it, and
//! `abathur worker` processes started in it.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// One test's private directory: the database at `<dir>/abathur.db`, and the working
/// directory of every command, so that scripts leave their marker files here.
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

    /// A file in the sandbox.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The text of a file in the sandbox, or "" when it does not exist.
    pub fn read(&self, name: &str) -> String {
        fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// `abathur --db <dir>/abathur.db`, run in the sandbox, with none of the variables the
    /// command reads inherited from the test's environment.
    pub fn abathur(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_abathur"));
        cmd.current_dir(self.dir.path())
            .env_remove("ABATHUR_DB")
            .env_remove("RUST_LOG")
            .arg("--db")
            .arg(self.db_path());
        cmd
    }

    /// Runs `abathur <args>` and returns its stdout, failing the test unless it exits 0.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.abathur().args(args).output().expect("abathur runs");
        assert!(
            output.status.success(),
            "abathur {args:?} failed with {:?}\nstderr: {}",
            output.status.code(),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("stdout is UTF-8")
    }

    /// Runs `abathur --json <args>` and parses its stdout.
    #[track_caller]
    pub fn json(&self, args: &[&str]) -> Value {
        let mut with_flag = vec!["--json"];
        with_flag.extend_from_slice(args);
        let stdout = self.ok(&with_flag);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{with_flag:?}: {e}: {stdout}"))
    }

    /// Submits a task and returns its id.
    #[track_caller]
    pub fn submit(&self, args: &[&str]) -> String {
        let mut full = vec!["task", "submit"];
        full.extend_from_slice(args);
        self.ok(&full).trim().to_string()
    }

    /// `task show --json`.
    #[track_caller]
    pub fn task(&self, id: &str) -> Value {
        self.json(&["task", "show", id])
    }

    #[track_caller]
    pub fn status(&self, id: &str) -> String {
        self.task(id)["status"]
            .as_str()
            .expect("a status")
            .to_string()
    }

    /// `task history --json`.
    #[track_caller]
    pub fn history(&self, id: &str) -> Vec<Value> {
        match self.json(&["task", "history", id]) {
            Value::Array(events) => events,
            other => panic!("history printed {other}"),
        }
    }

    /// Runs `abathur <args>`, expecting exit code `code` and an `error: ...` on stderr.
    #[track_caller]
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let output = self.abathur().args(args).output().expect("abathur runs");
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert_eq!(
            output.status.code(),
            Some(code),
            "abathur {args:?}\nstderr: {stderr}"
        );
        assert!(output.stdout.is_empty(), "abathur {args:?} wrote to stdout");
        stderr
    }

    /// Starts `abathur worker --name <name> <options> -- sh -c <script>` in the sandbox,
    /// its stdout and stderr going to `<name>.out` and `<name>.log`.
    pub fn worker(&self, name: &str, options: &[&str], script: &str) -> Worker {
        let stdout = fs::File::create(self.path(&format!("{name}.out"))).expect("stdout file");
        let stderr = fs::File::create(self.path(&format!("{name}.log"))).expect("stderr file");
        let child = self
            .abathur()
            .args(["worker", "--name", name])
            .args(options)
            .args(["--", "sh", "-c", script])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("the worker starts");
        Worker {
            child,
            name: name.to_string(),
            log: self.path(&format!("{name}.log")),
            out: self.path(&format!("{name}.out")),
        }
    }
}

/// A running `abathur worker` process; killed if the test ends with it still running.
pub struct Worker {
    pub child: Child,
    pub name: String,
    log: PathBuf,
    out: PathBuf,
}

impl Worker {
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("a pid")
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill only sends a signal, to our own unreaped child.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "cannot signal worker {}", self.name);
    }

    /// Its stderr so far: the log.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits up to `limit` for it to exit.
    #[track_caller]
    pub fn exits_within(&mut self, limit: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "worker {} still running after {limit:?}\nlog:\n{}",
                self.name,
                self.log()
            );
            sleep(Duration::from_millis(20));
        }
    }

    /// Waits for it to exit, and checks it exited 0 with nothing on stdout.
    #[track_caller]
    pub fn exits_cleanly_within(&mut self, limit: Duration) {
        let status = self.exits_within(limit);
        assert_eq!(
            status.code(),
            Some(0),
            "worker {} ended with {status}\nlog:\n{}",
            self.name,
            self.log()
        );
        assert_eq!(self.stdout(), "", "worker {} wrote to stdout", self.name);
    }

    /// CPU time it has used so far, in clock ticks (user + system), from `/proc`.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("/proc stat");
        // The command name, in parentheses, may hold spaces: count fields after it.
        let after = &stat[stat.rfind(')').expect("a command name") + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        // Fields 14 (utime) and 15 (stime) of proc(5); `after` starts at field 3.
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits up to `limit` for `done`, polling; fails the test naming `what` if it never holds.
#[track_caller]
pub fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if done() {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        sleep(Duration::from_millis(10));
    }
}

/// Whether any process is left in process group `pgid`.
pub fn group_alive(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks whether the group exists and may be signalled.
    unsafe { libc::killpg(pgid, 0) == 0 }
}

/// Whether the process `pid` still exists (and is not a zombie waiting to be reaped).
pub fn process_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The `reason` of each event of a history, in order.
pub fn reasons(history: &[Value]) -> Vec<String> {
    history
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The `from -> to` of each event of a history, in order.
pub fn changes(history: &[Value]) -> Vec<String> {
    history
        .iter()
        .map(|e| {
            format!(
                "{} -> {}",
                e["from"].as_str().unwrap_or(""),
                e["to"].as_str().unwrap_or("")
            )
        })
        .collect()
}
