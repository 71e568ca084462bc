//! The one place where `sqlx` errors become [`DatabaseError`]s. Classification uses
//! `DatabaseError::kind()`; the driver's text is logged, never shown to users.

use abathur_core::error::DatabaseError;
use rusqlite::ffi;
use sqlx::error::ErrorKind;

/// The failures `kind()` has no variant for, by SQLite's result code. The primary code is the
/// low byte of the extended one (SQLITE_IOERR_WRITE is SQLITE_IOERR | 3 << 8), so every
/// extended code lands with its primary. Constraint codes are left to `kind()` and the
/// callers' own matches.
fn classify_code(extended: i32) -> Option<DatabaseError> {
    let classified = classify_primary(extended);
    if matches!(
        classified,
        Some(DatabaseError::DiskFull | DatabaseError::Io | DatabaseError::Corrupt)
    ) {
        LAST_STORAGE_FAILURE.set(Some(extended));
    }
    classified
}

thread_local! {
    /// The last failure of the storage itself classified on this thread, by its extended code.
    static LAST_STORAGE_FAILURE: std::cell::Cell<Option<i32>> = const { std::cell::Cell::new(None) };
}

/// The last failure of the storage itself (a full disk, an I/O error, corruption) classified
/// on this thread since the last call, if any. The writer asks when SQLite rolled back a whole
/// transaction on one operation's failure, to tell the others of its group why.
pub(crate) fn take_storage_failure() -> Option<DatabaseError> {
    LAST_STORAGE_FAILURE.take().and_then(classify_primary)
}

fn classify_primary(extended: i32) -> Option<DatabaseError> {
    match extended & 0xff {
        ffi::SQLITE_BUSY | ffi::SQLITE_LOCKED => Some(DatabaseError::Busy),
        // SQLITE_PERM: the file's permissions, or an open flag the OS refused.
        ffi::SQLITE_READONLY | ffi::SQLITE_PERM => Some(DatabaseError::ReadOnly),
        ffi::SQLITE_FULL => Some(DatabaseError::DiskFull),
        ffi::SQLITE_CORRUPT => Some(DatabaseError::Corrupt),
        ffi::SQLITE_NOTADB => Some(DatabaseError::NotADatabase),
        // The unix VFS reports a -shm file it cannot grow (to open a WAL database, the first
        // thing a command does) as SQLITE_IOERR_SHMSIZE; it fails only for want of space.
        ffi::SQLITE_IOERR if extended == ffi::SQLITE_IOERR_SHMSIZE => Some(DatabaseError::DiskFull),
        ffi::SQLITE_IOERR => Some(DatabaseError::Io),
        ffi::SQLITE_CANTOPEN => Some(DatabaseError::Connection(
            "the file cannot be opened: its folder is missing or not accessible, or it is a \
             folder"
                .into(),
        )),
        _ => None,
    }
}

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
            _ => db
                .code()
                .and_then(|code| code.parse::<i32>().ok())
                .and_then(classify_code)
                .unwrap_or_else(|| DatabaseError::Other(db.message().to_string())),
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

/// Translates an error of a statement run through `rusqlite` (on the writer's connection,
/// [`super::writer`]), with the same classes as [`classify`].
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
                code => classify_code(code).unwrap_or(DatabaseError::Other(message)),
            }
        }
        rusqlite::Error::QueryReturnedNoRows => DatabaseError::not_found(entity, id),
        other => DatabaseError::Other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::{classify_code, ffi, DatabaseError};

    #[test]
    fn every_extended_code_lands_with_its_primary_code() {
        let cases = [
            (ffi::SQLITE_READONLY_DBMOVED, "ReadOnly"),
            (ffi::SQLITE_READONLY_DIRECTORY, "ReadOnly"),
            (ffi::SQLITE_PERM, "ReadOnly"),
            (ffi::SQLITE_FULL, "DiskFull"),
            (ffi::SQLITE_IOERR_SHMSIZE, "DiskFull"),
            (ffi::SQLITE_IOERR_WRITE, "Io"),
            (ffi::SQLITE_IOERR_FSYNC, "Io"),
            (ffi::SQLITE_CORRUPT, "Corrupt"),
            (ffi::SQLITE_CORRUPT_INDEX, "Corrupt"),
            (ffi::SQLITE_NOTADB, "NotADatabase"),
            (ffi::SQLITE_CANTOPEN_ISDIR, "Connection"),
            (ffi::SQLITE_BUSY_SNAPSHOT, "Busy"),
            (ffi::SQLITE_LOCKED_SHAREDCACHE, "Busy"),
        ];
        for (code, expected) in cases {
            let classified = classify_code(code).unwrap_or_else(|| panic!("{code} unclassified"));
            let name = match classified {
                DatabaseError::ReadOnly => "ReadOnly",
                DatabaseError::DiskFull => "DiskFull",
                DatabaseError::Io => "Io",
                DatabaseError::Corrupt => "Corrupt",
                DatabaseError::NotADatabase => "NotADatabase",
                DatabaseError::Connection(_) => "Connection",
                DatabaseError::Busy => "Busy",
                _ => "another variant",
            };
            assert_eq!(name, expected, "code {code}");
        }
        assert!(classify_code(ffi::SQLITE_ERROR).is_none());
        assert!(classify_code(ffi::SQLITE_CONSTRAINT_CHECK).is_none());
    }
}
