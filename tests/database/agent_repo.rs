//! The agent registry: every method of `AgentRepository`, its errors, and the `agents` table's
//! link to `tasks`.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use abathur::domain::clock::Clock;
use abathur::domain::error::DatabaseError;
use abathur::domain::models::{Agent, AgentStatus};
use abathur::domain::ports::{AgentRepository, TaskRepository};
use abathur::infrastructure::database::{AgentRepositoryImpl, TaskRepositoryImpl};
use chrono::Duration;
use sqlx::SqlitePool;
use uuid::Uuid;

use crate::helpers::database::{test_db, TestPool};
use crate::helpers::{spec_task, ManualClock};

/// A fresh database, the agent repository on it, and the clock it reads.
async fn registry() -> (TestPool, AgentRepositoryImpl, Arc<ManualClock>) {
    let pool = test_db().await;
    let clock = ManualClock::new();
    let repo = AgentRepositoryImpl::with_clock(pool.clone(), clock.clone());
    (pool, repo, clock)
}

/// An agent with no field at its default, so a round trip that drops one shows.
fn busy_agent(clock: &ManualClock, task_id: Uuid) -> Agent {
    let created = clock.now() + Duration::microseconds(123_456);
    Agent {
        status: AgentStatus::Busy,
        current_task_id: Some(task_id),
        heartbeat_at: created + Duration::seconds(5),
        memory_usage_bytes: 3 << 30,
        cpu_usage_percent: 87.25,
        ..Agent::new("implementation", created)
    }
}

fn terminated(mut agent: Agent, at: chrono::DateTime<chrono::Utc>) -> Agent {
    agent.status = AgentStatus::Terminated;
    agent.current_task_id = None;
    agent.terminated_at = Some(at);
    agent
}

/// Every stored agent, column by column as SQLite quotes it, to show a failed write changed
/// nothing.
async fn agent_rows(pool: &SqlitePool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT quote(id) || ' ' || quote(agent_type) || ' ' || quote(status) || ' '
             || quote(current_task_id) || ' ' || quote(heartbeat_at) || ' '
             || quote(memory_usage_bytes) || ' ' || quote(cpu_usage_percent) || ' '
             || quote(created_at) || ' ' || quote(terminated_at)
         FROM agents ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .expect("read agents")
}

async fn insert_task(pool: &SqlitePool) -> Uuid {
    let task = spec_task();
    TaskRepositoryImpl::new(pool.clone())
        .insert(task.clone())
        .await
        .expect("insert task");
    task.id
}

#[track_caller]
fn assert_same_agent(got: &Agent, want: &Agent) {
    assert_eq!(got.id, want.id, "id");
    assert_eq!(got.agent_type, want.agent_type, "agent_type");
    assert_eq!(got.status, want.status, "status");
    assert_eq!(got.current_task_id, want.current_task_id, "current_task_id");
    assert_eq!(got.heartbeat_at, want.heartbeat_at, "heartbeat_at");
    assert_eq!(
        got.memory_usage_bytes, want.memory_usage_bytes,
        "memory_usage_bytes"
    );
    assert_eq!(
        got.cpu_usage_percent, want.cpu_usage_percent,
        "cpu_usage_percent"
    );
    assert_eq!(got.created_at, want.created_at, "created_at");
    assert_eq!(got.terminated_at, want.terminated_at, "terminated_at");
}

#[track_caller]
fn assert_ids(agents: &[Agent], want: &[Uuid]) {
    let got: Vec<Uuid> = agents.iter().map(|a| a.id).collect();
    assert_eq!(got, want);
}

#[track_caller]
fn assert_validation<T: std::fmt::Debug>(result: Result<T, DatabaseError>, field: &str) {
    match result {
        Err(DatabaseError::Validation(e)) => assert_eq!(e.field, field, "{e}"),
        other => panic!("expected a validation error on {field}, got {other:?}"),
    }
}

#[track_caller]
fn assert_not_found<T: std::fmt::Debug>(result: Result<T, DatabaseError>, id: Uuid) {
    match result {
        Err(DatabaseError::NotFound {
            entity,
            id: missing,
        }) => {
            assert_eq!((entity, missing), ("agent", id.to_string()));
        }
        other => panic!("expected agent {id} not found, got {other:?}"),
    }
}

