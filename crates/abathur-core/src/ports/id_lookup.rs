use async_trait::async_trait;
use uuid::Uuid;

use crate::error::DatabaseError;

/// The kinds of record whose ids people type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Task,
    /// A claim's attempt: the lease token.
    Attempt,
    Session,
    Agent,
}

impl IdKind {
    /// The record's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Task => "task",
            Self::Attempt => "attempt",
            Self::Session => "session",
            Self::Agent => "agent",
        }
    }
}

/// Finds ids by their beginning, so that people can type a short unambiguous prefix of an id,
/// as with git commits.
#[async_trait]
pub trait IdLookup: Send + Sync {
    /// Up to `limit` ids of `kind` that start with `prefix` (lower-case hex digits and
    /// hyphens, as ids are written), in id order.
    ///
    /// # Errors
    /// Only the store's own failures; no match is an empty list.
    async fn ids_with_prefix(
        &self,
        kind: IdKind,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<Uuid>, DatabaseError>;
}
