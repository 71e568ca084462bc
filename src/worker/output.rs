//! What a command's output becomes: its stdout the task's result, the tail of its stderr the
//! task's error message. Pure functions, so the rules are tested without running anything.

use std::process::ExitStatus;

use serde_json::{json, Value};

/// The most of stderr kept for an error message. A failing command may print megabytes; the
/// end of it usually says why.
pub const STDERR_TAIL_BYTES: usize = 4096;

/// The most of stdout taken as a result. A result is stored in one row; a command that prints
/// more than this fails rather than filling the database.
pub const STDOUT_LIMIT_BYTES: usize = 16 * 1024 * 1024;

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
/// whitespace allowed), else `{"stdout": "<text>"}`, and no result at all when it printed
/// nothing but whitespace.
pub fn result_from_stdout(stdout: &[u8]) -> Option<Value> {
    let text = String::from_utf8_lossy(stdout);
    if text.trim().is_empty() {
        return None;
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(value) => Some(value),
        Err(_) => Some(json!({ "stdout": text })),
    }
}

/// The last `max` bytes of `bytes` as text: cut at a character boundary, invalid UTF-8
/// replaced, NUL characters (which a stored error may not hold) replaced, and trailing
/// whitespace trimmed.
pub fn text_tail(bytes: &[u8], max: usize) -> String {
    let mut start = bytes.len().saturating_sub(max);
    // Skip UTF-8 continuation bytes, so the cut does not split a character.
    while start < bytes.len() && start > 0 && (bytes[start] & 0b1100_0000) == 0b1000_0000 {
        start += 1;
    }
    let text = String::from_utf8_lossy(&bytes[start..]).replace('\0', "\u{FFFD}");
    let text = text.trim_end();
    if start > 0 {
        format!("…{text}")
    } else {
        text.to_string()
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

/// The error message of a failed attempt: what happened, then the tail of stderr.
pub fn failure_message(what: &str, stderr: &[u8]) -> String {
    let tail = text_tail(stderr, STDERR_TAIL_BYTES);
    if tail.is_empty() {
        format!("the command {what}, with nothing on stderr")
    } else {
        format!("the command {what}; the end of its stderr:\n{tail}")
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
    fn no_output_is_no_result() {
        assert_eq!(result_from_stdout(b""), None);
        assert_eq!(result_from_stdout(b" \n\t"), None);
    }

    #[test]
    fn a_stderr_tail_is_bounded_valid_utf8_without_nul() {
        let mut long = "é".repeat(5000).into_bytes(); // two bytes each
        long.extend_from_slice(b"\0 the real error\n");
        let tail = text_tail(&long, STDERR_TAIL_BYTES);
        assert!(tail.starts_with('…'), "{tail:?}");
        assert!(tail.ends_with("\u{FFFD} the real error"), "{tail:?}");
        assert!(!tail.contains('\0'));
        assert!(!tail[3..].starts_with('\u{FFFD}'), "cut inside a character");
        assert!(tail.len() <= STDERR_TAIL_BYTES + 3 + 2);
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
