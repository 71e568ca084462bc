//! The admin port on SQLite: [`DatabaseConnection`]'s schema, status, check and backup, and
//! the sizes of the file and its tables ([`storage_sizes`]), as the port's reports.

use std::path::{Path, PathBuf};

use abathur_core::error::DatabaseError;
use abathur_core::ports::{
    CheckReport, DatabaseAdmin, DatabaseStatus, ForeignKeyProblem, StorageSizes,
};
use async_trait::async_trait;

use super::connection::{self, DatabaseConnection};
use super::storage::{self, storage_sizes};

/// [`DatabaseAdmin`] for an open SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteAdmin {
    db: DatabaseConnection,
    /// The database's file, `None` in memory: where its sizes are read.
    file: Option<PathBuf>,
}

impl SqliteAdmin {
    /// The admin of `db`, whose file is at `file` (`None` for a database in memory).
    pub fn new(db: DatabaseConnection, file: Option<PathBuf>) -> Self {
        Self { db, file }
    }
}

#[async_trait]
impl DatabaseAdmin for SqliteAdmin {
    async fn migrate(&self) -> Result<(), DatabaseError> {
        self.db.migrate().await
    }

    async fn schema_version(&self) -> Result<Option<i64>, DatabaseError> {
        self.db.schema_version().await
    }

    async fn status(&self) -> Result<DatabaseStatus, DatabaseError> {
        self.db.status().await.map(Into::into)
    }

    async fn storage(&self) -> Result<StorageSizes, DatabaseError> {
        storage_sizes(self.db.pool(), self.file.as_deref())
            .await
            .map(Into::into)
    }

    async fn check(&self) -> Result<CheckReport, DatabaseError> {
        self.db.check().await.map(Into::into)
    }

    async fn backup_to(&self, target: &Path) -> Result<(), DatabaseError> {
        self.db.backup_to(target).await
    }

    async fn close(&self) {
        self.db.close().await;
    }
}

impl From<connection::DatabaseStatus> for DatabaseStatus {
    fn from(status: connection::DatabaseStatus) -> Self {
        Self {
            schema_version: status.schema_version,
            journal_mode: status.journal_mode,
            tables: status.tables,
            tasks_by_status: status.tasks_by_status,
        }
    }
}

impl From<storage::StorageSizes> for StorageSizes {
    fn from(sizes: storage::StorageSizes) -> Self {
        Self {
            file_bytes: sizes.file_bytes,
            wal_bytes: sizes.wal_bytes,
            page_size: sizes.page_size,
            page_count: sizes.page_count,
            free_pages: sizes.free_pages,
            tables: sizes.tables,
            table_stats: std::collections::BTreeMap::new(),
        }
    }
}

impl From<connection::CheckReport> for CheckReport {
    fn from(report: connection::CheckReport) -> Self {
        Self {
            integrity_problems: report.integrity_problems,
            repairable_problems: report.repairable_problems,
            foreign_key_problems: report
                .foreign_key_problems
                .into_iter()
                .map(|p| ForeignKeyProblem {
                    table: p.table,
                    rowid: p.rowid,
                    parent: p.parent,
                })
                .collect(),
        }
    }
}
