//! Test databases: the specification's in-memory pool, and file databases for tests that need
//! several connections or processes.

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
