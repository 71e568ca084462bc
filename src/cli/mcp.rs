//! `abathur mcp`: parses its arguments, opens the database and serves [`crate::mcp`] over
//! stdio or HTTP until the client goes away, SIGINT or SIGTERM.

use std::net::{Ipv4Addr, SocketAddr};

use clap::Args;

use super::error::{CliError, ExitCode};
use crate::backend::{Access, Backend, Location, Role};
use crate::mcp::{self, McpServer};

/// The arguments of `abathur mcp`.
#[derive(Debug, Args)]
pub struct McpArgs {
    /// Serve streamable HTTP on this address (`127.0.0.1:8765`, or a port alone for loopback)
    /// at the path /mcp, instead of stdio. Port 0 picks a free port; the address is printed on
    /// stderr.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen_address)]
    pub http: Option<SocketAddr>,

    /// Allow `--http` on an address other than loopback. The server has no authentication:
    /// anyone who can reach the address can read and change the queue.
    #[arg(long, requires = "http")]
    pub allow_remote: bool,
}

/// Serves MCP until the client goes away, or SIGINT or SIGTERM arrives.
pub async fn run(location: &Location, args: McpArgs) -> Result<(), CliError> {
    if let Some(addr) = args.http {
        if !addr.ip().is_loopback() && !args.allow_remote {
            return Err(CliError::new(
                ExitCode::Usage,
                format!(
                    "{addr} is not a loopback address; the MCP server has no authentication, so \
                     anyone who can reach it could read and change the queue. Pass \
                     --allow-remote to serve it anyway"
                ),
            ));
        }
    }
    // Tool calls may arrive concurrently, so the backend keeps a few connections; many server
    // processes share the file, each write waiting for the others up to the busy timeout.
    let backend = Backend::open(location, Access::Write, Role::Server).await?;
    let server = McpServer::for_backend(&backend);
    let served = match args.http {
        None => mcp::serve_stdio(server, shutdown_signal()).await,
        Some(addr) => serve_http(server, addr).await,
    };
    tracing::debug!("closing the database");
    // Closing waits for the connections to finish, so the WAL is checkpointed on the way out.
    backend.close().await;
    tracing::debug!("closed the database");
    served.map_err(|e| CliError::new(ExitCode::Internal, e.to_string()))
}

async fn serve_http(server: McpServer, addr: SocketAddr) -> Result<(), mcp::ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(mcp::ServeError::Http)?;
    let bound = listener.local_addr().map_err(mcp::ServeError::Http)?;
    if !bound.ip().is_loopback() {
        eprintln!(
            "warning: serving MCP on {bound}, which is not loopback, without authentication: \
             anyone who can reach it can read and change the queue"
        );
    }
    // Stdout is free in HTTP mode, but the address goes to stderr with the other notices, so
    // scripts can keep stdout for themselves.
    eprintln!("abathur mcp: serving on http://{bound}{}", mcp::HTTP_PATH);
    mcp::serve_http(server, listener, shutdown_signal()).await
}

/// Completes on SIGINT or SIGTERM.
pub(super) async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

/// `ADDR:PORT`, or a port alone meaning loopback.
pub(super) fn parse_listen_address(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    text.parse::<SocketAddr>().map_err(|_| {
        format!("{text:?} is not an address; give one like 127.0.0.1:8765 or [::1]:8765, or a port")
    })
}

#[cfg(test)]
mod tests {
    use super::parse_listen_address;

    #[test]
    fn a_port_alone_means_loopback() {
        assert_eq!(
            parse_listen_address("8765").unwrap().to_string(),
            "127.0.0.1:8765"
        );
        assert_eq!(
            parse_listen_address("[::1]:9").unwrap().to_string(),
            "[::1]:9"
        );
        assert!(parse_listen_address("localhost:80").is_err());
    }
}
