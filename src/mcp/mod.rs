//! The MCP server: the queue, memory and session services as MCP tools, over stdio or
//! streamable HTTP.
//!
//! [`McpServer`] is the handler; [`serve_stdio`] and [`serve_http`] run it until the client
//! goes away or the shutdown future completes. The tools, their arguments and their results
//! are described in `docs/MCP.md`.
//!
//! Every tool result is one text content block holding a JSON document. A failure is a tool
//! result flagged `isError` whose text is `{"error": {"kind": ..., "message": ...}}`, with the
//! kinds of [`ErrorKind`]; the server stays up.

mod frame;
mod http;
mod memory;
mod params;
mod reply;
mod server;
mod sessions;
mod stdio;
mod tasks;

use std::future::Future;
use std::io;
use std::sync::Arc;

use rmcp::service::ServerInitializeError;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::ServiceExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use frame::MAX_MESSAGE_BYTES;
pub use http::{serve as serve_router, BODY_READ_TIMEOUT, HEADER_READ_TIMEOUT, SHUTDOWN_GRACE};
pub use reply::{ErrorKind, ToolError};
pub use server::McpServer;

/// The path the HTTP transport serves MCP on.
pub const HTTP_PATH: &str = "/mcp";

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The client's first messages were not an MCP handshake.
    #[error("the client did not start an MCP session: {0}")]
    Handshake(String),
    /// The HTTP listener failed.
    #[error("the HTTP server failed: {0}")]
    Http(#[source] io::Error),
    /// The task serving the connection panicked or was aborted.
    #[error("the server stopped unexpectedly: {0}")]
    Task(String),
}

/// Serves `server` over stdin and stdout until the client closes stdin, or `shutdown`
/// completes. Nothing else may write to stdout meanwhile: it carries the protocol.
///
/// # Errors
/// [`ServeError::Handshake`] when the client sends something other than an MCP handshake;
/// [`ServeError::Task`] when the serving task fails.
pub async fn serve_stdio(
    server: McpServer,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let stop = CancellationToken::new();
    let serving = async {
        let running = match server.serve_with_ct(checked_stdio(), stop.clone()).await {
            Ok(running) => running,
            // The client left (or we were told to stop) before the handshake finished.
            Err(ServerInitializeError::ConnectionClosed(_) | ServerInitializeError::Cancelled) => {
                return Ok(());
            }
            Err(e) => return Err(ServeError::Handshake(e.to_string())),
        };
        let reason = running
            .waiting()
            .await
            .map_err(|e| ServeError::Task(e.to_string()))?;
        tracing::debug!(?reason, "the MCP session ended");
        Ok(())
    };
    tokio::pin!(serving);
    tokio::select! {
        result = &mut serving => result,
        () = shutdown => {
            tracing::debug!("shutting down the MCP server");
            stop.cancel();
            serving.await
        }
    }
}

/// Stdin and stdout as a transport whose every incoming line is checked before rmcp reads it.
/// Non-blocking pipes when stdin and stdout are pipes, as an MCP client launches us: a read
/// blocked on a plain stdin would keep the process alive after a signal.
fn checked_stdio() -> stdio::CheckedLines<rmcp::transport::io::StdioReader> {
    let (read, write) = rmcp::transport::io::stdio_pipes();
    stdio::CheckedLines::new(read, write)
}

/// Serves `server` over streamable HTTP at [`HTTP_PATH`] on `listener` until `shutdown`
/// completes, then lets requests in flight finish for up to [`SHUTDOWN_GRACE`].
///
/// A client has [`HEADER_READ_TIMEOUT`] to send a request's headers and [`BODY_READ_TIMEOUT`]
/// for its body; a body above [`MAX_MESSAGE_BYTES`] is refused with 413, at once when its
/// `Content-Length` says so.
///
/// Each request is answered on its own, with a JSON response and no session to keep: any
/// number of clients may call tools at once. On a loopback listener, requests whose `Host`
/// header is not a loopback name are refused, against DNS rebinding; on any other address the
/// caller has chosen to be reachable, and every host is accepted.
///
/// # Errors
/// [`ServeError::Http`] when the listener fails.
pub async fn serve_http(
    server: McpServer,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let loopback = listener
        .local_addr()
        .map_err(ServeError::Http)?
        .ip()
        .is_loopback();
    let stop = CancellationToken::new();
    let router = http_router(server, &stop, loopback);
    http::serve(router, listener, shutdown, stop)
        .await
        .map_err(ServeError::Http)
}

/// The MCP endpoint as a router serving [`HTTP_PATH`], behind the edge that bounds and checks
/// what a client sends. Its sessions end when `stop` is cancelled. With `check_hosts`, rmcp
/// refuses requests whose `Host` header is not a loopback name (against DNS rebinding); a
/// caller that checks hosts itself, or serves on purpose beyond loopback, passes false.
pub fn http_router(server: McpServer, stop: &CancellationToken, check_hosts: bool) -> axum::Router {
    let mut config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_max_request_body_bytes(MAX_MESSAGE_BYTES)
        .with_cancellation_token(stop.child_token());
    if !check_hosts {
        config = config.disable_allowed_hosts();
    }
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    axum::Router::new()
        .nest_service(HTTP_PATH, service)
        .layer(axum::middleware::from_fn(http::edge))
}
