//! The session tools: a shared state object and an append-only event log per session.

use abathur_core::clock::{Clock, SystemClock};
use abathur_core::error::DatabaseError;
use abathur_core::models::{NewSessionEvent, Session, SessionEvent};
use abathur_core::ports::SessionRepository;
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::params::{
    parse_id, SessionAppendEvent, SessionCreate, SessionGetState, SessionSetState,
};
use super::reply::ToolError;

/// `session_create`.
pub async fn create(
    repo: &dyn SessionRepository,
    args: SessionCreate,
) -> Result<Session, ToolError> {
    let mut session = Session::new(args.app_name, args.user_id, SystemClock.now());
    session.project_id = args.project_id;
    session.state = args.state.unwrap_or_default();
    repo.create(session.clone()).await?;
    Ok(session)
}

/// `session_append_event`.
pub async fn append_event(
    repo: &dyn SessionRepository,
    args: SessionAppendEvent,
) -> Result<SessionEvent, ToolError> {
    let session_id = parse_id("session_id", &args.session_id)?;
    let event = NewSessionEvent {
        event_type: args.event_type,
        actor: args.actor,
        content: args.content,
    };
    Ok(repo.append_event(session_id, event).await?)
}

/// What `session_get_state` returns for one key.
#[derive(Debug, Serialize)]
pub struct StateKey {
    pub session_id: Uuid,
    pub key: String,
    /// Whether the key is set.
    pub found: bool,
    /// Its value; null when not set.
    pub value: Value,
}

/// What `session_get_state` returns for the whole state.
#[derive(Debug, Serialize)]
pub struct State {
    pub session_id: Uuid,
    pub state: Map<String, Value>,
}

/// What `session_get_state` returns: one key, or all of them.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum StateView {
    Key(StateKey),
    All(State),
}

/// `session_get_state`.
pub async fn get_state(
    repo: &dyn SessionRepository,
    args: SessionGetState,
) -> Result<StateView, ToolError> {
    let session_id = parse_id("session_id", &args.session_id)?;
    match args.key {
        Some(key) => {
            let value = repo.get_state(session_id, &key).await?;
            Ok(StateView::Key(StateKey {
                session_id,
                key,
                found: value.is_some(),
                value: value.unwrap_or(Value::Null),
            }))
        }
        None => {
            let session = repo
                .get(session_id)
                .await?
                .ok_or_else(|| DatabaseError::not_found("session", session_id))?;
            Ok(StateView::All(State {
                session_id,
                state: session.state,
            }))
        }
    }
}

/// What `session_set_state` returns.
#[derive(Debug, Serialize)]
pub struct StateSet {
    pub session_id: Uuid,
    pub key: String,
    pub value: Value,
}

/// `session_set_state`.
pub async fn set_state(
    repo: &dyn SessionRepository,
    args: SessionSetState,
) -> Result<StateSet, ToolError> {
    let session_id = parse_id("session_id", &args.session_id)?;
    repo.set_state(session_id, &args.key, args.value.clone())
        .await?;
    Ok(StateSet {
        session_id,
        key: args.key,
        value: args.value,
    })
}
