//! The records abathur stores: tasks, agents, memories and sessions.

mod agent;
mod memory;
mod session;
mod task;

pub use agent::{Agent, AgentStatus};
pub use memory::{Memory, MemoryType, NewMemory};
pub use session::{check_state_key, check_state_value, NewSessionEvent, Session, SessionEvent};
pub use task::{
    default_summary, DependencyType, Task, TaskSource, TaskStatus, MAX_PRIORITY, MAX_SUMMARY_CHARS,
};

/// Checks that a text field holds no NUL character, which PostgreSQL cannot store in text and
/// SQLite's string functions treat as the end of the text.
///
/// # Errors
/// Returns a [`crate::ValidationError`] naming `field`.
pub fn check_no_nul(field: &'static str, value: &str) -> Result<(), crate::ValidationError> {
    if value.contains('\0') {
        Err(crate::ValidationError::new(
            field,
            "must not contain a NUL character",
        ))
    } else {
        Ok(())
    }
}

/// Checks a short name (an agent type, a branch, a worker, actor or author, a namespace or
/// key, an application or user): not empty or only white space, no NUL character, and at most
/// [`crate::limits::MAX_NAME_BYTES`] bytes.
///
/// # Errors
/// Returns a [`crate::ValidationError`] naming `field`.
pub fn check_name(field: &'static str, value: &str) -> Result<(), crate::ValidationError> {
    if value.trim().is_empty() {
        return Err(crate::ValidationError::new(field, "must not be empty"));
    }
    check_text(field, value, crate::limits::MAX_NAME_BYTES)
}

/// [`check_name`] for a name that may be left out: when given, it must be a name.
///
/// # Errors
/// As for [`check_name`].
pub fn check_opt_name(
    field: &'static str,
    value: Option<&str>,
) -> Result<(), crate::ValidationError> {
    value.map_or(Ok(()), |value| check_name(field, value))
}

/// Checks a text field: no NUL character, and at most `max` bytes.
///
/// # Errors
/// Returns a [`crate::ValidationError`] naming `field`.
pub fn check_text(
    field: &'static str,
    value: &str,
    max: usize,
) -> Result<(), crate::ValidationError> {
    crate::limits::check_text(field, value, max)?;
    check_no_nul(field, value)
}

/// Checks a stored JSON value: at most `max` bytes in its compact encoding, and nested at most
/// [`MAX_JSON_DEPTH`] deep.
///
/// # Errors
/// Returns a [`crate::ValidationError`] naming `field`.
pub fn check_json(
    field: &'static str,
    value: &serde_json::Value,
    max: usize,
) -> Result<(), crate::ValidationError> {
    // Depth first: a value too deep to encode would otherwise be reported as too large.
    check_json_depth(field, value)?;
    crate::limits::check_json(field, value, max)
}

/// The deepest nesting of arrays and objects a stored JSON value may have. Deeper values are
/// refused on write, because JSON parsers (serde_json's among them) refuse to read them back.
pub const MAX_JSON_DEPTH: usize = 100;

/// Checks that a JSON value nests arrays and objects at most [`MAX_JSON_DEPTH`] deep.
///
/// # Errors
/// Returns a [`crate::ValidationError`] naming `field`.
pub fn check_json_depth(
    field: &'static str,
    value: &serde_json::Value,
) -> Result<(), crate::ValidationError> {
    // Iterative, so a hostile value cannot exhaust the stack here.
    let mut stack = vec![(value, 0usize)];
    while let Some((value, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &serde_json::Value>> = match value {
            serde_json::Value::Array(items) => Box::new(items.iter()),
            serde_json::Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        if depth + 1 > MAX_JSON_DEPTH {
            return Err(crate::ValidationError::new(
                field,
                format!("nests arrays and objects deeper than {MAX_JSON_DEPTH} levels"),
            ));
        }
        stack.extend(children.map(|child| (child, depth + 1)));
    }
    Ok(())
}

/// The error of parsing an enum from its stored name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}; expected one of: {expected}")]
pub struct UnknownVariant {
    /// The enum's name in the user's terms (`task status`, ...).
    pub kind: &'static str,
    /// The text that matched no variant.
    pub value: String,
    /// The accepted names, separated by spaces.
    pub expected: &'static str,
}

/// Declares an enum stored as text: its variants' names, `Display`, `FromStr`, `as_str` and
/// `ALL`, with serde using the same snake_case names.
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $kind:literal {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored name of the variant.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::models::UnknownVariant;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::models::UnknownVariant {
                        kind: $kind,
                        value: s.to_string(),
                        expected: concat!($($text, " "),+).trim_ascii_end(),
                    }),
                }
            }
        }
    };
}
pub(crate) use text_enum;
