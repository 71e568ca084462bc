//! The scenarios: a DAG submitted, worker processes started (and killed), the outcome checked.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use abathur::backend::{Access, Backend, Location, Role};
use abathur::domain::queue::{NewTask, QueueLimits, TaskQueue};
use abathur_postgres::testing::TestDatabase;
use sqlx::{Connection, PgConnection};
use tempfile::TempDir;
use uuid::Uuid;

use crate::verify::{verify, Logs};
use crate::worker::WorkerArgs;

/// 25 layers of 200 tasks: 5,000 in all, depth 24.
const LAYERS: usize = 25;
const WIDTH: usize = 200;
/// Long enough that no kill can use a task's retries up: each kill loses at most one claim's
/// worth of tasks, and a task is lost at most once per kill.
const MAX_RETRIES: u32 = 25;
/// A scenario that has not finished by then has hung.
const DEADLINE: Duration = Duration::from_secs(600);

/// How the workers of a scenario write.
#[derive(Clone, Copy)]
pub enum Mode {
    /// One claim loop per process, one transaction per operation.
    Plain,
    /// Four claim loops per process, their writes grouped into shared transactions.
    Grouped,
}

/// Where a scenario's database is.
#[derive(Clone, Copy)]
pub enum Store {
    /// A SQLite file in the run's folder.
    Sqlite,
    /// A database of its own on the test PostgreSQL server.
    Postgres,
}

impl Mode {
    fn loops(self) -> u32 {
        match self {
            Mode::Plain => 1,
            Mode::Grouped => 4,
        }
    }
}

pub fn four_processes_run_a_5000_task_dag_exactly_once() {
    exactly_once(Store::Sqlite, Mode::Plain);
}

pub fn four_processes_with_group_commit_run_a_5000_task_dag_exactly_once() {
    exactly_once(Store::Sqlite, Mode::Grouped);
}

pub fn workers_killed_20_times_lose_and_repeat_nothing() {
    crashes(Store::Sqlite, Mode::Plain);
}

pub fn group_commit_workers_killed_20_times_lose_and_repeat_nothing() {
    crashes(Store::Sqlite, Mode::Grouped);
}

pub fn postgres_four_processes_run_a_5000_task_dag_exactly_once() {
    exactly_once(Store::Postgres, Mode::Plain);
}

pub fn postgres_four_processes_of_four_loops_run_a_5000_task_dag_exactly_once() {
    exactly_once(Store::Postgres, Mode::Grouped);
}

pub fn postgres_workers_killed_20_times_lose_and_repeat_nothing() {
    crashes(Store::Postgres, Mode::Plain);
}

pub fn postgres_worker_connections_terminated_mid_run_lose_and_repeat_nothing() {
    let run = Run::new(0xC0FF, Store::Postgres);
    let name = run.database_name().to_string();
    let started = Instant::now();
    let mut workers: Vec<Worker> = (0..4)
        .map(|i| run.spawn(&format!("w{i}"), FAULT_LEASE, 3, Mode::Plain))
        .collect();
    let runtime = current_thread();
    let mut terminated = Vec::new();
    runtime.block_on(async {
        let mut observer = PgConnection::connect(&run.db)
            .await
            .expect("connect to the run's database");
        // Five times, each once a further tenth of the DAG has completed: in the middle of
        // the run, whatever the machine's speed.
        for round in 1..=TERMINATIONS {
            wait_for_completed(&mut observer, round * LAYERS * WIDTH / 10, &mut workers).await;
            // Every connection to the run's database but this one: the workers' pools,
            // mid-transaction or idle.
            let killed: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FILTER (WHERE pg_terminate_backend(pid))
                 FROM pg_stat_activity
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
            )
            .bind(&name)
            .fetch_one(&mut observer)
            .await
            .expect("terminate the workers' connections");
            terminated.push(killed);
        }
        let _ = observer.close().await;
    });
    for worker in &mut workers {
        worker.wait_for_exit(started + DEADLINE);
    }
    let elapsed = started.elapsed();
    // No worker was killed, and each tries its completion until it is answered: every
    // completion the database holds was confirmed to a worker, and logged.
    let report = verify(&run.db, &run.logs(), true);
    let lines = run.plain_stderr();
    println!(
        "  {} tasks in {:.2} s, {} attempts ({} lost); connections terminated: {terminated:?}",
        report.tasks,
        elapsed.as_secs_f64(),
        report.attempts,
        report.lost_attempts
    );
    print_lines(&lines);
    assert!(
        terminated.iter().all(|&n| n > 0),
        "a round found no worker connection to terminate: {terminated:?}"
    );
    assert!(
        lines
            .iter()
            .any(|(line, _)| line.contains("the database failed")),
        "no worker saw its connection go"
    );
}

