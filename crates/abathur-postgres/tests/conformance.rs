//! The conformance suite of the ports (`abathur-conformance`) against PostgreSQL: each case on
//! a database of its own on the test server (`ABATHUR_TEST_POSTGRES`), dropped after it; once
//! with the queue store of one transaction per operation, once with the group-commit store.

use std::any::Any;
use std::sync::Arc;

use abathur_conformance::{Backend, Ports};
use abathur_core::clock::Clock;
use abathur_postgres::testing::TestDatabase;
use abathur_postgres::{
    PgAgentRepository, PgChanges, PgConfig, PgGroupCommitQueueStore, PgIdLookup,
    PgMemoryRepository, PgQueueStore, PgSessionRepository, PgTaskRepository,
};

/// PostgreSQL, with a small pool: a case runs one call at a time (a change subscription holds
/// a connection of its own), and hundreds of cases each open a database.
struct Postgres {
    /// The group-commit queue store (`PgGroupCommitQueueStore`) instead of `PgQueueStore`.
    grouped: bool,
}

#[async_trait::async_trait]
impl Backend for Postgres {
    async fn open(&self, clock: Arc<dyn Clock>) -> Ports {
        let (test, db) = TestDatabase::migrated(PgConfig {
            max_connections: 4,
            ..PgConfig::default()
        })
        .await;
        let pool = db.pool().clone();
        Ports {
            queue: if self.grouped {
                Arc::new(PgGroupCommitQueueStore::new(pool.clone()))
            } else {
                Arc::new(PgQueueStore::new(pool.clone()))
            },
            tasks: Arc::new(PgTaskRepository::with_clock(pool.clone(), clock.clone())),
            memories: Arc::new(PgMemoryRepository::with_clock(pool.clone(), clock.clone())),
            sessions: Arc::new(PgSessionRepository::with_clock(pool.clone(), clock.clone())),
            agents: Arc::new(PgAgentRepository::with_clock(pool.clone(), clock)),
            ids: Arc::new(PgIdLookup::new(pool.clone())),
            changes: Arc::new(PgChanges::new(pool)),
            // Dropped after the case: the pool first, then the database.
            keep_alive: Some(Box::new((db, test)) as Box<dyn Any + Send + Sync>),
        }
    }
}

abathur_conformance::suite!(Postgres { grouped: false });

/// The group-commit queue store: completions share transactions and statements.
mod group_commit {
    abathur_conformance::suite!(super::Postgres { grouped: true });
}
