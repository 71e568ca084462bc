//! One worker process: claims tasks, "runs" each for a moment, completes it, and logs each
//! completion the queue confirmed. It reaps now and then, as any process may, and exits once
//! no task is left unfinished. While the database fails in a way that passes (busy, a server
//! restarting, its connections terminated) it tries again with backoff, and says so on stderr
//! once per outage, in the words a user would see.
//!
//! Arguments: `worker DB NAME LOG LEASE_MS MAX_PER_CLAIM MAX_WORK_MS LOOPS GROUPED`: DB is a
//! `--db` value (a SQLite file or a `postgres://` URL), opened as `abathur` opens it; LOOPS
//! claim loops run at once in the process, through the worker's store (group commit on SQLite)
//! when GROUPED is 1.

use std::cell::Cell;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use abathur::backend::{Access, Backend, Location, Role};
use abathur::domain::error::DatabaseError;
use abathur::domain::queue::{QueueError, RetryPolicy, TaskQueue};
use serde_json::json;

/// How often a worker runs the reaper.
const REAP_EVERY: Duration = Duration::from_millis(100);
/// How long a worker with nothing to claim waits before asking again.
const IDLE_WAIT: Duration = Duration::from_millis(5);

/// What a worker was started with.
pub struct WorkerArgs {
    /// A `--db` value.
    pub db: String,
    pub name: String,
    pub log: PathBuf,
    pub lease: Duration,
    pub max_per_claim: u32,
    pub max_work: Duration,
    /// Claim loops running at once in this process.
    pub loops: u32,
    /// Whether the loops' writes go through the group-commit store.
    pub grouped: bool,
}

impl WorkerArgs {
    /// The command-line form that [`main`] parses.
    pub fn to_args(&self) -> Vec<String> {
        vec![
            "worker".into(),
            self.db.clone(),
            self.name.clone(),
            self.log.display().to_string(),
            self.lease.as_millis().to_string(),
            self.max_per_claim.to_string(),
            self.max_work.as_millis().to_string(),
            self.loops.to_string(),
            u8::from(self.grouped).to_string(),
        ]
    }

    fn parse(args: &[String]) -> Option<Self> {
        let [db, name, log, lease, max, work, loops, grouped] = args else {
            return None;
        };
        Some(Self {
            db: db.clone(),
            name: name.clone(),
            log: log.into(),
            lease: Duration::from_millis(lease.parse().ok()?),
            max_per_claim: max.parse().ok()?,
            max_work: Duration::from_millis(work.parse().ok()?),
            loops: loops.parse().ok()?,
            grouped: grouped == "1",
        })
    }
}

pub fn main(args: &[String]) -> ExitCode {
    let Some(args) = WorkerArgs::parse(args) else {
        eprintln!("usage: worker DB NAME LOG LEASE_MS MAX_PER_CLAIM MAX_WORK_MS LOOPS GROUPED");
        return ExitCode::from(2);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("worker {}: {message}", args.name);
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &WorkerArgs) -> Result<(), String> {
    let location = Location::parse(&args.db).map_err(|e| format!("--db: {e}"))?;
    let role = if args.grouped {
        Role::Worker
    } else {
        Role::Command
    };
    let db = Backend::open(&location, Access::Write, role)
        .await
        .map_err(|e| format!("open: {e}"))?;
    let queue = TaskQueue::new(db.queue_store.clone()).with_retry_policy(RetryPolicy {
        base: Duration::from_millis(20),
        max: Duration::from_millis(200),
        jitter: 0.25,
    });
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.log)
        .map_err(|e| format!("log: {e}"))?;
    let log = Arc::new(std::sync::Mutex::new(log));
    let outage = Outage::default();
    let loops: Vec<_> = (0..args.loops.max(1))
        .map(|i| {
            let name = if args.loops > 1 {
                format!("{}-{i}", args.name)
            } else {
                args.name.clone()
            };
            claim_loop(queue.clone(), name, log.clone(), args, &outage)
        })
        .collect();
    let results = futures_join(loops).await;
    db.close().await;
    for result in results {
        result?;
    }
    Ok(())
}

/// Runs `futures` at once on this thread (they borrow the arguments, so they are not
/// spawned); their results in order.
async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, future) in pinned.iter_mut().enumerate() {
            if done[i].is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(output) => done[i] = Some(output),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    done.into_iter()
        .map(|o| o.expect("every loop finished"))
        .collect()
}

/// Whether the database is failing, shared by the process's claim loops (on one thread), so
/// that an outage is told once.
#[derive(Default)]
struct Outage {
    since: Cell<Option<Instant>>,
    tries: Cell<u32>,
}

