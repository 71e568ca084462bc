//! Issue 10, item 1: one out-of-range deadline poisoned the queue. A stored deadline SQLite's
//! `julianday()` cannot read made the calculated priority NULL, and every completion of its
//! dependency, every reap and every priority refresh (which no longer exists) failed for the
//! whole database.

use std::sync::Arc;
use std::time::Duration;

use abathur::domain::models::TaskStatus;
use abathur::domain::ports::TaskRepository;
use abathur::domain::queue::{NewTask, QueueError, TaskQueue};
use abathur::infrastructure::database::{QueueStoreImpl, TaskRepositoryImpl};
use chrono::TimeZone;
use sqlx::SqlitePool;
use uuid::Uuid;

use crate::helpers::database::{table_dump, test_db};
use crate::helpers::ManualClock;

/// What versions before the range was enforced stored for `9999-12-31T23:59:59.9999Z`.
const POISON: &str = "9999-12-31T23:59:59.999900Z";

const LEASE: Duration = Duration::from_secs(30);

fn task(name: &str, deps: &[Uuid]) -> NewTask {
    NewTask {
        dependencies: deps.to_vec(),
        max_retries: 0,
        ..NewTask::new(name, name, "worker")
    }
}

#[track_caller]
fn assert_finite(priority: f64, what: &str) {
    assert!(priority.is_finite(), "{what}: {priority}");
}

async fn poison(pool: &SqlitePool, id: Uuid) {
    let changed = sqlx::query("UPDATE tasks SET deadline = ?1 WHERE id = ?2")
        .bind(POISON)
        .bind(id.to_string())
        .execute(pool)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(changed, 1);
    let unreadable: Option<f64> = sqlx::query_scalar("SELECT julianday(?1)")
        .bind(POISON)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(
        unreadable, None,
        "the poison must be a time SQLite cannot read"
    );
}

#[tokio::test]
async fn a_stored_unreadable_deadline_fails_no_completion_claim_or_reap() {
    let pool = test_db().await;
    let clock = ManualClock::new();
    let queue =
        TaskQueue::new(Arc::new(QueueStoreImpl::new(pool.clone()))).with_clock(clock.clone());
    let tasks = TaskRepositoryImpl::new(pool.clone());

    // A and L run first (their own agent type); B, P and H wait.
    let a = NewTask {
        agent_type: "first".into(),
        ..task("A", &[])
    };
    let lost = NewTask {
        agent_type: "first".into(),
        ..task("L", &[])
    };
    let b = task("B", &[a.id]);
    let poisoned_ready = task("P", &[]);
    let healthy = task("H", &[]);
    let (ia, ib, ip, ih, il) = (a.id, b.id, poisoned_ready.id, healthy.id, lost.id);
    queue
        .submit_batch(vec![a, b, poisoned_ready, healthy, lost])
        .await
        .unwrap();
    poison(&pool, ib).await;
    poison(&pool, ip).await;

    let claimed = queue
        .claim("w", &["first".to_string()], LEASE, 2)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    let attempt_of = |id: Uuid| {
        claimed
            .iter()
            .find(|c| c.task.id == id)
            .map(|c| c.lease.attempt_id)
            .expect("claimed")
    };

    // Complete: A's dependent, whose deadline is unreadable, becomes ready with a priority.
    let released = queue.complete(attempt_of(ia), None).await.unwrap();
    assert_eq!(released.outcome, vec![ib]);
    let b_now = tasks.get(ib).await.unwrap().unwrap();
    assert_eq!(b_now.status, TaskStatus::Ready);
    assert_finite(b_now.calculated_priority, "B");

    // Time passes; the poisoned tasks keep a number.
    clock.advance(chrono::Duration::minutes(30));
    for id in [ib, ip] {
        assert_finite(
            tasks.get(id).await.unwrap().unwrap().calculated_priority,
            "poisoned",
        );
    }

    // Reap: L's lease has long expired; it is taken back although poisoned rows exist.
    let report = queue.reap().await.unwrap();
    assert_eq!(report.lost, vec![il]);
    assert_eq!(
        tasks.get(il).await.unwrap().unwrap().status,
        TaskStatus::Failed
    );

    // Claim once more: every task still ready, the poisoned ones included, comes out.
    let mut rest: Vec<Uuid> = Vec::new();
    while let Some(c) = queue.claim("w", &[], LEASE, 1).await.unwrap().pop() {
        rest.push(c.task.id);
    }
    rest.sort();
    let mut expected = vec![ib, ih, ip];
    expected.sort();
    assert_eq!(rest, expected);
}

#[tokio::test]
async fn a_deadline_outside_the_supported_range_is_refused_and_nothing_is_stored() {
    let pool = test_db().await;
    let queue =
        TaskQueue::new(Arc::new(QueueStoreImpl::new(pool.clone()))).with_clock(ManualClock::new());
    let before = table_dump(&pool).await;
    let last_second = chrono::Utc
        .with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
        .unwrap();
    for deadline in [
        last_second + chrono::Duration::microseconds(999_900),
        last_second + chrono::Duration::seconds(1),
    ] {
        let mut new = task("D", &[]);
        new.deadline = Some(deadline);
        match queue.submit(new).await {
            Err(QueueError::Validation(e)) => {
                assert_eq!(e.field, "deadline");
                assert!(e.message.contains("9999-12-31T23:59:59Z"), "{}", e.message);
            }
            other => panic!("expected a validation error, got {other:?}"),
        }
    }
    assert_eq!(table_dump(&pool).await, before);
    // The last accepted instant works through every computation.
    let mut new = task("E", &[]);
    new.deadline = Some(last_second);
    let stored = queue.submit(new).await.unwrap();
    assert_finite(stored.calculated_priority, "E");
    let claimed = queue.claim("w", &[], LEASE, 1).await.unwrap();
    assert_eq!(claimed[0].task.id, stored.id);
}

#[tokio::test]
async fn an_attempt_the_reaper_cannot_read_does_not_stop_it_reaping_the_others() {
    let pool = test_db().await;
    let clock = ManualClock::new();
    let queue =
        TaskQueue::new(Arc::new(QueueStoreImpl::new(pool.clone()))).with_clock(clock.clone());
    let tasks = TaskRepositoryImpl::new(pool.clone());
    let (bad, good) = (task("bad", &[]), task("good", &[]));
    let (ibad, igood) = (bad.id, good.id);
    queue.submit_batch(vec![bad, good]).await.unwrap();
    let claimed = queue.claim("w", &[], LEASE, 2).await.unwrap();
    assert_eq!(claimed.len(), 2);
    // Month 13 passes the column's pattern check but is no date.
    sqlx::query(
        "UPDATE task_attempts SET started_at = '2026-13-01T00:00:00.000000Z' WHERE task_id = ?1",
    )
    .bind(ibad.to_string())
    .execute(&*pool)
    .await
    .unwrap();
    clock.advance(chrono::Duration::minutes(5));
    let report = queue.reap().await.unwrap();
    assert_eq!(report.lost, vec![igood]);
    assert_eq!(
        tasks.get(igood).await.unwrap().unwrap().status,
        TaskStatus::Failed
    );
    assert_eq!(
        tasks.get(ibad).await.unwrap().unwrap().status,
        TaskStatus::Running
    );
}
