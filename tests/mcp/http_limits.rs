//! `abathur mcp --http` against clients that hold on: slow headers, bodies that never end or
//! never could fit, and a shutdown while a body is half sent. Raw TCP, so the test decides
//! every byte.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Child;

use crate::client::{Store, PATIENCE};
use crate::http::{post_body, served_url};

/// Longer than any timeout of the server plus its shutdown grace, so that only a hang fails.
const HANG: Duration = Duration::from_secs(120);

const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"task_queue_status","arguments":{}}}"#;

/// Starts `abathur mcp --http` on a free loopback port; returns the process, the address and
/// the path.
async fn start(store: &Store) -> (Child, String, String) {
    let mut cmd = store.command(&["--http", "127.0.0.1:0"]);
    cmd.stdin(Stdio::null());
    let mut child = cmd.spawn().expect("abathur mcp --http starts");
    let (url, _) = served_url(&mut child).await;
    let (addr, path) = url.split_once('/').expect("an address and a path");
    (child, addr.to_string(), format!("/{path}"))
}

fn head(addr: &str, path: &str, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2025-06-18\r\n{extra}"
    )
}

/// Reads one response's status line and headers, and its body by its `Content-Length`.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut buffer = Vec::new();
    let mut byte = [0u8; 1];
    while !buffer.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut byte))
            .await
            .expect("a response in time")
            .expect("read");
        assert!(n > 0, "the connection closed before a response: {buffer:?}");
        buffer.push(byte[0]);
    }
    let head = String::from_utf8(buffer).unwrap().to_ascii_lowercase();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0; length];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut body))
        .await
        .expect("the body in time")
        .expect("read");
    (status, String::from_utf8(body).unwrap())
}

#[tokio::test]
async fn a_content_length_of_100_gb_is_refused_with_413_before_any_body_is_sent() {
    let store = Store::new();
    let (child, addr, path) = start(&store).await;
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let request = head(&addr, &path, "Content-Length: 100000000000\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let (status, body) = read_response(&mut stream).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("8 MiB"), "the limit is named: {body}");

    // Still serving.
    let (status, _, body) = post_body(&addr, &addr, &path, CALL).await;
    assert_eq!(status, 200, "{body}");
    crate::http::stop(child).await;
}

#[tokio::test]
async fn a_chunked_body_past_the_limit_is_refused_with_413() {
    let store = Store::new();
    let (child, addr, path) = start(&store).await;
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let request = head(&addr, &path, "Transfer-Encoding: chunked\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    // The server may stop reading once it has refused: the writer's errors are expected.
    let writer = tokio::spawn(async move {
        let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "x".repeat(64 * 1024));
        for _ in 0..(9 * 16) {
            if write.write_all(chunk.as_bytes()).await.is_err() {
                return;
            }
        }
        let _ = write.write_all(b"0\r\n\r\n").await;
    });
    let mut response = Vec::new();
    tokio::time::timeout(PATIENCE, read.read_to_end(&mut response))
        .await
        .expect("an answer in time")
        .ok();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    writer.abort();
    crate::http::stop(child).await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected_and_others_are_served() {
    let store = Store::new();
    let (child, addr, path) = start(&store).await;
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\n").as_bytes())
        .await
        .unwrap();

    let (status, _, body) = post_body(&addr, &addr, &path, CALL).await;
    assert_eq!(status, 200, "others are served meanwhile: {body}");

    // The server ends the connection (with a 408 or without a word) after its header timeout.
    let mut rest = Vec::new();
    tokio::time::timeout(HANG, slow.read_to_end(&mut rest))
        .await
        .expect("the server closes a connection whose headers never end")
        .ok();
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.is_empty() || rest.starts_with("HTTP/1.1 408"),
        "{rest}"
    );
    crate::http::stop(child).await;
}

#[tokio::test]
async fn a_body_that_stops_halfway_is_answered_408_after_the_body_timeout() {
    let store = Store::new();
    let (child, addr, path) = start(&store).await;
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let half = head(
        &addr,
        &path,
        &format!("Content-Length: {}\r\n\r\n", CALL.len()),
    );
    stream.write_all(half.as_bytes()).await.unwrap();
    stream
        .write_all(&CALL.as_bytes()[..CALL.len() / 2])
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(HANG, stream.read_to_end(&mut response))
        .await
        .expect("the server gives up on the body")
        .ok();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    let (status, _, body) = post_body(&addr, &addr, &path, CALL).await;
    assert_eq!(status, 200, "still serving: {body}");
    crate::http::stop(child).await;
}

#[tokio::test]
async fn sigterm_stops_the_server_within_its_grace_period_while_a_client_holds_half_a_body() {
    let store = Store::new();
    let (mut child, addr, path) = start(&store).await;
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    // A whole request first, on the same connection, so the server is known to serve it.
    let whole = head(
        &addr,
        &path,
        &format!("Content-Length: {}\r\n\r\n{CALL}", CALL.len()),
    );
    stream.write_all(whole.as_bytes()).await.unwrap();
    let (status, body) = read_response(&mut stream).await;
    assert_eq!(status, 200, "{body}");
    // Then headers and half a body, and nothing more.
    let half = head(
        &addr,
        &path,
        &format!("Content-Length: {}\r\n\r\n", CALL.len()),
    );
    stream.write_all(half.as_bytes()).await.unwrap();
    stream
        .write_all(&CALL.as_bytes()[..CALL.len() / 2])
        .await
        .unwrap();

    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(HANG, child.wait())
        .await
        .expect("the server exits on SIGTERM although a client holds a request open")
        .unwrap();
    assert!(status.success(), "{status}");
    drop(stream);
}
