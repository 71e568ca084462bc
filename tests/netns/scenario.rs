//! The scenarios: a database of their own, hosts in namespaces with a forwarder each, a DAG,
//! `abathur worker` processes on the hosts, and what the database holds at the end.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use abathur::backend::{Access, Backend, Location, Role};
use abathur::domain::queue::{NewTask, TaskQueue};
use abathur_postgres::testing::TestDatabase;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnection;
use sqlx::Connection;
use tempfile::TempDir;
use tokio::runtime::Runtime;
use uuid::Uuid;

use crate::forward::Forwarder;
use crate::net::{Host, Network};
use crate::probe::shortest_round_trip;
use crate::verify::{count, verify};

/// The lease every worker takes: short, so that a partition outlasts it soon. Heartbeats go
/// every third of it.
const LEASE: &str = "2s";
/// How long any one wait may take before the test gives up on it.
const WAIT: Duration = Duration::from_secs(60);
/// How long a whole DAG may take.
const RUN: Duration = Duration::from_secs(180);
/// How often the test looks again while it waits.
const POLL: Duration = Duration::from_millis(10);
/// The latency added to host B's link in the latency scenario.
const LATENCY_MS: u32 = 5;

/// Host A holds a task, and its link is cut; B takes the task back and completes it; A's
/// late completion is refused.
pub fn partition() {
    let mut run = Run::new(&["a", "b"], &[]);
    let (dag, hold) = dag(10, 8, 0x9A87, true);
    let hold = hold.expect("the DAG has a task to hold");
    run.submit(dag);

    // A alone first: it claims the held task (the highest priority), whose command says so
    // and then waits on the FIFO. B starts once A holds it.
    let a = run.spawn("a", 1, 50);
    let held = run.dir.path().join("held");
    let a_attempt: Uuid = wait_for(WAIT, "host A to hold the task", || {
        std::fs::read_to_string(&held)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    });
    let b = run.spawn("b", 2, 50);

    // Cut A's link just after one of its heartbeats reached the server, so that no heartbeat
    // is on the way when it goes: the next is a third of the lease away, and A's command ends
    // well before it (a heartbeat caught by the cut would, once the link is back, learn that
    // the lease is gone and kill the command before its completion is sent).
    let expires = run.lease_expires_at(a_attempt);
    wait_for(WAIT, "host A's next heartbeat", || {
        (run.lease_expires_at(a_attempt) != expires).then_some(())
    });
    run.network.host("a").cut().expect("cut host A's link");
    let cut = Instant::now();
    // Let A's command finish while A is cut off: its worker sends the completion into the
    // partition, where it waits for the link. (Released once the link is back, the command
    // would be killed first by A's next heartbeat, which learns that the lease is gone: fenced
    // too, but then no completion is ever sent.)
    release(&run.dir.path().join("release"));
    println!("  host A's link cut; its command released");

    wait_for(WAIT, "host B's reaper to take the task back", || {
        (run.attempt_outcome(a_attempt).as_deref() == Some("lost")).then_some(())
    });
    let taken_back = cut.elapsed();
    println!(
        "  {:.1} s after the cut: A's attempt is lost (lease {LEASE}, reaped by B)",
        taken_back.as_secs_f64()
    );
    let completer = wait_for(WAIT, "host B to complete the task", || {
        run.completed_by(hold)
    });
    let completed = cut.elapsed();
    assert_eq!(
        completer, "host-b",
        "the held task was completed by {completer}"
    );
    println!(
        "  {:.1} s after the cut: B completed the task",
        completed.as_secs_f64()
    );

    run.network
        .host("a")
        .mend()
        .expect("bring host A's link back");
    let mended = Instant::now();
    let refusal = wait_for(WAIT, "host A's late completion to be refused", || {
        let log = read(&a.log);
        log.lines()
            .find(|line| {
                line.contains(&hold.to_string())
                    && line.contains("finished after")
                    && line.contains("no longer this worker's")
            })
            .map(str::to_string)
    });
    println!(
        "  {:.1} s after the link came back (cut for {:.1} s), A's worker logged:\n    {}",
        mended.elapsed().as_secs_f64(),
        (mended - cut).as_secs_f64(),
        refusal.trim()
    );
    let a_log = read(&a.log);
    assert!(
        !a_log.contains("cannot report how the task ended"),
        "host A gave up on its completion instead of having it refused:\n{a_log}"
    );

    run.wait_until_finished(RUN);
    let (a_log, b_log) = (run.stop(a), run.stop(b));

    let report = run.verify();
    // The held task: A's attempt lost, then one completed attempt, B's, whose result stands.
    let attempts = run.attempts(hold);
    assert_eq!(
        attempts
            .first()
            .map(|(id, worker, outcome)| (*id, worker.as_str(), outcome.as_deref())),
        Some((a_attempt, "host-a", Some("lost"))),
        "the held task's attempts: {attempts:?}"
    );
    let completed: Vec<_> = attempts
        .iter()
        .filter(|(_, _, outcome)| outcome.as_deref() == Some("completed"))
        .collect();
    assert_eq!(completed.len(), 1, "the held task's attempts: {attempts:?}");
    assert_eq!(
        completed[0].1, "host-b",
        "the held task's attempts: {attempts:?}"
    );
    println!(
        "  {} tasks completed exactly once ({:?}); {} attempts, {} lost; B's log {} lines; A's:",
        report.tasks,
        report.completed_by,
        report.attempts,
        report.lost_attempts,
        b_log.lines().count()
    );
    for line in a_log.lines().take(12) {
        println!("    {line}");
    }
}

