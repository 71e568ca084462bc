//! Where a database is, as `--db` and `ABATHUR_DB` give it: a file path, or a URL. The one
//! place that decides what such a value means, so a value is never half a path and half a URL.
//!
//! - A path: `.abathur/abathur.db`, `/var/lib/abathur.db`. Taken literally, whatever
//!   characters it holds, except that it must not name a folder.
//! - `sqlite:` URLs in sqlx's forms: `sqlite:x.db`, `sqlite://x.db`, `sqlite:///abs/x.db`,
//!   `sqlite::memory:` (a database in memory, gone when the process ends), and the query
//!   parameters `mode=ro|rw|rwc|memory`, `cache`, `immutable` and `vfs`. `mode=ro` opens the
//!   file read-only and `mode=rw` never creates it.
//! - `postgres:` / `postgresql:` URLs: refused until the PostgreSQL adapter exists.
//! - Any other `scheme:` (`file:x.db?mode=ro`, `mysql://...`): refused, rather than taken as
//!   a file of that name (SQLite would read `file:` as its own URI syntax). A file whose name
//!   starts with such a prefix is written `./file:x.db`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::sqlite::SqliteConnectOptions;

/// A parsed `--db` value.
#[derive(Debug, Clone)]
pub struct DatabaseLocation {
    /// The value as given, for messages and for the environment of a worker's commands.
    text: String,
    kind: LocationKind,
}

#[derive(Debug, Clone)]
enum LocationKind {
    /// A database in memory: always new, always empty.
    Memory(SqliteConnectOptions),
    /// A file.
    File {
        path: PathBuf,
        options: SqliteConnectOptions,
        /// False for `mode=ro` and `mode=rw`: the file must exist already.
        may_create: bool,
        /// `mode=ro`.
        read_only: bool,
    },
}

impl DatabaseLocation {
    /// Parses a `--db` value; the error says, in the user's terms, what is wrong with it.
    ///
    /// # Errors
    /// A message when the value is empty, names a folder, is a malformed `sqlite:` URL, a
    /// `postgres:` URL (not supported yet) or a URL of any other scheme.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("the database location is empty; give a file path or a sqlite: URL".into());
        }
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("postgres:") || lower.starts_with("postgresql:") {
            return Err(
                "PostgreSQL is not supported yet; give a SQLite file path or a sqlite: URL".into(),
            );
        }
        if lower.starts_with("sqlite:") {
            return Self::parse_sqlite_url(text);
        }
        if let Some(scheme) = url_scheme(text) {
            return Err(format!(
                "{scheme}: URLs are not taken; give a file path, or a sqlite: URL \
                 (sqlite:x.db?mode=ro). A file whose name starts with {scheme}: is written ./{text}"
            ));
        }
        let path = PathBuf::from(text);
        refuse_folder(&path, text)?;
        Ok(Self {
            text: text.to_string(),
            kind: LocationKind::File {
                options: SqliteConnectOptions::new().filename(&path),
                path,
                may_create: true,
                read_only: false,
            },
        })
    }

    fn parse_sqlite_url(text: &str) -> Result<Self, String> {
        let options = SqliteConnectOptions::from_str(text)
            .map_err(|e| format!("{text:?} is not a valid sqlite: URL: {e}"))?;
        let mode = query_param(text, "mode");
        if options.get_filename().as_os_str().is_empty() && mode.as_deref() != Some("memory") {
            return Err(format!(
                "{text:?} names no file; give one (sqlite:path/to/abathur.db) or use sqlite::memory:"
            ));
        }
        let in_memory = mode.as_deref() == Some("memory")
            || text.strip_prefix("sqlite:").is_some_and(|rest| {
                rest.trim_start_matches("//").split('?').next() == Some(":memory:")
            });
        let kind = if in_memory {
            // The pool's connections see one database only through SQLite's shared cache
            // under a `file:` name, which sqlx gives `sqlite::memory:` alone: `x.db?mode=memory`
            // or `cache=private` gave each connection a database of its own, and a command
            // found its tables missing. In a process of its own, the name means nothing else.
            LocationKind::Memory(
                SqliteConnectOptions::from_str("sqlite::memory:")
                    .map_err(|e| format!("cannot open a database in memory: {e}"))?,
            )
        } else {
            let path = options.get_filename().to_path_buf();
            refuse_folder(&path, text)?;
            LocationKind::File {
                path,
                options,
                may_create: !matches!(mode.as_deref(), Some("ro" | "rw")),
                read_only: mode.as_deref() == Some("ro"),
            }
        };
        Ok(Self {
            text: text.to_string(),
            kind,
        })
    }

    /// A location for the file at `path`, taken literally.
    pub fn file(path: &Path) -> Self {
        Self {
            text: path.display().to_string(),
            kind: LocationKind::File {
                options: SqliteConnectOptions::new().filename(path),
                path: path.to_path_buf(),
                may_create: true,
                read_only: false,
            },
        }
    }

    /// The file, or `None` for a database in memory.
    pub fn path(&self) -> Option<&Path> {
        match &self.kind {
            LocationKind::File { path, .. } => Some(path),
            LocationKind::Memory(_) => None,
        }
    }

    /// True for a database in memory.
    pub fn is_in_memory(&self) -> bool {
        matches!(self.kind, LocationKind::Memory(_))
    }

    /// True when the location was asked for read-only (`mode=ro`).
    pub fn is_read_only(&self) -> bool {
        matches!(
            self.kind,
            LocationKind::File {
                read_only: true,
                ..
            }
        )
    }

    /// True when a command that writes may create the file (not with `mode=ro` or `mode=rw`).
    pub fn may_create(&self) -> bool {
        match &self.kind {
            LocationKind::File { may_create, .. } => *may_create,
            LocationKind::Memory(_) => true,
        }
    }

    /// The value as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The connect options the location implies, before abathur's own.
    pub(crate) fn connect_options(&self) -> SqliteConnectOptions {
        match &self.kind {
            LocationKind::Memory(options) | LocationKind::File { options, .. } => options.clone(),
        }
    }
}

