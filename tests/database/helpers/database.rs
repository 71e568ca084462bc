//! Test databases: files in WAL, as production opens them, and the specification's in-memory
//! pool for its own tests.

use abathur::infrastructure::database::{DatabaseConnection, MIGRATOR};
use sqlx::SqlitePool;
use tempfile::TempDir;

/// Create an in-memory SQLite database for testing (the specification's helper).
pub async fn setup_test_db() -> SqlitePool {
    let pool = SqlitePool::connect("sqlite::memory:")
        .await
        .expect("failed to create test database");
    MIGRATOR.run(&pool).await.expect("failed to run migrations");
    pool
}

/// Teardown test database.
pub async fn teardown_test_db(pool: SqlitePool) {
    pool.close().await;
}

/// A migrated database file in a fresh temporary folder, opened with the production settings.
/// Keep the folder alive as long as the connection.
pub async fn file_db() -> (TempDir, DatabaseConnection) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("abathur.db");
    let url = format!("sqlite:{}", path.display());
    let db = DatabaseConnection::new(&url)
        .await
        .expect("open file database");
    db.migrate().await.expect("migrate");
    (dir, db)
}

/// The pool of a fresh [`file_db`], holding its folder: what the tests of the queue and the
/// repositories run on, so that they run the production configuration (a file in WAL).
pub async fn test_db() -> TestPool {
    let (dir, db) = file_db().await;
    TestPool {
        pool: db.pool().clone(),
        _dir: dir,
    }
}

/// A pool on a database file in a temporary folder that lives as long as it does.
#[derive(Debug)]
pub struct TestPool {
    pool: SqlitePool,
    _dir: TempDir,
}

impl std::ops::Deref for TestPool {
    type Target = SqlitePool;

    fn deref(&self) -> &SqlitePool {
        &self.pool
    }
}

/// Every row of every queue table, in a fixed order: equal dumps mean nothing changed.
pub async fn table_dump(pool: &SqlitePool) -> Vec<String> {
    let mut rows = Vec::new();
    for (table, order) in [
        ("tasks", "id"),
        ("task_dependencies", "task_id, depends_on_task_id"),
        ("task_attempts", "id"),
        ("task_events", "id"),
        ("task_schedule", "task_id"),
        ("task_idempotency", "idempotency_key"),
    ] {
        let columns: Vec<String> =
            sqlx::query_scalar(&format!("SELECT name FROM pragma_table_info('{table}')"))
                .fetch_all(pool)
                .await
                .unwrap();
        let row = columns
            .iter()
            .map(|c| format!("quote({c})"))
            .collect::<Vec<_>>()
            .join(" || '|' || ");
        let all: Vec<String> =
            sqlx::query_scalar(&format!("SELECT {row} FROM {table} ORDER BY {order}"))
                .fetch_all(pool)
                .await
                .unwrap();
        rows.push(format!("{table}: {} rows", all.len()));
        rows.extend(all);
    }
    rows
}