/// Both hosts run a DAG, host B with 5 ms of added latency on its link.
pub fn latency() {
    let mut run = Run::new(&["a", "b"], &["b"]);
    let a_trip = shortest_round_trip(run.network.host("a"), run.port("a"), 10);
    let b_trip = shortest_round_trip(run.network.host("b"), run.port("b"), 10);
    println!(
        "  round trip to the server: host A {:.2} ms, host B {:.2} ms ({})",
        a_trip.as_secs_f64() * 1000.0,
        b_trip.as_secs_f64() * 1000.0,
        run.latency_by
    );
    assert!(
        b_trip >= Duration::from_millis(u64::from(LATENCY_MS)),
        "host B's round trip of {b_trip:?} does not show the added {LATENCY_MS} ms"
    );

    let (dag, _) = dag(8, 10, 0x1A7E, false);
    run.submit(dag);
    let started = Instant::now();
    let a = run.spawn("a", 2, 30);
    let b = run.spawn("b", 2, 30);
    run.wait_until_finished(RUN);
    let took = started.elapsed();
    run.stop(a);
    run.stop(b);
    let report = run.verify();
    println!(
        "  {} tasks completed exactly once in {:.1} s ({:?}); {} attempts",
        report.tasks,
        took.as_secs_f64(),
        report.completed_by,
        report.attempts
    );
    for host in ["host-a", "host-b"] {
        assert!(
            report.completed_by.get(host).copied().unwrap_or(0) > 0,
            "{host} completed no task: {:?}",
            report.completed_by
        );
    }
}

/// One scenario's world. Fields drop in order: the test's connection, the forwarders, the
/// hosts, the database, the folder, the runtime (the scenario drops its workers before, on a
/// panic too, since they are declared after the run).
struct Run {
    /// The test's own connection, to the server directly.
    conn: PgConnection,
    forwarders: Vec<(String, Forwarder)>,
    network: Network,
    db: TestDatabase,
    dir: TempDir,
    /// How host latency was added, for the output.
    latency_by: &'static str,
    runtime: Runtime,
}

