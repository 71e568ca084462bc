//! The session tools: create, append events, and read and write state.

use serde_json::json;

use crate::client::Store;

#[tokio::test]
async fn a_session_keeps_its_events_in_order_and_its_state_key_by_key() {
    let store = Store::new();
    let s = store.connect().await;
    let session = s
        .call(
            "session_create",
            json!({ "app_name": "swarm", "user_id": "u1", "project_id": "p", "state": { "phase": "plan" } }),
        )
        .await;
    let id = session["id"].as_str().unwrap().to_string();
    assert_eq!(session["state"], json!({ "phase": "plan" }));

    for (n, text) in ["hello", "world"].iter().enumerate() {
        let event = s
            .call(
                "session_append_event",
                json!({ "session_id": id, "event_type": "message", "actor": "agent", "content": { "text": text } }),
            )
            .await;
        assert_eq!(event["sequence"], n as u64 + 1);
    }

    s.call(
        "session_set_state",
        json!({ "session_id": id, "key": "phase", "value": "build" }),
    )
    .await;
    s.call(
        "session_set_state",
        json!({ "session_id": id, "key": "done", "value": [1, 2] }),
    )
    .await;
    let one = s
        .call(
            "session_get_state",
            json!({ "session_id": id, "key": "phase" }),
        )
        .await;
    assert_eq!(one["found"], true);
    assert_eq!(one["value"], "build");
    let unset = s
        .call(
            "session_get_state",
            json!({ "session_id": id, "key": "nothing" }),
        )
        .await;
    assert_eq!(unset["found"], false);
    assert_eq!(unset["value"], json!(null));
    let all = s
        .call("session_get_state", json!({ "session_id": id }))
        .await;
    assert_eq!(all["state"], json!({ "phase": "build", "done": [1, 2] }));

    let (kind, _) = s
        .call_err(
            "session_append_event",
            json!({ "session_id": uuid::Uuid::new_v4(), "event_type": "m", "actor": "a", "content": 1 }),
        )
        .await;
    assert_eq!(kind, "not_found");
    assert!(s.close().await.success());
}
