//! The largest value each stored text and JSON field may hold, and the one check that enforces
//! them. Every way in (the CLI, `task import`, the MCP server, the worker) goes through the
//! domain's validation, so a value refused on one path is refused on all of them.
//!
//! Sizes are counted in bytes of UTF-8 (JSON values: of their compact encoding), except the
//! summary, which is counted in characters (see [`crate::models::MAX_SUMMARY_CHARS`]).

use crate::error::ValidationError;

/// A task's description: the full instructions for the agent that runs it.
pub const MAX_DESCRIPTION_BYTES: usize = 256 * 1024;

/// The error a failed attempt records. A cascaded failure does not copy it: its dependents
/// name the root task instead.
pub const MAX_ERROR_BYTES: usize = 16 * 1024;

/// A task's input and its result, as JSON.
pub const MAX_TASK_JSON_BYTES: usize = 1024 * 1024;

/// A memory's value, as JSON.
pub const MAX_MEMORY_VALUE_BYTES: usize = 1024 * 1024;

/// A memory's metadata, as JSON.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;

/// A session event's content, and one value of a session's state, as JSON.
pub const MAX_EVENT_CONTENT_BYTES: usize = 256 * 1024;

/// A short name: agent types, branch names, worker, actor and creator names, memory
/// namespaces and keys, session application, user and project names, event types and state
/// keys. Names are also never empty or only white space (`models::check_name`).
pub const MAX_NAME_BYTES: usize = 256;

/// A filesystem path (a task's worktree path).
pub const MAX_PATH_BYTES: usize = 4096;

/// The most records one list, search or page returns (task lists, memory searches, session
/// events, execution plans, running attempts in the queue's overview). Past it, a caller pages
/// with an offset; one answer never holds an unbounded part of the database.
pub const MAX_PAGE: u32 = 1_000;

/// Checks a page size: from 1 to [`MAX_PAGE`].
///
/// # Errors
/// Returns a [`ValidationError`] naming `field` and the range.
pub fn check_page(field: &'static str, limit: u64) -> Result<(), ValidationError> {
    if (1..=u64::from(MAX_PAGE)).contains(&limit) {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!("{limit} is outside 1 to {MAX_PAGE}; page with an offset"),
        ))
    }
}

/// Checks that a whole number lies from `min` to `max`, and returns it as a `T`. Every numeric
/// argument of the CLI and the MCP server takes its range through this, so a value below the
/// range and one above it get the same message.
///
/// # Errors
/// Returns a [`ValidationError`] naming `field` and the range.
pub fn check_range<T: TryFrom<i64>>(
    field: &'static str,
    value: i64,
    min: i64,
    max: i64,
) -> Result<T, ValidationError> {
    let outside = || ValidationError::new(field, format!("{value} is outside {min} to {max}"));
    if !(min..=max).contains(&value) {
        return Err(outside());
    }
    T::try_from(value).map_err(|_| outside())
}

/// Checks that `value` is at most `max` bytes long.
///
/// # Errors
/// Returns a [`ValidationError`] naming `field`, its size and the limit.
pub fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.len() <= max {
        Ok(())
    } else {
        Err(too_large(field, value.len(), max))
    }
}

/// Checks that the compact JSON encoding of `value` is at most `max` bytes long. Counting stops
/// as soon as the limit is passed, so a huge value costs no more than the limit to refuse.
///
/// # Errors
/// Returns a [`ValidationError`] naming `field` and the limit.
pub fn check_json(
    field: &'static str,
    value: &serde_json::Value,
    max: usize,
) -> Result<(), ValidationError> {
    let mut counter = Counter { written: 0, max };
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => Ok(()),
        Err(_) => Err(ValidationError::new(
            field,
            format!("is over the limit of {}", limit(max)),
        )),
    }
}

fn too_large(field: &'static str, size: usize, max: usize) -> ValidationError {
    ValidationError::new(
        field,
        format!("is {size} bytes, over the limit of {}", limit(max)),
    )
}

/// A limit in exact bytes, and in the unit a person would use when that is another:
/// `256 bytes`, `16384 bytes (16 KiB)`.
fn limit(max: usize) -> String {
    let human = bytes(max);
    if human == format!("{max} bytes") {
        human
    } else {
        format!("{max} bytes ({human})")
    }
}

/// A size in the unit a person would use: `512 bytes`, `16 KiB`, `1.5 MiB`.
pub fn bytes(n: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    if n >= MIB {
        trim_unit(n as f64 / MIB as f64, "MiB")
    } else if n >= KIB {
        trim_unit(n as f64 / KIB as f64, "KiB")
    } else {
        format!("{n} bytes")
    }
}

fn trim_unit(value: f64, unit: &str) -> String {
    let text = format!("{value:.1}");
    let text = text.strip_suffix(".0").unwrap_or(&text);
    format!("{text} {unit}")
}

/// Counts bytes written and fails once past `max`, so an oversized value is never encoded whole.
struct Counter {
    written: usize,
    max: usize,
}

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written += buf.len();
        if self.written > self.max {
            Err(std::io::Error::other("over the limit"))
        } else {
            Ok(buf.len())
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_at_the_limit_passes_and_one_byte_more_is_refused_with_both_sizes_named() {
        assert!(check_text("description", &"a".repeat(1024), 1024).is_ok());
        let err = check_text("description", &"a".repeat(1025), 1024).unwrap_err();
        assert_eq!(err.field, "description");
        assert_eq!(
            err.message,
            "is 1025 bytes, over the limit of 1024 bytes (1 KiB)"
        );
        // Bytes, not characters: 600 two-byte characters are 1200 bytes.
        let err = check_text("error", &"é".repeat(600), 1024).unwrap_err();
        assert!(err.message.starts_with("is 1200 bytes"), "{}", err.message);
    }

    #[test]
    fn json_is_measured_in_its_compact_encoding() {
        let value = json!({"a": "b"});
        let size = serde_json::to_string(&value).unwrap().len();
        assert!(check_json("input", &value, size).is_ok());
        let err = check_json("input", &value, size - 1).unwrap_err();
        assert_eq!(err.field, "input");
        assert!(err.message.contains("limit"), "{}", err.message);
    }

    #[test]
    fn a_limit_under_a_kibibyte_is_named_once() {
        let err = check_text("key", &"k".repeat(300), 256).unwrap_err();
        assert_eq!(err.message, "is 300 bytes, over the limit of 256 bytes");
    }

    #[test]
    fn sizes_read_as_a_person_would_write_them() {
        assert_eq!(bytes(512), "512 bytes");
        assert_eq!(bytes(16 * 1024), "16 KiB");
        assert_eq!(bytes(1024 * 1024 + 512 * 1024), "1.5 MiB");
    }
}
