//! `task_claim` with `wait_seconds`: answered as soon as another process submits a task, empty
//! when the wait ends, refused above the cap, and ended when the client cancels the request,
//! disconnects, or closes stdin.

use std::process::Stdio;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;

use crate::client::{enqueue, Store, PATIENCE};
use crate::lifecycle::RawSession;

/// Reads the server's log until a line holds `fragment`.
async fn wait_for_log<R: AsyncRead + Unpin>(log: &mut Lines<BufReader<R>>, fragment: &str) {
    loop {
        let line = tokio::time::timeout(PATIENCE, log.next_line())
            .await
            .unwrap_or_else(|_| panic!("no log line with {fragment:?} in time"))
            .expect("read the log")
            .unwrap_or_else(|| panic!("the log ended before {fragment:?}"));
        if line.contains(fragment) {
            return;
        }
    }
}

/// An `abathur mcp` over raw stdio with its debug log readable.
async fn logged_session(
    store: &Store,
) -> (RawSession, Lines<BufReader<tokio::process::ChildStderr>>) {
    let mut cmd = store.command(&[]);
    cmd.env("RUST_LOG", "abathur=debug");
    let mut raw = RawSession::start_with(cmd).await;
    let log = BufReader::new(raw.stderr()).lines();
    (raw, log)
}

fn claim_line(id: u64, wait_seconds: u64) -> String {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": { "name": "task_claim", "arguments": { "worker_id": "waiter", "wait_seconds": wait_seconds } },
    })
    .to_string()
}

fn tool_body(message: &Value) -> Value {
    let text = message["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("not a tool result: {message}"));
    serde_json::from_str(text).unwrap()
}

#[tokio::test]
async fn a_waiting_claim_is_answered_when_another_process_submits_a_task() {
    let store = Store::new();
    let (mut raw, mut log) = logged_session(&store).await;
    raw.send_line(&claim_line(50, 300)).await;
    wait_for_log(&mut log, "waiting for work").await;

    let submitted = std::process::Command::new(env!("CARGO_BIN_EXE_abathur"))
        .arg("--db")
        .arg(store.db_path())
        .args(["task", "submit", "arrives while the claim waits"])
        .env_remove("RUST_LOG")
        .output()
        .expect("abathur task submit runs");
    assert!(submitted.status.success(), "{submitted:?}");
    let id = String::from_utf8(submitted.stdout)
        .unwrap()
        .trim()
        .to_string();

    let answer = raw.next_message().await;
    assert_eq!(answer["id"], 50, "{answer}");
    let claimed = tool_body(&answer)["claimed"].clone();
    assert_eq!(claimed.as_array().unwrap().len(), 1, "{claimed}");
    assert_eq!(claimed[0]["task"]["id"], id.as_str());
    assert!(raw.finish().await.success());
}

#[tokio::test]
async fn a_claim_whose_wait_ends_with_nothing_claimable_answers_empty() {
    let store = Store::new();
    let s = store.connect().await;
    let answer = s
        .call("task_claim", json!({ "worker_id": "w", "wait_seconds": 1 }))
        .await;
    assert_eq!(answer, json!({ "claimed": [] }));
    // A ready task is claimed at once, wait or not.
    enqueue(&s, "ready now", &[]).await;
    let answer = s
        .call(
            "task_claim",
            json!({ "worker_id": "w", "wait_seconds": 300 }),
        )
        .await;
    assert_eq!(answer["claimed"].as_array().unwrap().len(), 1, "{answer}");
    assert!(s.close().await.success());
}

#[tokio::test]
async fn a_wait_above_the_cap_is_refused_and_nothing_is_claimed() {
    let store = Store::new();
    let s = store.connect().await;
    let id = enqueue(&s, "stays ready", &[]).await;
    let (kind, message) = s
        .call_err(
            "task_claim",
            json!({ "worker_id": "w", "wait_seconds": 301 }),
        )
        .await;
    assert_eq!(kind, "invalid_argument");
    assert!(
        message.contains("wait_seconds") && message.contains("301 is outside 0 to 300"),
        "{message}"
    );
    let task = s.call("task_get", json!({ "task_id": id })).await;
    assert_eq!(task["status"], "ready");
    assert!(s.close().await.success());
}

#[tokio::test]
async fn a_cancelled_claim_stops_waiting_and_takes_nothing() {
    let store = Store::new();
    let (mut raw, mut log) = logged_session(&store).await;
    raw.send_line(&claim_line(60, 300)).await;
    wait_for_log(&mut log, "waiting for work").await;
    raw.send_line(
        &json!({
            "jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": { "requestId": 60, "reason": "the agent moved on" },
        })
        .to_string(),
    )
    .await;
    wait_for_log(&mut log, "the client went away").await;

    // A task submitted now stays ready: the cancelled claim no longer waits for it.
    let enqueued = raw
        .request(
            "tools/call",
            json!({ "name": "task_enqueue", "arguments": { "description": "after the cancel" } }),
        )
        .await;
    let id = tool_body(&enqueued)["id"].as_str().unwrap().to_string();
    let got = raw
        .request(
            "tools/call",
            json!({ "name": "task_get", "arguments": { "task_id": id } }),
        )
        .await;
    assert_eq!(tool_body(&got)["status"], "ready", "{got}");
    assert!(raw.finish().await.success());
}

#[tokio::test]
async fn closing_stdin_ends_a_waiting_claim_and_the_server() {
    let store = Store::new();
    let (mut raw, mut log) = logged_session(&store).await;
    raw.send_line(&claim_line(70, 300)).await;
    wait_for_log(&mut log, "waiting for work").await;
    assert!(
        raw.finish().await.success(),
        "the server exits although a claim waited"
    );
}

#[tokio::test]
async fn an_http_client_that_disconnects_ends_its_waiting_claim() {
    let store = Store::new();
    let mut cmd = store.command(&["--http", "127.0.0.1:0"]);
    cmd.stdin(Stdio::null()).env("RUST_LOG", "abathur=debug");
    let mut child = cmd.spawn().expect("abathur mcp --http starts");
    let mut log = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = tokio::time::timeout(PATIENCE, log.next_line())
            .await
            .expect("the address in time")
            .unwrap()
            .expect("the address before stderr closes");
        if let Some(url) = line.strip_prefix("abathur mcp: serving on http://") {
            break url.to_string();
        }
    };
    let (addr, path) = url.split_once('/').unwrap();
    let body = claim_line(80, 300);
    let request = format!(
        "POST /{path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2025-06-18\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    wait_for_log(&mut log, "waiting for work").await;
    drop(stream);
    wait_for_log(&mut log, "the client went away").await;
    crate::http::stop(child).await;
}
