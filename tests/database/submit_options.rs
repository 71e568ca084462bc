//! Idempotency keys and run-after times at submission, on both SQLite stores: a retried
//! submission returns the task it made, a different one under the same key is a conflict, and a
//! delayed task is not claimed before its time, whatever else holds it back.

use std::sync::Arc;
use std::time::Duration;

use abathur::domain::clock::Clock;
use abathur::domain::error::ErrorCategory;
use abathur::domain::models::TaskStatus;
use abathur::domain::ports::TaskRepository;
use abathur::domain::queue::{NewTask, QueueError, QueueStore, Submitted, TaskQueue};
use abathur::infrastructure::database::{
    DatabaseConnection, GroupCommitQueueStore, QueueStoreImpl, TaskRepositoryImpl,
};
use chrono::{TimeZone, Utc};
use serde_json::json;
use sqlx::SqlitePool;
use tempfile::TempDir;
use uuid::Uuid;

use crate::helpers::database::{file_db, table_dump};
use crate::helpers::ManualClock;

const LEASE: Duration = Duration::from_secs(60);

/// One store under test, on its own file database, with a clock the test moves.
struct Case {
    name: &'static str,
    _dir: TempDir,
    db: DatabaseConnection,
    clock: Arc<ManualClock>,
    queue: TaskQueue,
}

impl Case {
    fn pool(&self) -> &SqlitePool {
        self.db.pool()
    }

    #[track_caller]
    fn minutes(&self, minutes: i64) -> chrono::DateTime<Utc> {
        self.clock.now() + chrono::Duration::minutes(minutes)
    }

    async fn claim(&self) -> Vec<Uuid> {
        self.queue
            .claim("w", &[], LEASE, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.task.id)
            .collect()
    }
}

/// Both SQLite stores: the group-commit writer, and one pooled connection per operation.
async fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for name in ["group commit", "per operation"] {
        let (dir, db) = file_db().await;
        let clock = ManualClock::new();
        let store: Arc<dyn QueueStore> = if name == "group commit" {
            Arc::new(GroupCommitQueueStore::new(db.pool().clone()))
        } else {
            Arc::new(QueueStoreImpl::new(db.pool().clone()))
        };
        let queue = TaskQueue::new(store).with_clock(clock.clone());
        cases.push(Case {
            name,
            _dir: dir,
            db,
            clock,
            queue,
        });
    }
    cases
}

fn keyed(name: &str, key: &str) -> NewTask {
    NewTask {
        idempotency_key: Some(key.to_string()),
        input_data: Some(json!({"a": 1, "b": [1, 2]})),
        ..NewTask::new(name, format!("do {name}"), "worker")
    }
}

#[tokio::test]
async fn a_repeated_submission_with_a_key_returns_the_first_task_and_writes_nothing() {
    for case in cases().await {
        let first = case.queue.submit_keyed(keyed("A", "k-1")).await.unwrap();
        assert!(!first.existing, "{}", case.name);
        let before = table_dump(case.pool()).await;

        // A retry: a new id, the input's keys in another order, and other scheduling times
        // (a relative `+10m` resolves to another instant on every call).
        let again = NewTask {
            input_data: Some(json!({"b": [1, 2], "a": 1})),
            deadline: Some(case.minutes(90)),
            run_after: Some(case.minutes(10)),
            ..keyed("A", "k-1")
        };
        let again_id = again.id;
        let second = case.queue.submit_keyed(again).await.unwrap();
        assert!(second.existing, "{}", case.name);
        assert_eq!(second.requested_id, again_id, "{}", case.name);
        assert_eq!(second.task, first.task, "{}", case.name);
        assert_eq!(table_dump(case.pool()).await, before, "{}", case.name);
        let details = case.queue.submission_details(first.task.id).await.unwrap();
        assert_eq!(details.idempotency_key.as_deref(), Some("k-1"));
        assert_eq!(
            details.run_after, None,
            "the first submission's times stand"
        );
    }
}