impl Outage {
    fn failed(&self, error: &DatabaseError) {
        self.tries.set(self.tries.get() + 1);
        if self.since.get().is_none() {
            self.since.set(Some(Instant::now()));
            // A lost connection in the words of `abathur worker`: the variant's own message
            // speaks of opening the database, which this is not.
            let error = match error {
                DatabaseError::Connection(detail) => format!("cannot reach it: {detail}"),
                other => other.to_string(),
            };
            eprintln!("the database failed ({error}); trying again until it answers");
        }
    }

    fn answered(&self) {
        if let Some(since) = self.since.take() {
            eprintln!(
                "the database answers again, after {:.1} s and {} failed tries",
                since.elapsed().as_secs_f64(),
                self.tries.replace(0)
            );
        }
    }
}

/// `op`, tried again with backoff while the database fails in a way that passes, as a real
/// worker does:
/// - busy: SQLite's write lock is not handed out in order, so under heavy contention a writer
///   can wait past the busy timeout (on PostgreSQL the adapter retries serialization failures
///   and deadlocks itself, so none should reach here);
/// - no connection in time, or a connection lost or refused: the PostgreSQL server restarting,
///   or its connections terminated.
///
/// Trying again is safe. A busy failure wrote nothing. A lost connection may have lost the
/// answer of a commit: a completion is repeatable (the repeat is answered as one); a claim
/// whose answer is lost holds its tasks until their lease expires and a reaper takes them
/// back; reaps and overviews are safe to repeat.
async fn retried<T, F, Fut>(outage: &Outage, mut op: F) -> Result<T, QueueError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, QueueError>>,
{
    let started = Instant::now();
    let mut pause = FIRST_PAUSE;
    loop {
        match op().await {
            Err(QueueError::Database(
                e @ (DatabaseError::Busy | DatabaseError::Timeout | DatabaseError::Connection(_)),
            )) if started.elapsed() < GIVE_UP => {
                outage.failed(&e);
                // Spread, so that the workers that lost the server together do not come back
                // in the same instant.
                tokio::time::sleep(pause.mul_f64(0.5 + fastrand::f64())).await;
                pause = (pause * 2).min(LONGEST_PAUSE);
            }
            other => {
                if !matches!(other, Err(QueueError::Database(_))) {
                    outage.answered();
                }
                return other;
            }
        }
    }
}

/// The first pause of [`retried`], doubling up to [`LONGEST_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(10);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);
/// How long one operation is tried before the worker gives up: far longer than a server
/// takes to restart.
const GIVE_UP: Duration = Duration::from_secs(60);

/// One claim loop: claim, work, complete, log; reap now and then; stop when nothing is left.
async fn claim_loop(
    queue: TaskQueue,
    name: String,
    log: Arc<std::sync::Mutex<std::fs::File>>,
    args: &WorkerArgs,
    outage: &Outage,
) -> Result<(), String> {
    let mut last_reap = Instant::now();
    loop {
        if last_reap.elapsed() >= REAP_EVERY {
            retried(outage, || queue.reap())
                .await
                .map_err(|e| format!("reap: {e}"))?;
            last_reap = Instant::now();
        }
        let claimed = retried(outage, || {
            queue.claim(&name, &[], args.lease, args.max_per_claim)
        })
        .await
        .map_err(|e| format!("claim: {e}"))?;
        if claimed.is_empty() {
            let overview = retried(outage, || queue.overview(0))
                .await
                .map_err(|e| format!("overview: {e}"))?;
            let unfinished: u64 = overview
                .counts
                .iter()
                .filter(|(status, _)| !status.is_terminal())
                .map(|(_, n)| n)
                .sum();
            if unfinished == 0 {
                return Ok(());
            }
            tokio::time::sleep(IDLE_WAIT).await;
            continue;
        }
        for task in claimed {
            if !args.max_work.is_zero() {
                let work = fastrand::u64(0..=args.max_work.as_millis() as u64);
                tokio::time::sleep(Duration::from_millis(work)).await;
            }
            let attempt = task.lease.attempt_id;
            match retried(outage, || {
                queue.complete(attempt, Some(json!({ "by": name })))
            })
            .await
            {
                // Written only after the queue confirmed the completion: a worker killed in
                // between leaves a completion out of its log, never one too many.
                Ok(_) => {
                    // One write of the whole line (`writeln!` writes it piece by piece), so a
                    // kill cannot leave half a line behind.
                    let line = format!("{} {attempt}\n", task.task.id);
                    let mut log = log.lock().map_err(|_| "log lock poisoned".to_string())?;
                    log.write_all(line.as_bytes())
                        .map_err(|e| format!("log: {e}"))?;
                }
                // The reaper took the task back while this worker was slow: not an error.
                Err(QueueError::LeaseLost { .. }) => {}
                Err(e) => return Err(format!("complete: {e}")),
            }
        }
    }
}
