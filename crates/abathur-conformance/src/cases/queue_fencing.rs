//! Claim fencing: the attempt id is the lease token, and an attempt that ended can change
//! nothing any more.

use abathur_core::error::ErrorCategory;
use abathur_core::models::TaskStatus;
use abathur_core::queue::{NewTask, QueueError};
use serde_json::json;
use uuid::Uuid;

use crate::assert_err;
use crate::harness::{ok, task, Harness, LEASE};

pub async fn a_completed_attempt_cannot_complete_again_with_another_result(h: Harness) {
    let t = h.submit(task("t")).await;
    let attempt = h.claim_only(t.id).await;
    ok(h.queue.complete(attempt, Some(json!(1))).await);
    let before = h.snapshot(&[t.id]).await;
    assert_err!(
        h.queue.complete(attempt, Some(json!(2))).await,
        QueueError::LeaseLost { attempt_id, .. } if attempt_id == attempt
    );
    assert_eq!(h.snapshot(&[t.id]).await, before);
    assert_eq!(h.task(t.id).await.result_data, Some(json!(1)));
}

pub async fn a_completed_attempt_cannot_fail_heartbeat_or_be_released(h: Harness) {
    let t = h.submit(task("t")).await;
    let attempt = h.claim_only(t.id).await;
    h.complete(attempt).await;
    let before = h.snapshot(&[t.id]).await;
    assert_err!(
        h.queue.fail(attempt, "late").await,
        QueueError::LeaseLost { .. }
    );
    assert_err!(
        h.queue.heartbeat(attempt, LEASE).await,
        QueueError::LeaseLost { .. }
    );
    assert_err!(
        h.queue.release(attempt, "late").await,
        QueueError::LeaseLost { .. }
    );
    assert_eq!(h.snapshot(&[t.id]).await, before);
}

pub async fn a_failed_attempt_cannot_complete(h: Harness) {
    let t = h.submit(task("t")).await;
    let attempt = h.claim_only(t.id).await;
    h.fail(attempt, "boom").await;
    let before = h.snapshot(&[t.id]).await;
    assert_err!(
        h.queue.complete(attempt, None).await,
        QueueError::LeaseLost { .. }
    );
    assert_eq!(h.snapshot(&[t.id]).await, before);
    assert_eq!(h.status(t.id).await, TaskStatus::Failed);
}

pub async fn a_failed_attempt_cannot_touch_the_next_attempt_of_its_task(h: Harness) {
    let t = h
        .submit(NewTask {
            max_retries: 1,
            ..task("t")
        })
        .await;
    let first = h.claim_only(t.id).await;
    h.fail(first, "boom").await;
    h.advance(10);
    let second = h.claim_only(t.id).await;
    assert_ne!(first, second);
    assert_err!(
        h.queue.complete(first, None).await,
        QueueError::LeaseLost { .. }
    );
    assert_err!(
        h.queue.heartbeat(first, LEASE).await,
        QueueError::LeaseLost { .. }
    );
    assert_eq!(h.status(t.id).await, TaskStatus::Running);
    h.complete(second).await;
    assert_eq!(h.status(t.id).await, TaskStatus::Completed);
}

pub async fn a_reaped_attempt_cannot_complete_fail_or_heartbeat(h: Harness) {
    let t = h
        .submit(NewTask {
            max_retries: 1,
            ..task("t")
        })
        .await;
    let attempt = h.claim_only(t.id).await;
    h.advance(31);
    assert_eq!(ok(h.queue.reap().await).lost, vec![t.id]);
    let before = h.snapshot(&[t.id]).await;
    assert_err!(
        h.queue.complete(attempt, None).await,
        QueueError::LeaseLost { .. }
    );
    assert_err!(
        h.queue.fail(attempt, "late").await,
        QueueError::LeaseLost { .. }
    );
    assert_err!(
        h.queue.heartbeat(attempt, LEASE).await,
        QueueError::LeaseLost { .. }
    );
    assert_err!(
        h.queue.release(attempt, "late").await,
        QueueError::LeaseLost { .. }
    );
    assert_eq!(h.snapshot(&[t.id]).await, before);
}

