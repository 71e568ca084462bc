//! What a backend hands the suite: one implementation of every port, on one fresh database.

use std::any::Any;
use std::sync::Arc;

use abathur_core::clock::Clock;
use abathur_core::ports::{
    AgentRepository, Changes, IdLookup, MemoryRepository, SessionRepository, TaskRepository,
};
use abathur_core::queue::QueueStore;
use async_trait::async_trait;

/// Every port of one database.
pub struct Ports {
    pub queue: Arc<dyn QueueStore>,
    pub tasks: Arc<dyn TaskRepository>,
    pub memories: Arc<dyn MemoryRepository>,
    pub sessions: Arc<dyn SessionRepository>,
    pub agents: Arc<dyn AgentRepository>,
    pub ids: Arc<dyn IdLookup>,
    /// Subscriptions to the database's changes.
    pub changes: Arc<dyn Changes>,
    /// Whatever must live as long as the ports (a temporary folder, a server handle); dropped
    /// after the case.
    pub keep_alive: Option<Box<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ports").finish_non_exhaustive()
    }
}

/// A way to open a database of one backend.
#[async_trait]
pub trait Backend: Send + Sync {
    /// A fresh, empty database with its schema in place, and its ports. Writes that stamp a
    /// time of their own (memories, session events, agents' heartbeats, the repositories'
    /// `last_updated_at`) take it from `clock`; the queue gets its time from `TaskQueue`,
    /// which the suite builds over [`Ports::queue`] with the same clock.
    ///
    /// # Panics
    /// When the database cannot be opened: there is nothing to test then.
    async fn open(&self, clock: Arc<dyn Clock>) -> Ports;
}
