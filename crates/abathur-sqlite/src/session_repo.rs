//! [`SessionRepository`] on SQLite: `sessions` and its append-only `session_events`.

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

use super::connection::begin_write;
use super::errors::{classify, on};
use super::row::{json_text, RowContext};

const ENTITY: &str = "session";

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
        sqlx::query!(
            "INSERT INTO sessions (id, app_name, user_id, project_id, state, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
            id,
            session.app_name,
            session.user_id,
            session.project_id,
            state,
            created_at,
            updated_at
        )
        .execute(&self.pool)
        .await
        .map_err(on(ENTITY, &id))?;
        Ok(())
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
        let now = timestamp::format(&self.clock.now());
        let content = json_text(&event.content);
        let mut tx = begin_write(&self.pool).await?;
        let touched = sqlx::query!("UPDATE sessions SET updated_at = ? WHERE id = ?", now, id)
            .execute(&mut *tx)
            .await
            .map_err(on(ENTITY, &id))?
            .rows_affected();
        if touched == 0 {
            return Err(DatabaseError::not_found(ENTITY, id));
        }
        let row = sqlx::query_as!(
            EventRow,
            r#"INSERT INTO session_events (session_id, sequence, event_type, actor, content, timestamp)
               SELECT ?, COALESCE(MAX(sequence), 0) + 1, ?, ?, ?, ?
               FROM session_events WHERE session_id = ?
               RETURNING session_id AS "session_id!", sequence AS "sequence!",
                   event_type AS "event_type!", actor AS "actor!", content AS "content!",
                   timestamp AS "timestamp!""#,
            id,
            event.event_type,
            event.actor,
            content,
            now,
            id
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| classify(e, "session event", &id))?;
        tx.commit().await.map_err(on(ENTITY, &id))?;
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
        let now = timestamp::format(&self.clock.now());
        // One statement, so concurrent writers of other keys never overwrite each other.
        let updated = sqlx::query!(
            "UPDATE sessions SET state = json_set(state, ?, json(?)), updated_at = ? WHERE id = ?",
            path,
            value,
            now,
            id
        )
        .execute(&self.pool)
        .await
        .map_err(on(ENTITY, &id))?
        .rows_affected();
        if updated == 0 {
            return Err(DatabaseError::not_found(ENTITY, id));
        }
        Ok(())
    }

    async fn delete(&self, id: Uuid) -> Result<(), DatabaseError> {
        let id = id.to_string();
        let deleted = sqlx::query!("DELETE FROM sessions WHERE id = ?", id)
            .execute(&self.pool)
            .await
            .map_err(on(ENTITY, &id))?
            .rows_affected();
        if deleted == 0 {
            return Err(DatabaseError::not_found(ENTITY, id));
        }
        Ok(())
    }
}
