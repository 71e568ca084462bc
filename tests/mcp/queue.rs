//! The task-queue tools, end to end: a DAG enqueued, claimed, completed and inspected.

use serde_json::{json, Value};

use crate::client::{enqueue, id_of, Store};

fn ids(value: &Value) -> Vec<String> {
    let mut ids: Vec<String> = value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|v| v.as_str().expect("an id").to_string())
        .collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test]
async fn a_diamond_runs_in_dependency_order_and_completing_releases_the_dependents() {
    let store = Store::new();
    let s = store.connect().await;
    let a = enqueue(&s, "fetch the sources", &[]).await;
    let b = enqueue(&s, "build the library", &[&a]).await;
    let c = enqueue(&s, "build the docs", &[&a]).await;
    let d = enqueue(&s, "publish", &[&b, &c]).await;

    let plan = s.call("task_execution_plan", json!({})).await;
    let stages: Vec<(String, u64)> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| {
            (
                step["task_id"].as_str().unwrap().to_string(),
                step["stage"].as_u64().unwrap(),
            )
        })
        .collect();
    let stage_of = |id: &str| stages.iter().find(|(t, _)| t == id).map(|(_, s)| *s);
    assert_eq!(
        [stage_of(&a), stage_of(&b), stage_of(&c), stage_of(&d)],
        [Some(0), Some(1), Some(1), Some(2)],
        "{plan}"
    );

    // Only the root is ready, however many are asked for.
    let claimed = s
        .call("task_claim", json!({ "worker_id": "w1", "max": 5 }))
        .await;
    let claimed = claimed["claimed"].as_array().unwrap().clone();
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    assert_eq!(id_of(&claimed[0]["task"]), a);
    let attempt = claimed[0]["lease"]["attempt_id"]
        .as_str()
        .unwrap()
        .to_string();

    let lease = s
        .call(
            "task_heartbeat",
            json!({ "attempt_id": attempt, "lease_seconds": 600 }),
        )
        .await;
    assert_eq!(lease["task_id"], a.as_str());

    let done = s
        .call(
            "task_complete",
            json!({ "attempt_id": attempt, "result": { "files": 3 } }),
        )
        .await;
    assert_eq!(ids(&done["ready"]), sorted(vec![b.clone(), c.clone()]));
    let a_task = s.call("task_get", json!({ "task_id": a })).await;
    assert_eq!(a_task["status"], "completed");
    assert_eq!(a_task["result_data"], json!({ "files": 3 }));

    let claimed = s
        .call("task_claim", json!({ "worker_id": "w2", "max": 5 }))
        .await;
    let claimed = claimed["claimed"].as_array().unwrap().clone();
    assert_eq!(
        sorted(claimed.iter().map(|c| id_of(&c["task"])).collect()),
        sorted(vec![b.clone(), c.clone()])
    );
    let mut released = Vec::new();
    for claim in &claimed {
        let done = s
            .call(
                "task_complete",
                json!({ "attempt_id": claim["lease"]["attempt_id"] }),
            )
            .await;
        released.extend(ids(&done["ready"]));
    }
    assert_eq!(released, vec![d.clone()], "the last of B and C releases D");

    let status = s.call("task_queue_status", json!({})).await;
    assert_eq!(status["counts"]["completed"], 3, "{status}");
    assert_eq!(status["counts"]["ready"], 1, "{status}");
    let ready = s.call("task_list", json!({ "status": "ready" })).await;
    assert_eq!(
        ready["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(id_of)
            .collect::<Vec<_>>(),
        vec![d.clone()]
    );
    assert!(s.close().await.success());
}

