//! Claim order: base priority, depth, deadlines and ageing, seen only through which task a claim
//! takes first.

use abathur_core::models::TaskStatus;
use abathur_core::queue::NewTask;
use uuid::Uuid;

use crate::harness::{after, db, ok, sorted, task, Harness, LEASE};

fn with_priority(name: &str, priority: u8) -> NewTask {
    NewTask {
        priority,
        ..task(name)
    }
}

pub async fn base_priority_orders_claims(h: Harness) {
    let low = h.submit(with_priority("low", 1)).await;
    let high = h.submit(with_priority("high", 9)).await;
    let middle = h.submit(with_priority("middle", 5)).await;
    let order: Vec<_> = [
        h.claim_ids(1).await,
        h.claim_ids(1).await,
        h.claim_ids(1).await,
    ]
    .concat();
    assert_eq!(order, vec![high.id, middle.id, low.id]);
}

pub async fn one_claim_of_several_tasks_takes_the_most_urgent(h: Harness) {
    let low = h.submit(with_priority("low", 1)).await;
    let high = h.submit(with_priority("high", 9)).await;
    let middle = h.submit(with_priority("middle", 5)).await;
    let mut taken = h.claim_ids(2).await;
    taken.sort();
    let mut want = vec![high.id, middle.id];
    want.sort();
    assert_eq!(taken, want);
    assert_eq!(h.claim_ids(2).await, vec![low.id]);
}

pub async fn between_equal_priorities_the_earlier_submission_is_claimed_first(h: Harness) {
    let first = h.submit(task("first")).await;
    h.advance(1);
    let second = h.submit(task("second")).await;
    assert_eq!(h.claim_ids(1).await, vec![first.id]);
    assert_eq!(h.claim_ids(1).await, vec![second.id]);
}

pub async fn a_deeper_task_is_claimed_before_a_shallower_one_of_equal_priority(h: Harness) {
    let shallow = h.submit(task("shallow")).await;
    h.advance(1);
    let a = h.submit(with_priority("a", 10)).await;
    let b = h
        .submit(NewTask {
            priority: 10,
            ..after("b", &[a.id])
        })
        .await;
    let deep = h.submit(after("deep", &[b.id])).await;
    for id in [a.id, b.id] {
        let claimed = h.claim(1).await;
        assert_eq!(claimed[0].task.id, id, "priority 10 first");
        h.complete(claimed[0].lease.attempt_id).await;
    }
    assert_eq!(
        h.claim_ids(1).await,
        vec![deep.id],
        "depth 2 outranks depth 0"
    );
    assert_eq!(h.claim_ids(1).await, vec![shallow.id]);
}

pub async fn a_deadline_about_to_pass_is_claimed_before_higher_base_priority(h: Harness) {
    let high = h.submit(with_priority("high", 10)).await;
    let due = h
        .submit(NewTask {
            priority: 5,
            deadline: Some(h.now() + chrono::Duration::minutes(30)),
            ..task("due soon")
        })
        .await;
    assert_eq!(h.claim_ids(1).await, vec![due.id]);
    assert_eq!(h.claim_ids(1).await, vec![high.id]);
}

pub async fn a_task_that_has_waited_long_enough_is_claimed_before_newer_higher_priority_work(
    h: Harness,
) {
    let old = h.submit(with_priority("old", 0)).await;
    h.advance(3 * 3600);
    let new = h.submit(with_priority("new", 10)).await;
    assert_eq!(
        h.claim_ids(1).await,
        vec![old.id],
        "three hours of waiting outrank ten points of priority"
    );
    assert_eq!(h.claim_ids(1).await, vec![new.id]);
}

pub async fn a_short_wait_does_not_outrank_a_higher_priority(h: Harness) {
    let old = h.submit(with_priority("old", 0)).await;
    h.advance(60);
    let new = h.submit(with_priority("new", 10)).await;
    assert_eq!(h.claim_ids(1).await, vec![new.id]);
    assert_eq!(h.claim_ids(1).await, vec![old.id]);
}

pub async fn a_deadline_that_draws_near_while_waiting_is_claimed_first(h: Harness) {
    let due = h
        .submit(NewTask {
            priority: 5,
            deadline: Some(h.now() + chrono::Duration::hours(48)),
            ..task("due in two days")
        })
        .await;
    let high = h.submit(with_priority("high", 9)).await;
    h.advance(47 * 3600 + 50 * 60);
    assert_eq!(
        h.claim_ids(1).await,
        vec![due.id],
        "ten minutes before its deadline it outranks four points of priority"
    );
    assert_eq!(h.claim_ids(1).await, vec![high.id]);
}

