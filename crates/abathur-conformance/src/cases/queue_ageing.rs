//! Ageing: a ready task ages from `ready_since`, the moment it last became claimable, on every
//! path that makes it so (`docs/PRIORITY.md`). Each case sets a task against reference tasks of
//! equal priority and depth that became claimable at known times, with more than one ageing
//! interval (ten minutes) between events, so the claim order shows when the task started to age.

use std::time::Duration;

use abathur_core::queue::{NewTask, RetryPolicy, TaskQueue};

use crate::harness::{after, ok, task, Harness, LEASE};

/// Half an hour: three ageing intervals.
const STEP: i64 = 30 * 60;

/// The ids a claim of up to `max` takes through `queue`, in rank order.
async fn claim_in_order(queue: &TaskQueue, max: u32) -> Vec<uuid::Uuid> {
    let mut ids = Vec::new();
    for _ in 0..max {
        let claimed = ok(queue.claim("w1", &[], LEASE, 1).await);
        match claimed.first() {
            Some(c) => ids.push(c.task.id),
            None => break,
        }
    }
    ids
}

pub async fn a_failed_task_ages_from_the_end_of_its_backoff(h: Harness) {
    let queue = TaskQueue::new(h.ports.queue.clone())
        .with_clock(h.clock.clone())
        .with_retry_policy(RetryPolicy {
            base: Duration::from_secs(3600),
            max: Duration::from_secs(3600),
            jitter: 0.0,
        });
    let t = h
        .submit(NewTask {
            max_retries: 1,
            ..task("t")
        })
        .await;
    let attempt = h.claim_only(t.id).await;
    ok(queue.fail(attempt, "flaky").await);
    h.advance(STEP);
    let before = h.submit(task("ready before the backoff ended")).await;
    h.advance(2 * STEP);
    let later = h.submit(task("ready after the backoff ended")).await;
    h.advance(STEP);
    assert_eq!(
        claim_in_order(&queue, 3).await,
        vec![before.id, t.id, later.id],
        "the failed task ages from the end of its hour of backoff, not from its failure"
    );
}

pub async fn a_released_task_ages_from_its_release(h: Harness) {
    let t = h.submit(task("t")).await;
    let attempt = h.claim_only(t.id).await;
    h.advance(STEP);
    let before = h.submit(task("ready before the release")).await;
    h.advance(STEP);
    ok(h.queue.release(attempt, "stopping").await);
    h.advance(STEP);
    let later = h.submit(task("ready after the release")).await;
    h.advance(STEP);
    assert_eq!(
        claim_in_order(&h.queue, 3).await,
        vec![before.id, t.id, later.id],
        "the released task ages from its release, not from its submission or claim"
    );
}

pub async fn a_retried_task_ages_from_its_retry(h: Harness) {
    let t = h.submit(task("t")).await;
    let attempt = h.claim_only(t.id).await;
    h.fail(attempt, "broken").await;
    h.advance(STEP);
    let before = h.submit(task("ready before the retry")).await;
    h.advance(STEP);
    ok(h.queue.retry(t.id, "operator").await);
    h.advance(STEP);
    let later = h.submit(task("ready after the retry")).await;
    h.advance(STEP);
    assert_eq!(
        claim_in_order(&h.queue, 3).await,
        vec![before.id, t.id, later.id],
        "the retried task ages from its retry, not from its submission or failure"
    );
}

pub async fn a_dependent_ages_from_the_completion_that_released_it(h: Harness) {
    let done = h.submit(task("done early")).await;
    h.run_to_completion(done.id).await;
    let dep = h.submit(task("dep")).await;
    let dependent = h.submit(after("dependent", &[dep.id])).await;
    let attempt = h.claim_only(dep.id).await;
    h.advance(STEP);
    let before = h
        .submit(after("ready before the completion", &[done.id]))
        .await;
    h.advance(STEP);
    h.complete(attempt).await;
    h.advance(STEP);
    let later = h
        .submit(after("ready after the completion", &[done.id]))
        .await;
    h.advance(STEP);
    for reference in [before.id, later.id] {
        assert_eq!(
            h.task(reference).await.dependency_depth,
            h.task(dependent.id).await.dependency_depth,
            "the references stand at the dependent's depth"
        );
    }
    assert_eq!(
        claim_in_order(&h.queue, 3).await,
        vec![before.id, dependent.id, later.id],
        "the dependent ages from the completion, not from its submission"
    );
}

pub async fn a_delayed_task_ages_from_its_run_after_time(h: Harness) {
    let delayed = h
        .submit(NewTask {
            run_after: Some(h.now() + chrono::Duration::seconds(2 * STEP)),
            ..task("delayed")
        })
        .await;
    h.advance(STEP);
    let before = h.submit(task("ready before the run-after time")).await;
    h.advance(2 * STEP);
    let later = h.submit(task("ready after the run-after time")).await;
    h.advance(STEP);
    assert_eq!(
        claim_in_order(&h.queue, 3).await,
        vec![before.id, delayed.id, later.id],
        "the delayed task ages from its run-after time, not from its submission"
    );
}
