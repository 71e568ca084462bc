//! The queue's tunable rules: limits on submitted DAGs, how failed attempts back off, and how
//! urgency is computed. See `docs/PRIORITY.md` for the formula with a worked example.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::timestamp;

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

/// How waiting tasks are ranked: the one definition of the priority formula. Stores compute
/// nothing of it themselves; they store what [`PriorityPolicy::key`] returns and add what
/// [`PriorityPolicy::urgency`] returns, and bind [`PriorityPolicy::urgent_until`].
///
/// ```text
/// calculated = priority
///            + depth_weight * min(depth, depth_cap)
///            + urgency                                  (0 without a deadline)
///            + (now - ready_since) / aging_interval     (waited since claimable)
/// urgency    = deadline_weight * clamp(1 - (deadline - now) / deadline_horizon, 0, 1)
/// ```
///
/// `ready_since` is when the task last became claimable: ready, and past its run-after time.
/// Ageing grows without bound, so any task eventually outranks newer work of any priority:
/// there is no starvation.
///
/// Ageing moves every waiting task by the same amount per second, so it needs no rewrite:
/// `calculated - now / aging_interval` is the [key](PriorityPolicy::key), fixed while the task
/// waits, plus the urgency, which is 0 until the deadline is `deadline_horizon` away. A claim
/// ranks by `key + urgency`, which orders tasks exactly as `calculated` does at that moment.
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

/// Seconds from the Unix epoch to `t`, with microseconds.
fn epoch_seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp() as f64 + f64::from(t.timestamp_subsec_micros()) / 1e6
}

impl PriorityPolicy {
    /// The part of the priority that depends on neither time nor deadline.
    pub fn base(&self, priority: u8, depth: u32) -> f64 {
        f64::from(priority) + self.depth_weight * f64::from(depth.min(self.depth_cap))
    }

    /// The claim key of a task claimable since `ready_since`: `base - ready_since /
    /// aging_interval`, the time counted in seconds from the Unix epoch. It never changes
    /// while the task waits, and `key + now / aging_interval` is the task's priority without
    /// its urgency at any `now` after `ready_since`.
    pub fn key(&self, priority: u8, depth: u32, ready_since: DateTime<Utc>) -> f64 {
        self.base(priority, depth) - epoch_seconds(ready_since) / self.aging_seconds()
    }

    /// The deadline's part of the priority at `now`: 0 without a deadline or while it is more
    /// than `deadline_horizon` away, rising linearly to `deadline_weight` at the deadline, and
    /// `deadline_weight` once it has passed.
    pub fn urgency(&self, deadline: Option<DateTime<Utc>>, now: DateTime<Utc>) -> f64 {
        deadline.map_or(0.0, |deadline| {
            let remaining = (deadline - now).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
            self.deadline_weight * (1.0 - remaining / self.horizon_seconds()).clamp(0.0, 1.0)
        })
    }

