//! How an idle worker learns that work may have appeared, without claiming in a busy loop.
//!
//! A claim is a write transaction: it takes the database's write lock, even when it finds
//! nothing. Idle workers that claimed every few milliseconds would compete with every writer
//! for that lock. So an idle worker waits on a [`Wake`] instead, and claims only when it fires.
//!
//! [`Subscribed`] is the one a backend gives: it waits on a subscription of the change port
//! ([`abathur_core::ports::Changes`]); on SQLite that polls `PRAGMA data_version` every 50 ms
//! on a connection of its own, so a submission by another process is seen within one poll. A
//! claim that finds nothing writes nothing and so does not wake the worker again. Nothing
//! commits when a retried task's backoff runs out, so the worker also claims once in a while
//! without a change (the `at_most` of [`Wake::wait`]).

use std::time::Duration;

use abathur_core::ports::ChangeSubscription;
use async_trait::async_trait;
use tokio::time::{sleep, Instant};

/// A signal that the queue may have changed.
#[async_trait]
pub trait Wake: Send {
    /// Returns when the queue may hold new work, or after `at_most`, whichever comes first.
    /// Cancel-safe: a change seen by a call that is dropped is reported by the next.
    async fn wait(&mut self, at_most: Duration);
}

/// Waits the full `at_most` every time: polling at that period, for stores with no cheaper
/// way to tell a change.
#[derive(Debug, Clone, Copy, Default)]
pub struct Interval;

#[async_trait]
impl Wake for Interval {
    async fn wait(&mut self, at_most: Duration) {
        sleep(at_most).await;
    }
}

/// Fires when a subscription to the backend's changes sees one.
#[derive(Debug)]
pub struct Subscribed {
    subscription: Box<dyn ChangeSubscription>,
    /// Whether the last wait failed: a watch that stays broken (the database is down) is told
    /// once, not at every wait.
    failing: bool,
}

impl Subscribed {
    /// Wakes on the changes `subscription` sees.
    pub fn new(subscription: Box<dyn ChangeSubscription>) -> Self {
        Self {
            subscription,
            failing: false,
        }
    }

    /// Ends the subscription and waits until what it held is released: on SQLite its
    /// connection, which must close before the pool's last one so that the WAL is merged
    /// before the process exits.
    pub async fn close(self) {
        self.subscription.close().await;
    }
}

#[async_trait]
impl Wake for Subscribed {
    async fn wait(&mut self, at_most: Duration) {
        let deadline = Instant::now() + at_most;
        match self.subscription.changed(at_most).await {
            Ok(_) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!("watching the database for changes again");
                }
            }
            Err(e) => {
                // Claiming still works; fall back to the slow period.
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(
                        error = %e,
                        "cannot watch the database for changes; looking for work every {:?} \
                         until it works again",
                        at_most
                    );
                }
                sleep(deadline.saturating_duration_since(Instant::now())).await;
            }
        }
    }
}
