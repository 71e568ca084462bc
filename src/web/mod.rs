//! `abathur serve`: one HTTP server for the dashboard at `/`, the JSON API at `/api/v1` (its
//! OpenAPI document at `/api/v1/openapi.json`) and the MCP endpoint at `/mcp`.
//!
//! Everything it serves is inside the binary (`assets`); nothing is fetched from elsewhere.
//! The API reads and acts through the backend's ports only, so it works on every backend.
//! `guard` holds what every request passes first: the `Host` check, authentication when the
//! server is reachable beyond loopback, the same-origin check of requests that change state,
//! `--read-only`, and the security headers of every response. docs/DASHBOARD.md describes the
//! pages, the API and the security model.

mod agents;
mod api;
mod assets;
mod bulk;
mod dag;
mod events;
mod guard;
mod knowledge;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::mcp::{self, McpServer};

pub use guard::{Access, HostRule, MIN_TOKEN_LENGTH};

/// The path of the JSON API.
pub const API_PATH: &str = "/api/v1";

/// How the server is reached and what it allows.
#[derive(Debug, Clone)]
pub struct WebOptions {
    /// Who may call it, and which `Host` headers it answers.
    pub access: Access,
    /// Refuse every request that would change the queue, and hide the actions.
    pub read_only: bool,
}

/// The whole server as one router: dashboard, API and MCP, behind the guard. `stop` ends the
/// MCP sessions and the event streams when it is cancelled.
pub fn router(backend: &Backend, options: &WebOptions, stop: &CancellationToken) -> Router {
    let state = api::State::new(backend, options.read_only, stop.clone());
    let (api, _) = api::router().split_for_parts();
    let guard = Arc::new(guard::Guard::new(options.access.clone(), options.read_only));
    Router::new()
        .merge(api.with_state(state))
        // Hosts are checked by the guard, for every path alike.
        .merge(mcp::http_router(
            McpServer::for_backend(backend),
            stop,
            false,
        ))
        .merge(assets::router())
        .merge(guard::login_router(guard.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(whole_body))
        .layer(axum::middleware::from_fn_with_state(guard, guard::check))
}

/// The most a request body to the API or the sign-in may hold: a bulk action on 10,000 ids
/// takes about 400 KB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Reads a request's whole body, within [`mcp::BODY_READ_TIMEOUT`] in all and
/// [`MAX_BODY_BYTES`], before a handler sees it: a body that trickles in cannot hold a
/// connection open. `/mcp` has the same bounds in its own edge.
async fn whole_body(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use http_body_util::BodyExt;

    let path = request.uri().path();
    if path == mcp::HTTP_PATH || path.starts_with(&format!("{}/", mcp::HTTP_PATH)) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let limited = http_body_util::Limited::new(body, MAX_BODY_BYTES);
    let bytes = match tokio::time::timeout(mcp::BODY_READ_TIMEOUT, limited.collect()).await {
        Err(_) => {
            return guard::refuse(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                "invalid_argument",
                format!(
                    "the request body did not arrive within {} s",
                    mcp::BODY_READ_TIMEOUT.as_secs()
                ),
            )
        }
        Ok(Err(e)) => {
            let too_large = e.is::<http_body_util::LengthLimitError>();
            return guard::refuse(
                if too_large {
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE
                } else {
                    axum::http::StatusCode::BAD_REQUEST
                },
                "invalid_argument",
                if too_large {
                    format!("the request body is larger than {MAX_BODY_BYTES} bytes")
                } else {
                    "cannot read the request body".into()
                },
            );
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
    .await
}

/// Anything else: a JSON error, as the API's are.
async fn not_found(uri: axum::http::Uri) -> axum::response::Response {
    guard::refuse(
        axum::http::StatusCode::NOT_FOUND,
        "not_found",
        format!("there is nothing at {}", uri.path()),
    )
}

/// A method the path does not take: a JSON error, as the API's are.
async fn method_not_allowed(
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> axum::response::Response {
    guard::refuse(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not take {method}", uri.path()),
    )
}

/// Serves [`router`] on `listener` until `shutdown` completes, then lets requests in flight
/// finish for up to [`mcp::SHUTDOWN_GRACE`].
///
/// # Errors
/// The listener's I/O error.
pub async fn serve(
    backend: &Backend,
    listener: TcpListener,
    options: &WebOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let stop = CancellationToken::new();
    let router = router(backend, options, &stop);
    mcp::serve_router(router, listener, shutdown, stop).await
}
