//! [`SessionRepository`] on PostgreSQL: `sessions` and its append-only `session_events`.
//!
//! An append locks its session's row first (the `UPDATE` that moves `updated_at`), then numbers
//! its event after the last one committed: appenders to one session on any number of machines
//! take turns, so sequence numbers run 1, 2, 3, ... with no gap and no duplicate, and each
//! event's time (the server's, read once the lock is held) is never before the one numbered
//! before it. The primary key `(session_id, sequence)` backs this up.
//!
//! State is one `jsonb` object; setting a key rewrites that key alone in one statement, which
//! PostgreSQL re-applies to the newest row version when writers race, so writers of other keys
//! lose nothing.

use std::sync::Arc;

use abathur_core::clock::{Clock, SystemClock};
use abathur_core::error::DatabaseError;
use abathur_core::limits::check_page;
use abathur_core::models::{
    check_state_key, check_state_value, NewSessionEvent, Session, SessionEvent,
};
use abathur_core::ports::SessionRepository;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::errors::on;
use crate::repo_support::{check_json_nul, pinned_time, retrying};
use crate::row::RowContext;

const ENTITY: &str = "session";

/// The PostgreSQL session store.
#[derive(Debug, Clone)]
pub struct PgSessionRepository {
    pool: PgPool,
    clock: Arc<dyn Clock>,
}

impl PgSessionRepository {
    /// A repository on `pool`, stamping writes with the server's clock.
    pub fn new(pool: PgPool) -> Self {
        Self::with_clock(pool, Arc::new(SystemClock))
    }

    /// A repository on `pool`, taking time from `clock` (the server's clock when `clock` asks
    /// for the store's own time, as [`SystemClock`] does).
    pub fn with_clock(pool: PgPool, clock: Arc<dyn Clock>) -> Self {
        Self { pool, clock }
    }

    async fn exists(&self, id: Uuid) -> Result<bool, DatabaseError> {
        sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM sessions WHERE id = $1) AS "exists!""#,
            id
        )
        .fetch_one(&self.pool)
        .await
        .map_err(on(ENTITY, &id.to_string()))
    }
}

