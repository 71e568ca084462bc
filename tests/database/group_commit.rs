//! Group commit: many callers' operations share transactions, and each still gets its own
//! outcome.

use std::sync::Arc;
use std::time::Duration;

use abathur::domain::models::TaskStatus;
use abathur::domain::queue::{NewTask, QueueError, TaskQueue};
use abathur::infrastructure::database::{GroupCommitQueueStore, QueueStoreImpl};
use uuid::Uuid;

use crate::helpers::database::{file_db, table_dump};

const LEASE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn concurrent_operations_share_commits_and_each_gets_its_own_outcome() {
    let (_dir, db) = file_db().await;
    let store = GroupCommitQueueStore::new(db.pool().clone());
    let queue = TaskQueue::new(Arc::new(store.clone()));
    let tasks: Vec<NewTask> = (0..64)
        .map(|i| NewTask::new(format!("t{i}"), "d", "w"))
        .collect();
    queue.submit_batch(tasks).await.unwrap();

    // 64 callers claim at once: they queue up behind one another and are written in groups.
    let claims = futures_join_all((0..64).map(|i| {
        let queue = queue.clone();
        async move { queue.claim(&format!("w{i}"), &[], LEASE, 1).await }
    }))
    .await;
    let mut attempts = Vec::new();
    for claim in claims {
        let claimed = claim.unwrap();
        assert_eq!(claimed.len(), 1, "every caller gets exactly one task");
        attempts.push(claimed[0].lease.attempt_id);
    }
    let mut claimed_tasks: Vec<Uuid> = Vec::new();
    for a in &attempts {
        let id: String = sqlx::query_scalar("SELECT task_id FROM task_attempts WHERE id = ?")
            .bind(a.to_string())
            .fetch_one(db.pool())
            .await
            .unwrap();
        claimed_tasks.push(id.parse().unwrap());
    }
    claimed_tasks.sort();
    claimed_tasks.dedup();
    assert_eq!(claimed_tasks.len(), 64, "no task went to two callers");

    // Completions of 64 live leases and one stale lease, all at once: the stale one (another
    // result on the same attempt, so not a repeat) is refused and the 64 others are kept.
    let stale = attempts[0];
    let mut work: Vec<(Uuid, Option<serde_json::Value>)> =
        attempts.iter().map(|a| (*a, None)).collect();
    work.push((stale, Some(serde_json::json!("stale"))));
    let outcomes = futures_join_all(work.into_iter().map(|(a, result)| {
        let queue = queue.clone();
        async move { queue.complete(a, result).await }
    }))
    .await;
    let refused: Vec<&QueueError> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(matches!(refused[0], QueueError::LeaseLost { .. }));
    let completed: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE status = 'completed'")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(completed, 64);

    let stats = store.stats();
    assert!(
        stats.groups < stats.operations,
        "operations were never grouped: {stats:?}"
    );
}

#[tokio::test]
async fn a_failing_operation_leaves_no_trace_and_does_not_undo_its_group() {
    let (dir, db) = file_db().await;
    let store = GroupCommitQueueStore::new(db.pool().clone());
    let queue = TaskQueue::new(Arc::new(store.clone()));
    let a = queue.submit(NewTask::new("a", "a", "w")).await.unwrap();
    let claimed = queue.claim("w", &[], LEASE, 1).await.unwrap();
    let before = table_dump(db.pool()).await;
    let stats_before = store.stats();

    // In one group: a submission that fails half-way (its second member names a missing
    // dependency, after the first was written), and a completion that succeeds.
    let good = NewTask::new("good", "g", "w");
    let bad = NewTask {
        dependencies: vec![Uuid::new_v4()],
        ..NewTask::new("bad", "b", "w")
    };
    // Another connection holds the write lock while both are handed to the writer, which
    // takes into its transaction whatever waits once it has the lock.
    let mut holder = lock_holder(dir.path()).await;
    let both = tokio::spawn({
        let queue = queue.clone();
        let attempt = claimed[0].lease.attempt_id;
        let good = good.clone();
        async move {
            tokio::join!(
                queue.submit_batch(vec![good, bad]),
                queue.complete(attempt, None)
            )
        }
    });
    // The spawned task runs (and hands both operations over) before this one goes on.
    tokio::task::yield_now().await;
    sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
    let (submitted, completed) = both.await.unwrap();
    assert!(matches!(
        submitted.unwrap_err(),
        QueueError::UnknownDependency { .. }
    ));
    completed.unwrap();
    let stats_after = store.stats();
    assert_eq!(
        (
            stats_after.groups - stats_before.groups,
            stats_after.operations - stats_before.operations
        ),
        (1, 2),
        "both operations must have shared one transaction"
    );

    let after = table_dump(db.pool()).await;
    assert_ne!(after, before, "the completion was kept");
    let good_row: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE id = ?")
        .bind(good.id.to_string())
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(
        good_row, 0,
        "the failed submission's first member was rolled back"
    );
    let status: String = sqlx::query_scalar("SELECT status FROM tasks WHERE id = ?")
        .bind(a.id.to_string())
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(status, TaskStatus::Completed.as_str());
}

