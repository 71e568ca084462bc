//! A conversation or run of an application with its agents: shared state plus an append-only
//! log of events.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::ValidationError;
use crate::timestamp;

/// A session and its state, a JSON object of keys set one at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: Uuid,
    pub app_name: String,
    pub user_id: String,
    pub project_id: Option<String>,
    pub state: Map<String, Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Session {
    /// An empty session of `app_name` for `user_id`, created at `now`.
    pub fn new(
        app_name: impl Into<String>,
        user_id: impl Into<String>,
        now: DateTime<Utc>,
    ) -> Self {
        let now = timestamp::truncate_to_micros(now);
        Self {
            id: Uuid::new_v4(),
            app_name: app_name.into(),
            user_id: user_id.into(),
            project_id: None,
            state: Map::new(),
            created_at: now,
            updated_at: now,
        }
    }

    /// Checks the rules every stored session obeys.
    ///
    /// # Errors
    /// Returns a [`ValidationError`] for an empty app name or user id, a NUL character, a state
    /// key that [`check_state_key`] rejects, a state value nested deeper than
    /// [`super::MAX_JSON_DEPTH`], or a timestamp outside years 0000–9999.
    pub fn validate(&self) -> Result<(), ValidationError> {
        super::check_name("app_name", &self.app_name)?;
        super::check_name("user_id", &self.user_id)?;
        super::check_opt_name("project_id", self.project_id.as_deref())?;
        for (key, value) in &self.state {
            check_state_key(key)?;
            check_state_value(value)?;
        }
        timestamp::check("created_at", &self.created_at)?;
        timestamp::check("updated_at", &self.updated_at)
    }
}

/// Checks a session state key: not empty, and without a double quote, which no store's JSON
/// path syntax can address in every backend alike.
///
/// # Errors
/// Returns a [`ValidationError`] for the field `key`.
pub fn check_state_key(key: &str) -> Result<(), ValidationError> {
    if key.is_empty() {
        return Err(ValidationError::new("key", "must not be empty"));
    }
    super::check_text("key", key, crate::limits::MAX_NAME_BYTES)?;
    if key.contains('"') {
        return Err(ValidationError::new(
            "key",
            format!("{key:?} contains a double quote, which state keys may not"),
        ));
    }
    Ok(())
}

/// Checks one value of a session's state: within [`crate::limits::MAX_EVENT_CONTENT_BYTES`]
/// and nested at most [`super::MAX_JSON_DEPTH`] deep.
///
/// # Errors
/// Returns a [`ValidationError`] for the field `value`.
pub fn check_state_value(value: &Value) -> Result<(), ValidationError> {
    super::check_json("value", value, crate::limits::MAX_EVENT_CONTENT_BYTES)
}

/// One entry of a session's event log. Events are never changed once appended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionEvent {
    pub session_id: Uuid,
    /// 1 for the session's first event, one more for each later one.
    pub sequence: u64,
    pub event_type: String,
    pub actor: String,
    pub content: Value,
    pub timestamp: DateTime<Utc>,
}

/// An event to append; the store assigns its sequence number and timestamp.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewSessionEvent {
    pub event_type: String,
    pub actor: String,
    pub content: Value,
}

impl NewSessionEvent {
    /// Checks that the event type and actor are not empty and hold no NUL character, and that
    /// the content nests at most [`super::MAX_JSON_DEPTH`] deep.
    ///
    /// # Errors
    /// Returns a [`ValidationError`] naming the field at fault.
    pub fn validate(&self) -> Result<(), ValidationError> {
        super::check_name("event_type", &self.event_type)?;
        super::check_name("actor", &self.actor)?;
        super::check_json(
            "content",
            &self.content,
            crate::limits::MAX_EVENT_CONTENT_BYTES,
        )
    }
}
