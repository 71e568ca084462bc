//! The handshake and the tool list.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::client::Store;

const TOOLS: [&str; 20] = [
    "memory_add",
    "memory_delete",
    "memory_get",
    "memory_history",
    "memory_search",
    "memory_update",
    "session_append_event",
    "session_create",
    "session_get_state",
    "session_set_state",
    "task_cancel",
    "task_claim",
    "task_complete",
    "task_enqueue",
    "task_execution_plan",
    "task_fail",
    "task_get",
    "task_heartbeat",
    "task_list",
    "task_queue_status",
];

#[tokio::test]
async fn the_server_introduces_itself_as_abathur_with_the_crate_version() {
    let store = Store::new();
    let session = store.connect().await;
    let info = session
        .client
        .peer_info()
        .expect("the server's initialize result");
    let server = info.server_info.as_ref().expect("the server names itself");
    assert_eq!(server.name, "abathur");
    assert_eq!(server.version, env!("CARGO_PKG_VERSION"));
    assert!(info.capabilities.tools.is_some(), "tools are advertised");
    assert!(session.close().await.success());
}

#[tokio::test]
async fn all_twenty_tools_are_listed_with_a_description_and_an_object_schema() {
    let store = Store::new();
    let session = store.connect().await;
    let tools = session.client.list_all_tools().await.expect("tools/list");
    let names: BTreeSet<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, TOOLS.into_iter().collect::<BTreeSet<_>>());
    for tool in &tools {
        let description = tool.description.as_deref().unwrap_or_default();
        assert!(
            description.len() > 20,
            "{} has no real description",
            tool.name
        );
        let schema = Value::Object((*tool.input_schema).clone());
        assert_eq!(schema["type"], "object", "{}: {schema}", tool.name);
        assert_eq!(
            schema["additionalProperties"], false,
            "{} refuses unknown arguments",
            tool.name
        );
    }
    assert!(session.close().await.success());
}

#[tokio::test]
async fn only_the_arguments_without_a_default_are_required() {
    let store = Store::new();
    let session = store.connect().await;
    let tools = session.client.list_all_tools().await.expect("tools/list");
    let required = |name: &str| -> Vec<String> {
        let tool = tools.iter().find(|t| t.name == name).expect(name);
        let schema = Value::Object((*tool.input_schema).clone());
        let mut required: Vec<String> = schema["required"]
            .as_array()
            .map(|r| r.iter().map(|v| v.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        required.sort();
        required
    };
    assert_eq!(required("task_enqueue"), ["description"]);
    assert_eq!(required("task_list"), Vec::<String>::new());
    assert_eq!(required("task_claim"), ["worker_id"]);
    assert_eq!(required("task_complete"), ["attempt_id"]);
    assert_eq!(required("memory_add"), ["key", "namespace", "value"]);
    assert_eq!(required("session_get_state"), ["session_id"]);

    let enqueue = tools.iter().find(|t| t.name == "task_enqueue").unwrap();
    let schema = Value::Object((*enqueue.input_schema).clone());
    assert_eq!(
        schema["properties"]["depends_on"]["items"]["format"],
        "uuid"
    );
    assert_eq!(schema["properties"]["deadline"]["format"], "date-time");
    let statuses = &tools
        .iter()
        .find(|t| t.name == "task_list")
        .unwrap()
        .input_schema;
    assert!(
        Value::Object((**statuses).clone())["properties"]["status"]["enum"]
            .as_array()
            .unwrap()
            .contains(&Value::from("ready")),
        "the status filter lists the statuses"
    );
    assert!(session.close().await.success());
}
