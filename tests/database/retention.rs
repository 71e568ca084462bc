//! Retention: prune removes old finished tasks with their attempts and events, in batches,
//! and keeps every task something unfinished still needs. Every case runs through both SQLite
//! stores.

use std::sync::Arc;
use std::time::Duration;

use abathur::domain::models::TaskStatus;
use abathur::domain::queue::{
    NewTask, PruneRequest, QueueError, QueueStore, RetryPolicy, TaskQueue,
};
use abathur::infrastructure::database::{GroupCommitQueueStore, QueueStoreImpl};
use sqlx::SqlitePool;
use uuid::Uuid;

use crate::helpers::database::{table_dump, test_db, TestPool};
use crate::helpers::ManualClock;

const LEASE: Duration = Duration::from_secs(30);
const HOUR: Duration = Duration::from_secs(3600);

struct Fixture {
    pool: TestPool,
    clock: Arc<ManualClock>,
    store: Arc<dyn QueueStore>,
    queue: TaskQueue,
}

async fn fixture(grouped: bool) -> Fixture {
    let pool = test_db().await;
    let clock = ManualClock::new();
    let store: Arc<dyn QueueStore> = if grouped {
        Arc::new(GroupCommitQueueStore::new(pool.clone()))
    } else {
        Arc::new(QueueStoreImpl::new(pool.clone()))
    };
    let queue = TaskQueue::new(store.clone())
        .with_clock(clock.clone())
        .with_retry_policy(RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        });
    Fixture {
        pool,
        clock,
        store,
        queue,
    }
}

fn task(name: &str, deps: &[Uuid]) -> NewTask {
    NewTask {
        dependencies: deps.to_vec(),
        max_retries: 0,
        ..NewTask::new(name, name, "worker")
    }
}

impl Fixture {
    async fn submit(&self, name: &str, deps: &[Uuid]) -> Uuid {
        self.queue.submit(task(name, deps)).await.unwrap().id
    }

    /// Claims `id` (the only ready task) and completes it.
    async fn run(&self, id: Uuid) {
        let claimed = self.queue.claim("w", &[], LEASE, 1).await.unwrap();
        assert_eq!(claimed[0].task.id, id);
        self.queue
            .complete(claimed[0].lease.attempt_id, None)
            .await
            .unwrap();
    }

    /// Claims `id` (the only ready task) and fails it for good.
    async fn fail(&self, id: Uuid) {
        let claimed = self.queue.claim("w", &[], LEASE, 1).await.unwrap();
        assert_eq!(claimed[0].task.id, id);
        self.queue
            .fail(claimed[0].lease.attempt_id, "broken")
            .await
            .unwrap();
    }

    async fn rows_of(&self, id: Uuid) -> (i64, i64, i64, i64) {
        let id = id.to_string();
        let count = |sql: &'static str| {
            let id = id.clone();
            let pool = self.pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(sql)
                    .bind(id)
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };
        (
            count("SELECT COUNT(*) FROM tasks WHERE id = ?").await,
            count("SELECT COUNT(*) FROM task_attempts WHERE task_id = ?").await,
            count("SELECT COUNT(*) FROM task_events WHERE task_id = ?").await,
            count(
                "SELECT COUNT(*) FROM task_dependencies WHERE task_id = ?1 OR depends_on_task_id = ?1",
            )
            .await,
        )
    }

    async fn status(&self, id: Uuid) -> Option<String> {
        sqlx::query_scalar("SELECT status FROM tasks WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&*self.pool)
            .await
            .unwrap()
    }
}

/// The table dump without its row counts and without the rows naming any of `gone`.
async fn dump_without(pool: &SqlitePool, gone: &[Uuid]) -> Vec<String> {
    table_dump(pool)
        .await
        .into_iter()
        .filter(|line| !line.contains(" rows"))
        .filter(|line| !gone.iter().any(|id| line.contains(&id.to_string())))
        .collect()
}

#[tokio::test]
async fn prune_removes_only_old_finished_tasks_of_the_asked_statuses_with_their_history() {
    for grouped in [false, true] {
        let f = fixture(grouped).await;
        let completed = f.submit("completed long ago", &[]).await;
        f.run(completed).await;
        let failed = f.submit("failed long ago", &[]).await;
        f.fail(failed).await;
        let cancelled = f.submit("cancelled long ago", &[]).await;
        f.queue.cancel(cancelled, "human").await.unwrap();
        assert_eq!(f.rows_of(completed).await.1, 1, "it had an attempt");

        f.clock.advance(chrono::Duration::hours(2));
        let recent = f.submit("completed just now", &[]).await;
        f.run(recent).await;
        let running = f.submit("running", &[]).await;
        f.queue.claim("w", &[], LEASE, 1).await.unwrap();
        let blocked = f.submit("blocked", &[running]).await;
        let ready = f.submit("ready", &[]).await;
        let before = dump_without(&f.pool, &[completed]).await;

        let report = f.queue.prune(HOUR, &[TaskStatus::Completed]).await.unwrap();
        assert_eq!(report.tasks, 1, "grouped: {grouped}");
        assert_eq!(f.rows_of(completed).await, (0, 0, 0, 0));
        assert_eq!(dump_without(&f.pool, &[completed]).await, before);

        let report = f.queue.prune(HOUR, &[]).await.unwrap();
        assert_eq!(report.tasks, 2, "the failed and the cancelled one");
        for id in [failed, cancelled] {
            assert_eq!(f.rows_of(id).await, (0, 0, 0, 0));
        }
        for (id, status) in [
            (recent, "completed"),
            (running, "running"),
            (blocked, "blocked"),
            (ready, "ready"),
        ] {
            assert_eq!(f.status(id).await.as_deref(), Some(status));
        }
        assert_eq!(f.queue.prune(HOUR, &[]).await.unwrap().tasks, 0);
    }
}

