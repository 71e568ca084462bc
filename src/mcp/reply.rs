//! What a tool call returns: its result as JSON text, or a tool error that says, in the user's
//! terms, what was wrong and what kind of failure it was.
//!
//! Failures are tool results flagged `isError`, never protocol errors, so the model sees them
//! and can correct its call; the server carries on.

use std::fmt;

use abathur_core::error::{DatabaseError, ErrorCategory, ValidationError};
use abathur_core::queue::QueueError;
use rmcp::model::{CallToolResult, ContentBlock};
use serde::Serialize;
use serde_json::json;

/// What kind of failure a tool error is, so a client can decide what to do without parsing
/// the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// An argument is missing, of the wrong type, malformed (a bad UUID or timestamp) or breaks
    /// a rule (priority above 10, an empty worker id). Nothing was written. Fix the call.
    InvalidArgument,
    /// The task, attempt, memory or session named does not exist.
    NotFound,
    /// The record's state forbids the operation (cancelling a completed task, adding a memory
    /// key that exists), or the lease is lost. Re-read the record before trying again.
    Conflict,
    /// The database stayed locked by other writers for longer than the busy timeout. Safe to
    /// retry.
    Busy,
    /// The database cannot serve the call until an operator acts: it is read-only, the disk
    /// is full, the file is corrupt or not abathur's, an I/O error. The message says which.
    /// Retrying does not help.
    Unavailable,
    /// Anything else. The server's log (stderr) has the details.
    Internal,
}

/// A failed tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// What went wrong, in the user's terms: no SQL, no driver text.
    pub message: String,
}

impl ToolError {
    /// A failure of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// A malformed or missing argument.
    pub fn argument(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    /// An unexpected failure whose cause goes to the log. `context` says, for the client,
    /// what was being done.
    fn internal(context: &str, cause: &dyn std::error::Error) -> Self {
        tracing::error!(error = %cause, "{context}");
        Self::new(
            ErrorKind::Internal,
            format!("{context} (the server's log has the details)"),
        )
    }

    /// The tool result that reports this error: `{"error": {"kind": ..., "message": ...}}`.
    pub fn into_result(self) -> CallToolResult {
        let body = json!({ "error": { "kind": self.kind, "message": self.message } });
        CallToolResult::error(vec![ContentBlock::text(body.to_string())])
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<ValidationError> for ToolError {
    fn from(err: ValidationError) -> Self {
        Self::argument(err.to_string())
    }
}

impl From<ErrorCategory> for ErrorKind {
    fn from(category: ErrorCategory) -> Self {
        match category {
            ErrorCategory::Invalid => ErrorKind::InvalidArgument,
            ErrorCategory::NotFound => ErrorKind::NotFound,
            ErrorCategory::Conflict => ErrorKind::Conflict,
            ErrorCategory::Busy => ErrorKind::Busy,
            ErrorCategory::Unavailable | ErrorCategory::Storage => ErrorKind::Unavailable,
            ErrorCategory::Internal => ErrorKind::Internal,
        }
    }
}

impl From<DatabaseError> for ToolError {
    fn from(err: DatabaseError) -> Self {
        // `Other` carries the store's own message, which may quote a statement: it goes to
        // the log only.
        if matches!(err, DatabaseError::Other(_)) {
            return Self::internal("the database failed unexpectedly", &err);
        }
        Self::new(err.category().into(), err.to_string())
    }
}

impl From<QueueError> for ToolError {
    fn from(err: QueueError) -> Self {
        match err {
            QueueError::Database(db) => db.into(),
            other => Self::new(other.category().into(), other.to_string()),
        }
    }
}

/// The tool result for `outcome`: the value as JSON text, or the error.
pub fn render<T: Serialize>(outcome: Result<T, ToolError>) -> CallToolResult {
    match outcome.and_then(|value| {
        serde_json::to_string(&value)
            .map_err(|e| ToolError::internal("cannot encode the result as JSON", &e))
    }) {
        Ok(text) => CallToolResult::success(vec![ContentBlock::text(text)]),
        Err(err) => err.into_result(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_queue_error_maps_to_the_kind_the_docs_promise() {
        let id = uuid::Uuid::nil();
        let cases = [
            (QueueError::TaskNotFound(id), ErrorKind::NotFound),
            (QueueError::AttemptNotFound(id), ErrorKind::NotFound),
            (
                QueueError::LeaseLost {
                    attempt_id: id,
                    reason: "it expired".into(),
                },
                ErrorKind::Conflict,
            ),
            (
                QueueError::Validation(ValidationError::new("priority", "too high")),
                ErrorKind::InvalidArgument,
            ),
            (
                QueueError::Cycle { path: vec![id, id] },
                ErrorKind::InvalidArgument,
            ),
            (QueueError::Database(DatabaseError::Busy), ErrorKind::Busy),
            (
                QueueError::Database(DatabaseError::DiskFull),
                ErrorKind::Unavailable,
            ),
            (
                QueueError::Database(DatabaseError::ReadOnly),
                ErrorKind::Unavailable,
            ),
            (
                QueueError::Database(DatabaseError::Corrupt),
                ErrorKind::Unavailable,
            ),
            (
                QueueError::Database(DatabaseError::Io),
                ErrorKind::Unavailable,
            ),
        ];
        for (err, kind) in cases {
            assert_eq!(ToolError::from(err).kind, kind);
        }
    }

    #[test]
    fn a_store_message_never_reaches_the_client() {
        let err = ToolError::from(DatabaseError::Other("near \"SELEC\": syntax error".into()));
        assert_eq!(err.kind, ErrorKind::Internal);
        assert!(!err.message.contains("SELEC"), "{}", err.message);
    }

    #[test]
    fn an_error_result_is_flagged_and_carries_kind_and_message() {
        let result = ToolError::new(ErrorKind::NotFound, "task x was not found").into_result();
        assert_eq!(result.is_error, Some(true));
        let text = result.content[0]
            .as_text()
            .expect("text content")
            .text
            .clone();
        let body: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(body["error"]["kind"], "not_found");
        assert_eq!(body["error"]["message"], "task x was not found");
    }
}
