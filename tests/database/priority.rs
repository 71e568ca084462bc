//! The order in which claims take ready tasks (docs/PRIORITY.md): base priority, ageing from
//! when a task became claimable, deadlines within their horizon, depth. Time moves on an
//! injected clock; nothing rewrites waiting tasks between claims.

use std::sync::Arc;
use std::time::Duration;

use abathur::domain::clock::Clock;
use abathur::domain::models::TaskStatus;
use abathur::domain::ports::TaskRepository;
use abathur::domain::queue::{NewTask, RetryPolicy, TaskQueue};
use abathur::infrastructure::database::{
    GroupCommitQueueStore, QueueStoreImpl, TaskRepositoryImpl,
};
use chrono::Duration as Span;
use uuid::Uuid;

use crate::helpers::database::{test_db, TestPool};
use crate::helpers::ManualClock;

const LEASE: Duration = Duration::from_secs(30);

/// A queue on a fresh database file, the clock it reads, and the database (keep it alive).
async fn queue() -> (TaskQueue, Arc<ManualClock>, TestPool) {
    let pool = test_db().await;
    let clock = ManualClock::new();
    let queue = TaskQueue::new(Arc::new(QueueStoreImpl::new(pool.clone())))
        .with_clock(clock.clone())
        .with_retry_policy(RetryPolicy {
            base: Duration::from_secs(10),
            jitter: 0.0,
            ..RetryPolicy::default()
        });
    (queue, clock, pool)
}

fn task(name: &str, priority: u8) -> NewTask {
    NewTask {
        priority,
        max_retries: 3,
        ..NewTask::new(name, name, "worker")
    }
}

/// Submits `new` and returns its id.
async fn submit(queue: &TaskQueue, new: NewTask) -> Uuid {
    queue.submit(new).await.unwrap().id
}

/// The ids one claim of up to `n` tasks of `agent_types` takes, in the order it ranks them.
async fn claim(queue: &TaskQueue, agent_types: &[&str], n: u32) -> Vec<Uuid> {
    let types: Vec<String> = agent_types.iter().map(|t| t.to_string()).collect();
    queue
        .claim("w", &types, LEASE, n)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.task.id)
        .collect()
}

#[tokio::test]
async fn the_higher_base_priority_is_claimed_first() {
    let (queue, _, _db) = queue().await;
    let low = submit(&queue, task("low", 3)).await;
    let high = submit(&queue, task("high", 9)).await;
    let middle = submit(&queue, task("middle", 5)).await;
    assert_eq!(claim(&queue, &[], 3).await, vec![high, middle, low]);
}

/// A point per 10 minutes of waiting: a priority-0 task submitted 101 minutes before a
/// priority-10 one is claimed first, one submitted 99 minutes before is not, however long both
/// then wait.
#[tokio::test]
async fn a_task_that_waited_long_enough_is_claimed_before_newer_higher_priority_work() {
    let (queue, clock, _db) = queue().await;
    let typed = |name: &str, priority: u8, agent_type: &str| NewTask {
        agent_type: agent_type.into(),
        ..task(name, priority)
    };
    let old_short = submit(&queue, typed("old, short wait", 0, "a")).await;
    let old_long = submit(&queue, typed("old, long wait", 0, "b")).await;
    clock.advance(Span::minutes(99));
    let new_a = submit(&queue, typed("new", 10, "a")).await;
    clock.advance(Span::minutes(2));
    let new_b = submit(&queue, typed("new", 10, "b")).await;
    clock.advance(Span::hours(5));
    assert_eq!(claim(&queue, &["a"], 2).await, vec![new_a, old_short]);
    assert_eq!(claim(&queue, &["b"], 2).await, vec![old_long, new_b]);
}

/// Which of a priority-5 task and a priority-0 task due 30 hours after both were submitted a
/// claim takes `after` their submission.
async fn first_of_rival_and_due(after: Span) -> &'static str {
    let (queue, clock, _db) = queue().await;
    let start = clock.now();
    let rival = submit(&queue, task("rival", 5)).await;
    let due = submit(
        &queue,
        NewTask {
            deadline: Some(start + Span::hours(30)),
            ..task("due", 0)
        },
    )
    .await;
    clock.advance(after);
    let first = claim(&queue, &[], 1).await[0];
    if first == rival {
        "rival"
    } else {
        assert_eq!(first, due);
        "due"
    }
}