#[tokio::test]
async fn an_inserted_agent_reads_back_equal_field_by_field() {
    let (pool, repo, clock) = registry().await;
    let agent = busy_agent(&clock, insert_task(&pool).await);

    repo.insert(agent.clone()).await.unwrap();

    let got = repo.get(agent.id).await.unwrap().expect("agent stored");
    assert_same_agent(&got, &agent);
}

#[tokio::test]
async fn a_terminated_agent_reads_back_with_its_termination_time() {
    let (_pool, repo, clock) = registry().await;
    let agent = terminated(
        Agent::new("planner", clock.now()),
        clock.now() + Duration::hours(1),
    );

    repo.insert(agent.clone()).await.unwrap();

    assert_same_agent(&repo.get(agent.id).await.unwrap().unwrap(), &agent);
}

#[tokio::test]
async fn getting_an_unknown_agent_is_none() {
    let (_pool, repo, _clock) = registry().await;

    assert_eq!(repo.get(Uuid::new_v4()).await.unwrap(), None);
}

#[tokio::test]
async fn inserting_an_agent_whose_id_is_taken_is_a_unique_violation_and_keeps_the_first() {
    let (pool, repo, clock) = registry().await;
    let first = Agent::new("planner", clock.now());
    repo.insert(first.clone()).await.unwrap();
    let before = agent_rows(&pool).await;

    let second = Agent {
        agent_type: "implementation".into(),
        ..first.clone()
    };
    let err = repo.insert(second).await.unwrap_err();

    match err {
        DatabaseError::UniqueViolation { entity, id } => {
            assert_eq!((entity, id), ("agent", first.id.to_string()));
        }
        other => panic!("expected a unique violation, got {other:?}"),
    }
    assert_eq!(agent_rows(&pool).await, before);
    assert_same_agent(&repo.get(first.id).await.unwrap().unwrap(), &first);
}

#[tokio::test]
async fn an_agent_with_an_unknown_task_is_a_foreign_key_violation_naming_the_current_task() {
    let (pool, repo, clock) = registry().await;
    let missing_task = Uuid::new_v4();

    let err = repo
        .insert(busy_agent(&clock, missing_task))
        .await
        .unwrap_err();

    match &err {
        DatabaseError::ForeignKeyViolation {
            entity,
            reference,
            id,
        } => {
            assert_eq!(*entity, "agent");
            assert_eq!(*reference, "current task");
            assert_eq!(id.as_deref(), Some(missing_task.to_string().as_str()));
        }
        other => panic!("expected a foreign key violation, got {other:?}"),
    }
    assert!(err.to_string().contains("current task"), "{err}");
    assert_eq!(agent_rows(&pool).await, Vec::<String>::new());
}

/// Inserts a valid agent, then `bad`, which must fail validation on `field` and leave the
/// table as it was.
async fn insert_is_rejected(bad: impl FnOnce(Agent) -> Agent, field: &str) {
    let (pool, repo, clock) = registry().await;
    repo.insert(Agent::new("planner", clock.now()))
        .await
        .unwrap();
    let before = agent_rows(&pool).await;

    let bad = bad(Agent::new("implementation", clock.now()));
    assert_validation(repo.insert(bad.clone()).await, field);

    assert_eq!(agent_rows(&pool).await, before);
    assert_eq!(repo.get(bad.id).await.unwrap(), None);
}

#[tokio::test]
async fn inserting_an_agent_with_an_empty_agent_type_is_rejected_and_writes_nothing() {
    insert_is_rejected(
        |a| Agent {
            agent_type: "  ".into(),
            ..a
        },
        "agent_type",
    )
    .await;
}

#[tokio::test]
async fn inserting_an_agent_with_negative_cpu_usage_is_rejected_and_writes_nothing() {
    insert_is_rejected(
        |a| Agent {
            cpu_usage_percent: -0.5,
            ..a
        },
        "cpu_usage_percent",
    )
    .await;
}

#[tokio::test]
async fn inserting_an_agent_with_nan_cpu_usage_is_rejected_and_writes_nothing() {
    insert_is_rejected(
        |a| Agent {
            cpu_usage_percent: f64::NAN,
            ..a
        },
        "cpu_usage_percent",
    )
    .await;
}

