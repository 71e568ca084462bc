//! The JSON API: what the CLI wrote is what it shows, its actions reach the CLI, bad input gets
//! a clear error and changes nothing, and the event stream says when to look again.

use futures_util::StreamExt;
use serde_json::Value;

use crate::server::{assert_error, Store, PATIENCE};

fn counts(overview: &Value) -> Vec<(String, u64)> {
    overview["counts"]
        .as_object()
        .expect("counts")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().expect("a count")))
        .collect()
}

#[tokio::test]
async fn the_api_shows_what_the_cli_submitted_and_a_cancel_reaches_the_cli() {
    let store = Store::new();
    let first = store.submit("fetch the sources", &[]);
    let second = store.submit("build", &[&first]);
    let served = store.serve(&[]).await;

    let overview = served.get_json("/api/v1/overview", 200).await;
    assert_eq!(overview["counts"]["ready"], 1, "{overview}");
    assert_eq!(overview["counts"]["blocked"], 1, "{overview}");
    assert_eq!(overview["oldest_ready"]["id"], first.as_str());
    assert_eq!(overview["read_only"], false);

    let page = served.get_json("/api/v1/tasks?status=blocked", 200).await;
    let tasks = page["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 1, "{page}");
    assert_eq!(tasks[0]["id"], second.as_str());
    assert!(page["next_offset"].is_null(), "{page}");

    let detail = served
        .get_json(&format!("/api/v1/tasks/{second}"), 200)
        .await;
    assert_eq!(detail["task"]["summary"], "build");
    assert_eq!(detail["waits_for"][0]["id"], first.as_str());
    assert_eq!(detail["history"][0]["to"], "blocked", "{detail}");
    let detail = served
        .get_json(&format!("/api/v1/tasks/{first}"), 200)
        .await;
    assert_eq!(detail["needed_by"][0]["id"], second.as_str());
    assert_eq!(detail["needed_by_total"], 1);

    // The dialog's preview, then the action.
    let reach = served
        .get_json(&format!("/api/v1/tasks/{first}/reach?action=cancel"), 200)
        .await;
    assert_eq!(reach["allowed"], true, "{reach}");
    assert_eq!(reach["others"], 1, "{reach}");
    let retry = served
        .get_json(&format!("/api/v1/tasks/{first}/reach?action=retry"), 200)
        .await;
    assert_eq!(retry["allowed"], false, "{retry}");
    assert!(retry["reason"]
        .as_str()
        .unwrap()
        .contains("only a failed task"));

    let outcome = served
        .post_json(&format!("/api/v1/tasks/{first}/cancel"), 200)
        .await;
    assert_eq!(outcome["changed"].as_array().unwrap().len(), 2, "{outcome}");
    assert_eq!(store.show(&first)["status"], "cancelled");
    assert_eq!(store.show(&second)["status"], "cancelled");
    let history = store.cli(&["task", "history", &first]);
    assert!(history.contains("dashboard"), "{history}");
    // The last hour's chart counts both, in the current minute or the one before.
    let overview = served.get_json("/api/v1/overview", 200).await;
    let minutes = overview["finished_per_minute"].as_array().unwrap();
    assert_eq!(minutes.len(), 60, "{overview}");
    let cancelled: u64 = minutes
        .iter()
        .map(|m| m["cancelled"].as_u64().unwrap())
        .sum();
    assert_eq!(cancelled, 2, "{overview}");

    // Cancelling again is a conflict, and changes nothing.
    let again = served
        .post_json(&format!("/api/v1/tasks/{first}/cancel"), 409)
        .await;
    assert_error(&again, "conflict", "it is cancelled");
    served.stop().await;
}

#[tokio::test]
async fn a_failed_task_is_retried_through_the_api() {
    let store = Store::new();
    let task = store.cli(&["task", "submit", "flaky", "--max-retries", "0"]);
    let claimed = store.cli(&["--json", "task", "claim", "--worker", "w"]);
    let claimed: Value = serde_json::from_str(&claimed).expect("JSON");
    let attempt = claimed[0]["lease"]["attempt_id"]
        .as_str()
        .expect("an attempt")
        .to_string();
    store.cli(&["task", "fail", &attempt, "--error", "boom"]);
    assert_eq!(store.show(&task)["status"], "failed");

    let served = store.serve(&[]).await;
    let reach = served
        .get_json(&format!("/api/v1/tasks/{task}/reach?action=retry"), 200)
        .await;
    assert_eq!(reach["allowed"], true, "{reach}");
    let outcome = served
        .post_json(&format!("/api/v1/tasks/{task}/retry"), 200)
        .await;
    assert_eq!(outcome["action"], "retry", "{outcome}");
    assert_eq!(store.show(&task)["status"], "ready");
    served.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let store = Store::new();
    let task = store.submit("keep me", &[]);
    let served = store.serve(&[]).await;
    let before = counts(&served.get_json("/api/v1/overview", 200).await);

    let long_search = format!("/api/v1/tasks?q={}", "x".repeat(141));
    for (path, needle) in [
        (long_search.as_str(), "141 characters"),
        ("/api/v1/tasks?limit=0", "limit 0 is outside 1 to 500"),
        ("/api/v1/tasks?limit=501", "limit 501 is outside 1 to 500"),
        ("/api/v1/tasks?limit=-1", "limit"),
        ("/api/v1/tasks?status=bogus", "unknown variant `bogus`"),
        ("/api/v1/tasks?source=robot", "unknown variant `robot`"),
        (
            "/api/v1/tasks?min_priority=11",
            "min_priority 11 is outside 0 to 10",
        ),
        ("/api/v1/tasks?max_priority=300", "max_priority"),
        ("/api/v1/tasks?session_id=nope", "session_id"),
        ("/api/v1/tasks?order=sideways", "unknown variant `sideways`"),
        ("/api/v1/tasks?after=garbage", "is not a cursor"),
        (
            "/api/v1/tasks?after=newest~0~2026-01-01T00:00:00.000000Z~nope",
            "is not a cursor",
        ),
        (
            "/api/v1/tasks?order=oldest&after=newest~0000000000000000~2026-01-01T00:00:00.000000Z~00000000-0000-0000-0000-000000000000",
            "the cursor is for the order newest",
        ),
        (
            "/api/v1/tasks?after=newest~0000000000000000~0000-00-00T00:00:00.000000Z~00000000-0000-0000-0000-000000000000",
            "is not a cursor",
        ),
        ("/api/v1/tasks?order=priority&after=priority~7ff8000000000000~2026-01-01T00:00:00.000000Z~00000000-0000-0000-0000-000000000000", "not a finite number"),
        ("/api/v1/tasks/not-a-uuid", "not-a-uuid"),
        ("/api/v1/tasks/not-a-uuid/reach?action=cancel", "not-a-uuid"),
        (
            "/api/v1/tasks/00000000-0000-0000-0000-000000000000/reach?action=explode",
            "explode",
        ),
        (
            "/api/v1/tasks/00000000-0000-0000-0000-000000000000/reach",
            "action",
        ),
    ] {
        let error = served.get_json(path, 400).await;
        assert_error(&error, "invalid_argument", needle);
    }
    let missing = "00000000-0000-0000-0000-000000000000";
    assert_error(
        &served
            .get_json(&format!("/api/v1/tasks/{missing}"), 404)
            .await,
        "not_found",
        missing,
    );
    assert_error(
        &served
            .post_json(&format!("/api/v1/tasks/{missing}/cancel"), 404)
            .await,
        "not_found",
        missing,
    );
    assert_error(
        &served
            .post_json("/api/v1/tasks/not-a-uuid/cancel", 400)
            .await,
        "invalid_argument",
        "not-a-uuid",
    );
    assert_error(
        &served
            .post_json(&format!("/api/v1/tasks/{task}/retry"), 409)
            .await,
        "conflict",
        "",
    );
    assert_error(
        &served.get_json("/api/v1/nothing/here", 404).await,
        "not_found",
        "/api/v1/nothing/here",
    );
    let wrong_method = served
        .http
        .delete(served.url(&format!("/api/v1/tasks/{task}")))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status().as_u16(), 405);

    assert_eq!(
        counts(&served.get_json("/api/v1/overview", 200).await),
        before
    );
    assert_eq!(store.show(&task)["status"], "ready");
    served.stop().await;
}

