//! The task queue end to end on SQLite: the diamond DAG with failure, cascade and retry,
//! leases and fencing, cancellation, the reaper, priorities and history.

use std::sync::Arc;
use std::time::Duration;

use abathur::domain::clock::Clock;
use abathur::domain::models::{Task, TaskStatus};
use abathur::domain::ports::TaskRepository;
use abathur::domain::queue::{FailOutcome, NewTask, QueueError, RetryPolicy, TaskQueue};
use abathur::infrastructure::database::{QueueStoreImpl, TaskRepositoryImpl};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::database::{table_dump, test_db, TestPool};
use crate::helpers::ManualClock;

const LEASE: Duration = Duration::from_secs(30);

struct Fixture {
    pool: TestPool,
    clock: Arc<ManualClock>,
    queue: TaskQueue,
    tasks: TaskRepositoryImpl,
}

async fn fixture() -> Fixture {
    let pool = test_db().await;
    let clock = ManualClock::new();
    let queue = TaskQueue::new(Arc::new(QueueStoreImpl::new(pool.clone())))
        .with_clock(clock.clone())
        .with_retry_policy(RetryPolicy {
            base: Duration::from_secs(10),
            jitter: 0.0,
            ..RetryPolicy::default()
        });
    let tasks = TaskRepositoryImpl::new(pool.clone());
    Fixture {
        pool,
        clock,
        queue,
        tasks,
    }
}

impl Fixture {
    async fn status(&self, id: Uuid) -> TaskStatus {
        self.task(id).await.status
    }

    async fn task(&self, id: Uuid) -> Task {
        self.tasks.get(id).await.unwrap().unwrap()
    }
}

fn new(name: &str, deps: &[Uuid]) -> NewTask {
    NewTask {
        dependencies: deps.to_vec(),
        max_retries: 1,
        ..NewTask::new(name, name, "worker")
    }
}

#[tokio::test]
async fn a_diamond_runs_fails_cascades_and_recovers_by_retry() {
    let f = fixture().await;
    let a = new("A", &[]);
    let b = new("B", &[a.id]);
    let c = new("C", &[a.id]);
    let d = new("D", &[b.id, c.id]);
    let (ia, ib, ic, id) = (a.id, b.id, c.id, d.id);
    let stored = f.queue.submit_batch(vec![d, c, b, a]).await.unwrap();
    assert_eq!(stored.len(), 4);
    assert_eq!(f.status(ia).await, TaskStatus::Ready);
    assert_eq!(f.task(id).await.dependency_depth, 2);
    for t in [ib, ic, id] {
        assert_eq!(f.status(t).await, TaskStatus::Blocked);
    }

    let claimed = f.queue.claim("w1", &[], LEASE, 10).await.unwrap();
    assert_eq!(claimed.len(), 1, "only A is ready");
    assert_eq!(claimed[0].task.id, ia);
    let mut released = f
        .queue
        .complete(claimed[0].lease.attempt_id, Some(json!({"ok": true})))
        .await
        .unwrap()
        .outcome;
    released.sort();
    let mut expected = vec![ib, ic];
    expected.sort();
    assert_eq!(released, expected);
    assert_eq!(f.status(ib).await, TaskStatus::Ready);
    assert_eq!(f.status(ic).await, TaskStatus::Ready);
    assert_eq!(f.status(id).await, TaskStatus::Blocked);

    // C fails twice (max_retries 1): first a retry with backoff, then exhausted.
    let lease = f.queue.claim("w1", &[], LEASE, 10).await.unwrap();
    let c_lease = lease
        .iter()
        .find(|t| t.task.id == ic)
        .unwrap()
        .lease
        .clone();
    let b_lease = lease
        .iter()
        .find(|t| t.task.id == ib)
        .unwrap()
        .lease
        .clone();
    match f
        .queue
        .fail(c_lease.attempt_id, "boom")
        .await
        .unwrap()
        .outcome
    {
        FailOutcome::Retrying {
            retry_count: 1,
            run_after,
        } => {
            assert_eq!(run_after, f.clock.now() + chrono::Duration::seconds(10));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        f.queue
            .claim("w1", &[], LEASE, 10)
            .await
            .unwrap()
            .is_empty(),
        "C backs off"
    );
    f.clock.advance(chrono::Duration::seconds(10));
    let again = f.queue.claim("w1", &[], LEASE, 10).await.unwrap();
    assert_eq!(again[0].task.id, ic);
    assert_eq!(again[0].lease.attempt_number, 2);
    match f
        .queue
        .fail(again[0].lease.attempt_id, "boom again")
        .await
        .unwrap()
        .outcome
    {
        FailOutcome::Failed { cascaded } => assert_eq!(cascaded, vec![id]),
        other => panic!("{other:?}"),
    }
    assert_eq!(f.status(ic).await, TaskStatus::Failed);
    let d_task = f.task(id).await;
    assert_eq!(d_task.status, TaskStatus::Failed);
    assert!(d_task.error_message.unwrap().contains(&ic.to_string()));

    // B still completes; D stays failed.
    assert!(f
        .queue
        .complete(b_lease.attempt_id, None)
        .await
        .unwrap()
        .outcome
        .is_empty());

    // A human retries C: C is ready again, D waits again.
    assert_eq!(f.queue.retry(ic, "human").await.unwrap(), vec![id]);
    assert_eq!(f.status(ic).await, TaskStatus::Ready);
    assert_eq!(f.status(id).await, TaskStatus::Blocked);
    let c_run = f.queue.claim("w2", &[], LEASE, 1).await.unwrap();
    assert_eq!(
        f.queue
            .complete(c_run[0].lease.attempt_id, None)
            .await
            .unwrap()
            .outcome,
        vec![id]
    );
    let d_run = f.queue.claim("w2", &[], LEASE, 1).await.unwrap();
    f.queue
        .complete(d_run[0].lease.attempt_id, None)
        .await
        .unwrap();
    assert_eq!(f.status(id).await, TaskStatus::Completed);

    let history: Vec<(Option<TaskStatus>, TaskStatus)> = f
        .queue
        .history(ic)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.from, e.to))
        .collect();
    use TaskStatus::*;
    assert_eq!(
        history,
        vec![
            (None, Blocked),
            (Some(Blocked), Ready),
            (Some(Ready), Running),
            (Some(Running), Ready),
            (Some(Ready), Running),
            (Some(Running), Failed),
            (Some(Failed), Ready),
            (Some(Ready), Running),
            (Some(Running), Completed),
        ]
    );
}

