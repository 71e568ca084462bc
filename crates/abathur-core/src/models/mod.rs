//! The records abathur stores: tasks, agents, memories and sessions.

mod agent;
mod memory;
mod session;
mod task;

pub use agent::{Agent, AgentStatus};
pub use memory::{check_name, Memory, MemoryType, NewMemory};
pub use session::{check_state_key, NewSessionEvent, Session, SessionEvent};
pub use task::{DependencyType, Task, TaskSource, TaskStatus, MAX_PRIORITY, MAX_SUMMARY_CHARS};

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
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
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
