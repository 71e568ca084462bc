//! What the agents know and did: `GET /api/v1/memories` (browse and search by namespace),
//! `GET /api/v1/memory` (every version of one key) and `GET /api/v1/sessions/{id}` (a
//! session's state and event log).

use abathur_core::models::{Memory, MemoryType, SessionEvent};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State as Extract};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::api::{ApiError, ErrorBody, State};

/// The most memories a search answers with.
const MAX_MEMORIES: u32 = 500;

/// The most session events a page holds.
const MAX_EVENTS: u32 = 500;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MemoryQuery {
    /// Namespaces starting with this (matched literally; empty for every namespace).
    pub prefix: Option<String>,
    /// `semantic`, `episodic` or `procedural`.
    #[param(pattern = "^(semantic|episodic|procedural)?$")]
    pub memory_type: Option<String>,
    /// At most this many, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// One version of a memory.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemoryRow {
    pub namespace: String,
    pub key: String,
    pub value: Value,
    /// `semantic`, `episodic` or `procedural`.
    pub memory_type: String,
    pub version: u32,
    pub is_deleted: bool,
    pub metadata: Option<Value>,
    pub created_by: String,
    pub updated_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Memory> for MemoryRow {
    fn from(memory: Memory) -> Self {
        Self {
            namespace: memory.namespace,
            key: memory.key,
            value: memory.value,
            memory_type: memory.memory_type.as_str().to_string(),
            version: memory.version,
            is_deleted: memory.is_deleted,
            metadata: memory.metadata,
            created_by: memory.created_by,
            updated_by: memory.updated_by,
            created_at: memory.created_at,
            updated_at: memory.updated_at,
        }
    }
}

/// Live memories, by namespace and key.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemoryList {
    pub memories: Vec<MemoryRow>,
    /// How many live keys the namespaces under the prefix hold in all, of every type.
    pub total: u64,
}

/// The live memories under a namespace prefix, ordered by namespace and key.
#[utoipa::path(get, path = "/api/v1/memories", tag = "memory", params(MemoryQuery),
    responses((status = 200, body = MemoryList), (status = 400, body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
pub async fn memories(
    Extract(state): Extract<State>,
    query: Result<Query<MemoryQuery>, QueryRejection>,
) -> Result<Json<MemoryList>, ApiError> {
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_MEMORIES).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit {limit} is outside 1 to {MAX_MEMORIES}"
        )));
    }
    let memory_type = match query.memory_type.as_deref() {
        None | Some("") => None,
        Some(text) => Some(
            text.parse::<MemoryType>()
                .map_err(|e| ApiError::invalid(e.to_string()))?,
        ),
    };
    let prefix = query.prefix.unwrap_or_default();
    let memories = state
        .memories()
        .search(&prefix, memory_type, limit as usize)
        .await?;
    let total = state.memories().count(&prefix).await?;
    Ok(Json(MemoryList {
        memories: memories.into_iter().map(MemoryRow::from).collect(),
        total: u64::try_from(total).unwrap_or(0),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KeyQuery {
    pub namespace: String,
    pub key: String,
}

/// Every version of a key.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemoryHistory {
    /// Oldest first, deleted ones included.
    pub versions: Vec<MemoryRow>,
}

/// Every version of one key, oldest first: what the agents learned, and how it changed.
#[utoipa::path(get, path = "/api/v1/memory", tag = "memory", params(KeyQuery),
    responses((status = 200, body = MemoryHistory), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn memory_versions(
    Extract(state): Extract<State>,
    query: Result<Query<KeyQuery>, QueryRejection>,
) -> Result<Json<MemoryHistory>, ApiError> {
    let Query(KeyQuery { namespace, key }) = query?;
    let versions = state.memories().list_versions(&namespace, &key).await?;
    if versions.is_empty() {
        return Err(ApiError::not_found(format!(
            "no memory {key:?} in the namespace {namespace:?}"
        )));
    }
    Ok(Json(MemoryHistory {
        versions: versions.into_iter().map(MemoryRow::from).collect(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Skip this many events first.
    pub offset: Option<u64>,
    /// At most this many events, 1 to 500 (default 200).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// A session: who it belongs to, its state, and a page of its event log.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub id: Uuid,
    pub app_name: String,
    pub user_id: String,
    pub project_id: Option<String>,
    #[schema(value_type = Object)]
    pub state: Map<String, Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// In the order they happened.
    pub events: Vec<SessionLogEvent>,
    /// The `offset` of the next page of events; null on the last.
    pub next_offset: Option<u64>,
}

/// One event of a session's log.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionLogEvent {
    pub sequence: u64,
    pub event_type: String,
    pub actor: String,
    pub content: Value,
    pub timestamp: DateTime<Utc>,
}

impl From<SessionEvent> for SessionLogEvent {
    fn from(event: SessionEvent) -> Self {
        Self {
            sequence: event.sequence,
            event_type: event.event_type,
            actor: event.actor,
            content: event.content,
            timestamp: event.timestamp,
        }
    }
}

/// A session's state and a page of its events.
#[utoipa::path(get, path = "/api/v1/sessions/{id}", tag = "memory",
    params(("id" = Uuid, Path, description = "The session's id"), EventQuery),
    responses((status = 200, body = SessionView), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn session(
    Extract(state): Extract<State>,
    id: Result<Path<Uuid>, PathRejection>,
    query: Result<Query<EventQuery>, QueryRejection>,
) -> Result<Json<SessionView>, ApiError> {
    let Path(id) = id?;
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(200);
    if !(1..=MAX_EVENTS).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit {limit} is outside 1 to {MAX_EVENTS}"
        )));
    }
    let offset = query.offset.unwrap_or(0);
    let session = state
        .sessions()
        .get(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("session {id} does not exist")))?;
    let mut events = state.sessions().get_events(id, offset, limit + 1).await?;
    let more = events.len() > limit as usize;
    events.truncate(limit as usize);
    Ok(Json(SessionView {
        id: session.id,
        app_name: session.app_name,
        user_id: session.user_id,
        project_id: session.project_id,
        state: session.state,
        created_at: session.created_at,
        updated_at: session.updated_at,
        events: events.into_iter().map(SessionLogEvent::from).collect(),
        next_offset: more.then(|| offset.saturating_add(u64::from(limit))),
    }))
}
