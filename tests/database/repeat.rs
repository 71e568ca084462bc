//! Repeatable completion: the same `complete` or `fail` sent again answers with the recorded
//! outcome and changes nothing; any other call on a finished attempt is a lost lease. Every
//! case runs through both SQLite stores.

use std::sync::Arc;
use std::time::Duration;

use abathur::domain::queue::{
    FailOutcome, NewTask, QueueError, QueueStore, RetryPolicy, TaskQueue,
};
use abathur::infrastructure::database::{GroupCommitQueueStore, QueueStoreImpl};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::database::{table_dump, test_db, TestPool};
use crate::helpers::ManualClock;

const LEASE: Duration = Duration::from_secs(30);

/// A queue on a fresh database through the plain store or the group-commit writer, with a
/// hand-moved clock and a 10 s backoff without jitter.
async fn queue(grouped: bool) -> (TestPool, Arc<ManualClock>, TaskQueue) {
    let pool = test_db().await;
    let clock = ManualClock::new();
    let store: Arc<dyn QueueStore> = if grouped {
        Arc::new(GroupCommitQueueStore::new(pool.clone()))
    } else {
        Arc::new(QueueStoreImpl::new(pool.clone()))
    };
    let queue = TaskQueue::new(store)
        .with_clock(clock.clone())
        .with_retry_policy(RetryPolicy {
            base: Duration::from_secs(10),
            jitter: 0.0,
            ..RetryPolicy::default()
        });
    (pool, clock, queue)
}

fn task(name: &str, deps: &[Uuid], max_retries: u32) -> NewTask {
    NewTask {
        dependencies: deps.to_vec(),
        max_retries,
        ..NewTask::new(name, name, "worker")
    }
}

#[track_caller]
fn assert_lease_lost(outcome: Result<impl std::fmt::Debug, QueueError>) {
    assert!(
        matches!(outcome, Err(QueueError::LeaseLost { .. })),
        "expected a lost lease, got {outcome:?}"
    );
}

#[tokio::test]
async fn the_same_complete_sent_again_answers_as_recorded_and_changes_nothing() {
    for grouped in [false, true] {
        let (pool, _clock, queue) = queue(grouped).await;
        let a = task("A", &[], 0);
        let b = task("B", &[a.id], 0);
        let (ia, ib) = (a.id, b.id);
        queue.submit_batch(vec![a, b]).await.unwrap();
        let lease = queue.claim("w", &[], LEASE, 1).await.unwrap()[0]
            .lease
            .clone();
        assert_eq!(lease.task_id, ia);
        let first = queue
            .complete(lease.attempt_id, Some(json!({"files": 42, "ok": true})))
            .await
            .unwrap();
        assert_eq!((first.outcome.clone(), first.repeat), (vec![ib], false));
        let before = table_dump(&pool).await;

        // The same result, re-serialised with its keys in another order, is the same result.
        let again = queue
            .complete(lease.attempt_id, Some(json!({"ok": true, "files": 42})))
            .await
            .unwrap();
        assert!(again.repeat, "grouped: {grouped}");
        assert_eq!(again.outcome, vec![ib], "the dependents made ready then");
        // A number written in another form (`42.0`, as a client's JSON library may write it)
        // is the same number.
        let reformed = queue
            .complete(lease.attempt_id, Some(json!({"ok": true, "files": 42.0})))
            .await
            .unwrap();
        assert!(reformed.repeat, "grouped: {grouped}");
        assert_eq!(table_dump(&pool).await, before, "grouped: {grouped}");
    }
}

