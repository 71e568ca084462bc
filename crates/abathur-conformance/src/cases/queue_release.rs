//! Release: a worker hands a claimed task back unfinished, and no retry is counted.

use abathur_core::models::TaskStatus;
use abathur_core::queue::{NewTask, QueueError};

use crate::assert_err;
use crate::harness::{ok, task, Harness, LEASE};

pub async fn a_released_task_is_ready_at_once_without_counting_a_retry(h: Harness) {
    let t = h.submit(task("t")).await;
    let attempt = h.claim_only(t.id).await;
    ok(h.queue
        .release(attempt, "the worker is shutting down")
        .await);
    let back = h.task(t.id).await;
    assert_eq!(back.status, TaskStatus::Ready);
    assert_eq!(back.retry_count, 0);
    let again = h.claim(10).await;
    assert_eq!(again.len(), 1, "claimable at once, with no backoff");
    assert_eq!(again[0].lease.attempt_number, 2);
}

pub async fn a_released_attempt_is_fenced_off(h: Harness) {
    let t = h.submit(task("t")).await;
    let attempt = h.claim_only(t.id).await;
    ok(h.queue.release(attempt, "stopping").await);
    assert_err!(
        h.queue.complete(attempt, None).await,
        QueueError::LeaseLost { .. }
    );
    assert_err!(
        h.queue.fail(attempt, "x").await,
        QueueError::LeaseLost { .. }
    );
    assert_err!(
        h.queue.heartbeat(attempt, LEASE).await,
        QueueError::LeaseLost { .. }
    );
    assert_err!(
        h.queue.release(attempt, "again").await,
        QueueError::LeaseLost { .. }
    );
    assert_eq!(h.status(t.id).await, TaskStatus::Ready);
}

pub async fn a_release_after_a_retry_neither_adds_a_retry_nor_keeps_the_old_backoff(h: Harness) {
    let t = h
        .submit(NewTask {
            max_retries: 1,
            ..task("t")
        })
        .await;
    let first = h.claim_only(t.id).await;
    h.fail(first, "flaky").await;
    h.advance(10);
    // The retry's backoff ended now: the task counts as ready since this moment.
    let second = h.claim_only(t.id).await;
    h.advance(30 * 60);
    let reference = h.submit(task("ready while the second attempt ran")).await;
    h.advance(30 * 60);
    ok(h.queue.release(second, "stopping").await);
    assert_eq!(h.task(t.id).await.retry_count, 1, "no retry is counted");
    let claimed = h.claim(1).await;
    assert_eq!(
        claimed.iter().map(|c| c.task.id).collect::<Vec<_>>(),
        vec![reference.id],
        "the released task is ready from its release, not from the end of its old backoff, \
         so the task ready half an hour before it comes first"
    );
    let third = h.claim(1).await;
    assert_eq!(
        third.iter().map(|c| c.task.id).collect::<Vec<_>>(),
        vec![t.id],
        "claimable at once, with no new backoff"
    );
    assert_eq!(third[0].lease.attempt_number, 3);
    h.complete(third[0].lease.attempt_id).await;
}

pub async fn the_release_reason_is_in_the_history(h: Harness) {
    let t = h.submit(task("t")).await;
    let attempt = h.claim_only(t.id).await;
    ok(h.queue
        .release(attempt, "the worker is shutting down")
        .await);
    let last = h.history(t.id).await.pop().unwrap();
    assert_eq!(
        (last.from, last.to),
        (Some(TaskStatus::Running), TaskStatus::Ready)
    );
    assert_eq!(last.attempt_id, Some(attempt));
    assert!(
        last.reason
            .as_deref()
            .is_some_and(|r| r.contains("the worker is shutting down")),
        "{last:?}"
    );
}

pub async fn a_release_reason_with_a_nul_is_refused(h: Harness) {
    let t = h.submit(task("t")).await;
    let attempt = h.claim_only(t.id).await;
    assert_err!(
        h.queue.release(attempt, "a\0b").await,
        QueueError::Validation(e) if e.field == "reason"
    );
    assert_eq!(h.status(t.id).await, TaskStatus::Running);
}
