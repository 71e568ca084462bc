//! `abathur mcp --http`: the same tools over streamable HTTP, on loopback by default.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Child;

use crate::client::{Store, PATIENCE};

/// POSTs one JSON-RPC message to `url_path` on `addr`, naming `host` in the `Host` header, and
/// returns the status, the headers and the body. HTTP/1.1 with `Connection: close`, so the
/// body ends where the stream does.
async fn post_as(addr: &str, host: &str, url_path: &str, message: &Value) -> (u16, String, String) {
    post_body(addr, host, url_path, &message.to_string()).await
}

/// [`post_as`] with any body, JSON or not.
pub async fn post_body(
    addr: &str,
    host: &str,
    url_path: &str,
    body: &str,
) -> (u16, String, String) {
    let request = format!(
        "POST {url_path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2025-06-18\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut response))
        .await
        .expect("an answer in time")
        .expect("read");
    let response = String::from_utf8(response).expect("UTF-8");
    let (head, body) = response.split_once("\r\n\r\n").expect("headers end");
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let head = head.to_ascii_lowercase();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, head, body)
}

/// [`post_as`] with the listener's own address as the host, expecting a JSON answer.
async fn post(addr: &str, url_path: &str, message: &Value) -> (u16, Value) {
    let (status, head, body) = post_as(addr, addr, url_path, message).await;
    assert!(
        head.contains("content-type: application/json"),
        "a JSON response: {head}"
    );
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    (status, json)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("a chunk size");
        let size = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// Reads the server's stderr up to the notice with its URL, and returns the URL without
/// `http://`, with the lines before it (log lines, with ABATHUR_MCP_TEST_LOG, and warnings).
pub async fn served_url(child: &mut Child) -> (String, Vec<String>) {
    let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
    let mut before = Vec::new();
    loop {
        let line = tokio::time::timeout(PATIENCE, stderr.next_line())
            .await
            .expect("the address in time")
            .unwrap()
            .expect("the address on stderr before it closes");
        if let Some(url) = line.strip_prefix("abathur mcp: serving on http://") {
            return (url.to_string(), before);
        }
        before.push(line);
    }
}

/// Sends SIGTERM and expects a clean exit.
pub async fn stop(mut child: Child) {
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the server stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn the_tools_answer_over_http_on_a_loopback_port() {
    let store = Store::new();
    let mut cmd = store.command(&["--http", "127.0.0.1:0"]);
    cmd.stdin(Stdio::null());
    let mut child = cmd.spawn().expect("abathur mcp --http starts");
    let (url, _) = served_url(&mut child).await;
    let (addr, path) = url.split_once('/').expect("an address and a path");
    let path = format!("/{path}");
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    let (status, init) = post(
        addr,
        &path,
        &json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": { "name": "http-test", "version": "1" },
            },
        }),
    )
    .await;
    assert_eq!(status, 200, "{init}");
    assert_eq!(init["result"]["serverInfo"]["name"], "abathur");

    let (status, call) = post(
        addr,
        &path,
        &json!({
            "jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": { "name": "task_enqueue", "arguments": { "description": "over HTTP" } },
        }),
    )
    .await;
    assert_eq!(status, 200, "{call}");
    assert_eq!(call["result"]["isError"], false, "{call}");
    let task: Value =
        serde_json::from_str(call["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(task["summary"], "over HTTP");
    assert_eq!(task["status"], "ready");

    let (_, call) = post(
        addr,
        &path,
        &json!({
            "jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": { "name": "task_get", "arguments": { "task_id": "nope" } },
        }),
    )
    .await;
    assert_eq!(call["result"]["isError"], true, "{call}");

    // A page served from a hostname the attacker controls, rebound to 127.0.0.1, is refused.
    let (status, _, _) = post_as(
        addr,
        "rebound.example.com",
        &path,
        &json!({ "jsonrpc": "2.0", "id": 4, "method": "tools/list" }),
    )
    .await;
    assert_eq!(status, 403, "a foreign Host header is refused");

    stop(child).await;
}

#[tokio::test]
async fn a_non_loopback_address_is_refused_without_allow_remote() {
    let store = Store::new();
    let mut cmd = store.command(&["--http", "0.0.0.0:0"]);
    cmd.stdin(Stdio::null());
    let output = tokio::time::timeout(PATIENCE, cmd.output())
        .await
        .expect("it exits at once")
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--allow-remote"), "{stderr}");
    assert!(
        !store.db_path().exists(),
        "nothing is opened before the address is accepted"
    );
}

#[tokio::test]
async fn allow_remote_serves_any_address_with_a_warning_and_accepts_any_host() {
    let store = Store::new();
    let mut cmd = store.command(&["--http", "0.0.0.0:0", "--allow-remote"]);
    cmd.stdin(Stdio::null());
    let mut child = cmd.spawn().expect("abathur mcp --http starts");
    let (url, notices) = served_url(&mut child).await;
    assert!(
        notices
            .iter()
            .any(|n| n.starts_with("warning:") && n.contains("without authentication")),
        "{notices:?}"
    );
    let (addr, path) = url.split_once('/').expect("an address and a path");
    let port = addr.rsplit_once(':').expect("a port").1;
    let (status, _, body) = post_as(
        &format!("127.0.0.1:{port}"),
        "mcp.example.com",
        &format!("/{path}"),
        &json!({
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": { "name": "task_queue_status", "arguments": {} },
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    stop(child).await;
}
