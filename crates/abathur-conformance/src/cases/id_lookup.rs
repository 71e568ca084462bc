//! Finding ids by a prefix, per kind of record.

use std::time::Duration;

use abathur_core::models::{Agent, Session};
use abathur_core::ports::IdKind;
use uuid::Uuid;

use crate::harness::{db, ok, sorted, task, Harness};

fn prefix(id: Uuid, len: usize) -> String {
    id.to_string()[..len].to_string()
}

pub async fn each_kind_is_found_by_prefix_and_only_among_its_own_kind(h: Harness) {
    let t = h.submit(task("t")).await;
    let claimed = ok(h.queue.claim("w", &[], Duration::from_secs(30), 1).await);
    let attempt = claimed[0].lease.attempt_id;
    let session = Session::new("app", "user", h.now());
    db(h.ports.sessions.create(session.clone()).await);
    let agent = Agent::new("coder", h.now());
    db(h.ports.agents.insert(agent.clone()).await);
    let all = [
        (IdKind::Task, t.id),
        (IdKind::Attempt, attempt),
        (IdKind::Session, session.id),
        (IdKind::Agent, agent.id),
    ];
    for (kind, id) in all {
        for len in [1, 4, 9, 36] {
            let found = db(h
                .ports
                .ids
                .ids_with_prefix(kind, &prefix(id, len), 10)
                .await);
            assert!(found.contains(&id), "{kind:?} by {len} characters");
            assert!(
                found
                    .iter()
                    .all(|f| all.iter().any(|(k, i)| *k == kind && i == f)),
                "{kind:?} found another kind's id"
            );
        }
        let exact = db(h.ports.ids.ids_with_prefix(kind, &id.to_string(), 10).await);
        assert_eq!(exact, vec![id]);
    }
}

pub async fn matches_come_in_id_order_up_to_the_limit(h: Harness) {
    let mut batch = Vec::new();
    for i in 0..40 {
        batch.push(task(&format!("t{i}")));
    }
    let ids: Vec<Uuid> = batch.iter().map(|t| t.id).collect();
    h.submit_batch(batch).await;
    let all = db(h.ports.ids.ids_with_prefix(IdKind::Task, "", 100).await);
    assert_eq!(all, sorted(ids.clone()));
    let first = db(h.ports.ids.ids_with_prefix(IdKind::Task, "", 5).await);
    assert_eq!(first, sorted(ids)[..5].to_vec());
}

pub async fn a_prefix_that_matches_nothing_is_an_empty_list(h: Harness) {
    h.submit(task("t")).await;
    let found = db(h.ports.ids.ids_with_prefix(IdKind::Task, "zz", 10).await);
    assert!(found.is_empty());
    let none = db(h.ports.ids.ids_with_prefix(IdKind::Agent, "", 10).await);
    assert!(none.is_empty());
}

pub async fn a_pruned_task_and_its_attempts_are_no_longer_found(h: Harness) {
    let t = h.submit(task("t")).await;
    let attempt = h.claim_only(t.id).await;
    h.complete(attempt).await;
    h.advance(7200);
    ok(h.queue.prune(Duration::from_secs(3600), &[]).await);
    assert!(db(h
        .ports
        .ids
        .ids_with_prefix(IdKind::Task, &t.id.to_string(), 10)
        .await)
    .is_empty());
    assert!(db(h
        .ports
        .ids
        .ids_with_prefix(IdKind::Attempt, &attempt.to_string(), 10)
        .await)
    .is_empty());
}