/// Urgency rises from 0, 24 hours before the deadline, to 10 at it: it passes the rival's 5
/// points of priority 12 hours before the deadline, 18 hours after submission.
#[tokio::test]
async fn a_deadline_inside_the_horizon_raises_its_task_as_it_approaches() {
    assert_eq!(first_of_rival_and_due(Span::hours(5)).await, "rival");
    assert_eq!(first_of_rival_and_due(Span::hours(17)).await, "rival");
    assert_eq!(first_of_rival_and_due(Span::hours(19)).await, "due");
    assert_eq!(first_of_rival_and_due(Span::hours(40)).await, "due");
}

/// A passed deadline counts its full 10 points, and no more however long ago it passed.
#[tokio::test]
async fn a_passed_deadline_ranks_with_full_urgency() {
    let (queue, clock, _db) = queue().await;
    let start = clock.now();
    let rival = submit(&queue, task("rival", 9)).await;
    let earlier = submit(&queue, task("ten, earlier", 10)).await;
    clock.advance(Span::seconds(1));
    let long_passed = submit(
        &queue,
        NewTask {
            deadline: Some(start + Span::hours(1)),
            ..task("long passed", 0)
        },
    )
    .await;
    clock.advance(Span::seconds(1));
    let later = submit(&queue, task("ten, later", 10)).await;
    clock.advance(Span::seconds(1));
    let just_passed = submit(
        &queue,
        NewTask {
            deadline: Some(start + Span::hours(49)),
            ..task("just passed", 0)
        },
    )
    .await;
    clock.advance(Span::hours(50));
    // Each passed deadline is worth exactly 10: `long passed` sits between the priority-10
    // tasks submitted a second before and after it (a second of waiting is 1/600 point),
    // and `just passed` ranks by its own waiting, not by how recently its deadline passed.
    assert_eq!(
        claim(&queue, &[], 5).await,
        vec![earlier, long_passed, later, just_passed, rival]
    );
}

/// Half a point per level of depth: a dependent released a minute after a new task of the
/// same priority comes first.
#[tokio::test]
async fn depth_weighs_half_a_point_per_level() {
    let (queue, clock, _db) = queue().await;
    let root = submit(&queue, task("root", 5)).await;
    let child = submit(
        &queue,
        NewTask {
            dependencies: vec![root],
            ..task("child", 5)
        },
    )
    .await;
    let claimed = queue.claim("w", &[], LEASE, 1).await.unwrap();
    clock.advance(Span::minutes(29));
    // A minute's head start is 0.1 point: less than the child's half point of depth.
    let fresh = submit(&queue, task("fresh", 5)).await;
    clock.advance(Span::minutes(1));
    queue
        .complete(claimed[0].lease.attempt_id, None)
        .await
        .unwrap();
    clock.advance(Span::minutes(10));
    assert_eq!(claim(&queue, &[], 2).await, vec![child, fresh]);
}

/// A delayed task ages from its run-after time, not from its submission.
#[tokio::test]
async fn a_delayed_task_ages_from_when_it_becomes_claimable() {
    let (queue, clock, _db) = queue().await;
    let start = clock.now();
    let delayed = submit(
        &queue,
        NewTask {
            run_after: Some(start + Span::minutes(60)),
            ..task("delayed", 5)
        },
    )
    .await;
    clock.advance(Span::minutes(30));
    let plain = submit(&queue, task("plain", 5)).await;
    clock.advance(Span::hours(2));
    assert_eq!(claim(&queue, &[], 2).await, vec![plain, delayed]);
}

