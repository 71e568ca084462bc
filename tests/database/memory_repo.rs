//! The memory store: every method of `MemoryRepository`, versioning across updates, deletes and
//! re-adds, literal prefix search, and rows that do not parse.

use std::sync::Arc;

use abathur::domain::clock::Clock;
use abathur::domain::error::DatabaseError;
use abathur::domain::models::{Memory, MemoryType, NewMemory};
use abathur::domain::ports::MemoryRepository;
use abathur::infrastructure::database::MemoryRepositoryImpl;
use chrono::Duration;
use serde_json::{json, Value};
use sqlx::SqlitePool;

use crate::helpers::database::{file_db, test_db, TestPool};
use crate::helpers::ManualClock;

async fn store() -> (TestPool, MemoryRepositoryImpl, Arc<ManualClock>) {
    let pool = test_db().await;
    let clock = ManualClock::new();
    let repo = MemoryRepositoryImpl::with_clock(pool.clone(), clock.clone());
    (pool, repo, clock)
}

fn new_memory(namespace: &str, key: &str, value: Value) -> NewMemory {
    NewMemory {
        namespace: namespace.into(),
        key: key.into(),
        value,
        memory_type: MemoryType::Semantic,
        metadata: Some(json!({"source": "test", "tags": ["a", "b"]})),
        created_by: "agent-1".into(),
    }
}

fn typed(namespace: &str, key: &str, memory_type: MemoryType) -> NewMemory {
    NewMemory {
        memory_type,
        ..new_memory(namespace, key, json!(key))
    }
}

/// Every version of every memory, column by column as SQLite quotes it, to show a failed write
/// changed nothing.
async fn memory_rows(pool: &SqlitePool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT quote(namespace) || ' ' || quote(key) || ' ' || quote(version) || ' '
             || quote(value) || ' ' || quote(memory_type) || ' ' || quote(is_deleted) || ' '
             || quote(metadata) || ' ' || quote(created_by) || ' ' || quote(updated_by) || ' '
             || quote(created_at) || ' ' || quote(updated_at)
         FROM memories ORDER BY namespace, key, version",
    )
    .fetch_all(pool)
    .await
    .expect("read memories")
}

#[track_caller]
fn assert_keys(memories: &[Memory], want: &[(&str, &str)]) {
    let got: Vec<(&str, &str)> = memories
        .iter()
        .map(|m| (m.namespace.as_str(), m.key.as_str()))
        .collect();
    assert_eq!(got, want);
}

#[track_caller]
fn assert_versions(memories: &[Memory], want: &[(u32, bool)]) {
    let got: Vec<(u32, bool)> = memories.iter().map(|m| (m.version, m.is_deleted)).collect();
    assert_eq!(got, want, "(version, is_deleted)");
}

#[track_caller]
fn assert_not_found<T: std::fmt::Debug>(result: Result<T, DatabaseError>, id: &str) {
    match result {
        Err(DatabaseError::NotFound {
            entity,
            id: missing,
        }) => {
            assert_eq!((entity, missing.as_str()), ("memory", id));
        }
        other => panic!("expected memory {id} not found, got {other:?}"),
    }
}

#[track_caller]
fn assert_validation<T: std::fmt::Debug>(result: Result<T, DatabaseError>, field: &str) {
    match result {
        Err(DatabaseError::Validation(e)) => assert_eq!(e.field, field, "{e}"),
        other => panic!("expected a validation error on {field}, got {other:?}"),
    }
}

#[track_caller]
fn assert_corrupt(err: DatabaseError, id: &str, column: &str) {
    match err {
        DatabaseError::CorruptRow {
            table,
            id: row,
            column: col,
            ..
        } => assert_eq!((table, row.as_str(), col), ("memories", id, column)),
        other => panic!("expected a corrupt memories row, got {other:?}"),
    }
}

#[tokio::test]
async fn adding_a_memory_stores_version_one_stamped_by_the_clock() {
    let (_pool, repo, clock) = store().await;
    let new = new_memory(
        "project/alpha",
        "language",
        json!({"name": "rust", "since": 2015}),
    );

    let added = repo.add(new.clone()).await.unwrap();

    let want = Memory {
        namespace: new.namespace,
        key: new.key,
        value: new.value,
        memory_type: new.memory_type,
        version: 1,
        is_deleted: false,
        metadata: new.metadata,
        created_by: new.created_by.clone(),
        updated_by: new.created_by,
        created_at: clock.now(),
        updated_at: clock.now(),
    };
    assert_eq!(added, want);
    assert_eq!(
        repo.get("project/alpha", "language").await.unwrap(),
        Some(want)
    );
}