#[tokio::test]
async fn pages_of_tasks_follow_each_other_in_every_order() {
    let store = Store::new();
    let ids: Vec<String> = (0..5)
        .map(|i| store.submit(&format!("task {i}"), &[]))
        .collect();
    let served = store.serve(&[]).await;
    for order in ["newest", "oldest", "priority"] {
        let mut seen = Vec::new();
        let mut path = format!("/api/v1/tasks?limit=2&order={order}");
        loop {
            let page = served.get_json(&path, 200).await;
            for task in page["tasks"].as_array().unwrap() {
                seen.push(task["id"].as_str().unwrap().to_string());
            }
            match page["next"].as_str() {
                Some(next) => {
                    path = format!("/api/v1/tasks?limit=2&order={order}&after={next}");
                }
                None => break,
            }
        }
        let expected: Vec<String> = match order {
            "newest" => ids.iter().rev().cloned().collect(),
            _ => ids.clone(),
        };
        assert_eq!(seen, expected, "{order}");
    }
    let found = served.get_json("/api/v1/tasks?q=TASK%203", 200).await;
    let found = found["tasks"].as_array().unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["id"], ids[3].as_str());
    served.stop().await;
}

#[tokio::test]
async fn the_event_stream_says_when_the_cli_changed_something() {
    let store = Store::new();
    let served = store.serve(&[]).await;
    let response = served.get("/api/v1/events").await;
    assert_eq!(response.status().as_u16(), 200);
    assert!(response
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let mut next_event = async || loop {
        if let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            if event.contains("event: change") {
                return event;
            }
            continue;
        }
        let chunk = tokio::time::timeout(PATIENCE, body.next())
            .await
            .expect("an event in time")
            .expect("the stream stays open")
            .expect("a chunk");
        text.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
    };
    // One at once, so that a page reads what it shows.
    next_event().await;
    let submitted = store.submit("seen live", &[]);
    next_event().await;
    let page = served.get_json("/api/v1/tasks", 200).await;
    assert_eq!(page["tasks"][0]["id"], submitted.as_str());
    served.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let store = Store::new();
    let served = store.serve(&[]).await;
    let document = served.get_json("/api/v1/openapi.json", 200).await;
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        document["openapi"]
    );
    let paths = document["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/api/v1/overview", "get"),
        ("/api/v1/tasks", "get"),
        ("/api/v1/tasks/{id}", "get"),
        ("/api/v1/tasks/{id}/reach", "get"),
        ("/api/v1/tasks/{id}/cancel", "post"),
        ("/api/v1/tasks/{id}/retry", "post"),
        ("/api/v1/events", "get"),
        ("/api/v1/openapi.json", "get"),
        ("/api/v1/tasks/{id}/dag", "get"),
        ("/api/v1/sessions/{id}/dag", "get"),
        ("/api/v1/agents", "get"),
        ("/api/v1/actions", "post"),
        ("/api/v1/actions/preview", "post"),
        ("/api/v1/memories", "get"),
        ("/api/v1/memory", "get"),
        ("/api/v1/sessions/{id}", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is not in the document"
        );
    }
    // The guard's answers and the ways to authenticate are documented too.
    assert!(document["paths"]["/api/v1/tasks"]["get"]["responses"]["401"].is_object());
    assert!(document["paths"]["/api/v1/tasks/{id}/cancel"]["post"]["responses"]["403"].is_object());
    assert!(document["components"]["securitySchemes"]["bearer"].is_object());
    let schemas = document["components"]["schemas"]
        .as_object()
        .expect("schemas");
    for name in [
        "Overview",
        "TaskPage",
        "TaskDetail",
        "Reach",
        "Outcome",
        "ErrorBody",
    ] {
        assert!(schemas.contains_key(name), "{name} is not in the document");
    }
    served.stop().await;
}

