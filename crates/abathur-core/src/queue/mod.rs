//! The task queue: what makes abathur a work queue for a swarm rather than a table of tasks.
//!
//! Agents submit DAGs of work, workers in many processes claim the most urgent ready task under
//! a lease, and every state change (submit, claim, heartbeat, complete, fail, cancel, retry,
//! reap) is one atomic operation of a [`QueueStore`], so no two workers ever act on a stale
//! read. [`TaskQueue`] is the service callers use: it validates, takes `now` from its clock and
//! calls the store.

mod graph;
mod policy;
mod service;
mod store;
mod types;

pub use graph::{execution_plan, plan_batch};
pub use policy::{PriorityPolicy, QueueLimits, RetryPolicy};
pub use service::{
    check_claim, check_prune_age, TaskQueue, MAX_CLAIM, MAX_CLAIM_AGENT_TYPES, MAX_LEASE,
    PRUNE_BATCH,
};
pub use store::QueueStore;
pub use types::{
    check_idempotency_key, same_json, AttemptOutcome, ClaimRequest, ClaimedTask, FailOutcome,
    Lease, NewTask, PendingTask, PlanStep, PruneReport, PruneRequest, QueueError, QueueOverview,
    ReapReport, Recorded, RunningAttempt, SubmissionDetails, Submitted, TaskEvent, WaitingTask,
};
