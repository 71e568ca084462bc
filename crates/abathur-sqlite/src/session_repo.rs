//! [`SessionRepository`] on SQLite: `sessions` and its append-only `session_events`.
//!
//! Reads go through sqlx's checked macros; writes run through [`write`] as the named
//! statements of [`STATEMENTS`], and read the time once the write lock is held.

use std::sync::Arc;

use abathur_core::clock::{Clock, SystemClock};
use abathur_core::error::DatabaseError;
use abathur_core::models::{
    check_state_key, check_state_value, NewSessionEvent, Session, SessionEvent,
};
use abathur_core::ports::SessionRepository;
use abathur_core::timestamp;
use async_trait::async_trait;
use serde_json::Value;
use sqlx::SqlitePool;
use uuid::Uuid;

use super::errors::{on, raw_on};
use super::row::{json_text, RowContext};
use super::writer::{change_one, write};

const ENTITY: &str = "session";

const INSERT_SESSION: &str =
    "INSERT INTO sessions (id, app_name, user_id, project_id, state, created_at, updated_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// Session `?2` was written to at `?1`.
const TOUCH_SESSION: &str = "UPDATE sessions SET updated_at = ?1 WHERE id = ?2";

/// The next event of session `?1`, numbered after its last: type `?2`, actor `?3`, content
/// `?4`, at `?5`.
const APPEND_EVENT: &str = "INSERT INTO session_events
         (session_id, sequence, event_type, actor, content, timestamp)
     SELECT ?1, COALESCE(MAX(sequence), 0) + 1, ?2, ?3, ?4, ?5
     FROM session_events WHERE session_id = ?1
     RETURNING session_id, sequence, event_type, actor, content, timestamp";

/// One top-level key of session `?4`'s state, in one statement, so concurrent writers of
/// other keys never overwrite each other: path `?1`, JSON text `?2`, at `?3`.
const SET_STATE: &str =
    "UPDATE sessions SET state = json_set(state, ?1, json(?2)), updated_at = ?3 WHERE id = ?4";

/// A session with its events (`ON DELETE CASCADE`).
const DELETE_SESSION: &str = "DELETE FROM sessions WHERE id = ?1";

/// Every statement this module runs through rusqlite, for the catalogue test.
#[cfg_attr(not(test), allow(dead_code))] // reason: read only by the catalogue test
pub(crate) const STATEMENTS: &[(&str, &str)] = &[
    ("INSERT_SESSION", INSERT_SESSION),
    ("TOUCH_SESSION", TOUCH_SESSION),
    ("APPEND_EVENT", APPEND_EVENT),
    ("SET_STATE", SET_STATE),
    ("DELETE_SESSION", DELETE_SESSION),
];

/// The SQLite session store.
#[derive(Debug, Clone)]
pub struct SessionRepositoryImpl {
    pool: SqlitePool,
    clock: Arc<dyn Clock>,
}

impl SessionRepositoryImpl {
    /// A repository on `pool`, taking time from the system clock.
    pub fn new(pool: SqlitePool) -> Self {
        Self::with_clock(pool, Arc::new(SystemClock))
    }

    /// A repository on `pool`, taking time from `clock`.
    pub fn with_clock(pool: SqlitePool, clock: Arc<dyn Clock>) -> Self {
        Self { pool, clock }
    }

    async fn exists(&self, id: &str) -> Result<bool, DatabaseError> {
        let exists = sqlx::query_scalar!("SELECT EXISTS (SELECT 1 FROM sessions WHERE id = ?)", id)
            .fetch_one(&self.pool)
            .await
            .map_err(on(ENTITY, id))?;
        Ok(exists != 0)
    }
}

struct SessionRow {
    id: String,
    app_name: String,
    user_id: String,
    project_id: Option<String>,
    state: String,
    created_at: String,
    updated_at: String,
}

impl TryFrom<SessionRow> for Session {
    type Error = DatabaseError;

    fn try_from(r: SessionRow) -> Result<Self, Self::Error> {
        let cx = RowContext {
            table: "sessions",
            id: &r.id,
        };
        let state = match cx.json("state", &r.state)? {
            Value::Object(map) => map,
            other => return Err(cx.corrupt("state", format!("not a JSON object: {other}"))),
        };
        Ok(Session {
            id: cx.uuid("id", &r.id)?,
            state,
            created_at: cx.timestamp("created_at", &r.created_at)?,
            updated_at: cx.timestamp("updated_at", &r.updated_at)?,
            app_name: r.app_name,
            user_id: r.user_id,
            project_id: r.project_id,
        })
    }
}

struct EventRow {
    session_id: String,
    sequence: i64,
    event_type: String,
    actor: String,
    content: String,
    timestamp: String,
}

impl TryFrom<EventRow> for SessionEvent {
    type Error = DatabaseError;

    fn try_from(r: EventRow) -> Result<Self, Self::Error> {
        let id = format!("{}#{}", r.session_id, r.sequence);
        let cx = RowContext {
            table: "session_events",
            id: &id,
        };
        Ok(SessionEvent {
            session_id: cx.uuid("session_id", &r.session_id)?,
            sequence: cx.int("sequence", r.sequence)?,
            content: cx.json("content", &r.content)?,
            timestamp: cx.timestamp("timestamp", &r.timestamp)?,
            event_type: r.event_type,
            actor: r.actor,
        })
    }
}