impl Run {
    /// A new database, one host per label with its forwarder, and the command script; the
    /// hosts in `slow` get `LATENCY_MS` of latency on their link.
    fn new(labels: &[&str], slow: &[&str]) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let db = runtime.block_on(TestDatabase::create());
        let conn = runtime
            .block_on(PgConnection::connect(db.url()))
            .expect("connect to the test database");
        let network = Network::new(labels).unwrap_or_else(|e| panic!("make the hosts: {e}"));
        let upstream = server_address(db.url());
        let mut latency_by = "no latency added";
        let mut forwarders = Vec::new();
        for host in &network.hosts {
            let mut delay = None;
            if slow.contains(&host.label.as_str()) {
                if host.add_latency(LATENCY_MS).expect("add latency") {
                    latency_by = "tc netem delay on host B's card";
                } else {
                    // This kernel has no netem: the forwarder delays what the host sends.
                    latency_by = "the kernel has no netem: the forwarder delays what host B sends";
                    delay = Some(Duration::from_millis(u64::from(LATENCY_MS)));
                }
            }
            let forwarder = Forwarder::start(runtime.handle(), host.root_addr, upstream, delay)
                .unwrap_or_else(|e| panic!("forward {}:0 to {upstream}: {e}", host.root_addr));
            forwarders.push((host.label.clone(), forwarder));
        }
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(dir.path().join("step.sh"), STEP).expect("write the command");
        let fifo = dir.path().join("release");
        let made = Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("run mkfifo");
        assert!(made.success(), "mkfifo {}", fifo.display());
        Self {
            conn,
            forwarders,
            network,
            db,
            dir,
            latency_by,
            runtime,
        }
    }

    /// The port of host `label`'s forwarder.
    fn port(&self, label: &str) -> u16 {
        self.forwarders
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, f)| f.port)
            .unwrap_or_else(|| panic!("no forwarder for host {label}"))
    }

    /// The database's URL as host `label` reaches it: through its link and forwarder.
    fn url_for(&self, label: &str) -> String {
        let host = self.network.host(label);
        via(self.db.url(), host.root_addr, self.port(label))
    }

    /// Creates the schema and submits `dag`, through the library, as `abathur` would.
    fn submit(&self, dag: Vec<NewTask>) {
        let n = dag.len();
        self.runtime.block_on(async {
            let location = Location::parse(self.db.url()).expect("a database location");
            let db = Backend::open(&location, Access::Write, Role::Command)
                .await
                .expect("open the database");
            let stored = TaskQueue::new(db.queue_store.clone())
                .submit_batch(dag)
                .await
                .expect("submit the DAG");
            assert_eq!(stored.len(), n);
            db.close().await;
        });
    }

    /// Starts `abathur worker` on host `label`, named `host-<label>`, running `step.sh` with
    /// `work_ms` of work per task; its log goes to `host-<label>.log`.
    fn spawn(&self, label: &str, concurrency: u32, work_ms: u32) -> Worker {
        let host: &Host = self.network.host(label);
        let name = format!("host-{label}");
        let log = self.dir.path().join(format!("{name}.log"));
        let script = self.dir.path().join("step.sh");
        let mut command = host.command(env!("CARGO_BIN_EXE_abathur"));
        command
            .args(["--db", &self.url_for(label), "worker", "--name", &name])
            .args(["--lease", LEASE, "--concurrency", &concurrency.to_string()])
            .arg("--")
            .arg("/bin/sh")
            .arg(&script)
            .arg(label)
            .arg(self.dir.path())
            .arg(work_ms.to_string())
            // The worker's default log: one line per task started and ended.
            .env_remove("RUST_LOG")
            .env_remove("ABATHUR_DB")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("a log file"));
        let child = command.spawn().expect("start a worker");
        Worker { name, child, log }
    }

    /// Waits until no task is left to run.
    fn wait_until_finished(&mut self, within: Duration) {
        let runtime = &self.runtime;
        let conn = &mut self.conn;
        wait_for(within, "every task to finish", || {
            let left = runtime.block_on(count(
                conn,
                "SELECT COUNT(*) FROM tasks WHERE status NOT IN ('completed', 'failed', 'cancelled')",
            ));
            (left == 0).then_some(())
        });
    }

    /// Stops a worker (SIGTERM), which must exit 0 within the wait; its log.
    fn stop(&self, mut worker: Worker) -> String {
        let pid = rustix::process::Pid::from_raw(worker.child.id() as i32).expect("a pid");
        // `ip netns exec` execs the worker: the child is the worker itself.
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("signal a worker");
        let status = wait_for(WAIT, "a worker to stop", || {
            worker.child.try_wait().expect("poll a worker")
        });
        let log = read(&worker.log);
        assert!(
            status.success(),
            "{} exited with {status}:\n{log}",
            worker.name
        );
        log
    }

    fn verify(&mut self) -> crate::verify::Report {
        self.runtime.block_on(verify(&mut self.conn))
    }

    fn lease_expires_at(&mut self, attempt: Uuid) -> DateTime<Utc> {
        self.runtime
            .block_on(
                sqlx::query_scalar("SELECT lease_expires_at FROM task_attempts WHERE id = $1")
                    .bind(attempt)
                    .fetch_one(&mut self.conn),
            )
            .expect("read an attempt's lease")
    }

    fn attempt_outcome(&mut self, attempt: Uuid) -> Option<String> {
        self.runtime
            .block_on(
                sqlx::query_scalar("SELECT outcome FROM task_attempts WHERE id = $1")
                    .bind(attempt)
                    .fetch_one(&mut self.conn),
            )
            .expect("read an attempt's outcome")
    }

    /// The worker whose attempt completed `task`, once one has.
    fn completed_by(&mut self, task: Uuid) -> Option<String> {
        self.runtime
            .block_on(
                sqlx::query_scalar(
                    "SELECT worker_id FROM task_attempts WHERE task_id = $1 AND outcome = 'completed'",
                )
                .bind(task)
                .fetch_optional(&mut self.conn),
            )
            .expect("read a task's attempts")
    }

    /// `task`'s attempts in order: id, worker, outcome.
    fn attempts(&mut self, task: Uuid) -> Vec<(Uuid, String, Option<String>)> {
        self.runtime
            .block_on(
                sqlx::query_as(
                    "SELECT id, worker_id, outcome FROM task_attempts WHERE task_id = $1
                     ORDER BY attempt_number",
                )
                .bind(task)
                .fetch_all(&mut self.conn),
            )
            .expect("read a task's attempts")
    }
}