#[tokio::test]
async fn a_memory_without_metadata_reads_back_without_metadata() {
    let (_pool, repo, _clock) = store().await;
    let new = NewMemory {
        metadata: None,
        ..new_memory("ns", "k", json!([1, 2.5, "three", null, true]))
    };

    repo.add(new.clone()).await.unwrap();

    let got = repo.get("ns", "k").await.unwrap().unwrap();
    assert_eq!((got.value, got.metadata), (new.value, None));
}

#[tokio::test]
async fn getting_a_key_never_added_is_none() {
    let (_pool, repo, _clock) = store().await;
    repo.add(new_memory("ns", "k", json!(1))).await.unwrap();

    assert_eq!(repo.get("ns", "other").await.unwrap(), None);
    assert_eq!(repo.get("other", "k").await.unwrap(), None);
}

#[tokio::test]
async fn adding_a_live_key_again_is_a_unique_violation_and_changes_nothing() {
    let (pool, repo, clock) = store().await;
    repo.add(new_memory("ns", "k", json!("first")))
        .await
        .unwrap();
    repo.update("ns", "k", json!("second"), "agent-2")
        .await
        .unwrap();
    let before = memory_rows(&pool).await;

    clock.advance(Duration::seconds(1));
    let err = repo
        .add(typed("ns", "k", MemoryType::Episodic))
        .await
        .unwrap_err();

    match err {
        DatabaseError::UniqueViolation { entity, id } => {
            assert_eq!((entity, id.as_str()), ("memory", "ns/k"));
        }
        other => panic!("expected a unique violation, got {other:?}"),
    }
    assert_eq!(memory_rows(&pool).await, before);
}

/// Adds one valid memory, then `bad`, which must fail validation on `field` and write nothing.
async fn add_is_rejected(bad: NewMemory, field: &str) {
    let (pool, repo, _clock) = store().await;
    repo.add(new_memory("ns", "k", json!(1))).await.unwrap();
    let before = memory_rows(&pool).await;

    assert_validation(repo.add(bad).await, field);

    assert_eq!(memory_rows(&pool).await, before);
}

#[tokio::test]
async fn adding_a_memory_with_an_empty_namespace_is_rejected_and_writes_nothing() {
    add_is_rejected(new_memory("", "k2", json!(1)), "namespace").await;
}

#[tokio::test]
async fn adding_a_memory_with_a_blank_namespace_is_rejected_and_writes_nothing() {
    add_is_rejected(new_memory(" \t", "k2", json!(1)), "namespace").await;
}

#[tokio::test]
async fn adding_a_memory_with_an_empty_key_is_rejected_and_writes_nothing() {
    add_is_rejected(new_memory("ns", "", json!(1)), "key").await;
}

#[tokio::test]
async fn adding_a_memory_with_an_empty_author_is_rejected_and_writes_nothing() {
    let bad = NewMemory {
        created_by: String::new(),
        ..new_memory("ns", "k2", json!(1))
    };
    add_is_rejected(bad, "created_by").await;
}

#[tokio::test]
async fn updating_a_memory_adds_the_next_version_keeping_type_metadata_and_author() {
    let (_pool, repo, clock) = store().await;
    let v1 = repo
        .add(NewMemory {
            memory_type: MemoryType::Procedural,
            ..new_memory("ns", "k", json!("first"))
        })
        .await
        .unwrap();

    clock.advance(Duration::minutes(5));
    let v2 = repo
        .update("ns", "k", json!({"second": true}), "agent-2")
        .await
        .unwrap();

    let want = Memory {
        value: json!({"second": true}),
        version: 2,
        updated_by: "agent-2".into(),
        updated_at: clock.now(),
        ..v1.clone()
    };
    assert_eq!(v2, want);
    assert_eq!(repo.get("ns", "k").await.unwrap(), Some(want));
    assert_eq!(repo.get_version("ns", "k", 1).await.unwrap(), Some(v1));
}

#[tokio::test]
async fn getting_a_key_gives_its_latest_version() {
    let (_pool, repo, clock) = store().await;
    repo.add(new_memory("ns", "k", json!(1))).await.unwrap();
    for n in 2..=4 {
        clock.advance(Duration::seconds(1));
        repo.update("ns", "k", json!(n), "agent-2").await.unwrap();
    }

    let got = repo.get("ns", "k").await.unwrap().unwrap();

    assert_eq!((got.version, got.value), (4, json!(4)));
}

