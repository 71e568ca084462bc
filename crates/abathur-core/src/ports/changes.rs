//! The change port: how a process learns that the database may have changed, so that an idle
//! worker or a waiting claim looks again at once instead of claiming in a busy loop.
//!
//! A backend answers with a [`ChangeSubscription`], taken before the caller looks at the
//! queue and awaited after: a change committed in between is never missed. SQLite polls its
//! `data_version` counter on a connection of its own; PostgreSQL would `LISTEN` on one and
//! await `NOTIFY`. A wake-up may be spurious: it only says "look again".

use std::time::Duration;

use async_trait::async_trait;

use crate::error::DatabaseError;

/// The source of change subscriptions of one database.
#[async_trait]
pub trait Changes: Send + Sync {
    /// A subscription that fires on changes committed after this call returns, by any
    /// connection of any process. Each holds what it needs to watch (SQLite: a connection of
    /// its own), so take one per watcher and share it rather than take one per wait.
    ///
    /// # Errors
    /// The backend's error when it cannot start watching (no connection, or the change
    /// counter cannot be read). Callers may fall back to looking again at fixed intervals.
    async fn subscribe(&self) -> Result<Box<dyn ChangeSubscription>, DatabaseError>;
}

/// What [`ChangeSubscription::changed`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The database may have changed since the last call returned (or since the subscription
    /// was taken).
    Seen,
    /// Nothing changed within the time given.
    TimedOut,
}

/// A watch on the database, from [`Changes::subscribe`].
#[async_trait]
pub trait ChangeSubscription: Send + std::fmt::Debug {
    /// Returns [`Change::Seen`] as soon as the database may have changed since the previous
    /// call returned, or [`Change::TimedOut`] after `at_most`, whichever comes first.
    /// Cancel-safe: a change seen by a call that is dropped is reported by the next.
    ///
    /// # Errors
    /// The backend's error when the watch broke (the connection was lost); the subscription
    /// may work again on the next call, or the caller may take a new one.
    async fn changed(&mut self, at_most: Duration) -> Result<Change, DatabaseError>;

    /// Ends the watch and waits until what it held is released (SQLite: its connection is
    /// closed, so that the last connection to close can checkpoint the WAL). Dropping a
    /// subscription releases it too, later.
    async fn close(self: Box<Self>);
}
