//! What a worker does while the database fails for a while: a PostgreSQL server restarting or
//! dropping connections, no connection free in time, SQLite's write lock held past the busy
//! timeout. Nothing of that is the task's fault, and it passes: the worker waits and tries
//! again, with a backoff so that it never hammers a database that is coming back up, and says
//! so once per outage, not once per try.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use abathur_core::error::DatabaseError;
use abathur_core::queue::QueueError;
use tokio::sync::Notify;
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
/// first one gets through again. It also wakes the reports waiting to try again as soon as
/// the database answers, and counts them, so that the worker's own reaper does not take
/// back, the moment the database is back, the tasks whose results are about to be reported.
#[derive(Debug, Default)]
pub(super) struct Outage {
    state: Mutex<State>,
    /// Told when an outage ends.
    back: Notify,
    /// Reports (completions, failures, releases) that met a failure and are not answered yet.
    waiting: AtomicUsize,
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
            self.back.notify_waiters();
        }
    }

    /// Counts a report as [waiting](Outage::reports_waiting) until the guard is dropped:
    /// from its first failed try until it is answered.
    pub(super) fn report_waiting(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        Waiting(&self.waiting)
    }

    /// Waits out `pause` before a report tries again, or less: until the database answers
    /// another operation.
    pub(super) async fn pause_report(&self, pause: Duration) {
        // An outage that ended between this report's try and now is not told again: the
        // full pause then, which is short at first.
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = self.back.notified() => {}
        }
    }

    /// Whether a report is waiting for the database (a completion, say, whose try failed):
    /// the worker does not reap meanwhile, since its reaper would take back, the moment the
    /// database is back, the very tasks whose results are about to be reported. Other
    /// workers' reapers still may, once the lease has expired; the report is then refused
    /// as a lost lease and the task runs again.
    pub(super) fn reports_waiting(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) > 0
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

/// A report counted as waiting, until dropped.
#[derive(Debug)]
pub(super) struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
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

    #[tokio::test]
    async fn a_waiting_report_tries_again_as_soon_as_the_database_answers() {
        let outage = std::sync::Arc::new(Outage::default());
        outage.failed(&DatabaseError::Timeout);
        assert!(!outage.reports_waiting());
        let (paused_tx, paused) = tokio::sync::oneshot::channel();
        let waiting = tokio::spawn({
            let outage = outage.clone();
            async move {
                let _waiting = outage.report_waiting();
                let pause = outage.pause_report(Duration::from_secs(3600));
                tokio::pin!(pause);
                // Polled once, so that it listens; then told to the test.
                assert!(futures_poll_once(pause.as_mut()).await.is_none());
                let _ = paused_tx.send(());
                // Far longer than the test may take.
                pause.await;
            }
        });
        paused.await.expect("the report pauses");
        assert!(outage.reports_waiting());
        // Another operation gets through: the report is woken, not left to sleep on.
        outage.answered();
        waiting.await.expect("the pause ends");
        assert!(!outage.reports_waiting());
    }

    /// Polls `future` once: its output if it is ready.
    async fn futures_poll_once<F: std::future::Future + Unpin>(mut future: F) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(cx) {
                std::task::Poll::Ready(output) => Some(output),
                std::task::Poll::Pending => None,
            })
        })
        .await
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
