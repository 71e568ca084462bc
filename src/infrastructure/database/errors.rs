//! The one place where `sqlx` errors become [`DatabaseError`]s. Classification uses
//! `DatabaseError::kind()`; the driver's text is logged, never shown to users.

use abathur_core::error::DatabaseError;
use sqlx::error::ErrorKind;

/// SQLite's primary result codes for "another connection holds the lock" (SQLITE_BUSY and
/// SQLITE_LOCKED). `kind()` has no variant for them, so the primary code (the low byte of the
/// extended code) is the only way to tell.
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;

/// Translates a driver error met while writing or reading `entity` (`task`, `agent`, ...)
/// identified by `id`.
pub(crate) fn classify(err: sqlx::Error, entity: &'static str, id: &str) -> DatabaseError {
    let classified = classify_as(&err, entity, id);
    tracing::debug!(entity, id, error = %err, "database error: {classified}");
    classified
}

/// Classifies an error that the caller keeps (a migration's), without context.
pub(crate) fn classify_ref(err: &sqlx::Error) -> DatabaseError {
    classify_as(err, "database", "")
}

fn classify_as(err: &sqlx::Error, entity: &'static str, id: &str) -> DatabaseError {
    match err {
        sqlx::Error::RowNotFound => DatabaseError::not_found(entity, id),
        sqlx::Error::PoolTimedOut => DatabaseError::Timeout,
        sqlx::Error::PoolClosed => {
            DatabaseError::Connection("the connection pool is closed".into())
        }
        sqlx::Error::Io(io) => DatabaseError::Connection(io.to_string()),
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
            _ => {
                let primary = db
                    .code()
                    .and_then(|code| code.parse::<i64>().ok())
                    .map(|code| code & 0xff);
                match primary {
                    Some(SQLITE_BUSY | SQLITE_LOCKED) => DatabaseError::Busy,
                    _ => DatabaseError::Other(db.message().to_string()),
                }
            }
        },
        other => DatabaseError::Other(other.to_string()),
    }
}

/// `.map_err(on(entity, id))`: classify with context.
pub(crate) fn on<'a>(
    entity: &'static str,
    id: &'a str,
) -> impl FnOnce(sqlx::Error) -> DatabaseError + 'a {
    move |err| classify(err, entity, id)
}

/// Translates an error of a statement run on a connection's handle ([`super::handle`]), with
/// the same classes as [`classify`].
pub(crate) fn classify_raw(err: rusqlite::Error, entity: &'static str, id: &str) -> DatabaseError {
    let classified = classify_raw_as(&err, entity, id);
    tracing::debug!(entity, id, error = %err, "database error: {classified}");
    classified
}

/// `.map_err(raw_on(entity, id))`: [`classify_raw`] with context.
pub(crate) fn raw_on<'a>(
    entity: &'static str,
    id: &'a str,
) -> impl FnOnce(rusqlite::Error) -> DatabaseError + 'a {
    move |err| classify_raw(err, entity, id)
}

fn classify_raw_as(err: &rusqlite::Error, entity: &'static str, id: &str) -> DatabaseError {
    use rusqlite::ffi;
    match err {
        rusqlite::Error::SqliteFailure(failure, message) => {
            let message = message.clone().unwrap_or_else(|| failure.to_string());
            match failure.extended_code {
                ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                    DatabaseError::UniqueViolation {
                        entity,
                        id: id.to_string(),
                    }
                }
                ffi::SQLITE_CONSTRAINT_FOREIGNKEY => DatabaseError::ForeignKeyViolation {
                    entity,
                    reference: "record",
                    id: None,
                },
                ffi::SQLITE_CONSTRAINT_CHECK => DatabaseError::CheckViolation {
                    entity,
                    detail: "a value is outside what the schema allows".into(),
                },
                ffi::SQLITE_CONSTRAINT_NOTNULL => DatabaseError::NotNullViolation {
                    entity,
                    detail: "a required value is missing".into(),
                },
                code if code & 0xff == ffi::SQLITE_BUSY || code & 0xff == ffi::SQLITE_LOCKED => {
                    DatabaseError::Busy
                }
                _ => DatabaseError::Other(message),
            }
        }
        rusqlite::Error::QueryReturnedNoRows => DatabaseError::not_found(entity, id),
        other => DatabaseError::Other(other.to_string()),
    }
}
