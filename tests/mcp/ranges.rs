//! Issue 10, items 1, 4, 9 and 15 over MCP: the same ranges and limits as the CLI, refused as
//! `invalid_argument` with the same message on either side of a range, and nothing written.

use abathur::domain::limits;
use serde_json::json;

use crate::client::{open_db, Store};

async fn row_counts(store: &Store) -> Vec<i64> {
    let pool = open_db(&store.db_path()).await;
    let mut counts = Vec::new();
    for table in ["tasks", "task_events", "memories", "sessions"] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&pool)
            .await
            .unwrap();
        counts.push(n);
    }
    pool.close().await;
    counts
}

#[tokio::test]
async fn out_of_range_numbers_deadlines_sizes_and_blank_names_are_invalid_arguments() {
    let store = Store::new();
    let s = store.connect().await;
    s.call("task_list", json!({})).await;
    let before = row_counts(&store).await;

    // Both sides of a range: the same message but for the number.
    let ranges = [
        (
            "task_enqueue",
            "priority",
            json!({ "description": "x" }),
            [-1, 11],
            "0 to 10",
        ),
        (
            "task_enqueue",
            "timeout_seconds",
            json!({ "description": "x" }),
            [-1, 0],
            "1 to 4294967295",
        ),
        ("task_list", "limit", json!({}), [0, 1001], "1 to 1000"),
        ("task_list", "min_priority", json!({}), [-1, 11], "0 to 10"),
        (
            "task_claim",
            "max",
            json!({ "worker_id": "w" }),
            [0, 1001],
            "1 to 1000",
        ),
        (
            "task_claim",
            "lease_seconds",
            json!({ "worker_id": "w" }),
            [0, 86401],
            "1 to 86400",
        ),
        (
            "memory_search",
            "limit",
            json!({ "prefix": "" }),
            [0, 1001],
            "1 to 1000",
        ),
        (
            "task_execution_plan",
            "limit",
            json!({}),
            [0, 1001],
            "1 to 1000",
        ),
        (
            "task_queue_status",
            "running_limit",
            json!({}),
            [-1, 1001],
            "0 to 1000",
        ),
    ];
    for (tool, field, base, values, range) in ranges {
        let mut messages = Vec::new();
        for value in values {
            let mut arguments = base.clone();
            arguments[field] = json!(value);
            let (kind, message) = s.call_err(tool, arguments).await;
            assert_eq!(
                kind, "invalid_argument",
                "{tool} {field}={value}: {message}"
            );
            assert!(
                message.contains(field) && message.contains(&format!("{value} is outside {range}")),
                "{tool} {field}={value}: {message}"
            );
            messages.push(message.replacen(&value.to_string(), "N", 1));
        }
        assert_eq!(messages[0], messages[1], "{tool} {field}");
    }

    let refused = [
        (
            "task_enqueue",
            json!({ "description": "x", "deadline": "2020-01-01T00:00:00Z" }),
            "is not in the future",
        ),
        (
            "task_enqueue",
            json!({ "description": "x", "deadline": "9999-12-31T23:59:59.9999Z" }),
            "9999-12-31T23:59:59Z",
        ),
        (
            "task_list",
            json!({ "submitted_after": "9999-12-31T23:59:59.9999Z" }),
            "9999-12-31T23:59:59Z",
        ),
        (
            "task_enqueue",
            json!({ "description": "x", "feature_branch": "" }),
            "feature_branch",
        ),
        (
            "task_enqueue",
            json!({ "description": "x", "agent_type": " " }),
            "agent_type",
        ),
        (
            "task_claim",
            json!({ "worker_id": "w", "agent_types": [""] }),
            "agent_type",
        ),
        (
            "task_enqueue",
            json!({ "description": "d".repeat(limits::MAX_DESCRIPTION_BYTES + 1) }),
            "description",
        ),
        (
            "memory_add",
            json!({ "namespace": "n", "key": "k", "value": "v".repeat(limits::MAX_MEMORY_VALUE_BYTES) }),
            "value",
        ),
    ];
    for (tool, arguments, fragment) in refused {
        let (kind, message) = s.call_err(tool, arguments.clone()).await;
        assert_eq!(kind, "invalid_argument", "{tool}: {message}");
        assert!(message.contains(fragment), "{tool}: {message}");
    }
    assert!(s.close().await.success());
    assert_eq!(row_counts(&store).await, before);
}
