// DEV SCAFFOLD: replaced at merge.
//
//! The conformance suite with the memory, session and agent repositories on PostgreSQL, while
//! the other ports (queue store, task repository, id lookup, changes) are not yet written for
//! it: those run on an in-memory SQLite database beside it. Only the cases of the three
//! repositories are meant to be run from here:
//! `cargo test -p abathur-postgres --test dev_repos -- memory_repository session_repository agent_repository`.
//!
//! Two small bridges let cases that mix a repository with tasks run across the two databases:
//! a session created or deleted on PostgreSQL is created or deleted on SQLite too (so a task
//! submitted in it finds it, and loses it when it is deleted), and an agent written with a
//! current task gets a stand-in row for that task on PostgreSQL when the task exists on SQLite
//! (so the foreign key holds). A task pruned on SQLite is not pruned on PostgreSQL: the case
//! `pruning_an_agents_current_task_leaves_the_agent_without_a_task` fails here for that reason
//! alone.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use abathur_conformance::{Backend, Ports};
use abathur_core::clock::Clock;
use abathur_core::error::DatabaseError;
use abathur_core::models::{Agent, AgentStatus, NewSessionEvent, Session, SessionEvent};
use abathur_core::ports::{AgentRepository, SessionRepository, TaskRepository};
use abathur_postgres::testing::TestDatabase;
use abathur_postgres::{PgAgentRepository, PgConfig, PgMemoryRepository, PgSessionRepository};
use abathur_sqlite::{
    DatabaseConfig, DatabaseConnection, IdLookupImpl, QueueStoreImpl, SessionRepositoryImpl,
    SqliteChanges, TaskRepositoryImpl,
};
use async_trait::async_trait;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// PostgreSQL sessions, mirrored into SQLite for the tasks that live there.
struct MirroredSessions {
    pg: PgSessionRepository,
    sqlite: SessionRepositoryImpl,
}

#[async_trait]
impl SessionRepository for MirroredSessions {
    async fn create(&self, session: Session) -> Result<(), DatabaseError> {
        self.pg.create(session.clone()).await?;
        self.sqlite
            .create(session)
            .await
            .expect("mirror the session into SQLite");
        Ok(())
    }

    async fn get(&self, id: Uuid) -> Result<Option<Session>, DatabaseError> {
        self.pg.get(id).await
    }

    async fn append_event(
        &self,
        session_id: Uuid,
        event: NewSessionEvent,
    ) -> Result<SessionEvent, DatabaseError> {
        self.pg.append_event(session_id, event).await
    }

    async fn get_events(
        &self,
        session_id: Uuid,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<SessionEvent>, DatabaseError> {
        self.pg.get_events(session_id, offset, limit).await
    }

    async fn get_state(&self, session_id: Uuid, key: &str) -> Result<Option<Value>, DatabaseError> {
        self.pg.get_state(session_id, key).await
    }

    async fn set_state(
        &self,
        session_id: Uuid,
        key: &str,
        value: Value,
    ) -> Result<(), DatabaseError> {
        self.pg.set_state(session_id, key, value).await
    }

    async fn delete(&self, id: Uuid) -> Result<(), DatabaseError> {
        self.pg.delete(id).await?;
        self.sqlite
            .delete(id)
            .await
            .expect("delete the mirrored session from SQLite");
        Ok(())
    }
}

/// PostgreSQL agents, whose current task (on SQLite) gets a stand-in row on PostgreSQL.
struct BridgedAgents {
    pg: PgAgentRepository,
    pool: PgPool,
    tasks: TaskRepositoryImpl,
}

impl BridgedAgents {
    async fn stand_in(&self, agent: &Agent) {
        let Some(task) = agent.current_task_id else {
            return;
        };
        if self.tasks.get(task).await.expect("read the task").is_none() {
            return;
        }
        sqlx::query(
            "INSERT INTO tasks (id, summary, description, agent_type, priority, status,
                 submitted_at, last_updated_at, source)
             VALUES ($1, 'stand-in', '', 'worker', 5, 'pending', now(), now(), 'human')
             ON CONFLICT DO NOTHING",
        )
        .bind(task)
        .execute(&self.pool)
        .await
        .expect("a stand-in task on PostgreSQL");
    }
}

#[async_trait]
impl AgentRepository for BridgedAgents {
    async fn insert(&self, agent: Agent) -> Result<(), DatabaseError> {
        self.stand_in(&agent).await;
        self.pg.insert(agent).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<Agent>, DatabaseError> {
        self.pg.get(id).await
    }

    async fn update(&self, agent: Agent) -> Result<(), DatabaseError> {
        self.stand_in(&agent).await;
        self.pg.update(agent).await
    }

    async fn list(&self, status: Option<AgentStatus>) -> Result<Vec<Agent>, DatabaseError> {
        self.pg.list(status).await
    }

    async fn find_stale_agents(&self, max_age: Duration) -> Result<Vec<Agent>, DatabaseError> {
        self.pg.find_stale_agents(max_age).await
    }

    async fn update_heartbeat(&self, id: Uuid) -> Result<(), DatabaseError> {
        self.pg.update_heartbeat(id).await
    }
}

/// What must outlive a case: the PostgreSQL test database (dropped with the case) and the
/// SQLite connection.
struct Keep {
    _pg: TestDatabase,
    _sqlite: DatabaseConnection,
}

struct Scaffold;

#[async_trait]
impl Backend for Scaffold {
    async fn open(&self, clock: Arc<dyn Clock>) -> Ports {
        let (test_db, pg) = TestDatabase::migrated(PgConfig {
            max_connections: 4,
            ..Default::default()
        })
        .await;
        let pg_pool = pg.pool().clone();
        let sqlite = DatabaseConnection::with_config(
            "sqlite::memory:",
            DatabaseConfig {
                min_connections: 1,
                ..DatabaseConfig::default()
            },
        )
        .await
        .expect("open an in-memory SQLite database");
        sqlite.migrate().await.expect("migrate SQLite");
        let pool = sqlite.pool().clone();
        Ports {
            queue: Arc::new(QueueStoreImpl::new(pool.clone())),
            tasks: Arc::new(TaskRepositoryImpl::with_clock(pool.clone(), clock.clone())),
            memories: Arc::new(PgMemoryRepository::with_clock(
                pg_pool.clone(),
                clock.clone(),
            )),
            sessions: Arc::new(MirroredSessions {
                pg: PgSessionRepository::with_clock(pg_pool.clone(), clock.clone()),
                sqlite: SessionRepositoryImpl::with_clock(pool.clone(), clock.clone()),
            }),
            agents: Arc::new(BridgedAgents {
                pg: PgAgentRepository::with_clock(pg_pool.clone(), clock.clone()),
                pool: pg_pool,
                tasks: TaskRepositoryImpl::with_clock(pool.clone(), clock),
            }),
            ids: Arc::new(IdLookupImpl::new(pool.clone())),
            changes: Arc::new(SqliteChanges::new(pool)),
            keep_alive: Some(Box::new(Keep {
                _pg: test_db,
                _sqlite: sqlite,
            }) as Box<dyn Any + Send + Sync>),
        }
    }
}

abathur_conformance::suite!(Scaffold);