/// A worker process on a host; killed if the scenario ends without stopping it.
struct Worker {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Drop for Worker {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            eprintln!("{} was killed; its log:\n{}", self.name, read(&self.log));
        }
    }
}

/// Each task's command: `step.sh HOST DIR WORK_MS`, the task as JSON on stdin. It works for
/// WORK_MS and prints which host and attempt did the work, as the task's result. On host A,
/// the task summarised `hold` first writes its attempt id to DIR/held and waits for a line on
/// the FIFO DIR/release.
const STEP: &str = r#"#!/bin/sh
host=$1
dir=$2
work_ms=$3
task=$(cat)
case "$task" in
*'"summary":"hold"'*)
    if [ "$host" = a ]; then
        echo "$ABATHUR_ATTEMPT_ID" >"$dir/held.tmp" && mv "$dir/held.tmp" "$dir/held"
        read -r _ <"$dir/release"
    fi
    ;;
esac
sleep "$(printf '0.%03d' "$work_ms")"
printf '{"host":"%s","attempt":"%s"}\n' "$host" "$ABATHUR_ATTEMPT_ID"
"#;

/// Lets the held command go: one line on its FIFO, once it has opened it.
fn release(fifo: &Path) {
    let mut writer = wait_for(WAIT, "the held command to open its FIFO", || {
        // Without a reader, a non-blocking open for writing fails (ENXIO) instead of waiting.
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)
            .ok()
    });
    writer.write_all(b"go\n").expect("write to the FIFO");
}

/// `layers` layers of `width` tasks; each task past the first layer depends on one or two of
/// the layer before. With `hold`, the first task is summarised `hold`, has the highest
/// priority, and a task of each of the next layer's first three depends on it.
fn dag(layers: usize, width: usize, seed: u64, hold: bool) -> (Vec<NewTask>, Option<Uuid>) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let ids: Vec<Vec<Uuid>> = (0..layers)
        .map(|_| (0..width).map(|_| Uuid::new_v4()).collect())
        .collect();
    let mut tasks = Vec::with_capacity(layers * width);
    for (layer, layer_ids) in ids.iter().enumerate() {
        for (i, id) in layer_ids.iter().enumerate() {
            let mut dependencies = Vec::new();
            if layer > 0 {
                for _ in 0..rng.usize(1..=2) {
                    dependencies.push(ids[layer - 1][rng.usize(..width)]);
                }
                if hold && layer == 1 && i < 3 {
                    dependencies.push(ids[0][0]);
                }
                dependencies.sort();
                dependencies.dedup();
            }
            let held = hold && layer == 0 && i == 0;
            let summary = if held {
                "hold".to_string()
            } else {
                format!("layer {layer} task {i}")
            };
            tasks.push(NewTask {
                id: *id,
                dependencies,
                priority: if held { 10 } else { 5 },
                ..NewTask::new(summary, "a step of the DAG", "netns")
            });
        }
    }
    (tasks, hold.then(|| ids[0][0]))
}

/// Calls `check` every `POLL` until it gives a value; panics naming `what` after `within`.
fn wait_for<T>(within: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "waited {within:?} for {what}");
        std::thread::sleep(POLL);
    }
}

/// The server's address in `url` (`postgres://user@host:port/db`), port 5432 by default.
fn server_address(url: &str) -> SocketAddr {
    let authority = authority(url);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host_port = if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:5432")
    };
    host_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.find(SocketAddr::is_ipv4))
        .unwrap_or_else(|| panic!("the test server's address in {url}"))
}

/// `url` with its host and port replaced by `addr:port`.
fn via(url: &str, addr: Ipv4Addr, port: u16) -> String {
    let authority = authority(url);
    let start = url.find(authority).expect("the authority is in the URL");
    let user = authority
        .rsplit_once('@')
        .map_or(String::new(), |(u, _)| format!("{u}@"));
    format!(
        "{}{user}{addr}:{port}{}",
        &url[..start],
        &url[start + authority.len()..]
    )
}

/// The `user@host:port` part of a URL.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
