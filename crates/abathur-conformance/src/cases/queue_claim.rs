//! Claims, leases and heartbeats, and the release of a DAG's dependents by completion.

use std::time::Duration;

use abathur_core::models::TaskStatus;
use abathur_core::queue::{NewTask, QueueError};
use serde_json::json;

use crate::assert_err;
use crate::harness::{after, ok, sorted, task, Harness, AGENT_TYPE, LEASE};

pub async fn a_claim_moves_a_ready_task_to_running_under_a_lease(h: Harness) {
    let t = h.submit(task("t")).await;
    let claimed = h.claim_as("w7", 1).await;
    assert_eq!(claimed.len(), 1);
    let c = &claimed[0];
    assert_eq!(c.task.id, t.id);
    assert_eq!(c.task.status, TaskStatus::Running);
    assert_eq!(c.lease.task_id, t.id);
    assert_eq!(c.lease.worker_id, "w7");
    assert_eq!(c.lease.attempt_number, 1);
    assert_eq!(
        c.lease.expires_at,
        h.now() + chrono::Duration::from_std(LEASE).unwrap()
    );
    let stored = h.task(t.id).await;
    assert_eq!(stored.status, TaskStatus::Running);
    assert_eq!(stored.started_at, Some(h.now()));
}

pub async fn an_empty_queue_gives_an_empty_claim(h: Harness) {
    assert!(h.claim(10).await.is_empty());
}

pub async fn a_blocked_task_is_never_claimed(h: Harness) {
    let a = h.submit(task("a")).await;
    let b = h.submit(after("b", &[a.id])).await;
    assert_eq!(h.claim_ids(10).await, vec![a.id]);
    assert!(h.claim(10).await.is_empty(), "b waits for a: {:?}", b.id);
}

pub async fn a_claim_takes_at_most_max_tasks(h: Harness) {
    for i in 0..5 {
        h.submit(task(&format!("t{i}"))).await;
    }
    assert_eq!(h.claim(3).await.len(), 3);
    assert_eq!(h.claim(3).await.len(), 2);
    assert!(h.claim(3).await.is_empty());
}

pub async fn a_claim_takes_only_the_asked_agent_types(h: Harness) {
    let mine = h.submit(task("mine")).await;
    let theirs = h
        .submit(NewTask {
            agent_type: "reviewer".into(),
            priority: 10,
            ..task("theirs")
        })
        .await;
    let claimed = ok(h.queue.claim("w", &[AGENT_TYPE.into()], LEASE, 10).await);
    assert_eq!(
        claimed.iter().map(|c| c.task.id).collect::<Vec<_>>(),
        vec![mine.id]
    );
    let claimed = ok(h
        .queue
        .claim("w", &["reviewer".into(), "other".into()], LEASE, 10)
        .await);
    assert_eq!(
        claimed.iter().map(|c| c.task.id).collect::<Vec<_>>(),
        vec![theirs.id]
    );
}

pub async fn a_claim_naming_no_agent_type_takes_every_type(h: Harness) {
    let a = h.submit(task("a")).await;
    let b = h
        .submit(NewTask {
            agent_type: "reviewer".into(),
            ..task("b")
        })
        .await;
    assert_eq!(sorted(h.claim_ids(10).await), sorted(vec![a.id, b.id]));
}

pub async fn a_task_is_never_handed_to_two_claims(h: Harness) {
    let t = h.submit(task("t")).await;
    assert_eq!(h.claim_as("w1", 10).await.len(), 1);
    assert!(h.claim_as("w2", 10).await.is_empty());
    h.advance(3600);
    assert!(
        h.claim_as("w3", 10).await.is_empty(),
        "an expired lease is not taken over until the reaper takes it back: {}",
        t.id
    );
}

pub async fn bad_claim_arguments_are_refused(h: Harness) {
    h.submit(task("t")).await;
    let q = &h.queue;
    let hour = Duration::from_secs(3600);
    assert_err!(q.claim("", &[], LEASE, 1).await, QueueError::Validation(e) if e.field == "worker_id");
    assert_err!(q.claim("w", &[String::new()], LEASE, 1).await, QueueError::Validation(e) if e.field == "agent_type");
    assert_err!(q.claim("w", &[], Duration::ZERO, 1).await, QueueError::Validation(e) if e.field == "lease");
    assert_err!(q.claim("w", &[], hour * 25, 1).await, QueueError::Validation(e) if e.field == "lease");
    assert_err!(q.claim("w", &[], LEASE, 0).await, QueueError::Validation(e) if e.field == "max_tasks");
    assert_err!(q.claim("w", &[], LEASE, 1001).await, QueueError::Validation(e) if e.field == "max_tasks");
    let many: Vec<String> = (0..101).map(|i| format!("type{i}")).collect();
    assert_err!(q.claim("w", &many, LEASE, 1).await, QueueError::Validation(e) if e.field == "agent_types");
    assert_eq!(
        h.claim(10).await.len(),
        1,
        "nothing was claimed by the refused calls"
    );
}

