//! [`MemoryRepository`] on SQLite: every version of every memory in `memories`.
//!
//! Reads go through sqlx's checked macros; writes run through [`write`] as the named
//! statements of [`STATEMENTS`], and read the time once the write lock is held.

use std::sync::Arc;

use abathur_core::clock::{Clock, SystemClock};
use abathur_core::error::DatabaseError;
use abathur_core::limits::{check_page, MAX_MEMORY_VALUE_BYTES};
use abathur_core::models::{check_json, check_name, Memory, MemoryType, NewMemory};
use abathur_core::ports::MemoryRepository;
use abathur_core::text::{memory_id, prefix_upper_bound};
use abathur_core::timestamp;
use async_trait::async_trait;
use rusqlite::OptionalExtension;
use serde_json::Value;
use sqlx::SqlitePool;

use super::errors::{on, raw_on};
use super::row::{json_text, RowContext};
use super::writer::{change_one, write};

const ENTITY: &str = "memory";

/// The newest version of memory `?1`/`?2`, and how many of its versions are live.
const LATEST_VERSION: &str = "SELECT COALESCE(MAX(version), 0), COALESCE(SUM(is_deleted = 0), 0)
     FROM memories WHERE namespace = ?1 AND key = ?2";

/// A memory's first live version (or its first after a delete): `?3` is its version.
const INSERT_MEMORY: &str = "INSERT INTO memories (namespace, key, version, value, memory_type,
         is_deleted, metadata, created_by, updated_by, created_at, updated_at)
     VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, ?7, ?8, ?8)
     RETURNING namespace, key, version, value, memory_type, is_deleted, metadata, created_by,
         updated_by, created_at, updated_at";

/// The next version of live memory `?4`/`?5`, built from its newest in one statement, so two
/// updates cannot both build on the same version: value `?1`, by `?2`, at `?3`.
const NEXT_VERSION: &str = "INSERT INTO memories (namespace, key, version, value, memory_type,
         is_deleted, metadata, created_by, updated_by, created_at, updated_at)
     SELECT namespace, key, version + 1, ?1, memory_type, 0, metadata, created_by, ?2,
         created_at, ?3
     FROM memories
     WHERE namespace = ?4 AND key = ?5 AND is_deleted = 0
     ORDER BY version DESC
     LIMIT 1
     RETURNING namespace, key, version, value, memory_type, is_deleted, metadata, created_by,
         updated_by, created_at, updated_at";

/// Marks the live version of memory `?1`/`?2` deleted.
const DELETE_MEMORY: &str = "UPDATE memories SET is_deleted = 1
     WHERE namespace = ?1 AND key = ?2 AND is_deleted = 0";

/// Every statement this module runs through rusqlite, for the catalogue test.
#[cfg_attr(not(test), allow(dead_code))] // reason: read only by the catalogue test
pub(crate) const STATEMENTS: &[(&str, &str)] = &[
    ("LATEST_VERSION", LATEST_VERSION),
    ("INSERT_MEMORY", INSERT_MEMORY),
    ("NEXT_VERSION", NEXT_VERSION),
    ("DELETE_MEMORY", DELETE_MEMORY),
];

/// The SQLite memory store.
#[derive(Debug, Clone)]
pub struct MemoryRepositoryImpl {
    pool: SqlitePool,
    clock: Arc<dyn Clock>,
}

impl MemoryRepositoryImpl {
    /// A repository on `pool`, taking time from the system clock.
    pub fn new(pool: SqlitePool) -> Self {
        Self::with_clock(pool, Arc::new(SystemClock))
    }

    /// A repository on `pool`, taking time from `clock`.
    pub fn with_clock(pool: SqlitePool, clock: Arc<dyn Clock>) -> Self {
        Self { pool, clock }
    }
}

struct MemoryRow {
    namespace: String,
    key: String,
    version: i64,
    value: String,
    memory_type: String,
    is_deleted: i64,
    metadata: Option<String>,
    created_by: String,
    updated_by: String,
    created_at: String,
    updated_at: String,
}

impl MemoryRow {
    /// A row `RETURNING` the columns of [`INSERT_MEMORY`], read through rusqlite.
    fn from_raw(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            namespace: row.get(0)?,
            key: row.get(1)?,
            version: row.get(2)?,
            value: row.get(3)?,
            memory_type: row.get(4)?,
            is_deleted: row.get(5)?,
            metadata: row.get(6)?,
            created_by: row.get(7)?,
            updated_by: row.get(8)?,
            created_at: row.get(9)?,
            updated_at: row.get(10)?,
        })
    }
}

impl TryFrom<MemoryRow> for Memory {
    type Error = DatabaseError;

