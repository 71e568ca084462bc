//! [`MemoryRepository`] on PostgreSQL: every version of every memory in `memories`.
//!
//! Every write to a key (add, update, delete) first takes a transaction-level advisory lock on
//! that key, so writers of one key on any number of machines run one after the other, and each
//! reads, after the lock, what the one before it committed: version numbers have no gap and no
//! duplicate, an add after a delete continues the numbering, and a delete marks every version
//! (one added by a concurrent update cannot escape it). The primary key backs this up: a
//! duplicate version could never be stored. Writers of different keys never wait on each other.
//!
//! Prefix search and count read a range of the primary key, bounded by the prefix and its
//! successor on the `COLLATE "C"` namespace (byte order, as SQLite): no pattern, so `%` and `_`
//! are plain characters, and the index is used.

use std::sync::Arc;

use abathur_core::clock::{Clock, SystemClock};
use abathur_core::error::DatabaseError;
use abathur_core::limits::{check_page, MAX_MEMORY_VALUE_BYTES};
use abathur_core::models::{check_json, check_name, Memory, MemoryType, NewMemory};
use abathur_core::ports::MemoryRepository;
use abathur_core::text::{memory_id, prefix_upper_bound};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};

use crate::errors::on;
use crate::repo_support::{check_json_nul, pinned_time, retrying};
use crate::row::RowContext;

const ENTITY: &str = "memory";

/// The PostgreSQL memory store.
#[derive(Debug, Clone)]
pub struct PgMemoryRepository {
    pool: PgPool,
    clock: Arc<dyn Clock>,
}

impl PgMemoryRepository {
    /// A repository on `pool`, stamping writes with the server's clock.
    pub fn new(pool: PgPool) -> Self {
        Self::with_clock(pool, Arc::new(SystemClock))
    }

    /// A repository on `pool`, taking time from `clock` (the server's clock when `clock` asks
    /// for the store's own time, as [`SystemClock`] does).
    pub fn with_clock(pool: PgPool, clock: Arc<dyn Clock>) -> Self {
        Self { pool, clock }
    }
}

/// A `memories` row, column for column.
struct MemoryRow {
    namespace: String,
    key: String,
    version: i64,
    value: Json<Value>,
    memory_type: String,
    is_deleted: bool,
    metadata: Option<Json<Value>>,
    created_by: String,
    updated_by: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<MemoryRow> for Memory {
    type Error = DatabaseError;

    fn try_from(r: MemoryRow) -> Result<Self, Self::Error> {
        let id = memory_id(&r.namespace, &r.key);
        let cx = RowContext {
            table: "memories",
            id: &id,
        };
        Ok(Memory {
            memory_type: cx.parse("memory_type", &r.memory_type)?,
            version: cx.int("version", r.version)?,
            value: r.value.0,
            is_deleted: r.is_deleted,
            metadata: r.metadata.map(|m| m.0),
            created_at: r.created_at,
            updated_at: r.updated_at,
            namespace: r.namespace,
            key: r.key,
            created_by: r.created_by,
            updated_by: r.updated_by,
        })
    }
}

fn memories_from_rows(rows: Vec<MemoryRow>) -> Result<Vec<Memory>, DatabaseError> {
    rows.into_iter().map(Memory::try_from).collect()
}

/// Takes the advisory lock of key `namespace`/`key` until the transaction ends. A hash
/// collision between two keys only makes their writers wait on each other; a transaction
/// takes one such lock, so they cannot deadlock.
async fn lock_key(conn: &mut PgConnection, namespace: &str, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended($2, hashtextextended($1, 0)))",
        namespace,
        key
    )
    .execute(conn)
    .await?;
    Ok(())
}

