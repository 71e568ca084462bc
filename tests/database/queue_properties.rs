//! Property tests of the task queue over random DAGs and random operation sequences, checking
//! the stored invariants after every step, and bad-input tests that must write nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use abathur::domain::queue::{
    FailOutcome, NewTask, QueueError, QueueLimits, QueueStore, RetryPolicy, TaskQueue,
};
use abathur::infrastructure::database::{GroupCommitQueueStore, QueueStoreImpl};
use proptest::prelude::*;
use sqlx::SqlitePool;
use uuid::Uuid;

use crate::helpers::database::{table_dump, test_db, TestPool};
use crate::helpers::ManualClock;

const LEASE: Duration = Duration::from_secs(60);

fn queue_over(pool: &SqlitePool, clock: Arc<ManualClock>) -> TaskQueue {
    queue_on(Arc::new(QueueStoreImpl::new(pool.clone())), clock)
}

fn queue_on(store: Arc<dyn QueueStore>, clock: Arc<ManualClock>) -> TaskQueue {
    TaskQueue::new(store)
        .with_clock(clock)
        .with_retry_policy(RetryPolicy {
            base: Duration::ZERO,
            ..Default::default()
        })
}

async fn statuses(pool: &SqlitePool) -> HashMap<String, String> {
    sqlx::query_as::<_, (String, String)>("SELECT id, status FROM tasks")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

async fn edges(pool: &SqlitePool) -> Vec<(String, String)> {
    sqlx::query_as::<_, (String, String)>(
        "SELECT task_id, depends_on_task_id FROM task_dependencies",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Checks every stored invariant; `context` names the step for the failure message.
async fn check_invariants(pool: &SqlitePool, context: &str) {
    // Nothing ready or running waits on an incomplete dependency.
    let bad = sqlx::query_as::<_, (String, String, String, String)>(
        "SELECT t.id, t.status, u.id, u.status FROM tasks t
         JOIN task_dependencies d ON d.task_id = t.id
         JOIN tasks u ON u.id = d.depends_on_task_id
         WHERE t.status IN ('ready', 'running') AND u.status <> 'completed'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        bad.is_empty(),
        "{context}: ready/running task with incomplete dependency: {bad:?}"
    );

    // dependency_depth = 0 without deps, else 1 + max depth of deps.
    let depths: HashMap<String, i64> =
        sqlx::query_as::<_, (String, i64)>("SELECT id, dependency_depth FROM tasks")
            .fetch_all(pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let mut deps_of: HashMap<String, Vec<String>> = HashMap::new();
    for (task, dep) in edges(pool).await {
        deps_of.entry(task).or_default().push(dep);
    }
    for (id, depth) in &depths {
        let expected = deps_of
            .get(id)
            .map_or(0, |deps| 1 + deps.iter().map(|d| depths[d]).max().unwrap());
        assert_eq!(*depth, expected, "{context}: dependency_depth of {id}");
    }

    // At most one open attempt per task; running iff an open attempt exists.
    let open: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT task_id, COUNT(*) FROM task_attempts WHERE finished_at IS NULL GROUP BY task_id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let status = statuses(pool).await;
    for (id, n) in &open {
        assert!(*n <= 1, "{context}: task {id} has {n} open attempts");
    }
    for (id, s) in &status {
        assert_eq!(
            s == "running",
            open.contains_key(id),
            "{context}: task {id} is {s} with {} open attempts",
            open.get(id).copied().unwrap_or(0)
        );
    }

    // Replaying the events of each task gives its status.
    let events = sqlx::query_as::<_, (String, Option<String>, String)>(
        "SELECT task_id, from_status, to_status FROM task_events ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut replayed: HashMap<String, String> = HashMap::new();
    for (task, from, to) in events {
        match replayed.get(&task) {
            None => assert_eq!(
                from, None,
                "{context}: first event of {task} has a from_status"
            ),
            Some(prev) => assert_eq!(
                from.as_deref(),
                Some(prev.as_str()),
                "{context}: event of {task} does not follow the previous one"
            ),
        }
        replayed.insert(task, to);
    }
    assert_eq!(
        replayed, status,
        "{context}: replayed events differ from task statuses"
    );
}

#[derive(Debug, Clone)]
enum Op {
    ClaimComplete,
    ClaimFail,
    /// Claim and keep the lease for a later step.
    Claim,
    /// Complete the k-th lease ever held: it may have been reaped, cancelled or finished.
    CompleteHeld(usize),
    /// Fail the k-th lease ever held, live or not.
    FailHeld(usize),
    /// Move the clock past every lease.
    Advance,
    Reap,
    Cancel(usize),
    Retry(usize),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::ClaimComplete),
        Just(Op::ClaimFail),
        Just(Op::Claim),
        any::<usize>().prop_map(Op::CompleteHeld),
        any::<usize>().prop_map(Op::FailHeld),
        Just(Op::Advance),
        Just(Op::Reap),
        any::<usize>().prop_map(Op::Cancel),
        any::<usize>().prop_map(Op::Retry),
    ]
}

/// Whether a lease's task is still ours: its attempt is open.
async fn lease_is_live(pool: &SqlitePool, attempt: Uuid) -> bool {
    sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM task_attempts WHERE id = ? AND finished_at IS NULL",
    )
    .bind(attempt.to_string())
    .fetch_one(pool)
    .await
    .unwrap()
        == 1
}

/// Finishes a held lease. A stale one must be refused with `LeaseLost` or `Cancelled`, or,
/// when it already ended the same way, answered as a repeat; either way it changes nothing. A
/// live one must succeed.
async fn finish_held(pool: &SqlitePool, queue: &TaskQueue, attempt: Uuid, complete: bool) {
    let live = lease_is_live(pool, attempt).await;
    let before = table_dump(pool).await;
    let result = if complete {
        queue.complete(attempt, None).await.map(|r| r.repeat)
    } else {
        queue.fail(attempt, "boom").await.map(|r| r.repeat)
    };
    match result {
        Ok(false) => assert!(live, "a stale lease {attempt} was honoured"),
        Ok(true) | Err(QueueError::LeaseLost { .. } | QueueError::Cancelled { .. }) => {
            assert!(
                !live,
                "a live lease {attempt} was refused or taken for a repeat"
            );
            assert_eq!(
                table_dump(pool).await,
                before,
                "a refused or repeated call changed rows"
            );
        }
        Err(e) => panic!("finishing a held lease: {e:?}"),
    }
}

/// Each task: a bit mask choosing its dependencies among earlier tasks, and its max_retries.
fn dag_strategy() -> impl Strategy<Value = Vec<(u64, u32)>> {
    prop::collection::vec((any::<u64>(), 0u32..=2), 2..=12)
}

async fn run_case(dag: Vec<(u64, u32)>, ops: Vec<Op>, grouped: bool) {
    let pool = test_db().await;
    let clock = ManualClock::new();
    let queue = if grouped {
        queue_on(
            Arc::new(GroupCommitQueueStore::new(pool.clone())),
            clock.clone(),
        )
    } else {
        queue_over(&pool, clock.clone())
    };

    let mut batch: Vec<NewTask> = Vec::with_capacity(dag.len());
    for (i, (mask, max_retries)) in dag.iter().enumerate() {
        let mut task = NewTask::new(format!("task {i}"), "prop", "agent");
        task.max_retries = *max_retries;
        task.dependencies = (0..i)
            .filter(|j| mask & (1 << j) != 0)
            .map(|j| batch[j].id)
            .collect();
        batch.push(task);
    }
    let ids: Vec<Uuid> = batch.iter().map(|t| t.id).collect();
    queue.submit_batch(batch).await.expect("submit the DAG");
    check_invariants(&pool, "after submit").await;

    let mut held: Vec<Uuid> = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Claim => {
                for claimed in queue.claim("holder", &[], LEASE, 1).await.unwrap() {
                    held.push(claimed.lease.attempt_id);
                }
            }
            Op::CompleteHeld(k) | Op::FailHeld(k) if !held.is_empty() => {
                let attempt = held[k % held.len()];
                finish_held(&pool, &queue, attempt, matches!(op, Op::CompleteHeld(_))).await;
            }
            Op::CompleteHeld(_) | Op::FailHeld(_) => {}
            Op::Advance => clock.advance(chrono::Duration::seconds(61)),
            Op::Reap => {
                queue.reap().await.unwrap();
            }
            Op::ClaimComplete => {
                for claimed in queue.claim("worker", &[], LEASE, 1).await.unwrap() {
                    queue
                        .complete(claimed.lease.attempt_id, None)
                        .await
                        .unwrap();
                }
            }
            Op::ClaimFail => {
                for claimed in queue.claim("worker", &[], LEASE, 1).await.unwrap() {
                    let outcome = queue
                        .fail(claimed.lease.attempt_id, "boom")
                        .await
                        .unwrap()
                        .outcome;
                    if let FailOutcome::Failed { cascaded } = outcome {
                        assert!(!cascaded.contains(&claimed.task.id));
                    }
                }
            }
            Op::Cancel(k) => match queue.cancel(ids[k % ids.len()], "tester").await {
                Ok(_) | Err(QueueError::InvalidTransition { .. }) => {}
                Err(e) => panic!("cancel: {e:?}"),
            },
            Op::Retry(k) => {
                let status = statuses(&pool).await;
                let failed: Vec<Uuid> = ids
                    .iter()
                    .copied()
                    .filter(|id| status[&id.to_string()] == "failed")
                    .collect();
                if !failed.is_empty() {
                    match queue.retry(failed[k % failed.len()], "tester").await {
                        Ok(_) | Err(QueueError::InvalidTransition { .. }) => {}
                        Err(e) => panic!("retry: {e:?}"),
                    }
                }
            }
        }
        check_invariants(&pool, &format!("after step {step} {op:?}")).await;
    }

    // Take back the leases still held, then drain: claim and complete everything claimable.
    clock.advance(chrono::Duration::seconds(61));
    queue.reap().await.unwrap();
    check_invariants(&pool, "after the last reap").await;
    let mut rounds = 0;
    loop {
        let claimed = queue.claim("drainer", &[], LEASE, 1).await.unwrap();
        if claimed.is_empty() {
            break;
        }
        for c in claimed {
            queue.complete(c.lease.attempt_id, None).await.unwrap();
        }
        check_invariants(&pool, "while draining").await;
        rounds += 1;
        assert!(rounds <= 100, "drain does not end");
    }

    let status = statuses(&pool).await;
    let mut deps_of: HashMap<String, Vec<String>> = HashMap::new();
    for (task, dep) in edges(&pool).await {
        deps_of.entry(task).or_default().push(dep);
    }
    for (id, s) in &status {
        if matches!(s.as_str(), "completed" | "failed" | "cancelled") {
            continue;
        }
        assert_eq!(s, "blocked", "task {id} is {s} after draining");
        // Some transitive ancestor must be failed or cancelled.
        let mut seen = HashSet::new();
        let mut stack: Vec<String> = deps_of.get(id).cloned().unwrap_or_default();
        let mut dead_ancestor = false;
        while let Some(a) = stack.pop() {
            if !seen.insert(a.clone()) {
                continue;
            }
            if matches!(status[&a].as_str(), "failed" | "cancelled") {
                dead_ancestor = true;
                break;
            }
            stack.extend(deps_of.get(&a).cloned().unwrap_or_default());
        }
        assert!(
            dead_ancestor,
            "task {id} is blocked after draining with no failed or cancelled ancestor"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_dags_under_random_operations_keep_the_queue_invariants(
        dag in dag_strategy(),
        ops in prop::collection::vec(op_strategy(), 0..=40),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run_case(dag, ops, false));
    }

    /// The same, with every write going through the group-commit store.
    #[test]
    fn the_invariants_hold_with_group_commit_too(
        dag in dag_strategy(),
        ops in prop::collection::vec(op_strategy(), 0..=40),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run_case(dag, ops, true));
    }
}