    fn try_from(r: MemoryRow) -> Result<Self, Self::Error> {
        let id = memory_id(&r.namespace, &r.key);
        let cx = RowContext {
            table: "memories",
            id: &id,
        };
        let is_deleted = match r.is_deleted {
            0 => false,
            1 => true,
            other => return Err(cx.corrupt("is_deleted", format!("{other} is neither 0 nor 1"))),
        };
        Ok(Memory {
            value: cx.json("value", &r.value)?,
            memory_type: cx.parse("memory_type", &r.memory_type)?,
            version: cx.int("version", r.version)?,
            is_deleted,
            metadata: cx.opt_json("metadata", r.metadata.as_deref())?,
            created_at: cx.timestamp("created_at", &r.created_at)?,
            updated_at: cx.timestamp("updated_at", &r.updated_at)?,
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

#[async_trait]
impl MemoryRepository for MemoryRepositoryImpl {
    async fn add(&self, memory: NewMemory) -> Result<Memory, DatabaseError> {
        memory.validate()?;
        let clock = Arc::clone(&self.clock);
        let row = write(&self.pool, move |raw| {
            let id = memory_id(&memory.namespace, &memory.key);
            let now = timestamp::format(&clock.now());
            let (latest, live): (i64, i64) = raw
                .prepare_cached(LATEST_VERSION)
                .and_then(|mut q| {
                    q.query_row([&memory.namespace, &memory.key], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                })
                .map_err(raw_on(ENTITY, &id))?;
            if live > 0 {
                return Err(DatabaseError::UniqueViolation { entity: ENTITY, id });
            }
            raw.prepare_cached(INSERT_MEMORY)
                .and_then(|mut q| {
                    q.query_row(
                        rusqlite::params![
                            memory.namespace,
                            memory.key,
                            latest + 1,
                            json_text(&memory.value),
                            memory.memory_type.as_str(),
                            memory.metadata.as_ref().map(json_text),
                            memory.created_by,
                            now,
                        ],
                        MemoryRow::from_raw,
                    )
                })
                .map_err(raw_on(ENTITY, &id))
        })
        .await?;
        Memory::try_from(row)
    }

    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Memory>, DatabaseError> {
        let row = sqlx::query_file_as!(MemoryRow, "src/queries/memory_get.sql", namespace, key)
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
        let version = i64::from(version);
        let row = sqlx::query_as!(
            MemoryRow,
            "SELECT namespace, key, version, value, memory_type, is_deleted, metadata,
                 created_by, updated_by, created_at, updated_at
             FROM memories
             WHERE namespace = ? AND key = ? AND version = ?",
            namespace,
            key,
            version
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
            "SELECT namespace, key, version, value, memory_type, is_deleted, metadata,
                 created_by, updated_by, created_at, updated_at
             FROM memories
             WHERE namespace = ? AND key = ?
             ORDER BY version",
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
        let id = memory_id(namespace, key);
        let (namespace, key, updated_by) = (
            namespace.to_string(),
            key.to_string(),
            updated_by.to_string(),
        );
        let value = json_text(&value);
        let clock = Arc::clone(&self.clock);
        let row = write(&self.pool, move |raw| {
            let now = timestamp::format(&clock.now());
            let row = raw
                .prepare_cached(NEXT_VERSION)
                .and_then(|mut q| {
                    q.query_row(
                        rusqlite::params![value, updated_by, now, namespace, key],
                        MemoryRow::from_raw,
                    )
                    .optional()
                })
                .map_err(raw_on(ENTITY, &id))?;
            row.ok_or_else(|| DatabaseError::not_found(ENTITY, id))
        })
        .await?;
        Memory::try_from(row)
    }

    async fn delete(&self, namespace: &str, key: &str) -> Result<(), DatabaseError> {
        let id = memory_id(namespace, key);
        let (namespace, key) = (namespace.to_string(), key.to_string());
        write(&self.pool, move |raw| {
            change_one(raw, DELETE_MEMORY, [&namespace, &key], ENTITY, &id)?;
            Ok(())
        })
        .await
    }

    async fn count(&self, namespace_prefix: &str) -> Result<i64, DatabaseError> {
        let upper = prefix_upper_bound(namespace_prefix);
        // A BLOB sorts after every TEXT value: X'FF' as the upper bound means "no bound".
        sqlx::query_scalar!(
            r#"SELECT COUNT(*) AS "count!: i64" FROM memories m
               WHERE m.namespace >= ? AND m.namespace < COALESCE(?, X'FF')
                 AND m.is_deleted = 0
                 AND m.version = (SELECT MAX(v.version) FROM memories v
                                  WHERE v.namespace = m.namespace AND v.key = m.key)"#,
            namespace_prefix,
            upper
        )
        .fetch_one(&self.pool)
        .await
        .map_err(on(ENTITY, namespace_prefix))
    }

    async fn search(
        &self,
        namespace_prefix: &str,
        memory_type: Option<MemoryType>,
        limit: usize,
    ) -> Result<Vec<Memory>, DatabaseError> {
        check_page("limit", u64::try_from(limit).unwrap_or(u64::MAX))?;
        let upper = prefix_upper_bound(namespace_prefix);
        let memory_type = memory_type.map(MemoryType::as_str);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = sqlx::query_file_as!(
            MemoryRow,
            "src/queries/memory_search.sql",
            namespace_prefix,
            upper,
            memory_type,
            memory_type,
            limit
        )
        .fetch_all(&self.pool)
        .await
        .map_err(on(ENTITY, namespace_prefix))?;
        memories_from_rows(rows)
    }
}
