//! Storage of sessions, their state and their event logs.

use async_trait::async_trait;
use serde_json::Value;
use uuid::Uuid;

use crate::error::DatabaseError;
use crate::models::{NewSessionEvent, Session, SessionEvent};

/// Stores sessions.
#[async_trait]
pub trait SessionRepository: Send + Sync {
    /// Stores a new session.
    ///
    /// # Errors
    /// `Validation` when [`Session::validate`] rejects it; `UniqueViolation` when the id is
    /// taken.
    async fn create(&self, session: Session) -> Result<(), DatabaseError>;

    /// The session with this id, or `None`.
    ///
    /// # Errors
    /// `CorruptRow` when the stored row does not parse.
    async fn get(&self, id: Uuid) -> Result<Option<Session>, DatabaseError>;

    /// Appends an event to a session's log, stamped now, with the next sequence number.
    ///
    /// # Errors
    /// `NotFound` when no session has this id; `Validation` when
    /// [`NewSessionEvent::validate`] rejects the event.
    async fn append_event(
        &self,
        session_id: Uuid,
        event: NewSessionEvent,
    ) -> Result<SessionEvent, DatabaseError>;

    /// Up to `limit` events of a session, after skipping `offset`, in the order they happened
    /// (timestamp, then sequence).
    ///
    /// # Errors
    /// `Validation` for a `limit` outside 1 to [`crate::limits::MAX_PAGE`]; `NotFound` when no
    /// session has this id; `CorruptRow` when a stored row does not parse.
    async fn get_events(
        &self,
        session_id: Uuid,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<SessionEvent>, DatabaseError>;

    /// The value of one state key, or `None` when the key is not set.
    ///
    /// # Errors
    /// `NotFound` when no session has this id; `Validation` for a key that
    /// [`crate::models::check_state_key`] rejects.
    async fn get_state(&self, session_id: Uuid, key: &str) -> Result<Option<Value>, DatabaseError>;

    /// Sets one state key, atomically: concurrent writers of other keys lose nothing.
    ///
    /// # Errors
    /// `NotFound` when no session has this id; `Validation` for a key that
    /// [`crate::models::check_state_key`] rejects, or a value nested deeper than
    /// [`crate::models::MAX_JSON_DEPTH`].
    async fn set_state(
        &self,
        session_id: Uuid,
        key: &str,
        value: Value,
    ) -> Result<(), DatabaseError>;

    /// Deletes a session and its events. Its tasks keep existing without a session.
    ///
    /// # Errors
    /// `NotFound` when no session has this id.
    async fn delete(&self, id: Uuid) -> Result<(), DatabaseError>;
}
