//! The guard: hosts, origins, read-only, tokens and sign-in, and the headers of every answer.

use std::process::Stdio;

use crate::server::{assert_error, json_of, Served, Store};

const TOKEN: &str = "correct-horse-battery-staple";

#[tokio::test]
async fn another_host_or_origin_is_refused_and_changes_nothing() {
    let store = Store::new();
    let task = store.submit("stay ready", &[]);
    let served = store.serve(&[]).await;
    let port = served.addr.rsplit(':').next().unwrap().to_string();

    // DNS rebinding: a name that is not this server's.
    for host in [
        format!("evil.example:{port}"),
        format!("localhost:{}", 1),
        String::new(),
    ] {
        let response = served
            .http
            .get(served.url("/api/v1/overview"))
            .header("host", host.as_str())
            .send()
            .await
            .unwrap();
        assert_error(
            &json_of(response, 421).await,
            "wrong_host",
            "does not answer to",
        );
    }
    for host in [format!("localhost:{port}"), format!("[::1]:{port}")] {
        let response = served
            .http
            .get(served.url("/api/v1/overview"))
            .header("host", host.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{host}");
    }

    // Cross-site request forgery: a page of another origin, or a browser saying so.
    let cancel = served.url(&format!("/api/v1/tasks/{task}/cancel"));
    for (name, value) in [
        ("origin", "http://evil.example".to_string()),
        ("origin", "null".to_string()),
        ("origin", format!("http://localhost:{port}")),
        ("sec-fetch-site", "cross-site".to_string()),
        ("sec-fetch-site", "same-site".to_string()),
    ] {
        let response = served
            .http
            .post(&cancel)
            .header(name, value.as_str())
            .send()
            .await
            .unwrap();
        assert_error(
            &json_of(response, 403).await,
            "cross_origin",
            "another origin",
        );
    }
    assert_eq!(store.show(&task)["status"], "ready");

    // The same origin may.
    let response = served
        .http
        .post(&cancel)
        .header("origin", format!("http://{}", served.addr))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    json_of(response, 200).await;
    assert_eq!(store.show(&task)["status"], "cancelled");
    served.stop().await;
}

#[tokio::test]
async fn every_answer_carries_the_security_headers_and_the_page_has_no_inline_script() {
    let store = Store::new();
    let served = store.serve(&[]).await;
    for path in [
        "/",
        "/assets/app.js",
        "/assets/app.css",
        "/api/v1/overview",
        "/nothing",
    ] {
        let response = served.get(path).await;
        let headers = response.headers();
        let csp = headers
            .get("content-security-policy")
            .unwrap_or_else(|| panic!("{path} has no CSP"))
            .to_str()
            .unwrap();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(headers.get("x-content-type-options").unwrap(), "nosniff");
    }
    let page = served.get("/").await;
    assert_eq!(
        page.headers().get("content-type").unwrap(),
        "text/html; charset=utf-8"
    );
    let html = page.text().await.unwrap();
    for script in html.split("<script").skip(1) {
        let tag = script.split('>').next().unwrap();
        assert!(tag.contains("src="), "an inline script: <script{tag}>");
    }
    assert!(!html.contains(" style="), "an inline style attribute");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "a resource from elsewhere"
    );
    let script = served.get("/assets/app.js").await;
    assert!(script
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    served.stop().await;
}

#[tokio::test]
async fn read_only_refuses_every_change_and_turns_mcp_off() {
    let store = Store::new();
    let task = store.submit("look, do not touch", &[]);
    let served = store.serve(&["--read-only"]).await;
    let overview = served.get_json("/api/v1/overview", 200).await;
    assert_eq!(overview["read_only"], true);
    for action in ["cancel", "retry"] {
        let refused = served
            .post_json(&format!("/api/v1/tasks/{task}/{action}"), 403)
            .await;
        assert_error(&refused, "read_only", "--read-only");
    }
    let bulk = served
        .http
        .post(served.url("/api/v1/actions"))
        .json(&serde_json::json!({"action": "cancel", "ids": [task]}))
        .send()
        .await
        .unwrap();
    assert_error(&json_of(bulk, 403).await, "read_only", "--read-only");
    let mcp = served
        .http
        .post(served.url("/mcp"))
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    assert_error(&json_of(mcp, 403).await, "read_only", "/mcp is off");
    assert_eq!(store.show(&task)["status"], "ready");
    served.stop().await;
}

#[tokio::test]
async fn beyond_loopback_the_server_needs_allow_remote_and_a_good_token() {
    let store = Store::new();
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "tooshort\n").unwrap();
    for (args, token, needle) in [
        (vec!["--listen", "0.0.0.0:0"], None, "--allow-remote"),
        (
            vec!["--listen", "0.0.0.0:0", "--allow-remote"],
            None,
            "needs a token",
        ),
        (
            vec!["--listen", "0.0.0.0:0", "--allow-remote"],
            Some("short"),
            "use at least 16",
        ),
        (
            vec![
                "--listen",
                "0.0.0.0:0",
                "--allow-remote",
                "--token-file",
                short.to_str().unwrap(),
            ],
            None,
            "8 characters",
        ),
        (
            vec![
                "--listen",
                "0.0.0.0:0",
                "--allow-remote",
                "--token-file",
                "/no/such/file",
            ],
            None,
            "cannot read the token file",
        ),
        (vec!["--host", "evil.example:80"], None, "not a host name"),
        (vec!["--listen", "nowhere"], None, "is not an address"),
    ] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_abathur"));
        cmd.arg("--db").arg(store.path()).arg("serve").args(&args);
        cmd.env_remove("ABATHUR_TOKEN").stdin(Stdio::null());
        if let Some(token) = token {
            cmd.env("ABATHUR_TOKEN", token);
        }
        let output = cmd.output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn with_a_token_callers_sign_in_or_send_it() {
    let store = Store::new();
    let task = store.submit("guarded", &[]);
    let mut cmd = store.serve_command(&["--listen", "127.0.0.1:0"]);
    cmd.env("ABATHUR_TOKEN", TOKEN);
    let served = Served::start(cmd).await;

    let refused = served.get_json("/api/v1/overview", 401).await;
    assert_error(&refused, "unauthorized", "sign in at /login");
    let refused = served
        .post_json(&format!("/api/v1/tasks/{task}/cancel"), 401)
        .await;
    assert_error(&refused, "unauthorized", "Bearer");
    let wrong = served
        .http
        .get(served.url("/api/v1/overview"))
        .bearer_auth("correct-horse-battery-stapl3")
        .send()
        .await
        .unwrap();
    json_of(wrong, 401).await;
    assert_eq!(store.show(&task)["status"], "ready");

    let page = served.get("/").await;
    assert_eq!(page.status().as_u16(), 303);
    assert_eq!(page.headers().get("location").unwrap(), "/login");
    let login = served.get("/login").await;
    assert_eq!(login.status().as_u16(), 200);
    assert!(login.text().await.unwrap().contains("name=\"token\""));
    assert_eq!(served.get("/assets/app.css").await.status().as_u16(), 200);

    let bearer = served
        .http
        .get(served.url("/api/v1/overview"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    json_of(bearer, 200).await;

    // A wrong token at the sign-in sets no cookie.
    let wrong = served
        .http
        .post(served.url("/login"))
        .form(&[("token", "not it at all, sorry")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    // Nor does a sign-in from another origin, even with the token.
    let forged = served
        .http
        .post(served.url("/login"))
        .header("origin", "http://evil.example")
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 403);
    assert!(forged.headers().get("set-cookie").is_none());

    let signed_in = served
        .http
        .post(served.url("/login"))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status().as_u16(), 303);
    let cookie = signed_in
        .headers()
        .get("set-cookie")
        .expect("a session cookie")
        .to_str()
        .unwrap()
        .to_string();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(
        !cookie.contains(TOKEN),
        "the cookie carries the token: {cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let with_cookie = served
        .http
        .get(served.url("/api/v1/overview"))
        .header("cookie", session.as_str())
        .send()
        .await
        .unwrap();
    json_of(with_cookie, 200).await;
    let page = served
        .http
        .get(served.url("/"))
        .header("cookie", session.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    served.stop().await;
}

#[tokio::test]
async fn mcp_is_served_beside_the_dashboard() {
    let store = Store::new();
    let served = store.serve(&[]).await;
    let response = served
        .http
        .post(served.url("/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .body(
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
        )
        .send()
        .await
        .unwrap();
    let init = json_of(response, 200).await;
    assert_eq!(init["result"]["serverInfo"]["name"], "abathur", "{init}");
    served.stop().await;
}

/// Sends `request` as it is on a new connection and returns the status line and the rest.
async fn raw(addr: &str, request: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(crate::server::PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("an answer in time")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).to_string();
    let (status, rest) = answer.split_once("\r\n").unwrap_or((&answer, ""));
    (status.to_string(), rest.to_string())
}

#[tokio::test]
async fn a_request_naming_two_hosts_is_refused() {
    let store = Store::new();
    let served = store.serve(&[]).await;
    let addr = served.addr.clone();
    let (status, body) = raw(
        &addr,
        &format!(
            "GET /api/v1/overview HTTP/1.1\r\nHost: {addr}\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert!(status.contains(" 400 "), "{status} {body}");
    assert!(body.contains("more than one Host header"), "{body}");
    let (status, body) = raw(
        &addr,
        &format!(
            "GET http://evil.example/api/v1/overview HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert!(status.contains(" 400 "), "{status} {body}");
    assert!(body.contains("the request is for evil.example"), "{body}");
    served.stop().await;
}

#[tokio::test]
async fn behind_a_proxy_a_named_host_and_its_https_origin_are_this_server() {
    let store = Store::new();
    let task = store.submit("behind a proxy", &[]);
    let served = store.serve(&["--host", "swarm.example"]).await;
    // The proxy keeps the browser's Host, on the default port.
    for host in ["swarm.example", "swarm.example:443", "SWARM.example:8443"] {
        let response = served
            .http
            .get(served.url("/api/v1/overview"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{host}");
    }
    let response = served
        .http
        .post(served.url(&format!("/api/v1/tasks/{task}/cancel")))
        .header("host", "swarm.example")
        .header("origin", "https://swarm.example")
        .send()
        .await
        .unwrap();
    json_of(response, 200).await;
    assert_eq!(store.show(&task)["status"], "cancelled");
    served.stop().await;
}

#[tokio::test]
async fn every_failure_is_json_and_a_bad_sign_in_form_gets_the_page() {
    let store = Store::new();
    let served = store.serve(&[]).await;
    let response = served
        .http
        .put(served.url("/api/v1/overview"))
        .send()
        .await
        .unwrap();
    assert_error(
        &json_of(response, 405).await,
        "method_not_allowed",
        "does not take PUT",
    );
    served.stop().await;

    let mut cmd = store.serve_command(&["--listen", "127.0.0.1:0"]);
    cmd.env("ABATHUR_TOKEN", TOKEN);
    let guarded = Served::start(cmd).await;
    for body in ["", "tokenx=1"] {
        let response = guarded
            .http
            .post(guarded.url("/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400, "{body:?}");
        assert!(response.headers().get("set-cookie").is_none());
        let page = response.text().await.unwrap();
        assert!(page.contains("name=\"token\""), "{page}");
    }
    let huge = format!("token={}", "x".repeat(10_000));
    let response = guarded
        .http
        .post(guarded.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error(), "{}", response.status());
    guarded.stop().await;
}

#[tokio::test]
async fn each_sign_in_is_a_session_of_its_own_and_signing_out_ends_it() {
    let store = Store::new();
    let mut cmd = store.serve_command(&["--listen", "127.0.0.1:0"]);
    cmd.env("ABATHUR_TOKEN", TOKEN);
    let served = Served::start(cmd).await;
    let port = served.addr.rsplit(':').next().unwrap().to_string();
    let sign_in = || async {
        let response = served
            .http
            .post(served.url("/login"))
            .form(&[("token", TOKEN)])
            .send()
            .await
            .unwrap();
        let cookie = response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            cookie.starts_with(&format!("abathur_session_{port}=")),
            "the cookie is named for the port: {cookie}"
        );
        cookie.split(';').next().unwrap().to_string()
    };
    let first = sign_in().await;
    let second = sign_in().await;
    assert_ne!(first, second);
    let status = |cookie: String| {
        let http = served.http.clone();
        let url = served.url("/api/v1/overview");
        async move {
            http.get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status(first.clone()).await, 200);
    // Another server's cookie of the same name first does not hide this one's.
    assert_eq!(
        status(format!(
            "{}=stale; {first}",
            first.split('=').next().unwrap()
        ))
        .await,
        200
    );
    let out = served
        .http
        .post(served.url("/logout"))
        .header("cookie", first.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(out.status().as_u16(), 303);
    assert_eq!(status(first).await, 401, "signed out");
    assert_eq!(status(second).await, 200, "the other session goes on");
    served.stop().await;
}

#[tokio::test]
async fn a_sign_in_body_that_trickles_in_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let store = Store::new();
    let mut cmd = store.serve_command(&["--listen", "127.0.0.1:0"]);
    cmd.env("ABATHUR_TOKEN", TOKEN);
    let served = Served::start(cmd).await;
    let mut stream = tokio::net::TcpStream::connect(&served.addr).await.unwrap();
    stream
        .write_all(
            format!(
                "POST /login HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                 Content-Length: 1000\r\n\r\ntoken=",
                served.addr
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // One byte now and then, never the whole body: the server answers when its bound for the
    // whole body (30 s) is up, and does not wait for the rest.
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            tick.tick().await;
            if writer.write_all(b"x").await.is_err() {
                return;
            }
        }
    });
    let mut answer = vec![0u8; 64];
    let read = tokio::time::timeout(crate::server::PATIENCE, reader.read(&mut answer))
        .await
        .expect("an answer before the test gives up")
        .unwrap();
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer[..read]).to_string();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    served.stop().await;
}