pub fn postgres_server_restarted_mid_run_loses_and_repeats_nothing() {
    let run = Run::new(0x5E7F, Store::Postgres);
    let cluster = Cluster::serving(&run.db);
    // Declared after the run, so dropped before it: whatever happens, the server is up again
    // before the run's database is dropped, and for whatever runs next.
    let _up_again = cluster.guard();
    let started = Instant::now();
    let mut workers: Vec<Worker> = (0..4)
        .map(|i| run.spawn(&format!("w{i}"), FAULT_LEASE, 3, Mode::Plain))
        .collect();
    let runtime = current_thread();
    let down_for = runtime.block_on(async {
        let mut observer = PgConnection::connect(&run.db)
            .await
            .expect("connect to the run's database");
        wait_for_completed(&mut observer, LAYERS * WIDTH * 3 / 10, &mut workers).await;
        let _ = observer.close().await;
        // Safe for the other tests: the scenarios of this binary run one after another (see
        // `main`), so no other scenario uses the server now; cargo runs test binaries one at a
        // time, so no other test binary does either. A test run that shares the server with
        // other work (another `cargo test` at once, on a developer's machine) sees its
        // connections dropped for these few seconds: point `ABATHUR_TEST_POSTGRES` at a
        // cluster of its own to avoid that (`pg_createcluster 15 faults -p 5433 -- --auth=trust`).
        let down = Instant::now();
        cluster.ctl("stop");
        // Until a worker has told its outage (or a while, if none needed the server then).
        let deadline = Instant::now() + Duration::from_secs(20);
        while !run.stderr_contains("the database failed") && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cluster.ctl("start");
        down.elapsed()
    });
    for worker in &mut workers {
        worker.wait_for_exit(started + DEADLINE);
    }
    let elapsed = started.elapsed();
    let report = verify(&run.db, &run.logs(), true);
    let lines = run.plain_stderr();
    println!(
        "  {} tasks in {:.2} s, {} attempts ({} lost); the server was down {:.1} s",
        report.tasks,
        elapsed.as_secs_f64(),
        report.attempts,
        report.lost_attempts,
        down_for.as_secs_f64()
    );
    print_lines(&lines);
    assert!(
        lines
            .iter()
            .any(|(line, _)| line.contains("the database failed")),
        "no worker saw the server go"
    );
}

