//! What a command's output becomes: its stdout the task's result, the tail of its stderr the
//! task's error message. Pure functions, so the rules are tested without running anything.
//!
//! Both fit the queue's limits ([`abathur_core::limits`]) before they are handed to it: a value
//! the queue refused would cost the attempt's work, and the same refusal would come back on
//! every retry.

use std::process::ExitStatus;

use abathur_core::error::ValidationError;
use abathur_core::limits::{check_json, MAX_ERROR_BYTES, MAX_TASK_JSON_BYTES};
use abathur_core::models::check_json_depth;
use serde_json::{json, Value};

/// The most of stderr kept: as much as an error message may hold. A failing command may print
/// megabytes; the end of it usually says why.
pub const STDERR_TAIL_BYTES: usize = MAX_ERROR_BYTES;

/// The most of stdout read. A result may be at most [`MAX_TASK_JSON_BYTES`] once stored as
/// compact JSON; stdout may be longer than its result (pretty-printed JSON), up to this bound,
/// which keeps a runaway command from filling the worker's memory.
pub const STDOUT_LIMIT_BYTES: usize = 16 * MAX_TASK_JSON_BYTES;

/// A bounded capture of one output stream.
#[derive(Debug, Default)]
pub struct Capture {
    bytes: Vec<u8>,
    /// Bytes seen in all, kept or not.
    seen: usize,
    /// Keep the last `limit` bytes (a tail) rather than the first (a head).
    tail: bool,
    limit: usize,
}

impl Capture {
    /// Keeps the first `limit` bytes and counts the rest.
    pub fn head(limit: usize) -> Self {
        Self {
            limit,
            ..Self::default()
        }
    }

    /// Keeps the last `limit` bytes.
    pub fn tail(limit: usize) -> Self {
        Self {
            limit,
            tail: true,
            ..Self::default()
        }
    }

    /// Adds a chunk read from the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        self.seen += chunk.len();
        if self.tail {
            self.bytes.extend_from_slice(chunk);
            // Trim in bulk, not on every chunk, so a chatty stream costs amortised O(1).
            if self.bytes.len() > 2 * self.limit {
                let cut = self.bytes.len() - self.limit;
                self.bytes.drain(..cut);
            }
        } else {
            let room = self.limit.saturating_sub(self.bytes.len());
            self.bytes
                .extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
    }

    /// Whether more was written than kept.
    pub fn overflowed(&self) -> bool {
        self.seen > self.limit
    }

    /// The bytes kept: the head, or the last `limit` bytes.
    pub fn bytes(&self) -> &[u8] {
        if self.tail && self.bytes.len() > self.limit {
            &self.bytes[self.bytes.len() - self.limit..]
        } else {
            &self.bytes
        }
    }
}

/// The result of a command that exited 0: its stdout as JSON when it is JSON (surrounding
/// whitespace allowed) that the queue can store, else `{"stdout": "<text>"}`, and no result at
/// all when it printed nothing but whitespace.
///
/// JSON nested deeper than [`abathur_core::models::MAX_JSON_DEPTH`] is stored as text, as
/// anything else that is not storable JSON: one rule, whatever the depth (a parser gives up on
/// very deep JSON by itself, and that too is text).
pub fn result_from_stdout(stdout: &[u8]) -> Option<Value> {
    let text = String::from_utf8_lossy(stdout);
    if text.trim().is_empty() {
        return None;
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(value) if check_json_depth("result", &value).is_ok() => Some(value),
        _ => Some(json!({ "stdout": text })),
    }
}

/// Checks that a result fits the queue's limit on a task's result, [`MAX_TASK_JSON_BYTES`] of
/// compact JSON.
///
/// # Errors
/// A [`ValidationError`] on `result` naming the limit.
pub fn check_result(result: &Value) -> Result<(), ValidationError> {
    check_json("result", result, MAX_TASK_JSON_BYTES)
}

/// The last `max` bytes of `bytes` as text, at most `max` bytes in all: cut at a character
/// boundary and marked with a leading `…` when cut, invalid UTF-8 replaced, NUL characters
/// (which a stored error may not hold) replaced, and trailing whitespace trimmed.
pub fn text_tail(bytes: &[u8], max: usize) -> String {
    let mut start = bytes.len().saturating_sub(max);
    // Skip UTF-8 continuation bytes, so the cut does not split a character.
    while start < bytes.len() && start > 0 && (bytes[start] & 0b1100_0000) == 0b1000_0000 {
        start += 1;
    }
    let text = String::from_utf8_lossy(&bytes[start..]).replace('\0', "\u{FFFD}");
    let text = text.trim_end();
    if start == 0 && text.len() <= max {
        return text.to_string();
    }
    // Replacement characters are longer than the bytes they replace, and the mark takes room
    // too: cut again, from the text.
    let room = max.saturating_sub('…'.len_utf8());
    let mut from = text.len().saturating_sub(room);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    format!("…{}", &text[from..])
}

/// An error message the queue accepts: at most [`MAX_ERROR_BYTES`], cut to its tail.
pub fn fit_error(error: &str) -> String {
    if error.len() <= MAX_ERROR_BYTES && !error.contains('\0') {
        error.to_string()
    } else {
        text_tail(error.as_bytes(), MAX_ERROR_BYTES)
    }
}

/// How a process ended, in words: `exited with status 3`, `was killed by signal 9 (SIGKILL)`.
pub fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return match signal_name(signal) {
                Some(name) => format!("was killed by signal {signal} ({name})"),
                None => format!("was killed by signal {signal}"),
            };
        }
    }
    format!("ended with {status}")
}

#[cfg(unix)]
fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        _ => return None,
    })
}

