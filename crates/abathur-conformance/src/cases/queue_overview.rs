//! The queue at a glance (`overview`), the unfinished DAG (`pending`) and the execution plan.

use std::time::Duration;

use abathur_core::models::TaskStatus;
use abathur_core::queue::{NewTask, QueueError};

use crate::assert_err;
use crate::harness::{after, ok, sorted, task, Harness};

pub async fn the_overview_counts_every_status(h: Harness) {
    let empty = ok(h.queue.overview(10).await);
    assert_eq!(
        empty.counts.len(),
        TaskStatus::ALL.len(),
        "every status is present"
    );
    assert!(empty.counts.values().all(|n| *n == 0));
    assert_eq!(empty.oldest_ready, None);

    let a = h
        .submit(NewTask {
            priority: 9,
            ..task("a")
        })
        .await;
    h.submit(after("b", &[a.id])).await;
    let c = h
        .submit(NewTask {
            priority: 8,
            ..task("c")
        })
        .await;
    let d = h.submit(task("d")).await;
    ok(h.queue.cancel(d.id, "person").await);
    let e = h
        .submit(NewTask {
            priority: 1,
            ..task("e")
        })
        .await;
    let f = h
        .submit(NewTask {
            priority: 0,
            ..task("f")
        })
        .await;
    let claimed = h.claim(3).await;
    let ids: Vec<_> = claimed.iter().map(|x| x.task.id).collect();
    assert_eq!(ids, vec![a.id, c.id, e.id]);
    h.complete(claimed[0].lease.attempt_id).await;
    h.fail(claimed[2].lease.attempt_id, "boom").await;
    let o = ok(h.queue.overview(10).await);
    let count = |s| o.counts.get(&s).copied();
    assert_eq!(count(TaskStatus::Pending), Some(0));
    assert_eq!(count(TaskStatus::Blocked), Some(0));
    assert_eq!(
        count(TaskStatus::Ready),
        Some(2),
        "b, made ready by a, and f"
    );
    assert_eq!(count(TaskStatus::Running), Some(1));
    assert_eq!(count(TaskStatus::Completed), Some(1));
    assert_eq!(count(TaskStatus::Failed), Some(1));
    assert_eq!(count(TaskStatus::Cancelled), Some(1));
    assert_eq!(h.status(f.id).await, TaskStatus::Ready);
    assert_eq!(o.at, h.now());
}

pub async fn the_overview_lists_open_attempts_soonest_to_expire_first(h: Harness) {
    let a = h.submit(task("a")).await;
    let b = h.submit(task("b")).await;
    let claimed = h.claim(2).await;
    let on_a = claimed
        .iter()
        .find(|c| c.task.id == a.id)
        .unwrap()
        .lease
        .attempt_id;
    let on_b = claimed
        .iter()
        .find(|c| c.task.id == b.id)
        .unwrap()
        .lease
        .attempt_id;
    h.advance(5);
    ok(h.queue.heartbeat(on_a, Duration::from_secs(60)).await);
    let o = ok(h.queue.overview(10).await);
    let order: Vec<_> = o.running.iter().map(|r| r.attempt_id).collect();
    assert_eq!(order, vec![on_b, on_a]);
    assert_eq!(o.running[0].task_id, b.id);
    assert_eq!(o.running[0].worker_id, "w1");
    assert_eq!(o.expired_leases, 0);
    assert_eq!(ok(h.queue.overview(1).await).running.len(), 1);
    assert!(ok(h.queue.overview(0).await).running.is_empty());
}

pub async fn the_overview_counts_expired_leases_the_reaper_has_not_taken(h: Harness) {
    h.submit(task("a")).await;
    h.submit(task("b")).await;
    h.claim(1).await;
    h.advance(31);
    h.claim(1).await;
    assert_eq!(ok(h.queue.overview(10).await).expired_leases, 1);
    ok(h.queue.reap().await);
    assert_eq!(ok(h.queue.overview(10).await).expired_leases, 0);
}

pub async fn the_overview_names_the_ready_task_waiting_longest_that_can_be_claimed_now(h: Harness) {
    let held = h
        .submit(NewTask {
            run_after: Some(h.now() + chrono::Duration::hours(1)),
            ..task("held back")
        })
        .await;
    h.advance(1);
    let free = h.submit(task("free")).await;
    h.advance(1);
    h.submit(task("newer")).await;
    let oldest = ok(h.queue.overview(10).await).oldest_ready.unwrap();
    assert_eq!(oldest.task_id, free.id);
    assert_eq!(oldest.summary, "free");
    assert_eq!(oldest.submitted_at, free.submitted_at);
    h.advance(3600);
    let oldest = ok(h.queue.overview(10).await).oldest_ready.unwrap();
    assert_eq!(oldest.task_id, held.id);
}

pub async fn an_overview_asking_for_more_than_a_page_is_refused(h: Harness) {
    assert_err!(
        h.queue.overview(abathur_core::limits::MAX_PAGE + 1).await,
        QueueError::Validation(_)
    );
}

