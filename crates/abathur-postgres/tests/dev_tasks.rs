//! DEV SCAFFOLD: replaced at merge.
//!
//! The conformance suite's task repository cases against [`PgTaskRepository`], before the
//! PostgreSQL queue store and the other repositories exist. The task repository runs on a
//! PostgreSQL test database; every other port is the SQLite adapter's, except two thin
//! bridges the cases need: sessions are also written to PostgreSQL (a task refers to its
//! session by foreign key), and the queue's `history` reads PostgreSQL's `task_events` (where
//! the repository records status changes). Below the suite: tests of [`PgIdLookup`] and of
//! NUL characters, on the PostgreSQL repository alone.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use abathur_conformance::{Backend, Ports};
use abathur_core::clock::{Clock, Now};
use abathur_core::error::DatabaseError;
use abathur_core::models::{NewSessionEvent, Session, SessionEvent, Task, TaskStatus};
use abathur_core::ports::{IdKind, IdLookup, SessionRepository, TaskRepository};
use abathur_core::queue::{
    ClaimRequest, ClaimedTask, FailOutcome, Lease, NewTask, PendingTask, PriorityPolicy,
    PruneReport, PruneRequest, QueueError, QueueLimits, QueueOverview, QueueStore, ReapReport,
    Recorded, RetryPolicy, SubmissionDetails, Submitted, TaskEvent,
};
use abathur_postgres::testing::TestDatabase;
use abathur_postgres::{PgConfig, PgIdLookup, PgTaskRepository};
use abathur_sqlite::{
    AgentRepositoryImpl, DatabaseConfig, DatabaseConnection, MemoryRepositoryImpl, QueueStoreImpl,
    SessionRepositoryImpl, SqliteChanges,
};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

// DEV SCAFFOLD: replaced at merge
/// Sessions in SQLite, each also written to PostgreSQL's `sessions` for the tasks' foreign key.
struct BridgedSessions {
    sqlite: SessionRepositoryImpl,
    pg: PgPool,
}

