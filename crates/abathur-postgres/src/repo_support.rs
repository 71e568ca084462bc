//! What the memory, session and agent repositories share: running a write again when the
//! server aborted it because of another transaction, the time a write records, and the check
//! that a JSON value holds no NUL character.

use std::future::Future;

use abathur_core::clock::{Clock, Now};
use abathur_core::error::{DatabaseError, ValidationError};
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::errors::{classify, is_retryable};

/// How many times a write runs at most while the server keeps aborting it. Each abort means
/// another transaction went ahead, so the write makes progress on the next run; past this, the
/// server is overloaded and the caller gets `Busy`.
const MAX_RUNS: u32 = 50;

/// Runs `write` (one statement, or a whole transaction that it begins and commits itself) until
/// the server no longer aborts it with a serialization failure or a deadlock; nothing of an
/// aborted run was committed, so running it again is safe.
///
/// A driver error is `write`'s outer `Err`, classified here with `entity` and `id`. A refusal of
/// the write itself (`NotFound`, `UniqueViolation`, ...) is its inner `Err`: it ends at once,
/// and a transaction it had begun rolls back when dropped.
pub(crate) async fn retrying<T, F, Fut>(
    entity: &'static str,
    id: &str,
    mut write: F,
) -> Result<T, DatabaseError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Result<T, DatabaseError>, sqlx::Error>>,
{
    let mut run = 1;
    loop {
        match write().await {
            Ok(outcome) => return outcome,
            Err(err) if is_retryable(&err) && run < MAX_RUNS => {
                tracing::debug!(entity, id, run, error = %err, "aborted by another transaction: running again");
                // A little longer after each abort, so that the transactions that keep
                // colliding drift apart.
                tokio::time::sleep(std::time::Duration::from_millis(u64::from(run.min(20)))).await;
                run += 1;
            }
            Err(err) => return Err(classify(err, entity, id)),
        }
    }
}

/// The time a write records when the clock pins it (`Now::At`, tests), or `None` when the
/// store reads its own clock (`Now::Store`): the statements bind it as
/// `COALESCE($n, clock_timestamp())`, evaluated on the server once the write holds its lock.
pub(crate) fn pinned_time(clock: &dyn Clock) -> Option<DateTime<Utc>> {
    match clock.store_time() {
        Now::At(at) => Some(at),
        Now::Store => None,
    }
}

/// Checks that no string and no object key of `value` holds a NUL character, which PostgreSQL
/// cannot store in `jsonb` (`\u0000`): the write is refused naming `field` before it reaches
/// the server.
///
/// # Errors
/// A `Validation` error naming `field`.
pub(crate) fn check_json_nul(field: &'static str, value: &Value) -> Result<(), ValidationError> {
    // Iterative, so a deeply nested value cannot exhaust the stack.
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        let has_nul = match value {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => {
                stack.extend(items);
                false
            }
            Value::Object(map) => {
                stack.extend(map.values());
                map.keys().any(|k| k.contains('\0'))
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => false,
        };
        if has_nul {
            return Err(ValidationError::new(
                field,
                "holds a NUL character (\\u0000), which PostgreSQL cannot store",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::check_json_nul;

    #[test]
    fn a_nul_anywhere_in_a_json_value_is_found() {
        assert!(check_json_nul("v", &json!({"a": [1, "x", {"b": null}]})).is_ok());
        assert!(check_json_nul("v", &json!("a\u{0}b")).is_err());
        assert!(check_json_nul("v", &json!([[["\u{0}"]]])).is_err());
        assert!(check_json_nul("v", &json!({"k\u{0}": 1})).is_err());
        let e = check_json_nul("content", &json!({"x": "\u{0}"})).unwrap_err();
        assert_eq!(e.field, "content");
    }
}
