//! The agent registry: registration, updates, listing, heartbeats and staleness.

use std::time::Duration;

use abathur_core::error::DatabaseError;
use abathur_core::models::{Agent, AgentStatus};
use uuid::Uuid;

use crate::assert_err;
use crate::harness::{db, task, Harness};

fn agent(h: &Harness, kind: &str) -> Agent {
    Agent::new(kind, h.now())
}

fn ids(agents: &[Agent]) -> Vec<Uuid> {
    agents.iter().map(|a| a.id).collect()
}

fn terminated(mut a: Agent, at: chrono::DateTime<chrono::Utc>) -> Agent {
    a.status = AgentStatus::Terminated;
    a.terminated_at = Some(at);
    a
}

pub async fn an_inserted_agent_reads_back_equal(h: Harness) {
    let t = h.submit(task("work")).await;
    let a = Agent {
        status: AgentStatus::Busy,
        current_task_id: Some(t.id),
        memory_usage_bytes: 123_456_789,
        cpu_usage_percent: 42.5,
        ..agent(&h, "coder")
    };
    db(h.ports.agents.insert(a.clone()).await);
    assert_eq!(db(h.ports.agents.get(a.id).await), Some(a));
}

pub async fn a_terminated_agent_reads_back_with_its_termination_time(h: Harness) {
    let a = terminated(agent(&h, "planner"), h.now() + chrono::Duration::hours(1));
    db(h.ports.agents.insert(a.clone()).await);
    assert_eq!(db(h.ports.agents.get(a.id).await), Some(a));
}

pub async fn getting_an_unknown_agent_is_none(h: Harness) {
    assert_eq!(db(h.ports.agents.get(Uuid::new_v4()).await), None);
}

pub async fn inserting_an_agent_whose_id_is_taken_is_a_unique_violation_and_keeps_the_first(
    h: Harness,
) {
    let a = agent(&h, "first");
    db(h.ports.agents.insert(a.clone()).await);
    let twin = Agent {
        agent_type: "second".into(),
        ..a.clone()
    };
    assert_err!(
        h.ports.agents.insert(twin).await,
        DatabaseError::UniqueViolation { .. }
    );
    assert_eq!(db(h.ports.agents.get(a.id).await), Some(a));
}

pub async fn an_agent_on_an_unknown_task_is_a_foreign_key_violation(h: Harness) {
    let a = Agent {
        status: AgentStatus::Busy,
        current_task_id: Some(Uuid::new_v4()),
        ..agent(&h, "coder")
    };
    assert_err!(
        h.ports.agents.insert(a.clone()).await,
        DatabaseError::ForeignKeyViolation { .. }
    );
    assert_eq!(db(h.ports.agents.get(a.id).await), None);
}

pub async fn an_invalid_agent_is_refused_naming_the_field_and_nothing_is_written(h: Harness) {
    let cases = [
        (agent(&h, ""), "agent_type"),
        (
            Agent {
                cpu_usage_percent: -1.0,
                ..agent(&h, "a")
            },
            "cpu_usage_percent",
        ),
        (
            Agent {
                cpu_usage_percent: f64::NAN,
                ..agent(&h, "a")
            },
            "cpu_usage_percent",
        ),
        (
            Agent {
                cpu_usage_percent: f64::INFINITY,
                ..agent(&h, "a")
            },
            "cpu_usage_percent",
        ),
        (
            Agent {
                memory_usage_bytes: u64::MAX,
                ..agent(&h, "a")
            },
            "memory_usage_bytes",
        ),
        (
            Agent {
                status: AgentStatus::Terminated,
                ..agent(&h, "a")
            },
            "terminated_at",
        ),
        (
            Agent {
                terminated_at: Some(h.now()),
                ..agent(&h, "a")
            },
            "terminated_at",
        ),
    ];
    for (a, field) in cases {
        let id = a.id;
        assert_err!(h.ports.agents.insert(a).await, DatabaseError::Validation(e) if e.field == field);
        assert_eq!(db(h.ports.agents.get(id).await), None);
    }
}

pub async fn updating_an_agent_replaces_every_field_but_its_creation_time(h: Harness) {
    let a = agent(&h, "coder");
    db(h.ports.agents.insert(a.clone()).await);
    let t = h.submit(task("work")).await;
    h.advance(60);
    let changed = Agent {
        agent_type: "reviewer".into(),
        status: AgentStatus::Busy,
        current_task_id: Some(t.id),
        heartbeat_at: h.now(),
        memory_usage_bytes: 7,
        cpu_usage_percent: 3.25,
        created_at: h.now() + chrono::Duration::days(1),
        ..a.clone()
    };
    db(h.ports.agents.update(changed.clone()).await);
    let read = db(h.ports.agents.get(a.id).await).unwrap();
    assert_eq!(
        read,
        Agent {
            created_at: a.created_at,
            ..changed
        }
    );
}

pub async fn an_agent_terminated_and_brought_back_round_trips(h: Harness) {
    let a = agent(&h, "coder");
    db(h.ports.agents.insert(a.clone()).await);
    let ended = terminated(a.clone(), h.now());
    db(h.ports.agents.update(ended.clone()).await);
    assert_eq!(db(h.ports.agents.get(a.id).await), Some(ended));
    db(h.ports.agents.update(a.clone()).await);
    assert_eq!(db(h.ports.agents.get(a.id).await), Some(a));
}