pub async fn completing_the_last_dependency_makes_the_dependent_ready(h: Harness) {
    let a = h.submit(task("a")).await;
    let b = h.submit(after("b", &[a.id])).await;
    assert_eq!(h.run_to_completion(a.id).await, vec![b.id]);
    assert_eq!(h.status(b.id).await, TaskStatus::Ready);
    assert_eq!(h.claim_ids(10).await, vec![b.id]);
}

pub async fn completing_one_of_two_dependencies_keeps_the_dependent_blocked(h: Harness) {
    let a = h.submit(task("a")).await;
    let b = h.submit(task("b")).await;
    let d = h.submit(after("d", &[a.id, b.id])).await;
    let claimed = h.claim(10).await;
    let attempt_a = claimed.iter().find(|c| c.task.id == a.id).unwrap();
    let attempt_b = claimed.iter().find(|c| c.task.id == b.id).unwrap();
    assert!(h.complete(attempt_a.lease.attempt_id).await.is_empty());
    assert_eq!(h.status(d.id).await, TaskStatus::Blocked);
    assert_eq!(h.complete(attempt_b.lease.attempt_id).await, vec![d.id]);
    assert_eq!(h.status(d.id).await, TaskStatus::Ready);
}

pub async fn a_completion_makes_ready_exactly_the_dependents_now_unblocked(h: Harness) {
    let a = task("a");
    let b = after("b", &[a.id]);
    let c = after("c", &[a.id]);
    let d = after("d", &[b.id, c.id]);
    let (ia, ib, ic, id) = (a.id, b.id, c.id, d.id);
    h.submit_batch(vec![a, b, c, d]).await;
    assert_eq!(sorted(h.run_to_completion(ia).await), sorted(vec![ib, ic]));
    assert_eq!(h.status(id).await, TaskStatus::Blocked);
}

pub async fn a_completed_task_keeps_its_result_and_completion_time(h: Harness) {
    let t = h.submit(task("t")).await;
    let attempt = h.claim_only(t.id).await;
    h.advance(5);
    ok(h.queue.complete(attempt, Some(json!({"files": 42}))).await);
    let done = h.task(t.id).await;
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.result_data, Some(json!({"files": 42})));
    assert_eq!(done.completed_at, Some(h.now()));
}

pub async fn a_fan_out_of_many_dependents_is_released_by_one_completion(h: Harness) {
    let root = task("root");
    let mut batch = vec![root.clone()];
    batch.extend((0..300).map(|i| after(&format!("leaf {i}"), &[root.id])));
    let leaves: Vec<_> = batch[1..].iter().map(|t| t.id).collect();
    h.submit_batch(batch).await;
    assert_eq!(sorted(h.run_to_completion(root.id).await), sorted(leaves));
    assert_eq!(h.claim(1000).await.len(), 300);
}

pub async fn a_heartbeat_extends_the_lease_from_now(h: Harness) {
    let t = h.submit(task("t")).await;
    let attempt = h.claim_only(t.id).await;
    h.advance(20);
    let lease = ok(h.queue.heartbeat(attempt, Duration::from_secs(60)).await);
    assert_eq!(lease.attempt_id, attempt);
    assert_eq!(lease.task_id, t.id);
    assert_eq!(lease.expires_at, h.now() + chrono::Duration::seconds(60));
}

pub async fn a_heartbeat_keeps_a_lease_alive_past_its_first_expiry(h: Harness) {
    let t = h.submit(task("t")).await;
    let attempt = h.claim_only(t.id).await;
    for _ in 0..3 {
        h.advance(25);
        ok(h.queue.heartbeat(attempt, LEASE).await);
    }
    let report = ok(h.queue.reap().await);
    assert!(report.lost.is_empty() && report.timed_out.is_empty());
    assert_eq!(h.status(t.id).await, TaskStatus::Running);
    h.complete(attempt).await;
}

