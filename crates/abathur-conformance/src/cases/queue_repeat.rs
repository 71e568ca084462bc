//! Complete and fail are repeatable: the same call again answers as recorded and writes
//! nothing; another verb or payload on a finished attempt is a lost lease.

use abathur_core::queue::{FailOutcome, NewTask, QueueError};
use serde_json::json;
use uuid::Uuid;

use crate::assert_err;
use crate::harness::{after, ok, task, Harness};

pub async fn the_same_complete_sent_again_answers_as_recorded_and_changes_nothing(h: Harness) {
    let a = h.submit(task("a")).await;
    let b = h.submit(after("b", &[a.id])).await;
    let attempt = h.claim_only(a.id).await;
    let first = ok(h.queue.complete(attempt, Some(json!({"n": 1}))).await);
    assert!(!first.repeat);
    assert_eq!(first.outcome, vec![b.id]);
    let before = h.snapshot(&[a.id, b.id]).await;
    h.advance(5);
    let again = ok(h.queue.complete(attempt, Some(json!({"n": 1}))).await);
    assert!(again.repeat);
    assert_eq!(again.outcome, vec![b.id]);
    assert_eq!(h.snapshot(&[a.id, b.id]).await, before);
}

pub async fn a_result_equal_as_a_json_value_is_the_same_completion(h: Harness) {
    let t = h.submit(task("t")).await;
    let attempt = h.claim_only(t.id).await;
    ok(h.queue
        .complete(attempt, Some(json!({"a": 1, "b": [2.0]})))
        .await);
    let same: serde_json::Value = serde_json::from_str(r#"{ "b": [2], "a": 1.0 }"#).unwrap();
    assert!(ok(h.queue.complete(attempt, Some(same)).await).repeat);
}

pub async fn no_result_repeats_only_no_result(h: Harness) {
    let t = h.submit(task("t")).await;
    let attempt = h.claim_only(t.id).await;
    h.complete(attempt).await;
    assert!(ok(h.queue.complete(attempt, None).await).repeat);
    assert_err!(
        h.queue.complete(attempt, Some(json!(null))).await,
        QueueError::LeaseLost { .. }
    );
}

pub async fn the_same_fail_sent_again_answers_with_the_same_retry_and_time(h: Harness) {
    let t = h
        .submit(NewTask {
            max_retries: 2,
            ..task("t")
        })
        .await;
    let attempt = h.claim_only(t.id).await;
    let first = h.fail(attempt, "flaky").await;
    let before = h.snapshot(&[t.id]).await;
    h.advance(3);
    let again = ok(h.queue.fail(attempt, "flaky").await);
    assert!(again.repeat);
    assert_eq!(again.outcome, first);
    assert_eq!(h.snapshot(&[t.id]).await, before);
}

pub async fn the_same_fail_after_the_task_was_claimed_again_answers_for_its_own_attempt_only(
    h: Harness,
) {
    let t = h
        .submit(NewTask {
            max_retries: 2,
            ..task("t")
        })
        .await;
    let first = h.claim_only(t.id).await;
    let decided = h.fail(first, "flaky").await;
    h.advance(10);
    let second = h.claim_only(t.id).await;
    let before = h.snapshot(&[t.id]).await;
    let again = ok(h.queue.fail(first, "flaky").await);
    assert!(again.repeat);
    assert_eq!(again.outcome, decided);
    assert_eq!(
        h.snapshot(&[t.id]).await,
        before,
        "the new attempt is untouched"
    );
    h.complete(second).await;
}

pub async fn the_same_fail_that_used_up_the_retries_answers_failed_with_its_cascade(h: Harness) {
    let t = h.submit(task("t")).await;
    let d = h.submit(after("d", &[t.id])).await;
    let attempt = h.claim_only(t.id).await;
    assert_eq!(
        h.fail(attempt, "boom").await,
        FailOutcome::Failed {
            cascaded: vec![d.id]
        }
    );
    let again = ok(h.queue.fail(attempt, "boom").await);
    assert!(again.repeat);
    assert_eq!(
        again.outcome,
        FailOutcome::Failed {
            cascaded: vec![d.id]
        }
    );
}

pub async fn another_error_text_on_a_failed_attempt_is_a_lost_lease(h: Harness) {
    let t = h.submit(task("t")).await;
    let attempt = h.claim_only(t.id).await;
    h.fail(attempt, "boom").await;
    let before = h.snapshot(&[t.id]).await;
    assert_err!(
        h.queue.fail(attempt, "boom ").await,
        QueueError::LeaseLost { .. }
    );
    assert_err!(
        h.queue.fail(attempt, "Boom").await,
        QueueError::LeaseLost { .. }
    );
    assert_eq!(h.snapshot(&[t.id]).await, before);
}

pub async fn a_repeat_of_an_attempt_that_never_existed_is_not_found(h: Harness) {
    let never = Uuid::new_v4();
    assert_err!(
        h.queue.complete(never, None).await,
        QueueError::AttemptNotFound(_)
    );
    assert_err!(
        h.queue.fail(never, "boom").await,
        QueueError::AttemptNotFound(_)
    );
}
