//! Driver errors, classified here and nowhere else: every repository and the queue store turn a
//! `sqlx::Error` into the port's [`DatabaseError`] through [`classify`] or [`on`], so that no
//! message above the adapter carries SQL or a driver type.
//!
//! PostgreSQL names each error by its SQLSTATE; the classes are those of the SQLite adapter,
//! plus what only a server has: a lost connection, a server shutting down, a serialization
//! failure or deadlock (which the adapter retries before any reaches a user, see
//! [`is_retryable`]).

use abathur_core::error::{DatabaseError, ValidationError};
use sqlx::error::ErrorKind;

/// Translates a driver error met while writing or reading `entity` (`task`, `agent`, ...)
/// identified by `id`.
pub(crate) fn classify(err: sqlx::Error, entity: &'static str, id: &str) -> DatabaseError {
    let classified = classify_as(&err, entity, id);
    tracing::debug!(entity, id, error = %err, "database error: {classified}");
    classified
}

/// Classifies an error that the caller keeps, without context.
pub(crate) fn classify_ref(err: &sqlx::Error) -> DatabaseError {
    classify_as(err, "database", "")
}

/// `.map_err(on(entity, id))`: classify with context.
pub(crate) fn on<'a>(
    entity: &'static str,
    id: &'a str,
) -> impl FnOnce(sqlx::Error) -> DatabaseError + 'a {
    move |err| classify(err, entity, id)
}

/// The SQLSTATE of a server error, if the error is one.
pub(crate) fn sqlstate(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// Whether the operation can simply run again: the server aborted the transaction because of
/// another one (serialization failure 40001, deadlock 40P01), and nothing of it was committed.
pub(crate) fn is_retryable(err: &sqlx::Error) -> bool {
    matches!(sqlstate(err).as_deref(), Some("40001" | "40P01"))
}

/// Whether the connection was lost or the server went away: the operation's commit outcome
/// may be unknown, and a new connection is needed.
pub(crate) fn is_connection_loss(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(_) => matches!(
            sqlstate(err).as_deref().map(|s| s.get(..2).unwrap_or(s)),
            Some("08" | "57")
        ),
        _ => false,
    }
}

fn classify_code(code: &str, message: &str, entity: &'static str) -> Option<DatabaseError> {
    Some(match code {
        // untranslatable_character, character_not_in_repertoire: a NUL in text or in a JSON
        // string (\u0000), which PostgreSQL cannot store in `text` or `jsonb`.
        "22P05" | "22021" => DatabaseError::Validation(ValidationError::new(
            entity,
            "text holds a NUL character (\\u0000), which PostgreSQL cannot store",
        )),
        // numeric_value_out_of_range, datetime_field_overflow
        "22003" | "22008" => DatabaseError::Validation(ValidationError::new(
            entity,
            "a value is outside the range PostgreSQL can store",
        )),
        "53100" => DatabaseError::DiskFull,
        "25006" => DatabaseError::ReadOnly,
        // lock_not_available, query_canceled (a statement or lock timeout)
        "55P03" | "57014" => DatabaseError::Busy,
        "40001" | "40P01" => DatabaseError::Busy,
        "XX001" | "XX002" => DatabaseError::Corrupt,
        "58030" => DatabaseError::Io,
        // too_many_connections, cannot_connect_now (starting up or shutting down),
        // admin_shutdown (the server stops, or pg_terminate_backend), crash_shutdown
        "53300" | "57P03" | "57P01" | "57P02" => DatabaseError::Connection(format!(
            "the PostgreSQL server closed or refused the connection: {message}"
        )),
        c if c.starts_with("08") => DatabaseError::Connection(format!(
            "lost the connection to the PostgreSQL server: {message}"
        )),
        "3D000" => DatabaseError::Connection(format!("no such database: {message}")),
        "28000" | "28P01" => {
            DatabaseError::Connection(format!("the server refused the login: {message}"))
        }
        _ => return None,
    })
}

fn classify_as(err: &sqlx::Error, entity: &'static str, id: &str) -> DatabaseError {
    match err {
        sqlx::Error::RowNotFound => DatabaseError::not_found(entity, id),
        sqlx::Error::PoolTimedOut => DatabaseError::Timeout,
        sqlx::Error::PoolClosed => {
            DatabaseError::Connection("the connection pool is closed".into())
        }
        sqlx::Error::Io(io) => DatabaseError::Connection(format!(
            "lost the connection to the PostgreSQL server: {io}"
        )),
        sqlx::Error::Tls(tls) => DatabaseError::Connection(format!("TLS failed: {tls}")),
        sqlx::Error::Protocol(p) => DatabaseError::Connection(format!(
            "the connection to the PostgreSQL server broke: {p}"
        )),
        sqlx::Error::Configuration(cfg) => DatabaseError::Connection(cfg.to_string()),
        sqlx::Error::Migrate(m) => DatabaseError::Migration(m.to_string()),
        sqlx::Error::Database(db) => match db.kind() {
            ErrorKind::UniqueViolation => DatabaseError::UniqueViolation {
                entity,
                id: id.to_string(),
            },
            ErrorKind::ForeignKeyViolation => DatabaseError::ForeignKeyViolation {
                entity,
                reference: "record",
                id: None,
            },
            ErrorKind::CheckViolation => DatabaseError::CheckViolation {
                entity,
                detail: "a value is outside what the schema allows".into(),
            },
            ErrorKind::NotNullViolation => DatabaseError::NotNullViolation {
                entity,
                detail: "a required value is missing".into(),
            },
            _ => db
                .code()
                .and_then(|code| classify_code(&code, db.message(), entity))
                .unwrap_or_else(|| DatabaseError::Other(db.message().to_string())),
        },
        other => DatabaseError::Other(other.to_string()),
    }
}
