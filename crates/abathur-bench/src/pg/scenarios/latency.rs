//! P2 `pg-latency`: enqueue to start. A worker idles on a `PgChanges` subscription and claims
//! as soon as it is woken; another pool submits one task at a time, each once the worker is
//! idle again. Timed from the submit returning to the worker's claim returning the task. The
//! baseline is the raw `LISTEN/NOTIFY` round trip: a `NOTIFY` committed on one connection (in
//! its own implicit transaction), a sqlx `PgListener` receiving it, timed from the `NOTIFY`
//! being sent to the listener's `recv` returning. (Timed from the `NOTIFY` returning, it is
//! mostly zero: the notification reaches the listener before the notifier reads its answer.)

use std::time::{Duration, Instant};

use abathur_core::ports::Changes;
use abathur_core::queue::NewTask;
use abathur_postgres::PgChanges;
use sqlx::postgres::PgListener;
use sqlx::{Connection, Executor};
use tokio::sync::mpsc;

use crate::fixture::AGENT_TYPE;
use crate::ours::LEASE;
use crate::pg::db::Fresh;
use crate::pg::ours;
use crate::pg::{PgContext, PgFindings, PgScenario};
use crate::report::{Measure, Row};
use crate::scenarios::{count, warm_up};
use crate::stats::Samples;
use crate::BenchError;

/// The pause after the worker (or listener) says it is idle, before the next submit, so that
/// it is parked in its wait rather than still on its way there.
const SETTLE: Duration = Duration::from_millis(2);

/// The longest a worker waits for one wake-up: far above any expected latency, so a lost
/// notification shows as a failed run rather than a slow one.
const WAIT: Duration = Duration::from_secs(10);

/// The notification channel of the baseline (not the adapter's, so that nothing else wakes).
const CHANNEL: &str = "abathur_bench_latency";

/// What the idle worker tells the submitter.
#[derive(Debug)]
enum Event {
    /// Its claim found nothing; it is about to wait on its subscription.
    Idle,
    /// Its claim returned a task at this instant.
    Claimed(Instant),
}

async fn recv(rx: &mut mpsc::UnboundedReceiver<Event>) -> Result<Event, BenchError> {
    tokio::time::timeout(WAIT * 2, rx.recv())
        .await
        .map_err(|_| BenchError("the worker said nothing for 20 s".into()))?
        .ok_or_else(|| BenchError("the worker stopped".into()))
}

/// Ours: submit-returned to claim-returned, and submit-called to claim-returned, per task.
pub async fn measure_ours(
    calls: usize,
    warm: usize,
) -> Result<(Samples, Samples, Duration), BenchError> {
    let fresh = Fresh::new(3).await?;
    let submitter_db = fresh.pool(2).await?;
    let submitter = ours::queue(&submitter_db);
    let worker_queue = ours::queue(&fresh.db);
    let changes = PgChanges::new(fresh.db.pool().clone());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let total = warm + calls;
    let worker = tokio::spawn(async move {
        let mut subscription = changes.subscribe().await?;
        let mut done = 0;
        while done < total {
            let claimed = worker_queue.claim("bench-latency", &[], LEASE, 1).await?;
            if let Some(task) = claimed.first() {
                let _ = tx.send(Event::Claimed(Instant::now()));
                worker_queue.complete(task.lease.attempt_id, None).await?;
                done += 1;
                continue;
            }
            let _ = tx.send(Event::Idle);
            subscription.changed(WAIT).await?;
        }
        subscription.close().await;
        Ok::<(), BenchError>(())
    });
    let mut from_return = Samples::with_capacity(calls);
    let mut from_call = Samples::with_capacity(calls);
    let started = Instant::now();
    let result = async {
        for i in 0..total {
            while !matches!(recv(&mut rx).await?, Event::Idle) {}
            tokio::time::sleep(SETTLE).await;
            let called = Instant::now();
            submitter
                .submit(NewTask::new(format!("latency {i}"), "", AGENT_TYPE))
                .await?;
            let returned = Instant::now();
            let claimed = loop {
                if let Event::Claimed(at) = recv(&mut rx).await? {
                    break at;
                }
            };
            if i >= warm {
                from_return.push(claimed.saturating_duration_since(returned));
                from_call.push(claimed.saturating_duration_since(called));
            }
        }
        Ok::<(), BenchError>(())
    }
    .await;
    let elapsed = started.elapsed();
    if result.is_err() {
        worker.abort();
    }
    let worker = worker.await;
    submitter_db.close().await;
    fresh.finish().await;
    result?;
    match worker {
        Ok(outcome) => outcome?,
        Err(e) if e.is_cancelled() => {}
        Err(e) => return Err(e.into()),
    }
    Ok((from_return, from_call, elapsed))
}