// DEV SCAFFOLD: replaced at merge
#[async_trait::async_trait]
impl SessionRepository for BridgedSessions {
    async fn create(&self, session: Session) -> Result<(), DatabaseError> {
        self.sqlite.create(session.clone()).await?;
        sqlx::query(
            "INSERT INTO sessions (id, app_name, user_id, project_id, state, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(session.id)
        .bind(&session.app_name)
        .bind(&session.user_id)
        .bind(&session.project_id)
        .bind(sqlx::types::Json(Value::Object(session.state.clone())))
        .bind(session.created_at)
        .bind(session.updated_at)
        .execute(&self.pg)
        .await
        .map_err(|e| DatabaseError::Other(e.to_string()))?;
        Ok(())
    }
    async fn get(&self, id: Uuid) -> Result<Option<Session>, DatabaseError> {
        self.sqlite.get(id).await
    }
    async fn append_event(
        &self,
        session_id: Uuid,
        event: NewSessionEvent,
    ) -> Result<SessionEvent, DatabaseError> {
        self.sqlite.append_event(session_id, event).await
    }
    async fn get_events(
        &self,
        session_id: Uuid,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<SessionEvent>, DatabaseError> {
        self.sqlite.get_events(session_id, offset, limit).await
    }
    async fn get_state(&self, session_id: Uuid, key: &str) -> Result<Option<Value>, DatabaseError> {
        self.sqlite.get_state(session_id, key).await
    }
    async fn set_state(
        &self,
        session_id: Uuid,
        key: &str,
        value: Value,
    ) -> Result<(), DatabaseError> {
        self.sqlite.set_state(session_id, key, value).await
    }
    async fn delete(&self, id: Uuid) -> Result<(), DatabaseError> {
        self.sqlite.delete(id).await
    }
}

// DEV SCAFFOLD: replaced at merge
/// SQLite's queue store, but `history` read from PostgreSQL's `task_events`.
struct BridgedQueue {
    sqlite: QueueStoreImpl,
    pg: PgPool,
}

// DEV SCAFFOLD: replaced at merge
#[async_trait::async_trait]
impl QueueStore for BridgedQueue {
    async fn submit(
        &self,
        batch: Vec<NewTask>,
        limits: &QueueLimits,
        priority: &PriorityPolicy,
        actor: &str,
        now: Now,
    ) -> Result<Vec<Submitted>, QueueError> {
        self.sqlite
            .submit(batch, limits, priority, actor, now)
            .await
    }
    async fn submission_details(&self, task_id: Uuid) -> Result<SubmissionDetails, QueueError> {
        self.sqlite.submission_details(task_id).await
    }
    async fn claim(
        &self,
        request: &ClaimRequest,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<Vec<ClaimedTask>, QueueError> {
        self.sqlite.claim(request, priority, now).await
    }
    async fn heartbeat(
        &self,
        attempt_id: Uuid,
        lease: Duration,
        now: Now,
    ) -> Result<Lease, QueueError> {
        self.sqlite.heartbeat(attempt_id, lease, now).await
    }
    async fn complete(
        &self,
        attempt_id: Uuid,
        result: Option<Value>,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<Recorded<Vec<Uuid>>, QueueError> {
        self.sqlite
            .complete(attempt_id, result, priority, now)
            .await
    }
    async fn fail(
        &self,
        attempt_id: Uuid,
        error: &str,
        retry: &RetryPolicy,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<Recorded<FailOutcome>, QueueError> {
        self.sqlite
            .fail(attempt_id, error, retry, priority, now)
            .await
    }
    async fn release(
        &self,
        attempt_id: Uuid,
        reason: &str,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<(), QueueError> {
        self.sqlite.release(attempt_id, reason, priority, now).await
    }
    async fn cancel(&self, task_id: Uuid, actor: &str, now: Now) -> Result<Vec<Uuid>, QueueError> {
        self.sqlite.cancel(task_id, actor, now).await
    }
    async fn retry(
        &self,
        task_id: Uuid,
        actor: &str,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<Vec<Uuid>, QueueError> {
        self.sqlite.retry(task_id, actor, priority, now).await
    }
    async fn reap(
        &self,
        retry: &RetryPolicy,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<ReapReport, QueueError> {
        self.sqlite.reap(retry, priority, now).await
    }
    async fn prune(&self, request: &PruneRequest) -> Result<PruneReport, QueueError> {
        self.sqlite.prune(request).await
    }
    async fn history(&self, task_id: Uuid) -> Result<Vec<TaskEvent>, QueueError> {
        let other = |e: sqlx::Error| QueueError::Database(DatabaseError::Other(e.to_string()));
        let rows: Vec<(
            i64,
            Option<String>,
            String,
            chrono::DateTime<chrono::Utc>,
            String,
            Option<Uuid>,
            Option<String>,
        )> = sqlx::query_as(
            "SELECT id, from_status, to_status, at, actor, attempt_id, reason
                 FROM task_events WHERE task_id = $1 ORDER BY id",
        )
        .bind(task_id)
        .fetch_all(&self.pg)
        .await
        .map_err(other)?;
        if rows.is_empty() {
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tasks WHERE id = $1)")
                    .bind(task_id)
                    .fetch_one(&self.pg)
                    .await
                    .map_err(other)?;
            if !exists {
                return Err(QueueError::TaskNotFound(task_id));
            }
        }
        Ok(rows
            .into_iter()
            .map(
                |(sequence, from, to, at, actor, attempt_id, reason)| TaskEvent {
                    sequence,
                    task_id,
                    from: from.map(|s| s.parse().expect("a status")),
                    to: to.parse().expect("a status"),
                    at,
                    actor,
                    attempt_id,
                    reason,
                },
            )
            .collect())
    }
    async fn overview(&self, running_limit: u32, now: Now) -> Result<QueueOverview, QueueError> {
        self.sqlite.overview(running_limit, now).await
    }
    async fn pending(&self, limit: u32) -> Result<Vec<PendingTask>, QueueError> {
        self.sqlite.pending(limit).await
    }
}

/// The PostgreSQL task repository, with the scaffold's bridges for the rest.
struct PgTasks;

fn pg_config() -> PgConfig {
    PgConfig {
        max_connections: 4,
        ..PgConfig::default()
    }
}

#[async_trait::async_trait]
impl Backend for PgTasks {
    async fn open(&self, clock: Arc<dyn Clock>) -> Ports {
        let (test_db, pg) = TestDatabase::migrated(pg_config()).await;
        let pg_pool = pg.pool().clone();
        // DEV SCAFFOLD: replaced at merge
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
            queue: Arc::new(BridgedQueue {
                sqlite: QueueStoreImpl::new(pool.clone()),
                pg: pg_pool.clone(),
            }),
            tasks: Arc::new(PgTaskRepository::with_clock(pg_pool.clone(), clock.clone())),
            memories: Arc::new(MemoryRepositoryImpl::with_clock(
                pool.clone(),
                clock.clone(),
            )),
            sessions: Arc::new(BridgedSessions {
                sqlite: SessionRepositoryImpl::with_clock(pool.clone(), clock.clone()),
                pg: pg_pool.clone(),
            }),
            agents: Arc::new(AgentRepositoryImpl::with_clock(pool.clone(), clock)),
            ids: Arc::new(PgIdLookup::new(pg_pool)),
            changes: Arc::new(SqliteChanges::new(pool)),
            keep_alive: Some(Box::new((test_db, pg)) as Box<dyn Any + Send + Sync>),
        }
    }
}

abathur_conformance::suite!(PgTasks);

// Tests of this branch's own, on PostgreSQL alone.

async fn repository() -> (TestDatabase, abathur_postgres::PgDatabase, PgTaskRepository) {
    let (test_db, db) = TestDatabase::migrated(pg_config()).await;
    let repo = PgTaskRepository::new(db.pool().clone());
    (test_db, db, repo)
}

fn task(name: &str) -> Task {
    Task::new(
        name,
        format!("{name} in full"),
        "worker",
        chrono::Utc::now(),
    )
}

async fn task_rows(db: &abathur_postgres::PgDatabase) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM tasks), (SELECT COUNT(*) FROM task_dependencies),
                (SELECT COUNT(*) FROM task_events)",
    )
    .fetch_one(db.pool())
    .await
    .expect("count rows")
}

/// A task with these ids, inserted through the repository.
async fn insert_with_ids(repo: &PgTaskRepository, ids: &[Uuid]) {
    let tasks = ids
        .iter()
        .map(|id| Task {
            id: *id,
            ..task("t")
        })
        .collect();
    repo.insert_batch(tasks).await.expect("insert the tasks");
}

#[tokio::test]
async fn id_lookup_finds_tasks_by_any_prefix_in_id_order_up_to_the_limit() {
    let (_test_db, db, repo) = repository().await;
    let ids: Vec<Uuid> = [
        "00000000-0000-4000-8000-000000000000",
        "0a000000-0000-4000-8000-000000000001",
        "0a100000-0000-4000-8000-000000000002",
        "0a1fffff-ffff-4fff-bfff-ffffffffffff",
        "0a200000-0000-4000-8000-000000000000",
        "12345678-9abc-4def-8123-456789abcdef",
        "12345678-9abc-4def-8123-456789abcdf0",
        "ffffffff-ffff-4fff-bfff-ffffffffffff",
    ]
    .iter()
    .map(|s| Uuid::parse_str(s).expect("an id"))
    .collect();
    insert_with_ids(&repo, &ids).await;
    let lookup = PgIdLookup::new(db.pool().clone());
    let find = |prefix: &'static str, limit: u32| {
        let lookup = lookup.clone();
        async move {
            lookup
                .ids_with_prefix(IdKind::Task, prefix, limit)
                .await
                .expect("a lookup")
        }
    };
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(find("", 100).await, sorted, "all, in id order");
    assert_eq!(find("", 3).await, sorted[..3].to_vec(), "up to the limit");
    assert_eq!(find("0a1", 10).await, vec![ids[2], ids[3]]);
    assert_eq!(find("0a", 10).await, vec![ids[1], ids[2], ids[3], ids[4]]);
    assert_eq!(find("0a", 2).await, vec![ids[1], ids[2]]);
    assert_eq!(find("12345678-", 10).await, vec![ids[5], ids[6]]);
    assert_eq!(
        find("12345678-9abc-4def-8123-456789abcde", 10).await,
        vec![ids[5]]
    );
    assert_eq!(
        find("12345678-9abc-4def-8123-456789abcdef", 10).await,
        vec![ids[5]]
    );
    assert_eq!(
        find("ffffffff-ffff-4fff-bfff-ffffffffffff", 10).await,
        vec![ids[7]]
    );
    assert_eq!(find("f", 10).await, vec![ids[7]]);
    for nothing in [
        "1234567",
        "0b",
        "zz",
        "0A",
        "12345678x",
        "12345678-9abc-4def-8123-456789abcdef0",
        "%",
        "_",
    ] {
        let found = lookup
            .ids_with_prefix(IdKind::Task, nothing, 10)
            .await
            .expect("a lookup");
        let expected: Vec<Uuid> = if nothing == "1234567" {
            vec![ids[5], ids[6]]
        } else {
            Vec::new()
        };
        assert_eq!(found, expected, "{nothing}");
    }
    for kind in [IdKind::Attempt, IdKind::Session, IdKind::Agent] {
        assert!(
            lookup
                .ids_with_prefix(kind, "", 10)
                .await
                .expect("a lookup")
                .is_empty(),
            "{kind:?} finds no task"
        );
    }
}

#[tokio::test]
async fn id_lookup_reads_the_primary_key_index() {
    let (_test_db, db, _repo) = repository().await;
    let (low, high) = (Uuid::nil(), Uuid::from_u128(u128::MAX));
    let mut conn = db.pool().acquire().await.expect("a connection");
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .expect("set");
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT id FROM tasks WHERE id BETWEEN $1 AND $2 ORDER BY id LIMIT $3",
    )
    .bind(low)
    .bind(high)
    .bind(10_i64)
    .fetch_all(&mut *conn)
    .await
    .expect("explain");
    assert!(
        plan.iter().any(|l| l.contains("tasks_pkey")),
        "the range is read from the primary key: {plan:?}"
    );
}

#[tokio::test]
async fn a_nul_character_in_text_or_json_is_a_validation_error_and_nothing_is_stored() {
    let (_test_db, db, repo) = repository().await;
    let stored = task("stored");
    repo.insert(stored.clone()).await.expect("insert");
    let before = task_rows(&db).await;
    let bad: Vec<(&str, Task)> = vec![
        (
            "description",
            Task {
                description: "a\0b".into(),
                ..task("t")
            },
        ),
        (
            "summary",
            Task {
                summary: "a\0b".into(),
                ..task("t")
            },
        ),
        (
            "input_data",
            Task {
                input_data: Some(json!({"k": ["x\u{0}y"]})),
                ..task("t")
            },
        ),
        (
            "result_data",
            Task {
                result_data: Some(json!({"k\u{0}": 1})),
                ..task("t")
            },
        ),
    ];
    for (field, t) in bad {
        for result in [
            repo.insert(t.clone()).await,
            repo.insert_batch(vec![task("ok"), t.clone()]).await,
            repo.update(Task {
                id: stored.id,
                submitted_at: stored.submitted_at,
                ..t.clone()
            })
            .await,
        ] {
            match result {
                Err(DatabaseError::Validation(e)) => {
                    assert_eq!(e.field, field);
                    assert!(e.message.contains("NUL"), "{e}");
                }
                other => panic!("{field}: expected a validation error, got {other:?}"),
            }
        }
    }
    assert_eq!(task_rows(&db).await, before, "nothing was written");
    assert_eq!(
        repo.get(stored.id).await.expect("get"),
        Some(Task {
            submitted_at: abathur_core::timestamp::truncate_to_micros(stored.submitted_at),
            last_updated_at: abathur_core::timestamp::truncate_to_micros(stored.last_updated_at),
            ..stored
        })
    );
}

#[tokio::test]
async fn concurrent_updates_cannot_close_a_cycle_between_them() {
    let (_test_db, _db, repo) = repository().await;
    let repo = Arc::new(repo);
    for _ in 0..20 {
        let a = task("a");
        let b = task("b");
        repo.insert_batch(vec![a.clone(), b.clone()])
            .await
            .expect("insert");
        let (ra, rb) = (Arc::clone(&repo), Arc::clone(&repo));
        let (a2, b2) = (a.clone(), b.clone());
        let one = tokio::spawn(async move {
            ra.update(Task {
                dependencies: Some(vec![b2.id]),
                status: TaskStatus::Blocked,
                ..a2
            })
            .await
        });
        let other = tokio::spawn(async move {
            rb.update(Task {
                dependencies: Some(vec![a.id]),
                status: TaskStatus::Blocked,
                ..b
            })
            .await
        });
        let results = [one.await.expect("join"), other.await.expect("join")];
        let refused = results
            .iter()
            .filter(|r| matches!(r, Err(DatabaseError::Validation(e)) if e.field == "dependencies"))
            .count();
        assert_eq!(refused, 1, "exactly one of them is refused: {results:?}");
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    }
}

#[tokio::test]
async fn a_batch_whose_parent_and_dependencies_loop_is_stored_whole() {
    let (_test_db, _db, repo) = repository().await;
    let mut a = task("a");
    let mut b = task("b");
    a.parent_task_id = Some(b.id);
    b.dependencies = Some(vec![a.id]);
    b.status = TaskStatus::Blocked;
    repo.insert_batch(vec![a.clone(), b.clone()])
        .await
        .expect("a batch whose members refer to each other");
    let stored_a = repo.get(a.id).await.expect("get").expect("stored");
    assert_eq!(stored_a.parent_task_id, Some(b.id));
    let dependents = repo.get_dependents(a.id).await.expect("dependents");
    assert_eq!(
        dependents.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![b.id]
    );
}
