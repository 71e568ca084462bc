//! Ids by prefix, read from each table's primary key index.

use abathur_core::error::DatabaseError;
use abathur_core::ports::{IdKind, IdLookup};
use async_trait::async_trait;
use sqlx::SqlitePool;
use uuid::Uuid;

use super::errors::on;
use super::row::RowContext;

/// [`IdLookup`] on SQLite.
#[derive(Debug, Clone)]
pub struct IdLookupImpl {
    pool: SqlitePool,
}

impl IdLookupImpl {
    /// A lookup on `pool`.
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl IdLookup for IdLookupImpl {
    async fn ids_with_prefix(
        &self,
        kind: IdKind,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<Uuid>, DatabaseError> {
        // Ids are lower-case hex and hyphens, all below 'g', so every id that starts with
        // `prefix` lies in [prefix, prefix || 'g'): a range of the primary key index.
        let upper = format!("{prefix}g");
        let limit = i64::from(limit);
        let (table, ids) = match kind {
            IdKind::Task => (
                "tasks",
                sqlx::query_scalar!(
                    r#"SELECT id AS "id!" FROM tasks WHERE id >= ? AND id < ? ORDER BY id LIMIT ?"#,
                    prefix,
                    upper,
                    limit
                )
                .fetch_all(&self.pool)
                .await,
            ),
            IdKind::Attempt => (
                "task_attempts",
                sqlx::query_scalar!(
                    r#"SELECT id AS "id!" FROM task_attempts
                       WHERE id >= ? AND id < ? ORDER BY id LIMIT ?"#,
                    prefix,
                    upper,
                    limit
                )
                .fetch_all(&self.pool)
                .await,
            ),
            IdKind::Session => (
                "sessions",
                sqlx::query_scalar!(
                    r#"SELECT id AS "id!" FROM sessions WHERE id >= ? AND id < ? ORDER BY id LIMIT ?"#,
                    prefix,
                    upper,
                    limit
                )
                .fetch_all(&self.pool)
                .await,
            ),
            IdKind::Agent => (
                "agents",
                sqlx::query_scalar!(
                    r#"SELECT id AS "id!" FROM agents WHERE id >= ? AND id < ? ORDER BY id LIMIT ?"#,
                    prefix,
                    upper,
                    limit
                )
                .fetch_all(&self.pool)
                .await,
            ),
        };
        ids.map_err(on(kind.name(), prefix))?
            .iter()
            .map(|id| RowContext { table, id }.uuid("id", id))
            .collect()
    }
}