pub async fn an_attempt_no_claim_handed_out_is_not_found(h: Harness) {
    h.submit(task("t")).await;
    let never = Uuid::new_v4();
    assert_err!(h.queue.heartbeat(never, LEASE).await, QueueError::AttemptNotFound(id) if id == never);
    assert_err!(h.queue.complete(never, None).await, QueueError::AttemptNotFound(id) if id == never);
    assert_err!(h.queue.fail(never, "x").await, QueueError::AttemptNotFound(id) if id == never);
    assert_err!(h.queue.release(never, "x").await, QueueError::AttemptNotFound(id) if id == never);
}

pub async fn an_attempt_whose_task_was_cancelled_answers_cancelled(h: Harness) {
    let t = h.submit(task("t")).await;
    let attempt = h.claim_only(t.id).await;
    ok(h.queue.cancel(t.id, "person").await);
    let before = h.snapshot(&[t.id]).await;
    assert_err!(h.queue.heartbeat(attempt, LEASE).await, QueueError::Cancelled { task_id } if task_id == t.id);
    assert_err!(h.queue.complete(attempt, None).await, QueueError::Cancelled { task_id } if task_id == t.id);
    assert_err!(h.queue.fail(attempt, "x").await, QueueError::Cancelled { task_id } if task_id == t.id);
    assert_err!(h.queue.release(attempt, "x").await, QueueError::Cancelled { task_id } if task_id == t.id);
    assert_eq!(h.snapshot(&[t.id]).await, before);
    assert_eq!(h.status(t.id).await, TaskStatus::Cancelled);
}

pub async fn a_status_changed_behind_the_queues_back_is_a_conflict(h: Harness) {
    let t = h.submit(task("t")).await;
    let attempt = h.claim_only(t.id).await;
    ok(h.ports
        .tasks
        .update_status(t.id, TaskStatus::Completed)
        .await
        .map_err(QueueError::from));
    let before = h.snapshot(&[t.id]).await;
    match h.queue.complete(attempt, None).await {
        Err(e) => assert_eq!(e.category(), ErrorCategory::Conflict, "{e:?}"),
        Ok(answer) => panic!("a completion on a row changed behind the queue's back: {answer:?}"),
    }
    assert_eq!(h.snapshot(&[t.id]).await, before);
}

pub async fn an_error_text_with_a_nul_or_over_the_limit_is_refused(h: Harness) {
    let t = h.submit(task("t")).await;
    let attempt = h.claim_only(t.id).await;
    assert_err!(h.queue.fail(attempt, "a\0b").await, QueueError::Validation(e) if e.field == "error");
    let long = "x".repeat(abathur_core::limits::MAX_ERROR_BYTES + 1);
    assert_err!(h.queue.fail(attempt, &long).await, QueueError::Validation(e) if e.field == "error");
    assert_eq!(h.status(t.id).await, TaskStatus::Running);
}

pub async fn concurrent_calls_each_get_their_own_outcome(h: Harness) {
    let batch: Vec<NewTask> = (0..6).map(|i| task(&format!("t{i}"))).collect();
    h.submit_batch(batch).await;
    let claimed = h.claim(10).await;
    let mut calls = tokio::task::JoinSet::new();
    for (i, c) in claimed.iter().enumerate() {
        let queue = h.queue.clone();
        let (attempt, task) = (c.lease.attempt_id, c.task.id);
        calls.spawn(async move {
            let never = Uuid::new_v4();
            let wrong = queue.complete(never, Some(json!(i))).await;
            let right = queue.complete(attempt, Some(json!(i))).await;
            (task, i, wrong, right)
        });
    }
    while let Some(done) = calls.join_next().await {
        let (task, i, wrong, right) = done.expect("a caller panicked");
        assert_err!(wrong, QueueError::AttemptNotFound(_));
        assert!(right.is_ok(), "{right:?}");
        let stored = h.task(task).await;
        assert_eq!(stored.status, TaskStatus::Completed);
        assert_eq!(
            stored.result_data,
            Some(json!(i)),
            "each result went to its own task"
        );
    }
}