#[tokio::test]
async fn the_same_key_with_other_content_is_a_conflict_naming_the_key_and_the_task() {
    for case in cases().await {
        let first = case.queue.submit(keyed("A", "k-1")).await.unwrap();
        let before = table_dump(case.pool()).await;
        for other in [
            NewTask {
                description: "something else".into(),
                ..keyed("A", "k-1")
            },
            NewTask {
                input_data: Some(json!({"a": 2, "b": [1, 2]})),
                ..keyed("A", "k-1")
            },
            NewTask {
                priority: 9,
                ..keyed("A", "k-1")
            },
            NewTask {
                dependencies: vec![first.id],
                ..keyed("A2", "k-1")
            },
        ] {
            let err = case.queue.submit(other).await.unwrap_err();
            assert_eq!(err.category(), ErrorCategory::Conflict, "{}", case.name);
            match &err {
                QueueError::IdempotencyConflict { key, existing } => {
                    assert_eq!(key, "k-1");
                    assert_eq!(*existing, first.id);
                }
                other => panic!("{}: expected a conflict, got {other:?}", case.name),
            }
            let message = err.to_string();
            assert!(
                message.contains("k-1") && message.contains(&first.id.to_string()),
                "{message}"
            );
        }
        assert_eq!(table_dump(case.pool()).await, before, "{}", case.name);
    }
}

#[tokio::test]
async fn deleting_a_task_forgets_its_key_so_the_key_makes_a_new_task() {
    for case in cases().await {
        let tasks = TaskRepositoryImpl::new(case.pool().clone());
        let first = case.queue.submit(keyed("A", "k-1")).await.unwrap();
        tasks.delete(first.id).await.unwrap();
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM task_idempotency")
            .fetch_one(case.pool())
            .await
            .unwrap();
        assert_eq!(rows, 0, "{}: the key went with its task", case.name);

        // Other content under the same key is no conflict now: the key is free.
        let again = case
            .queue
            .submit_keyed(NewTask {
                description: "something else".into(),
                ..keyed("A", "k-1")
            })
            .await
            .unwrap();
        assert!(!again.existing, "{}", case.name);
        assert_ne!(again.task.id, first.id, "{}", case.name);
        let details = case.queue.submission_details(again.task.id).await.unwrap();
        assert_eq!(details.idempotency_key.as_deref(), Some("k-1"));
    }
}

#[tokio::test]
async fn a_batch_mixing_stored_and_new_keys_stores_the_new_ones_linked_to_the_stored_ones() {
    for case in cases().await {
        let a = case.queue.submit(keyed("A", "a")).await.unwrap();

        // The batch again, as a retrying client builds it: new ids throughout, B depending on
        // the batch's own A.
        let batch = |with_c: bool| {
            let a = keyed("A", "a");
            let b = NewTask {
                dependencies: vec![a.id],
                ..keyed("B", "b")
            };
            let mut batch = vec![b, a];
            if with_c {
                let b_id = batch[0].id;
                batch.push(NewTask {
                    parent_task_id: Some(b_id),
                    ..keyed("C", "c")
                });
            }
            batch
        };
        let stored = case.queue.submit_batch_keyed(batch(false)).await.unwrap();
        let by_name = |stored: &[Submitted], name: &str| {
            stored
                .iter()
                .find(|s| s.task.summary == name)
                .cloned()
                .unwrap()
        };
        let a_again = by_name(&stored, "A");
        let b = by_name(&stored, "B");
        assert!(a_again.existing && !b.existing, "{}", case.name);
        assert_eq!(a_again.task.id, a.id);
        assert_eq!(b.task.dependencies, Some(vec![a.id]), "{}", case.name);
        assert_eq!(b.task.status, TaskStatus::Blocked);

        // The same batch once more, with a new member whose parent is a stored one: only the
        // new member is written, linked to the stored B.
        let stored = case.queue.submit_batch_keyed(batch(true)).await.unwrap();
        assert_eq!(stored.len(), 3);
        let c = by_name(&stored, "C");
        assert!(!c.existing);
        assert!(by_name(&stored, "A").existing && by_name(&stored, "B").existing);
        assert_eq!(c.task.parent_task_id, Some(b.task.id), "{}", case.name);
        let before = table_dump(case.pool()).await;
        let stored = case.queue.submit_batch_keyed(batch(true)).await.unwrap();
        assert!(stored.iter().all(|s| s.existing), "{}", case.name);
        assert_eq!(table_dump(case.pool()).await, before, "{}", case.name);
    }
}