/// The lease of the fault scenarios: a claim whose answer was lost with its connection holds
/// its tasks this long before a reaper takes them back.
const FAULT_LEASE: Duration = Duration::from_secs(3);
/// How many times the workers' connections are terminated.
const TERMINATIONS: usize = 5;

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Waits until at least `n` tasks have completed; fails if a worker exits before (it must
/// not, with tasks left), or at the deadline.
async fn wait_for_completed(observer: &mut PgConnection, n: usize, workers: &mut [Worker]) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let completed: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE status = 'completed'")
                .fetch_one(&mut *observer)
                .await
                .expect("count the completed tasks");
        if completed as usize >= n {
            return;
        }
        for worker in workers.iter_mut() {
            worker.assert_running();
        }
        assert!(
            Instant::now() < deadline,
            "{n} tasks did not complete in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Prints the distinct lines of the workers' stderr, with how often each kind came.
fn print_lines(lines: &[(String, usize)]) {
    for (line, times) in lines {
        println!("    {times:>3} x {line}");
    }
}

/// A PostgreSQL cluster on this machine, as `pg_lsclusters` lists it.
struct Cluster {
    version: String,
    name: String,
}

impl Cluster {
    /// The local cluster listening on the port `url` names (5432 by default).
    fn serving(url: &str) -> Self {
        let authority = url
            .split_once("://")
            .map_or(url, |(_, rest)| rest)
            .split(['/', '?'])
            .next()
            .unwrap_or_default();
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = host_port.rsplit_once(':').unwrap_or((host_port, "5432"));
        assert!(
            matches!(host, "127.0.0.1" | "localhost" | "[::1]"),
            "restarting the server needs a cluster on this machine, not {host}"
        );
        let listed = Command::new("pg_lsclusters")
            .arg("--no-header")
            .output()
            .expect("run pg_lsclusters (postgresql-common)");
        let listed = String::from_utf8_lossy(&listed.stdout);
        listed
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .find(|fields| fields.get(2) == Some(&port))
            .map(|fields| Self {
                version: fields[0].to_string(),
                name: fields[1].to_string(),
            })
            .unwrap_or_else(|| panic!("no local cluster on port {port}:\n{listed}"))
    }

    /// Runs `pg_ctlcluster VERSION NAME action` (`stop` is a fast shutdown: every session is
    /// ended at once), directly rather than through systemd.
    fn ctl(&self, action: &str) {
        let status = Command::new("pg_ctlcluster")
            .args([
                "--skip-systemctl-redirect",
                &self.version,
                &self.name,
                action,
            ])
            .status()
            .expect("run pg_ctlcluster");
        assert!(
            status.success(),
            "pg_ctlcluster {} {} {action}: {status}",
            self.version,
            self.name
        );
    }

    fn running(&self) -> bool {
        Command::new("pg_ctlcluster")
            .args([&self.version, &self.name, "status"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts the cluster again when dropped, if it is not running.
    fn guard(&self) -> ClusterUp<'_> {
        ClusterUp(self)
    }
}

/// Makes sure, when dropped, that the cluster runs: a scenario that fails while the server is
/// down leaves it up for the tests after it.
struct ClusterUp<'a>(&'a Cluster);

impl Drop for ClusterUp<'_> {
    fn drop(&mut self) {
        if !self.0.running() {
            eprintln!(
                "starting PostgreSQL {} {} again",
                self.0.version, self.0.name
            );
            let _ = Command::new("pg_ctlcluster")
                .args([
                    "--skip-systemctl-redirect",
                    &self.0.version,
                    &self.0.name,
                    "start",
                ])
                .status();
        }
    }
}

fn exactly_once(store: Store, mode: Mode) {
    let run = Run::new(0xABA7, store);
    let started = Instant::now();
    let mut workers: Vec<Worker> = (0..4)
        .map(|i| run.spawn(&format!("w{i}"), Duration::from_secs(30), 0, mode))
        .collect();
    for worker in &mut workers {
        worker.wait_for_exit(started + DEADLINE);
    }
    let elapsed = started.elapsed();
    let report = verify(&run.db, &run.logs(), true);
    println!(
        "  4 processes: {} tasks in {:.2} s ({:.0} tasks/s), {} attempts",
        report.tasks,
        elapsed.as_secs_f64(),
        report.tasks as f64 / elapsed.as_secs_f64(),
        report.attempts
    );
}

fn crashes(store: Store, mode: Mode) {
    let run = Run::new(0x5EED, store);
    // A short lease, so the reaper takes a dead worker's tasks back soon; work of up to 3 ms
    // per task, so a kill usually lands while a task is held.
    let lease = Duration::from_millis(750);
    let spawn = |name: &str| run.spawn(name, lease, 3, mode);
    let started = Instant::now();
    let mut workers: Vec<Worker> = (0..4).map(|i| spawn(&format!("w{i}"))).collect();
    let mut kills = 0;
    while kills < 20 {
        std::thread::sleep(Duration::from_millis(fastrand::u64(50..=250)));
        let victim = fastrand::usize(..workers.len());
        if !workers[victim].kill() {
            // It had finished: the DAG ran out before the kills did.
            break;
        }
        kills += 1;
        workers[victim] = spawn(&format!("w{victim}-after-kill-{kills}"));
    }
    for worker in &mut workers {
        worker.wait_for_exit(started + DEADLINE);
    }
    let elapsed = started.elapsed();
    let report = verify(&run.db, &run.logs(), false);
    println!(
        "  {kills} kills: {} tasks in {:.2} s, {} attempts ({} lost to kills)",
        report.tasks,
        elapsed.as_secs_f64(),
        report.attempts,
        report.lost_attempts
    );
    assert_eq!(kills, 20, "the DAG finished before 20 kills landed");
    assert!(
        report.lost_attempts > 0,
        "no kill landed while a task was held, so recovery was not tested"
    );
}

/// One scenario's database, and its folder of each worker's log and stderr.
struct Run {
    dir: TempDir,
    /// The `--db` value of the database.
    db: String,
    /// The PostgreSQL database, dropped with the run.
    _postgres: Option<TestDatabase>,
}

impl Run {
    /// A fresh database holding the DAG.
    fn new(seed: u64, store: Store) -> Self {
        fastrand::seed(seed);
        let dir = tempfile::tempdir().expect("a temporary directory");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let (db, postgres) = match store {
            Store::Sqlite => (dir.path().join("queue.db").display().to_string(), None),
            Store::Postgres => {
                let test = runtime.block_on(TestDatabase::create());
                (test.url().to_string(), Some(test))
            }
        };
        let run = Self {
            dir,
            db,
            _postgres: postgres,
        };
        runtime.block_on(async {
            let location = Location::parse(&run.db).expect("a database location");
            let db = Backend::open(&location, Access::Write, Role::Command)
                .await
                .expect("open the database");
            let queue = TaskQueue::new(db.queue_store.clone()).with_limits(QueueLimits::default());
            let stored = queue
                .submit_batch(layered_dag())
                .await
                .expect("submit the DAG");
            assert_eq!(stored.len(), LAYERS * WIDTH);
            db.close().await;
        });
        run
    }

    fn spawn(&self, name: &str, lease: Duration, max_work_ms: u64, mode: Mode) -> Worker {
        let args = WorkerArgs {
            db: self.db.clone(),
            name: name.to_string(),
            log: self.dir.path().join(format!("{name}.log")),
            lease,
            max_per_claim: 4,
            max_work: Duration::from_millis(max_work_ms),
            loops: mode.loops(),
            grouped: matches!(mode, Mode::Grouped),
        };
        let stderr = self.dir.path().join(format!("{name}.stderr"));
        let child = Command::new(std::env::current_exe().expect("the test executable"))
            .args(args.to_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("a stderr file"))
            .spawn()
            .expect("spawn a worker");
        Worker {
            name: name.to_string(),
            child,
            stderr,
        }
    }

    /// Every worker's log of confirmed completions.
    fn logs(&self) -> Logs {
        Logs::read(self.dir.path())
    }

    /// The name of the run's PostgreSQL database.
    fn database_name(&self) -> &str {
        self._postgres.as_ref().expect("a PostgreSQL run").name()
    }

    /// The workers' stderr, every file.
    fn stderr(&self) -> Vec<String> {
        let mut texts = Vec::new();
        for entry in std::fs::read_dir(self.dir.path()).expect("read the run's folder") {
            let path = entry.expect("a folder entry").path();
            if path.extension().is_some_and(|e| e == "stderr") {
                texts.push(read(&path));
            }
        }
        texts
    }

    fn stderr_contains(&self, text: &str) -> bool {
        self.stderr().iter().any(|t| t.contains(text))
    }

    /// The distinct lines the workers printed (alike when they differ only in their numbers),
    /// the first of each kind with how often the kind came; checks that each is plain: no
    /// SQL, no driver's type or debug form.
    fn plain_stderr(&self) -> Vec<(String, usize)> {
        let mut lines: Vec<(String, String, usize)> = Vec::new();
        for text in self.stderr() {
            for line in text.lines() {
                let masked = mask_numbers(line);
                match lines.iter_mut().find(|(kind, _, _)| *kind == masked) {
                    Some((_, _, n)) => *n += 1,
                    None => lines.push((masked, line.to_string(), 1)),
                }
            }
        }
        let lines: Vec<(String, usize)> =
            lines.into_iter().map(|(_, first, n)| (first, n)).collect();
        for (line, _) in &lines {
            let lower = line.to_lowercase();
            for jargon in JARGON {
                assert!(
                    !lower.contains(jargon),
                    "a worker printed {jargon:?}, which is not plain: {line}"
                );
            }
        }
        lines
    }
}

/// What a plain line never holds: SQL, the driver's names, a Rust debug form.
const JARGON: &[&str] = &[
    "select ",
    "insert ",
    "update ",
    "delete ",
    "returning",
    "sqlx",
    "sqlstate",
    "pgdatabaseerror",
    "error returned from database",
    "pooltimedout",
    "io(",
    "database(",
    "connection(",
    " { ",
];

/// `line` with each run of digits (and the dots in it) replaced by `#`: its kind.
fn mask_numbers(line: &str) -> String {
    let mut masked = String::with_capacity(line.len());
    let mut in_number = false;
    for c in line.chars() {
        if c.is_ascii_digit() || (in_number && c == '.') {
            if !in_number {
                masked.push('#');
                in_number = true;
            }
        } else {
            in_number = false;
            masked.push(c);
        }
    }
    masked
}

/// A running worker process.
struct Worker {
    name: String,
    child: Child,
    stderr: PathBuf,
}

impl Worker {
    /// SIGKILLs the worker; false if it had already exited.
    fn kill(&mut self) -> bool {
        if self.child.try_wait().expect("poll a worker").is_some() {
            return false;
        }
        self.child.kill().expect("kill a worker");
        self.child.wait().expect("reap a killed worker");
        true
    }

    /// Fails if the worker has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("poll a worker") {
            panic!(
                "worker {} exited ({status}) before the faults were done:\n{}",
                self.name,
                read(&self.stderr)
            );
        }
    }

    /// Waits for the worker to exit by itself, successfully, before `deadline`.
    fn wait_for_exit(&mut self, deadline: Instant) {
        loop {
            if let Some(status) = self.child.try_wait().expect("poll a worker") {
                assert!(
                    status.success(),
                    "worker {} exited with {status}:\n{}",
                    self.name,
                    read(&self.stderr)
                );
                return;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "worker {} did not finish in time:\n{}",
                    self.name,
                    read(&self.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `LAYERS` layers of `WIDTH` tasks; each task past the first layer depends on one to three
/// tasks of the layer before, and sometimes on one further back.
fn layered_dag() -> Vec<NewTask> {
    let ids: Vec<Vec<Uuid>> = (0..LAYERS)
        .map(|_| (0..WIDTH).map(|_| Uuid::new_v4()).collect())
        .collect();
    let mut tasks = Vec::with_capacity(LAYERS * WIDTH);
    for (layer, layer_ids) in ids.iter().enumerate() {
        for (i, id) in layer_ids.iter().enumerate() {
            let mut dependencies = Vec::new();
            if layer > 0 {
                for _ in 0..fastrand::usize(1..=3) {
                    dependencies.push(ids[layer - 1][fastrand::usize(..WIDTH)]);
                }
                if layer > 1 && fastrand::bool() {
                    dependencies.push(ids[fastrand::usize(..layer - 1)][fastrand::usize(..WIDTH)]);
                }
                dependencies.sort();
                dependencies.dedup();
            }
            tasks.push(NewTask {
                id: *id,
                dependencies,
                max_retries: MAX_RETRIES,
                ..NewTask::new(format!("layer {layer} task {i}"), "no-op", "worker")
            });
        }
    }
    tasks
}
