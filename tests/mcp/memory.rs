//! The memory tools: add, read back, search, update, history and delete.

use serde_json::json;

use crate::client::Store;

#[tokio::test]
async fn a_memory_is_added_read_back_found_updated_and_its_history_kept() {
    let store = Store::new();
    let s = store.connect().await;
    let added = s
        .call(
            "memory_add",
            json!({
                "namespace": "project/conventions",
                "key": "style",
                "value": { "indent": 4 },
                "memory_type": "procedural",
                "metadata": { "source": "review" },
                "created_by": "agent-1",
            }),
        )
        .await;
    assert_eq!(added["version"], 1);
    s.call(
        "memory_add",
        json!({ "namespace": "project/facts", "key": "lang", "value": "rust" }),
    )
    .await;
    s.call(
        "memory_add",
        json!({ "namespace": "other", "key": "x", "value": 1 }),
    )
    .await;

    let got = s
        .call(
            "memory_get",
            json!({ "namespace": "project/conventions", "key": "style" }),
        )
        .await;
    assert_eq!(got["value"], json!({ "indent": 4 }));
    assert_eq!(got["memory_type"], "procedural");
    assert_eq!(got["created_by"], "agent-1");

    let found = s
        .call("memory_search", json!({ "prefix": "project/" }))
        .await;
    let keys: Vec<&str> = found["memories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["style", "lang"]);
    let found = s
        .call(
            "memory_search",
            json!({ "prefix": "project/", "memory_type": "semantic" }),
        )
        .await;
    assert_eq!(found["memories"].as_array().unwrap().len(), 1);

    let updated = s
        .call(
            "memory_update",
            json!({ "namespace": "project/conventions", "key": "style", "value": { "indent": 2 } }),
        )
        .await;
    assert_eq!(updated["version"], 2);
    let (kind, _) = s
        .call_err(
            "memory_add",
            json!({ "namespace": "project/conventions", "key": "style", "value": 0 }),
        )
        .await;
    assert_eq!(kind, "conflict", "a live key cannot be added again");

    let deleted = s
        .call(
            "memory_delete",
            json!({ "namespace": "project/conventions", "key": "style" }),
        )
        .await;
    assert_eq!(deleted["deleted"], true);
    let (kind, _) = s
        .call_err(
            "memory_get",
            json!({ "namespace": "project/conventions", "key": "style" }),
        )
        .await;
    assert_eq!(kind, "not_found");
    let first = s
        .call(
            "memory_get",
            json!({ "namespace": "project/conventions", "key": "style", "version": 1 }),
        )
        .await;
    assert_eq!(first["value"], json!({ "indent": 4 }));

    let history = s
        .call(
            "memory_history",
            json!({ "namespace": "project/conventions", "key": "style" }),
        )
        .await;
    let versions: Vec<_> = history["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap(),
                v["value"]["indent"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(versions, [(1, 4), (2, 2)]);
    let (kind, _) = s
        .call_err(
            "memory_history",
            json!({ "namespace": "nowhere", "key": "nothing" }),
        )
        .await;
    assert_eq!(kind, "not_found");
    assert!(s.close().await.success());
}