// ---- Bad input: the typed error, and nothing written. ----

/// A queue with one task already stored, so "unchanged" is checked against a non-empty table.
async fn seeded(limits: Option<QueueLimits>) -> (TestPool, TaskQueue, Uuid) {
    let pool = test_db().await;
    let mut queue = queue_over(&pool, ManualClock::new());
    if let Some(limits) = limits {
        queue = queue.with_limits(limits);
    }
    let seed = queue
        .submit(NewTask::new("seed", "seed", "agent"))
        .await
        .unwrap();
    (pool, queue, seed.id)
}

/// Submits `batch`, returns the error, and asserts nothing was written.
async fn rejected(pool: &SqlitePool, queue: &TaskQueue, batch: Vec<NewTask>) -> QueueError {
    let before = table_dump(pool).await;
    let err = queue
        .submit_batch(batch)
        .await
        .expect_err("the batch must be rejected");
    assert_eq!(
        table_dump(pool).await,
        before,
        "a rejected batch wrote rows: {err:?}"
    );
    err
}

fn t(name: &str) -> NewTask {
    NewTask::new(name, name, "agent")
}

#[tokio::test]
async fn a_cycle_inside_a_batch_is_rejected_with_a_closed_path() {
    let (pool, queue, _) = seeded(None).await;
    let (mut a, mut b, mut c) = (t("a"), t("b"), t("c"));
    a.dependencies = vec![c.id];
    b.dependencies = vec![a.id];
    c.dependencies = vec![b.id];
    let ids = [a.id, b.id, c.id];
    match rejected(&pool, &queue, vec![a, b, c]).await {
        QueueError::Cycle { path } => {
            assert!(path.len() >= 2);
            assert_eq!(path.first(), path.last());
            for id in ids {
                assert!(path.contains(&id));
            }
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_task_depending_on_itself_is_rejected() {
    let (pool, queue, _) = seeded(None).await;
    let mut a = t("a");
    a.dependencies = vec![a.id];
    let id = a.id;
    match rejected(&pool, &queue, vec![a]).await {
        QueueError::SelfDependency { task } => assert_eq!(task, id),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_unknown_dependency_is_rejected_and_named() {
    let (pool, queue, seed) = seeded(None).await;
    let ghost = Uuid::new_v4();
    let mut a = t("a");
    a.dependencies = vec![seed, ghost];
    let id = a.id;
    match rejected(&pool, &queue, vec![t("ok"), a]).await {
        QueueError::UnknownDependency { task, dependency } => {
            assert_eq!(task, id);
            assert_eq!(dependency, ghost);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn too_many_dependencies_are_rejected() {
    let limits = QueueLimits {
        max_dependencies: 2,
        ..QueueLimits::default()
    };
    let (pool, queue, seed) = seeded(Some(limits)).await;
    let (x, y) = (t("x"), t("y"));
    let mut a = t("a");
    a.dependencies = vec![seed, x.id, y.id];
    let id = a.id;
    match rejected(&pool, &queue, vec![x, y, a]).await {
        QueueError::TooManyDependencies { task, count, limit } => {
            assert_eq!((task, count, limit), (id, 3, 2));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_chain_deeper_than_the_limit_is_rejected() {
    let limits = QueueLimits {
        max_depth: 3,
        ..QueueLimits::default()
    };
    let (pool, queue, seed) = seeded(Some(limits)).await;
    // seed (0) <- c1 (1) <- c2 (2) <- c3 (3) <- c4 (4: too deep)
    let mut chain = Vec::new();
    let mut prev = seed;
    for i in 1..=4 {
        let mut c = t(&format!("c{i}"));
        c.dependencies = vec![prev];
        prev = c.id;
        chain.push(c);
    }
    let last = prev;
    match rejected(&pool, &queue, chain).await {
        QueueError::TooDeep { task, depth, limit } => {
            assert_eq!((task, depth, limit), (last, 4, 3));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_summary_of_141_characters_is_rejected() {
    let (pool, queue, _) = seeded(None).await;
    let mut a = t("a");
    a.summary = "s".repeat(141);
    match rejected(&pool, &queue, vec![t("ok"), a]).await {
        QueueError::Validation(e) => assert_eq!(e.field, "summary"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_priority_of_11_is_rejected() {
    let (pool, queue, _) = seeded(None).await;
    let mut a = t("a");
    a.priority = 11;
    match rejected(&pool, &queue, vec![t("ok"), a]).await {
        QueueError::Validation(e) => assert_eq!(e.field, "priority"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_duplicate_id_in_a_batch_is_rejected() {
    let (pool, queue, _) = seeded(None).await;
    let a = t("a");
    let mut again = t("again");
    again.id = a.id;
    let id = a.id;
    match rejected(&pool, &queue, vec![a, t("ok"), again]).await {
        QueueError::DuplicateTask { task } => assert_eq!(task, id),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_unknown_parent_task_is_rejected() {
    let (pool, queue, _) = seeded(None).await;
    let ghost = Uuid::new_v4();
    let mut a = t("a");
    a.parent_task_id = Some(ghost);
    let (a_id, ok) = (a.id, t("ok"));
    match rejected(&pool, &queue, vec![ok, a]).await {
        QueueError::UnknownReference {
            task,
            reference,
            id,
        } => {
            assert_eq!((task, reference, id), (a_id, "parent task", ghost));
        }
        other => panic!("{other:?}"),
    }
}
