//! History: every status change is an event with its time, actor, attempt and reason.

use abathur_core::models::TaskStatus;
use abathur_core::queue::{NewTask, QueueError};
use uuid::Uuid;

use crate::assert_err;
use crate::harness::{after, ok, task, Harness};

use TaskStatus::{Blocked, Cancelled, Completed, Failed, Ready, Running};

pub async fn every_status_change_of_a_run_is_in_the_history_in_order(h: Harness) {
    let a = h.submit(task("a")).await;
    let b = h
        .submit(NewTask {
            max_retries: 1,
            ..after("b", &[a.id])
        })
        .await;
    h.run_to_completion(a.id).await;
    let first = h.claim_only(b.id).await;
    h.fail(first, "flaky").await;
    h.advance(10);
    h.run_to_completion(b.id).await;
    assert_eq!(
        h.transitions(b.id).await,
        vec![
            (None, Blocked),
            (Some(Blocked), Ready),
            (Some(Ready), Running),
            (Some(Running), Ready),
            (Some(Ready), Running),
            (Some(Running), Completed),
        ]
    );
}

pub async fn a_claim_event_names_the_worker_and_the_attempt(h: Harness) {
    let t = h.submit(task("t")).await;
    let claimed = h.claim_as("w9", 1).await;
    let attempt = claimed[0].lease.attempt_id;
    let events = h.history(t.id).await;
    let claim = events.iter().find(|e| e.to == Running).unwrap();
    assert_eq!(claim.actor, "w9");
    assert_eq!(claim.attempt_id, Some(attempt));
    assert_eq!(claim.task_id, t.id);
    h.complete(attempt).await;
    let done = h.history(t.id).await.pop().unwrap();
    assert_eq!(done.attempt_id, Some(attempt));
}

pub async fn the_submission_event_names_the_submitter(h: Harness) {
    let t = h
        .submit(NewTask {
            created_by: Some("planner".into()),
            ..task("t")
        })
        .await;
    let first = h.history(t.id).await.remove(0);
    assert_eq!((first.from, first.to), (None, Ready));
    assert_eq!(first.actor, "planner");
    assert_eq!(first.attempt_id, None);
}

pub async fn history_times_come_from_the_clock(h: Harness) {
    let start = h.now();
    let t = h.submit(task("t")).await;
    h.advance(7);
    let attempt = h.claim_only(t.id).await;
    h.advance(5);
    h.complete(attempt).await;
    let at: Vec<_> = h.history(t.id).await.iter().map(|e| e.at).collect();
    assert_eq!(
        at,
        vec![
            start,
            start + chrono::Duration::seconds(7),
            start + chrono::Duration::seconds(12)
        ]
    );
}

pub async fn a_person_is_named_for_a_cancel_and_a_retry(h: Harness) {
    let t = h.submit(task("t")).await;
    let attempt = h.claim_only(t.id).await;
    h.fail(attempt, "boom").await;
    ok(h.queue.retry(t.id, "alice").await);
    ok(h.queue.cancel(t.id, "bob").await);
    let events = h.history(t.id).await;
    let retried = events.iter().find(|e| e.from == Some(Failed)).unwrap();
    assert_eq!((retried.to, retried.actor.as_str()), (Ready, "alice"));
    let cancelled = events.last().unwrap();
    assert_eq!((cancelled.to, cancelled.actor.as_str()), (Cancelled, "bob"));
}

pub async fn a_cascaded_failure_is_in_each_dependents_history(h: Harness) {
    let a = h.submit(task("a")).await;
    let b = h.submit(after("b", &[a.id])).await;
    let attempt = h.claim_only(a.id).await;
    h.fail(attempt, "boom").await;
    assert_eq!(
        h.transitions(b.id).await,
        vec![(None, Blocked), (Some(Blocked), Failed)]
    );
}

pub async fn event_sequences_grow_across_tasks(h: Harness) {
    let a = h.submit(task("a")).await;
    let b = h.submit(task("b")).await;
    let first_a = h.history(a.id).await[0].sequence;
    let first_b = h.history(b.id).await[0].sequence;
    assert!(first_b > first_a);
    let claimed = h.claim(10).await;
    let attempt = claimed
        .iter()
        .find(|c| c.task.id == a.id)
        .unwrap()
        .lease
        .attempt_id;
    h.complete(attempt).await;
    let events = h.history(a.id).await;
    assert!(events.windows(2).all(|w| w[0].sequence < w[1].sequence));
    assert!(events.last().unwrap().sequence > first_b);
}

pub async fn the_history_replays_to_each_tasks_status(h: Harness) {
    let a = h.submit(task("a")).await;
    let b = h.submit(after("b", &[a.id])).await;
    let c = h.submit(task("c")).await;
    let d = h.submit(task("d")).await;
    for claimed in h.claim(10).await {
        if claimed.task.id == a.id {
            h.fail(claimed.lease.attempt_id, "boom").await;
        } else if claimed.task.id == c.id {
            h.complete(claimed.lease.attempt_id).await;
        }
    }
    ok(h.queue.retry(a.id, "person").await);
    ok(h.queue.cancel(a.id, "person").await);
    for id in [a.id, b.id, c.id, d.id] {
        let events = h.history(id).await;
        assert_eq!(events[0].from, None);
        for pair in events.windows(2) {
            assert_eq!(pair[0].to, pair[1].from.unwrap(), "{id}: {events:?}");
        }
        assert_eq!(events.last().unwrap().to, h.status(id).await, "{id}");
    }
}

pub async fn the_history_of_an_unknown_task_is_not_found(h: Harness) {
    let never = Uuid::new_v4();
    assert_err!(h.queue.history(never).await, QueueError::TaskNotFound(id) if id == never);
}

pub async fn a_failure_event_carries_the_error_in_its_reason(h: Harness) {
    let t = h
        .submit(NewTask {
            max_retries: 1,
            ..task("t")
        })
        .await;
    let first = h.claim_only(t.id).await;
    h.fail(first, "flaky network").await;
    h.advance(10);
    let second = h.claim_only(t.id).await;
    h.fail(second, "still flaky").await;
    let events = h.history(t.id).await;
    let retried = events
        .iter()
        .find(|e| e.from == Some(Running) && e.to == Ready)
        .unwrap();
    assert_eq!(retried.attempt_id, Some(first));
    assert!(
        retried
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("flaky network"),
        "{retried:?}"
    );
    let failed = events.last().unwrap();
    assert_eq!((failed.to, failed.attempt_id), (Failed, Some(second)));
    assert!(
        failed
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("still flaky"),
        "{failed:?}"
    );
}
