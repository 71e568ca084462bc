//! Issue 10, item 4: every stored text and JSON field has a size limit, enforced by the domain
//! whichever way a value comes in; a cascaded failure names its root instead of copying its
//! error into every dependent.

use std::sync::Arc;
use std::time::Duration;

use abathur::domain::error::{DatabaseError, ValidationError};
use abathur::domain::limits;
use abathur::domain::models::{Agent, MemoryType, NewMemory, NewSessionEvent, Session};
use abathur::domain::ports::TaskRepository;
use abathur::domain::ports::{AgentRepository, MemoryRepository, SessionRepository};
use abathur::domain::queue::{NewTask, QueueError, TaskQueue};
use abathur::infrastructure::database::{
    AgentRepositoryImpl, MemoryRepositoryImpl, QueueStoreImpl, SessionRepositoryImpl,
    TaskRepositoryImpl,
};
use serde_json::{json, Value};
use sqlx::SqlitePool;

use crate::helpers::database::{table_dump, test_db};
use crate::helpers::ManualClock;

const LEASE: Duration = Duration::from_secs(60);

/// A JSON string whose compact encoding is `bytes` bytes long.
fn json_of(bytes: usize) -> Value {
    Value::String("x".repeat(bytes - 2))
}

#[track_caller]
fn assert_over_limit(err: &ValidationError, field: &str, limit: usize) {
    assert_eq!(err.field, field, "{err}");
    assert!(
        err.message.contains(&format!("limit of {limit} bytes")),
        "{field}: {}",
        err.message
    );
}

