//! The change port: a subscription sees a change committed after it was taken, and times out
//! when there is none.

use std::time::Duration;

use abathur_core::ports::Change;

use crate::harness::{task, Harness};

/// Long enough for any backend to notice a commit; a case only waits it out on a failure.
const GENEROUS: Duration = Duration::from_secs(30);

/// Short: only where the expected answer is that nothing changed.
const SHORT: Duration = Duration::from_millis(200);

pub async fn a_change_committed_after_subscribing_is_seen(h: Harness) {
    let mut subscription = match h.ports.changes.subscribe().await {
        Ok(s) => s,
        Err(e) => panic!("subscribe failed: {e:?}"),
    };
    h.submit(task("t")).await;
    let seen = subscription.changed(GENEROUS).await;
    subscription.close().await;
    assert_eq!(seen.ok(), Some(Change::Seen));
}

pub async fn a_subscription_with_no_change_times_out(h: Harness) {
    h.submit(task("before subscribing")).await;
    let mut subscription = match h.ports.changes.subscribe().await {
        Ok(s) => s,
        Err(e) => panic!("subscribe failed: {e:?}"),
    };
    let answer = subscription.changed(SHORT).await;
    subscription.close().await;
    assert_eq!(answer.ok(), Some(Change::TimedOut));
}