#[tokio::test]
async fn prune_goes_in_batches_of_the_asked_size() {
    for grouped in [false, true] {
        let f = fixture(grouped).await;
        for i in 0..5 {
            let id = f.submit(&format!("t{i}"), &[]).await;
            f.run(id).await;
        }
        f.clock.advance(chrono::Duration::hours(2));
        let report = f
            .store
            .prune(&PruneRequest {
                finished_before: f.clock_now() - chrono::Duration::hours(1),
                statuses: vec![TaskStatus::Completed],
                batch_size: 2,
            })
            .await
            .unwrap();
        assert_eq!(report.tasks, 5);
        assert_eq!(report.batches, 3, "2 + 2 + 1");
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tasks")
            .fetch_one(&*f.pool)
            .await
            .unwrap();
        assert_eq!(left, 0);
    }
}

impl Fixture {
    fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        use abathur::domain::clock::Clock;
        self.clock.now()
    }
}

#[tokio::test]
async fn a_completed_task_is_kept_while_a_dependent_is_unfinished_and_counts_as_completed_once_gone(
) {
    for grouped in [false, true] {
        let f = fixture(grouped).await;
        let a = f.submit("A", &[]).await;
        f.run(a).await;
        let other = f.submit("other", &[]).await;
        let b = f.submit("B needs A and other", &[a, other]).await;
        f.clock.advance(chrono::Duration::hours(2));

        // B is unfinished: A stays, whatever its age.
        assert_eq!(f.queue.prune(HOUR, &[]).await.unwrap().tasks, 0);
        assert_eq!(f.status(a).await.as_deref(), Some("completed"));

        // B fails with `other`; A may go now.
        f.fail(other).await;
        assert_eq!(f.status(b).await.as_deref(), Some("failed"));
        let report = f
            .queue
            .prune(Duration::from_secs(1), &[TaskStatus::Completed])
            .await
            .unwrap();
        assert_eq!(report.tasks, 1);
        assert_eq!(f.rows_of(a).await, (0, 0, 0, 0));

        // Retried, `other` runs again; B waits only for it, and A, gone, counts as completed.
        f.queue.retry(other, "human").await.unwrap();
        assert_eq!(f.status(b).await.as_deref(), Some("blocked"));
        f.run(other).await;
        assert_eq!(f.status(b).await.as_deref(), Some("ready"));
    }
}

#[tokio::test]
async fn a_failed_task_goes_with_the_dependents_that_failed_with_it_never_before() {
    for grouped in [false, true] {
        let f = fixture(grouped).await;
        let root = f.submit("root", &[]).await;
        let child = f.submit("child", &[root]).await;
        let grandchild = f.submit("grandchild", &[child]).await;
        f.fail(root).await;
        f.clock.advance(chrono::Duration::hours(2));

        // The root is kept while a dependent failed with it is there, and so is the child
        // while the grandchild is: leaves go first, the rest in later passes of one prune.
        let partial = f
            .store
            .prune(&PruneRequest {
                finished_before: f.clock_now(),
                statuses: vec![TaskStatus::Failed],
                batch_size: 1,
            })
            .await
            .unwrap();
        assert_eq!(partial.tasks, 3, "leaves first, over several passes");
        for id in [root, child, grandchild] {
            assert_eq!(f.rows_of(id).await, (0, 0, 0, 0));
        }
    }
}

#[tokio::test]
async fn a_parent_is_kept_while_a_child_is_unfinished() {
    for grouped in [false, true] {
        let f = fixture(grouped).await;
        let parent = f.submit("parent", &[]).await;
        f.run(parent).await;
        let child = f
            .queue
            .submit(NewTask {
                parent_task_id: Some(parent),
                ..task("child", &[])
            })
            .await
            .unwrap()
            .id;
        f.clock.advance(chrono::Duration::hours(2));
        assert_eq!(f.queue.prune(HOUR, &[]).await.unwrap().tasks, 0);

        f.run(child).await;
        f.clock.advance(chrono::Duration::hours(2));
        assert_eq!(f.queue.prune(HOUR, &[]).await.unwrap().tasks, 2);
        assert_eq!(f.status(parent).await, None);
        assert_eq!(f.status(child).await, None);
    }
}

#[tokio::test]
async fn bad_prune_requests_are_refused_with_nothing_removed() {
    for grouped in [false, true] {
        let f = fixture(grouped).await;
        let id = f.submit("done", &[]).await;
        f.run(id).await;
        f.clock.advance(chrono::Duration::hours(2));
        let before = table_dump(&f.pool).await;
        for (older_than, statuses) in [
            (Duration::ZERO, vec![]),
            (Duration::from_secs(20_000 * 365 * 86_400), vec![]),
            (HOUR, vec![TaskStatus::Running]),
            (HOUR, vec![TaskStatus::Completed, TaskStatus::Ready]),
        ] {
            let outcome = f.queue.prune(older_than, &statuses).await;
            assert!(
                matches!(outcome, Err(QueueError::Validation(_))),
                "{older_than:?} {statuses:?}: {outcome:?}"
            );
        }
        let zero_batch = f
            .store
            .prune(&PruneRequest {
                finished_before: f.clock_now(),
                statuses: vec![TaskStatus::Completed],
                batch_size: 0,
            })
            .await;
        assert!(matches!(zero_batch, Err(QueueError::Validation(_))));
        assert_eq!(table_dump(&f.pool).await, before);
    }
}
