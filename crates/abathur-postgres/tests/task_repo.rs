//! The task repository and the id lookup on PostgreSQL, beyond the conformance suite: prefix
//! lookups answered from the primary key, NUL characters refused with nothing stored, and
//! concurrent updates that cannot close a cycle between them.

use std::sync::Arc;

use abathur_core::models::{Task, TaskStatus};
use abathur_core::ports::{IdKind, IdLookup, TaskRepository};
use abathur_postgres::testing::TestDatabase;
use abathur_postgres::{PgConfig, PgIdLookup, PgTaskRepository};
use abathur_core::error::DatabaseError;
use serde_json::json;
use uuid::Uuid;

fn pg_config() -> PgConfig {
    PgConfig {
        max_connections: 4,
        ..PgConfig::default()
    }
}

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