#[async_trait]
impl MemoryRepository for PgMemoryRepository {
    async fn add(&self, memory: NewMemory) -> Result<Memory, DatabaseError> {
        memory.validate()?;
        check_json_nul("value", &memory.value)?;
        if let Some(metadata) = &memory.metadata {
            check_json_nul("metadata", metadata)?;
        }
        let id = memory_id(&memory.namespace, &memory.key);
        let at = pinned_time(self.clock.as_ref());
        let (memory, id_ref) = (&memory, id.as_str());
        let row = retrying(ENTITY, &id, || async move {
            let mut tx = self.pool.begin().await?;
            lock_key(&mut tx, &memory.namespace, &memory.key).await?;
            // Read once the lock is held: every version a writer before us committed is seen.
            let latest = sqlx::query!(
                r#"SELECT COALESCE(MAX(version), 0) AS "latest!",
                          COUNT(*) FILTER (WHERE NOT is_deleted) AS "live!",
                          COALESCE($3::timestamptz, clock_timestamp()) AS "now!"
                   FROM memories WHERE namespace = $1 AND key = $2"#,
                memory.namespace,
                memory.key,
                at
            )
            .fetch_one(&mut *tx)
            .await?;
            if latest.live > 0 {
                return Ok(Err(DatabaseError::UniqueViolation {
                    entity: ENTITY,
                    id: id_ref.to_string(),
                }));
            }
            let row = sqlx::query_as!(
                MemoryRow,
                r#"INSERT INTO memories (namespace, key, version, value, memory_type, is_deleted,
                       metadata, created_by, updated_by, created_at, updated_at)
                   VALUES ($1, $2, $3, $4, $5, false, $6, $7, $7, $8, $8)
                   RETURNING namespace, key, version, value AS "value: Json<Value>", memory_type,
                       is_deleted, metadata AS "metadata: Json<Value>", created_by, updated_by,
                       created_at, updated_at"#,
                memory.namespace,
                memory.key,
                latest.latest + 1,
                Json(&memory.value) as Json<&Value>,
                memory.memory_type.as_str(),
                memory.metadata.as_ref().map(Json) as Option<Json<&Value>>,
                memory.created_by,
                latest.now,
            )
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Ok(row))
        })
        .await?;
        Memory::try_from(row)
    }

    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Memory>, DatabaseError> {
        // The newest version, from a backward scan of the primary key; the key is live when it
        // is not deleted (a delete marks every version).
        let row = sqlx::query_as!(
            MemoryRow,
            r#"SELECT namespace, key, version, value AS "value: Json<Value>", memory_type,
                   is_deleted, metadata AS "metadata: Json<Value>", created_by, updated_by,
                   created_at, updated_at
               FROM memories
               WHERE namespace = $1 AND key = $2 AND NOT is_deleted
               ORDER BY version DESC
               LIMIT 1"#,
            namespace,
            key
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(on(ENTITY, &memory_id(namespace, key)))?;
        row.map(Memory::try_from).transpose()
    }

    async fn get_version(
        &self,
        namespace: &str,
        key: &str,
        version: u32,
    ) -> Result<Option<Memory>, DatabaseError> {
        let row = sqlx::query_as!(
            MemoryRow,
            r#"SELECT namespace, key, version, value AS "value: Json<Value>", memory_type,
                   is_deleted, metadata AS "metadata: Json<Value>", created_by, updated_by,
                   created_at, updated_at
               FROM memories
               WHERE namespace = $1 AND key = $2 AND version = $3"#,
            namespace,
            key,
            i64::from(version)
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(on(ENTITY, &memory_id(namespace, key)))?;
        row.map(Memory::try_from).transpose()
    }

    async fn list_versions(
        &self,
        namespace: &str,
        key: &str,
    ) -> Result<Vec<Memory>, DatabaseError> {
        let rows = sqlx::query_as!(
            MemoryRow,
            r#"SELECT namespace, key, version, value AS "value: Json<Value>", memory_type,
                   is_deleted, metadata AS "metadata: Json<Value>", created_by, updated_by,
                   created_at, updated_at
               FROM memories
               WHERE namespace = $1 AND key = $2
               ORDER BY version"#,
            namespace,
            key
        )
        .fetch_all(&self.pool)
        .await
        .map_err(on(ENTITY, &memory_id(namespace, key)))?;
        memories_from_rows(rows)
    }

    async fn update(
        &self,
        namespace: &str,
        key: &str,
        value: Value,
        updated_by: &str,
    ) -> Result<Memory, DatabaseError> {
        check_name("updated_by", updated_by)?;
        check_json("value", &value, MAX_MEMORY_VALUE_BYTES)?;
        check_json_nul("value", &value)?;
        let id = memory_id(namespace, key);
        let at = pinned_time(self.clock.as_ref());
        let (value, id_ref) = (&value, id.as_str());
        let row = retrying(ENTITY, &id, || async move {
            let mut tx = self.pool.begin().await?;
            lock_key(&mut tx, namespace, key).await?;
            // The next version of the newest, built in one statement once the lock is held.
            let row = sqlx::query_as!(
                MemoryRow,
                r#"INSERT INTO memories (namespace, key, version, value, memory_type, is_deleted,
                       metadata, created_by, updated_by, created_at, updated_at)
                   SELECT namespace, key, version + 1, $1, memory_type, false, metadata,
                       created_by, $2, created_at, COALESCE($3::timestamptz, clock_timestamp())
                   FROM memories
                   WHERE namespace = $4 AND key = $5 AND NOT is_deleted
                   ORDER BY version DESC
                   LIMIT 1
                   RETURNING namespace, key, version, value AS "value: Json<Value>", memory_type,
                       is_deleted, metadata AS "metadata: Json<Value>", created_by, updated_by,
                       created_at, updated_at"#,
                Json(value) as Json<&Value>,
                updated_by,
                at,
                namespace,
                key
            )
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Ok(Err(DatabaseError::not_found(ENTITY, id_ref)));
            };
            tx.commit().await?;
            Ok(Ok(row))
        })
        .await?;
        Memory::try_from(row)
    }

    async fn delete(&self, namespace: &str, key: &str) -> Result<(), DatabaseError> {
        let id = memory_id(namespace, key);
        let id_ref = id.as_str();
        retrying(ENTITY, &id, || async move {
            let mut tx = self.pool.begin().await?;
            lock_key(&mut tx, namespace, key).await?;
            let marked = sqlx::query!(
                "UPDATE memories SET is_deleted = true
                 WHERE namespace = $1 AND key = $2 AND NOT is_deleted",
                namespace,
                key
            )
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if marked == 0 {
                return Ok(Err(DatabaseError::not_found(ENTITY, id_ref)));
            }
            tx.commit().await?;
            Ok(Ok(()))
        })
        .await
    }

    async fn count(&self, namespace_prefix: &str) -> Result<i64, DatabaseError> {
        let counted = match prefix_upper_bound(namespace_prefix) {
            Some(upper) => {
                sqlx::query_scalar!(
                    r#"SELECT COUNT(*) AS "count!" FROM memories m
                       WHERE m.namespace >= $1 AND m.namespace < $2
                         AND NOT m.is_deleted
                         AND m.version = (SELECT MAX(v.version) FROM memories v
                                          WHERE v.namespace = m.namespace AND v.key = m.key)"#,
                    namespace_prefix,
                    upper
                )
                .fetch_one(&self.pool)
                .await
            }
            None => {
                sqlx::query_scalar!(
                    r#"SELECT COUNT(*) AS "count!" FROM memories m
                       WHERE m.namespace >= $1
                         AND NOT m.is_deleted
                         AND m.version = (SELECT MAX(v.version) FROM memories v
                                          WHERE v.namespace = m.namespace AND v.key = m.key)"#,
                    namespace_prefix
                )
                .fetch_one(&self.pool)
                .await
            }
        };
        counted.map_err(on(ENTITY, namespace_prefix))
    }

    async fn search(
        &self,
        namespace_prefix: &str,
        memory_type: Option<MemoryType>,
        limit: usize,
    ) -> Result<Vec<Memory>, DatabaseError> {
        check_page("limit", u64::try_from(limit).unwrap_or(u64::MAX))?;
        let memory_type = memory_type.map(MemoryType::as_str);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // Live memories in primary key order: each key's newest version, when not deleted.
        let rows = match prefix_upper_bound(namespace_prefix) {
            Some(upper) => {
                sqlx::query_as!(
                    MemoryRow,
                    r#"SELECT m.namespace, m.key, m.version, m.value AS "value: Json<Value>",
                           m.memory_type, m.is_deleted, m.metadata AS "metadata: Json<Value>",
                           m.created_by, m.updated_by, m.created_at, m.updated_at
                       FROM memories m
                       WHERE m.namespace >= $1 AND m.namespace < $2
                         AND NOT m.is_deleted
                         AND ($3::text IS NULL OR m.memory_type = $3)
                         AND m.version = (SELECT MAX(v.version) FROM memories v
                                          WHERE v.namespace = m.namespace AND v.key = m.key)
                       ORDER BY m.namespace, m.key
                       LIMIT $4"#,
                    namespace_prefix,
                    upper,
                    memory_type,
                    limit
                )
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query_as!(
                    MemoryRow,
                    r#"SELECT m.namespace, m.key, m.version, m.value AS "value: Json<Value>",
                           m.memory_type, m.is_deleted, m.metadata AS "metadata: Json<Value>",
                           m.created_by, m.updated_by, m.created_at, m.updated_at
                       FROM memories m
                       WHERE m.namespace >= $1
                         AND NOT m.is_deleted
                         AND ($2::text IS NULL OR m.memory_type = $2)
                         AND m.version = (SELECT MAX(v.version) FROM memories v
                                          WHERE v.namespace = m.namespace AND v.key = m.key)
                       ORDER BY m.namespace, m.key
                       LIMIT $3"#,
                    namespace_prefix,
                    memory_type,
                    limit
                )
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(on(ENTITY, namespace_prefix))?;
        memories_from_rows(rows)
    }
}