/// A `sessions` row, column for column.
struct SessionRow {
    id: Uuid,
    app_name: String,
    user_id: String,
    project_id: Option<String>,
    state: Json<Value>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<SessionRow> for Session {
    type Error = DatabaseError;

    fn try_from(r: SessionRow) -> Result<Self, Self::Error> {
        let id = r.id.to_string();
        let cx = RowContext {
            table: "sessions",
            id: &id,
        };
        let state = match r.state.0 {
            Value::Object(map) => map,
            other => return Err(cx.corrupt("state", format!("not a JSON object: {other}"))),
        };
        Ok(Session {
            id: r.id,
            app_name: r.app_name,
            user_id: r.user_id,
            project_id: r.project_id,
            state,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// A `session_events` row, column for column.
struct EventRow {
    session_id: Uuid,
    sequence: i64,
    event_type: String,
    actor: String,
    content: Json<Value>,
    timestamp: DateTime<Utc>,
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
            session_id: r.session_id,
            sequence: cx.int("sequence", r.sequence)?,
            event_type: r.event_type,
            actor: r.actor,
            content: r.content.0,
            timestamp: r.timestamp,
        })
    }
}

#[async_trait]
impl SessionRepository for PgSessionRepository {
    async fn create(&self, session: Session) -> Result<(), DatabaseError> {
        session.validate()?;
        let state = Value::Object(session.state);
        check_json_nul("state", &state)?;
        let id = session.id.to_string();
        let (session_id, state) = (session.id, &state);
        let (app_name, user_id, project_id) = (
            session.app_name.as_str(),
            session.user_id.as_str(),
            session.project_id.as_deref(),
        );
        let (created_at, updated_at) = (session.created_at, session.updated_at);
        retrying(ENTITY, &id, || async move {
            sqlx::query!(
                "INSERT INTO sessions (id, app_name, user_id, project_id, state, created_at,
                     updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                session_id,
                app_name,
                user_id,
                project_id,
                Json(state) as Json<&Value>,
                created_at,
                updated_at
            )
            .execute(&self.pool)
            .await?;
            Ok(Ok(()))
        })
        .await
    }

    async fn get(&self, id: Uuid) -> Result<Option<Session>, DatabaseError> {
        let row = sqlx::query_as!(
            SessionRow,
            r#"SELECT id, app_name, user_id, project_id, state AS "state: Json<Value>",
                   created_at, updated_at
               FROM sessions WHERE id = $1"#,
            id
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(on(ENTITY, &id.to_string()))?;
        row.map(Session::try_from).transpose()
    }

    async fn append_event(
        &self,
        session_id: Uuid,
        event: NewSessionEvent,
    ) -> Result<SessionEvent, DatabaseError> {
        event.validate()?;
        check_json_nul("content", &event.content)?;
        let id = session_id.to_string();
        let at = pinned_time(self.clock.as_ref());
        let (event, id_ref) = (&event, id.as_str());
        let row = retrying("session event", &id, || async move {
            let mut tx = self.pool.begin().await?;
            // Locks the session's row until commit: the next appender waits here, and its time
            // is read once it holds the lock.
            let now = sqlx::query_scalar!(
                "UPDATE sessions SET updated_at = COALESCE($2::timestamptz, clock_timestamp())
                 WHERE id = $1
                 RETURNING updated_at",
                session_id,
                at
            )
            .fetch_optional(&mut *tx)
            .await?;
            let Some(now) = now else {
                return Ok(Err(DatabaseError::not_found(ENTITY, id_ref)));
            };
            // A statement of its own, so that its snapshot, taken after the lock, holds every
            // event committed before.
            let row = sqlx::query_as!(
                EventRow,
                r#"INSERT INTO session_events
                       (session_id, sequence, event_type, actor, content, "timestamp")
                   SELECT $1, COALESCE(MAX(sequence), 0) + 1, $2, $3, $4, $5
                   FROM session_events WHERE session_id = $1
                   RETURNING session_id, sequence, event_type, actor,
                       content AS "content: Json<Value>", "timestamp""#,
                session_id,
                event.event_type,
                event.actor,
                Json(&event.content) as Json<&Value>,
                now
            )
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Ok(row))
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
        check_page("limit", u64::from(limit))?;
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let rows = sqlx::query_as!(
            EventRow,
            r#"SELECT session_id, sequence, event_type, actor, content AS "content: Json<Value>",
                   "timestamp"
               FROM session_events
               WHERE session_id = $1
               ORDER BY "timestamp", sequence
               LIMIT $2 OFFSET $3"#,
            session_id,
            i64::from(limit),
            offset
        )
        .fetch_all(&self.pool)
        .await
        .map_err(on(ENTITY, &session_id.to_string()))?;
        if rows.is_empty() && !self.exists(session_id).await? {
            return Err(DatabaseError::not_found(ENTITY, session_id));
        }
        rows.into_iter().map(SessionEvent::try_from).collect()
    }

    async fn get_state(&self, session_id: Uuid, key: &str) -> Result<Option<Value>, DatabaseError> {
        check_state_key(key)?;
        // `->` with a text operand reads one top-level key, whatever characters it holds: no
        // path syntax. SQL NULL when the key is absent, JSON null when it holds null.
        let row = sqlx::query!(
            r#"SELECT state -> $2::text AS "value?: Json<Value>" FROM sessions WHERE id = $1"#,
            session_id,
            key
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(on(ENTITY, &session_id.to_string()))?;
        match row {
            Some(row) => Ok(row.value.map(|v| v.0)),
            None => Err(DatabaseError::not_found(ENTITY, session_id)),
        }
    }

    async fn set_state(
        &self,
        session_id: Uuid,
        key: &str,
        value: Value,
    ) -> Result<(), DatabaseError> {
        check_state_key(key)?;
        check_state_value(&value)?;
        check_json_nul("value", &value)?;
        let id = session_id.to_string();
        let at = pinned_time(self.clock.as_ref());
        let (value, id_ref) = (&value, id.as_str());
        retrying(ENTITY, &id, || async move {
            // One statement: a writer that waited for the row re-applies it to the newest
            // version of the state.
            let updated = sqlx::query!(
                "UPDATE sessions
                 SET state = jsonb_set(state, ARRAY[$2::text], $3::jsonb),
                     updated_at = COALESCE($4::timestamptz, clock_timestamp())
                 WHERE id = $1",
                session_id,
                key,
                Json(value) as Json<&Value>,
                at
            )
            .execute(&self.pool)
            .await?
            .rows_affected();
            if updated == 0 {
                return Ok(Err(DatabaseError::not_found(ENTITY, id_ref)));
            }
            Ok(Ok(()))
        })
        .await
    }

    async fn delete(&self, id: Uuid) -> Result<(), DatabaseError> {
        let id_text = id.to_string();
        let id_ref = id_text.as_str();
        // Its events go with it (ON DELETE CASCADE); its tasks stay, without a session
        // (ON DELETE SET NULL).
        retrying(ENTITY, &id_text, || async move {
            let deleted = sqlx::query!("DELETE FROM sessions WHERE id = $1", id)
                .execute(&self.pool)
                .await?
                .rows_affected();
            if deleted == 0 {
                return Ok(Err(DatabaseError::not_found(ENTITY, id_ref)));
            }
            Ok(Ok(()))
        })
        .await
    }
}