pub async fn pending_lists_unfinished_tasks_with_the_dependencies_they_wait_for(h: Harness) {
    let a = h.submit(task("a")).await;
    let b = h.submit(task("b")).await;
    let c = h.submit(after("c", &[a.id, b.id])).await;
    let done = h.submit(task("done")).await;
    let claimed = h.claim(10).await;
    for x in &claimed {
        if x.task.id == done.id || x.task.id == a.id {
            h.complete(x.lease.attempt_id).await;
        }
    }
    let pending = ok(h.ports.queue.pending(100).await);
    let ids = sorted(pending.iter().map(|p| p.task_id).collect());
    assert_eq!(ids, sorted(vec![b.id, c.id]));
    let on_c = pending.iter().find(|p| p.task_id == c.id).unwrap();
    assert_eq!(on_c.waits_for, vec![b.id], "a is completed");
    assert_eq!(on_c.status, TaskStatus::Blocked);
    let on_b = pending.iter().find(|p| p.task_id == b.id).unwrap();
    assert!(on_b.waits_for.is_empty());
    assert_eq!(on_b.status, TaskStatus::Running);
}

pub async fn pending_gives_at_most_limit_tasks_the_most_urgent_first(h: Harness) {
    h.submit(NewTask {
        priority: 1,
        ..task("low")
    })
    .await;
    let high = h
        .submit(NewTask {
            priority: 9,
            ..task("high")
        })
        .await;
    let pending = ok(h.ports.queue.pending(1).await);
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].task_id, high.id);
}

pub async fn the_execution_plan_puts_each_task_a_stage_after_what_it_waits_for(h: Harness) {
    let a = h.submit(task("a")).await;
    let b = h.submit(after("b", &[a.id])).await;
    let c = h.submit(after("c", &[a.id])).await;
    let d = h.submit(after("d", &[b.id, c.id])).await;
    let plan = ok(h.queue.execution_plan(100).await);
    let stage = |id| plan.iter().find(|s| s.task.task_id == id).unwrap().stage;
    assert_eq!(stage(a.id), 0);
    assert_eq!(stage(b.id), 1);
    assert_eq!(stage(c.id), 1);
    assert_eq!(stage(d.id), 2);
    h.run_to_completion(a.id).await;
    let plan = ok(h.queue.execution_plan(100).await);
    assert_eq!(plan.len(), 3);
    assert!(plan.iter().all(|s| s.task.task_id != a.id));
}

/// The overview's counts are kept as tasks change, not counted; after every kind of change,
/// through the queue and through the repository, they equal a count of the tasks.
pub async fn the_overview_counts_follow_every_kind_of_change(h: Harness) {
    async fn agrees(h: &Harness, step: &str) {
        let o = ok(h.queue.overview(0).await);
        for status in TaskStatus::ALL {
            let counted = h
                .ports
                .tasks
                .count(abathur_core::ports::TaskFilters {
                    status: Some(*status),
                    ..Default::default()
                })
                .await
                .expect("count");
            assert_eq!(
                o.counts.get(status).copied(),
                Some(u64::try_from(counted).unwrap()),
                "{status:?} after {step}"
            );
        }
    }
    let a = h.submit(task("a")).await;
    let b = h.submit(after("b", &[a.id])).await;
    let c = h.submit(after("c", &[b.id])).await;
    let d = h
        .submit(NewTask {
            max_retries: 0,
            ..task("d")
        })
        .await;
    agrees(&h, "submits").await;
    let claimed = h.claim(2).await;
    agrees(&h, "claims").await;
    let on = |id| {
        claimed
            .iter()
            .find(|x| x.task.id == id)
            .expect("claimed")
            .lease
            .attempt_id
    };
    h.complete(on(a.id)).await;
    agrees(&h, "a completion that readies a dependent").await;
    h.fail(on(d.id), "boom").await;
    agrees(&h, "a failure with no retry left").await;
    ok(h.queue.cancel(b.id, "person").await);
    agrees(&h, "a cancel that cascades").await;
    ok(h.queue.retry(d.id, "person").await);
    agrees(&h, "a retry").await;

    let mut direct = abathur_core::models::Task::new("direct", "by the repository", "w", h.now());
    h.ports.tasks.insert(direct.clone()).await.expect("insert");
    let batch: Vec<_> = (0..3)
        .map(|i| abathur_core::models::Task::new(format!("batch {i}"), "x", "w", h.now()))
        .collect();
    h.ports.tasks.insert_batch(batch).await.expect("batch");
    agrees(&h, "repository inserts").await;
    direct.status = TaskStatus::Running;
    h.ports.tasks.update(direct.clone()).await.expect("update");
    agrees(&h, "an update that changes the status").await;
    direct.summary = "renamed".into();
    h.ports.tasks.update(direct.clone()).await.expect("update");
    agrees(&h, "an update that keeps the status").await;
    h.ports
        .tasks
        .update_status(direct.id, TaskStatus::Completed)
        .await
        .expect("update_status");
    agrees(&h, "update_status").await;
    h.ports.tasks.delete(c.id).await.expect("delete");
    agrees(&h, "a delete").await;
    h.advance(7200);
    ok(h.queue.prune(Duration::from_secs(60), &[]).await);
    agrees(&h, "a prune").await;
}
