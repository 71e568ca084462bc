//! The queue's invariants under many operations in a row: random DAGs (from fixed seeds, so a
//! failure replays) under claims, completions, failures, releases, cancels, retries and reaps.

use std::collections::HashMap;

use abathur_core::models::{Task, TaskStatus};
use abathur_core::queue::{NewTask, QueueError};
use uuid::Uuid;

use crate::harness::{ok, task, Harness};

/// xorshift64*: a small generator whose sequence depends only on its seed.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

/// A DAG of `n` tasks, each depending on up to three earlier ones.
fn dag(dice: &mut Dice, n: usize) -> Vec<NewTask> {
    let mut tasks: Vec<NewTask> = Vec::with_capacity(n);
    for i in 0..n {
        let mut deps = Vec::new();
        if i > 0 {
            for _ in 0..dice.below(4) {
                let dep = tasks[dice.below(i)].id;
                if !deps.contains(&dep) {
                    deps.push(dep);
                }
            }
        }
        tasks.push(NewTask {
            dependencies: deps,
            max_retries: dice.below(3) as u32,
            priority: dice.below(11) as u8,
            ..task(&format!("t{i}"))
        });
    }
    tasks
}

async fn all(h: &Harness, ids: &[Uuid]) -> HashMap<Uuid, Task> {
    let mut tasks = HashMap::new();
    for id in ids {
        tasks.insert(*id, h.task(*id).await);
    }
    tasks
}

/// Checks every invariant that holds at any moment.
async fn check(h: &Harness, ids: &[Uuid], step: &str) {
    let tasks = all(h, ids).await;
    for t in tasks.values() {
        let deps: Vec<&Task> = t.dependencies.iter().flatten().map(|d| &tasks[d]).collect();
        let depth = deps
            .iter()
            .map(|d| d.dependency_depth + 1)
            .max()
            .unwrap_or(0);
        assert_eq!(t.dependency_depth, depth, "{step}: depth of {}", t.summary);
        let all_done = deps.iter().all(|d| d.status == TaskStatus::Completed);
        match t.status {
            TaskStatus::Ready | TaskStatus::Running | TaskStatus::Completed => assert!(
                all_done,
                "{step}: {} is {} with an unfinished dependency",
                t.summary, t.status
            ),
            TaskStatus::Blocked => assert!(
                !all_done,
                "{step}: {} is blocked with every dependency completed",
                t.summary
            ),
            _ => {}
        }
        let events = h.history(t.id).await;
        assert_eq!(events[0].from, None, "{step}: {}", t.summary);
        for pair in events.windows(2) {
            assert_eq!(Some(pair[0].to), pair[1].from, "{step}: {}", t.summary);
            assert!(pair[0].sequence < pair[1].sequence);
            assert!(pair[0].at <= pair[1].at);
        }
        assert_eq!(
            events.last().map(|e| e.to),
            Some(t.status),
            "{step}: the history of {} replays to its status",
            t.summary
        );
    }
}

/// Whether a task can never run again without a person: it, or a task it waits for, directly
/// or not, failed or was cancelled.
fn stuck(tasks: &HashMap<Uuid, Task>, id: Uuid) -> bool {
    let t = &tasks[&id];
    matches!(t.status, TaskStatus::Failed | TaskStatus::Cancelled)
        || t.dependencies.iter().flatten().any(|d| stuck(tasks, *d))
}

async fn run_seed(h: &Harness, seed: u64) {
    let mut dice = Dice(seed);
    let batch = dag(&mut dice, 30);
    let ids: Vec<Uuid> = batch.iter().map(|t| t.id).collect();
    h.submit_batch(batch).await;
    check(h, &ids, "after submit").await;
    let mut open = Vec::new();
    for step in 0..60 {
        match dice.below(10) {
            0..=2 => {
                let max = 1 + dice.below(3) as u32;
                open.extend(h.claim(max).await.into_iter().map(|c| c.lease.attempt_id));
            }
            3..=4 if !open.is_empty() => {
                let attempt = open.swap_remove(dice.below(open.len()));
                match h.queue.complete(attempt, None).await {
                    Ok(_) | Err(QueueError::Cancelled { .. } | QueueError::LeaseLost { .. }) => {}
                    Err(e) => panic!("complete: {e:?}"),
                }
            }
            5 if !open.is_empty() => {
                let attempt = open.swap_remove(dice.below(open.len()));
                match h.queue.fail(attempt, "boom").await {
                    Ok(_) | Err(QueueError::Cancelled { .. } | QueueError::LeaseLost { .. }) => {}
                    Err(e) => panic!("fail: {e:?}"),
                }
            }
            6 if !open.is_empty() => {
                let attempt = open.swap_remove(dice.below(open.len()));
                match h.queue.release(attempt, "stopping").await {
                    Ok(()) | Err(QueueError::Cancelled { .. } | QueueError::LeaseLost { .. }) => {}
                    Err(e) => panic!("release: {e:?}"),
                }
            }
            7 => {
                let id = ids[dice.below(ids.len())];
                match h.queue.cancel(id, "person").await {
                    Ok(_) | Err(QueueError::InvalidTransition { .. }) => {}
                    Err(e) => panic!("cancel: {e:?}"),
                }
            }
            8 => {
                let id = ids[dice.below(ids.len())];
                match h.queue.retry(id, "person").await {
                    Ok(_) | Err(QueueError::InvalidTransition { .. }) => {}
                    Err(e) => panic!("retry: {e:?}"),
                }
            }
            _ => {
                h.advance(dice.below(40) as i64);
                ok(h.queue.reap().await);
            }
        }
        check(h, &ids, &format!("seed {seed}, step {step}")).await;
    }
    // Drain: let every backoff pass, take back every open lease, run what can run.
    h.advance(3600);
    ok(h.queue.reap().await);
    h.advance(3600);
    loop {
        let claimed = h.claim(100).await;
        if claimed.is_empty() {
            break;
        }
        for c in claimed {
            h.complete(c.lease.attempt_id).await;
        }
    }
    check(h, &ids, &format!("seed {seed}, drained")).await;
    let tasks = all(h, &ids).await;
    for t in tasks.values() {
        match t.status {
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled => {}
            TaskStatus::Blocked => assert!(
                stuck(&tasks, t.id),
                "seed {seed}: {} is blocked behind nothing that failed or was cancelled",
                t.summary
            ),
            other => panic!("seed {seed}: {} is {other} after draining", t.summary),
        }
    }
}

pub async fn random_dags_keep_the_queues_invariants_under_every_operation(h: Harness) {
    for seed in [0x9e37_79b9_7f4a_7c15, 42, 7, 2026] {
        run_seed(&h, seed).await;
    }
}
