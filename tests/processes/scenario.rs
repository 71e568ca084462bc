//! The scenarios: a DAG submitted, worker processes started (and killed), the outcome checked.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use abathur::backend::{Access, Backend, Location, Role};
use abathur::domain::queue::{NewTask, QueueLimits, TaskQueue};
use abathur_postgres::testing::TestDatabase;
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