/// The JSON path of a top-level state key. [`check_state_key`] has ruled out the one
/// character (`"`) that a quoted path label cannot hold. SQLite reads a backslash in a quoted
/// label as the start of a JSON escape, so each one is doubled: left alone, `a\b` would be
/// written as the invalid JSON label `"a\b"`, and a key ending in `\` would swallow the closing
/// quote.
fn state_path(key: &str) -> String {
    format!("$.\"{}\"", key.replace('\\', "\\\\"))
}

#[async_trait]
impl SessionRepository for SessionRepositoryImpl {
    async fn create(&self, session: Session) -> Result<(), DatabaseError> {
        session.validate()?;
        let id = session.id.to_string();
        let state = Value::Object(session.state).to_string();
        let created_at = timestamp::format(&session.created_at);
        let updated_at = timestamp::format(&session.updated_at);
        let (app_name, user_id, project_id) =
            (session.app_name, session.user_id, session.project_id);
        write(&self.pool, move |raw| {
            raw.prepare_cached(INSERT_SESSION)
                .and_then(|mut q| {
                    q.execute(rusqlite::params![
                        id, app_name, user_id, project_id, state, created_at, updated_at
                    ])
                })
                .map_err(raw_on(ENTITY, &id))?;
            Ok(())
        })
        .await
    }

    async fn get(&self, id: Uuid) -> Result<Option<Session>, DatabaseError> {
        let id = id.to_string();
        let row = sqlx::query_as!(
            SessionRow,
            "SELECT id, app_name, user_id, project_id, state, created_at, updated_at
             FROM sessions WHERE id = ?",
            id
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(on(ENTITY, &id))?;
        row.map(Session::try_from).transpose()
    }

    async fn append_event(
        &self,
        session_id: Uuid,
        event: NewSessionEvent,
    ) -> Result<SessionEvent, DatabaseError> {
        event.validate()?;
        let id = session_id.to_string();
        let content = json_text(&event.content);
        let clock = Arc::clone(&self.clock);
        let row = write(&self.pool, move |raw| {
            let now = timestamp::format(&clock.now());
            change_one(raw, TOUCH_SESSION, [&now, &id], ENTITY, &id)?;
            raw.prepare_cached(APPEND_EVENT)
                .and_then(|mut q| {
                    q.query_row(
                        rusqlite::params![id, event.event_type, event.actor, content, now],
                        |r| {
                            Ok(EventRow {
                                session_id: r.get(0)?,
                                sequence: r.get(1)?,
                                event_type: r.get(2)?,
                                actor: r.get(3)?,
                                content: r.get(4)?,
                                timestamp: r.get(5)?,
                            })
                        },
                    )
                })
                .map_err(raw_on("session event", &id))
        })
        .await?;
        SessionEvent::try_from(row)
    }

    async fn get_events(
        &self,
        session_id: Uuid,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<SessionEvent>, DatabaseError> {
        abathur_core::limits::check_page("limit", u64::from(limit))?;
        let id = session_id.to_string();
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let limit = i64::from(limit);
        let rows = sqlx::query_file_as!(
            EventRow,
            "src/queries/session_events.sql",
            id,
            limit,
            offset
        )
        .fetch_all(&self.pool)
        .await
        .map_err(on(ENTITY, &id))?;
        if rows.is_empty() && !self.exists(&id).await? {
            return Err(DatabaseError::not_found(ENTITY, id));
        }
        rows.into_iter().map(SessionEvent::try_from).collect()
    }

    async fn get_state(&self, session_id: Uuid, key: &str) -> Result<Option<Value>, DatabaseError> {
        check_state_key(key)?;
        let id = session_id.to_string();
        let path = state_path(key);
        // `->` returns the value as JSON text (or NULL when the key is absent), unlike
        // json_extract, which would return a JSON string as bare text.
        let row = sqlx::query!(
            r#"SELECT state -> ? AS "value?: String" FROM sessions WHERE id = ?"#,
            path,
            id
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(on(ENTITY, &id))?;
        let Some(row) = row else {
            return Err(DatabaseError::not_found(ENTITY, id));
        };
        let cx = RowContext {
            table: "sessions",
            id: &id,
        };
        cx.opt_json("state", row.value.as_deref())
    }

    async fn set_state(
        &self,
        session_id: Uuid,
        key: &str,
        value: Value,
    ) -> Result<(), DatabaseError> {
        check_state_key(key)?;
        check_state_value(&value)?;
        let id = session_id.to_string();
        let path = state_path(key);
        let value = json_text(&value);
        let clock = Arc::clone(&self.clock);
        write(&self.pool, move |raw| {
            let now = timestamp::format(&clock.now());
            change_one(raw, SET_STATE, [&path, &value, &now, &id], ENTITY, &id)?;
            Ok(())
        })
        .await
    }

    async fn delete(&self, id: Uuid) -> Result<(), DatabaseError> {
        let id = id.to_string();
        write(&self.pool, move |raw| {
            change_one(raw, DELETE_SESSION, [&id], ENTITY, &id)?;
            Ok(())
        })
        .await
    }
}