#[tokio::test]
async fn the_group_commit_store_and_the_plain_store_agree_on_a_diamond() {
    let (_dir, db) = file_db().await;
    for grouped in [false, true] {
        let store: Arc<dyn abathur::domain::queue::QueueStore> = if grouped {
            Arc::new(GroupCommitQueueStore::new(db.pool().clone()))
        } else {
            Arc::new(QueueStoreImpl::new(db.pool().clone()))
        };
        let queue = TaskQueue::new(store);
        let a = NewTask::new("A", "A", "diamond");
        let b = NewTask {
            dependencies: vec![a.id],
            ..NewTask::new("B", "B", "diamond")
        };
        let c = NewTask {
            dependencies: vec![a.id],
            ..NewTask::new("C", "C", "diamond")
        };
        let d = NewTask {
            dependencies: vec![b.id, c.id],
            ..NewTask::new("D", "D", "diamond")
        };
        queue.submit_batch(vec![a, b, c, d]).await.unwrap();
        let mut order = Vec::new();
        loop {
            let claimed = queue
                .claim("w", &["diamond".to_string()], LEASE, 2)
                .await
                .unwrap();
            if claimed.is_empty() {
                break;
            }
            for c in claimed {
                order.push(c.task.summary.clone());
                queue.complete(c.lease.attempt_id, None).await.unwrap();
            }
        }
        assert_eq!(order.len(), 4, "grouped: {grouped}");
        assert_eq!(order[0], "A");
        assert_eq!(order[3], "D");
        sqlx::query("DELETE FROM tasks WHERE agent_type = 'diamond'")
            .execute(db.pool())
            .await
            .unwrap();
    }
}

/// Runs every future as its own task, at once; their outputs in order.
async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("a task panicked"));
    }
    outputs
}

