//! What a worker does while the database fails for a while: a PostgreSQL server restarting or
//! dropping connections, no connection free in time, SQLite's write lock held past the busy
//! timeout. Nothing of that is the task's fault, and it passes: the worker waits and tries
//! again, with a backoff so that it never hammers a database that is coming back up, and says
//! so once per outage, not once per try.

use std::sync::Mutex;
use std::time::Duration;

use abathur_core::error::DatabaseError;
use abathur_core::queue::QueueError;
use tokio::time::Instant;

/// The database failing in a way that passes, rather than answering: `Busy`, `Timeout` (no
/// connection free in time, which is also how a server that is down shows while the pool
/// waits for it) or `Connection` (lost, refused, the server restarting).
pub(super) fn transient(error: &QueueError) -> Option<&DatabaseError> {
    match error {
        QueueError::Database(e) if passes(e) => Some(e),
        _ => None,
    }
}

/// Whether the database's failure `error` passes: see [`transient`].
pub(super) fn passes(error: &DatabaseError) -> bool {
    matches!(
        error,
        DatabaseError::Busy | DatabaseError::Timeout | DatabaseError::Connection(_)
    )
}

/// The first pause of a [`Backoff`].
pub(super) const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause of a [`Backoff`]: a server back up is used at most this long after.
pub(super) const LONGEST_PAUSE: Duration = Duration::from_secs(2);

/// Pauses between tries that double from the first (by default [`FIRST_PAUSE`]) up to the
/// longest ([`LONGEST_PAUSE`]), each shifted by up to a quarter either way, so that the
/// workers of a swarm that lost the database together do not all come back in the same
/// instant. A clone starts where the original is.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    next: Duration,
    longest: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(FIRST_PAUSE, LONGEST_PAUSE)
    }
}

impl Backoff {
    /// Pauses from `first`, doubling up to `longest`.
    pub(super) fn new(first: Duration, longest: Duration) -> Self {
        Self {
            next: first.min(longest),
            longest,
        }
    }

    /// The pause before the next try.
    pub(super) fn pause(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.longest);
        base.mul_f64(0.75 + unit_random() * 0.5)
    }
}

/// A number in `[0, 1)`, different in every call and every process: the standard library's
/// hasher keys are random, which is all the spread of a backoff needs.
fn unit_random() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    // The top 53 bits, as a fraction.
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// One worker's view of whether the database is failing, shared by its claim loop and its
/// attempts, so that an outage is told once: when the first operation fails, and when the
/// first one gets through again.
#[derive(Debug, Default)]
pub(super) struct Outage {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When the current outage began; `None` while the database answers.
    since: Option<Instant>,
    /// Outages told so far.
    outages: u64,
}

impl Outage {
    /// Notes that an operation met `error`, a failure that passes ([`transient`]); the first
    /// one of an outage is logged.
    pub(super) fn failed(&self, error: &DatabaseError) {
        let mut state = self.lock();
        if state.since.is_none() {
            state.since = Some(Instant::now());
            state.outages += 1;
            drop(state);
            tracing::warn!("{}; waiting for it, trying again", describe(error));
        }
    }

    /// Notes that the database answered (with a result or a refusal); ends an outage.
    pub(super) fn answered(&self) {
        let mut state = self.lock();
        if let Some(since) = state.since.take() {
            drop(state);
            tracing::info!(
                "the database answers again, after {:.1} s",
                since.elapsed().as_secs_f64()
            );
        }
    }

    /// Notes how an operation ended: [`Outage::failed`] for a failure that passes,
    /// [`Outage::answered`] for anything else but another failure of the database.
    pub(super) fn note<T>(&self, outcome: &Result<T, QueueError>) {
        match outcome {
            Ok(_) => self.answered(),
            Err(e) => match transient(e) {
                Some(db) => self.failed(db),
                // The database's own failure (a corrupt row, a full disk) says nothing about
                // whether it is reachable.
                None if matches!(e, QueueError::Database(_)) => {}
                None => self.answered(),
            },
        }
    }

    /// Whether an outage is under way.
    #[cfg(test)]
    pub(super) fn ongoing(&self) -> bool {
        self.lock().since.is_some()
    }

    /// How many outages began so far.
    #[cfg(test)]
    pub(super) fn count(&self) -> u64 {
        self.lock().outages
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is two plain values, whole at every moment.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The outage in a user's words.
fn describe(error: &DatabaseError) -> String {
    match error {
        DatabaseError::Busy => {
            "the database is busy (another writer holds it past the busy timeout)".into()
        }
        DatabaseError::Timeout => {
            "cannot get a database connection in time (the database may be down or restarting)"
                .into()
        }
        DatabaseError::Connection(detail) => format!("cannot reach the database ({detail})"),
        other => format!("the database failed ({other})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_longest_and_spread_by_a_quarter() {
        let mut backoff = Backoff::default();
        let mut base = FIRST_PAUSE;
        for _ in 0..10 {
            let pause = backoff.pause();
            assert!(
                pause >= base.mul_f64(0.75) && pause <= base.mul_f64(1.25),
                "{pause:?} around {base:?}"
            );
            base = (base * 2).min(LONGEST_PAUSE);
        }
        assert_eq!(base, LONGEST_PAUSE);
    }

    #[test]
    fn busy_timeout_and_connection_errors_pass_and_others_do_not() {
        for passing in [
            DatabaseError::Busy,
            DatabaseError::Timeout,
            DatabaseError::Connection("the server restarts".into()),
        ] {
            assert!(transient(&QueueError::Database(passing)).is_some());
        }
        for answer in [
            QueueError::Database(DatabaseError::DiskFull),
            QueueError::Database(DatabaseError::Other("x".into())),
            QueueError::AttemptNotFound(uuid::Uuid::nil()),
        ] {
            assert!(transient(&answer).is_none(), "{answer}");
        }
    }

    #[test]
    fn an_outage_is_counted_once_however_many_tries_fail() {
        let outage = Outage::default();
        let down: Result<(), QueueError> = Err(QueueError::Database(DatabaseError::Connection(
            "lost the connection".into(),
        )));
        for _ in 0..5 {
            outage.note(&down);
        }
        assert!(outage.ongoing());
        // A failure of the database's own is no sign it is back.
        outage.note::<()>(&Err(QueueError::Database(DatabaseError::Io)));
        assert!(outage.ongoing());
        // A refusal is an answer.
        outage.note::<()>(&Err(QueueError::AttemptNotFound(uuid::Uuid::nil())));
        assert!(!outage.ongoing());
        outage.note(&down);
        outage.note(&Ok(()));
        assert!(!outage.ongoing());
        assert_eq!(outage.count(), 2);
    }

    #[test]
    fn the_lines_are_plain() {
        assert_eq!(
            describe(&DatabaseError::Connection(
                "lost the connection to the PostgreSQL server: Connection refused (os error 111)"
                    .into()
            )),
            "cannot reach the database (lost the connection to the PostgreSQL server: \
             Connection refused (os error 111))"
        );
    }
}
