//! Retention: a prune removes old finished tasks of the asked statuses with everything that
//! hangs off them, and keeps what unfinished work still needs.

use std::time::Duration;

use abathur_core::models::TaskStatus;
use abathur_core::queue::{NewTask, PruneRequest, QueueError};
use uuid::Uuid;

use crate::assert_err;
use crate::harness::{after, ok, task, Harness};

const HOUR: Duration = Duration::from_secs(3600);

/// Whether a task is gone through every port that could show it.
async fn gone(h: &Harness, id: Uuid) -> bool {
    !h.exists(id).await
        && matches!(h.queue.history(id).await, Err(QueueError::TaskNotFound(_)))
        && matches!(
            h.queue.submission_details(id).await,
            Err(QueueError::TaskNotFound(_))
        )
}

pub async fn prune_removes_old_finished_tasks_with_their_history(h: Harness) {
    let done = h.submit(task("done")).await;
    let attempt = h.claim_only(done.id).await;
    h.complete(attempt).await;
    h.advance(7200);
    let report = ok(h.queue.prune(HOUR, &[]).await);
    assert_eq!(report.tasks, 1);
    assert!(report.batches >= 1);
    assert!(gone(&h, done.id).await);
    assert_err!(
        h.queue.complete(attempt, None).await,
        QueueError::AttemptNotFound(_)
    );
}

pub async fn prune_keeps_tasks_that_finished_too_recently(h: Harness) {
    let done = h.submit(task("done")).await;
    h.run_to_completion(done.id).await;
    h.advance(1800);
    assert_eq!(ok(h.queue.prune(HOUR, &[]).await).tasks, 0);
    assert!(h.exists(done.id).await);
}

pub async fn prune_removes_only_the_asked_statuses(h: Harness) {
    let done = h.submit(task("done")).await;
    h.run_to_completion(done.id).await;
    let cancelled = h.submit(task("cancelled")).await;
    ok(h.queue.cancel(cancelled.id, "person").await);
    let failed = h.submit(task("failed")).await;
    let attempt = h.claim_only(failed.id).await;
    h.fail(attempt, "boom").await;
    h.advance(7200);
    assert_eq!(
        ok(h.queue.prune(HOUR, &[TaskStatus::Cancelled]).await).tasks,
        1
    );
    assert!(gone(&h, cancelled.id).await);
    assert!(h.exists(done.id).await && h.exists(failed.id).await);
    let report = ok(h
        .queue
        .prune(HOUR, &[TaskStatus::Completed, TaskStatus::Failed])
        .await);
    assert_eq!(report.tasks, 2);
    assert!(gone(&h, done.id).await && gone(&h, failed.id).await);
}

pub async fn prune_never_removes_unfinished_tasks(h: Harness) {
    let ready = h.submit(task("ready")).await;
    let blocked = h.submit(after("blocked", &[ready.id])).await;
    let running = h.submit(task("running")).await;
    h.claim_as("w", 1).await;
    h.advance(30 * 24 * 3600);
    assert_eq!(ok(h.queue.prune(HOUR, &[]).await).tasks, 0);
    for id in [ready.id, blocked.id, running.id] {
        assert!(h.exists(id).await);
    }
}

pub async fn a_completed_task_is_kept_while_a_dependent_is_unfinished(h: Harness) {
    let a = h.submit(task("a")).await;
    let b = h.submit(after("b", &[a.id])).await;
    h.run_to_completion(a.id).await;
    h.advance(7200);
    assert_eq!(ok(h.queue.prune(HOUR, &[]).await).tasks, 0);
    assert!(h.exists(a.id).await);
    h.run_to_completion(b.id).await;
    h.advance(7200);
    assert_eq!(ok(h.queue.prune(HOUR, &[]).await).tasks, 2);
}

pub async fn a_dependent_counts_a_pruned_completed_dependency_as_completed(h: Harness) {
    let a = h.submit(task("a")).await;
    let b = h
        .submit(NewTask {
            max_retries: 0,
            ..task("b")
        })
        .await;
    let d = h.submit(after("d", &[a.id, b.id])).await;
    for c in h.claim(10).await {
        if c.task.id == a.id {
            h.complete(c.lease.attempt_id).await;
        } else {
            h.fail(c.lease.attempt_id, "boom").await;
        }
    }
    assert_eq!(h.status(d.id).await, TaskStatus::Failed);
    h.advance(7200);
    ok(h.queue.prune(HOUR, &[TaskStatus::Completed]).await);
    assert!(gone(&h, a.id).await, "d is finished, so a may go");
    ok(h.queue.retry(b.id, "person").await);
    assert_eq!(h.status(d.id).await, TaskStatus::Blocked);
    assert_eq!(h.run_to_completion(b.id).await, vec![d.id]);
    assert_eq!(h.status(d.id).await, TaskStatus::Ready);
}

