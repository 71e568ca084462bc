//! Idempotent submission: a key already used with the same content returns the stored task;
//! with other content it is a conflict; nothing is written either way.

use abathur_core::models::TaskStatus;
use abathur_core::queue::{NewTask, QueueError};
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

use crate::assert_err;
use crate::harness::{ok, task, Harness};

fn keyed(name: &str, key: &str) -> NewTask {
    NewTask {
        idempotency_key: Some(key.into()),
        ..task(name)
    }
}

/// The same submission sent again: a new id, the same content.
fn resent(t: &NewTask) -> NewTask {
    NewTask {
        id: Uuid::new_v4(),
        ..t.clone()
    }
}

pub async fn a_repeated_submission_with_a_key_returns_the_first_task_and_writes_nothing(
    h: Harness,
) {
    let first = keyed("t", "key-1");
    let stored = ok(h.queue.submit_keyed(first.clone()).await);
    assert!(!stored.existing);
    let again = resent(&first);
    let answer = ok(h.queue.submit_keyed(again.clone()).await);
    assert!(answer.existing);
    assert_eq!(answer.requested_id, again.id);
    assert_eq!(answer.task.id, first.id);
    assert!(!h.exists(again.id).await);
    assert_eq!(h.history(first.id).await.len(), 1);
}

pub async fn the_key_is_kept_with_the_task(h: Harness) {
    let t = h.submit(keyed("t", "key-1")).await;
    let details = ok(h.queue.submission_details(t.id).await);
    assert_eq!(details.idempotency_key.as_deref(), Some("key-1"));
    let plain = h.submit(task("plain")).await;
    assert_eq!(
        ok(h.queue.submission_details(plain.id).await).idempotency_key,
        None
    );
}

pub async fn an_existing_task_is_returned_as_it_is_now(h: Harness) {
    let first = keyed("t", "key-1");
    h.submit(first.clone()).await;
    h.run_to_completion(first.id).await;
    let answer = ok(h.queue.submit_keyed(resent(&first)).await);
    assert!(answer.existing);
    assert_eq!(answer.task.status, TaskStatus::Completed);
}

pub async fn the_same_key_with_other_content_is_a_conflict_naming_the_key_and_the_task(h: Harness) {
    let first = keyed("t", "key-1");
    h.submit(first.clone()).await;
    let other = NewTask {
        description: "something else".into(),
        ..resent(&first)
    };
    let id = other.id;
    assert_err!(
        h.queue.submit(other).await,
        QueueError::IdempotencyConflict { key, existing } if key == "key-1" && existing == first.id
    );
    assert!(!h.exists(id).await);
}

pub async fn the_deadline_and_run_after_time_are_not_content(h: Harness) {
    let first = NewTask {
        deadline: Some(h.now() + chrono::Duration::hours(5)),
        ..keyed("t", "key-1")
    };
    h.submit(first.clone()).await;
    let later = NewTask {
        deadline: Some(h.now() + chrono::Duration::hours(6)),
        run_after: Some(h.now() + chrono::Duration::minutes(10)),
        ..resent(&first)
    };
    let answer = ok(h.queue.submit_keyed(later).await);
    assert!(answer.existing);
    assert_eq!(
        h.task(first.id).await.deadline,
        first.deadline,
        "the first times stand"
    );
    assert_eq!(
        ok(h.queue.submission_details(first.id).await).run_after,
        None
    );
}

