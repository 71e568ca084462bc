//! The conformance suite of the ports (`abathur-conformance`) against SQLite, in the three ways
//! it runs: a file in WAL mode (production), an in-memory database, and the group-commit queue
//! store on a file.

use std::any::Any;
use std::sync::Arc;

use abathur_conformance::{Backend, Ports};
use abathur_core::clock::Clock;
use abathur_core::queue::QueueStore;
use abathur_sqlite::{
    AgentRepositoryImpl, DatabaseConfig, DatabaseConnection, GroupCommitQueueStore, IdLookupImpl,
    MemoryRepositoryImpl, QueueStoreImpl, SessionRepositoryImpl, SqliteChanges, TaskRepositoryImpl,
};
use tempfile::TempDir;

/// Which queue store the ports use.
#[derive(Debug, Clone, Copy)]
enum Store {
    /// `QueueStoreImpl`: one transaction per operation.
    Plain,
    /// `GroupCommitQueueStore`: operations grouped into shared transactions.
    GroupCommit,
}

/// Where the database lives.
#[derive(Debug, Clone, Copy)]
enum Place {
    /// A fresh file in a temporary folder, in WAL mode.
    File,
    /// `sqlite::memory:`.
    Memory,
}

/// One SQLite configuration.
#[derive(Debug, Clone, Copy)]
struct Sqlite {
    place: Place,
    store: Store,
}

/// The production settings, but with one connection kept open rather than five: a case runs
/// one call at a time, and hundreds of cases each open a database.
fn config() -> DatabaseConfig {
    DatabaseConfig {
        min_connections: 1,
        ..DatabaseConfig::default()
    }
}

#[async_trait::async_trait]
impl Backend for Sqlite {
    async fn open(&self, clock: Arc<dyn Clock>) -> Ports {
        let (db, dir) = match self.place {
            Place::File => {
                let dir = TempDir::new().expect("a temporary folder");
                let db = DatabaseConnection::open_path(&dir.path().join("abathur.db"), config())
                    .await
                    .expect("open the database file");
                (db, Some(dir))
            }
            Place::Memory => {
                let db = DatabaseConnection::with_config("sqlite::memory:", config())
                    .await
                    .expect("open an in-memory database");
                (db, None)
            }
        };
        db.migrate().await.expect("migrate");
        let pool = db.pool().clone();
        let queue: Arc<dyn QueueStore> = match self.store {
            Store::Plain => Arc::new(QueueStoreImpl::new(pool.clone())),
            Store::GroupCommit => Arc::new(GroupCommitQueueStore::new(pool.clone())),
        };
        Ports {
            queue,
            tasks: Arc::new(TaskRepositoryImpl::with_clock(pool.clone(), clock.clone())),
            memories: Arc::new(MemoryRepositoryImpl::with_clock(
                pool.clone(),
                clock.clone(),
            )),
            sessions: Arc::new(SessionRepositoryImpl::with_clock(
                pool.clone(),
                clock.clone(),
            )),
            agents: Arc::new(AgentRepositoryImpl::with_clock(pool.clone(), clock)),
            ids: Arc::new(IdLookupImpl::new(pool.clone())),
            changes: Arc::new(SqliteChanges::new(pool)),
            keep_alive: dir.map(|d| Box::new(d) as Box<dyn Any + Send + Sync>),
        }
    }
}

/// SQLite on a file in WAL mode, as in production.
mod file {
    abathur_conformance::suite!(super::Sqlite {
        place: super::Place::File,
        store: super::Store::Plain,
    });
}

/// SQLite in memory (`sqlite::memory:`).
mod memory {
    abathur_conformance::suite!(super::Sqlite {
        place: super::Place::Memory,
        store: super::Store::Plain,
    });
}

/// The group-commit queue store on a file.
mod group_commit {
    abathur_conformance::suite!(super::Sqlite {
        place: super::Place::File,
        store: super::Store::GroupCommit,
    });
}