#[tokio::test]
async fn every_submit_option_is_stored_on_the_task() {
    let store = Store::new();
    let s = store.connect().await;
    let parent = enqueue(&s, "the epic", &[]).await;
    let session = s
        .call(
            "session_create",
            json!({ "app_name": "tests", "user_id": "u1" }),
        )
        .await;
    let task = s
        .call(
            "task_enqueue",
            json!({
                "description": "Write the parser\nwith tests",
                "agent_type": "rust",
                "priority": 9,
                "parent": parent,
                "session": session["id"],
                "deadline": "2030-01-31T17:00:00+01:00",
                "input": { "files": ["a.rs"], "strict": true },
                "max_retries": 1,
                "timeout_seconds": 120,
                "estimated_duration_seconds": 60,
                "feature_branch": "feature/parser",
                "task_branch": "task/parser-1",
                "created_by": "planner-7",
                "source": "agent_requirements",
                "dependency_type": "parallel",
            }),
        )
        .await;
    let stored = s.call("task_get", json!({ "task_id": id_of(&task) })).await;
    assert_eq!(
        stored["summary"], "Write the parser",
        "the first line by default"
    );
    assert_eq!(stored["agent_type"], "rust");
    assert_eq!(stored["priority"], 9);
    assert_eq!(stored["parent_task_id"], parent.as_str());
    assert_eq!(stored["session_id"], session["id"]);
    assert_eq!(stored["deadline"], "2030-01-31T16:00:00Z");
    assert_eq!(
        stored["input_data"],
        json!({ "files": ["a.rs"], "strict": true })
    );
    assert_eq!(stored["max_retries"], 1);
    assert_eq!(stored["max_execution_timeout_seconds"], 120);
    assert_eq!(stored["estimated_duration_seconds"], 60);
    assert_eq!(stored["feature_branch"], "feature/parser");
    assert_eq!(stored["task_branch"], "task/parser-1");
    assert_eq!(stored["created_by"], "planner-7");
    assert_eq!(stored["source"], "agent_requirements");
    assert_eq!(stored["dependency_type"], "parallel");

    let listed = s
        .call(
            "task_list",
            json!({ "feature_branch": "feature/parser", "parent_task_id": parent, "min_priority": 9 }),
        )
        .await;
    assert_eq!(
        listed["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(id_of)
            .collect::<Vec<_>>(),
        [id_of(&task)]
    );
    assert!(s.close().await.success());
}

#[tokio::test]
async fn a_failed_attempt_is_retried_and_a_cancel_takes_the_dependents_along() {
    let store = Store::new();
    let s = store.connect().await;
    let flaky = s
        .call(
            "task_enqueue",
            json!({ "description": "flaky", "max_retries": 2 }),
        )
        .await;
    let claimed = s.call("task_claim", json!({ "worker_id": "w" })).await;
    let attempt = claimed["claimed"][0]["lease"]["attempt_id"].clone();
    let outcome = s
        .call(
            "task_fail",
            json!({ "attempt_id": attempt, "error": "network down" }),
        )
        .await;
    assert_eq!(outcome["outcome"], "retrying", "{outcome}");
    assert_eq!(outcome["retry_count"], 1);
    let (kind, _) = s
        .call_err("task_complete", json!({ "attempt_id": attempt }))
        .await;
    assert_eq!(kind, "conflict", "a finished attempt's lease is lost");
    // The same task_fail again, as a client that lost the answer sends it: a success that says
    // it was already recorded, with the recorded outcome.
    let repeat = s
        .call(
            "task_fail",
            json!({ "attempt_id": attempt, "error": "network down" }),
        )
        .await;
    assert_eq!(repeat["already_recorded"], true, "{repeat}");
    assert_eq!(repeat["outcome"], "retrying");
    assert_eq!(repeat["retry_count"], 1);
    assert_eq!(repeat["run_after"], outcome["run_after"]);
    assert_eq!(outcome["already_recorded"], false);

    let root = enqueue(&s, "root", &[]).await;
    let child = enqueue(&s, "after root", &[&root]).await;
    let cancelled = s.call("task_cancel", json!({ "task_id": root })).await;
    assert_eq!(
        ids(&cancelled["cancelled"]),
        sorted(vec![root.clone(), child.clone()])
    );
    let (kind, message) = s.call_err("task_cancel", json!({ "task_id": root })).await;
    assert_eq!(kind, "conflict");
    assert!(message.contains("cancelled"), "{message}");
    assert_eq!(
        s.call("task_get", json!({ "task_id": id_of(&flaky) }))
            .await["status"],
        "ready"
    );
    assert!(s.close().await.success());
}