/// A second handle on the same file, outside the store's pool, that can hold the write lock.
async fn lock_holder(dir: &std::path::Path) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let url = format!("sqlite:{}", dir.join("abathur.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

/// Both SQLite stores: the writer, and one pooled connection per operation.
fn stores(pool: &sqlx::SqlitePool) -> [(&'static str, TaskQueue); 2] {
    [
        (
            "group commit",
            TaskQueue::new(Arc::new(GroupCommitQueueStore::new(pool.clone()))),
        ),
        (
            "per operation",
            TaskQueue::new(Arc::new(QueueStoreImpl::new(pool.clone()))),
        ),
    ]
}

#[tokio::test]
async fn a_write_waits_for_a_lock_held_elsewhere_without_holding_up_the_runtime() {
    let (dir, db) = file_db().await;
    for (name, queue) in stores(db.pool()) {
        waits_without_blocking(dir.path(), &db, name, queue).await;
    }
}

async fn waits_without_blocking(
    dir: &std::path::Path,
    db: &abathur::infrastructure::database::DatabaseConnection,
    name: &str,
    queue: TaskQueue,
) {
    // A current-thread runtime: if the store waited for the lock by blocking its thread,
    // nothing else here could run until it gave up.
    let mut holder = lock_holder(dir).await;

    let submit = tokio::spawn({
        let queue = queue.clone();
        async move { queue.submit(NewTask::new("waits", "d", "w")).await }
    });
    let mut ticks = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        ticks += 1;
    }
    assert_eq!(ticks, 20, "{name}");
    assert!(
        !submit.is_finished(),
        "{name}: the submit cannot finish while another connection holds the write lock"
    );

    sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
    let task = submit
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{name}: the submit goes through once the lock is free: {e}"));
    let stored: String = sqlx::query_scalar("SELECT summary FROM tasks WHERE id = ?")
        .bind(task.id.to_string())
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(stored, "waits");
}

#[tokio::test]
async fn a_lock_held_past_the_busy_timeout_fails_the_operation_with_busy_and_writes_nothing() {
    use abathur::domain::error::DatabaseError;
    use abathur::infrastructure::database::{DatabaseConfig, DatabaseConnection};
    let (dir, _db) = file_db().await;
    let config = DatabaseConfig {
        busy_timeout: Duration::from_millis(200),
        ..DatabaseConfig::default()
    };
    let db = DatabaseConnection::open_path(&dir.path().join("abathur.db"), config)
        .await
        .unwrap();
    for (name, queue) in stores(db.pool()) {
        let before = table_dump(db.pool()).await;
        let mut holder = lock_holder(dir.path()).await;

        let refused = queue.submit(NewTask::new("refused", "d", "w")).await;
        assert!(
            matches!(refused, Err(QueueError::Database(DatabaseError::Busy))),
            "{name}: {refused:?}"
        );
        sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
        assert_eq!(
            table_dump(db.pool()).await,
            before,
            "{name}: nothing was written"
        );

        // The store is not stuck: the next operation goes through.
        queue
            .submit(NewTask::new("accepted", "d", "w"))
            .await
            .unwrap_or_else(|e| panic!("{name}: the lock is free again: {e}"));
    }
}

#[tokio::test]
async fn closing_the_database_does_not_wait_on_an_idle_writer() {
    let (_dir, db) = file_db().await;
    let queue = TaskQueue::new(Arc::new(GroupCommitQueueStore::new(db.pool().clone())));
    queue.submit(NewTask::new("one", "d", "w")).await.unwrap();
    // The writer keeps its connection while work comes, and gives it back once idle: the
    // pool's close, which waits for every connection, returns although the store lives on.
    tokio::time::timeout(Duration::from_secs(5), db.close())
        .await
        .expect("close returns once the writer is idle");
    drop(queue);
}

#[tokio::test]
async fn on_an_in_memory_database_a_write_waits_out_a_read_of_another_connection() {
    use abathur::infrastructure::database::DatabaseConnection;
    use sqlx::Connection;
    // In-memory databases share one cache between the pool's connections, where a read
    // transaction locks the tables it read until it ends, and a write to them is refused at
    // once rather than waited for.
    let db = DatabaseConnection::new("sqlite::memory:").await.unwrap();
    db.migrate().await.unwrap();
    let queue = TaskQueue::new(Arc::new(QueueStoreImpl::new(db.pool().clone())));
    queue.submit(NewTask::new("first", "d", "w")).await.unwrap();
    let mut reader = db.pool().acquire().await.unwrap();
    let mut read = reader.begin().await.unwrap();
    let _: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tasks")
        .fetch_one(&mut *read)
        .await
        .unwrap();

    let submit = tokio::spawn({
        let queue = queue.clone();
        async move { queue.submit(NewTask::new("second", "d", "w")).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    read.commit().await.unwrap();
    submit
        .await
        .unwrap()
        .expect("the write goes through once the read has ended");
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tasks")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(count, 2);
}

#[tokio::test]
async fn the_writer_shares_a_pool_of_one_connection_with_the_reads() {
    use abathur::infrastructure::database::{DatabaseConfig, DatabaseConnection};
    let (dir, _db) = file_db().await;
    let config = DatabaseConfig {
        min_connections: 1,
        max_connections: 1,
        ..DatabaseConfig::default()
    };
    let db = DatabaseConnection::open_path(&dir.path().join("abathur.db"), config)
        .await
        .unwrap();
    let queue = TaskQueue::new(Arc::new(GroupCommitQueueStore::new(db.pool().clone())));
    let first = queue.submit(NewTask::new("first", "d", "w")).await.unwrap();
    // Writes keep coming, closer together than the writer's idle time...
    let writing = tokio::spawn({
        let queue = queue.clone();
        async move {
            for i in 0..200 {
                queue
                    .submit(NewTask::new(format!("t{i}"), "d", "w"))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    // ...and a read through the pool still gets the one connection between two groups.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let history = tokio::time::timeout(Duration::from_secs(2), queue.history(first.id))
        .await
        .expect("the read is not starved by the writes")
        .unwrap();
    assert_eq!(history.len(), 1);
    assert!(
        !writing.is_finished(),
        "the read ran while the writes went on"
    );
    writing.await.unwrap();
}

#[tokio::test]
async fn the_writer_needs_no_connection_of_the_pool() {
    use abathur::infrastructure::database::{DatabaseConfig, DatabaseConnection};
    let (dir, _db) = file_db().await;
    let config = DatabaseConfig {
        min_connections: 1,
        max_connections: 1,
        acquire_timeout: Duration::from_millis(500),
        ..DatabaseConfig::default()
    };
    let db = DatabaseConnection::open_path(&dir.path().join("abathur.db"), config)
        .await
        .unwrap();
    // The pool's only connection is taken: the writer has one of its own.
    let held = db.pool().acquire().await.unwrap();
    for (name, queue) in stores(db.pool()) {
        let outcomes = futures_join_all((0..4).map(|i| {
            let queue = queue.clone();
            async move { queue.submit(NewTask::new(format!("t{i}"), "d", "w")).await }
        }))
        .await;
        for outcome in &outcomes {
            assert!(outcome.is_ok(), "{name}: {outcome:?}");
        }
    }
    drop(held);
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tasks")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(count, 8);
}

#[tokio::test]
async fn after_close_writes_fail_and_no_connection_holds_the_file() {
    use abathur::domain::error::DatabaseError;
    let (dir, db) = file_db().await;
    for (name, queue) in stores(db.pool()) {
        queue
            .submit(NewTask::new(name, "d", "w"))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    db.close().await;
    // The writer closed its connection before the pool closed its own: the last to close
    // merged the WAL into the file and removed it.
    assert!(
        !dir.path().join("abathur.db-wal").exists(),
        "a connection was still open when the pool closed"
    );
    for (name, queue) in stores(db.pool()) {
        let refused = queue.submit(NewTask::new("late", "d", "w")).await;
        assert!(
            matches!(
                refused,
                Err(QueueError::Database(DatabaseError::Connection(_)))
            ),
            "{name}: {refused:?}"
        );
    }
}
