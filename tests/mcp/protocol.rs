//! JSON-RPC's edges, over stdio and HTTP: every malformed request gets its JSON-RPC error (or,
//! for tool arguments nested too deep, a tool error), with its id where it has one, and the
//! server answers the next request. Regression tests for requests rmcp left unanswered:
//! arguments nested 127 or 10,000 deep never got a response.

use std::process::Stdio;

use serde_json::{json, Value};

use crate::client::{open_db, Store};
use crate::http::{post_body, served_url, stop};
use crate::lifecycle::RawSession;

/// What a malformed message must be answered with.
enum Expect {
    /// A JSON-RPC error with this code, and this HTTP status.
    Error { code: i64, status: u16 },
    /// A tool error of kind `invalid_argument` whose message holds this text.
    ToolError(&'static str),
}

struct Case {
    what: &'static str,
    message: String,
    /// The id the answer carries: the request's, or null when it has none that can be read.
    id: Value,
    expect: Expect,
}

fn nested(levels: usize) -> String {
    format!("{}{}", "[".repeat(levels), "]".repeat(levels))
}

fn enqueue_with_input(id: u64, input: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"task_enqueue","arguments":{{"description":"deep","input":{input}}}}}}}"#
    )
}

fn cases() -> Vec<Case> {
    let error = |code, status| Expect::Error { code, status };
    let case = |what, message: &str, id: Value, expect| Case {
        what,
        message: message.to_string(),
        id,
        expect,
    };
    vec![
        Case {
            what: "arguments nested 127 deep",
            message: enqueue_with_input(101, &nested(127)),
            id: json!(101),
            expect: Expect::ToolError("100 levels"),
        },
        Case {
            what: "arguments nested 10,000 deep",
            message: enqueue_with_input(102, &nested(10_000)),
            id: json!(102),
            expect: Expect::ToolError("100 levels"),
        },
        Case {
            what: "arguments one level past the limit",
            message: enqueue_with_input(103, &nested(101)),
            id: json!(103),
            expect: Expect::ToolError("input nests arrays and objects deeper than the limit"),
        },
        Case {
            what: "params of another method nested 10,000 deep",
            message: format!(
                r#"{{"jsonrpc":"2.0","id":104,"method":"tools/list","params":{{"x":{}}}}}"#,
                nested(10_000)
            ),
            id: json!(104),
            expect: error(-32602, 200),
        },
        case(
            "no jsonrpc",
            r#"{"id":105,"method":"tools/list"}"#,
            json!(105),
            error(-32600, 400),
        ),
        case(
            "jsonrpc 1.0",
            r#"{"jsonrpc":"1.0","id":"s-106","method":"tools/list"}"#,
            json!("s-106"),
            error(-32600, 400),
        ),
        case(
            "arguments as an array",
            r#"{"jsonrpc":"2.0","id":107,"method":"tools/call","params":{"name":"task_list","arguments":[]}}"#,
            json!(107),
            error(-32602, 200),
        ),
        case(
            "arguments as a string",
            r#"{"jsonrpc":"2.0","id":108,"method":"tools/call","params":{"name":"task_list","arguments":"all"}}"#,
            json!(108),
            error(-32602, 200),
        ),
        case(
            "tools/call without a name",
            r#"{"jsonrpc":"2.0","id":109,"method":"tools/call","params":{"arguments":{}}}"#,
            json!(109),
            error(-32602, 200),
        ),
        case(
            "params as an array",
            r#"{"jsonrpc":"2.0","id":110,"method":"tools/list","params":[1]}"#,
            json!(110),
            error(-32602, 200),
        ),
        case(
            "initialize without its params",
            r#"{"jsonrpc":"2.0","id":111,"method":"initialize","params":{}}"#,
            json!(111),
            error(-32602, 200),
        ),
        case(
            "no method",
            r#"{"jsonrpc":"2.0","id":112}"#,
            json!(112),
            error(-32600, 400),
        ),
        case(
            "an id past 2^63",
            r#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"tools/list"}"#,
            Value::Null,
            error(-32600, 400),
        ),
        case(
            "a fractional id",
            r#"{"jsonrpc":"2.0","id":1.5,"method":"tools/list"}"#,
            Value::Null,
            error(-32600, 400),
        ),
        case(
            "a null id",
            r#"{"jsonrpc":"2.0","id":null,"method":"tools/list"}"#,
            Value::Null,
            error(-32600, 400),
        ),
        case(
            "a batch",
            r#"[{"jsonrpc":"2.0","id":113,"method":"tools/list"}]"#,
            Value::Null,
            error(-32600, 400),
        ),
        case("a bare number", "5", Value::Null, error(-32600, 400)),
        case(
            "truncated JSON",
            r#"{"jsonrpc":"2.0","id":114,"method":"#,
            Value::Null,
            error(-32700, 400),
        ),
        case(
            "not JSON",
            "this is not JSON",
            Value::Null,
            error(-32700, 400),
        ),
        case(
            "an unknown method",
            r#"{"jsonrpc":"2.0","id":115,"method":"tasks/teleport"}"#,
            json!(115),
            error(-32601, 200),
        ),
    ]
}