#[tokio::test]
async fn inserting_an_agent_with_infinite_cpu_usage_is_rejected_and_writes_nothing() {
    insert_is_rejected(
        |a| Agent {
            cpu_usage_percent: f64::INFINITY,
            ..a
        },
        "cpu_usage_percent",
    )
    .await;
}

#[tokio::test]
async fn inserting_an_agent_using_more_than_i64_max_bytes_is_rejected_and_writes_nothing() {
    insert_is_rejected(
        |a| Agent {
            memory_usage_bytes: u64::MAX,
            ..a
        },
        "memory_usage_bytes",
    )
    .await;
}

#[tokio::test]
async fn inserting_a_terminated_agent_without_terminated_at_is_rejected_and_writes_nothing() {
    insert_is_rejected(
        |a| Agent {
            status: AgentStatus::Terminated,
            ..a
        },
        "terminated_at",
    )
    .await;
}

#[tokio::test]
async fn inserting_a_live_agent_with_terminated_at_is_rejected_and_writes_nothing() {
    insert_is_rejected(
        |a| Agent {
            terminated_at: Some(a.created_at),
            ..a
        },
        "terminated_at",
    )
    .await;
}

#[tokio::test]
async fn updating_an_agent_replaces_every_field_but_created_at() {
    let (pool, repo, clock) = registry().await;
    let task = insert_task(&pool).await;
    let agent = Agent::new("planner", clock.now());
    repo.insert(agent.clone()).await.unwrap();

    let changed = Agent {
        id: agent.id,
        created_at: agent.created_at + Duration::days(3),
        ..busy_agent(&clock, task)
    };
    repo.update(changed.clone()).await.unwrap();

    let want = Agent {
        created_at: agent.created_at,
        ..changed
    };
    assert_same_agent(&repo.get(agent.id).await.unwrap().unwrap(), &want);
}

#[tokio::test]
async fn updating_an_agent_to_terminated_and_back_to_idle_round_trips() {
    let (_pool, repo, clock) = registry().await;
    let agent = Agent::new("planner", clock.now());
    repo.insert(agent.clone()).await.unwrap();

    let gone = terminated(agent.clone(), clock.now() + Duration::minutes(1));
    repo.update(gone.clone()).await.unwrap();
    assert_same_agent(&repo.get(agent.id).await.unwrap().unwrap(), &gone);

    repo.update(agent.clone()).await.unwrap();
    assert_same_agent(&repo.get(agent.id).await.unwrap().unwrap(), &agent);
}

#[tokio::test]
async fn updating_an_unknown_agent_is_not_found_and_writes_nothing() {
    let (pool, repo, clock) = registry().await;
    repo.insert(Agent::new("planner", clock.now()))
        .await
        .unwrap();
    let before = agent_rows(&pool).await;
    let stranger = Agent::new("implementation", clock.now());

    assert_not_found(repo.update(stranger.clone()).await, stranger.id);

    assert_eq!(agent_rows(&pool).await, before);
}

#[tokio::test]
async fn updating_an_agent_with_an_invalid_field_is_rejected_and_changes_nothing() {
    let (pool, repo, clock) = registry().await;
    let agent = Agent::new("planner", clock.now());
    repo.insert(agent.clone()).await.unwrap();
    let before = agent_rows(&pool).await;

    let cases: [(Agent, &str); 4] = [
        (
            Agent {
                agent_type: String::new(),
                ..agent.clone()
            },
            "agent_type",
        ),
        (
            Agent {
                cpu_usage_percent: -1.0,
                ..agent.clone()
            },
            "cpu_usage_percent",
        ),
        (
            Agent {
                cpu_usage_percent: f64::NAN,
                ..agent.clone()
            },
            "cpu_usage_percent",
        ),
        (
            Agent {
                status: AgentStatus::Terminated,
                ..agent.clone()
            },
            "terminated_at",
        ),
    ];
    for (bad, field) in cases {
        assert_validation(repo.update(bad).await, field);
    }

    assert_eq!(agent_rows(&pool).await, before);
}

