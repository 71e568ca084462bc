//! Input PostgreSQL cannot store, met by the queue: refused as invalid input, with nothing
//! changed, as the queue refuses any other invalid input.

use std::sync::Arc;
use std::time::Duration;

use abathur_core::models::TaskStatus;
use abathur_core::queue::{NewTask, QueueError, TaskQueue};
use abathur_postgres::testing::TestDatabase;
use abathur_postgres::{PgConfig, PgQueueStore};
use serde_json::json;

#[tokio::test]
async fn a_result_holding_a_nul_character_is_invalid_input_and_the_attempt_stays_open() {
    let (_test, db) = TestDatabase::migrated(PgConfig::default()).await;
    let queue = TaskQueue::new(Arc::new(PgQueueStore::new(db.pool().clone())));
    let task = queue
        .submit(NewTask::new("nul", "a result with a NUL", "worker"))
        .await
        .expect("submit");
    let claimed = queue
        .claim("w", &[], Duration::from_secs(60), 1)
        .await
        .expect("claim");
    let attempt = claimed[0].lease.attempt_id;
    let refused = queue
        .complete(attempt, Some(json!({ "out": "x\u{0}y" })))
        .await;
    assert!(
        matches!(refused, Err(QueueError::Validation(_))),
        "{refused:?}"
    );
    // Nothing changed: the attempt is still open, and a result the server can store completes it.
    let history = queue.history(task.id).await.expect("history");
    assert_eq!(history.last().map(|e| e.to), Some(TaskStatus::Running));
    queue
        .complete(attempt, Some(json!({ "out": "xy" })))
        .await
        .expect("complete");
}