#[track_caller]
fn assert_answer(case: &Case, answer: &Value) {
    let what = case.what;
    assert_eq!(answer["jsonrpc"], "2.0", "{what}: {answer}");
    assert_eq!(answer["id"], case.id, "{what}: {answer}");
    match case.expect {
        Expect::Error { code, .. } => {
            assert_eq!(answer["error"]["code"], code, "{what}: {answer}");
            assert!(answer["error"]["message"].is_string(), "{what}: {answer}");
        }
        Expect::ToolError(fragment) => {
            assert_eq!(answer["result"]["isError"], true, "{what}: {answer}");
            let text = answer["result"]["content"][0]["text"].as_str().unwrap();
            let body: Value = serde_json::from_str(text).unwrap();
            assert_eq!(body["error"]["kind"], "invalid_argument", "{what}: {body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(fragment), "{what}: {message}");
        }
    }
}

async fn task_count(store: &Store) -> i64 {
    let pool = open_db(&store.db_path()).await;
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM tasks")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    count
}

#[tokio::test]
async fn every_malformed_request_over_stdio_is_answered_and_the_next_one_too() {
    let store = Store::new();
    let mut raw = RawSession::start(&store).await;
    for case in cases() {
        raw.send_line(&case.message).await;
        let answer = raw.next_message().await;
        assert_answer(&case, &answer);
        // Still serving: the next request gets its own answer.
        let listed = raw
            .request(
                "tools/call",
                json!({ "name": "task_list", "arguments": {} }),
            )
            .await;
        assert_eq!(
            listed["result"]["isError"], false,
            "after {}: {listed}",
            case.what
        );
    }
    // A notification gets no answer, not even when it cannot be read; the request after it
    // gets the next line.
    raw.send_line(r#"{"jsonrpc":"2.0","method":"notifications/initialized","params":[1]}"#)
        .await;
    raw.send_line(&format!(
        r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{}}}"#,
        nested(10_000)
    ))
    .await;
    raw.send_line(r#"{"jsonrpc":"2.0","id":"after","method":"ping"}"#)
        .await;
    assert_eq!(raw.next_message().await["id"], "after");

    // Input nested exactly as deep as the limit is stored: the edge and the store agree.
    raw.send_line(&enqueue_with_input(200, &nested(100))).await;
    let at_limit = raw.next_message().await;
    assert_eq!(at_limit["result"]["isError"], false, "{at_limit}");
    assert!(raw.finish().await.success());
    assert_eq!(
        task_count(&store).await,
        1,
        "only the task at the limit was stored"
    );
}

#[tokio::test]
async fn every_malformed_request_over_http_is_answered_with_its_status_and_the_next_one_too() {
    let store = Store::new();
    let mut cmd = store.command(&["--http", "127.0.0.1:0"]);
    cmd.stdin(Stdio::null());
    let mut child = cmd.spawn().expect("abathur mcp --http starts");
    let (url, _) = served_url(&mut child).await;
    let (addr, path) = url.split_once('/').expect("an address and a path");
    let path = format!("/{path}");
    for case in cases() {
        let (status, head, body) = post_body(addr, addr, &path, &case.message).await;
        let expected_status = match case.expect {
            Expect::Error { status, .. } => status,
            Expect::ToolError(_) => 200,
        };
        assert_eq!(status, expected_status, "{}: {body}", case.what);
        assert!(
            head.contains("content-type: application/json"),
            "{}: {head}",
            case.what
        );
        let answer: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {body}", case.what));
        assert_answer(&case, &answer);
        let (status, _, listed) = post_body(
            addr,
            addr,
            &path,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"task_list","arguments":{}}}"#,
        )
        .await;
        assert_eq!(status, 200, "after {}: {listed}", case.what);
    }
    // A notification that cannot be read is accepted without an answer.
    let (status, _, body) = post_body(
        addr,
        addr,
        &path,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized","params":[1]}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert!(body.is_empty(), "{body}");
    stop(child).await;
    assert_eq!(
        task_count(&store).await,
        0,
        "no malformed request stored anything"
    );
}

