//! The reaper: expired leases end as lost, attempts past their task's timeout as timed out, and
//! each task then follows the fail path.

use std::time::Duration;

use abathur_core::models::TaskStatus;
use abathur_core::queue::NewTask;

use crate::harness::{after, ok, task, Harness, LEASE};

pub async fn an_expired_lease_is_taken_back_as_lost_and_retried_after_the_backoff(h: Harness) {
    let t = h
        .submit(NewTask {
            max_retries: 1,
            ..task("t")
        })
        .await;
    h.claim_only(t.id).await;
    h.advance(31);
    let report = ok(h.queue.reap().await);
    assert_eq!(report.lost, vec![t.id]);
    assert!(report.timed_out.is_empty());
    let back = h.task(t.id).await;
    assert_eq!(back.status, TaskStatus::Ready);
    assert_eq!(back.retry_count, 1);
    assert!(h.claim(10).await.is_empty(), "the backoff holds");
    h.advance(10);
    let again = h.claim_as("w2", 10).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].lease.attempt_number, 2);
}

pub async fn a_lost_attempt_with_no_retries_left_fails_the_task_and_its_dependents(h: Harness) {
    let t = h.submit(task("t")).await;
    let d = h.submit(after("d", &[t.id])).await;
    h.claim_only(t.id).await;
    h.advance(31);
    assert_eq!(ok(h.queue.reap().await).lost, vec![t.id]);
    assert_eq!(h.status(t.id).await, TaskStatus::Failed);
    let dependent = h.task(d.id).await;
    assert_eq!(dependent.status, TaskStatus::Failed);
    assert_eq!(
        dependent.error_message.as_deref(),
        Some(format!("dependency {} failed", t.id).as_str())
    );
}

pub async fn a_live_lease_is_not_reaped(h: Harness) {
    let t = h.submit(task("t")).await;
    h.claim_only(t.id).await;
    h.advance(29);
    let report = ok(h.queue.reap().await);
    assert!(report.lost.is_empty(), "the lease has a second to go");
    assert_eq!(h.status(t.id).await, TaskStatus::Running);
}

pub async fn a_task_past_its_timeout_is_timed_out_even_while_heartbeating(h: Harness) {
    let t = h
        .submit(NewTask {
            max_execution_timeout_seconds: 60,
            ..task("slow")
        })
        .await;
    let attempt = h.claim_only(t.id).await;
    for _ in 0..2 {
        h.advance(25);
        ok(h.queue.heartbeat(attempt, LEASE).await);
    }
    assert!(ok(h.queue.reap().await).timed_out.is_empty());
    h.advance(11);
    ok(h.queue.heartbeat(attempt, LEASE).await);
    let report = ok(h.queue.reap().await);
    assert_eq!(report.timed_out, vec![t.id]);
    assert!(report.lost.is_empty());
    assert_eq!(h.status(t.id).await, TaskStatus::Failed);
}

pub async fn each_task_is_reaped_once(h: Harness) {
    let a = h.submit(task("a")).await;
    let b = h.submit(task("b")).await;
    h.claim(10).await;
    h.advance(31);
    let report = ok(h.queue.reap().await);
    let mut lost = report.lost.clone();
    lost.sort();
    let mut want = vec![a.id, b.id];
    want.sort();
    assert_eq!(lost, want);
    let again = ok(h.queue.reap().await);
    assert!(again.lost.is_empty() && again.timed_out.is_empty());
}

pub async fn a_reaped_task_is_claimed_by_another_worker(h: Harness) {
    let t = h
        .submit(NewTask {
            max_retries: 3,
            ..task("t")
        })
        .await;
    h.claim_as("dead", 1).await;
    h.advance(31);
    ok(h.queue.reap().await);
    h.advance(10);
    let claimed = ok(h
        .queue
        .claim("alive", &[], Duration::from_secs(30), 1)
        .await);
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].task.id, t.id);
    assert_eq!(claimed[0].lease.worker_id, "alive");
    h.complete(claimed[0].lease.attempt_id).await;
}

pub async fn reaping_an_idle_queue_finds_nothing(h: Harness) {
    h.submit(task("waiting")).await;
    let report = ok(h.queue.reap().await);
    assert!(report.lost.is_empty() && report.timed_out.is_empty());
}

pub async fn a_timed_out_attempt_with_retries_left_is_retried_after_the_backoff(h: Harness) {
    let t = h
        .submit(NewTask {
            max_retries: 1,
            max_execution_timeout_seconds: 20,
            ..task("slow")
        })
        .await;
    let d = h.submit(after("d", &[t.id])).await;
    h.claim_only(t.id).await;
    h.advance(21);
    assert_eq!(ok(h.queue.reap().await).timed_out, vec![t.id]);
    let back = h.task(t.id).await;
    assert_eq!(back.status, TaskStatus::Ready);
    assert_eq!(back.retry_count, 1);
    assert_eq!(
        h.status(d.id).await,
        TaskStatus::Blocked,
        "no cascade on a retry"
    );
    assert!(h.claim(10).await.is_empty());
    h.advance(10);
    assert_eq!(h.claim_ids(10).await, vec![t.id]);
}