    /// The latest deadline with an urgency at `now`: deadlines after it add nothing yet.
    /// `now + deadline_horizon`, or [`timestamp::MAX`] when that is later.
    pub fn urgent_until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        chrono::Duration::from_std(self.deadline_horizon)
            .ok()
            .and_then(|horizon| now.checked_add_signed(horizon))
            .map_or(timestamp::MAX, |until| until.min(timestamp::MAX))
    }

    /// The calculated priority at `now` of a task claimable since `ready_since` (no ageing
    /// before then).
    pub fn calculate(
        &self,
        priority: u8,
        depth: u32,
        deadline: Option<DateTime<Utc>>,
        ready_since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> f64 {
        let waited = ((now - ready_since).num_microseconds().unwrap_or(0) as f64 / 1e6).max(0.0);
        self.base(priority, depth) + self.urgency(deadline, now) + waited / self.aging_seconds()
    }

    /// `aging_interval` in seconds, never zero.
    fn aging_seconds(&self) -> f64 {
        self.aging_interval.as_secs_f64().max(1e-6)
    }

    /// `deadline_horizon` in seconds, never zero.
    fn horizon_seconds(&self) -> f64 {
        self.deadline_horizon.as_secs_f64().max(1e-6)
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
        // The key: 5 - 1_795_856_400 s / 600 s; the claim adds the urgency, 7.5.
        let key = policy.key(4, 2, submitted);
        assert!((key - (5.0 - 2_993_094.0)).abs() < 1e-6, "{key}");
        let new_high = policy.key(10, 0, now);
        assert!((new_high - (10.0 - 2_993_097.0)).abs() < 1e-6, "{new_high}");
        assert!(key + policy.urgency(Some(deadline), now) > new_high);
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
    fn the_key_plus_urgency_orders_tasks_as_the_calculated_priority_does() {
        let policy = PriorityPolicy::default();
        let t0 = Utc.with_ymd_and_hms(2026, 11, 28, 9, 0, 0).unwrap();
        let minutes = chrono::Duration::minutes;
        // (priority, depth, deadline, ready_since)
        type Waiting = (u8, u32, Option<DateTime<Utc>>, DateTime<Utc>);
        let tasks: [Waiting; 6] = [
            (0, 0, None, t0),
            (10, 0, None, t0 + minutes(95)),
            (4, 2, Some(t0 + minutes(600)), t0 + minutes(30)),
            (7, 12, None, t0 + minutes(5)),
            (2, 1, Some(t0 - minutes(60)), t0 + minutes(70)),
            (5, 0, Some(t0 + minutes(3000)), t0 + minutes(1)),
        ];
        for now in [t0 + minutes(100), t0 + minutes(700), t0 + minutes(2000)] {
            let by = |rank: &dyn Fn(&Waiting) -> f64| {
                let mut order: Vec<usize> = (0..tasks.len()).collect();
                order.sort_by(|&a, &b| rank(&tasks[b]).total_cmp(&rank(&tasks[a])));
                order
            };
            let calculated = by(&|&(p, d, dl, since)| policy.calculate(p, d, dl, since, now));
            let keyed = by(&|&(p, d, dl, since)| policy.key(p, d, since) + policy.urgency(dl, now));
            assert_eq!(calculated, keyed, "at {now}");
            for &(p, d, dl, since) in &tasks {
                let shifted = policy.key(p, d, since)
                    + policy.urgency(dl, now)
                    + epoch_seconds(now) / policy.aging_seconds();
                assert!((shifted - policy.calculate(p, d, dl, since, now)).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn urgency_is_zero_before_the_horizon_rises_inside_it_and_is_full_once_passed() {
        let policy = PriorityPolicy::default();
        let now = Utc.with_ymd_and_hms(2026, 11, 28, 9, 0, 0).unwrap();
        let hours = chrono::Duration::hours;
        assert_eq!(policy.urgency(None, now), 0.0);
        assert_eq!(policy.urgency(Some(now + hours(30)), now), 0.0);
        assert_eq!(policy.urgency(Some(now + hours(24)), now), 0.0);
        assert!((policy.urgency(Some(now + hours(12)), now) - 5.0).abs() < 1e-9);
        assert_eq!(policy.urgency(Some(now), now), 10.0);
        assert_eq!(policy.urgency(Some(now - hours(100)), now), 10.0);
        assert_eq!(policy.urgent_until(now), now + hours(24));
        assert_eq!(policy.urgent_until(timestamp::MAX), timestamp::MAX);
    }

    #[test]
    fn depth_counts_up_to_its_cap() {
        let policy = PriorityPolicy::default();
        assert_eq!(policy.base(3, 0), 3.0);
        assert_eq!(policy.base(3, 4), 5.0);
        assert_eq!(policy.base(3, 10), 8.0);
        assert_eq!(policy.base(3, 40), 8.0);
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
