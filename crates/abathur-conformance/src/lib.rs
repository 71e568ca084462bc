//! The conformance suite of abathur's ports: every rule of the queue (`docs/QUEUE.md`) and every
//! `# Errors` contract of the port traits, as one case each, written against the ports alone.
//!
//! A backend runs the whole suite by implementing [`Backend`] (open a fresh, empty, migrated
//! database and hand out its ports) and calling [`suite!`] in one of its test files:
//!
//! ```ignore
//! struct MyBackend;
//!
//! #[async_trait::async_trait]
//! impl abathur_conformance::Backend for MyBackend {
//!     async fn open(&self, clock: Arc<dyn Clock>) -> Ports { /* ... */ }
//! }
//!
//! abathur_conformance::suite!(MyBackend);
//! ```
//!
//! The macro expands to one `#[tokio::test]` per case, grouped in a module per topic, so a
//! failure names the rule it broke: called in a module `file`, a case shows as
//! `file::queue_fencing::a_failed_attempt_cannot_complete`. Call it once per configuration of
//! the backend, each in a module of its own. Every case gets a database of its own and a [`ManualClock`]: time moves
//! only when a case moves it, and no case sleeps.

mod backend;
mod clock;
mod harness;
mod list;

#[doc(hidden)]
pub mod cases;

pub use backend::{Backend, Ports};
pub use clock::ManualClock;
pub use harness::Harness;

/// Every case of the suite, as (topic, case) pairs, in the order the suite runs them.
pub const CASES: &[(&str, &str)] = crate::__for_each_case!(names);

/// How long a case may take before it counts as hung. Only a hang gets near it.
const CASE_TIME_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs one case against a fresh database of `backend`.
///
/// # Panics
/// When the case fails, or takes longer than a hang would.
#[doc(hidden)]
pub async fn run<B, F, Fut>(backend: &B, case: F)
where
    B: Backend + ?Sized,
    F: FnOnce(Harness) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let clock = ManualClock::new();
    let ports = backend.open(clock.clone()).await;
    let harness = Harness::new(ports, clock);
    if tokio::time::timeout(CASE_TIME_LIMIT, case(harness))
        .await
        .is_err()
    {
        panic!("the case did not finish within {CASE_TIME_LIMIT:?}: it hangs");
    }
}

/// Expands to one `#[tokio::test]` per case of the suite, each on a fresh database of the
/// backend that `$backend` (an expression of a type implementing [`Backend`]) opens. Call it
/// once per module; the calling crate needs `tokio` with the `macros` and `rt` features.
#[macro_export]
macro_rules! suite {
    ($backend:expr) => {
        fn __conformance_backend() -> impl $crate::Backend {
            $backend
        }
        $crate::__for_each_case!(tests);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __emit_cases {
    (names; $($topic:ident { $($case:ident),* $(,)? })*) => {
        &[$($((stringify!($topic), stringify!($case)),)*)*]
    };
    (tests; $($topic:ident { $($case:ident),* $(,)? })*) => {
        $(
            mod $topic {
                $(
                    #[::tokio::test]
                    async fn $case() {
                        $crate::run(
                            &super::__conformance_backend(),
                            $crate::cases::$topic::$case,
                        )
                        .await;
                    }
                )*
            }
        )*
    };
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    #[test]
    fn every_case_written_is_listed_and_every_listed_case_is_written() {
        let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/src/cases");
        let mut sources = Vec::new();
        for entry in std::fs::read_dir(folder).expect("the cases folder") {
            let path = entry.expect("a file of the cases folder").path();
            let topic = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            if topic != "mod" {
                let source = std::fs::read_to_string(&path).expect("a case file");
                sources.push((topic.to_string(), source));
            }
        }
        let written: BTreeSet<(&str, &str)> = sources
            .iter()
            .flat_map(|(topic, source)| {
                source.lines().filter_map(move |line| {
                    let name = line.strip_prefix("pub async fn ")?;
                    Some((topic.as_str(), name.split('(').next()?))
                })
            })
            .collect();
        let listed: BTreeSet<(&str, &str)> = super::CASES.iter().copied().collect();
        assert_eq!(listed.len(), super::CASES.len(), "a case is listed twice");
        assert_eq!(
            written.difference(&listed).collect::<Vec<_>>(),
            Vec::<&(&str, &str)>::new(),
            "written but not listed in list.rs"
        );
        assert_eq!(
            listed.difference(&written).collect::<Vec<_>>(),
            Vec::<&(&str, &str)>::new(),
            "listed in list.rs but not written"
        );
        let topics: BTreeSet<&str> = sources.iter().map(|(t, _)| t.as_str()).collect();
        let listed_topics: BTreeSet<&str> = super::CASES.iter().map(|(t, _)| *t).collect();
        assert_eq!(topics, listed_topics);
    }
}