#[tokio::test]
async fn a_task_is_never_held_by_two_leases_and_stale_leases_are_fenced_off() {
    let f = fixture().await;
    let t = f.queue.submit(new("only", &[])).await.unwrap();
    let first = f.queue.claim("w1", &[], LEASE, 5).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(f.queue.claim("w2", &[], LEASE, 5).await.unwrap().is_empty());

    // The lease expires; the reaper recovers the task; another worker claims it.
    f.clock.advance(chrono::Duration::seconds(31));
    let report = f.queue.reap().await.unwrap();
    assert_eq!(report.lost, vec![t.id]);
    f.clock.advance(chrono::Duration::seconds(10));
    let second = f.queue.claim("w2", &[], LEASE, 5).await.unwrap();
    assert_eq!(second[0].task.id, t.id);

    // The first worker comes back: its lease is lost and nothing changes.
    let before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM task_events")
        .fetch_one(&*f.pool)
        .await
        .unwrap();
    let err = f
        .queue
        .complete(first[0].lease.attempt_id, None)
        .await
        .unwrap_err();
    assert!(matches!(err, QueueError::LeaseLost { .. }), "{err:?}");
    let err = f
        .queue
        .heartbeat(first[0].lease.attempt_id, LEASE)
        .await
        .unwrap_err();
    assert!(matches!(err, QueueError::LeaseLost { .. }), "{err:?}");
    let after: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM task_events")
        .fetch_one(&*f.pool)
        .await
        .unwrap();
    assert_eq!(before, after);
    assert_eq!(f.status(t.id).await, TaskStatus::Running);
    f.queue
        .complete(second[0].lease.attempt_id, None)
        .await
        .unwrap();
    assert_eq!(f.status(t.id).await, TaskStatus::Completed);
}

#[tokio::test]
async fn a_heartbeat_keeps_a_lease_alive_past_its_first_expiry() {
    let f = fixture().await;
    f.queue.submit(new("long", &[])).await.unwrap();
    let claimed = f.queue.claim("w1", &[], LEASE, 1).await.unwrap();
    f.clock.advance(chrono::Duration::seconds(20));
    let lease = f
        .queue
        .heartbeat(claimed[0].lease.attempt_id, LEASE)
        .await
        .unwrap();
    assert_eq!(
        lease.expires_at,
        f.clock.now() + chrono::Duration::seconds(30)
    );
    f.clock.advance(chrono::Duration::seconds(20));
    assert!(f.queue.reap().await.unwrap().lost.is_empty());
}