pub async fn input_equal_as_a_json_value_is_the_same_content(h: Harness) {
    let first = NewTask {
        input_data: Some(json!({"a": 1, "b": [1.0, 2]})),
        ..keyed("t", "key-1")
    };
    h.submit(first.clone()).await;
    let same = NewTask {
        input_data: Some(serde_json::from_str(r#"{"b":[1,2.0],"a":1.0}"#).unwrap()),
        ..resent(&first)
    };
    assert!(ok(h.queue.submit_keyed(same).await).existing);
    assert_eq!(h.task(first.id).await.input_data, first.input_data);
}

pub async fn a_batch_mixing_stored_and_new_keys_stores_only_the_new_ones_linked_to_the_stored(
    h: Harness,
) {
    let a = keyed("a", "key-a");
    h.submit(a.clone()).await;
    let a_again = resent(&a);
    let b = NewTask {
        dependencies: vec![a_again.id],
        ..keyed("b", "key-b")
    };
    let answers = ok(h
        .queue
        .submit_batch_keyed(vec![a_again.clone(), b.clone()])
        .await);
    let on_a = answers
        .iter()
        .find(|s| s.requested_id == a_again.id)
        .unwrap();
    let on_b = answers.iter().find(|s| s.requested_id == b.id).unwrap();
    assert!(on_a.existing && !on_b.existing);
    assert_eq!(on_a.task.id, a.id);
    let stored_b = h.task(b.id).await;
    assert_eq!(
        stored_b.dependencies,
        Some(vec![a.id]),
        "linked to the stored task"
    );
    assert_eq!(stored_b.status, TaskStatus::Blocked);
    assert_eq!(h.run_to_completion(a.id).await, vec![b.id]);
}

pub async fn a_conflict_anywhere_in_a_batch_stores_none_of_it(h: Harness) {
    let a = keyed("a", "key-a");
    h.submit(a.clone()).await;
    let fresh = keyed("fresh", "key-fresh");
    let clash = NewTask {
        summary: "changed".into(),
        ..resent(&a)
    };
    let fresh_id = fresh.id;
    assert_err!(
        h.queue.submit_batch(vec![fresh, clash]).await,
        QueueError::IdempotencyConflict { .. }
    );
    assert!(!h.exists(fresh_id).await);
}

pub async fn two_members_of_one_batch_with_one_key_are_refused(h: Harness) {
    let a = keyed("a", "same");
    let b = keyed("b", "same");
    let ids = [a.id, b.id];
    assert_err!(
        h.queue.submit_batch(vec![a, b]).await,
        QueueError::DuplicateIdempotencyKey { key, .. } if key == "same"
    );
    for id in ids {
        assert!(!h.exists(id).await);
    }
}

pub async fn an_empty_overlong_or_nul_key_is_refused(h: Harness) {
    for key in [
        String::new(),
        "k".repeat(abathur_core::limits::MAX_NAME_BYTES + 1),
        "a\0b".into(),
    ] {
        let t = keyed("t", &key);
        let id = t.id;
        assert_err!(
            h.queue.submit(t).await,
            QueueError::Validation(e) if e.field == "idempotency_key"
        );
        assert!(!h.exists(id).await);
    }
}

pub async fn pruning_a_task_forgets_its_key(h: Harness) {
    let first = keyed("t", "key-1");
    h.submit(first.clone()).await;
    h.run_to_completion(first.id).await;
    h.advance(7200);
    ok(h.queue.prune(Duration::from_secs(3600), &[]).await);
    let again = NewTask {
        description: "other content".into(),
        ..resent(&first)
    };
    let answer = ok(h.queue.submit_keyed(again.clone()).await);
    assert!(!answer.existing);
    assert_eq!(answer.task.id, again.id);
}

pub async fn a_member_without_a_key_is_always_new(h: Harness) {
    let t = task("t");
    h.submit(t.clone()).await;
    let again = resent(&t);
    let answer = ok(h.queue.submit_keyed(again.clone()).await);
    assert!(!answer.existing);
    assert!(h.exists(again.id).await);
}

pub async fn concurrent_submissions_of_one_key_make_one_task(h: Harness) {
    let first = keyed("t", "raced");
    let mut submitters = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let queue = h.queue.clone();
        let t = resent(&first);
        submitters.spawn(async move { ok(queue.submit_keyed(t).await) });
    }
    let mut stored = Vec::new();
    let mut new = 0;
    while let Some(done) = submitters.join_next().await {
        let answer = done.expect("a submitter panicked");
        if !answer.existing {
            new += 1;
        }
        stored.push(answer.task.id);
    }
    assert_eq!(new, 1, "one submission stored the task");
    stored.dedup();
    assert_eq!(stored.len(), 1, "every submission names the one task");
}
