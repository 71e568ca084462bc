//! Time comes from the server's clock: workers whose own clocks are ten minutes fast or slow
//! agree on who holds a lease, because every lease, expiry and history time is read from the
//! server inside the operation's transaction (`Now::Store`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use abathur_core::clock::{Clock, Now};
use abathur_core::models::TaskStatus;
use abathur_core::queue::{NewTask, QueueError, TaskQueue};
use abathur_postgres::testing::TestDatabase;
use abathur_postgres::{PgConfig, PgQueueStore};
use chrono::{DateTime, Utc};
use sqlx::Row;

/// A machine whose wall clock is off by `offset`, asking the store for the time as production
/// does.
#[derive(Debug)]
struct SkewedClock {
    offset: chrono::Duration,
}

impl Clock for SkewedClock {
    fn now(&self) -> DateTime<Utc> {
        abathur_core::timestamp::truncate_to_micros(Utc::now() + self.offset)
    }

    fn store_time(&self) -> Now {
        Now::Store
    }
}

fn machine(store: &Arc<PgQueueStore>, minutes: i64) -> TaskQueue {
    TaskQueue::new(store.clone()).with_clock(Arc::new(SkewedClock {
        offset: chrono::Duration::minutes(minutes),
    }))
}

async fn server_now(db: &abathur_postgres::PgDatabase) -> DateTime<Utc> {
    sqlx::query("SELECT clock_timestamp() AS now")
        .fetch_one(db.pool())
        .await
        .expect("the server's clock")
        .get("now")
}

#[tokio::test]
async fn workers_ten_minutes_apart_neither_steal_nor_lose_a_lease() {
    let (_test, db) = TestDatabase::migrated(PgConfig::default()).await;
    let store = Arc::new(PgQueueStore::new(db.pool().clone()));
    for (holder_minutes, other_minutes) in [(10, -10), (-10, 10)] {
        let holder = machine(&store, holder_minutes);
        let other = machine(&store, other_minutes);
        let task = holder
            .submit(NewTask::new(
                "skewed",
                "a task claimed across skewed clocks",
                "worker",
            ))
            .await
            .expect("submit");
        let before = server_now(&db).await;
        let claimed = holder
            .claim("holder", &[], Duration::from_secs(60), 1)
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 1);
        let lease = &claimed[0].lease;
        assert_eq!(lease.task_id, task.id);
        // The lease runs from the server's now, not the holder's.
        let after = server_now(&db).await;
        assert!(
            lease.expires_at >= before + chrono::Duration::seconds(60)
                && lease.expires_at <= after + chrono::Duration::seconds(60),
            "lease expiry {} is not the server's now + 60 s ({before} .. {after})",
            lease.expires_at
        );

        // The other machine's reaper, its clock 20 minutes away from the holder's, takes
        // nothing back: by the server's clock the lease is live.
        let reaped = other.reap().await.expect("reap");
        assert!(reaped.lost.is_empty() && reaped.timed_out.is_empty());
        assert!(other
            .claim("other", &[], Duration::from_secs(60), 1)
            .await
            .expect("claim")
            .is_empty());

        // The holder keeps its lease and completes.
        holder
            .heartbeat(lease.attempt_id, Duration::from_secs(60))
            .await
            .expect("heartbeat");
        holder
            .complete(lease.attempt_id, None)
            .await
            .expect("complete");
        let history = holder.history(task.id).await.expect("history");
        assert_eq!(history.last().map(|e| e.to), Some(TaskStatus::Completed));
        // History times are the server's: none is ten minutes off it.
        let now = server_now(&db).await;
        for event in &history {
            assert!(
                (now - event.at).num_seconds().abs() < 60,
                "event at {} is not the server's time {now}",
                event.at
            );
        }
    }
}

#[tokio::test]
async fn a_lease_expired_by_the_servers_clock_is_taken_back_whatever_the_reapers_clock() {
    let (_test, db) = TestDatabase::migrated(PgConfig::default()).await;
    let store = Arc::new(PgQueueStore::new(db.pool().clone()));
    let holder = machine(&store, 10);
    // Slow by ten minutes: by its own clock the lease has nine minutes and more to run.
    let reaper = machine(&store, -10);
    holder
        .submit(NewTask::new(
            "expires",
            "a task whose lease expires",
            "worker",
        ))
        .await
        .expect("submit");
    let claimed = holder
        .claim("holder", &[], Duration::from_millis(200), 1)
        .await
        .expect("claim");
    let attempt = claimed[0].lease.attempt_id;
    // Until the server's clock passes the expiry, the reaper takes nothing; once it has, the
    // reaper takes the task back. Each round asks the server, so this waits on the server's
    // clock, not on a sleep of ours.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reaped = reaper.reap().await.expect("reap");
        let now = server_now(&db).await;
        if !reaped.lost.is_empty() {
            assert!(now >= claimed[0].lease.expires_at);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the expired lease was never reaped"
        );
        tokio::task::yield_now().await;
    }
    // The holder's late completion is refused (fencing).
    let late = holder.complete(attempt, None).await;
    assert!(
        matches!(late, Err(QueueError::LeaseLost { .. })),
        "{late:?}"
    );
}