#[tokio::test]
async fn listing_versions_gives_every_version_oldest_first() {
    let (_pool, repo, _clock) = store().await;
    repo.add(new_memory("ns", "k", json!("a"))).await.unwrap();
    repo.update("ns", "k", json!("b"), "agent-2").await.unwrap();
    repo.update("ns", "k", json!("c"), "agent-3").await.unwrap();
    repo.add(new_memory("ns", "other", json!("x")))
        .await
        .unwrap();

    let versions = repo.list_versions("ns", "k").await.unwrap();

    assert_versions(&versions, &[(1, false), (2, false), (3, false)]);
    let values: Vec<&Value> = versions.iter().map(|m| &m.value).collect();
    assert_eq!(values, [&json!("a"), &json!("b"), &json!("c")]);
    let authors: Vec<&str> = versions.iter().map(|m| m.updated_by.as_str()).collect();
    assert_eq!(authors, ["agent-1", "agent-2", "agent-3"]);
}

#[tokio::test]
async fn listing_versions_of_a_key_never_added_is_empty() {
    let (_pool, repo, _clock) = store().await;

    assert_eq!(
        repo.list_versions("ns", "k").await.unwrap(),
        Vec::<Memory>::new()
    );
}

#[tokio::test]
async fn getting_a_version_gives_that_version_and_none_for_versions_that_never_were() {
    let (_pool, repo, _clock) = store().await;
    let v1 = repo.add(new_memory("ns", "k", json!("a"))).await.unwrap();
    let v2 = repo.update("ns", "k", json!("b"), "agent-2").await.unwrap();

    assert_eq!(repo.get_version("ns", "k", 1).await.unwrap(), Some(v1));
    assert_eq!(repo.get_version("ns", "k", 2).await.unwrap(), Some(v2));
    assert_eq!(repo.get_version("ns", "k", 0).await.unwrap(), None);
    assert_eq!(repo.get_version("ns", "k", 3).await.unwrap(), None);
    assert_eq!(repo.get_version("ns", "absent", 1).await.unwrap(), None);
}

#[tokio::test]
async fn deleting_a_memory_hides_it_but_keeps_every_version_marked_deleted() {
    let (_pool, repo, _clock) = store().await;
    repo.add(new_memory("ns", "k", json!("a"))).await.unwrap();
    repo.update("ns", "k", json!("b"), "agent-2").await.unwrap();
    repo.add(new_memory("ns", "kept", json!("x")))
        .await
        .unwrap();

    repo.delete("ns", "k").await.unwrap();

    assert_eq!(repo.get("ns", "k").await.unwrap(), None);
    let versions = repo.list_versions("ns", "k").await.unwrap();
    assert_versions(&versions, &[(1, true), (2, true)]);
    assert_eq!(versions[1].value, json!("b"));
    let old = repo.get_version("ns", "k", 1).await.unwrap().unwrap();
    assert_eq!((old.value, old.is_deleted), (json!("a"), true));
    assert!(repo.get("ns", "kept").await.unwrap().is_some());
}

#[tokio::test]
async fn deleting_a_key_never_added_is_not_found_and_changes_nothing() {
    let (pool, repo, _clock) = store().await;
    repo.add(new_memory("ns", "k", json!(1))).await.unwrap();
    let before = memory_rows(&pool).await;

    assert_not_found(repo.delete("ns", "absent").await, "ns/absent");

    assert_eq!(memory_rows(&pool).await, before);
}

#[tokio::test]
async fn deleting_a_deleted_memory_is_not_found_and_changes_nothing() {
    let (pool, repo, _clock) = store().await;
    repo.add(new_memory("ns", "k", json!(1))).await.unwrap();
    repo.delete("ns", "k").await.unwrap();
    let before = memory_rows(&pool).await;

    assert_not_found(repo.delete("ns", "k").await, "ns/k");

    assert_eq!(memory_rows(&pool).await, before);
}

#[tokio::test]
async fn updating_a_key_never_added_is_not_found_and_writes_nothing() {
    let (pool, repo, _clock) = store().await;
    repo.add(new_memory("ns", "k", json!(1))).await.unwrap();
    let before = memory_rows(&pool).await;

    assert_not_found(
        repo.update("ns", "absent", json!(2), "agent-2").await,
        "ns/absent",
    );

    assert_eq!(memory_rows(&pool).await, before);
}