#[tokio::test]
async fn a_conflict_anywhere_in_a_batch_stores_none_of_it() {
    for case in cases().await {
        case.queue.submit(keyed("A", "a")).await.unwrap();
        let before = table_dump(case.pool()).await;
        let fresh = keyed("new", "new");
        let clash = NewTask {
            priority: 1,
            ..keyed("A", "a")
        };
        let err = case
            .queue
            .submit_batch(vec![fresh, clash])
            .await
            .unwrap_err();
        assert!(
            matches!(err, QueueError::IdempotencyConflict { .. }),
            "{err:?}"
        );
        assert_eq!(table_dump(case.pool()).await, before, "{}", case.name);
    }
}

#[tokio::test]
async fn two_members_of_one_batch_with_one_key_are_refused_with_nothing_stored() {
    for case in cases().await {
        let before = table_dump(case.pool()).await;
        let err = case
            .queue
            .submit_batch(vec![keyed("A", "same"), keyed("B", "same")])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, QueueError::DuplicateIdempotencyKey { key, .. } if key == "same"),
            "{err:?}"
        );
        assert_eq!(err.category(), ErrorCategory::Invalid);
        assert_eq!(table_dump(case.pool()).await, before, "{}", case.name);
    }
}

#[tokio::test]
async fn an_empty_overlong_or_nul_key_is_refused_with_nothing_stored() {
    for case in cases().await {
        let before = table_dump(case.pool()).await;
        for bad in [String::new(), "k".repeat(257), "a\0b".to_string()] {
            let err = case.queue.submit(keyed("A", &bad)).await.unwrap_err();
            match err {
                QueueError::Validation(v) => assert_eq!(v.field, "idempotency_key"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        // The limit itself is accepted.
        case.queue
            .submit(keyed("A", &"k".repeat(256)))
            .await
            .unwrap();
        let after = table_dump(case.pool()).await;
        assert_eq!(
            after.len(),
            before.len() + 3,
            "one task, one event, one key"
        );
    }
}

#[tokio::test]
async fn a_task_with_a_run_after_time_is_not_claimed_before_it_and_is_claimed_after() {
    for case in cases().await {
        let task = NewTask {
            run_after: Some(case.minutes(10)),
            ..NewTask::new("later", "later", "worker")
        };
        let id = case.queue.submit(task).await.unwrap().id;
        assert_eq!(
            case.queue.submission_details(id).await.unwrap().run_after,
            Some(case.minutes(10))
        );
        assert!(case.claim().await.is_empty(), "{}", case.name);
        case.clock.advance(chrono::Duration::seconds(599));
        assert!(case.claim().await.is_empty(), "{}", case.name);
        case.clock.advance(chrono::Duration::seconds(1));
        assert_eq!(case.claim().await, vec![id], "{}", case.name);
    }
}

#[tokio::test]
async fn the_overview_names_as_oldest_ready_only_a_task_that_can_be_claimed_now() {
    for case in cases().await {
        let delayed = NewTask {
            run_after: Some(case.minutes(60)),
            ..NewTask::new("delayed", "delayed", "worker")
        };
        let delayed = case.queue.submit(delayed).await.unwrap().id;
        let overview = case.queue.overview(10).await.unwrap();
        assert_eq!(
            overview.counts[&TaskStatus::Ready],
            1,
            "{}: it is still counted as ready",
            case.name
        );
        assert_eq!(overview.oldest_ready, None, "{}", case.name);

        // A later task that can be claimed is named, though the delayed one is older.
        case.clock.advance(chrono::Duration::minutes(1));
        let now = case
            .queue
            .submit(NewTask::new("now", "now", "worker"))
            .await
            .unwrap()
            .id;
        let oldest = case.queue.overview(10).await.unwrap().oldest_ready;
        assert_eq!(oldest.map(|t| t.task_id), Some(now), "{}", case.name);

        // Once its time has come, the delayed one is the oldest again.
        case.clock.advance(chrono::Duration::minutes(59));
        let oldest = case.queue.overview(10).await.unwrap().oldest_ready;
        assert_eq!(oldest.map(|t| t.task_id), Some(delayed), "{}", case.name);
    }
}

#[tokio::test]
async fn a_run_after_time_is_shown_only_while_it_holds_the_task_back() {
    for case in cases().await {
        let past = NewTask {
            run_after: Some(case.minutes(-5)),
            ..NewTask::new("past", "past", "worker")
        };
        let past = case.queue.submit(past).await.unwrap().id;
        let details = case.queue.submission_details(past).await.unwrap();
        assert_eq!(
            details.run_after, None,
            "{}: a past time holds nothing back",
            case.name
        );

        let later = NewTask {
            run_after: Some(case.minutes(10)),
            ..NewTask::new("later", "later", "worker")
        };
        let later = case.queue.submit(later).await.unwrap().id;
        let details = case.queue.submission_details(later).await.unwrap();
        assert_eq!(details.run_after, Some(case.minutes(10)), "{}", case.name);
        case.clock.advance(chrono::Duration::minutes(10));
        let details = case.queue.submission_details(later).await.unwrap();
        assert_eq!(details.run_after, None, "{}: its time has come", case.name);
        let mut claimed = case.claim().await;
        claimed.sort();
        let mut both = vec![past, later];
        both.sort();
        assert_eq!(claimed, both, "{}", case.name);
    }
}

#[tokio::test]
async fn a_dependent_with_a_run_after_time_waits_for_both_its_dependency_and_its_time() {
    for case in cases().await {
        let a = NewTask::new("A", "a", "worker");
        let b = NewTask {
            dependencies: vec![a.id],
            run_after: Some(case.minutes(10)),
            ..NewTask::new("B", "b", "worker")
        };
        let c = NewTask {
            dependencies: vec![a.id],
            run_after: Some(case.minutes(1)),
            ..NewTask::new("C", "c", "worker")
        };
        let (ia, ib, ic) = (a.id, b.id, c.id);
        case.queue.submit_batch(vec![a, b, c]).await.unwrap();

        // C's time passes while A runs: C still waits for A.
        let attempt = case.queue.claim("w", &[], LEASE, 10).await.unwrap();
        assert_eq!(attempt.len(), 1);
        assert_eq!(attempt[0].task.id, ia);
        case.clock.advance(chrono::Duration::minutes(2));
        assert!(case.claim().await.is_empty(), "{}", case.name);
        let ready = case
            .queue
            .complete(attempt[0].lease.attempt_id, None)
            .await
            .unwrap();
        assert_eq!(ready.outcome.len(), 2, "both are ready");

        // Both are ready; only C's time has come.
        assert_eq!(case.claim().await, vec![ic], "{}", case.name);
        case.clock.advance(chrono::Duration::minutes(8));
        assert_eq!(case.claim().await, vec![ib], "{}", case.name);
    }
}

#[tokio::test]
async fn a_run_after_time_still_holds_after_a_cascaded_failure_and_a_retry() {
    // Retrying the root alone brings the dependent back through the cascade; retrying the
    // dependent first goes through its own retry.
    for retry_dependent_first in [false, true] {
        for case in cases().await {
            let a = NewTask {
                max_retries: 0,
                ..NewTask::new("A", "a", "worker")
            };
            let b = NewTask {
                dependencies: vec![a.id],
                run_after: Some(case.minutes(60)),
                ..NewTask::new("B", "b", "worker")
            };
            let (ia, ib) = (a.id, b.id);
            case.queue.submit_batch(vec![a, b]).await.unwrap();
            let attempt = case.queue.claim("w", &[], LEASE, 1).await.unwrap();
            let failed = case
                .queue
                .fail(attempt[0].lease.attempt_id, "broken")
                .await
                .unwrap();
            assert!(
                format!("{failed:?}").contains(&ib.to_string()),
                "B failed with A"
            );
            if retry_dependent_first {
                case.queue.retry(ib, "human").await.unwrap();
            }
            case.queue.retry(ia, "human").await.unwrap();
            let attempt = case.queue.claim("w", &[], LEASE, 1).await.unwrap();
            assert_eq!(attempt[0].task.id, ia);
            let ready = case
                .queue
                .complete(attempt[0].lease.attempt_id, None)
                .await
                .unwrap();
            assert_eq!(ready.outcome, vec![ib], "{}", case.name);
            assert!(
                case.claim().await.is_empty(),
                "{}: B ran before its time (dependent retried first: {retry_dependent_first})",
                case.name
            );
            case.clock.advance(chrono::Duration::minutes(60));
            assert_eq!(case.claim().await, vec![ib], "{}", case.name);
        }
    }
}

#[tokio::test]
async fn a_run_after_time_outside_the_stored_range_is_refused_with_nothing_stored() {
    for case in cases().await {
        let before = table_dump(case.pool()).await;
        let far = Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap();
        let err = case
            .queue
            .submit(NewTask {
                run_after: Some(far),
                ..NewTask::new("far", "far", "worker")
            })
            .await
            .unwrap_err();
        match err {
            QueueError::Validation(v) => assert_eq!(v.field, "run_after"),
            other => panic!("{}: {other:?}", case.name),
        }
        assert_eq!(table_dump(case.pool()).await, before, "{}", case.name);
    }
}

#[tokio::test]
async fn the_details_of_an_unknown_task_are_not_found() {
    for case in cases().await {
        let id = Uuid::new_v4();
        assert!(matches!(
            case.queue.submission_details(id).await,
            Err(QueueError::TaskNotFound(missing)) if missing == id
        ));
    }
}

#[tokio::test]
async fn concurrent_submissions_of_one_key_from_separate_connections_make_one_task() {
    // Each submitter opens the file on its own, as separate processes do; they all start
    // together and race for the key.
    let (dir, db) = file_db().await;
    let url = format!("sqlite:{}", dir.path().join("abathur.db").display());
    let mut queues = Vec::new();
    for i in 0..8 {
        let db = DatabaseConnection::new(&url).await.unwrap();
        let store: Arc<dyn QueueStore> = if i % 2 == 0 {
            Arc::new(GroupCommitQueueStore::new(db.pool().clone()))
        } else {
            Arc::new(QueueStoreImpl::new(db.pool().clone()))
        };
        queues.push((db, TaskQueue::new(store)));
    }
    let start = Arc::new(tokio::sync::Barrier::new(queues.len()));
    let mut handles = Vec::new();
    for (_, queue) in &queues {
        let queue = queue.clone();
        let start = start.clone();
        handles.push(tokio::spawn(async move {
            start.wait().await;
            queue.submit_keyed(keyed("A", "race")).await.unwrap()
        }));
    }
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.unwrap());
    }
    let made: Vec<&Submitted> = results.iter().filter(|s| !s.existing).collect();
    assert_eq!(made.len(), 1, "exactly one submission made the task");
    assert!(results.iter().all(|s| s.task.id == made[0].task.id));
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tasks")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(count, 1);
}
