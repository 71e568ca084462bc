//! Claims that wait for work: `abathur task claim --wait` and MCP's `task_claim` with
//! `wait_seconds` answer as soon as a task can be claimed, instead of leaving the caller to
//! claim in a loop.
//!
//! A waiting claim sleeps on a [`Wake`], as an idle worker does (see [`crate::worker::Wake`]):
//! it claims again when another connection commits, and at least every [`RECHECK`], because a
//! retried task's backoff ends without any commit. The MCP server shares one [`ChangeFeed`]
//! among all its waiting claims, so a hundred waiting agents cost one watcher, not a hundred
//! connections.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use abathur_core::error::ValidationError;
use abathur_core::ports::{ChangeSubscription, Changes};
use abathur_core::queue::{ClaimedTask, QueueError, TaskQueue};
use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::worker::Wake;

/// The longest a claim may wait. A longer wait is refused, not shortened: a caller that asked
/// for an hour would otherwise take an empty answer for "nothing came in an hour".
pub const MAX_CLAIM_WAIT: Duration = Duration::from_secs(300);

/// How often a waiting claim looks again when nothing has committed: the longest a retried
/// task whose backoff has ended waits to be claimed.
pub const RECHECK: Duration = Duration::from_secs(1);

/// What one claim asks for.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    pub worker_id: &'a str,
    pub agent_types: &'a [String],
    pub lease: Duration,
    pub max: u32,
}

/// Checks a wait against [`MAX_CLAIM_WAIT`].
///
/// # Errors
/// A [`ValidationError`] naming `field` when `wait` is longer than the cap.
pub fn check_wait(field: &'static str, wait: Duration) -> Result<(), ValidationError> {
    if wait > MAX_CLAIM_WAIT {
        return Err(ValidationError::new(
            field,
            format!(
                "{} s is longer than the maximum wait of {} s; claim again when it ends",
                wait.as_secs_f64(),
                MAX_CLAIM_WAIT.as_secs()
            ),
        ));
    }
    Ok(())
}

