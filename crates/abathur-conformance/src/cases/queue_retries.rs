//! Retries: a failure under `max_retries` puts the task back after an exponential backoff,
//! capped; with the retries used up the task fails.

use std::time::Duration;

use abathur_core::models::TaskStatus;
use abathur_core::queue::{FailOutcome, NewTask, RetryPolicy};

use crate::harness::{ok, task, Harness, BACKOFF};

fn retried(name: &str, retries: u32) -> NewTask {
    NewTask {
        max_retries: retries,
        ..task(name)
    }
}

pub async fn a_failure_with_retries_left_puts_the_task_back_after_the_backoff(h: Harness) {
    let t = h.submit(retried("t", 2)).await;
    let attempt = h.claim_only(t.id).await;
    let outcome = h.fail(attempt, "flaky").await;
    assert_eq!(
        outcome,
        FailOutcome::Retrying {
            retry_count: 1,
            run_after: h.now() + chrono::Duration::from_std(BACKOFF).unwrap(),
        }
    );
    let stored = h.task(t.id).await;
    assert_eq!(stored.status, TaskStatus::Ready);
    assert_eq!(stored.retry_count, 1);
}

pub async fn a_task_waiting_out_its_backoff_is_not_claimed_until_it_passes(h: Harness) {
    let t = h.submit(retried("t", 1)).await;
    let attempt = h.claim_only(t.id).await;
    h.fail(attempt, "flaky").await;
    assert!(h.claim(10).await.is_empty());
    h.advance(9);
    assert!(h.claim(10).await.is_empty(), "one second to go");
    h.advance(1);
    let again = h.claim(10).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].lease.attempt_number, 2);
}

pub async fn the_backoff_doubles_with_each_retry(h: Harness) {
    let t = h.submit(retried("t", 5)).await;
    for (retry, wait) in [(1, 10), (2, 20), (3, 40)] {
        let attempt = h.claim_only(t.id).await;
        match h.fail(attempt, "flaky").await {
            FailOutcome::Retrying {
                retry_count,
                run_after,
            } => {
                assert_eq!(retry_count, retry);
                assert_eq!(run_after, h.now() + chrono::Duration::seconds(wait));
            }
            other => panic!("{other:?}"),
        }
        h.advance(wait);
    }
}

pub async fn the_backoff_is_capped_at_the_policys_maximum(h: Harness) {
    let queue = h.queue.clone().with_retry_policy(RetryPolicy {
        base: Duration::from_secs(10),
        max: Duration::from_secs(15),
        jitter: 0.0,
    });
    let t = h.submit(retried("t", 5)).await;
    let first = h.claim_only(t.id).await;
    ok(queue.fail(first, "flaky").await);
    h.advance(10);
    let second = h.claim_only(t.id).await;
    match ok(queue.fail(second, "flaky").await).outcome {
        FailOutcome::Retrying { run_after, .. } => {
            assert_eq!(run_after, h.now() + chrono::Duration::seconds(15));
        }
        other => panic!("{other:?}"),
    }
}

pub async fn jitter_shortens_the_backoff_by_at_most_its_share(h: Harness) {
    let queue = h.queue.clone().with_retry_policy(RetryPolicy {
        base: Duration::from_secs(100),
        max: Duration::from_secs(600),
        jitter: 0.5,
    });
    let t = h.submit(retried("t", 1)).await;
    let attempt = h.claim_only(t.id).await;
    match ok(queue.fail(attempt, "flaky").await).outcome {
        FailOutcome::Retrying { run_after, .. } => {
            assert!(run_after <= h.now() + chrono::Duration::seconds(100));
            assert!(run_after >= h.now() + chrono::Duration::seconds(50));
        }
        other => panic!("{other:?}"),
    }
}

pub async fn with_the_retries_used_up_the_task_fails_with_its_error(h: Harness) {
    let t = h.submit(retried("t", 1)).await;
    let first = h.claim_only(t.id).await;
    h.fail(first, "first").await;
    h.advance(10);
    let second = h.claim_only(t.id).await;
    h.advance(3);
    assert_eq!(
        h.fail(second, "second").await,
        FailOutcome::Failed { cascaded: vec![] }
    );
    let failed = h.task(t.id).await;
    assert_eq!(failed.status, TaskStatus::Failed);
    assert_eq!(failed.error_message.as_deref(), Some("second"));
    assert_eq!(failed.completed_at, Some(h.now()));
    assert!(h.claim(10).await.is_empty());
}

pub async fn a_backoff_shows_as_the_run_after_time_until_it_passes(h: Harness) {
    let t = h.submit(retried("t", 1)).await;
    let attempt = h.claim_only(t.id).await;
    h.fail(attempt, "flaky").await;
    let details = ok(h.queue.submission_details(t.id).await);
    assert_eq!(
        details.run_after,
        Some(h.now() + chrono::Duration::seconds(10))
    );
    h.advance(10);
    assert_eq!(ok(h.queue.submission_details(t.id).await).run_after, None);
}