#[tokio::test]
async fn a_different_result_or_verb_on_a_finished_attempt_is_still_a_lost_lease() {
    for grouped in [false, true] {
        let (pool, _clock, queue) = queue(grouped).await;
        queue.submit(task("A", &[], 0)).await.unwrap();
        let attempt = queue.claim("w", &[], LEASE, 1).await.unwrap()[0]
            .lease
            .attempt_id;
        queue.complete(attempt, Some(json!(1))).await.unwrap();
        let before = table_dump(&pool).await;

        assert_lease_lost(queue.complete(attempt, Some(json!(2))).await);
        assert_lease_lost(queue.complete(attempt, None).await);
        assert_lease_lost(queue.fail(attempt, "boom").await);
        assert_eq!(table_dump(&pool).await, before, "grouped: {grouped}");
    }
}

#[tokio::test]
async fn the_same_fail_after_the_task_was_claimed_again_answers_for_its_own_attempt_only() {
    for grouped in [false, true] {
        let (pool, clock, queue) = queue(grouped).await;
        let id = queue.submit(task("A", &[], 2)).await.unwrap().id;
        let first = queue.claim("w1", &[], LEASE, 1).await.unwrap()[0]
            .lease
            .attempt_id;
        let recorded = queue.fail(first, "boom").await.unwrap();
        assert!(!recorded.repeat);
        let FailOutcome::Retrying {
            retry_count,
            run_after,
        } = recorded.outcome.clone()
        else {
            panic!("expected a retry, got {recorded:?}");
        };
        assert_eq!(retry_count, 1);

        clock.advance(chrono::Duration::seconds(11));
        let second = queue.claim("w2", &[], LEASE, 1).await.unwrap()[0]
            .lease
            .clone();
        assert_eq!(second.task_id, id);
        let before = table_dump(&pool).await;

        let again = queue.fail(first, "boom").await.unwrap();
        assert!(again.repeat, "grouped: {grouped}");
        assert_eq!(
            again.outcome,
            FailOutcome::Retrying {
                retry_count,
                run_after
            }
        );
        assert_lease_lost(queue.fail(first, "boom, but told differently").await);
        assert_lease_lost(queue.complete(first, None).await);
        assert_eq!(
            table_dump(&pool).await,
            before,
            "the new attempt is untouched"
        );

        // The new attempt is still the live one.
        let done = queue.complete(second.attempt_id, None).await.unwrap();
        assert!(!done.repeat);
    }
}

#[tokio::test]
async fn the_same_fail_that_used_up_the_retries_answers_failed_with_its_cascade() {
    for grouped in [false, true] {
        let (pool, _clock, queue) = queue(grouped).await;
        let a = task("A", &[], 0);
        let b = task("B", &[a.id], 0);
        let c = task("C", &[b.id], 0);
        let (ib, ic) = (b.id, c.id);
        queue.submit_batch(vec![a, b, c]).await.unwrap();
        let attempt = queue.claim("w", &[], LEASE, 1).await.unwrap()[0]
            .lease
            .attempt_id;
        let first = queue.fail(attempt, "it broke").await.unwrap();
        let FailOutcome::Failed { mut cascaded } = first.outcome else {
            panic!("expected a failure, got {first:?}");
        };
        cascaded.sort();
        let mut expected = vec![ib, ic];
        expected.sort();
        assert_eq!(cascaded, expected);
        let before = table_dump(&pool).await;

        let again = queue.fail(attempt, "it broke").await.unwrap();
        assert!(again.repeat, "grouped: {grouped}");
        let FailOutcome::Failed { mut cascaded } = again.outcome else {
            panic!("expected the recorded failure, got {again:?}");
        };
        cascaded.sort();
        assert_eq!(cascaded, expected);
        assert_eq!(table_dump(&pool).await, before, "grouped: {grouped}");
    }
}

#[tokio::test]
async fn a_repeat_of_an_attempt_that_never_existed_is_not_found() {
    for grouped in [false, true] {
        let (pool, _clock, queue) = queue(grouped).await;
        let before = table_dump(&pool).await;
        let unknown = Uuid::new_v4();
        assert!(matches!(
            queue.complete(unknown, None).await,
            Err(QueueError::AttemptNotFound(id)) if id == unknown
        ));
        assert_eq!(table_dump(&pool).await, before);
    }
}
