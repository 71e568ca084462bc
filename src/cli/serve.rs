//! `abathur serve`: the dashboard, the JSON API and MCP over HTTP ([`crate::web`]) until SIGINT
//! or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use super::error::{CliError, ExitCode};
use super::mcp::{parse_listen_address, shutdown_signal};
use crate::backend::{Access, Backend, Location, Role};
use crate::web::{self, HostRule, WebOptions, MIN_TOKEN_LENGTH};

/// The environment variable that gives the token.
pub const TOKEN_VARIABLE: &str = "ABATHUR_TOKEN";

/// The arguments of `abathur serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on (a port alone means loopback; port 0 picks a free port, which
    /// is printed on stderr).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080", value_parser = parse_listen_address)]
    pub listen: SocketAddr,

    /// Listen on an address other than loopback. Needs a token, from ABATHUR_TOKEN or
    /// --token-file: browsers sign in with it at /login, API clients send it as
    /// `Authorization: Bearer <token>`.
    #[arg(long)]
    pub allow_remote: bool,

    /// Read the token from the first line of this file (instead of ABATHUR_TOKEN). With a
    /// token, every caller must present it, on loopback too.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// Also answer to this host name (the name in the browser's address bar), besides IP
    /// addresses and localhost. Repeat it for more names.
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,

    /// Show the queue without the actions, refuse every change on the server, and turn /mcp
    /// off (its tools can write). The database is opened only to read.
    #[arg(long)]
    pub read_only: bool,
}

/// Serves until SIGINT or SIGTERM.
pub async fn run(location: &Location, args: ServeArgs) -> Result<(), CliError> {
    let token = token(&args)?;
    if !args.listen.ip().is_loopback() {
        if !args.allow_remote {
            return Err(usage(format!(
                "{} is not a loopback address; anyone who can reach it could read and change \
                 the queue. Pass --allow-remote, with a token in {TOKEN_VARIABLE} or \
                 --token-file",
                args.listen
            )));
        }
        if token.is_none() {
            return Err(usage(format!(
                "--allow-remote needs a token: set {TOKEN_VARIABLE} or pass --token-file, so \
                 that only those who know it can use the server"
            )));
        }
    }
    for name in &args.hosts {
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
        if !valid {
            return Err(usage(format!(
                "--host {name:?} is not a host name; give the name alone, like swarm.example.com"
            )));
        }
    }
    let access = if args.read_only {
        Access::Read
    } else {
        Access::Write
    };
    let backend = Backend::open(location, access, Role::Server).await?;
    let served = serve(&backend, &args, token).await;
    backend.close().await;
    served
}

async fn serve(backend: &Backend, args: &ServeArgs, token: Option<String>) -> Result<(), CliError> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| {
            CliError::new(
                ExitCode::Internal,
                format!("cannot listen on {}: {e}", args.listen),
            )
        })?;
    let bound = listener
        .local_addr()
        .map_err(|e| CliError::internal("cannot read the address listened on", &e))?;
    let options = WebOptions {
        access: web::Access {
            hosts: HostRule::new(bound, args.hosts.clone()),
            token,
        },
        read_only: args.read_only,
    };
    eprintln!(
        "abathur serve: the dashboard is at http://{bound}/ (API http://{bound}{}, MCP {})",
        web::API_PATH,
        if args.read_only {
            "off: --read-only".to_string()
        } else {
            format!("http://{bound}{}", crate::mcp::HTTP_PATH)
        }
    );
    web::serve(backend, listener, &options, shutdown_signal())
        .await
        .map_err(|e| CliError::new(ExitCode::Internal, format!("the HTTP server failed: {e}")))
}

/// The token from --token-file or ABATHUR_TOKEN, checked.
fn token(args: &ServeArgs) -> Result<Option<String>, CliError> {
    let (token, from) = match &args.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                usage(format!(
                    "cannot read the token file {}: {e}",
                    path.display()
                ))
            })?;
            (
                text.lines().next().unwrap_or_default().trim().to_string(),
                format!("the token file {}", path.display()),
            )
        }
        None => match std::env::var(TOKEN_VARIABLE) {
            Ok(token) => (token.trim().to_string(), TOKEN_VARIABLE.to_string()),
            Err(std::env::VarError::NotPresent) => return Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(usage(format!("{TOKEN_VARIABLE} is not valid UTF-8")))
            }
        },
    };
    let length = token.chars().count();
    if length < MIN_TOKEN_LENGTH {
        return Err(usage(format!(
            "the token in {from} has {length} characters; use at least {MIN_TOKEN_LENGTH}, \
             for example the output of `openssl rand -hex 24`"
        )));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(usage(format!(
            "the token in {from} holds spaces or characters outside printable ASCII; a header \
             could not carry it"
        )));
    }
    Ok(Some(token))
}

fn usage(message: String) -> CliError {
    CliError::new(ExitCode::Usage, message)
}