/// The error message of a failed attempt: what happened, then the tail of stderr, as much of
/// it as fits in [`MAX_ERROR_BYTES`] with the rest.
pub fn failure_message(what: &str, stderr: &[u8]) -> String {
    let lead = format!("the command {what}; the end of its stderr:\n");
    let tail = text_tail(stderr, MAX_ERROR_BYTES.saturating_sub(lead.len()));
    if tail.is_empty() {
        fit_error(&format!("the command {what}, with nothing on stderr"))
    } else {
        fit_error(&format!("{lead}{tail}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_on_stdout_is_the_result_itself() {
        assert_eq!(
            result_from_stdout(b"  {\"files\": 42}\n"),
            Some(json!({"files": 42}))
        );
        assert_eq!(result_from_stdout(b"[1, 2]"), Some(json!([1, 2])));
        assert_eq!(result_from_stdout(b"7\n"), Some(json!(7)));
    }

    #[test]
    fn other_stdout_is_wrapped_as_text() {
        assert_eq!(
            result_from_stdout(b"built 3 crates\n"),
            Some(json!({"stdout": "built 3 crates\n"}))
        );
        assert_eq!(
            result_from_stdout(b"{\"truncated\": "),
            Some(json!({"stdout": "{\"truncated\": "}))
        );
        assert_eq!(
            result_from_stdout(b"caf\xe9"),
            Some(json!({"stdout": "caf\u{FFFD}"}))
        );
    }

    #[test]
    fn json_too_deep_to_store_is_text_at_every_depth() {
        use abathur_core::models::MAX_JSON_DEPTH;
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let deepest = nested(MAX_JSON_DEPTH);
        assert!(
            result_from_stdout(deepest.as_bytes()).is_some_and(|v| v.is_array()),
            "JSON the queue stores stays JSON"
        );
        // Past the limit, within serde_json's own (128), and far past it: all text.
        for depth in [MAX_JSON_DEPTH + 1, 127, 128, 10_000] {
            let text = nested(depth);
            assert_eq!(
                result_from_stdout(text.as_bytes()),
                Some(json!({ "stdout": text })),
                "depth {depth}"
            );
        }
    }

    #[test]
    fn a_result_is_measured_as_stored_and_refused_past_the_limit_by_name() {
        let fits = json!({ "stdout": "a".repeat(MAX_TASK_JSON_BYTES - 20) });
        assert!(check_result(&fits).is_ok());
        // Control characters take six bytes each once escaped: the stored form decides.
        let escaped = result_from_stdout(&vec![1u8; MAX_TASK_JSON_BYTES / 2]).expect("text");
        let err = check_result(&escaped).expect_err("over the limit once escaped");
        assert_eq!(err.field, "result");
        assert!(
            err.message
                .contains(&abathur_core::limits::bytes(MAX_TASK_JSON_BYTES)),
            "{err}"
        );
    }

    #[test]
    fn an_error_message_always_fits_the_limit_and_keeps_its_end() {
        let stderr = [vec![0u8; 3 * MAX_ERROR_BYTES], b"the real error".to_vec()].concat();
        let message = failure_message("exited with status 1", &stderr);
        assert!(message.len() <= MAX_ERROR_BYTES, "{} bytes", message.len());
        assert!(
            message.starts_with("the command exited with status 1"),
            "{message:.80}"
        );
        assert!(message.ends_with("the real error"));
        let long = format!("{}the end", "x".repeat(2 * MAX_ERROR_BYTES));
        let fitted = fit_error(&long);
        assert!(fitted.len() <= MAX_ERROR_BYTES && fitted.ends_with("the end"));
        assert_eq!(fit_error("short"), "short");
    }

    #[test]
    fn no_output_is_no_result() {
        assert_eq!(result_from_stdout(b""), None);
        assert_eq!(result_from_stdout(b" \n\t"), None);
    }

    #[test]
    fn a_stderr_tail_is_bounded_valid_utf8_without_nul() {
        let mut long = "é".repeat(STDERR_TAIL_BYTES).into_bytes(); // two bytes each
        long.extend_from_slice(b"\0 the real error\n");
        let tail = text_tail(&long, STDERR_TAIL_BYTES);
        assert!(tail.starts_with('…'), "{tail:?}");
        assert!(tail.ends_with("\u{FFFD} the real error"), "{tail:?}");
        assert!(!tail.contains('\0'));
        assert!(!tail[3..].starts_with('\u{FFFD}'), "cut inside a character");
        assert!(tail.len() <= STDERR_TAIL_BYTES, "{} bytes", tail.len());
        assert_eq!(text_tail(b"short\n", STDERR_TAIL_BYTES), "short");
    }

    #[test]
    fn a_tail_capture_keeps_the_end_and_a_head_capture_the_start() {
        let mut tail = Capture::tail(8);
        let mut head = Capture::head(8);
        for chunk in [&b"0123"[..], b"456789", b"abcdefghij", b"XY"] {
            tail.push(chunk);
            head.push(chunk);
        }
        assert_eq!(tail.bytes(), b"efghijXY");
        assert_eq!(head.bytes(), b"01234567");
        assert!(head.overflowed() && tail.overflowed());
        let mut small = Capture::head(8);
        small.push(b"abc");
        assert!(!small.overflowed());
    }

    #[cfg(unix)]
    #[test]
    fn exits_and_signals_are_described_in_words() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            describe_exit(ExitStatus::from_raw(3 << 8)),
            "exited with status 3"
        );
        assert_eq!(
            describe_exit(ExitStatus::from_raw(9)),
            "was killed by signal 9 (SIGKILL)"
        );
        assert_eq!(
            failure_message("exited with status 3", b"oops\n"),
            "the command exited with status 3; the end of its stderr:\noops"
        );
        assert_eq!(
            failure_message("exited with status 3", b""),
            "the command exited with status 3, with nothing on stderr"
        );
    }
}
