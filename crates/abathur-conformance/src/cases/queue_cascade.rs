//! The failure cascade (dependents fail naming the root) and revival by a person's retry.

use abathur_core::models::TaskStatus;
use abathur_core::queue::{FailOutcome, NewTask, QueueError};
use uuid::Uuid;

use crate::assert_err;
use crate::harness::{after, ok, sorted, task, Harness};

/// a → b → c, and d beside them; a's only attempt fails.
async fn failed_chain(h: &Harness) -> (Uuid, Uuid, Uuid, Uuid, FailOutcome) {
    let a = h.submit(task("a")).await;
    let b = h.submit(after("b", &[a.id])).await;
    let c = h.submit(after("c", &[b.id])).await;
    let d = h.submit(task("d")).await;
    let claimed = h.claim(10).await;
    let attempt = claimed.iter().find(|x| x.task.id == a.id).unwrap();
    let outcome = h.fail(attempt.lease.attempt_id, "root cause").await;
    (a.id, b.id, c.id, d.id, outcome)
}

pub async fn a_final_failure_fails_every_transitive_dependent_naming_the_root(h: Harness) {
    let (a, b, c, _, _) = failed_chain(&h).await;
    assert_eq!(h.task(a).await.error_message.as_deref(), Some("root cause"));
    for dependent in [b, c] {
        let t = h.task(dependent).await;
        assert_eq!(t.status, TaskStatus::Failed);
        assert_eq!(
            t.error_message.as_deref(),
            Some(format!("dependency {a} failed").as_str())
        );
    }
}

pub async fn the_failure_answers_with_the_dependents_that_failed_with_it(h: Harness) {
    let (_, b, c, _, outcome) = failed_chain(&h).await;
    match outcome {
        FailOutcome::Failed { cascaded } => assert_eq!(sorted(cascaded), sorted(vec![b, c])),
        other => panic!("{other:?}"),
    }
}

pub async fn a_failure_leaves_tasks_that_do_not_depend_on_it_alone(h: Harness) {
    let (_, _, _, d, _) = failed_chain(&h).await;
    assert_eq!(h.status(d).await, TaskStatus::Running);
}

pub async fn a_retried_task_is_ready_again_with_its_retry_count_reset(h: Harness) {
    let t = h
        .submit(NewTask {
            max_retries: 1,
            ..task("t")
        })
        .await;
    let first = h.claim_only(t.id).await;
    h.fail(first, "one").await;
    h.advance(10);
    let second = h.claim_only(t.id).await;
    h.fail(second, "two").await;
    assert!(h.task(t.id).await.retry_count > 0);
    assert!(ok(h.queue.retry(t.id, "person").await).is_empty());
    let back = h.task(t.id).await;
    assert_eq!(back.status, TaskStatus::Ready);
    assert_eq!(back.retry_count, 0);
    assert_eq!(h.claim_ids(10).await, vec![t.id]);
}

pub async fn a_retry_puts_the_dependents_that_failed_with_it_back_to_blocked(h: Harness) {
    let (a, b, c, _, _) = failed_chain(&h).await;
    assert_eq!(
        sorted(ok(h.queue.retry(a, "person").await)),
        sorted(vec![b, c])
    );
    assert_eq!(h.status(a).await, TaskStatus::Ready);
    assert_eq!(h.status(b).await, TaskStatus::Blocked);
    assert_eq!(h.status(c).await, TaskStatus::Blocked);
}

pub async fn a_dependent_with_another_failed_dependency_stays_failed_until_that_one_is_retried(
    h: Harness,
) {
    let x = h.submit(task("x")).await;
    let y = h.submit(task("y")).await;
    let d = h.submit(after("d", &[x.id, y.id])).await;
    for c in h.claim(10).await {
        h.fail(c.lease.attempt_id, "boom").await;
    }
    assert_eq!(h.status(d.id).await, TaskStatus::Failed);
    assert!(ok(h.queue.retry(x.id, "person").await).is_empty());
    assert_eq!(
        h.status(d.id).await,
        TaskStatus::Failed,
        "y is still failed"
    );
    assert_eq!(ok(h.queue.retry(y.id, "person").await), vec![d.id]);
    assert_eq!(h.status(d.id).await, TaskStatus::Blocked);
}

pub async fn a_dependent_with_a_cancelled_dependency_stays_failed_when_the_other_is_retried(
    h: Harness,
) {
    let x = h.submit(task("x")).await;
    let y = h.submit(task("y")).await;
    let d = h.submit(after("d", &[x.id, y.id])).await;
    let claimed = h.claim(10).await;
    let on_x = claimed.iter().find(|c| c.task.id == x.id).unwrap();
    h.fail(on_x.lease.attempt_id, "boom").await;
    assert_eq!(h.status(d.id).await, TaskStatus::Failed);
    ok(h.queue.cancel(y.id, "person").await);
    assert!(ok(h.queue.retry(x.id, "person").await).is_empty());
    assert_eq!(h.status(d.id).await, TaskStatus::Failed);
}

pub async fn the_revived_dag_runs_to_completion(h: Harness) {
    let (a, b, c, d, _) = failed_chain(&h).await;
    let running_d = h.claim(10).await;
    assert!(running_d.is_empty(), "d is already running");
    ok(h.queue.retry(a, "person").await);
    assert_eq!(h.run_to_completion(a).await, vec![b]);
    assert_eq!(h.run_to_completion(b).await, vec![c]);
    h.run_to_completion(c).await;
    assert_eq!(h.status(c).await, TaskStatus::Completed);
    assert_eq!(h.status(d).await, TaskStatus::Running);
}

pub async fn retrying_a_task_that_has_not_failed_is_a_conflict(h: Harness) {
    let ready = h.submit(task("ready")).await;
    let blocked = h.submit(after("blocked", &[ready.id])).await;
    let running = h.submit(task("running")).await;
    let done = h.submit(task("done")).await;
    let cancelled = h.submit(task("cancelled")).await;
    ok(h.queue.cancel(cancelled.id, "person").await);
    assert_err!(
        h.queue.retry(ready.id, "person").await,
        QueueError::InvalidTransition {
            status: TaskStatus::Ready,
            ..
        }
    );
    let claimed = h.claim(10).await;
    for c in &claimed {
        if c.task.id == done.id {
            h.complete(c.lease.attempt_id).await;
        }
    }
    for (id, status) in [
        (blocked.id, TaskStatus::Blocked),
        (running.id, TaskStatus::Running),
        (done.id, TaskStatus::Completed),
        (cancelled.id, TaskStatus::Cancelled),
    ] {
        let before = h.snapshot(&[id]).await;
        assert_err!(
            h.queue.retry(id, "person").await,
            QueueError::InvalidTransition { task_id, status: s, .. } if task_id == id && s == status
        );
        assert_eq!(h.snapshot(&[id]).await, before);
    }
}

pub async fn retrying_an_unknown_task_is_not_found(h: Harness) {
    let never = Uuid::new_v4();
    assert_err!(h.queue.retry(never, "person").await, QueueError::TaskNotFound(id) if id == never);
}

pub async fn a_blank_actor_is_refused_for_retry_and_cancel(h: Harness) {
    let t = h.submit(task("t")).await;
    assert_err!(h.queue.cancel(t.id, "").await, QueueError::Validation(e) if e.field == "actor");
    assert_err!(h.queue.retry(t.id, "").await, QueueError::Validation(e) if e.field == "actor");
    assert_eq!(h.status(t.id).await, TaskStatus::Ready);
}
