//! Ids by prefix, for every kind of record people type ids of.

use std::sync::Arc;
use std::time::Duration;

use abathur::domain::models::{Agent, Session};
use abathur::domain::ports::{AgentRepository, IdKind, IdLookup, SessionRepository};
use abathur::domain::queue::{NewTask, TaskQueue};
use abathur::infrastructure::database::{
    AgentRepositoryImpl, IdLookupImpl, QueueStoreImpl, SessionRepositoryImpl,
};
use chrono::Utc;
use uuid::Uuid;

use crate::helpers::database::test_db;

fn prefix(id: Uuid, len: usize) -> String {
    id.to_string()[..len].to_string()
}

#[tokio::test]
async fn each_kind_is_found_by_prefix_and_only_in_its_own_table() {
    let pool = test_db().await;
    let lookup = IdLookupImpl::new(pool.clone());
    let queue = TaskQueue::new(Arc::new(QueueStoreImpl::new(pool.clone())));
    let task = queue
        .submit(NewTask::new("t", "t", "generic"))
        .await
        .unwrap();
    let claimed = queue
        .claim("w", &[], Duration::from_secs(30), 1)
        .await
        .unwrap();
    let attempt = claimed[0].lease.attempt_id;
    let session = Session::new("app", "user", Utc::now());
    SessionRepositoryImpl::new(pool.clone())
        .create(session.clone())
        .await
        .unwrap();
    let agent = Agent::new("coder", Utc::now());
    AgentRepositoryImpl::new(pool.clone())
        .insert(agent.clone())
        .await
        .unwrap();

    for (kind, id) in [
        (IdKind::Task, task.id),
        (IdKind::Attempt, attempt),
        (IdKind::Session, session.id),
        (IdKind::Agent, agent.id),
    ] {
        for len in [4, 9, 36] {
            let found = lookup
                .ids_with_prefix(kind, &prefix(id, len), 10)
                .await
                .unwrap();
            assert_eq!(found, vec![id], "{kind:?} by {len} characters");
        }
        // Another kind's table does not answer for it.
        let other = if kind == IdKind::Task {
            IdKind::Agent
        } else {
            IdKind::Task
        };
        let found = lookup
            .ids_with_prefix(other, &id.to_string(), 10)
            .await
            .unwrap();
        assert!(found.is_empty(), "{other:?} found a {kind:?} id");
    }
}

#[tokio::test]
async fn matches_come_in_id_order_up_to_the_limit() {
    let pool = test_db().await;
    let repo = AgentRepositoryImpl::new(pool.clone());
    let mut ids = Vec::new();
    for i in 0..5u128 {
        let mut agent = Agent::new("coder", Utc::now());
        agent.id = Uuid::from_u128(0xabcd_0000_0000_4000_8000_0000_0000_0000 + i);
        ids.push(agent.id);
        repo.insert(agent).await.unwrap();
    }
    let lookup = IdLookupImpl::new(pool.clone());
    assert_eq!(
        lookup
            .ids_with_prefix(IdKind::Agent, "abcd", 3)
            .await
            .unwrap(),
        ids[..3]
    );
    assert!(lookup
        .ids_with_prefix(IdKind::Agent, "abce", 3)
        .await
        .unwrap()
        .is_empty());
}