#[tokio::test]
async fn a_stdio_line_over_the_message_limit_is_answered_and_the_next_request_too() {
    let store = Store::new();
    let mut raw = RawSession::start(&store).await;
    let description = "x".repeat(abathur::mcp::MAX_MESSAGE_BYTES);
    let line = json!({
        "jsonrpc": "2.0", "id": 300, "method": "tools/call",
        "params": { "name": "task_enqueue", "arguments": { "description": description } },
    })
    .to_string();
    raw.send_line(&line).await;
    let answer = raw.next_message().await;
    assert_eq!(answer["error"]["code"], -32600, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("8 MiB"),
        "{answer}"
    );
    let listed = raw
        .request(
            "tools/call",
            json!({ "name": "task_list", "arguments": {} }),
        )
        .await;
    assert_eq!(listed["result"]["isError"], false, "{listed}");
    assert!(raw.finish().await.success());
    assert_eq!(task_count(&store).await, 0);
}

/// A `ping` whose line is exactly `len` bytes long, padded inside `_meta`.
fn ping_of_length(id: u64, len: usize) -> String {
    let head =
        format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping","params":{{"_meta":{{"pad":""#);
    let tail = r#""}}}"#;
    let line = format!("{head}{}{tail}", "x".repeat(len - head.len() - tail.len()));
    assert_eq!(line.len(), len);
    line
}

#[tokio::test]
async fn a_stdio_message_exactly_at_the_limit_is_answered_whether_its_line_ends_in_lf_or_crlf() {
    let store = Store::new();
    let mut raw = RawSession::start(&store).await;
    let limit = abathur::mcp::MAX_MESSAGE_BYTES;
    raw.send_line(&ping_of_length(400, limit)).await;
    assert_eq!(
        raw.next_message().await,
        json!({ "jsonrpc": "2.0", "id": 400, "result": {} })
    );
    // A client that ends its lines with CRLF sends one byte more for the same message.
    raw.send_line(&format!("{}\r", ping_of_length(401, limit)))
        .await;
    assert_eq!(
        raw.next_message().await,
        json!({ "jsonrpc": "2.0", "id": 401, "result": {} })
    );
    // One byte over is refused either way.
    for end in ["", "\r"] {
        raw.send_line(&format!("{}{end}", ping_of_length(402, limit + 1)))
            .await;
        let answer = raw.next_message().await;
        assert_eq!(answer["error"]["code"], -32600, "{end:?}: {answer}");
    }
    raw.send_line(r#"{"jsonrpc":"2.0","id":"after","method":"ping"}"#)
        .await;
    assert_eq!(raw.next_message().await["id"], "after");
    assert!(raw.finish().await.success());
}

#[tokio::test]
async fn a_message_that_starts_with_a_byte_order_mark_is_read_over_stdio_and_http_alike() {
    let enqueue = |id: u64| {
        format!(
            "\u{feff}{}",
            json!({
                "jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": { "name": "task_enqueue", "arguments": { "description": "bom" } },
            })
        )
    };
    let store = Store::new();
    let mut raw = RawSession::start(&store).await;
    raw.send_line(&enqueue(500)).await;
    let answer = raw.next_message().await;
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    assert!(raw.finish().await.success());

    let mut cmd = store.command(&["--http", "127.0.0.1:0"]);
    cmd.stdin(Stdio::null());
    let mut child = cmd.spawn().expect("abathur mcp --http starts");
    let (url, _) = served_url(&mut child).await;
    let (addr, path) = url.split_once('/').expect("an address and a path");
    let (status, _, body) = post_body(addr, addr, &format!("/{path}"), &enqueue(501)).await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("a JSON answer");
    assert_eq!(answer["id"], 501, "{answer}");
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    stop(child).await;
    assert_eq!(
        task_count(&store).await,
        2,
        "each transport stored its task"
    );
}
