//! The cases, one module per topic. Each case is `pub async fn sentence_name(h: Harness)` and
//! is listed in `list.rs`.

pub mod agent_repository;
pub mod changes;
pub mod id_lookup;
pub mod memory_repository;
pub mod queue_ageing;
pub mod queue_cancel;
pub mod queue_cascade;
pub mod queue_claim;
pub mod queue_fencing;
pub mod queue_history;
pub mod queue_idempotency;
pub mod queue_invariants;
pub mod queue_overview;
pub mod queue_priority;
pub mod queue_prune;
pub mod queue_reap;
pub mod queue_release;
pub mod queue_repeat;
pub mod queue_retries;
pub mod queue_run_after;
pub mod queue_submit;
pub mod session_repository;
pub mod task_repository;