#[tokio::test]
async fn the_dag_of_a_session_draws_its_tasks_up_to_the_limit_and_says_when_more_exist() {
    let store = Store::new();
    let small = store.cli(&["session", "create", "--app", "a", "--user", "u"]);
    let large = store.cli(&["session", "create", "--app", "a", "--user", "u"]);
    let mut lines = vec![
        serde_json::json!({"key": "first", "description": "x", "session": small}).to_string(),
        serde_json::json!({"key": "second", "description": "x", "session": small,
                           "depends_on": ["first"]})
        .to_string(),
    ];
    lines.extend((0..1001).map(|i| {
        serde_json::json!({"summary": format!("many {i}"), "description": "x", "session": large})
            .to_string()
    }));
    let file = store.path().with_file_name("sessions.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    store.cli(&["task", "import", file.to_str().unwrap()]);
    let served = store.serve(&[]).await;

    let dag = served
        .get_json(&format!("/api/v1/sessions/{small}/dag"), 200)
        .await;
    assert_eq!(dag["nodes"].as_array().unwrap().len(), 2, "{dag}");
    assert_eq!(dag["edges"].as_array().unwrap().len(), 1, "{dag}");
    assert_eq!(dag["truncated"], false);
    let dag = served
        .get_json(&format!("/api/v1/sessions/{large}/dag"), 200)
        .await;
    assert_eq!(dag["nodes"].as_array().unwrap().len(), 1000);
    assert_eq!(dag["truncated"], true);
    served.stop().await;
}

#[tokio::test]
async fn the_dag_of_a_task_holds_its_ancestors_and_descendants_in_layers() {
    let store = Store::new();
    let root = store.submit("root", &[]);
    let left = store.submit("left", &[&root]);
    let right = store.submit("right", &[&root]);
    let last = store.submit("last", &[&left, &right]);
    let unrelated = store.submit("unrelated", &[]);
    let sibling = store.submit("sibling of left", &[&root]);
    let served = store.serve(&[]).await;

    let dag = served
        .get_json(&format!("/api/v1/tasks/{left}/dag"), 200)
        .await;
    let nodes = dag["nodes"].as_array().unwrap();
    let ids: Vec<&str> = nodes.iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert_eq!(nodes.len(), 3, "{dag}");
    for id in [&root, &left, &last] {
        assert!(ids.contains(&id.as_str()), "{id} missing: {dag}");
    }
    for id in [&right, &unrelated, &sibling] {
        assert!(!ids.contains(&id.as_str()), "{id} drawn: {dag}");
    }
    let layer = |id: &str| nodes.iter().find(|n| n["id"] == id).unwrap()["layer"].clone();
    assert_eq!(
        [layer(&root), layer(&left), layer(&last)],
        [0, 1, 2].map(serde_json::Value::from)
    );
    assert_eq!(dag["edges"].as_array().unwrap().len(), 2, "{dag}");
    assert_eq!(dag["critical_path"].as_array().unwrap().len(), 3, "{dag}");
    assert_eq!(dag["truncated"], false);

    let whole = served
        .get_json(&format!("/api/v1/tasks/{root}/dag"), 200)
        .await;
    assert_eq!(whole["nodes"].as_array().unwrap().len(), 5, "{whole}");

    for (path, status, kind, needle) in [
        ("/api/v1/tasks/nope/dag", 400, "invalid_argument", "nope"),
        (
            "/api/v1/tasks/00000000-0000-0000-0000-000000000000/dag",
            404,
            "not_found",
            "does not exist",
        ),
        (
            "/api/v1/sessions/00000000-0000-0000-0000-000000000000/dag",
            404,
            "not_found",
            "no tasks",
        ),
    ] {
        assert_error(&served.get_json(path, status).await, kind, needle);
    }
    served.stop().await;
}

#[tokio::test]
async fn the_agents_page_marks_the_agents_that_went_quiet() {
    let store = Store::new();
    let quiet = store.cli(&["agent", "register", "--type", "planner"]);
    let alive = store.cli(&["agent", "register", "--type", "coder"]);
    // The quiet one last spoke a day ago: its heartbeat is moved back in the file itself.
    let mut db = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite:{}",
        store.path().display()
    ))
    .await
    .expect("the database");
    sqlx::query("UPDATE agents SET heartbeat_at = '2026-01-01T00:00:00.000000Z' WHERE id = ?")
        .bind(&quiet)
        .execute(&mut db)
        .await
        .expect("moved back");
    sqlx::Connection::close(db).await.expect("closed");
    let served = store.serve(&[]).await;

    let list = served.get_json("/api/v1/agents", 200).await;
    assert_eq!(list["stale_after_seconds"], 300);
    let agents = list["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 2, "{list}");
    let stale = |id: &str| agents.iter().find(|a| a["id"] == id).unwrap()["stale"].clone();
    assert_eq!(stale(&quiet), true, "{list}");
    assert_eq!(stale(&alive), false, "{list}");

    let idle = served.get_json("/api/v1/agents?status=busy", 200).await;
    assert!(idle["agents"].as_array().unwrap().is_empty(), "{idle}");
    for (path, needle) in [
        ("/api/v1/agents?status=asleep", "asleep"),
        ("/api/v1/agents?stale_after_seconds=0", "outside 1 to"),
        (
            "/api/v1/agents?stale_after_seconds=-5",
            "stale_after_seconds",
        ),
    ] {
        assert_error(
            &served.get_json(path, 400).await,
            "invalid_argument",
            needle,
        );
    }
    served.stop().await;
}

