//! The connection: pragmas on every pooled connection, pool settings, file and folder
//! creation, the shared in-memory database, and concurrent writers without SQLITE_BUSY.

use std::time::Duration;

use abathur::domain::models::NewMemory;
use abathur::domain::ports::MemoryRepository;
use abathur::infrastructure::database::{
    DatabaseConfig, DatabaseConnection, DatabaseError, MemoryRepositoryImpl,
};
use serde_json::json;

use crate::helpers::database::file_db;

#[tokio::test]
async fn every_pooled_connection_carries_the_pragmas() {
    let (_dir, db) = file_db().await;
    // Hold five connections at once, so they are five distinct connections.
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(db.pool().acquire().await.unwrap());
    }
    for conn in &mut held {
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        assert_eq!((journal.as_str(), fk, sync, busy), ("wal", 1, 1, 5000));
    }
}

#[tokio::test]
async fn the_pool_uses_the_specifications_limits_unless_configured() {
    let (_dir, db) = file_db().await;
    let options = db.pool().options();
    assert_eq!(options.get_min_connections(), 5);
    assert_eq!(options.get_max_connections(), 10);
    assert_eq!(options.get_idle_timeout(), Some(Duration::from_secs(30)));
    assert_eq!(options.get_max_lifetime(), Some(Duration::from_secs(1800)));
    assert_eq!(options.get_acquire_timeout(), Duration::from_secs(10));

    let dir = tempfile::tempdir().unwrap();
    let config = DatabaseConfig {
        min_connections: 1,
        max_connections: 3,
        ..DatabaseConfig::default()
    };
    let small = DatabaseConnection::open_path(&dir.path().join("small.db"), config)
        .await
        .unwrap();
    assert_eq!(small.pool().options().get_max_connections(), 3);
}

#[tokio::test]
async fn a_missing_database_and_its_folders_are_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/c/abathur.db");
    let db = DatabaseConnection::new(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    db.migrate().await.unwrap();
    db.close().await;
    assert!(path.exists());
}

#[tokio::test]
async fn migrating_twice_is_harmless() {
    let (_dir, db) = file_db().await;
    db.migrate().await.unwrap();
}

#[tokio::test]
async fn a_malformed_url_is_a_connection_error() {
    let err = DatabaseConnection::new("postgres://nope")
        .await
        .unwrap_err();
    assert!(matches!(err, DatabaseError::Connection(_)), "{err:?}");
}