#[tokio::test]
async fn updating_a_deleted_memory_is_not_found_and_writes_nothing() {
    let (pool, repo, _clock) = store().await;
    repo.add(new_memory("ns", "k", json!(1))).await.unwrap();
    repo.delete("ns", "k").await.unwrap();
    let before = memory_rows(&pool).await;

    assert_not_found(repo.update("ns", "k", json!(2), "agent-2").await, "ns/k");

    assert_eq!(memory_rows(&pool).await, before);
}

#[tokio::test]
async fn updating_a_memory_with_an_empty_author_is_rejected_and_writes_nothing() {
    let (pool, repo, _clock) = store().await;
    repo.add(new_memory("ns", "k", json!(1))).await.unwrap();
    let before = memory_rows(&pool).await;

    assert_validation(repo.update("ns", "k", json!(2), "").await, "updated_by");
    assert_validation(repo.update("ns", "k", json!(2), "  ").await, "updated_by");

    assert_eq!(memory_rows(&pool).await, before);
}

#[tokio::test]
async fn adding_a_deleted_key_again_continues_its_version_numbering() {
    let (_pool, repo, clock) = store().await;
    repo.add(new_memory("ns", "k", json!("a"))).await.unwrap();
    repo.update("ns", "k", json!("b"), "agent-2").await.unwrap();
    repo.delete("ns", "k").await.unwrap();

    clock.advance(Duration::hours(1));
    let again = repo
        .add(NewMemory {
            metadata: None,
            created_by: "agent-9".into(),
            ..typed("ns", "k", MemoryType::Episodic)
        })
        .await
        .unwrap();

    assert_eq!(again.version, 3);
    assert_eq!(again.memory_type, MemoryType::Episodic);
    assert_eq!(
        (again.created_at, again.updated_at),
        (clock.now(), clock.now())
    );
    assert_eq!(repo.get("ns", "k").await.unwrap(), Some(again));
    assert_versions(
        &repo.list_versions("ns", "k").await.unwrap(),
        &[(1, true), (2, true), (3, false)],
    );
    let v4 = repo.update("ns", "k", json!("d"), "agent-2").await.unwrap();
    assert_eq!((v4.version, v4.metadata), (4, None));
}

#[tokio::test]
async fn count_counts_each_live_key_under_the_prefix_once() {
    let (_pool, repo, _clock) = store().await;
    repo.add(new_memory("team/a", "k1", json!(1)))
        .await
        .unwrap();
    repo.update("team/a", "k1", json!(2), "agent-2")
        .await
        .unwrap();
    repo.add(new_memory("team/a", "k2", json!(1)))
        .await
        .unwrap();
    repo.add(new_memory("team/b", "k1", json!(1)))
        .await
        .unwrap();
    repo.add(new_memory("team/b", "gone", json!(1)))
        .await
        .unwrap();
    repo.delete("team/b", "gone").await.unwrap();
    repo.add(new_memory("teams", "k1", json!(1))).await.unwrap();
    repo.add(new_memory("other", "k1", json!(1))).await.unwrap();

    assert_eq!(repo.count("team/").await.unwrap(), 3);
    assert_eq!(repo.count("team/a").await.unwrap(), 2);
    assert_eq!(repo.count("team").await.unwrap(), 4);
    assert_eq!(repo.count("").await.unwrap(), 5);
    assert_eq!(repo.count("nobody").await.unwrap(), 0);
}

#[tokio::test]
async fn search_gives_each_live_key_under_the_prefix_at_its_latest_version_by_namespace_then_key() {
    let (_pool, repo, _clock) = store().await;
    repo.add(new_memory("team/b", "z", json!(1))).await.unwrap();
    repo.add(new_memory("team/a", "y", json!(1))).await.unwrap();
    repo.add(new_memory("team/a", "x", json!("old")))
        .await
        .unwrap();
    repo.update("team/a", "x", json!("new"), "agent-2")
        .await
        .unwrap();
    repo.add(new_memory("team/a", "gone", json!(1)))
        .await
        .unwrap();
    repo.delete("team/a", "gone").await.unwrap();
    repo.add(new_memory("teams", "w", json!(1))).await.unwrap();
    repo.add(new_memory("tea", "v", json!(1))).await.unwrap();

    let found = repo.search("team/", None, 100).await.unwrap();

    assert_keys(&found, &[("team/a", "x"), ("team/a", "y"), ("team/b", "z")]);
    assert_eq!((found[0].version, &found[0].value), (2, &json!("new")));
    assert!(found.iter().all(|m| !m.is_deleted));
}