/// Submits six tasks at once, of the agent types `types` in turn, ranked two hours later (when
/// the cases claim) as: a deadline an hour past (priority 0 + the full urgency 10), no deadline
/// (9), a deadline six hours away (1 + 7.5), twelve hours away (3 + 5), no deadline (7), and
/// a deadline 48 hours away, beyond the horizon (6). Returns their ids in that order, after
/// moving the clock the two hours.
async fn submit_the_mix(h: &Harness, types: [&str; 6]) -> Vec<Uuid> {
    let hours = |n: i64| Some(h.now() + chrono::Duration::hours(n));
    let specs = [
        ("overdue", 0, hours(1)),
        ("no deadline, 9", 9, None),
        ("due in six hours", 1, hours(8)),
        ("due in twelve hours", 3, hours(14)),
        ("no deadline, 7", 7, None),
        ("due beyond the horizon", 6, hours(50)),
    ];
    let mut ids = Vec::new();
    for ((name, priority, deadline), agent_type) in specs.into_iter().zip(types) {
        let t = h
            .submit(NewTask {
                priority,
                deadline,
                agent_type: agent_type.to_string(),
                ..task(name)
            })
            .await;
        ids.push(t.id);
    }
    h.advance(2 * 3600);
    ids
}

/// Claims two tasks at a time of `types` until none is left; the sets each claim took.
async fn claim_in_pairs(h: &Harness, types: &[&str]) -> Vec<Vec<Uuid>> {
    let types: Vec<String> = types.iter().map(|t| t.to_string()).collect();
    let mut pairs = Vec::new();
    loop {
        let claimed = ok(h.queue.claim("w1", &types, LEASE, 2).await);
        if claimed.is_empty() {
            return pairs;
        }
        pairs.push(sorted(claimed.iter().map(|c| c.task.id).collect()));
    }
}

/// `ids`, in pairs of sets, as [`claim_in_pairs`] answers.
fn pairs(ids: &[Uuid]) -> Vec<Vec<Uuid>> {
    ids.chunks(2).map(|pair| sorted(pair.to_vec())).collect()
}

pub async fn a_claim_of_several_merges_deadlines_near_and_past_with_tasks_without_one(h: Harness) {
    let order = submit_the_mix(&h, ["worker"; 6]).await;
    assert_eq!(claim_in_pairs(&h, &[]).await, pairs(&order));
}

pub async fn a_claim_of_one_agent_type_merges_deadlines_in_the_same_order(h: Harness) {
    let order = submit_the_mix(&h, ["worker"; 6]).await;
    let others = h
        .submit_batch(
            ["overdue other", "urgent other"]
                .into_iter()
                .map(|name| NewTask {
                    priority: 10,
                    agent_type: "other".into(),
                    ..task(name)
                })
                .collect(),
        )
        .await;
    assert_eq!(claim_in_pairs(&h, &["worker"]).await, pairs(&order));
    for other in others {
        assert_eq!(h.status(other.id).await, TaskStatus::Ready);
    }
}

pub async fn a_claim_of_several_agent_types_merges_deadlines_in_the_same_order(h: Harness) {
    let high = |name: &str, deadline| NewTask {
        priority: 10,
        deadline,
        agent_type: "third".into(),
        ..task(name)
    };
    let thirds = h
        .submit_batch(vec![
            high(
                "third, due soon",
                Some(h.now() + chrono::Duration::hours(1)),
            ),
            high("third, no deadline", None),
        ])
        .await;
    let order = submit_the_mix(
        &h,
        ["worker", "other", "other", "worker", "worker", "other"],
    )
    .await;
    assert_eq!(
        claim_in_pairs(&h, &["worker", "other"]).await,
        pairs(&order)
    );
    for third in thirds {
        assert_eq!(h.status(third.id).await, TaskStatus::Ready);
    }
}

pub async fn a_task_made_ready_outside_the_queue_is_claimed_after_every_keyed_task(h: Harness) {
    let first = h.submit(task("first keyed")).await;
    let due = h
        .submit(NewTask {
            deadline: Some(h.now() + chrono::Duration::hours(12)),
            ..task("keyed, due in twelve hours")
        })
        .await;
    let blocked = h
        .submit(NewTask {
            priority: 10,
            ..after("blocked, urgent", &[first.id])
        })
        .await;
    assert_eq!(h.status(blocked.id).await, TaskStatus::Blocked);
    h.advance(3600);
    db(h.ports
        .tasks
        .update_status(blocked.id, TaskStatus::Ready)
        .await);
    h.advance(3600);
    let newest = h.submit(task("keyed after it")).await;
    h.advance(3 * 3600);
    let mut keyed = h.claim_ids(3).await;
    keyed.sort();
    assert_eq!(keyed, sorted(vec![first.id, due.id, newest.id]));
    assert_eq!(h.claim_ids(3).await, vec![blocked.id]);
}