impl fmt::Display for DatabaseLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for DatabaseLocation {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// The scheme of a value that looks like a URL: letters, digits, `+`, `-` or `.` before a
/// colon, starting with a letter. One letter is a Windows drive (`C:`), not a scheme.
fn url_scheme(text: &str) -> Option<&str> {
    let (scheme, _) = text.split_once(':')?;
    let mut chars = scheme.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_fits = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (scheme.len() >= 2 && starts_with_letter && rest_fits).then_some(scheme)
}

/// The value of the query parameter `name` in a URL, if given.
fn query_param(text: &str, name: &str) -> Option<String> {
    let (_, query) = text.split_once('?')?;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| value.to_string())
    })
}

/// A folder, a fifo or a device is not a database file: say so, rather than create a file
/// inside it or fail in SQLite.
fn refuse_folder(path: &Path, text: &str) -> Result<(), String> {
    let ends_with_separator = text.ends_with(std::path::MAIN_SEPARATOR) || text.ends_with('/');
    if ends_with_separator || path.is_dir() {
        let suggestion = path.join("abathur.db");
        return Err(format!(
            "{text} is a folder; give the database file's path, such as {}",
            suggestion.display()
        ));
    }
    // A fifo or a device (`/dev/null`) opens, and then fails every read as an I/O error.
    if path.metadata().is_ok_and(|m| !m.is_file()) {
        return Err(format!(
            "{text} is not a regular file (a fifo, a device or a socket); give the database \
             file's path"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::DatabaseLocation;

    #[track_caller]
    fn refused(text: &str, expected: &str) {
        let err = DatabaseLocation::parse(text).expect_err(text);
        assert!(err.contains(expected), "{text}: {err}");
    }

    #[test]
    fn a_plain_path_is_a_file_that_may_be_created() {
        let location = DatabaseLocation::parse("some/where/abathur.db").unwrap();
        assert_eq!(
            location.path().unwrap().to_str(),
            Some("some/where/abathur.db")
        );
        assert!(location.may_create());
        assert!(!location.is_read_only());
    }

    #[test]
    fn sqlite_urls_take_sqlx_forms_and_modes() {
        assert!(DatabaseLocation::parse("sqlite::memory:")
            .unwrap()
            .is_in_memory());
        assert!(DatabaseLocation::parse("sqlite://:memory:")
            .unwrap()
            .is_in_memory());
        assert!(DatabaseLocation::parse("sqlite:x.db?mode=memory")
            .unwrap()
            .is_in_memory());
        let ro = DatabaseLocation::parse("sqlite:x.db?mode=ro").unwrap();
        assert_eq!(ro.path().unwrap().to_str(), Some("x.db"));
        assert!(ro.is_read_only() && !ro.may_create());
        let rw = DatabaseLocation::parse("sqlite://dir/x.db?mode=rw").unwrap();
        assert_eq!(rw.path().unwrap().to_str(), Some("dir/x.db"));
        assert!(!rw.is_read_only() && !rw.may_create());
        assert!(DatabaseLocation::parse("sqlite:x.db").unwrap().may_create());
    }

    #[test]
    fn other_values_are_refused_with_what_to_write_instead() {
        refused("", "empty");
        refused("postgres://localhost/abathur", "not supported yet");
        refused("postgresql://localhost/abathur", "not supported yet");
        refused("file:x.db?mode=ro", "./file:x.db?mode=ro");
        refused("mysql://localhost/db", "mysql: URLs are not taken");
        refused("newdir/", "is a folder");
        refused(".", "is a folder");
        refused("sqlite:x.db?mode=sideways", "not a valid sqlite: URL");
        refused("sqlite:x.db?colour=blue", "not a valid sqlite: URL");
    }

    #[test]
    fn a_colon_later_in_a_path_or_a_drive_letter_is_not_a_scheme() {
        assert!(DatabaseLocation::parse("./file:x.db").is_ok());
        assert!(DatabaseLocation::parse("dir/a:b.db").is_ok());
        assert!(DatabaseLocation::parse("C:abathur.db").is_ok());
    }
}