#[track_caller]
fn queue_validation(result: Result<impl std::fmt::Debug, QueueError>) -> ValidationError {
    match result {
        Err(QueueError::Validation(e)) => e,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[track_caller]
fn db_validation(result: Result<impl std::fmt::Debug, DatabaseError>) -> ValidationError {
    match result {
        Err(DatabaseError::Validation(e)) => e,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

fn queue(pool: &SqlitePool) -> TaskQueue {
    TaskQueue::new(Arc::new(QueueStoreImpl::new(pool.clone()))).with_clock(ManualClock::new())
}

#[tokio::test]
async fn task_fields_over_their_limits_are_refused_at_submission_and_nothing_is_stored() {
    let pool = test_db().await;
    let queue = queue(&pool);
    let before = table_dump(&pool).await;
    let cases: Vec<(&str, usize, NewTask)> = vec![
        (
            "description",
            limits::MAX_DESCRIPTION_BYTES,
            NewTask::new("s", "d".repeat(limits::MAX_DESCRIPTION_BYTES + 1), "a"),
        ),
        (
            "input_data",
            limits::MAX_TASK_JSON_BYTES,
            NewTask {
                input_data: Some(json_of(limits::MAX_TASK_JSON_BYTES + 1)),
                ..NewTask::new("s", "d", "a")
            },
        ),
        (
            "agent_type",
            limits::MAX_NAME_BYTES,
            NewTask::new("s", "d", "a".repeat(limits::MAX_NAME_BYTES + 1)),
        ),
        (
            "feature_branch",
            limits::MAX_NAME_BYTES,
            NewTask {
                feature_branch: Some("b".repeat(limits::MAX_NAME_BYTES + 1)),
                ..NewTask::new("s", "d", "a")
            },
        ),
        (
            "created_by",
            limits::MAX_NAME_BYTES,
            NewTask {
                created_by: Some("c".repeat(limits::MAX_NAME_BYTES + 1)),
                ..NewTask::new("s", "d", "a")
            },
        ),
        (
            "worktree_path",
            limits::MAX_PATH_BYTES,
            NewTask {
                worktree_path: Some("/".repeat(limits::MAX_PATH_BYTES + 1)),
                ..NewTask::new("s", "d", "a")
            },
        ),
    ];
    for (field, limit, task) in cases {
        let err = queue_validation(queue.submit(task).await);
        assert_over_limit(&err, field, limit);
    }
    assert_eq!(table_dump(&pool).await, before);
    // At the limit is accepted.
    queue
        .submit(NewTask::new(
            "s",
            "d".repeat(limits::MAX_DESCRIPTION_BYTES),
            "a",
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_oversized_result_error_worker_or_actor_is_refused_and_the_attempt_stays_open() {
    let pool = test_db().await;
    let queue = queue(&pool);
    let task = queue.submit(NewTask::new("s", "d", "a")).await.unwrap();
    let long_name = "w".repeat(limits::MAX_NAME_BYTES + 1);
    let err = queue_validation(queue.claim(&long_name, &[], LEASE, 1).await);
    assert_over_limit(&err, "worker_id", limits::MAX_NAME_BYTES);
    let err = queue_validation(
        queue
            .claim("w", std::slice::from_ref(&long_name), LEASE, 1)
            .await,
    );
    assert_over_limit(&err, "agent_type", limits::MAX_NAME_BYTES);
    let attempt = queue.claim("w", &[], LEASE, 1).await.unwrap()[0]
        .lease
        .attempt_id;
    let before = table_dump(&pool).await;

    let err = queue_validation(
        queue
            .complete(attempt, Some(json_of(limits::MAX_TASK_JSON_BYTES + 1)))
            .await,
    );
    assert_over_limit(&err, "result", limits::MAX_TASK_JSON_BYTES);
    let err = queue_validation(
        queue
            .fail(attempt, &"e".repeat(limits::MAX_ERROR_BYTES + 1))
            .await,
    );
    assert_over_limit(&err, "error", limits::MAX_ERROR_BYTES);
    let err = queue_validation(
        queue
            .release(attempt, &"r".repeat(limits::MAX_ERROR_BYTES + 1))
            .await,
    );
    assert_over_limit(&err, "reason", limits::MAX_ERROR_BYTES);
    let err = queue_validation(queue.cancel(task.id, &long_name).await);
    assert_over_limit(&err, "actor", limits::MAX_NAME_BYTES);
    assert_eq!(table_dump(&pool).await, before);
    // The attempt is still open: the worker can still report, within the limits.
    queue
        .fail(attempt, &"e".repeat(limits::MAX_ERROR_BYTES))
        .await
        .unwrap();
}

#[tokio::test]
async fn memory_session_and_agent_fields_over_their_limits_are_refused_and_nothing_is_stored() {
    let pool = test_db().await;
    let memories = MemoryRepositoryImpl::new(pool.clone());
    let sessions = SessionRepositoryImpl::new(pool.clone());
    let agents = AgentRepositoryImpl::new(pool.clone());
    let memory = |value: Value, metadata: Option<Value>, key: String| NewMemory {
        namespace: "ns".into(),
        key,
        value,
        memory_type: MemoryType::Semantic,
        metadata,
        created_by: "me".into(),
    };
    memories
        .add(memory(json!(1), None, "k".into()))
        .await
        .unwrap();
    let session = Session::new("app", "user", chrono::Utc::now());
    sessions.create(session.clone()).await.unwrap();
    let before = table_dump(&pool).await;

    let err = db_validation(
        memories
            .add(memory(
                json_of(limits::MAX_MEMORY_VALUE_BYTES + 1),
                None,
                "k2".into(),
            ))
            .await,
    );
    assert_over_limit(&err, "value", limits::MAX_MEMORY_VALUE_BYTES);
    let err = db_validation(
        memories
            .add(memory(
                json!(1),
                Some(json_of(limits::MAX_METADATA_BYTES + 1)),
                "k2".into(),
            ))
            .await,
    );
    assert_over_limit(&err, "metadata", limits::MAX_METADATA_BYTES);
    let err = db_validation(
        memories
            .add(memory(
                json!(1),
                None,
                "k".repeat(limits::MAX_NAME_BYTES + 1),
            ))
            .await,
    );
    assert_over_limit(&err, "key", limits::MAX_NAME_BYTES);
    let err = db_validation(
        memories
            .update("ns", "k", json_of(limits::MAX_MEMORY_VALUE_BYTES + 1), "me")
            .await,
    );
    assert_over_limit(&err, "value", limits::MAX_MEMORY_VALUE_BYTES);

    let err = db_validation(
        sessions
            .append_event(
                session.id,
                NewSessionEvent {
                    event_type: "note".into(),
                    actor: "me".into(),
                    content: json_of(limits::MAX_EVENT_CONTENT_BYTES + 1),
                },
            )
            .await,
    );
    assert_over_limit(&err, "content", limits::MAX_EVENT_CONTENT_BYTES);
    let err = db_validation(
        sessions
            .set_state(
                session.id,
                "k",
                json_of(limits::MAX_EVENT_CONTENT_BYTES + 1),
            )
            .await,
    );
    assert_over_limit(&err, "value", limits::MAX_EVENT_CONTENT_BYTES);
    let long_app = Session::new(
        "a".repeat(limits::MAX_NAME_BYTES + 1),
        "user",
        chrono::Utc::now(),
    );
    let err = db_validation(sessions.create(long_app).await);
    assert_over_limit(&err, "app_name", limits::MAX_NAME_BYTES);

    let agent = Agent::new("t".repeat(limits::MAX_NAME_BYTES + 1), chrono::Utc::now());
    let err = db_validation(agents.insert(agent).await);
    assert_over_limit(&err, "agent_type", limits::MAX_NAME_BYTES);

    assert_eq!(table_dump(&pool).await, before);
}

/// Issue 10, item 4: failing a task with 2,000 dependents and a 100 KB error copied the error
/// into every dependent's `error_message` and every event's `reason`.
#[tokio::test]
async fn a_cascaded_failure_names_its_root_without_copying_the_roots_error() {
    let pool = test_db().await;
    let queue = queue(&pool);
    let tasks = TaskRepositoryImpl::new(pool.clone());
    let root = NewTask {
        max_retries: 0,
        ..NewTask::new("root", "root", "a")
    };
    let child = NewTask {
        dependencies: vec![root.id],
        ..NewTask::new("child", "child", "a")
    };
    let grandchild = NewTask {
        dependencies: vec![child.id],
        ..NewTask::new("grandchild", "grandchild", "a")
    };
    let (root_id, dependents) = (root.id, [child.id, grandchild.id]);
    queue
        .submit_batch(vec![root, child, grandchild])
        .await
        .unwrap();
    let attempt = queue.claim("w", &[], LEASE, 1).await.unwrap()[0]
        .lease
        .attempt_id;
    let root_error = "the distinctive root error ".repeat(100);
    queue.fail(attempt, &root_error).await.unwrap();

    assert_eq!(
        tasks
            .get(root_id)
            .await
            .unwrap()
            .unwrap()
            .error_message
            .as_deref(),
        Some(root_error.as_str())
    );
    let expected = format!("dependency {root_id} failed");
    for id in dependents {
        let dependent = tasks.get(id).await.unwrap().unwrap();
        assert_eq!(dependent.error_message.as_deref(), Some(expected.as_str()));
        let history = queue.history(id).await.unwrap();
        let last = history.last().unwrap();
        assert_eq!(last.reason.as_deref(), Some(expected.as_str()));
        for event in &history {
            assert!(
                !event
                    .reason
                    .as_deref()
                    .unwrap_or_default()
                    .contains("distinctive"),
                "{event:?}"
            );
        }
    }
}
