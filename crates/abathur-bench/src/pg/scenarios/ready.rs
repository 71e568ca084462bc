//! P4 `pg-ready`: the ready query and a claim at 1,000,000 tasks, 100,000 of them ready,
//! priorities spread so the order matters. The rows are bulk-loaded raw in one statement (the
//! ready ones with the claim key our queue writes), then vacuumed and analysed. The measured
//! calls go through our `PgTaskRepository` and `PgQueueStore`; the baseline runs the same SQL
//! raw on one connection. Each claim is completed, untimed, so the table keeps its size; the
//! ready set loses one task per claim (at most 2,400 of 100,000 at full scale).

use std::time::Instant;

use abathur_core::ports::TaskRepository;
use abathur_postgres::PgTaskRepository;

use crate::ours::LEASE;
use crate::pg::db::{self, Fresh, Shape};
use crate::pg::ours;
use crate::pg::raw::RawPg;
use crate::pg::{PgContext, PgFindings, PgScenario};
use crate::report::{Measure, Row};
use crate::scenarios::{count, warm_up};
use crate::stats::Samples;
use crate::BenchError;

/// Tasks each ready query returns, as a worker polling for work would ask.
const LIMIT: usize = 10;

pub async fn run(cx: &PgContext, findings: &mut PgFindings) -> Result<Vec<Row>, BenchError> {
    let fresh = Fresh::new(2).await?;
    let result = measure(cx, findings, &fresh, PgScenario::Ready.title()).await;
    fresh.finish().await;
    result
}

async fn measure(
    cx: &PgContext,
    findings: &mut PgFindings,
    fresh: &Fresh,
    title: &'static str,
) -> Result<Vec<Row>, BenchError> {
    let s = cx.sizes;
    let every = (s.ready_table / s.ready_ready).max(1);
    let loaded = Instant::now();
    let mut conn = fresh.connection().await?;
    db::load_tasks(
        &mut conn,
        s.ready_table,
        Shape {
            ready_every: every,
            spread: true,
        },
    )
    .await?;
    let ready_count = db::count_status(&mut conn, "ready").await?;
    println!(
        "  loaded {} tasks ({} ready) and vacuumed them in {:.1} s",
        count(s.ready_table),
        count(usize::try_from(ready_count).unwrap_or(0)),
        loaded.elapsed().as_secs_f64()
    );
    let label = format!(
        "{} tasks, {} ready",
        count(s.ready_table),
        count(s.ready_ready)
    );
    let mut raw = RawPg::new(conn);

    // The ready query: raw, then ours.
    let warm = warm_up(s.ready_queries);
    let mut base_query = Samples::with_capacity(s.ready_queries);
    let started = Instant::now();
    for i in 0..warm + s.ready_queries {
        let t = Instant::now();
        let n = raw.ready(LIMIT as i64).await?;
        if i >= warm {
            base_query.push(t.elapsed());
        }
        if n != LIMIT {
            return Err(BenchError(format!("the baseline ready query found {n}")));
        }
    }
    let base_query = Measure::latency(started.elapsed(), base_query);
    let repo = PgTaskRepository::new(fresh.db.pool().clone());
    let mut query = Samples::with_capacity(s.ready_queries);
    let started = Instant::now();
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
    .baseline(base_query);
    findings.ready_p99 = row.ours.latency.percentile(99.0);
    row.print();
    let mut rows = vec![row];

    // A claim of 1, each completed untimed: raw, then ours.
    let warm = warm_up(s.ready_claims);
    let mut base_claim = Samples::with_capacity(s.ready_claims);
    let started = Instant::now();
    for i in 0..warm + s.ready_claims {
        let t = Instant::now();
        let claimed = raw.claim("bench-baseline", 1).await?;
        if i >= warm {
            base_claim.push(t.elapsed());
        }
        let [attempt] = claimed[..] else {
            return Err(BenchError(format!(
                "the baseline claim returned {} tasks",
                claimed.len()
            )));
        };
        raw.complete(attempt).await?;
    }
    let base_claim = Measure::latency(started.elapsed(), base_claim);
    raw.close().await;
    let queue = ours::queue(&fresh.db);
    let mut claim = Samples::with_capacity(s.ready_claims);
    let started = Instant::now();
    for i in 0..warm + s.ready_claims {
        let t = Instant::now();
        let claimed = queue.claim("bench", &[], LEASE, 1).await?;
        if i >= warm {
            claim.push(t.elapsed());
        }
        let [task] = &claimed[..] else {
            return Err(BenchError(format!(
                "our claim returned {} tasks",
                claimed.len()
            )));
        };
        queue.complete(task.lease.attempt_id, None).await?;
    }
    let row = Row::new(
        title,
        format!(
            "claim 1 (one commit each; each completed, untimed), {label}, {} calls",
            count(s.ready_claims)
        ),
        Measure::latency(started.elapsed(), claim),
    )
    .baseline(base_claim);
    findings.claim_p99 = row.ours.latency.percentile(99.0);
    row.print();
    rows.push(row);
    Ok(rows)
}
