//! The streamable HTTP transport: rmcp's service behind an edge that bounds what a client may
//! hold, and a server loop that stops within [`SHUTDOWN_GRACE`] whatever clients do (which
//! `abathur serve` shares).
//!
//! Each connection is served by hyper with a header read timeout. Before rmcp sees a POST,
//! the edge refuses a declared `Content-Length` above [`MAX_MESSAGE_BYTES`] at once (413),
//! reads the body within [`BODY_READ_TIMEOUT`] and the same size limit (chunked bodies too),
//! and answers what [`super::frame`] refuses.

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::frame::{self, Verdict, MAX_MESSAGE_BYTES};

/// How long a client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client may take to send a request's body, from the end of its headers.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long requests in flight may take to finish once shutdown begins. Connections still open
/// then are closed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` until `shutdown` completes, then for at most
/// [`SHUTDOWN_GRACE`] more. `stop` is cancelled when shutdown begins. Each connection has
/// [`HEADER_READ_TIMEOUT`] to send a request's headers.
pub async fn serve(
    router: axum::Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // the listener itself still works.
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let service = TowerToHyperService::new(router.clone());
                let stop = stop.clone();
                connections.spawn(async move {
                    let connection = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_READ_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(connection);
                    let served = tokio::select! {
                        served = connection.as_mut() => served,
                        () = stop.cancelled() => {
                            connection.as_mut().graceful_shutdown();
                            connection.await
                        }
                    };
                    if let Err(e) = served {
                        tracing::debug!(%peer, error = %e, "a connection ended with an error");
                    }
                });
            }
        }
    }
    tracing::debug!(
        connections = connections.len(),
        "shutting down the HTTP server"
    );
    stop.cancel();
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::info!(
            connections = connections.len(),
            "closing connections still open after the shutdown grace period"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Bounds a POST's body and checks its message before rmcp reads it.
pub(super) async fn edge(request: Request, next: axum::middleware::Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_MESSAGE_BYTES as u64) {
        return too_large();
    }
    let (mut parts, body) = request.into_parts();
    let bytes = match tokio::time::timeout(BODY_READ_TIMEOUT, collect(body)).await {
        Err(_) => {
            return plain(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s",
                    BODY_READ_TIMEOUT.as_secs()
                ),
            )
        }
        Ok(Err(Collect::TooLarge)) => return too_large(),
        Ok(Err(Collect::Failed(e))) => {
            tracing::debug!(error = %e, "cannot read a request body");
            return plain(
                StatusCode::BAD_REQUEST,
                "cannot read the request body".into(),
            );
        }
        Ok(Ok(bytes)) => bytes,
    };
    // rmcp reads the body again, and takes a byte order mark for a syntax error.
    let bytes = match frame::without_bom(&bytes) {
        unmarked if unmarked.len() < bytes.len() => {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(unmarked.len()));
            unmarked.to_vec()
        }
        _ => bytes,
    };
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
    // A body of another type is rmcp's to refuse (415).
    if is_json {
        match frame::check(&bytes) {
            Verdict::Pass(_) => {}
            Verdict::Answer(answer) => {
                tracing::debug!(error = %frame::describe(&answer), "answering a message at the edge");
                let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_REQUEST);
                return (
                    status,
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )],
                    answer.body.to_string(),
                )
                    .into_response();
            }
            Verdict::Drop => return StatusCode::ACCEPTED.into_response(),
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

enum Collect {
    TooLarge,
    Failed(axum::Error),
}

/// The whole body, refused as soon as it passes [`MAX_MESSAGE_BYTES`], whatever its framing.
async fn collect(mut body: Body) -> Result<Vec<u8>, Collect> {
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Collect::Failed)?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > MAX_MESSAGE_BYTES {
                return Err(Collect::TooLarge);
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

fn too_large() -> Response {
    let mut response = plain(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the request body is larger than the limit of {} ({MAX_MESSAGE_BYTES} bytes)",
            abathur_core::limits::bytes(MAX_MESSAGE_BYTES)
        ),
    );
    // The rest of the body is never read, so the connection cannot carry another request.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn plain(status: StatusCode, text: String) -> Response {
    (status, text).into_response()
}
