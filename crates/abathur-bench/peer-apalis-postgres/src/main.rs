//! apalis-postgres on the no-op claim + complete workload of abathur's PostgreSQL benchmarks.
//!
//! `peer-apalis-postgres DATABASE_URL JOBS WORKERS`: installs apalis-postgres's schema on the
//! database (its own migrations), pushes JOBS no-op jobs, then runs WORKERS apalis workers in
//! this process (apalis-postgres's default configuration: it polls, fetching 10 jobs at a
//! time) until the database holds every job as done, and prints one line of JSON:
//! `{"jobs":N,"concurrency":W,"seconds":S,"jobs_per_second":R,...}`.
//! The clock runs from the start of the workers until the last job is stored as done. The
//! database should be fresh: the run refuses to start if it already holds jobs.

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use apalis::prelude::*;
use apalis_postgres::PostgresStorage;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

/// The apalis-postgres version this project is locked to (see Cargo.lock).
const APALIS_POSTGRES: &str = "1.0.0";

static HANDLED: AtomicUsize = AtomicUsize::new(0);

async fn noop(_job: u64) -> Result<(), BoxDynError> {
    HANDLED.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

async fn count_jobs(pool: &PgPool, done: bool) -> Result<i64, sqlx::Error> {
    let sql = if done {
        "SELECT COUNT(*) FROM apalis.jobs WHERE status = 'Done'"
    } else {
        "SELECT COUNT(*) FROM apalis.jobs"
    };
    sqlx::query_scalar(sql).fetch_one(pool).await
}

async fn run(url: &str, jobs: usize, workers: usize) -> Result<f64, BoxDynError> {
    let pool = PgPoolOptions::new()
        .max_connections((workers as u32 + 2).max(10))
        .connect(url)
        .await?;
    PostgresStorage::setup(&pool).await?;
    if count_jobs(&pool, false).await? != 0 {
        return Err("the database already holds jobs: give the run a fresh database".into());
    }
    let mut storage = PostgresStorage::<u64>::new(&pool);
    let mut items = futures::stream::iter(0..jobs as u64);
    storage.push_stream(&mut items).await?;
    if count_jobs(&pool, false).await? != jobs as i64 {
        return Err("the jobs were not all pushed".into());
    }

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
                    && count_jobs(&pool, true)
                        .await
                        .map_err(std::io::Error::other)?
                        >= jobs as i64
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
    let done = count_jobs(&pool, true).await?;
    if done != jobs as i64 {
        return Err(format!("{done} of {jobs} jobs done").into());
    }
    pool.close().await;
    Ok(seconds)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, jobs, workers] = &args[..] else {
        eprintln!("usage: peer-apalis-postgres DATABASE_URL JOBS WORKERS");
        return ExitCode::from(2);
    };
    let (Ok(jobs), Ok(workers)) = (jobs.parse::<usize>(), workers.parse::<usize>()) else {
        eprintln!("peer-apalis-postgres: JOBS and WORKERS must be numbers");
        return ExitCode::from(2);
    };
    if jobs == 0 || workers == 0 {
        eprintln!("peer-apalis-postgres: JOBS and WORKERS must be at least 1");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("peer-apalis-postgres: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(url, jobs, workers)) {
        Ok(seconds) => {
            println!(
                "{{\"jobs\":{jobs},\"concurrency\":{workers},\"seconds\":{seconds:.6},\"jobs_per_second\":{:.1},\"handled\":{},\"peer\":\"apalis-postgres\",\"version\":\"{APALIS_POSTGRES}\",\"batch_size\":10}}",
                jobs as f64 / seconds,
                HANDLED.load(Ordering::Relaxed)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("peer-apalis-postgres: {e}");
            ExitCode::FAILURE
        }
    }
}
