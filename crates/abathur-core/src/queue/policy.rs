//! The queue's tunable rules: limits on submitted DAGs, how failed attempts back off, and how
//! urgency is computed. See `docs/PRIORITY.md` for the formula with a worked example.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Limits on what one submission may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Dependencies one task may list (default 100).
    pub max_dependencies: usize,
    /// The deepest a task may sit in the DAG (default 50).
    pub max_depth: u32,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            max_dependencies: 100,
            max_depth: 50,
        }
    }
}

/// How long a failed attempt waits before its task is claimable again: exponential in the
/// number of retries, capped, with jitter so that tasks that failed together do not retry
/// together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// The wait after the first failure, before jitter (default 1 s).
    pub base: Duration,
    /// The longest wait (default 10 min).
    pub max: Duration,
    /// The share of the wait that is random, 0 to 1 (default 0.25): the wait is between
    /// `(1 - jitter) * delay` and `delay`.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(600),
            jitter: 0.25,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry_count` (1 for the first retry). The jitter is drawn
    /// from the failed attempt's id, so it is random across attempts yet reproducible.
    pub fn delay(&self, retry_count: u32, attempt_id: Uuid) -> Duration {
        let exponent = retry_count.saturating_sub(1).min(32);
        let full = self
            .base
            .checked_mul(1u32 << exponent.min(31))
            .unwrap_or(self.max)
            .min(self.max);
        let unit = (attempt_id.as_u128() % 10_000) as f64 / 10_000.0;
        let jitter = self.jitter.clamp(0.0, 1.0);
        full.mul_f64(1.0 - jitter * unit)
    }
}

/// How `calculated_priority` is made from a task's base priority, depth, deadline and age:
///
/// ```text
/// calculated = priority
///            + depth_weight * min(depth, depth_cap)
///            + deadline_weight * urgency          (0 without a deadline)
///            + age_in_seconds / aging_interval    (waiting since submission)
/// urgency    = clamp(1 - (deadline - now) / deadline_horizon, 0, 1)   (1 once passed)
/// ```
///
/// Ageing grows without bound, so any task eventually outranks newer work of any priority:
/// there is no starvation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PriorityPolicy {
    /// Points per level of depth (default 0.5).
    pub depth_weight: f64,
    /// Depth beyond this adds nothing (default 10).
    pub depth_cap: u32,
    /// Points for a deadline that is due or past (default 10).
    pub deadline_weight: f64,
    /// Urgency starts rising this long before the deadline (default 24 h).
    pub deadline_horizon: Duration,
    /// One point per this much waiting (default 10 min).
    pub aging_interval: Duration,
}

impl Default for PriorityPolicy {
    fn default() -> Self {
        Self {
            depth_weight: 0.5,
            depth_cap: 10,
            deadline_weight: 10.0,
            deadline_horizon: Duration::from_secs(24 * 3600),
            aging_interval: Duration::from_secs(600),
        }
    }
}

impl PriorityPolicy {
    /// The calculated priority of a task at `now`.
    pub fn calculate(
        &self,
        priority: u8,
        depth: u32,
        deadline: Option<DateTime<Utc>>,
        submitted_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> f64 {
        let depth_part = self.depth_weight * f64::from(depth.min(self.depth_cap));
        let deadline_part = deadline.map_or(0.0, |deadline| {
            let remaining = (deadline - now).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
            let horizon = self.deadline_horizon.as_secs_f64().max(1e-6);
            self.deadline_weight * (1.0 - remaining / horizon).clamp(0.0, 1.0)
        });
        let waited = ((now - submitted_at).num_microseconds().unwrap_or(0) as f64 / 1e6).max(0.0);
        let age_part = waited / self.aging_interval.as_secs_f64().max(1e-6);
        f64::from(priority) + depth_part + deadline_part + age_part
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_worked_example_of_the_priority_document_holds() {
        let policy = PriorityPolicy::default();
        let submitted = Utc.with_ymd_and_hms(2026, 11, 28, 9, 0, 0).unwrap();
        let now = submitted + chrono::Duration::minutes(30);
        let deadline = now + chrono::Duration::hours(6);
        // 4 + 0.5 * 2 + 10 * (1 - 6/24) + 30/10 = 4 + 1 + 7.5 + 3 = 15.5
        let p = policy.calculate(4, 2, Some(deadline), submitted, now);
        assert!((p - 15.5).abs() < 1e-9, "{p}");
    }

    #[test]
    fn a_waiting_low_priority_task_overtakes_new_urgent_work() {
        let policy = PriorityPolicy::default();
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let now = t0 + chrono::Duration::hours(3);
        let old_low = policy.calculate(0, 0, None, t0, now);
        let new_high = policy.calculate(10, 0, None, now, now);
        assert!(old_low > new_high, "{old_low} vs {new_high}");
    }

    #[test]
    fn backoff_doubles_is_capped_and_jitters_downwards() {
        let policy = RetryPolicy::default();
        let id = Uuid::from_u128(0);
        assert_eq!(policy.delay(1, id), Duration::from_secs(1));
        assert_eq!(policy.delay(3, id), Duration::from_secs(4));
        assert_eq!(policy.delay(40, id), Duration::from_secs(600));
        let jittered = policy.delay(3, Uuid::from_u128(9_999));
        assert!(jittered < Duration::from_secs(4) && jittered >= Duration::from_secs(3));
    }
}