pub async fn a_lease_past_its_expiry_is_honoured_until_a_reaper_takes_it(h: Harness) {
    let t = h.submit(task("t")).await;
    let attempt = h.claim_only(t.id).await;
    h.advance(120);
    ok(h.queue.heartbeat(attempt, LEASE).await);
    h.advance(120);
    h.complete(attempt).await;
    assert_eq!(h.status(t.id).await, TaskStatus::Completed);
}

pub async fn a_zero_or_overlong_heartbeat_lease_is_refused(h: Harness) {
    let t = h.submit(task("t")).await;
    let attempt = h.claim_only(t.id).await;
    assert_err!(
        h.queue.heartbeat(attempt, Duration::ZERO).await,
        QueueError::Validation(e) if e.field == "lease"
    );
    assert_err!(
        h.queue.heartbeat(attempt, Duration::from_secs(25 * 3600)).await,
        QueueError::Validation(e) if e.field == "lease"
    );
}

pub async fn concurrent_claims_never_hand_out_one_task_twice(h: Harness) {
    let batch: Vec<NewTask> = (0..40).map(|i| task(&format!("t{i}"))).collect();
    let all = sorted(batch.iter().map(|t| t.id).collect());
    h.submit_batch(batch).await;
    let mut claimers = tokio::task::JoinSet::new();
    for w in 0..8 {
        let queue = h.queue.clone();
        claimers.spawn(async move {
            let mut taken = Vec::new();
            loop {
                let claimed = ok(queue.claim(&format!("w{w}"), &[], LEASE, 3).await);
                if claimed.is_empty() {
                    return taken;
                }
                taken.extend(claimed.into_iter().map(|c| c.task.id));
            }
        });
    }
    let mut taken = Vec::new();
    while let Some(done) = claimers.join_next().await {
        taken.extend(done.expect("a claimer panicked"));
    }
    assert_eq!(sorted(taken), all, "every task claimed exactly once");
}

pub async fn concurrent_completions_of_a_dependents_last_dependencies_make_it_ready_once(
    h: Harness,
) {
    let deps: Vec<NewTask> = (0..8).map(|i| task(&format!("dep {i}"))).collect();
    let ids: Vec<_> = deps.iter().map(|t| t.id).collect();
    h.submit_batch(deps).await;
    let last = h.submit(after("last", &ids)).await;
    let claimed = h.claim(10).await;
    let mut completions = tokio::task::JoinSet::new();
    for c in claimed {
        let queue = h.queue.clone();
        completions
            .spawn(async move { ok(queue.complete(c.lease.attempt_id, None).await).outcome });
    }
    let mut released = Vec::new();
    while let Some(done) = completions.join_next().await {
        released.extend(done.expect("a completion panicked"));
    }
    assert_eq!(
        released,
        vec![last.id],
        "exactly one completion released it"
    );
    assert_eq!(h.status(last.id).await, TaskStatus::Ready);
}

pub async fn a_claimed_task_is_handed_out_as_it_is_stored(h: Harness) {
    let t = h
        .submit(NewTask {
            input_data: Some(json!({"path": "src/lib.rs"})),
            ..task("t")
        })
        .await;
    let claimed = h.claim(1).await;
    assert_eq!(claimed[0].task, h.task(t.id).await);
    assert_eq!(
        claimed[0].task.input_data,
        Some(json!({"path": "src/lib.rs"}))
    );
}

pub async fn a_result_over_the_limit_or_nested_too_deep_is_refused(h: Harness) {
    let t = h.submit(task("t")).await;
    let attempt = h.claim_only(t.id).await;
    let big = json!("x".repeat(abathur_core::limits::MAX_TASK_JSON_BYTES + 1));
    assert_err!(
        h.queue.complete(attempt, Some(big)).await,
        QueueError::Validation(_)
    );
    let deep = (0..150).fold(json!(1), |inner, _| json!([inner]));
    assert_err!(
        h.queue.complete(attempt, Some(deep)).await,
        QueueError::Validation(_)
    );
    assert_eq!(h.status(t.id).await, TaskStatus::Running);
    h.complete(attempt).await;
}

pub async fn a_worker_or_agent_type_name_over_the_limit_is_refused(h: Harness) {
    let long = "w".repeat(abathur_core::limits::MAX_NAME_BYTES + 1);
    assert_err!(
        h.queue.claim(&long, &[], LEASE, 1).await,
        QueueError::Validation(e) if e.field == "worker_id"
    );
    assert_err!(
        h.queue.claim("w", std::slice::from_ref(&long), LEASE, 1).await,
        QueueError::Validation(e) if e.field == "agent_type"
    );
}