#[tokio::test]
async fn updating_an_agent_to_an_unknown_task_is_a_foreign_key_violation_and_changes_nothing() {
    let (pool, repo, clock) = registry().await;
    let agent = Agent::new("planner", clock.now());
    repo.insert(agent.clone()).await.unwrap();
    let before = agent_rows(&pool).await;

    let err = repo
        .update(Agent {
            id: agent.id,
            ..busy_agent(&clock, Uuid::new_v4())
        })
        .await
        .unwrap_err();

    assert!(
        matches!(
            err,
            DatabaseError::ForeignKeyViolation {
                reference: "current task",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(agent_rows(&pool).await, before);
}

#[tokio::test]
async fn listing_without_a_status_gives_every_agent_oldest_first() {
    let (_pool, repo, clock) = registry().await;
    let oldest = Agent::new("planner", clock.now());
    let middle = terminated(
        Agent::new("planner", clock.now() + Duration::seconds(1)),
        clock.now() + Duration::seconds(2),
    );
    let newest = Agent::new("implementation", clock.now() + Duration::seconds(2));
    for agent in [&newest, &oldest, &middle] {
        repo.insert(agent.clone()).await.unwrap();
    }

    assert_ids(
        &repo.list(None).await.unwrap(),
        &[oldest.id, middle.id, newest.id],
    );
}

#[tokio::test]
async fn listing_with_a_status_gives_only_the_agents_in_it() {
    let (pool, repo, clock) = registry().await;
    let task = insert_task(&pool).await;
    let idle_late = Agent::new("planner", clock.now() + Duration::seconds(5));
    let idle_early = Agent::new("planner", clock.now());
    let busy = busy_agent(&clock, task);
    let gone = terminated(Agent::new("planner", clock.now()), clock.now());
    for agent in [&idle_late, &busy, &gone, &idle_early] {
        repo.insert(agent.clone()).await.unwrap();
    }

    assert_ids(
        &repo.list(Some(AgentStatus::Idle)).await.unwrap(),
        &[idle_early.id, idle_late.id],
    );
    assert_ids(
        &repo.list(Some(AgentStatus::Busy)).await.unwrap(),
        &[busy.id],
    );
    assert_ids(
        &repo.list(Some(AgentStatus::Terminated)).await.unwrap(),
        &[gone.id],
    );
}

#[tokio::test]
async fn listing_an_empty_registry_gives_nothing() {
    let (_pool, repo, _clock) = registry().await;

    assert_eq!(repo.list(None).await.unwrap(), Vec::<Agent>::new());
    assert_eq!(
        repo.list(Some(AgentStatus::Busy)).await.unwrap(),
        Vec::<Agent>::new()
    );
}

#[tokio::test]
async fn stale_agents_are_the_live_ones_silent_longer_than_max_age_most_silent_first() {
    let (pool, repo, clock) = registry().await;
    let task = insert_task(&pool).await;
    let start = clock.now();
    let silent_longest = Agent::new("planner", start);
    let busy_silent = Agent {
        heartbeat_at: start + Duration::seconds(10),
        ..busy_agent(&clock, task)
    };
    let gone_silent = terminated(Agent::new("planner", start), start + Duration::seconds(1));
    let recent = Agent::new("planner", start + Duration::seconds(50));
    for agent in [&recent, &busy_silent, &gone_silent, &silent_longest] {
        repo.insert(agent.clone()).await.unwrap();
    }

    clock.advance(Duration::seconds(90));
    // Cutoff: start + 30 s. Only heartbeats before it are stale.
    let stale = repo
        .find_stale_agents(StdDuration::from_secs(60))
        .await
        .unwrap();

    assert_ids(&stale, &[silent_longest.id, busy_silent.id]);
    assert_same_agent(&stale[1], &busy_silent);
}

#[tokio::test]
async fn an_agent_heard_from_exactly_max_age_ago_is_not_stale_yet() {
    let (_pool, repo, clock) = registry().await;
    let agent = Agent::new("planner", clock.now());
    repo.insert(agent.clone()).await.unwrap();

    clock.advance(Duration::seconds(60));
    let at_the_limit = repo
        .find_stale_agents(StdDuration::from_secs(60))
        .await
        .unwrap();
    clock.advance(Duration::microseconds(1));
    let past_it = repo
        .find_stale_agents(StdDuration::from_secs(60))
        .await
        .unwrap();

    assert_ids(&at_the_limit, &[]);
    assert_ids(&past_it, &[agent.id]);
}

#[tokio::test]
async fn a_heartbeat_keeps_an_agent_from_going_stale() {
    let (_pool, repo, clock) = registry().await;
    let agent = Agent::new("planner", clock.now());
    repo.insert(agent.clone()).await.unwrap();

    clock.advance(Duration::seconds(50));
    repo.update_heartbeat(agent.id).await.unwrap();
    clock.advance(Duration::seconds(50));

    assert_ids(
        &repo
            .find_stale_agents(StdDuration::from_secs(60))
            .await
            .unwrap(),
        &[],
    );
}

#[tokio::test]
async fn a_max_age_reaching_before_year_zero_is_a_validation_error() {
    let (_pool, repo, clock) = registry().await;
    repo.insert(Agent::new("planner", clock.now()))
        .await
        .unwrap();
    let three_thousand_years = StdDuration::from_secs(3_000 * 366 * 24 * 3600);

    for max_age in [three_thousand_years, StdDuration::MAX] {
        assert_validation(repo.find_stale_agents(max_age).await, "max_age");
    }
}

#[tokio::test]
async fn a_heartbeat_moves_heartbeat_at_to_the_clocks_now_and_nothing_else() {
    let (_pool, repo, clock) = registry().await;
    let agent = Agent::new("planner", clock.now());
    repo.insert(agent.clone()).await.unwrap();

    clock.advance(Duration::seconds(42) + Duration::microseconds(7));
    repo.update_heartbeat(agent.id).await.unwrap();

    let want = Agent {
        heartbeat_at: clock.now(),
        ..agent
    };
    assert_same_agent(&repo.get(want.id).await.unwrap().unwrap(), &want);
}

#[tokio::test]
async fn a_heartbeat_from_an_unknown_agent_is_not_found_and_writes_nothing() {
    let (pool, repo, clock) = registry().await;
    repo.insert(Agent::new("planner", clock.now()))
        .await
        .unwrap();
    let before = agent_rows(&pool).await;
    let stranger = Uuid::new_v4();

    clock.advance(Duration::seconds(1));
    assert_not_found(repo.update_heartbeat(stranger).await, stranger);

    assert_eq!(agent_rows(&pool).await, before);
}

#[tokio::test]
async fn a_heartbeat_from_a_terminated_agent_is_a_conflict_and_changes_nothing() {
    let (pool, repo, clock) = registry().await;
    let gone = terminated(Agent::new("planner", clock.now()), clock.now());
    repo.insert(gone.clone()).await.unwrap();
    let before = agent_rows(&pool).await;

    clock.advance(Duration::seconds(1));
    let err = repo.update_heartbeat(gone.id).await.unwrap_err();

    match err {
        DatabaseError::Conflict { entity, id, .. } => {
            assert_eq!((entity, id), ("agent", gone.id.to_string()));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(agent_rows(&pool).await, before);
}

#[tokio::test]
async fn deleting_an_agents_current_task_leaves_the_agent_without_a_task() {
    let (pool, repo, clock) = registry().await;
    let task = insert_task(&pool).await;
    let agent = busy_agent(&clock, task);
    repo.insert(agent.clone()).await.unwrap();

    TaskRepositoryImpl::new(pool.clone())
        .delete(task)
        .await
        .unwrap();

    let want = Agent {
        current_task_id: None,
        ..agent
    };
    assert_same_agent(&repo.get(want.id).await.unwrap().unwrap(), &want);
}

#[tokio::test]
async fn an_agent_row_with_an_impossible_heartbeat_is_reported_corrupt_by_every_read() {
    let (pool, repo, clock) = registry().await;
    let agent = Agent::new("planner", clock.now());
    repo.insert(agent.clone()).await.unwrap();
    // Month 13 passes the column's GLOB check but is no date.
    sqlx::query("UPDATE agents SET heartbeat_at = '2025-13-01T00:00:00.000000Z' WHERE id = ?")
        .bind(agent.id.to_string())
        .execute(&*pool)
        .await
        .unwrap();

    let errors = [
        repo.get(agent.id).await.unwrap_err(),
        repo.list(None).await.unwrap_err(),
        repo.list(Some(AgentStatus::Idle)).await.unwrap_err(),
        repo.find_stale_agents(StdDuration::from_secs(1))
            .await
            .unwrap_err(),
    ];

    for err in errors {
        match err {
            DatabaseError::CorruptRow {
                table, id, column, ..
            } => {
                assert_eq!(
                    (table, id, column),
                    ("agents", agent.id.to_string(), "heartbeat_at")
                );
            }
            other => panic!("expected a corrupt row, got {other:?}"),
        }
    }
}
