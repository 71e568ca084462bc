//! Notifications at the end of a backoff.
//!
//! A task held back until a time (a failed attempt's backoff, a submission's `run_after`)
//! becomes claimable when that time comes, and no transaction happens then to send the
//! schema's `NOTIFY`. The process that set the time knows it, though: [`Alarm`] sends one
//! `NOTIFY abathur_changes` (the channel of [`crate::CHANNEL`]) when each such time has come,
//! so that idle workers everywhere claim the task at once instead of at their next poll. When
//! the process stops first, the workers' polling finds the task, as it finds anything a lost
//! notification announced.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The times to notify at, and one task that sleeps until the next of them.
#[derive(Clone)]
pub(crate) struct Alarm {
    inner: Arc<Inner>,
}

/// How long a reading of the server's clock is used to time alarms, counted on by this
/// machine's monotonic clock.
const CLOCK_REUSE: Duration = Duration::from_secs(10);

/// Added to every wait: the reading of the server's clock is a little old by the time it is
/// used, and the two clocks drift (the wait's ten-thousandth more covers that).
const MARGIN: Duration = Duration::from_millis(5);

/// The most times kept at once; past it, a time is left to the workers' polling.
const MAX_DUE: usize = 100_000;

struct Inner {
    pool: PgPool,
    /// The server's clock as last read, and when here.
    clock: Mutex<Option<(DateTime<Utc>, Instant)>>,
    state: Mutex<State>,
    /// Told when a time earlier than the one slept for is set.
    earlier: Notify,
}

#[derive(Default)]
struct State {
    due: BTreeSet<Instant>,
    /// Whether the task that sleeps until the next time is running.
    running: bool,
}

impl Alarm {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                clock: Mutex::new(None),
                state: Mutex::new(State::default()),
                earlier: Notify::new(),
            }),
        }
    }

    /// Notifies once the server's clock reaches each of `times`. The waits are measured
    /// against the server's clock (read at most every [`CLOCK_REUSE`], and counted on from
    /// there by this machine's monotonic clock), so that this machine's wall clock, right or
    /// wrong, does not move them; each gets a small margin so that it never comes early. A
    /// time already past is due at once (the write that set it notified while it was still
    /// ahead). A server that cannot be asked sets nothing: polling remains.
    pub(crate) async fn at(&self, times: Vec<DateTime<Utc>>) {
        if times.is_empty() {
            return;
        }
        let Some((now, here)) = self.server_clock().await else {
            return;
        };
        let due: Vec<Instant> = times
            .into_iter()
            .map(|at| {
                let wait = (at - now).to_std().unwrap_or(Duration::ZERO);
                here + wait + wait / 10_000 + MARGIN
            })
            .collect();
        let Some(soonest) = due.iter().min().copied() else {
            return;
        };
        let start = {
            let mut state = self.inner.lock();
            let earliest = state.due.first().is_none_or(|first| soonest < *first);
            let room = MAX_DUE.saturating_sub(state.due.len());
            if room < due.len() {
                tracing::debug!("too many backoffs to announce; the rest are found by polling");
            }
            state.due.extend(due.into_iter().take(room));
            if !state.running {
                state.running = true;
                Some(true)
            } else if earliest {
                Some(false)
            } else {
                None
            }
        };
        match start {
            Some(true) => {
                tokio::spawn(ring(self.inner.clone()));
            }
            Some(false) => self.inner.earlier.notify_one(),
            None => {}
        }
    }
}

impl Alarm {
    /// The server's clock and the moment it was read here: read anew when the last reading is
    /// older than [`CLOCK_REUSE`], so that a burst of failures costs one query, not one each.
    async fn server_clock(&self) -> Option<(DateTime<Utc>, Instant)> {
        if let Some((server, here)) = *self.inner.clock_lock() {
            let age = here.elapsed();
            if age < CLOCK_REUSE {
                let age = chrono::Duration::from_std(age).ok()?;
                return Some((server + age, Instant::now()));
            }
        }
        match sqlx::query_scalar!(r#"SELECT clock_timestamp() AS "now!""#)
            .fetch_one(&self.inner.pool)
            .await
        {
            Ok(now) => {
                let here = Instant::now();
                *self.inner.clock_lock() = Some((now, here));
                Some((now, here))
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the server's clock to notify at the end of a backoff");
                None
            }
        }
    }

    /// [`Alarm::at`] the times the tasks of `ids` are held back until (a reaped task's
    /// backoff, set inside the reap's transaction).
    pub(crate) async fn for_tasks(&self, ids: Vec<uuid::Uuid>) {
        if ids.is_empty() {
            return;
        }
        match sqlx::query_scalar!(
            "SELECT run_after FROM task_schedule WHERE task_id = ANY($1)",
            &ids
        )
        .fetch_all(&self.inner.pool)
        .await
        {
            Ok(times) => self.at(times).await,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the backoffs a reap set; workers will poll");
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn clock_lock(&self) -> std::sync::MutexGuard<'_, Option<(DateTime<Utc>, Instant)>> {
        self.clock.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The running ring task's mark: should the task be dropped before it finds nothing left
/// (its runtime shutting down), the drop clears `running`, so that a later time starts a new
/// task rather than wait for one that is gone.
struct Ringing {
    inner: Arc<Inner>,
    finished: bool,
}

impl Drop for Ringing {
    fn drop(&mut self) {
        if !self.finished {
            self.inner.lock().running = false;
        }
    }
}

/// Sleeps until the next time set, notifies, and goes on until none is left.
async fn ring(inner: Arc<Inner>) {
    let mut ringing = Ringing {
        inner,
        finished: false,
    };
    let inner = ringing.inner.clone();
    loop {
        let next = {
            let mut state = inner.lock();
            match state.due.first().copied() {
                Some(next) => next,
                None => {
                    state.running = false;
                    ringing.finished = true;
                    return;
                }
            }
        };
        tokio::select! {
            () = tokio::time::sleep_until(next) => {
                {
                    let mut state = inner.lock();
                    let now = Instant::now();
                    while state.due.first().is_some_and(|first| *first <= now) {
                        state.due.pop_first();
                    }
                }
                if let Err(e) = sqlx::query!("SELECT 1 AS one FROM pg_notify('abathur_changes', '')")
                    .fetch_one(&inner.pool)
                    .await
                {
                    tracing::debug!(error = %e, "cannot notify at the end of a backoff; workers will poll");
                }
            }
            () = inner.earlier.notified() => {}
        }
    }
}