#[tokio::test]
async fn memories_their_versions_and_a_session_read_as_the_cli_wrote_them() {
    let store = Store::new();
    store.cli(&["memory", "add", "team/rust", "style", r#"{"indent": 4}"#]);
    store.cli(&["memory", "update", "team/rust", "style", r#"{"indent": 2}"#]);
    store.cli(&[
        "memory",
        "add",
        "team/go",
        "style",
        r#""gofmt""#,
        "--type",
        "procedural",
    ]);
    store.cli(&["memory", "add", "other", "x", "1"]);
    let session = store.cli(&["session", "create", "--app", "planner", "--user", "ada"]);
    store.cli(&[
        "session",
        "append",
        &session,
        "--type",
        "message",
        "--content",
        r#"{"text": "hello"}"#,
    ]);
    let served = store.serve(&[]).await;

    let team = served.get_json("/api/v1/memories?prefix=team/", 200).await;
    assert_eq!(team["total"], 2, "{team}");
    let keys: Vec<String> = team["memories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["namespace"].as_str().unwrap(),
                m["key"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(keys, ["team/go/style", "team/rust/style"]);
    let procedural = served
        .get_json("/api/v1/memories?memory_type=procedural", 200)
        .await;
    assert_eq!(procedural["memories"].as_array().unwrap().len(), 1);

    let history = served
        .get_json("/api/v1/memory?namespace=team/rust&key=style", 200)
        .await;
    let versions = history["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "{history}");
    assert_eq!(versions[0]["value"]["indent"], 4);
    assert_eq!(versions[1]["value"]["indent"], 2);
    assert_eq!(versions[1]["version"], 2);

    let view = served
        .get_json(&format!("/api/v1/sessions/{session}"), 200)
        .await;
    assert_eq!(view["app_name"], "planner");
    assert_eq!(view["events"][0]["content"]["text"], "hello", "{view}");
    assert!(view["next_offset"].is_null());

    for (path, status, kind, needle) in [
        (
            "/api/v1/memories?limit=0",
            400,
            "invalid_argument",
            "limit 0",
        ),
        (
            "/api/v1/memories?memory_type=dreamy",
            400,
            "invalid_argument",
            "dreamy",
        ),
        (
            "/api/v1/memory?namespace=team/rust",
            400,
            "invalid_argument",
            "key",
        ),
        (
            "/api/v1/memory?namespace=team/rust&key=nothing",
            404,
            "not_found",
            "nothing",
        ),
        (
            "/api/v1/sessions/00000000-0000-0000-0000-000000000000",
            404,
            "not_found",
            "does not exist",
        ),
        ("/api/v1/sessions/nope", 400, "invalid_argument", "nope"),
    ] {
        assert_error(&served.get_json(path, status).await, kind, needle);
    }
    let bad_limit = served
        .get_json(&format!("/api/v1/sessions/{session}?limit=501"), 400)
        .await;
    assert_error(&bad_limit, "invalid_argument", "limit 501");
    served.stop().await;
}

#[tokio::test]
async fn many_tasks_are_cancelled_by_selection_or_by_filter_after_a_preview() {
    let store = Store::new();
    let a = store.submit("batch a", &[]);
    let a_child = store.submit("after a", &[&a]);
    let b = store.submit("batch b", &[]);
    let c = store.submit("batch c", &[]);
    let keep = store.submit("keep me", &[]);
    let served = store.serve(&[]).await;
    let post = |body: serde_json::Value, path: &'static str, status: u16| {
        let http = served.http.clone();
        let url = served.url(path);
        async move {
            crate::server::json_of(http.post(url).json(&body).send().await.unwrap(), status).await
        }
    };

    // The selection: a (with its dependent) and b; a's dependent selected too is counted once.
    let selection = serde_json::json!({"action": "cancel", "ids": [a, b, a_child]});
    let preview = post(selection.clone(), "/api/v1/actions/preview", 200).await;
    assert_eq!(preview["tasks"], 3, "{preview}");
    assert_eq!(preview["others"], 0, "{preview}");
    assert_eq!(preview["skipped"], 0, "{preview}");
    let outcome = post(selection, "/api/v1/actions", 200).await;
    assert_eq!(outcome["changed"].as_array().unwrap().len(), 3, "{outcome}");
    assert_eq!(outcome["skipped"][0]["id"], a_child.as_str(), "{outcome}");
    assert!(outcome["stopped_by"].is_null());
    for id in [&a, &a_child, &b] {
        assert_eq!(store.show(id)["status"], "cancelled");
    }

    // Everything the filter matches: only c is still unfinished among the batch.
    let filter = serde_json::json!({"action": "cancel", "filter": {"q": "batch"}});
    let preview = post(filter.clone(), "/api/v1/actions/preview", 200).await;
    assert_eq!(preview["tasks"], 1, "{preview}");
    assert_eq!(preview["skipped"], 2, "{preview}");
    let outcome = post(filter, "/api/v1/actions", 200).await;
    assert_eq!(outcome["changed"], serde_json::json!([c]), "{outcome}");
    assert_eq!(store.show(&keep)["status"], "ready");

    // Bad requests change nothing.
    let missing = "00000000-0000-0000-0000-000000000000";
    for (body, status, kind, needle) in [
        (
            serde_json::json!({"action": "cancel"}),
            400,
            "invalid_argument",
            "either ids or filter",
        ),
        (
            serde_json::json!({"action": "cancel", "ids": [keep], "filter": {}}),
            400,
            "invalid_argument",
            "not both",
        ),
        (
            serde_json::json!({"action": "cancel", "ids": []}),
            400,
            "invalid_argument",
            "select at least one",
        ),
        (
            serde_json::json!({"action": "explode", "ids": [keep]}),
            400,
            "invalid_argument",
            "explode",
        ),
        (
            serde_json::json!({"action": "cancel", "ids": ["nope"]}),
            400,
            "invalid_argument",
            "ids",
        ),
        (
            serde_json::json!({"action": "cancel", "filter": {"min_priority": 11}}),
            400,
            "invalid_argument",
            "min_priority 11",
        ),
        (
            serde_json::json!({"action": "cancel", "ids": [keep, missing]}),
            404,
            "not_found",
            missing,
        ),
    ] {
        for path in ["/api/v1/actions/preview", "/api/v1/actions"] {
            assert_error(&post(body.clone(), path, status).await, kind, needle);
        }
    }
    let not_json = served
        .http
        .post(served.url("/api/v1/actions"))
        .header("content-type", "text/plain")
        .body("cancel everything")
        .send()
        .await
        .unwrap();
    assert_error(
        &crate::server::json_of(not_json, 400).await,
        "invalid_argument",
        "Content-Type",
    );
    assert_eq!(store.show(&keep)["status"], "ready");
    served.stop().await;
}

#[tokio::test]
async fn a_retry_preview_counts_only_the_dependents_the_retry_puts_back() {
    let store = Store::new();
    let first = store.cli(&["task", "submit", "first", "--max-retries", "0"]);
    let second = store.cli(&["task", "submit", "second", "--max-retries", "0"]);
    let both = store.submit("needs both", &[&first, &second]);
    for _ in 0..2 {
        let claimed: Value =
            serde_json::from_str(&store.cli(&["--json", "task", "claim", "--worker", "w"]))
                .expect("JSON");
        let attempt = claimed[0]["lease"]["attempt_id"]
            .as_str()
            .unwrap()
            .to_string();
        store.cli(&["task", "fail", &attempt, "--error", "boom"]);
    }
    assert_eq!(store.show(&both)["status"], "failed");
    let served = store.serve(&[]).await;
    // `second` is still failed, so retrying `first` leaves `needs both` failed.
    let reach = served
        .get_json(&format!("/api/v1/tasks/{first}/reach?action=retry"), 200)
        .await;
    assert_eq!(reach["others"], 0, "{reach}");
    served
        .post_json(&format!("/api/v1/tasks/{first}/retry"), 200)
        .await;
    assert_eq!(store.show(&both)["status"], "failed");
    // Now retrying `second` puts it back.
    let reach = served
        .get_json(&format!("/api/v1/tasks/{second}/reach?action=retry"), 200)
        .await;
    assert_eq!(reach["others"], 1, "{reach}");
    let outcome = served
        .post_json(&format!("/api/v1/tasks/{second}/retry"), 200)
        .await;
    assert_eq!(outcome["changed"], serde_json::json!([both]), "{outcome}");
    served.stop().await;
}