#[tokio::test]
async fn cancelling_a_running_task_revokes_its_lease_and_cancels_dependents_and_children() {
    let f = fixture().await;
    let root = new("root", &[]);
    let dependent = new("dependent", &[root.id]);
    let child = NewTask {
        parent_task_id: Some(root.id),
        ..new("child", &[])
    };
    let (r, d, c) = (root.id, dependent.id, child.id);
    f.queue
        .submit_batch(vec![root, dependent, child])
        .await
        .unwrap();
    let claimed = f.queue.claim("w1", &[], LEASE, 1).await.unwrap();
    let mut cancelled = f.queue.cancel(r, "human").await.unwrap();
    cancelled.sort();
    let mut expected = vec![r, d, c];
    expected.sort();
    assert_eq!(cancelled, expected);
    let err = f
        .queue
        .complete(claimed[0].lease.attempt_id, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, QueueError::Cancelled { task_id } if task_id == claimed[0].task.id),
        "{err:?}"
    );
    for t in [r, d, c] {
        assert_eq!(f.status(t).await, TaskStatus::Cancelled);
    }
}

#[tokio::test]
async fn cancelling_a_completed_task_is_an_error_and_changes_nothing() {
    let f = fixture().await;
    let t = f.queue.submit(new("done", &[])).await.unwrap();
    let claimed = f.queue.claim("w1", &[], LEASE, 1).await.unwrap();
    f.queue
        .complete(claimed[0].lease.attempt_id, None)
        .await
        .unwrap();
    let err = f.queue.cancel(t.id, "human").await.unwrap_err();
    assert!(
        matches!(
            err,
            QueueError::InvalidTransition {
                status: TaskStatus::Completed,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(f.status(t.id).await, TaskStatus::Completed);
    assert!(matches!(
        f.queue.cancel(Uuid::new_v4(), "human").await.unwrap_err(),
        QueueError::TaskNotFound(_)
    ));
}

#[tokio::test]
async fn a_task_past_its_timeout_is_timed_out_by_the_reaper() {
    let f = fixture().await;
    let t = f
        .queue
        .submit(NewTask {
            max_execution_timeout_seconds: 60,
            max_retries: 0,
            ..new("slow", &[])
        })
        .await
        .unwrap();
    let claimed = f.queue.claim("w1", &[], LEASE, 1).await.unwrap();
    for _ in 0..3 {
        f.clock.advance(chrono::Duration::seconds(25));
        f.queue
            .heartbeat(claimed[0].lease.attempt_id, LEASE)
            .await
            .unwrap();
    }
    let report = f.queue.reap().await.unwrap();
    assert_eq!(report.timed_out, vec![t.id]);
    assert_eq!(f.status(t.id).await, TaskStatus::Failed);
    // Running the reaper again finds nothing more to do.
    assert_eq!(f.queue.reap().await.unwrap(), Default::default());
}

#[tokio::test]
async fn claims_follow_priority_and_agent_type() {
    let f = fixture().await;
    let low = f
        .queue
        .submit(NewTask {
            priority: 1,
            ..new("low", &[])
        })
        .await
        .unwrap();
    let high = f
        .queue
        .submit(NewTask {
            priority: 9,
            ..new("high", &[])
        })
        .await
        .unwrap();
    let other = f
        .queue
        .submit(NewTask {
            priority: 10,
            agent_type: "reviewer".into(),
            ..new("other", &[])
        })
        .await
        .unwrap();
    let claimed = f
        .queue
        .claim("w1", &["worker".to_string()], LEASE, 1)
        .await
        .unwrap();
    assert_eq!(claimed[0].task.id, high.id);
    let claimed = f
        .queue
        .claim("w1", &["worker".to_string()], LEASE, 5)
        .await
        .unwrap();
    assert_eq!(
        claimed.iter().map(|c| c.task.id).collect::<Vec<_>>(),
        vec![low.id]
    );
    let claimed = f.queue.claim("w1", &[], LEASE, 5).await.unwrap();
    assert_eq!(claimed[0].task.id, other.id);
}

#[tokio::test]
async fn ageing_lets_an_old_low_priority_task_overtake_new_urgent_work() {
    let f = fixture().await;
    let old = f
        .queue
        .submit(NewTask {
            priority: 0,
            ..new("old", &[])
        })
        .await
        .unwrap();
    f.clock.advance(chrono::Duration::hours(3));
    let new_high = f
        .queue
        .submit(NewTask {
            priority: 10,
            ..new("new", &[])
        })
        .await
        .unwrap();
    let first = f.queue.claim("w1", &[], LEASE, 1).await.unwrap();
    assert_eq!(
        first[0].task.id, old.id,
        "18 points of ageing beat 10 of priority"
    );
    let _ = new_high;
}

#[tokio::test]
async fn bad_claim_arguments_are_rejected() {
    let f = fixture().await;
    assert!(
        matches!(f.queue.claim(" ", &[], LEASE, 1).await.unwrap_err(), QueueError::Validation(e) if e.field == "worker_id")
    );
    assert!(
        matches!(f.queue.claim("w", &[], Duration::ZERO, 1).await.unwrap_err(), QueueError::Validation(e) if e.field == "lease")
    );
    assert!(
        matches!(f.queue.claim("w", &[], LEASE, 0).await.unwrap_err(), QueueError::Validation(e) if e.field == "max_tasks")
    );
}

#[tokio::test]
async fn an_attempt_that_was_never_handed_out_is_not_found() {
    let f = fixture().await;
    let task = f.queue.submit(new("waiting", &[])).await.unwrap();
    let unknown = Uuid::new_v4();
    let errors = [
        f.queue.complete(unknown, None).await.unwrap_err(),
        f.queue.fail(unknown, "x").await.unwrap_err(),
        f.queue.heartbeat(unknown, LEASE).await.unwrap_err(),
    ];
    for err in errors {
        assert!(
            matches!(err, QueueError::AttemptNotFound(id) if id == unknown),
            "{err:?}"
        );
    }
    assert_eq!(f.task(task.id).await, task);
}

/// Regression: `abathur task submit --depends-on` once set the status itself and left a task
/// whose dependencies had all completed blocked for ever; submission now goes through the
/// queue, which checks the dependencies' status.
#[tokio::test]
async fn a_task_submitted_after_its_dependencies_completed_is_ready_at_once() {
    let f = fixture().await;
    let done = f.queue.submit(new("done", &[])).await.unwrap();
    let claimed = f.queue.claim("w1", &[], LEASE, 1).await.unwrap();
    f.queue
        .complete(claimed[0].lease.attempt_id, None)
        .await
        .unwrap();
    let later = f.queue.submit(new("later", &[done.id])).await.unwrap();
    assert_eq!(later.status, TaskStatus::Ready);
    assert_eq!(later.dependency_depth, 1);
    assert_eq!(f.status(later.id).await, TaskStatus::Ready);
}

/// A task that becomes ready is stored with the priority and claim key of `PriorityPolicy`,
/// as of that moment; a blocked task keeps what it was submitted with until it is released.
#[tokio::test]
async fn a_task_made_ready_is_stored_with_the_policy_priority_and_key() {
    use abathur::domain::queue::PriorityPolicy;
    let f = fixture().await;
    let root = f
        .queue
        .submit(NewTask {
            priority: 3,
            ..new("root", &[])
        })
        .await
        .unwrap();
    let deadline = f.clock.now() + chrono::Duration::hours(12);
    let deep = f
        .queue
        .submit(NewTask {
            priority: 7,
            deadline: Some(deadline),
            ..new("deep", &[root.id])
        })
        .await
        .unwrap();
    let waiting = f.queue.submit(new("waiting", &[deep.id])).await.unwrap();
    let claimed = f.queue.claim("w", &[], LEASE, 1).await.unwrap();
    f.clock.advance(chrono::Duration::minutes(45));
    f.queue
        .complete(claimed[0].lease.attempt_id, None)
        .await
        .unwrap();
    let policy = PriorityPolicy::default();
    let t = f.task(deep.id).await;
    let released_at = f.clock.now();
    let expected = policy.calculate(7, 1, Some(deadline), released_at, released_at);
    assert!(
        (t.calculated_priority - expected).abs() < 1e-9,
        "{} vs {expected}",
        t.calculated_priority
    );
    let key: f64 = sqlx::query_scalar("SELECT claim_key FROM tasks WHERE id = ?")
        .bind(deep.id.to_string())
        .fetch_one(&*f.pool)
        .await
        .unwrap();
    assert!((key - policy.key(7, 1, released_at)).abs() < 1e-6, "{key}");
    assert_eq!(
        f.task(waiting.id).await.calculated_priority,
        waiting.calculated_priority
    );
}

#[tokio::test]
async fn the_overview_counts_statuses_and_lists_leases_soonest_first() {
    let f = fixture().await;
    let empty = f.queue.overview(10).await.unwrap();
    assert!(empty.counts.values().all(|n| *n == 0));
    assert_eq!(empty.counts.len(), TaskStatus::ALL.len());
    assert!(empty.oldest_ready.is_none() && empty.running.is_empty());

    let first = f.queue.submit(new("first", &[])).await.unwrap();
    f.clock.advance(chrono::Duration::seconds(1));
    let second = f.queue.submit(new("second", &[])).await.unwrap();
    f.queue.submit(new("third", &[second.id])).await.unwrap();
    // Claimed with different leases: the shorter one is listed first.
    let long = f
        .queue
        .claim("w-long", &[], Duration::from_secs(600), 1)
        .await
        .unwrap();
    let short = f
        .queue
        .claim("w-short", &[], Duration::from_secs(10), 1)
        .await
        .unwrap();
    assert_eq!(long[0].task.id, first.id);

    let overview = f.queue.overview(10).await.unwrap();
    assert_eq!(overview.counts[&TaskStatus::Running], 2);
    assert_eq!(overview.counts[&TaskStatus::Blocked], 1);
    assert_eq!(overview.counts[&TaskStatus::Ready], 0);
    let attempts: Vec<Uuid> = overview.running.iter().map(|r| r.attempt_id).collect();
    assert_eq!(
        attempts,
        vec![short[0].lease.attempt_id, long[0].lease.attempt_id]
    );
    assert_eq!(overview.running[0].worker_id, "w-short");
    assert_eq!(overview.expired_leases, 0);
    assert_eq!(f.queue.overview(1).await.unwrap().running.len(), 1);

    // The short lease runs out; the overview says so before any reap.
    f.clock.advance(chrono::Duration::seconds(11));
    assert_eq!(f.queue.overview(10).await.unwrap().expired_leases, 1);
    f.queue.reap().await.unwrap();
    let after = f.queue.overview(10).await.unwrap();
    assert_eq!(after.expired_leases, 0);
    // The reaped task is ready again, but held back by its retry's backoff (10 s).
    assert_eq!(after.counts[&TaskStatus::Ready], 1);
    assert!(after.oldest_ready.is_none(), "{:?}", after.oldest_ready);
    f.clock.advance(chrono::Duration::seconds(10));
    let after = f.queue.overview(10).await.unwrap();
    let oldest = after.oldest_ready.expect("the reaped task waits again");
    assert_eq!(oldest.task_id, second.id);
}

#[tokio::test]
async fn the_execution_plan_orders_the_unfinished_dag_in_stages() {
    let f = fixture().await;
    let a = new("A", &[]);
    let b = new("B", &[a.id]);
    let c = NewTask {
        priority: 9,
        ..new("C", &[a.id])
    };
    let d = new("D", &[b.id, c.id]);
    let lone = new("lone", &[]);
    let ids = [a.id, b.id, c.id, d.id, lone.id];
    f.queue.submit_batch(vec![a, b, c, d, lone]).await.unwrap();

    let plan = f.queue.execution_plan(100).await.unwrap();
    let order: Vec<(Uuid, u32)> = plan.iter().map(|s| (s.task.task_id, s.stage)).collect();
    // Stage 0: A and the lone task; stage 1: C (priority 9) before B; stage 2: D.
    assert_eq!(order.len(), 5);
    assert_eq!(order[2..], [(ids[2], 1), (ids[1], 1), (ids[3], 2)]);
    assert!(order[..2].iter().all(|(_, stage)| *stage == 0));
    assert_eq!(plan[4].task.waits_for.len(), 2);

    // Completing A drops it from the plan; B and C then wait for nothing.
    let claimed = f
        .queue
        .claim("w", &["worker".into()], LEASE, 5)
        .await
        .unwrap();
    let a_lease = claimed.iter().find(|c| c.task.id == ids[0]).unwrap();
    f.queue
        .complete(a_lease.lease.attempt_id, None)
        .await
        .unwrap();
    let plan = f.queue.execution_plan(100).await.unwrap();
    assert!(plan.iter().all(|s| s.task.task_id != ids[0]));
    let b_step = plan.iter().find(|s| s.task.task_id == ids[1]).unwrap();
    assert_eq!((b_step.stage, b_step.task.waits_for.len()), (0, 0));
    let d_step = plan.iter().find(|s| s.task.task_id == ids[3]).unwrap();
    assert_eq!(d_step.stage, 1);

    assert!(matches!(
        f.queue.execution_plan(0).await.unwrap_err(),
        QueueError::Validation(e) if e.field == "limit"
    ));
}

/// Review finding: retrying one failed dependency once put back every failed dependent, even
/// one whose other dependency was still failed.
#[tokio::test]
async fn a_retry_puts_back_only_dependents_with_no_other_failed_dependency() {
    let f = fixture().await;
    let x = NewTask {
        max_retries: 0,
        ..new("X", &[])
    };
    let y = NewTask {
        max_retries: 0,
        ..new("Y", &[])
    };
    let d = new("D", &[x.id, y.id]);
    let e = new("E", &[d.id]);
    let (ix, iy, id, ie) = (x.id, y.id, d.id, e.id);
    f.queue.submit_batch(vec![x, y, d, e]).await.unwrap();
    for claimed in f.queue.claim("w", &[], LEASE, 2).await.unwrap() {
        f.queue
            .fail(claimed.lease.attempt_id, "broken")
            .await
            .unwrap();
    }
    for t in [ix, iy, id, ie] {
        assert_eq!(f.status(t).await, TaskStatus::Failed);
    }
    // X is still failed, so D (and E behind it) stay failed.
    assert!(f.queue.retry(iy, "human").await.unwrap().is_empty());
    assert_eq!(f.status(id).await, TaskStatus::Failed);
    assert_eq!(f.status(ie).await, TaskStatus::Failed);
    // With X retried too, both wait again.
    assert_eq!(f.queue.retry(ix, "human").await.unwrap(), vec![id, ie]);
    assert_eq!(f.status(id).await, TaskStatus::Blocked);
    assert_eq!(f.status(ie).await, TaskStatus::Blocked);
    assert_eq!(f.task(id).await.error_message, None);
}

/// Review finding: cancelling a parent followed its completed child's dependents.
#[tokio::test]
async fn cancel_stops_at_finished_tasks() {
    let f = fixture().await;
    let parent = f.queue.submit(new("parent", &[])).await.unwrap();
    let child = f
        .queue
        .submit(NewTask {
            parent_task_id: Some(parent.id),
            ..new("child", &[])
        })
        .await
        .unwrap();
    // Claim and complete the child only.
    let claimed = f.queue.claim("w", &[], LEASE, 2).await.unwrap();
    for c in &claimed {
        if c.task.id == child.id {
            f.queue.complete(c.lease.attempt_id, None).await.unwrap();
        }
    }
    let after_child = f
        .queue
        .submit(new("after child", &[child.id]))
        .await
        .unwrap();
    assert_eq!(after_child.status, TaskStatus::Ready);

    let cancelled = f.queue.cancel(parent.id, "human").await.unwrap();
    assert_eq!(cancelled, vec![parent.id]);
    assert_eq!(f.status(child.id).await, TaskStatus::Completed);
    assert_eq!(f.status(after_child.id).await, TaskStatus::Ready);
}

#[tokio::test]
async fn a_task_cannot_wait_on_a_cancelled_or_failed_task() {
    let f = fixture().await;
    let gone = f.queue.submit(new("gone", &[])).await.unwrap();
    f.queue.cancel(gone.id, "human").await.unwrap();
    let before = table_dump(&f.pool).await;
    let late = new("late", &[gone.id]);
    let late_id = late.id;
    let err = f.queue.submit(late).await.unwrap_err();
    assert!(
        matches!(err, QueueError::DependencyUnavailable { task, dependency, status: TaskStatus::Cancelled }
            if task == late_id && dependency == gone.id),
        "{err:?}"
    );
    assert_eq!(table_dump(&f.pool).await, before);
}

#[tokio::test]
async fn parents_that_loop_within_a_batch_are_refused() {
    let f = fixture().await;
    let before = table_dump(&f.pool).await;
    let mut a = new("a", &[]);
    let mut b = new("b", &[]);
    a.parent_task_id = Some(b.id);
    b.parent_task_id = Some(a.id);
    let err = f.queue.submit_batch(vec![a, b]).await.unwrap_err();
    assert!(
        matches!(&err, QueueError::ParentCycle { path } if path.len() == 3 && path[0] == path[2]),
        "{err:?}"
    );
    let mut own = new("own parent", &[]);
    own.parent_task_id = Some(own.id);
    // A task that is its own parent is caught by the task's own rules, first.
    assert!(matches!(
        f.queue.submit(own).await.unwrap_err(),
        QueueError::Validation(e) if e.field == "parent_task_id"
    ));
    assert_eq!(table_dump(&f.pool).await, before);
}

#[tokio::test]
async fn an_id_already_stored_is_a_duplicate_and_a_blank_actor_is_refused() {
    let f = fixture().await;
    let first = new("first", &[]);
    let again = NewTask {
        summary: "again".into(),
        ..first.clone()
    };
    f.queue.submit(first.clone()).await.unwrap();
    let before = table_dump(&f.pool).await;
    assert!(matches!(
        f.queue.submit(again).await.unwrap_err(),
        QueueError::DuplicateTask { task } if task == first.id
    ));
    for actor in ["", "  "] {
        assert!(matches!(
            f.queue.cancel(first.id, actor).await.unwrap_err(),
            QueueError::Validation(e) if e.field == "actor"
        ));
    }
    assert_eq!(table_dump(&f.pool).await, before);
}

/// The queue refuses to write a history that did not happen when a row was changed behind its
/// back through the low-level repository.
#[tokio::test]
async fn a_status_changed_outside_the_queue_is_a_conflict_not_a_false_history() {
    let f = fixture().await;
    let task = f.queue.submit(new("t", &[])).await.unwrap();
    let claimed = f.queue.claim("w", &[], LEASE, 1).await.unwrap();
    f.tasks
        .update_status(task.id, TaskStatus::Cancelled)
        .await
        .unwrap();
    let before = table_dump(&f.pool).await;
    let err = f
        .queue
        .complete(claimed[0].lease.attempt_id, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            QueueError::Database(abathur::domain::error::DatabaseError::Conflict { .. })
        ),
        "{err:?}"
    );
    assert_eq!(table_dump(&f.pool).await, before);
}

#[tokio::test]
async fn a_released_task_is_ready_at_once_without_counting_a_retry() {
    let f = fixture().await;
    // No retries at all: a release must not be what fails it.
    let t = f
        .queue
        .submit(NewTask {
            max_retries: 0,
            ..new("interrupted", &[])
        })
        .await
        .unwrap();
    let first = f.queue.claim("w1", &[], LEASE, 1).await.unwrap();
    f.queue
        .release(first[0].lease.attempt_id, "the worker is shutting down")
        .await
        .unwrap();

    let task = f.task(t.id).await;
    assert_eq!(task.status, TaskStatus::Ready);
    assert_eq!(task.retry_count, 0);
    let (outcome, error): (String, Option<String>) =
        sqlx::query_as("SELECT outcome, error FROM task_attempts WHERE id = ?")
            .bind(first[0].lease.attempt_id.to_string())
            .fetch_one(&*f.pool)
            .await
            .unwrap();
    assert_eq!(outcome, "released");
    assert_eq!(error.as_deref(), Some("the worker is shutting down"));
    let history = f.queue.history(t.id).await.unwrap();
    let last = history.last().unwrap();
    assert_eq!(
        (last.from, last.to, last.actor.as_str(), last.attempt_id),
        (
            Some(TaskStatus::Running),
            TaskStatus::Ready,
            "w1",
            Some(first[0].lease.attempt_id)
        )
    );
    assert_eq!(
        last.reason.as_deref(),
        Some("released unfinished: the worker is shutting down")
    );

    // Claimable at once, with no backoff, and the old lease is fenced off.
    let second = f.queue.claim("w2", &[], LEASE, 1).await.unwrap();
    assert_eq!(second[0].task.id, t.id);
    assert_eq!(second[0].lease.attempt_number, 2);
    let err = f
        .queue
        .complete(first[0].lease.attempt_id, None)
        .await
        .unwrap_err();
    assert!(matches!(err, QueueError::LeaseLost { .. }), "{err:?}");
    f.queue
        .complete(second[0].lease.attempt_id, None)
        .await
        .unwrap();
    assert_eq!(f.status(t.id).await, TaskStatus::Completed);
}

#[tokio::test]
async fn a_release_clears_a_leftover_backoff() {
    let f = fixture().await;
    let t = f.queue.submit(new("flaky", &[])).await.unwrap();
    let first = f.queue.claim("w1", &[], LEASE, 1).await.unwrap();
    f.queue
        .fail(first[0].lease.attempt_id, "boom")
        .await
        .unwrap();
    f.clock.advance(chrono::Duration::seconds(11));
    let second = f.queue.claim("w1", &[], LEASE, 1).await.unwrap();
    assert_eq!(second[0].task.id, t.id);
    f.queue
        .release(second[0].lease.attempt_id, "stopping")
        .await
        .unwrap();
    assert_eq!(
        f.task(t.id).await.retry_count,
        1,
        "the failure still counts"
    );
    let third = f.queue.claim("w2", &[], LEASE, 1).await.unwrap();
    assert_eq!(third.len(), 1, "claimable at once after a release");
}

#[tokio::test]
async fn only_an_open_attempt_can_be_released() {
    let f = fixture().await;
    let done = f.queue.submit(new("done", &[])).await.unwrap();
    let claimed = f.queue.claim("w1", &[], LEASE, 1).await.unwrap();
    f.queue
        .complete(claimed[0].lease.attempt_id, None)
        .await
        .unwrap();
    let before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM task_events")
        .fetch_one(&*f.pool)
        .await
        .unwrap();
    let err = f
        .queue
        .release(claimed[0].lease.attempt_id, "stopping")
        .await
        .unwrap_err();
    assert!(matches!(err, QueueError::LeaseLost { .. }), "{err:?}");
    assert_eq!(f.status(done.id).await, TaskStatus::Completed);

    let cancelled = f.queue.submit(new("cancelled", &[])).await.unwrap();
    let claimed = f.queue.claim("w1", &[], LEASE, 1).await.unwrap();
    f.queue.cancel(cancelled.id, "human").await.unwrap();
    let err = f
        .queue
        .release(claimed[0].lease.attempt_id, "stopping")
        .await
        .unwrap_err();
    assert!(matches!(err, QueueError::Cancelled { .. }), "{err:?}");
    assert_eq!(f.status(cancelled.id).await, TaskStatus::Cancelled);

    let unknown = Uuid::new_v4();
    let err = f.queue.release(unknown, "stopping").await.unwrap_err();
    assert!(
        matches!(err, QueueError::AttemptNotFound(id) if id == unknown),
        "{err:?}"
    );
    let after: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM task_events")
        .fetch_one(&*f.pool)
        .await
        .unwrap();
    // Only the cancellation's own event was written in between.
    assert_eq!(
        after,
        before + 3,
        "submit, claim and cancel of the second task"
    );
}

/// A completion releases a wide fan-out in a fixed number of statements; every dependent gets
/// its event and the priority of the formula.
#[tokio::test]
async fn completing_a_task_with_thousands_of_dependents_releases_them_all() {
    use abathur::domain::queue::PriorityPolicy;
    let f = fixture().await;
    let root = new("root", &[]);
    let mut batch = vec![root.clone()];
    batch.extend((0..3_000).map(|i| new(&format!("leaf {i}"), &[root.id])));
    f.queue.submit_batch(batch).await.unwrap();
    let claimed = f.queue.claim("w", &[], LEASE, 1).await.unwrap();
    f.clock.advance(chrono::Duration::minutes(20));
    let released = f
        .queue
        .complete(claimed[0].lease.attempt_id, None)
        .await
        .unwrap()
        .outcome;
    assert_eq!(released.len(), 3_000);
    let ready: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE status = 'ready'")
        .fetch_one(&*f.pool)
        .await
        .unwrap();
    assert_eq!(ready, 3_000);
    let events: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM task_events WHERE from_status = 'blocked' AND to_status = 'ready'",
    )
    .fetch_one(&*f.pool)
    .await
    .unwrap();
    assert_eq!(events, 3_000);
    let leaf = f.task(released[1_234]).await;
    // Ready, and so ageing, since its release.
    let expected = PriorityPolicy::default().calculate(
        leaf.priority,
        leaf.dependency_depth,
        leaf.deadline,
        f.clock.now(),
        f.clock.now(),
    );
    assert!((leaf.calculated_priority - expected).abs() < 1e-3);
}

/// A parent that waits for its children is submitted with them in one batch: the children
/// come first (they are its dependencies) and name it as their parent before it is stored.
#[tokio::test]
async fn a_parent_waiting_for_its_children_is_submitted_with_them() {
    let f = fixture().await;
    let parent_id = uuid::Uuid::new_v4();
    let children: Vec<NewTask> = (0..3)
        .map(|i| NewTask {
            parent_task_id: Some(parent_id),
            ..new(&format!("child {i}"), &[])
        })
        .collect();
    let mut parent = new("parent", &children.iter().map(|c| c.id).collect::<Vec<_>>());
    parent.id = parent_id;
    let mut batch = vec![parent];
    batch.extend(children);
    let stored = f.queue.submit_batch(batch).await.unwrap();
    assert_eq!(stored.len(), 4);
    let parent = f.task(parent_id).await;
    assert_eq!(parent.status, TaskStatus::Blocked);
    for child in stored.iter().filter(|t| t.id != parent_id) {
        assert_eq!(f.task(child.id).await.parent_task_id, Some(parent_id));
    }
}

#[tokio::test]
async fn an_unknown_parent_is_named_and_nothing_is_stored() {
    let f = fixture().await;
    let before = crate::helpers::database::table_dump(&f.pool).await;
    let ghost = uuid::Uuid::new_v4();
    let orphan = NewTask {
        parent_task_id: Some(ghost),
        ..new("orphan", &[])
    };
    let first = new("fine", &[]);
    let err = f
        .queue
        .submit_batch(vec![first, orphan.clone()])
        .await
        .unwrap_err();
    match err {
        QueueError::UnknownReference {
            task,
            reference,
            id,
        } => {
            assert_eq!(task, orphan.id);
            assert_eq!(reference, "parent task");
            assert_eq!(id, ghost);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(crate::helpers::database::table_dump(&f.pool).await, before);
}
