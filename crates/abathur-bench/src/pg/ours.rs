//! Our PostgreSQL adapter as the scenarios drive it: the queue over `PgQueueStore` or
//! `PgGroupCommitQueueStore`, and what an error that reached the caller was.

use std::sync::Arc;

use abathur_core::error::DatabaseError;
use abathur_core::queue::{QueueError, TaskQueue};
use abathur_postgres::{PgDatabase, PgGroupCommitQueueStore, PgQueueStore};

/// Our queue on `db`'s pool: `PgQueueStore`, one transaction per operation, time from the
/// server's clock.
pub fn queue(db: &PgDatabase) -> TaskQueue {
    TaskQueue::new(Arc::new(PgQueueStore::new(db.pool().clone())))
}

/// Our queue on `db`'s pool through group commit (`PgGroupCommitQueueStore`, what `abathur
/// worker` and `abathur mcp` use): completions waiting at once share a transaction.
pub fn grouped_queue(db: &PgDatabase) -> TaskQueue {
    TaskQueue::new(Arc::new(PgGroupCommitQueueStore::new(db.pool().clone())))
}

/// Whether an error is the adapter giving up on a conflict: a serialization failure or a
/// deadlock it could not get past by retrying (both are classified `Busy`, as is a lock or
/// statement timeout). None of these may reach a user.
pub fn is_conflict(e: &QueueError) -> bool {
    matches!(
        e,
        QueueError::Database(DatabaseError::Busy | DatabaseError::Timeout)
    )
}
