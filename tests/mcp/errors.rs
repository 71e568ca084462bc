//! Bad arguments come back as tool errors in the user's terms, and the server keeps serving.

use serde_json::json;

use crate::client::{enqueue, Store};
use crate::lifecycle::RawSession;

#[tokio::test]
async fn bad_arguments_are_tool_errors_and_the_server_keeps_answering() {
    let store = Store::new();
    let s = store.connect().await;
    let real = enqueue(&s, "a real task", &[]).await;
    let unknown = uuid::Uuid::new_v4().to_string();

    let cases = [
        // Unknown ids.
        (
            "task_get",
            json!({ "task_id": unknown }),
            "not_found",
            "was not found",
        ),
        (
            "task_cancel",
            json!({ "task_id": unknown }),
            "not_found",
            "was not found",
        ),
        (
            "task_complete",
            json!({ "attempt_id": unknown }),
            "not_found",
            "no attempt",
        ),
        (
            "task_heartbeat",
            json!({ "attempt_id": unknown }),
            "not_found",
            "no attempt",
        ),
        (
            "task_enqueue",
            json!({ "description": "x", "depends_on": [unknown] }),
            "not_found",
            "does not exist",
        ),
        // Malformed values.
        (
            "task_get",
            json!({ "task_id": "not-a-uuid" }),
            "invalid_argument",
            "task_id",
        ),
        (
            "task_enqueue",
            json!({ "description": "x", "depends_on": [real, "12345"] }),
            "invalid_argument",
            "depends_on",
        ),
        (
            "task_enqueue",
            json!({ "description": "x", "deadline": "next tuesday" }),
            "invalid_argument",
            "RFC 3339",
        ),
        // Arguments of the wrong JSON type, missing, or unknown.
        (
            "task_enqueue",
            json!({ "description": "x", "max_retries": "three" }),
            "invalid_argument",
            "invalid type",
        ),
        (
            "task_enqueue",
            json!({ "summary": "no description" }),
            "invalid_argument",
            "description",
        ),
        (
            "task_get",
            json!({ "id": real }),
            "invalid_argument",
            "unknown field",
        ),
        (
            "task_list",
            json!({ "status": "sleeping" }),
            "invalid_argument",
            "sleeping",
        ),
        // Values that break a rule.
        (
            "task_enqueue",
            json!({ "description": "x", "priority": 11 }),
            "invalid_argument",
            "priority",
        ),
        (
            "task_enqueue",
            json!({ "description": "x", "summary": "s".repeat(141) }),
            "invalid_argument",
            "summary",
        ),
        (
            "task_claim",
            json!({ "worker_id": " " }),
            "invalid_argument",
            "worker_id",
        ),
        (
            "task_claim",
            json!({ "worker_id": "w", "lease_seconds": 0 }),
            "invalid_argument",
            "lease",
        ),
        (
            "task_list",
            json!({ "limit": 100000 }),
            "invalid_argument",
            "limit",
        ),
        (
            "memory_add",
            json!({ "namespace": "", "key": "k", "value": 1 }),
            "invalid_argument",
            "namespace",
        ),
        (
            "session_set_state",
            json!({ "session_id": unknown, "key": "k", "value": 1 }),
            "not_found",
            "session",
        ),
    ];
    for (tool, arguments, kind, fragment) in cases {
        let (got_kind, message) = s.call_err(tool, arguments.clone()).await;
        assert_eq!(got_kind, kind, "{tool} {arguments}: {message}");
        assert!(
            message.contains(fragment),
            "{tool} {arguments}: {message:?} should mention {fragment:?}"
        );
        assert!(
            !message.to_lowercase().contains("sql"),
            "{tool}: the message leaks the store: {message}"
        );
    }

    // Still serving, and nothing was written by the failed calls.
    let listed = s.call("task_list", json!({})).await;
    assert_eq!(listed["tasks"].as_array().unwrap().len(), 1, "{listed}");
    enqueue(&s, "after the errors", &[&real]).await;
    assert!(s.close().await.success());
}

#[tokio::test]
async fn an_unknown_tool_is_a_protocol_error_and_the_server_keeps_answering() {
    let store = Store::new();
    let s = store.connect().await;
    let params = rmcp::model::CallToolRequestParams::new("task_teleport");
    let err = s
        .client
        .call_tool(params)
        .await
        .expect_err("an unknown tool is refused");
    assert!(err.to_string().contains("task_teleport"), "{err}");
    enqueue(&s, "still here", &[]).await;
    assert!(s.close().await.success());
}

#[tokio::test]
async fn a_line_that_is_not_json_is_answered_with_a_parse_error_and_the_next_request_too() {
    let store = Store::new();
    let mut raw = RawSession::start(&store).await;
    raw.send_line("{\"jsonrpc\": \"2.0\", \"id\": 7, \"method\": ")
        .await;
    raw.send_line("this is not JSON at all").await;
    for _ in 0..2 {
        let answer = raw.next_message().await;
        assert_eq!(answer["error"]["code"], -32700, "{answer}");
        assert_eq!(answer["id"], serde_json::Value::Null, "{answer}");
    }
    let reply = raw
        .request(
            "tools/call",
            json!({ "name": "task_enqueue", "arguments": { "description": "after the garbage" } }),
        )
        .await;
    assert_eq!(reply["result"]["isError"], false, "{reply}");
    assert!(raw.finish().await.success());
}
