//! apalis-sqlite on the no-op claim + complete workload of abathur's scenario 7.
//!
//! `peer-apalis DB JOBS WORKERS`: pushes JOBS no-op jobs into a fresh database file (WAL,
//! `synchronous=NORMAL`, the pragmas abathur uses), then runs WORKERS apalis workers in this
//! process until the database holds every job as done, and prints one line:
//! `result version=V jobs=N workers=W seconds=S`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use apalis::prelude::*;
use apalis_sqlite::SqliteStorage;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

/// The apalis-sqlite version this project is locked to (see Cargo.lock).
const APALIS_SQLITE: &str = "1.0.0";

static HANDLED: AtomicUsize = AtomicUsize::new(0);

async fn noop(_job: u64) -> Result<(), BoxDynError> {
    HANDLED.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

async fn done_jobs(pool: &SqlitePool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM Jobs WHERE status = 'Done'")
        .fetch_one(pool)
        .await
}

async fn run(db: PathBuf, jobs: usize, workers: usize) -> Result<f64, BoxDynError> {
    let options = SqliteConnectOptions::new()
        .filename(&db)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(10)
        .connect_with(options)
        .await?;
    // Its migrations only: `setup` would also turn `synchronous` off on one connection, which
    // abathur and the baseline do not do.
    SqliteStorage::migrations().run(&pool).await?;
    let mut storage = SqliteStorage::<u64>::new(&pool);
    let mut items = futures::stream::iter(0..jobs as u64);
    storage.push_stream(&mut items).await?;

    let started = Instant::now();
    let mut handles = Vec::with_capacity(workers);
    for w in 0..workers {
        let worker = WorkerBuilder::new(format!("peer-{w}"))
            .backend(storage.clone())
            .build(noop);
        let pool = pool.clone();
        // Every worker stops once the database holds all jobs done: acknowledgements are
        // written after the handler returns, so the handler's count alone would stop early.
        let signal = async move {
            loop {
                if HANDLED.load(Ordering::Relaxed) >= jobs
                    && done_jobs(&pool).await.map_err(std::io::Error::other)? >= jobs as i64
                {
                    return Ok::<(), WorkerError>(());
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        handles.push(tokio::spawn(worker.run_until(signal)));
    }
    for handle in handles {
        handle.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let done = done_jobs(&pool).await?;
    if done != jobs as i64 {
        return Err(format!("{done} of {jobs} jobs done").into());
    }
    pool.close().await;
    Ok(seconds)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [db, jobs, workers] = &args[..] else {
        eprintln!("usage: peer-apalis DB JOBS WORKERS");
        return ExitCode::from(2);
    };
    let (Ok(jobs), Ok(workers)) = (jobs.parse::<usize>(), workers.parse::<usize>()) else {
        eprintln!("peer-apalis: JOBS and WORKERS must be numbers");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("peer-apalis: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(PathBuf::from(db), jobs, workers)) {
        Ok(seconds) => {
            println!(
                "result version={APALIS_SQLITE} jobs={jobs} workers={workers} seconds={seconds:.6}"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("peer-apalis: {e}");
            ExitCode::FAILURE
        }
    }
}