#[tokio::test]
async fn an_in_memory_database_is_shared_by_every_connection_of_the_pool() {
    let db = DatabaseConnection::new("sqlite::memory:").await.unwrap();
    db.migrate().await.unwrap();
    let mut first = db.pool().acquire().await.unwrap();
    let mut second = db.pool().acquire().await.unwrap();
    sqlx::query("INSERT INTO audit (id, operation, actor, timestamp, success)
                 VALUES ('00000000-0000-0000-0000-000000000001', 'test', 'me', '2026-11-28T00:00:00.000000Z', 1)")
        .execute(&mut *first)
        .await
        .unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit")
        .fetch_one(&mut *second)
        .await
        .unwrap();
    assert_eq!(seen, 1);
}

#[tokio::test]
async fn two_in_memory_databases_are_separate() {
    let a = DatabaseConnection::new("sqlite::memory:").await.unwrap();
    let b = DatabaseConnection::new("sqlite::memory:").await.unwrap();
    a.migrate().await.unwrap();
    let tables: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_schema WHERE name = 'tasks'")
        .fetch_one(b.pool())
        .await
        .unwrap();
    assert_eq!(tables, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_read_then_write_transactions_never_fail_and_lose_nothing() {
    const WORKERS: i64 = 16;
    const ROUNDS: i64 = 25;
    let (_dir, db) = file_db().await;
    sqlx::query("CREATE TABLE counter (n INTEGER NOT NULL)")
        .execute(db.pool())
        .await
        .unwrap();
    sqlx::query("INSERT INTO counter VALUES (0)")
        .execute(db.pool())
        .await
        .unwrap();
    let memories = MemoryRepositoryImpl::new(db.pool().clone());
    memories
        .add(NewMemory {
            namespace: "swarm".into(),
            key: "shared".into(),
            value: json!(0),
            memory_type: abathur::domain::models::MemoryType::Semantic,
            metadata: None,
            created_by: "test".into(),
        })
        .await
        .unwrap();

    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let db = db.clone();
        let memories = memories.clone();
        workers.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            for round in 0..ROUNDS {
                // Read, decide in Rust, write back: the pattern that a deferred transaction
                // turns into SQLITE_BUSY under contention.
                let result: Result<(), DatabaseError> = async {
                    let mut tx = db.begin_write().await?;
                    let n: i64 = sqlx::query_scalar("SELECT n FROM counter")
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(|e| DatabaseError::Other(e.to_string()))?;
                    sqlx::query("UPDATE counter SET n = ?")
                        .bind(n + 1)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| DatabaseError::Other(e.to_string()))?;
                    tx.commit()
                        .await
                        .map_err(|e| DatabaseError::Other(e.to_string()))
                }
                .await;
                if let Err(e) = result {
                    errors.push(e.to_string());
                }
                if let Err(e) = memories
                    .update("swarm", "shared", json!([worker, round]), "worker")
                    .await
                {
                    errors.push(e.to_string());
                }
            }
            errors
        }));
    }
    let mut errors = Vec::new();
    for w in workers {
        errors.extend(w.await.unwrap());
    }
    assert_eq!(errors, Vec::<String>::new());
    let n: i64 = sqlx::query_scalar("SELECT n FROM counter")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(n, WORKERS * ROUNDS);
    let latest = memories.get("swarm", "shared").await.unwrap().unwrap();
    assert_eq!(i64::from(latest.version), 1 + WORKERS * ROUNDS);
    assert_eq!(
        memories
            .list_versions("swarm", "shared")
            .await
            .unwrap()
            .len() as i64,
        1 + WORKERS * ROUNDS
    );
}

#[tokio::test]
async fn a_reading_open_of_a_missing_file_creates_nothing_and_says_there_is_none() {
    use abathur::infrastructure::database::{DatabaseLocation, OpenMode};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("abathur.db");
    for mode in [OpenMode::Read, OpenMode::Inspect] {
        let err = DatabaseConnection::open_location(
            &DatabaseLocation::file(&path),
            DatabaseConfig::default(),
            mode,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, DatabaseError::NoDatabase { .. }), "{err:?}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn closing_after_connections_were_just_dropped_merges_the_wal_into_the_file() {
    use abathur::infrastructure::database::{DatabaseLocation, OpenMode};
    for _ in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abathur.db");
        let config = DatabaseConfig {
            min_connections: 1,
            max_connections: 2,
            ..DatabaseConfig::default()
        };
        let db = DatabaseConnection::open_location(
            &DatabaseLocation::file(&path),
            config,
            OpenMode::Write,
        )
        .await
        .unwrap();
        let a = db.pool().acquire().await.unwrap();
        let b = db.pool().acquire().await.unwrap();
        // Both go back to the pool in tasks of their own, racing the close.
        drop(a);
        drop(b);
        db.close().await;
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, vec![std::ffi::OsString::from("abathur.db")]);
    }
}

/// Regression: `abathur mcp --db sqlite::memory:` lost every table after a minute idle. sqlx
/// retires a connection past its idle timeout or lifetime before it opens the next one, and an
/// in-memory database dies with its last connection.
#[tokio::test]
async fn an_in_memory_database_outlives_the_pools_idle_timeout_and_lifetime() {
    let config = DatabaseConfig {
        min_connections: 1,
        max_connections: 1,
        idle_timeout: Duration::from_millis(1),
        max_lifetime: Duration::from_millis(1),
        ..DatabaseConfig::default()
    };
    let db = DatabaseConnection::with_config("sqlite::memory:", config)
        .await
        .unwrap();
    db.migrate().await.unwrap();
    sqlx::query("CREATE TABLE kept (x INTEGER)")
        .execute(db.pool())
        .await
        .unwrap();
    for _ in 0..5 {
        // Each use outlasts the configured lifetime, which would retire the connection.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let tables: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE name IN ('kept', 'tasks')",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert_eq!(tables, 2, "the in-memory database was dropped");
    }
    db.close().await;
}
