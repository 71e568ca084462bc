//! Every method of the task repository: success paths, not-found and constraint paths, bad
//! input that changes nothing, corrupt rows, and a property test of the round-trip.

use std::sync::Arc;

use abathur::domain::models::{DependencyType, Session, Task, TaskSource, TaskStatus};
use abathur::domain::ports::{SessionRepository, TaskFilters, TaskRepository};
use abathur::domain::queue::{PruneRequest, QueueError, QueueStore};
use abathur::infrastructure::database::{
    DatabaseError, QueueStoreImpl, SessionRepositoryImpl, TaskRepositoryImpl,
};
use chrono::{Duration, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::json;
use sqlx::SqlitePool;
use uuid::Uuid;

use crate::helpers::database::{test_db, TestPool};
use crate::helpers::{spec_task, ManualClock};

async fn repo() -> (TestPool, TaskRepositoryImpl) {
    let pool = test_db().await;
    let repo = TaskRepositoryImpl::new(pool.clone());
    (pool, repo)
}

fn task(summary: &str) -> Task {
    Task {
        summary: summary.to_string(),
        ..spec_task()
    }
}

async fn count_rows(pool: &SqlitePool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Every task and edge, to compare before and after an operation that must change nothing.
async fn snapshot(pool: &SqlitePool) -> (Vec<(String, String, String)>, Vec<(String, String)>) {
    let tasks = sqlx::query_as("SELECT id, status, last_updated_at FROM tasks ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap();
    let edges =
        sqlx::query_as("SELECT task_id, depends_on_task_id FROM task_dependencies ORDER BY 1, 2")
            .fetch_all(pool)
            .await
            .unwrap();
    (tasks, edges)
}

#[track_caller]
fn assert_validation(result: Result<(), DatabaseError>, field: &str) {
    match result {
        Err(DatabaseError::Validation(e)) => assert_eq!(e.field, field, "{e}"),
        other => panic!("expected a validation error on {field}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_task_with_every_field_set_reads_back_equal() {
    let (pool, repo) = repo().await;
    let sessions = SessionRepositoryImpl::new(pool.clone());
    let session = Session::new("app", "user", Utc::now());
    sessions.create(session.clone()).await.unwrap();
    let parent = task("parent");
    let dependency = task("dependency");
    repo.insert(parent.clone()).await.unwrap();
    repo.insert(dependency.clone()).await.unwrap();
    let now = Utc::now();
    let full = Task {
        summary: "Ünïcödé summary ✓".into(),
        description: "line one\nline two".into(),
        agent_type: "rust-specialist".into(),
        priority: 10,
        calculated_priority: 12.75,
        status: TaskStatus::Completed,
        dependencies: Some(vec![dependency.id]),
        dependency_type: DependencyType::Parallel,
        dependency_depth: 1,
        input_data: Some(json!({"files": ["a.rs"], "n": 1.5, "nested": {"ok": true}})),
        result_data: Some(json!([1, "two", null])),
        error_message: Some("an earlier attempt failed".into()),
        retry_count: 2,
        max_retries: 7,
        max_execution_timeout_seconds: 60,
        started_at: Some(now),
        completed_at: Some(now + Duration::seconds(5)),
        created_by: Some("agent-7".into()),
        parent_task_id: Some(parent.id),
        session_id: Some(session.id),
        source: TaskSource::AgentPlanner,
        deadline: Some(now + Duration::days(1)),
        estimated_duration_seconds: Some(300),
        feature_branch: Some("feature/x".into()),
        task_branch: Some("task/y".into()),
        worktree_path: Some("/tmp/wt".into()),
        ..task("placeholder")
    };
    let full = Task {
        started_at: full
            .started_at
            .map(abathur::domain::timestamp::truncate_to_micros),
        completed_at: full
            .completed_at
            .map(abathur::domain::timestamp::truncate_to_micros),
        deadline: full
            .deadline
            .map(abathur::domain::timestamp::truncate_to_micros),
        ..full
    };
    repo.insert(full.clone()).await.unwrap();
    assert_eq!(repo.get(full.id).await.unwrap(), Some(full));
}

#[tokio::test]
async fn getting_an_unknown_id_is_none() {
    let (_pool, repo) = repo().await;
    assert_eq!(repo.get(Uuid::new_v4()).await.unwrap(), None);
}

#[tokio::test]
async fn inserting_the_same_id_twice_is_a_unique_violation() {
    let (pool, repo) = repo().await;
    let t = task("once");
    repo.insert(t.clone()).await.unwrap();
    let err = repo.insert(t.clone()).await.unwrap_err();
    assert!(
        matches!(&err, DatabaseError::UniqueViolation { entity: "task", id } if *id == t.id.to_string()),
        "{err:?}"
    );
    assert_eq!(count_rows(&pool, "tasks").await, 1);
}

#[tokio::test]
async fn an_unknown_parent_is_named_in_the_error_and_nothing_is_written() {
    let (pool, repo) = repo().await;
    repo.insert(task("bystander")).await.unwrap();
    let before = snapshot(&pool).await;
    let missing = Uuid::new_v4();
    let err = repo
        .insert(Task {
            parent_task_id: Some(missing),
            ..task("orphan")
        })
        .await
        .unwrap_err();
    match &err {
        DatabaseError::ForeignKeyViolation {
            entity: "task",
            reference: "parent task",
            id: Some(id),
        } => assert_eq!(*id, missing.to_string()),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("parent task"), "{err}");
    assert_eq!(snapshot(&pool).await, before);
}

#[tokio::test]
async fn an_unknown_dependency_or_session_is_named_in_the_error() {
    let (pool, repo) = repo().await;
    let known = task("known");
    repo.insert(known.clone()).await.unwrap();
    let missing = Uuid::new_v4();
    let err = repo
        .insert(Task {
            dependencies: Some(vec![known.id, missing]),
            ..task("dependent")
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DatabaseError::ForeignKeyViolation { reference: "dependency", id: Some(id), .. } if *id == missing.to_string()),
        "{err:?}"
    );
    let err = repo
        .insert(Task {
            session_id: Some(missing),
            ..task("sessionless")
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            DatabaseError::ForeignKeyViolation {
                reference: "session",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(count_rows(&pool, "tasks").await, 1);
    assert_eq!(count_rows(&pool, "task_dependencies").await, 0);
}

#[tokio::test]
async fn a_141_character_summary_is_rejected_and_nothing_is_written() {
    let (pool, repo) = repo().await;
    let before = snapshot(&pool).await;
    assert_validation(repo.insert(task(&"x".repeat(141))).await, "summary");
    assert_eq!(snapshot(&pool).await, before);
}

#[tokio::test]
async fn a_multibyte_summary_is_measured_in_characters() {
    let (pool, repo) = repo().await;
    // 140 characters of 4 bytes each: 560 bytes, but within the limit.
    let fits = task(&"🦀".repeat(140));
    repo.insert(fits.clone()).await.unwrap();
    assert_eq!(
        repo.get(fits.id).await.unwrap().unwrap().summary,
        fits.summary
    );
    assert_validation(repo.insert(task(&"🦀".repeat(141))).await, "summary");
    assert_eq!(count_rows(&pool, "tasks").await, 1);
}

#[tokio::test]
async fn priority_11_is_rejected_and_nothing_is_written() {
    let (pool, repo) = repo().await;
    assert_validation(
        repo.insert(Task {
            priority: 11,
            ..task("too urgent")
        })
        .await,
        "priority",
    );
    assert_eq!(count_rows(&pool, "tasks").await, 0);
}

#[tokio::test]
async fn self_dependencies_duplicates_and_self_parents_are_rejected() {
    let (pool, repo) = repo().await;
    let other = task("other");
    repo.insert(other.clone()).await.unwrap();
    let mut t = task("loop");
    t.dependencies = Some(vec![t.id]);
    assert_validation(repo.insert(t.clone()).await, "dependencies");
    t.dependencies = Some(vec![other.id, other.id]);
    assert_validation(repo.insert(t.clone()).await, "dependencies");
    t.dependencies = None;
    t.parent_task_id = Some(t.id);
    assert_validation(repo.insert(t).await, "parent_task_id");
    assert_eq!(count_rows(&pool, "tasks").await, 1);
}

#[tokio::test]
async fn a_non_finite_calculated_priority_is_rejected() {
    let (_pool, repo) = repo().await;
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert_validation(
            repo.insert(Task {
                calculated_priority: bad,
                ..task("nan")
            })
            .await,
            "calculated_priority",
        );
    }
}

#[tokio::test]
async fn malformed_json_is_refused_by_the_schema() {
    let (pool, _repo) = repo().await;
    // A Task's JSON fields are serde values and always valid; a writer that goes around the
    // repository with bad JSON text is stopped by the json_valid() CHECK.
    let t = task("raw");
    let result = sqlx::query(
        "INSERT INTO tasks (id, summary, description, agent_type, priority, status, input_data,
             submitted_at, last_updated_at, source)
         VALUES (?, 's', 'd', 'a', 1, 'ready', '{not json', '2026-11-28T00:00:00.000000Z',
             '2026-11-28T00:00:00.000000Z', 'human')",
    )
    .bind(t.id.to_string())
    .execute(&*pool)
    .await;
    let err = result.unwrap_err();
    assert_eq!(
        err.as_database_error().unwrap().kind(),
        sqlx::error::ErrorKind::CheckViolation
    );
    assert_eq!(count_rows(&pool, "tasks").await, 0);
}

#[tokio::test]
async fn a_timestamp_in_another_format_is_refused_by_the_schema() {
    let (pool, _repo) = repo().await;
    let result = sqlx::query(
        "INSERT INTO tasks (id, summary, description, agent_type, priority, status,
             submitted_at, last_updated_at, source)
         VALUES (?, 's', 'd', 'a', 1, 'ready', datetime('now'), datetime('now'), 'human')",
    )
    .bind(Uuid::new_v4().to_string())
    .execute(&*pool)
    .await;
    assert!(result.is_err());
}

#[tokio::test]
async fn update_replaces_the_fields_and_keeps_submitted_at() {
    let (pool, repo) = repo().await;
    let clock = ManualClock::new();
    let repo_at = TaskRepositoryImpl::with_clock(pool.clone(), clock.clone());
    let original = task("before");
    repo.insert(original.clone()).await.unwrap();
    clock.advance(Duration::minutes(5));
    let changed = Task {
        summary: "after".into(),
        priority: 9,
        status: TaskStatus::Failed,
        error_message: Some("boom".into()),
        submitted_at: Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap(),
        ..original.clone()
    };
    repo_at.update(changed.clone()).await.unwrap();
    let stored = repo.get(original.id).await.unwrap().unwrap();
    assert_eq!(stored.summary, "after");
    assert_eq!(stored.priority, 9);
    assert_eq!(stored.status, TaskStatus::Failed);
    assert_eq!(stored.error_message.as_deref(), Some("boom"));
    assert_eq!(stored.submitted_at, original.submitted_at);
    assert_eq!(
        stored.last_updated_at,
        abathur::domain::clock::Clock::now(&*clock)
    );
}

#[tokio::test]
async fn updating_an_unknown_task_is_not_found() {
    let (pool, repo) = repo().await;
    let err = repo.update(task("ghost")).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert_eq!(count_rows(&pool, "tasks").await, 0);
}

#[tokio::test]
async fn update_rewrites_the_dependency_edges_with_the_json_list() {
    let (pool, repo) = repo().await;
    let (a, b, c) = (task("a"), task("b"), task("c"));
    for t in [&a, &b, &c] {
        repo.insert(t.clone()).await.unwrap();
    }
    let mut d = Task {
        dependencies: Some(vec![a.id, b.id]),
        ..task("d")
    };
    repo.insert(d.clone()).await.unwrap();
    d.dependencies = Some(vec![b.id, c.id]);
    repo.update(d.clone()).await.unwrap();
    let edges: Vec<(String,)> = sqlx::query_as(
        "SELECT depends_on_task_id FROM task_dependencies WHERE task_id = ? ORDER BY 1",
    )
    .bind(d.id.to_string())
    .fetch_all(&*pool)
    .await
    .unwrap();
    let mut expected = vec![b.id.to_string(), c.id.to_string()];
    expected.sort();
    assert_eq!(edges.into_iter().map(|e| e.0).collect::<Vec<_>>(), expected);
    assert!(repo.get_dependents(a.id).await.unwrap().is_empty());
    assert_eq!(repo.get_dependents(c.id).await.unwrap()[0].id, d.id);
}

#[tokio::test]
async fn an_update_that_fails_leaves_the_row_and_edges_unchanged() {
    let (pool, repo) = repo().await;
    let a = task("a");
    repo.insert(a.clone()).await.unwrap();
    let d = Task {
        dependencies: Some(vec![a.id]),
        ..task("d")
    };
    repo.insert(d.clone()).await.unwrap();
    let before = snapshot(&pool).await;
    let err = repo
        .update(Task {
            summary: "changed".into(),
            dependencies: Some(vec![Uuid::new_v4()]),
            ..d.clone()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            DatabaseError::ForeignKeyViolation {
                reference: "dependency",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(snapshot(&pool).await, before);
    assert_eq!(repo.get(d.id).await.unwrap().unwrap().summary, "d");
}

#[tokio::test]
async fn deleting_a_task_removes_it_from_its_dependents_lists_and_orphans_its_children() {
    let (pool, repo) = repo().await;
    let (a, b) = (task("a"), task("b"));
    repo.insert(a.clone()).await.unwrap();
    repo.insert(b.clone()).await.unwrap();
    let d = Task {
        dependencies: Some(vec![a.id, b.id]),
        ..task("d")
    };
    let child = Task {
        parent_task_id: Some(a.id),
        ..task("child")
    };
    repo.insert(d.clone()).await.unwrap();
    repo.insert(child.clone()).await.unwrap();
    repo.delete(a.id).await.unwrap();
    assert_eq!(repo.get(a.id).await.unwrap(), None);
    let d = repo.get(d.id).await.unwrap().unwrap();
    assert_eq!(d.dependencies, Some(vec![b.id]));
    assert_eq!(count_rows(&pool, "task_dependencies").await, 1);
    // ON DELETE SET NULL on parent_task_id.
    assert_eq!(
        repo.get(child.id).await.unwrap().unwrap().parent_task_id,
        None
    );
}

#[tokio::test]
async fn deleting_an_unknown_task_is_not_found_and_changes_nothing() {
    let (pool, repo) = repo().await;
    repo.insert(task("stays")).await.unwrap();
    let before = snapshot(&pool).await;
    assert!(repo
        .delete(Uuid::new_v4())
        .await
        .unwrap_err()
        .is_not_found());
    assert_eq!(snapshot(&pool).await, before);
}

#[tokio::test]
async fn update_status_sets_started_and_completed_times_from_the_clock() {
    let (pool, _) = repo().await;
    let clock = ManualClock::new();
    let repo = TaskRepositoryImpl::with_clock(pool.clone(), clock.clone());
    let t = task("timed");
    repo.insert(t.clone()).await.unwrap();
    let start = abathur::domain::clock::Clock::now(&*clock);
    repo.update_status(t.id, TaskStatus::Running).await.unwrap();
    clock.advance(Duration::seconds(3));
    repo.update_status(t.id, TaskStatus::Completed)
        .await
        .unwrap();
    let stored = repo.get(t.id).await.unwrap().unwrap();
    assert_eq!(stored.started_at, Some(start));
    assert_eq!(stored.completed_at, Some(start + Duration::seconds(3)));
    assert_eq!(stored.last_updated_at, start + Duration::seconds(3));
    assert!(repo
        .update_status(Uuid::new_v4(), TaskStatus::Ready)
        .await
        .unwrap_err()
        .is_not_found());
}

#[tokio::test]
async fn ready_tasks_come_by_calculated_priority_then_age_then_id() {
    let (_pool, repo) = repo().await;
    let base = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let mk = |summary: &str, cp: f64, minute: i64, status: TaskStatus| Task {
        calculated_priority: cp,
        submitted_at: base + Duration::minutes(minute),
        status,
        ..task(summary)
    };
    for t in [
        mk("low-old", 1.0, 0, TaskStatus::Ready),
        mk("high-new", 9.0, 5, TaskStatus::Ready),
        mk("high-old", 9.0, 1, TaskStatus::Ready),
        mk("blocked", 10.0, 0, TaskStatus::Blocked),
        mk("running", 10.0, 0, TaskStatus::Running),
    ] {
        repo.insert(t).await.unwrap();
    }
    let ready: Vec<String> = repo
        .get_ready_tasks(10)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.summary)
        .collect();
    assert_eq!(ready, ["high-old", "high-new", "low-old"]);
    assert_eq!(repo.get_ready_tasks(1).await.unwrap().len(), 1);
    assert!(repo.get_ready_tasks(0).await.unwrap().is_empty());
}

#[tokio::test]
async fn list_and_count_apply_every_filter() {
    let (pool, repo) = repo().await;
    let sessions = SessionRepositoryImpl::new(pool.clone());
    let session = Session::new("app", "user", Utc::now());
    sessions.create(session.clone()).await.unwrap();
    let parent = task("parent");
    repo.insert(parent.clone()).await.unwrap();
    let base = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    for i in 0..10u8 {
        repo.insert(Task {
            priority: i,
            calculated_priority: f64::from(i),
            status: if i % 2 == 0 {
                TaskStatus::Ready
            } else {
                TaskStatus::Blocked
            },
            agent_type: if i < 5 {
                "coder".into()
            } else {
                "tester".into()
            },
            feature_branch: (i == 3).then(|| "feature/three".to_string()),
            session_id: (i == 4).then_some(session.id),
            source: if i == 5 {
                TaskSource::AgentPlanner
            } else {
                TaskSource::Human
            },
            parent_task_id: (i >= 8).then_some(parent.id),
            submitted_at: base + Duration::hours(i64::from(i)),
            ..task(&format!("t{i}"))
        })
        .await
        .unwrap();
    }
    let names = |tasks: Vec<Task>| tasks.into_iter().map(|t| t.summary).collect::<Vec<_>>();
    let f = |filters: TaskFilters| filters;
    let cases: Vec<(TaskFilters, Vec<&str>)> = vec![
        (
            f(TaskFilters {
                status: Some(TaskStatus::Ready),
                agent_type: Some("coder".into()),
                ..Default::default()
            }),
            vec!["t4", "t2", "t0"],
        ),
        (
            f(TaskFilters {
                feature_branch: Some("feature/three".into()),
                ..Default::default()
            }),
            vec!["t3"],
        ),
        (
            f(TaskFilters {
                session_id: Some(session.id),
                ..Default::default()
            }),
            vec!["t4"],
        ),
        (
            f(TaskFilters {
                source: Some(TaskSource::AgentPlanner),
                ..Default::default()
            }),
            vec!["t5"],
        ),
        (
            f(TaskFilters {
                parent_task_id: Some(parent.id),
                ..Default::default()
            }),
            vec!["t9", "t8"],
        ),
        (
            f(TaskFilters {
                min_priority: Some(3),
                max_priority: Some(5),
                agent_type: Some("coder".into()),
                ..Default::default()
            }),
            vec!["t4", "t3"],
        ),
        (
            f(TaskFilters {
                submitted_after: Some(base + Duration::hours(7)),
                submitted_before: Some(base + Duration::hours(9)),
                ..Default::default()
            }),
            vec!["t8", "t7"],
        ),
        (
            f(TaskFilters {
                agent_type: Some("tester".into()),
                limit: Some(2),
                offset: Some(1),
                ..Default::default()
            }),
            vec!["t8", "t7"],
        ),
    ];
    for (filters, expected) in cases {
        assert_eq!(
            names(repo.list(filters.clone()).await.unwrap()),
            expected,
            "{filters:?}"
        );
        let unpaged = TaskFilters {
            limit: None,
            offset: None,
            ..filters.clone()
        };
        assert_eq!(
            repo.count(filters.clone()).await.unwrap(),
            repo.list(unpaged).await.unwrap().len() as i64,
            "{filters:?}"
        );
    }
    assert_eq!(repo.count(TaskFilters::default()).await.unwrap(), 11);
    assert_eq!(
        names(repo.get_by_parent(parent.id).await.unwrap()),
        ["t9", "t8"]
    );
    assert_eq!(
        names(repo.get_by_session(session.id).await.unwrap()),
        ["t4"]
    );
}

#[tokio::test]
async fn sql_metacharacters_in_every_filter_are_plain_values() {
    let (pool, repo) = repo().await;
    repo.insert(task("victim")).await.unwrap();
    let before = snapshot(&pool).await;
    for evil in [
        "' OR '1'='1",
        "x'; DROP TABLE tasks; --",
        "%",
        "_",
        "\" OR 1=1 --",
        "\\",
        "\0",
    ] {
        let filters = TaskFilters {
            agent_type: Some(evil.into()),
            feature_branch: Some(evil.into()),
            ..Default::default()
        };
        assert!(
            repo.list(filters.clone()).await.unwrap().is_empty(),
            "{evil:?}"
        );
        assert_eq!(repo.count(filters).await.unwrap(), 0, "{evil:?}");
        let only_agent = TaskFilters {
            agent_type: Some(evil.into()),
            ..Default::default()
        };
        assert!(repo.list(only_agent).await.unwrap().is_empty(), "{evil:?}");
    }
    assert_eq!(snapshot(&pool).await, before);
}

#[tokio::test]
async fn negative_limits_and_inverted_priority_ranges_are_rejected() {
    let (_pool, repo) = repo().await;
    let err = repo
        .list(TaskFilters {
            limit: Some(-1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, DatabaseError::Validation(ref e) if e.field == "limit"),
        "{err:?}"
    );
    let err = repo
        .list(TaskFilters {
            offset: Some(-5),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, DatabaseError::Validation(ref e) if e.field == "offset"),
        "{err:?}"
    );
    let err = repo
        .count(TaskFilters {
            min_priority: Some(8),
            max_priority: Some(2),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, DatabaseError::Validation(ref e) if e.field == "min_priority"),
        "{err:?}"
    );
}

#[tokio::test]
async fn get_dependents_follows_the_edge_table() {
    let (_pool, repo) = repo().await;
    let root = task("root");
    repo.insert(root.clone()).await.unwrap();
    let mut dependents = Vec::new();
    for i in 0..3 {
        let t = Task {
            dependencies: Some(vec![root.id]),
            ..task(&format!("dep{i}"))
        };
        repo.insert(t.clone()).await.unwrap();
        dependents.push(t.id);
    }
    repo.insert(task("unrelated")).await.unwrap();
    let mut found: Vec<Uuid> = repo
        .get_dependents(root.id)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    found.sort();
    dependents.sort();
    assert_eq!(found, dependents);
    assert!(repo
        .get_dependents(Uuid::new_v4())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_batch_may_refer_to_its_own_members_in_any_order() {
    let (pool, repo) = repo().await;
    let a = task("a");
    let b = Task {
        dependencies: Some(vec![a.id]),
        parent_task_id: Some(a.id),
        ..task("b")
    };
    // The dependent comes first.
    repo.insert_batch(vec![b.clone(), a.clone()]).await.unwrap();
    assert_eq!(repo.get(b.id).await.unwrap().unwrap(), b);
    assert_eq!(count_rows(&pool, "task_dependencies").await, 1);
}

#[tokio::test]
async fn a_batch_of_more_tasks_than_one_statement_can_bind_goes_in_whole() {
    let (pool, repo) = repo().await;
    let tasks: Vec<Task> = (0..3_000).map(|i| task(&format!("bulk {i}"))).collect();
    repo.insert_batch(tasks).await.unwrap();
    assert_eq!(count_rows(&pool, "tasks").await, 3_000);
}

#[tokio::test]
async fn a_batch_with_one_bad_member_writes_nothing() {
    let (pool, repo) = repo().await;
    repo.insert(task("existing")).await.unwrap();
    let before = snapshot(&pool).await;
    let mut batch: Vec<Task> = (0..2_000).map(|i| task(&format!("bulk {i}"))).collect();
    let missing = Uuid::new_v4();
    batch[1_500].dependencies = Some(vec![missing]);
    let err = repo.insert_batch(batch.clone()).await.unwrap_err();
    assert!(
        matches!(&err, DatabaseError::ForeignKeyViolation { reference: "dependency", id: Some(id), .. } if *id == missing.to_string()),
        "{err:?}"
    );
    assert_eq!(snapshot(&pool).await, before);

    batch[1_500].dependencies = None;
    batch[1_999].priority = 11;
    assert_validation(repo.insert_batch(batch.clone()).await, "priority");
    batch[1_999].priority = 1;
    batch[1_000].id = batch[10].id;
    assert_validation(repo.insert_batch(batch).await, "id");
    assert_eq!(snapshot(&pool).await, before);
}

#[tokio::test]
async fn a_batch_that_repeats_a_stored_id_is_a_unique_violation_naming_it() {
    let (pool, repo) = repo().await;
    let existing = task("existing");
    repo.insert(existing.clone()).await.unwrap();
    let err = repo
        .insert_batch(vec![task("new"), existing.clone()])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DatabaseError::UniqueViolation { id, .. } if *id == existing.id.to_string()),
        "{err:?}"
    );
    assert_eq!(count_rows(&pool, "tasks").await, 1);
}

#[tokio::test]
async fn a_row_edited_by_hand_into_an_unparseable_state_is_reported_not_skipped() {
    let (pool, repo) = repo().await;
    let t = task("to corrupt");
    repo.insert(t.clone()).await.unwrap();
    let healthy = task("healthy");
    repo.insert(healthy.clone()).await.unwrap();
    // A status the CHECK allows cannot be unparseable, so go around the CHECKs the way a hand
    // edit with checks off would.
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("PRAGMA ignore_check_constraints = ON")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("UPDATE tasks SET status = 'finished' WHERE id = ?")
        .bind(t.id.to_string())
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("PRAGMA ignore_check_constraints = OFF")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let err = repo.get(t.id).await.unwrap_err();
    match &err {
        DatabaseError::CorruptRow {
            table, id, column, ..
        } => {
            assert_eq!(
                (*table, id.as_str(), *column),
                ("tasks", t.id.to_string().as_str(), "status")
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("finished"), "{err}");
    // A listing that meets the row fails too, rather than quietly leaving it out.
    assert!(matches!(
        repo.list(TaskFilters::default()).await.unwrap_err(),
        DatabaseError::CorruptRow { .. }
    ));
    assert_eq!(
        repo.get(healthy.id).await.unwrap().unwrap().summary,
        "healthy"
    );
}

#[tokio::test]
async fn a_hand_edited_timestamp_or_dependency_list_is_a_corrupt_row() {
    let (pool, repo) = repo().await;
    let t = task("timestamps");
    repo.insert(t.clone()).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("PRAGMA ignore_check_constraints = ON")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("UPDATE tasks SET submitted_at = '2026-11-28 03:04:05' WHERE id = ?")
        .bind(t.id.to_string())
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("PRAGMA ignore_check_constraints = OFF")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let err = repo.get(t.id).await.unwrap_err();
    assert!(
        matches!(
            err,
            DatabaseError::CorruptRow {
                column: "submitted_at",
                ..
            }
        ),
        "{err:?}"
    );

    let u = task("deps");
    repo.insert(u.clone()).await.unwrap();
    sqlx::query("UPDATE tasks SET dependencies = '[\"not-a-uuid\"]' WHERE id = ?")
        .bind(u.id.to_string())
        .execute(&*pool)
        .await
        .unwrap();
    let err = repo.get(u.id).await.unwrap_err();
    assert!(
        matches!(
            err,
            DatabaseError::CorruptRow {
                column: "dependencies",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_repository_is_usable_as_a_shared_trait_object() {
    let (_pool, repo) = repo().await;
    let shared: Arc<dyn TaskRepository> = Arc::new(repo);
    let t = task("dyn");
    shared.insert(t.clone()).await.unwrap();
    assert!(shared.get(t.id).await.unwrap().is_some());
}

fn arb_timestamp() -> impl Strategy<Value = chrono::DateTime<Utc>> {
    // Years 0000-9999, microsecond precision: the range and precision the store keeps.
    (-62_167_219_200i64..253_402_300_799i64, 0u32..1_000_000u32)
        .prop_map(|(secs, micros)| Utc.timestamp_opt(secs, micros * 1_000).unwrap())
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".*".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(".*", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Any text without NUL, which every text field refuses.
fn arb_text() -> impl Strategy<Value = String> {
    "[^\\x00]{0,40}"
}

prop_compose! {
    fn arb_task()(
        summary in "[^\\s\\x00][^\\x00]{0,139}",
        description in arb_text(),
        agent_type in "[a-z][a-z-]{0,20}",
        priority in 0u8..=10,
        calculated_priority in any::<f64>().prop_filter("finite", |f| f.is_finite()),
        status in prop::sample::select(TaskStatus::ALL),
        dependency_type in prop::sample::select(DependencyType::ALL),
        dependency_depth in any::<u32>(),
        input_data in prop::option::of(arb_json()),
        result_data in prop::option::of(arb_json()),
        error_message in prop::option::of(arb_text()),
        retry_count in any::<u32>(),
        max_retries in any::<u32>(),
        max_execution_timeout_seconds in 1u32..,
        submitted_at in arb_timestamp(),
        started_at in prop::option::of(arb_timestamp()),
        completed_at in prop::option::of(arb_timestamp()),
        last_updated_at in arb_timestamp(),
        created_by in prop::option::of(arb_text()),
        source in prop::sample::select(TaskSource::ALL),
        deadline in prop::option::of(arb_timestamp()),
        estimated_duration_seconds in prop::option::of(any::<u32>()),
        feature_branch in prop::option::of(arb_text()),
        task_branch in prop::option::of(arb_text()),
        worktree_path in prop::option::of(arb_text()),
        empty_dependencies in any::<bool>(),
    ) -> Task {
        Task {
            id: Uuid::new_v4(),
            summary, description, agent_type, priority, calculated_priority, status,
            dependencies: empty_dependencies.then(Vec::new),
            dependency_type, dependency_depth, input_data, result_data, error_message,
            retry_count, max_retries, max_execution_timeout_seconds, submitted_at, started_at,
            completed_at, last_updated_at, created_by, parent_task_id: None, session_id: None,
            source, deadline, estimated_duration_seconds, feature_branch, task_branch,
            worktree_path,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn any_valid_task_reads_back_equal_field_by_field(t in arb_task()) {
        prop_assume!(t.validate().is_ok());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let stored = rt.block_on(async {
            let (_pool, repo) = repo().await;
            repo.insert(t.clone()).await.unwrap();
            repo.get(t.id).await.unwrap().unwrap()
        });
        prop_assert_eq!(stored, t);
    }
}

#[tokio::test]
async fn text_with_a_nul_character_is_rejected_in_every_text_field() {
    let (pool, repo) = repo().await;
    let cases: Vec<(&str, Task)> = vec![
        (
            "summary",
            Task {
                summary: "a\0b".into(),
                ..task("x")
            },
        ),
        (
            "description",
            Task {
                description: "a\0b".into(),
                ..task("x")
            },
        ),
        (
            "agent_type",
            Task {
                agent_type: "a\0b".into(),
                ..task("x")
            },
        ),
        (
            "created_by",
            Task {
                created_by: Some("\0".into()),
                ..task("x")
            },
        ),
        (
            "worktree_path",
            Task {
                worktree_path: Some("/tmp/\0".into()),
                ..task("x")
            },
        ),
    ];
    for (field, t) in cases {
        assert_validation(repo.insert(t).await, field);
    }
    assert_eq!(count_rows(&pool, "tasks").await, 0);
}

#[tokio::test]
async fn a_timestamp_beyond_year_9999_is_rejected() {
    let (pool, repo) = repo().await;
    assert_validation(
        repo.insert(Task {
            deadline: Some(Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap()),
            ..task("far future")
        })
        .await,
        "deadline",
    );
    assert_eq!(count_rows(&pool, "tasks").await, 0);
}

/// A task's history as the queue reads it: `(from, to, actor, reason)` per event.
async fn history(pool: &SqlitePool, id: Uuid) -> Vec<(Option<TaskStatus>, TaskStatus, String)> {
    QueueStoreImpl::new(pool.clone())
        .history(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            assert_eq!(e.actor, "repository");
            (e.from, e.to, e.reason.unwrap_or_default())
        })
        .collect()
}

#[tokio::test]
async fn every_status_the_repository_sets_is_in_the_history() {
    let (pool, repo) = repo().await;
    let t = task("tracked");
    repo.insert(t.clone()).await.unwrap();
    repo.update_status(t.id, TaskStatus::Running).await.unwrap();
    let done = Task {
        status: TaskStatus::Completed,
        ..t.clone()
    };
    repo.update(done.clone()).await.unwrap();
    // Writes that leave the status as it is change no status, and add no event.
    repo.update(Task {
        summary: "renamed".into(),
        ..done
    })
    .await
    .unwrap();
    repo.update_status(t.id, TaskStatus::Completed)
        .await
        .unwrap();
    assert_eq!(
        history(&pool, t.id).await,
        vec![
            (None, TaskStatus::Pending, "inserted".to_string()),
            (
                Some(TaskStatus::Pending),
                TaskStatus::Running,
                "status set".to_string()
            ),
            (
                Some(TaskStatus::Running),
                TaskStatus::Completed,
                "updated".to_string()
            ),
        ]
    );
}

#[tokio::test]
async fn every_member_of_a_batch_starts_its_history_with_its_status() {
    let (pool, repo) = repo().await;
    let ready = Task {
        status: TaskStatus::Ready,
        ..task("ready")
    };
    let blocked = Task {
        status: TaskStatus::Blocked,
        dependencies: Some(vec![ready.id]),
        ..task("blocked")
    };
    repo.insert_batch(vec![blocked.clone(), ready.clone()])
        .await
        .unwrap();
    for (id, status) in [
        (ready.id, TaskStatus::Ready),
        (blocked.id, TaskStatus::Blocked),
    ] {
        assert_eq!(
            history(&pool, id).await,
            vec![(None, status, "inserted".to_string())]
        );
    }
}

#[tokio::test]
async fn the_history_is_dated_by_the_repositorys_clock() {
    let (pool, _) = repo().await;
    let clock = ManualClock::new();
    let repo = TaskRepositoryImpl::with_clock(pool.clone(), clock.clone());
    let t = task("dated");
    repo.insert(t.clone()).await.unwrap();
    let start = abathur::domain::clock::Clock::now(&*clock);
    clock.advance(Duration::seconds(5));
    repo.update_status(t.id, TaskStatus::Cancelled)
        .await
        .unwrap();
    let at: Vec<_> = QueueStoreImpl::new(pool.clone())
        .history(t.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.at)
        .collect();
    assert_eq!(at, vec![start, start + Duration::seconds(5)]);
}

#[tokio::test]
async fn a_deleted_task_takes_its_history_with_it() {
    let (pool, repo) = repo().await;
    let t = task("gone");
    repo.insert(t.clone()).await.unwrap();
    repo.update_status(t.id, TaskStatus::Running).await.unwrap();
    repo.delete(t.id).await.unwrap();
    let err = QueueStoreImpl::new(pool.clone())
        .history(t.id)
        .await
        .unwrap_err();
    assert!(
        matches!(err, QueueError::TaskNotFound(id) if id == t.id),
        "{err:?}"
    );
    assert_eq!(count_rows(&pool, "task_events").await, 0);
}

/// The dependency list of a task as stored, and its edges, both sorted.
async fn list_and_edges(pool: &SqlitePool, id: Uuid) -> (Option<Vec<String>>, Vec<String>) {
    let list: Option<String> = sqlx::query_scalar("SELECT dependencies FROM tasks WHERE id = ?")
        .bind(id.to_string())
        .fetch_one(pool)
        .await
        .unwrap();
    let list = list.map(|text| {
        let mut ids: Vec<String> = serde_json::from_str(&text).unwrap();
        ids.sort();
        ids
    });
    let edges = sqlx::query_scalar(
        "SELECT depends_on_task_id FROM task_dependencies WHERE task_id = ? ORDER BY 1",
    )
    .bind(id.to_string())
    .fetch_all(pool)
    .await
    .unwrap();
    (list, edges)
}

#[tokio::test]
async fn every_update_keeps_the_dependency_list_and_the_edges_in_step() {
    let (pool, repo) = repo().await;
    let (a, b) = (task("a"), task("b"));
    repo.insert(a.clone()).await.unwrap();
    repo.insert(b.clone()).await.unwrap();
    let mut d = Task {
        dependencies: Some(vec![a.id]),
        ..task("d")
    };
    repo.insert(d.clone()).await.unwrap();
    let mut ids = vec![a.id.to_string(), b.id.to_string()];
    ids.sort();
    for (deps, expected) in [
        (Some(vec![a.id, b.id]), ids.clone()),
        (Some(vec![b.id]), vec![b.id.to_string()]),
        (Some(vec![]), vec![]),
        (Some(vec![a.id]), vec![a.id.to_string()]),
    ] {
        d.dependencies = deps;
        repo.update(d.clone()).await.unwrap();
        assert_eq!(
            list_and_edges(&pool, d.id).await,
            (Some(expected.clone()), expected)
        );
    }
    d.dependencies = None;
    repo.update(d.clone()).await.unwrap();
    assert_eq!(list_and_edges(&pool, d.id).await, (None, vec![]));
}

#[tokio::test]
async fn an_update_that_would_close_a_cycle_is_refused_and_changes_nothing() {
    let (pool, repo) = repo().await;
    let a = task("a");
    let b = Task {
        dependencies: Some(vec![a.id]),
        ..task("b")
    };
    let c = Task {
        dependencies: Some(vec![b.id]),
        ..task("c")
    };
    for t in [&a, &b, &c] {
        repo.insert(t.clone()).await.unwrap();
    }
    let before = snapshot(&pool).await;
    for closing in [b.id, c.id] {
        let err = repo
            .update(Task {
                summary: "changed".into(),
                dependencies: Some(vec![closing]),
                ..a.clone()
            })
            .await
            .unwrap_err();
        match err {
            DatabaseError::Validation(e) => {
                assert_eq!(e.field, "dependencies");
                assert!(e.message.contains(&closing.to_string()), "{e}");
                assert!(e.message.contains("cycle"), "{e}");
            }
            other => panic!("expected a cycle to be refused, got {other:?}"),
        }
        assert_eq!(snapshot(&pool).await, before);
    }
    let err = repo
        .update(Task {
            dependencies: Some(vec![a.id]),
            ..a.clone()
        })
        .await;
    assert_validation(err, "dependencies");
    assert_eq!(snapshot(&pool).await, before);
    assert_eq!(repo.get(a.id).await.unwrap().unwrap().summary, "a");
    // Depending on a task that shares a dependency is no cycle.
    let d = Task {
        dependencies: Some(vec![a.id]),
        ..task("d")
    };
    repo.insert(d.clone()).await.unwrap();
    repo.update(Task {
        dependencies: Some(vec![a.id, b.id]),
        ..d
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_batch_whose_members_wait_on_each_other_in_a_loop_is_refused() {
    let (pool, repo) = repo().await;
    let (mut x, mut y, mut z) = (task("x"), task("y"), task("z"));
    x.dependencies = Some(vec![z.id]);
    y.dependencies = Some(vec![x.id]);
    z.dependencies = Some(vec![y.id]);
    let result = repo.insert_batch(vec![x, y, z]).await;
    assert_validation(result, "dependencies");
    assert_eq!(count_rows(&pool, "tasks").await, 0);
}

#[tokio::test]
async fn a_pruned_dependency_leaves_the_lists_of_the_tasks_that_waited_for_it() {
    let (pool, repo) = repo().await;
    let finished = Utc::now() - Duration::hours(2);
    let a = Task {
        status: TaskStatus::Completed,
        completed_at: Some(finished),
        ..task("a")
    };
    let b = Task {
        status: TaskStatus::Completed,
        completed_at: Some(finished),
        ..task("b")
    };
    let d = Task {
        status: TaskStatus::Failed,
        completed_at: Some(finished),
        dependencies: Some(vec![a.id, b.id]),
        ..task("d")
    };
    for t in [&a, &b, &d] {
        repo.insert(t.clone()).await.unwrap();
    }
    let report = QueueStoreImpl::new(pool.clone())
        .prune(&PruneRequest {
            finished_before: Utc::now() - Duration::hours(1),
            statuses: vec![TaskStatus::Completed],
            batch_size: 1,
        })
        .await
        .unwrap();
    assert_eq!(report.tasks, 2);
    assert_eq!(list_and_edges(&pool, d.id).await, (Some(vec![]), vec![]));
    assert_eq!(
        repo.get(d.id).await.unwrap().unwrap().dependencies,
        Some(vec![])
    );
}
