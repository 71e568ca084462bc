//! Scenario 5: the ready query and the claim path at 1,000,000 tasks, 100,000 of them ready,
//! priorities spread so the order matters. The rows are bulk-loaded raw in one transaction; the
//! measured calls go through our API, and the baseline runs the same SQL text raw.

use std::time::Instant;

use abathur::domain::ports::TaskRepository;
use abathur::infrastructure::database::TaskRepositoryImpl;

use super::{count, warm_up};
use crate::fixture::{self, LoadedTask};
use crate::ours::{CommitMode, LEASE};
use crate::raw::RawQueue;
use crate::report::{Measure, Row};
use crate::stats::Samples;
use crate::{BenchError, Context, Findings, Scenario};

/// Tasks each ready query returns, as a worker polling for work would ask.
const LIMIT: usize = 10;

pub async fn run(cx: &Context, findings: &mut Findings) -> Result<Vec<Row>, BenchError> {
    let s = cx.sizes;
    let title = Scenario::Ready.title();
    let path = cx.db_path("ready");
    fixture::create(&path).await?;
    let every = (s.ready_table / s.ready_ready).max(1);
    let loaded = Instant::now();
    {
        let mut conn = fixture::raw(&path)?;
        fixture::load_tasks(&mut conn, s.ready_table, |i| LoadedTask {
            status: if i % every == 0 { "ready" } else { "completed" },
            calculated_priority: ((i * 7_919) % 1_000) as f64 / 100.0,
        })?;
        conn.close().map_err(|(_, e)| e)?;
    }
    println!(
        "  loaded {} tasks ({} ready) in {:.1} s",
        count(s.ready_table),
        count(s.ready_table.div_ceil(every)),
        loaded.elapsed().as_secs_f64()
    );
    let label = format!(
        "{} tasks, {} ready",
        count(s.ready_table),
        count(s.ready_ready)
    );

    let mut raw = RawQueue::open(&path)?;
    let mut base_query = Samples::with_capacity(s.ready_queries);
    let started = Instant::now();
    let warm = warm_up(s.ready_queries);
    for i in 0..warm + s.ready_queries {
        let t = Instant::now();
        let rows = raw.ready(LIMIT as i64)?;
        if i >= warm {
            base_query.push(t.elapsed());
        }
        if rows.len() != LIMIT {
            return Err(BenchError(format!(
                "the baseline ready query found {}",
                rows.len()
            )));
        }
    }
    let base_query = Measure::latency(started.elapsed(), base_query);

    let mut rows = Vec::new();
    for mode in CommitMode::ALL {
        let (db, queue) = mode.open(&path).await?;
        let repo = TaskRepositoryImpl::new(db.pool().clone());
        let mut query = Samples::with_capacity(s.ready_queries);
        let started = Instant::now();
        let warm = warm_up(s.ready_queries);
        for i in 0..warm + s.ready_queries {
            let t = Instant::now();
            let ready = repo.get_ready_tasks(LIMIT).await?;
            if i >= warm {
                query.push(t.elapsed());
            }
            if ready.len() != LIMIT {
                return Err(BenchError(format!("get_ready_tasks found {}", ready.len())));
            }
        }
        let row = Row::new(
            title,
            format!(
                "get_ready_tasks({LIMIT}), {label}, {} calls",
                count(s.ready_queries)
            ),
            Measure::latency(started.elapsed(), query),
        )
        .baseline(base_query.clone());
        if mode == CommitMode::PerOperation {
            findings.ready_p99 = row.ours.latency.percentile(99.0);
        }
        row.print();
        rows.push(row);

        let mut claim = Samples::with_capacity(s.ready_claims);
        let started = Instant::now();
        let warm = warm_up(s.ready_claims);
        for i in 0..warm + s.ready_claims {
            let t = Instant::now();
            let claimed = queue.claim("bench", &[], LEASE, 1).await?;
            if i >= warm {
                claim.push(t.elapsed());
            }
            if claimed.len() != 1 {
                return Err(BenchError("our claim found nothing ready".into()));
            }
        }
        db.close().await;
        let ours = Measure::latency(started.elapsed(), claim);
        let mut base_claim = Samples::with_capacity(s.ready_claims);
        let started = Instant::now();
        let warm = warm_up(s.ready_claims);
        for i in 0..warm + s.ready_claims {
            let t = Instant::now();
            let claimed = raw.claim("bench-baseline", 1)?;
            if i >= warm {
                base_claim.push(t.elapsed());
            }
            if claimed.len() != 1 {
                return Err(BenchError("the baseline claim found nothing ready".into()));
            }
        }
        let row = Row::new(
            title,
            format!(
                "claim 1 (one commit each), {label}, {} calls, {}",
                count(s.ready_claims),
                mode.label()
            ),
            ours,
        )
        .baseline(Measure::latency(started.elapsed(), base_claim));
        if mode == CommitMode::PerOperation {
            findings.claim_p99 = row.ours.latency.percentile(99.0);
        }
        row.print();
        rows.push(row);
    }
    Ok(rows)
}
