//! The cancel cascade: a task, every unfinished task depending on it and its children, and
//! theirs; the walk stops at finished tasks.

use abathur_core::models::TaskStatus;
use abathur_core::queue::{NewTask, QueueError};
use uuid::Uuid;

use crate::assert_err;
use crate::harness::{after, ok, sorted, task, Harness};

fn child_of(name: &str, parent: Uuid) -> NewTask {
    NewTask {
        parent_task_id: Some(parent),
        ..task(name)
    }
}

pub async fn cancelling_a_ready_task_cancels_it_and_answers_with_it(h: Harness) {
    let t = h.submit(task("t")).await;
    assert_eq!(ok(h.queue.cancel(t.id, "person").await), vec![t.id]);
    let cancelled = h.task(t.id).await;
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    assert!(h.claim(10).await.is_empty());
}

pub async fn cancelling_cancels_every_transitive_dependent(h: Harness) {
    let a = h.submit(task("a")).await;
    let b = h.submit(after("b", &[a.id])).await;
    let c = h.submit(after("c", &[b.id])).await;
    let other = h.submit(task("other")).await;
    assert_eq!(
        sorted(ok(h.queue.cancel(a.id, "person").await)),
        sorted(vec![a.id, b.id, c.id])
    );
    for id in [a.id, b.id, c.id] {
        assert_eq!(h.status(id).await, TaskStatus::Cancelled);
    }
    assert_eq!(h.status(other.id).await, TaskStatus::Ready);
}

pub async fn cancelling_cancels_children_and_their_dependents(h: Harness) {
    let parent = h.submit(task("parent")).await;
    let child = h.submit(child_of("child", parent.id)).await;
    let grandchild = h.submit(child_of("grandchild", child.id)).await;
    let after_child = h.submit(after("after child", &[child.id])).await;
    assert_eq!(
        sorted(ok(h.queue.cancel(parent.id, "person").await)),
        sorted(vec![parent.id, child.id, grandchild.id, after_child.id])
    );
    for id in [child.id, grandchild.id, after_child.id] {
        assert_eq!(h.status(id).await, TaskStatus::Cancelled);
    }
}

pub async fn cancelling_a_running_task_revokes_its_lease(h: Harness) {
    let t = h.submit(task("t")).await;
    let attempt = h.claim_only(t.id).await;
    ok(h.queue.cancel(t.id, "person").await);
    assert_err!(
        h.queue.complete(attempt, None).await,
        QueueError::Cancelled { .. }
    );
    assert_eq!(h.status(t.id).await, TaskStatus::Cancelled);
    h.advance(3600);
    let report = ok(h.queue.reap().await);
    assert!(report.lost.is_empty(), "a revoked lease is nothing to reap");
}

pub async fn the_cancel_walk_stops_at_finished_tasks(h: Harness) {
    let parent = h.submit(task("parent")).await;
    let child = h.submit(child_of("child", parent.id)).await;
    let after_child = h.submit(after("after child", &[child.id])).await;
    let claimed = h.claim(10).await;
    let on_child = claimed.iter().find(|c| c.task.id == child.id).unwrap();
    assert_eq!(
        h.complete(on_child.lease.attempt_id).await,
        vec![after_child.id]
    );
    let cancelled = ok(h.queue.cancel(parent.id, "person").await);
    assert_eq!(cancelled, vec![parent.id]);
    assert_eq!(h.status(child.id).await, TaskStatus::Completed);
    assert_eq!(
        h.status(after_child.id).await,
        TaskStatus::Ready,
        "a completed child keeps its own dependents"
    );
}

pub async fn cancelling_a_finished_task_is_a_conflict_and_changes_nothing(h: Harness) {
    let done = h.submit(task("done")).await;
    h.run_to_completion(done.id).await;
    let failed = h.submit(task("failed")).await;
    let attempt = h.claim_only(failed.id).await;
    h.fail(attempt, "boom").await;
    let cancelled = h.submit(task("cancelled")).await;
    ok(h.queue.cancel(cancelled.id, "person").await);
    for (id, status) in [
        (done.id, TaskStatus::Completed),
        (failed.id, TaskStatus::Failed),
        (cancelled.id, TaskStatus::Cancelled),
    ] {
        let before = h.snapshot(&[id]).await;
        assert_err!(
            h.queue.cancel(id, "person").await,
            QueueError::InvalidTransition { task_id, status: s, .. } if task_id == id && s == status
        );
        assert_eq!(h.snapshot(&[id]).await, before);
    }
}

pub async fn cancelling_an_unknown_task_is_not_found(h: Harness) {
    let never = Uuid::new_v4();
    assert_err!(h.queue.cancel(never, "person").await, QueueError::TaskNotFound(id) if id == never);
}

pub async fn a_cancelled_blocked_task_never_becomes_ready(h: Harness) {
    let a = h.submit(task("a")).await;
    let b = h.submit(after("b", &[a.id])).await;
    let attempt = h.claim_only(a.id).await;
    ok(h.queue.cancel(b.id, "person").await);
    assert!(h.complete(attempt).await.is_empty());
    assert_eq!(h.status(b.id).await, TaskStatus::Cancelled);
    assert!(h.claim(10).await.is_empty());
}
