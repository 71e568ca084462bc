//! What a case works with: the ports of a fresh database, the clock, a [`TaskQueue`] over the
//! backend's store, and the small steps most cases share.

use std::sync::Arc;
use std::time::Duration;

use abathur_core::clock::Clock;
use abathur_core::models::{Task, TaskStatus};
use abathur_core::queue::{
    ClaimedTask, FailOutcome, NewTask, QueueError, RetryPolicy, TaskEvent, TaskQueue,
};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::backend::Ports;
use crate::clock::ManualClock;

/// The lease every claim of the suite asks for.
pub const LEASE: Duration = Duration::from_secs(30);

/// The first retry's backoff in the suite: no jitter, so times are exact.
pub const BACKOFF: Duration = Duration::from_secs(10);

/// The agent type of the suite's tasks.
pub const AGENT_TYPE: &str = "worker";

/// One case's world.
pub struct Harness {
    pub ports: Ports,
    pub clock: Arc<ManualClock>,
    /// The queue over `ports.queue`, on `clock`, with a retry backoff of ten seconds doubling
    /// up to ten minutes, without jitter.
    pub queue: TaskQueue,
}

impl Harness {
    pub(crate) fn new(ports: Ports, clock: Arc<ManualClock>) -> Self {
        let queue = TaskQueue::new(ports.queue.clone())
            .with_clock(clock.clone())
            .with_retry_policy(RetryPolicy {
                base: BACKOFF,
                jitter: 0.0,
                ..RetryPolicy::default()
            });
        Self {
            ports,
            clock,
            queue,
        }
    }

    /// The clock's time.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Moves the clock forward by `seconds`.
    pub fn advance(&self, seconds: i64) {
        self.clock.advance(chrono::Duration::seconds(seconds));
    }

    /// Submits one task.
    pub async fn submit(&self, task: NewTask) -> Task {
        match self.queue.submit(task).await {
            Ok(task) => task,
            Err(e) => panic!("submit failed: {e:?}"),
        }
    }

    /// Submits a batch.
    pub async fn submit_batch(&self, batch: Vec<NewTask>) -> Vec<Task> {
        match self.queue.submit_batch(batch).await {
            Ok(tasks) => tasks,
            Err(e) => panic!("submit_batch failed: {e:?}"),
        }
    }

    /// Claims up to `max` tasks of any type as worker `w1`.
    pub async fn claim(&self, max: u32) -> Vec<ClaimedTask> {
        self.claim_as("w1", max).await
    }

    /// Claims up to `max` tasks of any type as `worker`.
    pub async fn claim_as(&self, worker: &str, max: u32) -> Vec<ClaimedTask> {
        match self.queue.claim(worker, &[], LEASE, max).await {
            Ok(claimed) => claimed,
            Err(e) => panic!("claim failed: {e:?}"),
        }
    }

    /// Claims exactly one task, which must be `task`; returns its attempt.
    pub async fn claim_only(&self, task: Uuid) -> Uuid {
        let claimed = self.claim(10).await;
        let ids: Vec<Uuid> = claimed.iter().map(|c| c.task.id).collect();
        assert_eq!(ids, vec![task], "the claim should take exactly this task");
        claimed[0].lease.attempt_id
    }

    /// The ids the next claim of up to `max` takes, in claim order.
    pub async fn claim_ids(&self, max: u32) -> Vec<Uuid> {
        self.claim(max).await.iter().map(|c| c.task.id).collect()
    }

    /// Completes an attempt; returns the dependents it made ready.
    pub async fn complete(&self, attempt: Uuid) -> Vec<Uuid> {
        match self.queue.complete(attempt, None).await {
            Ok(recorded) => {
                assert!(!recorded.repeat, "a first completion is no repeat");
                recorded.outcome
            }
            Err(e) => panic!("complete failed: {e:?}"),
        }
    }

    /// Fails an attempt; returns what the failure decided.
    pub async fn fail(&self, attempt: Uuid, error: &str) -> FailOutcome {
        match self.queue.fail(attempt, error).await {
            Ok(recorded) => {
                assert!(!recorded.repeat, "a first failure is no repeat");
                recorded.outcome
            }
            Err(e) => panic!("fail failed: {e:?}"),
        }
    }

    /// Claims `task` (which must be the only claimable one) and completes it.
    pub async fn run_to_completion(&self, task: Uuid) -> Vec<Uuid> {
        let attempt = self.claim_only(task).await;
        self.complete(attempt).await
    }

    /// The stored task.
    pub async fn task(&self, id: Uuid) -> Task {
        match self.ports.tasks.get(id).await {
            Ok(Some(task)) => task,
            other => panic!("task {id} should be stored, got {other:?}"),
        }
    }

    /// Whether a task is stored.
    pub async fn exists(&self, id: Uuid) -> bool {
        match self.ports.tasks.get(id).await {
            Ok(found) => found.is_some(),
            Err(e) => panic!("get failed: {e:?}"),
        }
    }

    /// The stored task's status.
    pub async fn status(&self, id: Uuid) -> TaskStatus {
        self.task(id).await.status
    }

    /// The task's history.
    pub async fn history(&self, id: Uuid) -> Vec<TaskEvent> {
        match self.queue.history(id).await {
            Ok(events) => events,
            Err(e) => panic!("history failed: {e:?}"),
        }
    }

    /// The task's history as (from, to) pairs.
    pub async fn transitions(&self, id: Uuid) -> Vec<(Option<TaskStatus>, TaskStatus)> {
        self.history(id)
            .await
            .into_iter()
            .map(|e| (e.from, e.to))
            .collect()
    }

    /// Everything the queue shows of these tasks: each task, its history and its submission
    /// details. Equal snapshots before and after a refused call show it changed nothing.
    pub async fn snapshot(&self, ids: &[Uuid]) -> Vec<String> {
        let mut out = Vec::new();
        for id in ids {
            let task = self.ports.tasks.get(*id).await.ok().flatten();
            let history = self.queue.history(*id).await.ok();
            let details = self.ports.queue.submission_details(*id).await.ok();
            out.push(format!("{task:?} {history:?} {details:?}"));
        }
        out
    }
}

/// A task of the suite's agent type with no retries: a failure is final unless a case says so.
pub fn task(name: &str) -> NewTask {
    NewTask {
        max_retries: 0,
        ..NewTask::new(name, name, AGENT_TYPE)
    }
}

/// [`task`] that depends on `deps`.
pub fn after(name: &str, deps: &[Uuid]) -> NewTask {
    NewTask {
        dependencies: deps.to_vec(),
        ..task(name)
    }
}

/// `ids`, sorted, to compare sets.
pub fn sorted(mut ids: Vec<Uuid>) -> Vec<Uuid> {
    ids.sort();
    ids
}

/// Asserts that `result` is the error `pattern` describes.
#[macro_export]
#[doc(hidden)]
macro_rules! assert_err {
    ($result:expr, $pattern:pat $(if $guard:expr)?) => {
        match $result {
            Err($pattern) $(if $guard)? => {}
            other => panic!(
                "expected {}, got {:?}",
                stringify!($pattern),
                other
            ),
        }
    };
}

/// Unwraps a queue answer, naming the error.
#[track_caller]
pub fn ok<T>(result: Result<T, QueueError>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("unexpected error: {e:?}"),
    }
}

/// Unwraps a repository answer, naming the error.
#[track_caller]
pub fn db<T>(result: Result<T, abathur_core::error::DatabaseError>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("unexpected error: {e:?}"),
    }
}