#[tokio::test]
async fn searching_with_a_type_gives_only_memories_of_that_type() {
    let (_pool, repo, _clock) = store().await;
    repo.add(typed("ns", "a", MemoryType::Semantic))
        .await
        .unwrap();
    repo.add(typed("ns", "b", MemoryType::Episodic))
        .await
        .unwrap();
    repo.add(typed("ns", "c", MemoryType::Procedural))
        .await
        .unwrap();
    repo.add(typed("ns", "d", MemoryType::Episodic))
        .await
        .unwrap();

    for (memory_type, want) in [
        (MemoryType::Semantic, &[("ns", "a")][..]),
        (MemoryType::Episodic, &[("ns", "b"), ("ns", "d")][..]),
        (MemoryType::Procedural, &[("ns", "c")][..]),
    ] {
        let found = repo.search("ns", Some(memory_type), 100).await.unwrap();
        assert_keys(&found, want);
    }
}

#[tokio::test]
async fn searching_gives_at_most_limit_memories_from_the_start_of_the_order() {
    let (_pool, repo, _clock) = store().await;
    for key in ["e", "b", "d", "a", "c"] {
        repo.add(new_memory("ns", key, json!(key))).await.unwrap();
    }

    assert_keys(
        &repo.search("ns", None, 2).await.unwrap(),
        &[("ns", "a"), ("ns", "b")],
    );
    assert_eq!(repo.search("ns", None, 1000).await.unwrap().len(), 5);
    // One cap for every list (issue 10, item 15): the MCP server and the CLI both get it here.
    for limit in [0, 1001, usize::MAX] {
        match repo.search("ns", None, limit).await {
            Err(DatabaseError::Validation(e)) => assert_eq!(e.field, "limit"),
            other => panic!("limit {limit}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn searching_and_counting_match_percent_and_underscore_in_the_prefix_literally() {
    let (_pool, repo, _clock) = store().await;
    for namespace in ["a%b", "axb", "a_c", "abc", "A%b"] {
        repo.add(new_memory(namespace, "k", json!(namespace)))
            .await
            .unwrap();
    }

    assert_keys(
        &repo.search("a%", None, 100).await.unwrap(),
        &[("a%b", "k")],
    );
    assert_keys(
        &repo.search("a_", None, 100).await.unwrap(),
        &[("a_c", "k")],
    );
    assert_eq!(repo.count("a%").await.unwrap(), 1);
    assert_eq!(repo.count("a_").await.unwrap(), 1);
    assert_eq!(repo.count("a").await.unwrap(), 4);
}

#[tokio::test]
async fn searching_matches_a_prefix_of_non_ascii_characters() {
    let (_pool, repo, _clock) = store().await;
    for namespace in ["日本/東京", "日本/大阪", "日本語", "中国"] {
        repo.add(new_memory(namespace, "k", json!(1)))
            .await
            .unwrap();
    }

    assert_keys(
        &repo.search("日本/", None, 100).await.unwrap(),
        &[("日本/大阪", "k"), ("日本/東京", "k")],
    );
    assert_eq!(repo.count("日本").await.unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_of_one_key_each_get_their_own_version() {
    let (_dir, db) = file_db().await;
    let repo = MemoryRepositoryImpl::new(db.pool().clone());
    repo.add(new_memory("ns", "k", json!(0))).await.unwrap();

    let writers: Vec<_> = (1..=30)
        .map(|n| {
            let repo = repo.clone();
            tokio::spawn(async move {
                repo.update("ns", "k", json!(n), &format!("agent-{n}"))
                    .await
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap().unwrap();
    }

    let versions = repo.list_versions("ns", "k").await.unwrap();
    let numbers: Vec<u32> = versions.iter().map(|m| m.version).collect();
    assert_eq!(numbers, (1..=31).collect::<Vec<u32>>());
    let mut values: Vec<i64> = versions.iter().map(|m| m.value.as_i64().unwrap()).collect();
    values.sort_unstable();
    assert_eq!(values, (0..=30).collect::<Vec<i64>>(), "no update was lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_adds_of_one_key_let_exactly_one_win() {
    let (_dir, db) = file_db().await;
    let repo = MemoryRepositoryImpl::new(db.pool().clone());

    let writers: Vec<_> = (0..20)
        .map(|n| {
            let repo = repo.clone();
            tokio::spawn(async move { repo.add(new_memory("ns", "k", json!(n))).await })
        })
        .collect();
    let mut won = 0;
    for writer in writers {
        match writer.await.unwrap() {
            Ok(_) => won += 1,
            Err(DatabaseError::UniqueViolation { .. }) => {}
            Err(other) => panic!("expected a unique violation, got {other:?}"),
        }
    }

    assert_eq!(won, 1);
    assert_versions(&repo.list_versions("ns", "k").await.unwrap(), &[(1, false)]);
}

/// A memory whose `memory_type` holds a name the schema's CHECK would refuse, written with
/// CHECK constraints off on one connection, as a tool outside abathur could.
async fn corrupt_memory_type(pool: &SqlitePool) {
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("PRAGMA ignore_check_constraints = ON")
        .execute(&mut *conn)
        .await
        .unwrap();
    let updated = sqlx::query(
        "UPDATE memories SET memory_type = 'gossip' WHERE namespace = 'ns' AND key = 'k'",
    )
    .execute(&mut *conn)
    .await
    .unwrap()
    .rows_affected();
    sqlx::query("PRAGMA ignore_check_constraints = OFF")
        .execute(&mut *conn)
        .await
        .unwrap();
    assert_eq!(updated, 1, "one row corrupted");
}

#[tokio::test]
async fn a_memory_row_with_an_unknown_type_is_reported_corrupt_by_every_read() {
    let (pool, repo, _clock) = store().await;
    repo.add(new_memory("ns", "k", json!(1))).await.unwrap();
    corrupt_memory_type(&pool).await;

    let errors = [
        repo.get("ns", "k").await.unwrap_err(),
        repo.get_version("ns", "k", 1).await.unwrap_err(),
        repo.list_versions("ns", "k").await.unwrap_err(),
        repo.search("ns", None, 10).await.unwrap_err(),
    ];

    for err in errors {
        let message = err.to_string();
        assert!(message.contains("gossip"), "{message}");
        assert_corrupt(err, "ns/k", "memory_type");
    }
}

#[tokio::test]
async fn a_memory_row_with_an_impossible_timestamp_is_reported_corrupt() {
    let (pool, repo, _clock) = store().await;
    repo.add(new_memory("ns", "k", json!(1))).await.unwrap();
    // Month 13 passes the column's GLOB check but is no date.
    sqlx::query("UPDATE memories SET updated_at = '2026-13-01T00:00:00.000000Z'")
        .execute(&*pool)
        .await
        .unwrap();

    assert_corrupt(repo.get("ns", "k").await.unwrap_err(), "ns/k", "updated_at");
}

/// Nests `inner` in `depth` single-element arrays.
fn nested(depth: usize) -> serde_json::Value {
    (0..depth).fold(serde_json::json!(0), |inner, _| serde_json::json!([inner]))
}

/// Regression: a value nested deeper than the JSON parser reads was stored, and its key then
/// failed every read with CorruptRow and could never be added again.
#[tokio::test]
async fn json_nested_deeper_than_the_limit_is_refused_before_it_is_stored() {
    use abathur::domain::models::MAX_JSON_DEPTH;
    let pool = test_db().await;
    let repo = MemoryRepositoryImpl::new(pool.clone());
    let deepest = NewMemory {
        namespace: "deep".into(),
        key: "ok".into(),
        value: nested(MAX_JSON_DEPTH),
        memory_type: MemoryType::Semantic,
        metadata: None,
        created_by: "test".into(),
    };
    let stored = repo.add(deepest.clone()).await.unwrap();
    assert_eq!(stored.value, deepest.value);
    assert_eq!(
        repo.get("deep", "ok").await.unwrap().unwrap().value,
        deepest.value
    );

    let before = memory_rows(&pool).await;
    let too_deep = NewMemory {
        key: "too-deep".into(),
        value: nested(MAX_JSON_DEPTH + 1),
        ..deepest.clone()
    };
    let err = repo.add(too_deep).await.unwrap_err();
    assert!(
        matches!(&err, DatabaseError::Validation(e) if e.field == "value"),
        "{err:?}"
    );
    let err = repo
        .update("deep", "ok", nested(200), "test")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DatabaseError::Validation(e) if e.field == "value"),
        "{err:?}"
    );
    assert_eq!(memory_rows(&pool).await, before);
}
