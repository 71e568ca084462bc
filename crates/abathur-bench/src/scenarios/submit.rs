//! Scenario 1: submitting tasks one at a time, and in batches.

use std::time::Instant;

use abathur::domain::queue::NewTask;
use uuid::Uuid;

use super::count;
use crate::fixture::{self, AGENT_TYPE};
use crate::ours::CommitMode;
use crate::raw::{RawQueue, RawTask};
use crate::report::{Measure, Row};
use crate::stats::Samples;
use crate::{BenchError, Context, Findings, Scenario};

pub async fn run(cx: &Context, findings: &mut Findings) -> Result<Vec<Row>, BenchError> {
    let s = cx.sizes;
    let title = Scenario::Submit.title();
    let mut rows = Vec::new();

    let base_single = {
        let path = cx.db_path("submit-single-baseline");
        fixture::create(&path).await?;
        let mut raw = RawQueue::open(&path)?;
        let mut latency = Samples::with_capacity(s.submit_single);
        let started = Instant::now();
        for _ in 0..s.submit_single {
            let task = RawTask {
                id: Uuid::new_v4(),
                dependencies: Vec::new(),
            };
            let t = Instant::now();
            raw.submit(std::slice::from_ref(&task))?;
            latency.push(t.elapsed());
        }
        Measure::throughput(s.submit_single, started.elapsed(), latency)
    };
    for mode in CommitMode::ALL {
        let path = cx.db_path("submit-single");
        fixture::create(&path).await?;
        let (db, queue) = mode.open(&path).await?;
        let mut latency = Samples::with_capacity(s.submit_single);
        let started = Instant::now();
        for i in 0..s.submit_single {
            let task = NewTask::new(format!("bench task {i}"), "", AGENT_TYPE);
            let t = Instant::now();
            queue.submit(task).await?;
            latency.push(t.elapsed());
        }
        let ours = Measure::throughput(s.submit_single, started.elapsed(), latency);
        db.close().await;
        let row = Row::new(
            title,
            format!(
                "{} tasks one at a time, {}",
                count(s.submit_single),
                mode.label()
            ),
            ours,
        )
        .baseline(base_single.clone());
        findings.submit_single_ratio = crate::better(
            findings.submit_single_ratio,
            row.ours
                .rate
                .zip(base_single.rate)
                .map(|(a, b)| (a / b, mode.label())),
        );
        row.print();
        rows.push(row);
    }

    let total = s.submit_batches * s.submit_batch_size;
    let base_batch = {
        let path = cx.db_path("submit-batch-baseline");
        fixture::create(&path).await?;
        let mut raw = RawQueue::open(&path)?;
        let mut latency = Samples::with_capacity(s.submit_batches);
        let started = Instant::now();
        for _ in 0..s.submit_batches {
            let batch: Vec<RawTask> = (0..s.submit_batch_size)
                .map(|_| RawTask {
                    id: Uuid::new_v4(),
                    dependencies: Vec::new(),
                })
                .collect();
            let t = Instant::now();
            raw.submit(&batch)?;
            latency.push(t.elapsed());
        }
        Measure::throughput(total, started.elapsed(), latency)
    };
    for mode in CommitMode::ALL {
        let path = cx.db_path("submit-batch");
        fixture::create(&path).await?;
        let (db, queue) = mode.open(&path).await?;
        let mut latency = Samples::with_capacity(s.submit_batches);
        let started = Instant::now();
        for b in 0..s.submit_batches {
            let batch: Vec<NewTask> = (0..s.submit_batch_size)
                .map(|i| NewTask::new(format!("bench task {b}/{i}"), "", AGENT_TYPE))
                .collect();
            let t = Instant::now();
            queue.submit_batch(batch).await?;
            latency.push(t.elapsed());
        }
        let ours = Measure::throughput(total, started.elapsed(), latency);
        db.close().await;
        let row = Row::new(
            title,
            format!(
                "{} batches of {} (tasks/s; latency per batch), {}",
                count(s.submit_batches),
                count(s.submit_batch_size),
                mode.label()
            ),
            ours,
        )
        .baseline(base_batch.clone());
        row.print();
        rows.push(row);
    }
    Ok(rows)
}