/// Claims as [`TaskQueue::claim`] does; when nothing is ready, waits up to `wait` for a task to
/// become claimable and claims it. Returns an empty list when the wait ends, or as soon as
/// `gone` completes (the caller went away), without claiming again.
///
/// # Errors
/// What [`TaskQueue::claim`] returns, and a validation error when `wait` is above
/// [`MAX_CLAIM_WAIT`] (checked before anything is claimed).
pub async fn claim_waiting(
    queue: &TaskQueue,
    request: &ClaimRequest<'_>,
    wait: Duration,
    wake: &mut dyn Wake,
    gone: impl Future<Output = ()>,
) -> Result<Vec<ClaimedTask>, QueueError> {
    check_wait("wait", wait)?;
    let deadline = Instant::now() + wait;
    tokio::pin!(gone);
    let mut waited = false;
    loop {
        // The wake was set up before this claim, so a task submitted while it runs is seen
        // by this claim or wakes the next one.
        let claimed = queue
            .claim(
                request.worker_id,
                request.agent_types,
                request.lease,
                request.max,
            )
            .await?;
        if !claimed.is_empty() && has_completed(gone.as_mut()).await {
            hand_back(queue, request.worker_id, &claimed).await;
            return Ok(Vec::new());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if !claimed.is_empty() || left.is_zero() {
            return Ok(claimed);
        }
        if !waited {
            waited = true;
            tracing::debug!(
                worker = request.worker_id,
                ?left,
                "nothing to claim yet; waiting for work"
            );
        }
        tokio::select! {
            () = wake.wait(left.min(RECHECK)) => {}
            () = &mut gone => {
                tracing::debug!(worker = request.worker_id, "a waiting claim ended: the client went away");
                return Ok(Vec::new());
            }
        }
    }
}

/// Whether `future` is complete, without waiting for it. Call it only until it answers true.
async fn has_completed(future: std::pin::Pin<&mut impl Future<Output = ()>>) -> bool {
    tokio::select! {
        biased;
        () = future => true,
        () = std::future::ready(()) => false,
    }
}

/// Releases the tasks of a claim whose caller left while it committed: nobody would ever
/// receive them, and left to their leases they would wait for a reaper and count a retry.
async fn hand_back(queue: &TaskQueue, worker_id: &str, claimed: &[ClaimedTask]) {
    for task in claimed {
        tracing::debug!(worker = worker_id, task = %task.task.id, "handing back a task claimed after the client went away");
        if let Err(e) = queue
            .release(
                task.lease.attempt_id,
                "the client went away before the claim was answered",
            )
            .await
        {
            // The lease still expires, and a reaper takes the task back then.
            tracing::warn!(error = %e, task = %task.task.id, "cannot hand back a task claimed after the client went away");
        }
    }
}

/// One watcher of the database for every waiting claim of a process. It runs only while some
/// claim waits: the first subscriber starts it, and it stops when the last one is gone. The
/// watcher holds one subscription of the backend's change port.
#[derive(Clone)]
pub struct ChangeFeed {
    changes: Arc<dyn Changes>,
    state: Arc<FeedState>,
}

#[derive(Debug)]
struct FeedState {
    /// Bumped on every change seen, and every [`RECHECK`].
    ticks: watch::Sender<u64>,
    /// Whether the watcher runs; taken with a subscription so that none is left without one.
    running: Mutex<bool>,
}

impl std::fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeFeed")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl ChangeFeed {
    /// A feed of the changes `changes` reports.
    pub fn new(changes: Arc<dyn Changes>) -> Self {
        Self {
            changes,
            state: Arc::new(FeedState {
                ticks: watch::channel(0).0,
                running: Mutex::new(false),
            }),
        }
    }

    /// Whether the watcher runs: from the first subscription until a tick finds none left.
    pub fn is_watching(&self) -> bool {
        *self
            .state
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A [`Wake`] that fires on the next change. Call it inside a tokio runtime.
    pub fn subscribe(&self) -> FeedWake {
        let ticks = self.state.ticks.subscribe();
        let mut running = self
            .state
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !*running {
            *running = true;
            tokio::spawn(watch_database(self.changes.clone(), self.state.clone()));
        }
        FeedWake { ticks }
    }
}

async fn watch_database(changes: Arc<dyn Changes>, state: Arc<FeedState>) {
    let stop = |state: &FeedState| {
        *state
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = false;
    };
    let mut subscription: Box<dyn ChangeSubscription> = match changes.subscribe().await {
        Ok(subscription) => subscription,
        Err(e) => {
            // The waiting claims still look again every RECHECK on their own.
            tracing::warn!(error = %e, "cannot watch the database for changes");
            stop(&state);
            return;
        }
    };
    loop {
        if let Err(e) = subscription.changed(RECHECK).await {
            tracing::warn!(error = %e, "cannot watch the database for changes");
            tokio::time::sleep(RECHECK).await;
        }
        state.ticks.send_modify(|n| *n = n.wrapping_add(1));
        {
            let mut running = state
                .running
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if state.ticks.receiver_count() > 0 {
                continue;
            }
            *running = false;
        }
        subscription.close().await;
        return;
    }
}

/// A subscription to a [`ChangeFeed`].
#[derive(Debug)]
pub struct FeedWake {
    ticks: watch::Receiver<u64>,
}

impl FeedWake {
    /// How many changes (and rechecks) the feed has seen: a number that moves whenever the
    /// database may have changed, so that what was read at one value can be kept until it
    /// moves.
    pub fn seen(&self) -> u64 {
        *self.ticks.borrow()
    }
}

#[async_trait]
impl Wake for FeedWake {
    async fn wait(&mut self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.ticks.changed()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use abathur_core::models::TaskStatus;
    use abathur_core::queue::NewTask;

    use crate::worker::Interval;

    #[tokio::test]
    async fn a_task_claimed_after_the_caller_went_away_is_handed_back_without_a_retry() {
        let backend = crate::backend::tests::in_memory().await;
        let queue = TaskQueue::new(backend.queue_store.clone());
        let task = queue
            .submit(NewTask::new("t", "t", "generic"))
            .await
            .expect("submit");
        let request = ClaimRequest {
            worker_id: "gone",
            agent_types: &[],
            lease: Duration::from_secs(300),
            max: 1,
        };
        // The caller is gone by the time the claim commits: nobody would receive the task.
        let claimed = claim_waiting(
            &queue,
            &request,
            Duration::from_secs(5),
            &mut Interval,
            std::future::ready(()),
        )
        .await
        .expect("a claim");
        assert!(claimed.is_empty(), "{claimed:?}");

        let request = ClaimRequest {
            worker_id: "next",
            ..request
        };
        let next = queue
            .claim(request.worker_id, request.agent_types, request.lease, 1)
            .await
            .expect("a claim");
        assert_eq!(next.len(), 1, "the task is ready again at once");
        assert_eq!(next[0].task.id, task.id);
        assert_eq!(next[0].task.status, TaskStatus::Running);
        assert_eq!(next[0].task.retry_count, 0, "no retry counted");
    }

    #[test]
    fn a_wait_up_to_the_cap_is_accepted_and_one_past_it_refused_naming_the_cap() {
        assert!(check_wait("wait", MAX_CLAIM_WAIT).is_ok());
        let err = check_wait("wait", MAX_CLAIM_WAIT + Duration::from_millis(1)).unwrap_err();
        assert_eq!(err.field, "wait");
        assert!(err.message.contains("300 s"), "{}", err.message);
    }
}

#[cfg(test)]
mod feed_tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use abathur_core::error::DatabaseError;
    use abathur_core::ports::{Change, ChangeSubscription, Changes};
    use async_trait::async_trait;
    use tokio::sync::{mpsc, oneshot};

    use super::ChangeFeed;
    use crate::worker::Wake;

    /// A subscription that sees a change whenever the test sends one, and says when it closes.
    #[derive(Debug)]
    struct Signalled {
        changes: mpsc::UnboundedReceiver<()>,
        closed: Option<oneshot::Sender<()>>,
    }

    #[async_trait]
    impl ChangeSubscription for Signalled {
        async fn changed(&mut self, at_most: Duration) -> Result<Change, DatabaseError> {
            match tokio::time::timeout(at_most, self.changes.recv()).await {
                Ok(Some(())) => Ok(Change::Seen),
                _ => Ok(Change::TimedOut),
            }
        }

        async fn close(mut self: Box<Self>) {
            if let Some(closed) = self.closed.take() {
                let _ = closed.send(());
            }
        }
    }

    /// Hands out its one subscription.
    struct OneSubscription(Mutex<Option<Signalled>>);

    #[async_trait]
    impl Changes for OneSubscription {
        async fn subscribe(&self) -> Result<Box<dyn ChangeSubscription>, DatabaseError> {
            let taken = self.0.lock().expect("the subscription").take();
            taken
                .map(|s| Box::new(s) as Box<dyn ChangeSubscription>)
                .ok_or_else(|| DatabaseError::Other("subscribed twice".into()))
        }
    }

    #[tokio::test]
    async fn the_watcher_wakes_its_claims_on_a_change_and_closes_its_subscription_after_the_last() {
        let (send, changes) = mpsc::unbounded_channel();
        let (closed, was_closed) = oneshot::channel();
        let feed = ChangeFeed::new(Arc::new(OneSubscription(Mutex::new(Some(Signalled {
            changes,
            closed: Some(closed),
        })))));
        assert!(!feed.is_watching());
        let mut first = feed.subscribe();
        let second = feed.subscribe();
        assert!(feed.is_watching(), "one watcher for both claims");

        // A change wakes a claim that waits far longer than the test may run.
        send.send(()).expect("the watcher listens");
        tokio::time::timeout(
            Duration::from_secs(60),
            first.wait(Duration::from_secs(3600)),
        )
        .await
        .expect("the change woke the claim");

        // Once no claim waits, the next tick stops the watcher, which closes its subscription.
        drop(first);
        drop(second);
        send.send(()).expect("the watcher listens");
        tokio::time::timeout(Duration::from_secs(60), was_closed)
            .await
            .expect("the watcher stopped")
            .expect("the subscription was closed, not dropped");
        assert!(!feed.is_watching());
    }
}
