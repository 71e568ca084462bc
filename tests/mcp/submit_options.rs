//! `idempotency_key` and `run_after` on `task_enqueue`: a retried call returns the task it made,
//! a different task under the same key is a conflict, and a delayed task is not claimed before
//! its time.

use std::sync::Arc;
use std::time::Duration;

use abathur::domain::clock::Clock;
use abathur::domain::queue::TaskQueue;
use abathur::infrastructure::database::{DatabaseConnection, QueueStoreImpl};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::client::{id_of, Store};

/// A clock stopped at one instant.
#[derive(Debug)]
struct At(DateTime<Utc>);

impl Clock for At {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

/// The ids a worker whose clock reads `at` would claim from the store.
async fn claim_at(store: &Store, at: DateTime<Utc>) -> Vec<String> {
    let url = format!("sqlite:{}", store.db_path().display());
    let db = DatabaseConnection::new(&url).await.unwrap();
    let queue = TaskQueue::new(Arc::new(QueueStoreImpl::new(db.pool().clone())))
        .with_clock(Arc::new(At(at)));
    let claimed = queue
        .claim("test", &[], Duration::from_secs(60), 10)
        .await
        .unwrap();
    db.close().await;
    claimed.into_iter().map(|c| c.task.id.to_string()).collect()
}

fn tasks(list: &Value) -> usize {
    list["tasks"].as_array().unwrap().len()
}

#[tokio::test]
async fn an_enqueue_retried_with_its_idempotency_key_returns_the_task_it_made() {
    let store = Store::new();
    let s = store.connect().await;
    let args = json!({"description": "build", "input": {"a": 1}, "idempotency_key": "call-7"});
    let first = s.call("task_enqueue", args.clone()).await;
    assert_eq!(first["existing"], false);
    assert_eq!(first["idempotency_key"], "call-7");
    let got = s.call("task_get", json!({"task_id": id_of(&first)})).await;
    assert_eq!(got["idempotency_key"], "call-7");
    assert!(got.get("existing").is_none(), "{got}");
    let again = s.call("task_enqueue", args).await;
    assert_eq!(again["existing"], true);
    assert_eq!(id_of(&again), id_of(&first));

    let (kind, message) = s
        .call_err(
            "task_enqueue",
            json!({"description": "build", "input": {"a": 2}, "idempotency_key": "call-7"}),
        )
        .await;
    assert_eq!(kind, "conflict");
    assert!(
        message.contains("\"call-7\"") && message.contains(&id_of(&first)),
        "{message}"
    );
    let (kind, message) = s
        .call_err(
            "task_enqueue",
            json!({"description": "build", "idempotency_key": ""}),
        )
        .await;
    assert_eq!(kind, "invalid_argument");
    assert!(message.contains("idempotency_key"), "{message}");
    assert_eq!(tasks(&s.call("task_list", json!({})).await), 1);
}

#[tokio::test]
async fn two_servers_enqueuing_one_key_at_once_make_one_task() {
    let store = Store::new();
    let (a, b) = tokio::join!(store.connect(), store.connect());
    let args = json!({"description": "once", "idempotency_key": "race"});
    let (x, y) = tokio::join!(
        a.call("task_enqueue", args.clone()),
        b.call("task_enqueue", args.clone())
    );
    assert_eq!(id_of(&x), id_of(&y));
    assert_ne!(x["existing"], y["existing"], "one made it, one found it");
    assert_eq!(tasks(&a.call("task_list", json!({})).await), 1);
}

#[tokio::test]
async fn a_task_enqueued_with_run_after_is_not_claimed_until_then() {
    let store = Store::new();
    let s = store.connect().await;
    let task = s
        .call(
            "task_enqueue",
            json!({"description": "later", "run_after": "+1h"}),
        )
        .await;
    let id = id_of(&task);
    let run_after: DateTime<Utc> = task["run_after"].as_str().unwrap().parse().unwrap();
    let got = s.call("task_get", json!({"task_id": id})).await;
    assert_eq!(got["run_after"], task["run_after"]);
    let claimed = s.call("task_claim", json!({"worker_id": "w1"})).await;
    assert_eq!(claimed["claimed"], json!([]));
    assert!(claim_at(&store, run_after - chrono::Duration::seconds(1))
        .await
        .is_empty());
    assert_eq!(claim_at(&store, run_after).await, vec![id]);

    let past = s
        .call(
            "task_enqueue",
            json!({"description": "now", "run_after": "2020-01-01T00:00:00Z"}),
        )
        .await;
    let claimed = s.call("task_claim", json!({"worker_id": "w1"})).await;
    assert_eq!(id_of(&claimed["claimed"][0]["task"]), id_of(&past));
}

#[tokio::test]
async fn an_invalid_run_after_is_refused_with_nothing_stored() {
    let store = Store::new();
    let s = store.connect().await;
    for bad in ["soon", "+9000years"] {
        let (kind, message) = s
            .call_err(
                "task_enqueue",
                json!({"description": "x", "run_after": bad}),
            )
            .await;
        assert_eq!(kind, "invalid_argument", "{bad}: {message}");
        assert!(message.contains("run_after"), "{bad}: {message}");
    }
    assert_eq!(tasks(&s.call("task_list", json!({})).await), 0);
}
