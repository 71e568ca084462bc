//! How much room the database takes: the file, its WAL, the pages SQLite keeps free for reuse,
//! and the bytes of each table with its indexes. What `abathur db status` shows, so that a
//! user can see what retention (`abathur prune`) frees.

use std::collections::BTreeMap;
use std::path::Path;

use abathur_core::error::DatabaseError;
use sqlx::SqlitePool;

use super::errors::classify;

/// The database's sizes, in bytes unless said otherwise.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StorageSizes {
    /// The database file (0 in memory).
    pub file_bytes: u64,
    /// Its write-ahead log, which a checkpoint folds back into the file (0 when there is none).
    pub wal_bytes: u64,
    /// SQLite's page size.
    pub page_size: u64,
    /// Pages in the file.
    pub page_count: u64,
    /// Pages in the file that hold nothing: freed by deletes (a prune), reused by new rows
    /// before the file grows again. `VACUUM` gives them back to the disk.
    pub free_pages: u64,
    /// Bytes per table, its indexes included (SQLite's `dbstat`), the largest first in the
    /// human form; SQLite's and sqlx's own tables left out.
    pub tables: BTreeMap<String, u64>,
}

/// Reads the sizes of the database `pool` opens, whose file is at `file` (`None` in memory).
///
/// # Errors
/// The classified error of a statement that fails.
pub async fn storage_sizes(
    pool: &SqlitePool,
    file: Option<&Path>,
) -> Result<StorageSizes, DatabaseError> {
    let failed = |e: sqlx::Error| classify(e, "database", "");
    let pragma = |name: &'static str| async move {
        sqlx::query_scalar::<_, i64>(name)
            .fetch_one(pool)
            .await
            .map_err(failed)
            .map(|n| u64::try_from(n).unwrap_or(0))
    };
    let page_size = pragma("PRAGMA page_size").await?;
    let page_count = pragma("PRAGMA page_count").await?;
    let free_pages = pragma("PRAGMA freelist_count").await?;
    // Each index counts toward its table; `aggregate` has dbstat sum each b-tree for us.
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT s.tbl_name, SUM(d.pgsize) FROM dbstat('main', 1) d
         JOIN sqlite_schema s ON s.name = d.name
         WHERE s.tbl_name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
           AND s.tbl_name NOT LIKE '\\_sqlx\\_%' ESCAPE '\\'
         GROUP BY s.tbl_name",
    )
    .fetch_all(pool)
    .await
    .map_err(failed)?;
    let tables = rows
        .into_iter()
        .map(|(name, bytes)| (name, u64::try_from(bytes).unwrap_or(0)))
        .collect();
    let len = |path: &Path| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let (file_bytes, wal_bytes) = match file {
        Some(file) => {
            let mut wal = file.as_os_str().to_owned();
            wal.push("-wal");
            (len(file), len(Path::new(&wal)))
        }
        None => (0, 0),
    };
    Ok(StorageSizes {
        file_bytes,
        wal_bytes,
        page_size,
        page_count,
        free_pages,
        tables,
    })
}