/// The baseline: `NOTIFY` sent to `recv` returned, per notification; and from the `NOTIFY`
/// returning, for the record.
pub async fn measure_raw(
    calls: usize,
    warm: usize,
) -> Result<(Samples, Samples, Duration), BenchError> {
    let fresh = Fresh::new(1).await?;
    let mut listener = PgListener::connect(fresh.url()).await?;
    listener.listen(CHANNEL).await?;
    let mut notifier = fresh.connection().await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let total = warm + calls;
    let receiver = tokio::spawn(async move {
        for _ in 0..total {
            let _ = tx.send(Event::Idle);
            listener.recv().await?;
            let _ = tx.send(Event::Claimed(Instant::now()));
        }
        Ok::<(), BenchError>(())
    });
    let mut samples = Samples::with_capacity(calls);
    let mut from_return = Samples::with_capacity(calls);
    let started = Instant::now();
    let notify = format!("NOTIFY {CHANNEL}");
    let result = async {
        for i in 0..total {
            while !matches!(recv(&mut rx).await?, Event::Idle) {}
            tokio::time::sleep(SETTLE).await;
            let sent = Instant::now();
            notifier.execute(notify.as_str()).await?;
            let returned = Instant::now();
            let received = loop {
                if let Event::Claimed(at) = recv(&mut rx).await? {
                    break at;
                }
            };
            if i >= warm {
                samples.push(received.saturating_duration_since(sent));
                from_return.push(received.saturating_duration_since(returned));
            }
        }
        Ok::<(), BenchError>(())
    }
    .await;
    let elapsed = started.elapsed();
    if result.is_err() {
        receiver.abort();
    }
    let receiver = receiver.await;
    let _ = notifier.close().await;
    fresh.finish().await;
    result?;
    match receiver {
        Ok(outcome) => outcome?,
        Err(e) if e.is_cancelled() => {}
        Err(e) => return Err(e.into()),
    }
    Ok((samples, from_return, elapsed))
}

pub async fn run(cx: &PgContext, findings: &mut PgFindings) -> Result<Vec<Row>, BenchError> {
    let calls = cx.sizes.latency_tasks;
    let warm = warm_up(calls);
    let (raw, raw_from_return, raw_elapsed) = measure_raw(calls, warm).await?;
    let (from_return, from_call, elapsed) = measure_ours(calls, warm).await?;
    let row = Row::new(
        PgScenario::Latency.title(),
        format!(
            "enqueue to start: submit returned to claim returned, idle worker woken by PgChanges, {} tasks (baseline: NOTIFY sent to PgListener::recv returned)",
            count(calls)
        ),
        Measure::latency(elapsed, from_return),
    )
    .baseline(Measure::latency(raw_elapsed, raw));
    row.print();
    println!(
        "    from the submit call (submit included): p50/p99 {}",
        Measure::latency(elapsed, from_call)
            .percentiles()
            .unwrap_or_else(|| "–".into())
    );
    println!(
        "    baseline from the NOTIFY returning: p50/p99 {}",
        Measure::latency(raw_elapsed, raw_from_return)
            .percentiles()
            .unwrap_or_else(|| "–".into())
    );
    findings.latency = row.ours.latency.p50_p99();
    Ok(vec![row])
}