/// A failed attempt's task ages from the end of its backoff; a released one from its release.
#[tokio::test]
async fn a_task_put_back_ages_from_when_it_is_claimable_again() {
    let (queue, clock, _db) = queue().await;
    let failing = submit(&queue, task("failing", 5)).await;
    let released = submit(&queue, task("released", 5)).await;
    let claimed = queue.claim("w", &[], LEASE, 2).await.unwrap();
    let attempt = |id: Uuid| {
        claimed
            .iter()
            .find(|c| c.task.id == id)
            .unwrap()
            .lease
            .attempt_id
    };
    clock.advance(Span::minutes(5));
    // Back at once (ready since now), and after a 10 s backoff (ready since then).
    queue.release(attempt(released), "stopping").await.unwrap();
    queue.fail(attempt(failing), "boom").await.unwrap();
    clock.advance(Span::seconds(5));
    let between = submit(&queue, task("between", 5)).await;
    clock.advance(Span::minutes(30));
    assert_eq!(
        claim(&queue, &[], 3).await,
        vec![released, between, failing]
    );
}

/// Each agent-type form of the claim keeps tasks of other types out of both of its parts.
#[tokio::test]
async fn claims_of_one_or_several_agent_types_rank_only_those_types() {
    let (queue, clock, _db) = queue().await;
    let start = clock.now();
    let of = |name: &str, agent_type: &str, deadline: bool| NewTask {
        agent_type: agent_type.into(),
        deadline: deadline.then(|| start + Span::hours(1)),
        ..task(name, 1)
    };
    let other_due = submit(&queue, of("other, due", "other", true)).await;
    let a_plain = submit(&queue, of("a", "a", false)).await;
    let a_due = submit(&queue, of("a, due", "a", true)).await;
    let b_due = submit(&queue, of("b, due", "b", true)).await;
    let c_plain = submit(&queue, of("c", "c", false)).await;
    clock.advance(Span::minutes(1));
    assert_eq!(claim(&queue, &["a"], 5).await, vec![a_due, a_plain]);
    assert_eq!(claim(&queue, &["b", "c"], 5).await, vec![b_due, c_plain]);
    assert_eq!(claim(&queue, &[], 5).await, vec![other_due]);
}

/// The group-commit store runs the same claim.
#[tokio::test]
async fn the_group_commit_store_claims_in_the_same_order() {
    let pool = test_db().await;
    let clock = ManualClock::new();
    let store = GroupCommitQueueStore::new(pool.clone());
    let queue = TaskQueue::new(Arc::new(store)).with_clock(clock.clone());
    let start = clock.now();
    let old = submit(&queue, task("old", 0)).await;
    clock.advance(Span::minutes(101));
    let new = submit(&queue, task("new", 10)).await;
    let due = submit(
        &queue,
        NewTask {
            deadline: Some(start + Span::hours(2)),
            ..task("due", 2)
        },
    )
    .await;
    assert_eq!(claim(&queue, &[], 3).await, vec![due, old, new]);
}

/// Regression: the low-level repository's status and field writes kept the claim key the
/// queue had stored, so a task put back to ready through them ranked as if it had waited since
/// it first became ready, with its old priority. They now forget it: such a task is claimed
/// after every keyed one.
#[tokio::test]
async fn a_task_put_back_to_ready_by_the_repository_is_claimed_after_every_keyed_task() {
    let (queue, clock, db) = queue().await;
    let repo = TaskRepositoryImpl::new(db.clone());
    let old = submit(&queue, task("old", 9)).await;
    clock.advance(Span::hours(5));
    let newer = submit(&queue, task("newer", 0)).await;
    repo.update_status(old, TaskStatus::Blocked).await.unwrap();
    repo.update_status(old, TaskStatus::Ready).await.unwrap();
    assert_eq!(claim(&queue, &[], 2).await, vec![newer, old]);

    // The same through `update`: a new priority is not ranked with the old key.
    let first = submit(&queue, task("first", 1)).await;
    let second = submit(&queue, task("second", 0)).await;
    let mut stored = repo.get(first).await.unwrap().unwrap();
    stored.priority = 10;
    repo.update(stored).await.unwrap();
    assert_eq!(claim(&queue, &[], 2).await, vec![second, first]);
}