pub async fn a_failed_task_is_kept_while_a_task_depends_on_it(h: Harness) {
    let root = h.submit(task("root")).await;
    let d = h.submit(after("d", &[root.id])).await;
    ok(h.queue.cancel(d.id, "person").await);
    let attempt = h.claim_only(root.id).await;
    h.fail(attempt, "boom").await;
    h.advance(7200);
    assert_eq!(
        ok(h.queue.prune(HOUR, &[TaskStatus::Failed]).await).tasks,
        0
    );
    assert!(h.exists(root.id).await);
    assert_eq!(
        ok(h.queue.prune(HOUR, &[]).await).tasks,
        2,
        "d first, then root"
    );
    assert!(gone(&h, root.id).await && gone(&h, d.id).await);
}

pub async fn a_failed_task_goes_with_the_dependents_that_failed_with_it(h: Harness) {
    let root = h.submit(task("root")).await;
    let d = h.submit(after("d", &[root.id])).await;
    let attempt = h.claim_only(root.id).await;
    h.fail(attempt, "boom").await;
    h.advance(7200);
    assert_eq!(
        ok(h.queue.prune(HOUR, &[TaskStatus::Failed]).await).tasks,
        2
    );
    assert!(gone(&h, root.id).await && gone(&h, d.id).await);
}

pub async fn a_parent_is_kept_while_a_child_is_unfinished(h: Harness) {
    let parent = h.submit(task("parent")).await;
    let child = h
        .submit(NewTask {
            parent_task_id: Some(parent.id),
            ..task("child")
        })
        .await;
    let claimed = h.claim(10).await;
    let on_parent = claimed.iter().find(|c| c.task.id == parent.id).unwrap();
    let on_child = claimed.iter().find(|c| c.task.id == child.id).unwrap();
    h.complete(on_parent.lease.attempt_id).await;
    h.advance(7200);
    assert_eq!(ok(h.queue.prune(HOUR, &[]).await).tasks, 0);
    h.complete(on_child.lease.attempt_id).await;
    h.advance(7200);
    assert_eq!(ok(h.queue.prune(HOUR, &[]).await).tasks, 2);
}

pub async fn a_child_of_a_pruned_parent_keeps_no_parent(h: Harness) {
    let parent = h.submit(task("parent")).await;
    let child = h
        .submit(NewTask {
            parent_task_id: Some(parent.id),
            ..task("child")
        })
        .await;
    let claimed = h.claim(10).await;
    let on_parent = claimed.iter().find(|c| c.task.id == parent.id).unwrap();
    h.complete(on_parent.lease.attempt_id).await;
    let on_child = claimed.iter().find(|c| c.task.id == child.id).unwrap();
    h.advance(7200);
    h.complete(on_child.lease.attempt_id).await;
    ok(h.queue.prune(HOUR, &[]).await);
    assert!(gone(&h, parent.id).await);
    assert_eq!(h.task(child.id).await.parent_task_id, None);
}

pub async fn a_pruned_task_cannot_be_named_as_a_dependency(h: Harness) {
    let a = h.submit(task("a")).await;
    h.run_to_completion(a.id).await;
    h.advance(7200);
    ok(h.queue.prune(HOUR, &[]).await);
    let t = after("late", &[a.id]);
    assert_err!(
        h.queue.submit(t).await,
        QueueError::UnknownDependency { dependency, .. } if dependency == a.id
    );
}

pub async fn prune_goes_in_batches_of_the_asked_size(h: Harness) {
    for i in 0..5 {
        let t = h.submit(task(&format!("t{i}"))).await;
        h.run_to_completion(t.id).await;
    }
    h.advance(7200);
    let report = ok(h
        .ports
        .queue
        .prune(&PruneRequest {
            finished_before: h.now() - chrono::Duration::hours(1),
            statuses: vec![TaskStatus::Completed],
            batch_size: 2,
        })
        .await);
    assert_eq!(report.tasks, 5);
    assert!(report.batches >= 3, "{report:?}");
}

pub async fn bad_prune_requests_are_refused_with_nothing_removed(h: Harness) {
    let done = h.submit(task("done")).await;
    h.run_to_completion(done.id).await;
    h.advance(7200);
    assert_err!(
        h.queue.prune(Duration::ZERO, &[]).await,
        QueueError::Validation(e) if e.field == "older_than"
    );
    assert_err!(
        h.queue.prune(Duration::from_secs(u64::MAX / 4), &[]).await,
        QueueError::Validation(e) if e.field == "older_than"
    );
    assert_err!(
        h.queue.prune(HOUR, &[TaskStatus::Ready]).await,
        QueueError::Validation(_)
    );
    assert_err!(
        h.ports
            .queue
            .prune(&PruneRequest {
                finished_before: h.now(),
                statuses: vec![TaskStatus::Running],
                batch_size: 10,
            })
            .await,
        QueueError::Validation(_)
    );
    assert_err!(
        h.ports
            .queue
            .prune(&PruneRequest {
                finished_before: h.now(),
                statuses: vec![TaskStatus::Completed],
                batch_size: 0,
            })
            .await,
        QueueError::Validation(_)
    );
    assert!(h.exists(done.id).await);
}
