//! Run-after times: a task is not claimable before its time, even once ready.

use abathur_core::models::TaskStatus;
use abathur_core::queue::{NewTask, QueueError};
use chrono::TimeZone;
use uuid::Uuid;

use crate::assert_err;
use crate::harness::{after, ok, task, Harness};

fn held(h: &Harness, name: &str, seconds: i64) -> NewTask {
    NewTask {
        run_after: Some(h.now() + chrono::Duration::seconds(seconds)),
        ..task(name)
    }
}

pub async fn a_task_is_not_claimed_before_its_run_after_time_and_is_claimed_after(h: Harness) {
    let t = h.submit(held(&h, "later", 600)).await;
    assert_eq!(h.status(t.id).await, TaskStatus::Ready);
    assert!(h.claim(10).await.is_empty());
    h.advance(599);
    assert!(h.claim(10).await.is_empty());
    h.advance(1);
    assert_eq!(h.claim_ids(10).await, vec![t.id]);
}

pub async fn a_run_after_time_already_past_holds_nothing_back(h: Harness) {
    let t = h.submit(held(&h, "past", -60)).await;
    assert_eq!(h.claim_ids(10).await, vec![t.id]);
}

pub async fn a_dependent_waits_for_both_its_dependency_and_its_time(h: Harness) {
    let a = h.submit(task("a")).await;
    let b = h
        .submit(NewTask {
            dependencies: vec![a.id],
            ..held(&h, "b", 600)
        })
        .await;
    h.run_to_completion(a.id).await;
    assert_eq!(h.status(b.id).await, TaskStatus::Ready);
    assert!(
        h.claim(10).await.is_empty(),
        "ready, but its time has not come"
    );
    h.advance(600);
    assert_eq!(h.claim_ids(10).await, vec![b.id]);
}

pub async fn a_time_that_passes_while_the_dependency_runs_holds_nothing_back(h: Harness) {
    let a = h.submit(task("a")).await;
    let b = h
        .submit(NewTask {
            dependencies: vec![a.id],
            ..held(&h, "b", 60)
        })
        .await;
    let attempt = h.claim_only(a.id).await;
    h.advance(120);
    h.complete(attempt).await;
    assert_eq!(h.claim_ids(10).await, vec![b.id]);
}

pub async fn a_run_after_time_still_holds_after_a_cascaded_failure_and_a_retry(h: Harness) {
    let a = h.submit(task("a")).await;
    let b = h
        .submit(NewTask {
            dependencies: vec![a.id],
            ..held(&h, "b", 3600)
        })
        .await;
    let attempt = h.claim_only(a.id).await;
    h.fail(attempt, "boom").await;
    assert_eq!(h.status(b.id).await, TaskStatus::Failed);
    ok(h.queue.retry(a.id, "person").await);
    h.run_to_completion(a.id).await;
    assert_eq!(h.status(b.id).await, TaskStatus::Ready);
    assert!(
        h.claim(10).await.is_empty(),
        "b never ran: its time still holds"
    );
    h.advance(3600);
    assert_eq!(h.claim_ids(10).await, vec![b.id]);
}

pub async fn a_run_after_time_is_shown_only_while_it_holds_the_task_back(h: Harness) {
    let t = h.submit(held(&h, "later", 600)).await;
    let at = h.now() + chrono::Duration::seconds(600);
    assert_eq!(
        ok(h.queue.submission_details(t.id).await).run_after,
        Some(at)
    );
    h.advance(600);
    assert_eq!(ok(h.queue.submission_details(t.id).await).run_after, None);
}

pub async fn a_claim_ends_the_run_after_time(h: Harness) {
    let t = h.submit(held(&h, "later", 60)).await;
    h.advance(60);
    let attempt = h.claim_only(t.id).await;
    ok(h.queue.release(attempt, "stopping").await);
    assert_eq!(h.claim_ids(10).await, vec![t.id]);
    assert_eq!(
        ok(h.ports.queue.submission_details(t.id).await).run_after,
        None
    );
}

pub async fn the_details_of_an_unknown_task_are_not_found(h: Harness) {
    let never = Uuid::new_v4();
    assert_err!(
        h.queue.submission_details(never).await,
        QueueError::TaskNotFound(id) if id == never
    );
}

pub async fn a_run_after_time_outside_the_stored_range_is_refused(h: Harness) {
    let far = chrono::Utc
        .with_ymd_and_hms(10000, 1, 1, 0, 0, 0)
        .single()
        .unwrap();
    let t = NewTask {
        run_after: Some(far),
        ..after("far", &[])
    };
    let id = t.id;
    assert_err!(h.queue.submit(t).await, QueueError::Validation(e) if e.field == "run_after");
    assert!(!h.exists(id).await);
}