pub async fn updating_an_unknown_agent_is_not_found_and_writes_nothing(h: Harness) {
    let a = agent(&h, "coder");
    assert_err!(
        h.ports.agents.update(a.clone()).await,
        DatabaseError::NotFound { .. }
    );
    assert_eq!(db(h.ports.agents.get(a.id).await), None);
}

pub async fn an_invalid_or_dangling_update_is_refused_and_changes_nothing(h: Harness) {
    let a = agent(&h, "coder");
    db(h.ports.agents.insert(a.clone()).await);
    assert_err!(
        h.ports
            .agents
            .update(Agent {
                cpu_usage_percent: -5.0,
                ..a.clone()
            })
            .await,
        DatabaseError::Validation(_)
    );
    assert_err!(
        h.ports
            .agents
            .update(Agent {
                current_task_id: Some(Uuid::new_v4()),
                ..a.clone()
            })
            .await,
        DatabaseError::ForeignKeyViolation { .. }
    );
    assert_eq!(db(h.ports.agents.get(a.id).await), Some(a));
}

pub async fn listing_gives_every_agent_or_those_of_one_status_oldest_first(h: Harness) {
    assert!(db(h.ports.agents.list(None).await).is_empty());
    let first = agent(&h, "a");
    h.advance(1);
    let second = terminated(agent(&h, "b"), h.now());
    h.advance(1);
    let third = agent(&h, "c");
    for a in [&third, &first, &second] {
        db(h.ports.agents.insert(a.clone()).await);
    }
    assert_eq!(
        ids(&db(h.ports.agents.list(None).await)),
        vec![first.id, second.id, third.id]
    );
    assert_eq!(
        ids(&db(h.ports.agents.list(Some(AgentStatus::Idle)).await)),
        vec![first.id, third.id]
    );
    assert_eq!(
        ids(&db(h
            .ports
            .agents
            .list(Some(AgentStatus::Terminated))
            .await)),
        vec![second.id]
    );
    assert!(db(h.ports.agents.list(Some(AgentStatus::Busy)).await).is_empty());
}

pub async fn stale_agents_are_the_live_ones_silent_longer_than_max_age_most_silent_first(
    h: Harness,
) {
    let oldest = agent(&h, "a");
    let dead = terminated(agent(&h, "gone"), h.now());
    h.advance(10);
    let older = agent(&h, "b");
    h.advance(50);
    let fresh = agent(&h, "c");
    for a in [&fresh, &older, &oldest, &dead] {
        db(h.ports.agents.insert(a.clone()).await);
    }
    h.advance(100);
    let stale = db(h
        .ports
        .agents
        .find_stale_agents(Duration::from_secs(120))
        .await);
    assert_eq!(ids(&stale), vec![oldest.id, older.id]);
}

pub async fn an_agent_heard_from_exactly_max_age_ago_is_not_stale_yet(h: Harness) {
    let a = agent(&h, "a");
    db(h.ports.agents.insert(a.clone()).await);
    h.advance(60);
    assert!(db(h
        .ports
        .agents
        .find_stale_agents(Duration::from_secs(60))
        .await)
    .is_empty());
    h.advance(1);
    assert_eq!(
        ids(&db(h
            .ports
            .agents
            .find_stale_agents(Duration::from_secs(60))
            .await)),
        vec![a.id]
    );
}

pub async fn a_heartbeat_moves_heartbeat_at_to_now_and_nothing_else(h: Harness) {
    let a = agent(&h, "a");
    db(h.ports.agents.insert(a.clone()).await);
    h.advance(90);
    db(h.ports.agents.update_heartbeat(a.id).await);
    assert_eq!(
        db(h.ports.agents.get(a.id).await),
        Some(Agent {
            heartbeat_at: h.now(),
            ..a.clone()
        })
    );
    assert!(db(h
        .ports
        .agents
        .find_stale_agents(Duration::from_secs(60))
        .await)
    .is_empty());
}

pub async fn a_max_age_reaching_before_year_zero_is_refused(h: Harness) {
    assert_err!(
        h.ports
            .agents
            .find_stale_agents(Duration::from_secs(u64::MAX / 2))
            .await,
        DatabaseError::Validation(_)
    );
}

pub async fn a_heartbeat_from_an_unknown_agent_is_not_found(h: Harness) {
    assert_err!(
        h.ports.agents.update_heartbeat(Uuid::new_v4()).await,
        DatabaseError::NotFound { .. }
    );
}

pub async fn a_heartbeat_from_a_terminated_agent_is_a_conflict_and_changes_nothing(h: Harness) {
    let a = terminated(agent(&h, "a"), h.now());
    db(h.ports.agents.insert(a.clone()).await);
    h.advance(10);
    assert_err!(
        h.ports.agents.update_heartbeat(a.id).await,
        DatabaseError::Conflict { .. }
    );
    assert_eq!(db(h.ports.agents.get(a.id).await), Some(a));
}

pub async fn pruning_an_agents_current_task_leaves_the_agent_without_a_task(h: Harness) {
    let t = h.submit(task("work")).await;
    let a = Agent {
        status: AgentStatus::Busy,
        current_task_id: Some(t.id),
        ..agent(&h, "coder")
    };
    db(h.ports.agents.insert(a.clone()).await);
    h.run_to_completion(t.id).await;
    h.advance(7200);
    assert_eq!(
        crate::harness::ok(h.queue.prune(Duration::from_secs(3600), &[]).await).tasks,
        1
    );
    assert_eq!(
        db(h.ports.agents.get(a.id).await).unwrap().current_task_id,
        None
    );
}
