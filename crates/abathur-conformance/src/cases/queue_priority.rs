//! Claim order: base priority, depth, deadlines and ageing, seen only through which task a claim
//! takes first.

use abathur_core::queue::NewTask;

use crate::harness::{after, task, Harness};

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
