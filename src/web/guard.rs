//! What every request passes before it reaches a page, the API or MCP, in this order:
//!
//! 1. **Host.** The `Host` header must name this server ([`HostRule`]), against DNS
//!    rebinding: a page of another site whose name was made to resolve to this machine sends
//!    its own name, and is refused.
//! 2. **Same origin.** A request that can change state (any method but GET, HEAD and OPTIONS)
//!    is refused when the browser says it comes from another site, against cross-site request
//!    forgery: by `Sec-Fetch-Site` (which pages cannot set), or, from a browser too old to send
//!    it, by an `Origin` whose host is not the request's `Host`. Clients that are not browsers
//!    send neither header and pass.
//! 3. **Read-only.** With `--read-only`, every such request to the API, and every request to
//!    `/mcp` (whose tools write), is refused.
//! 4. **Authentication**, when the server has a token (it must, beyond loopback): the API takes
//!    `Authorization: Bearer <token>`; a browser signs in once at `/login` and gets a session
//!    cookie (HttpOnly, SameSite=Strict) that names a secret of this server's run, not the
//!    token.
//!
//! Every response then gets the security headers: a Content-Security-Policy that allows
//! scripts and styles from this server only (no inline script), and no framing.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use std::collections::VecDeque;
use std::sync::Mutex;

use axum::extract::rejection::FormRejection;
use axum::extract::{DefaultBodyLimit, Form, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::json;

use super::assets;
use crate::mcp::HTTP_PATH;

/// The shortest token `--allow-remote` accepts.
pub const MIN_TOKEN_LENGTH: usize = 16;

/// The name of the session cookie a sign-in sets, followed by `_` and the server's port:
/// browsers keep one set of cookies per host whatever the port, so two servers on one machine
/// would otherwise sign each other's browsers out.
pub const SESSION_COOKIE: &str = "abathur_session";

/// The most sessions kept at once; signing in past it ends the oldest.
const MAX_SESSIONS: usize = 10_000;

/// The longest sign-in form taken.
const MAX_SIGN_IN_BYTES: usize = 4 * 1024;

/// The Content-Security-Policy of every response.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Which `Host` headers the server answers: an IP address or `localhost` with the port it is
/// bound to (or none, on port 80), or one of the names given with `--host`, with any port or
/// none (a reverse proxy in front of the server may serve it on another port).
///
/// An IP address is always accepted: DNS rebinding needs a name, and a browser that sends an
/// address reached it by that address. `localhost` always means this machine.
#[derive(Debug, Clone)]
pub struct HostRule {
    pub(super) port: u16,
    names: Vec<String>,
}

impl HostRule {
    /// The rule for a server bound to `bound`, also answering to `names` (host names without
    /// a port, in any case).
    pub fn new(bound: SocketAddr, names: Vec<String>) -> Self {
        Self {
            port: bound.port(),
            names: names.into_iter().map(|n| n.to_ascii_lowercase()).collect(),
        }
    }

    /// Whether a request whose `Host` header is `authority` is for this server.
    pub fn allows(&self, authority: &str) -> bool {
        let Some((host, port)) = split_authority(authority) else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        if self.names.contains(&host) {
            return true;
        }
        let port_matches = match port {
            Some(port) => port == self.port,
            None => self.port == 80,
        };
        port_matches && (host.parse::<IpAddr>().is_ok() || host == "localhost")
    }
}

/// `host[:port]` or `[v6][:port]` split into host (without brackets) and port; `None` when it
/// is not an authority.
fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let valid_host = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
    if !valid_host {
        return None;
    }
    let port = match port {
        None => None,
        Some(port) => Some(port.parse::<u16>().ok()?),
    };
    Some((host, port))
}

/// Who may call the server.
#[derive(Debug, Clone)]
pub struct Access {
    /// The `Host` headers it answers.
    pub hosts: HostRule,
    /// The token that authenticates a caller; `None` lets every caller in (loopback only).
    pub token: Option<String>,
}

/// The guard's state: the access rule, `--read-only`, and the sessions signed in.
#[derive(Debug)]
pub struct Guard {
    access: Access,
    read_only: bool,
    /// The session cookie's name, with the port.
    cookie_name: String,
    /// The ids of the sessions signed in, oldest first. Each is random, made at sign-in, so a
    /// cookie never carries the token, `/logout` ends one session, and a restart ends all.
    sessions: Mutex<VecDeque<String>>,
}

impl Guard {
    pub fn new(access: Access, read_only: bool) -> Self {
        let cookie_name = format!("{SESSION_COOKIE}_{}", access.hosts.port);
        Self {
            access,
            read_only,
            cookie_name,
            sessions: Mutex::new(VecDeque::new()),
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, VecDeque<String>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new session's id, kept until sign-out.
    fn open_session(&self) -> String {
        let id = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let mut sessions = self.sessions();
        if sessions.len() >= MAX_SESSIONS {
            sessions.pop_front();
        }
        sessions.push_back(id.clone());
        id
    }

    fn session_of(&self, headers: &HeaderMap) -> Option<String> {
        let sessions = self.sessions();
        cookies(headers, &self.cookie_name)
            .find(|value| {
                sessions
                    .iter()
                    .any(|id| same_bytes(id.as_bytes(), value.as_bytes()))
            })
            .map(str::to_string)
    }

    fn close_session(&self, id: &str) {
        self.sessions().retain(|kept| kept != id);
    }

    fn token_matches(&self, given: &str) -> bool {
        self.access
            .token
            .as_deref()
            .is_some_and(|token| same_bytes(token.as_bytes(), given.as_bytes()))
    }

    fn authenticated(&self, headers: &HeaderMap) -> bool {
        if self.access.token.is_none() {
            return true;
        }
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.split_once(' ')
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            })
            .map(|(_, token)| token.trim());
        if bearer.is_some_and(|token| self.token_matches(token)) {
            return true;
        }
        self.session_of(headers).is_some()
    }
}

/// Compares in time that depends on the lengths only, not on where the bytes differ.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The values of every cookie `name` the request sends.
fn cookies<'h>(headers: &'h HeaderMap, name: &'h str) -> impl Iterator<Item = &'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(move |(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Whether a request may change state, as HTTP defines the safe methods.
fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Paths anyone may reach when the server has a token: what the sign-in page needs.
fn public(method: &Method, path: &str) -> bool {
    path == "/login" && matches!(*method, Method::GET | Method::POST)
        || *method == Method::GET && path.starts_with("/assets/")
}

/// The guard, as middleware in front of every route.
pub async fn check(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let mut response = decide(&guard, request, next).await;
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        // Not `no-referrer`: under it, a browser sends `Origin: null` with the page's own forms.
        ("referrer-policy", "same-origin"),
        ("x-frame-options", "DENY"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn decide(guard: &Guard, request: Request, next: Next) -> Response {
    let headers = request.headers();
    if headers.get_all(header::HOST).iter().count() > 1 {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "the request has more than one Host header".into(),
        );
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    // A request target in absolute form names the host itself, and it is what counts.
    if let Some(authority) = request.uri().authority() {
        if !authority.as_str().eq_ignore_ascii_case(&host) {
            return refuse(
                StatusCode::BAD_REQUEST,
                "invalid_argument",
                format!("the request is for {authority}, but its Host header says {host:?}"),
            );
        }
    }
    if !guard.access.hosts.allows(&host) {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "wrong_host",
            format!(
                "this server does not answer to the host {host:?}; use its address, localhost, \
                 or a name given to `abathur serve --host`"
            ),
        );
    }
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    if changes_state(&method) {
        if let Some(origin) = cross_origin(headers, &host) {
            return refuse(
                StatusCode::FORBIDDEN,
                "cross_origin",
                format!("a request from another origin ({origin}) cannot change anything here"),
            );
        }
    }
    if guard.read_only && (path == HTTP_PATH || path.starts_with(&format!("{HTTP_PATH}/"))) {
        return refuse(
            StatusCode::FORBIDDEN,
            "read_only",
            "the server runs with --read-only, and MCP tools can change the queue, so /mcp is off"
                .into(),
        );
    }
    if guard.read_only && changes_state(&method) && path.starts_with(super::API_PATH) {
        return refuse(
            StatusCode::FORBIDDEN,
            "read_only",
            "the server runs with --read-only: nothing can be changed through it".into(),
        );
    }
    if !public(&method, &path) && !guard.authenticated(headers) {
        let wants_page = method == Method::GET
            && !path.starts_with(super::API_PATH)
            && path != HTTP_PATH
            && !path.starts_with(&format!("{HTTP_PATH}/"));
        if wants_page {
            return Redirect::to("/login").into_response();
        }
        let mut response = refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "sign in at /login, or send the server's token as `Authorization: Bearer <token>`"
                .into(),
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    next.run(request).await
}

/// The other site a browser says the request comes from, if it does.
///
/// `Sec-Fetch-Site` decides when it is there: browsers set it and pages cannot. Otherwise the
/// `Origin` must name the request's own host, over `http` or `https` (a proxy in front may
/// speak TLS); `null` is another origin.
fn cross_origin(headers: &HeaderMap, host: &str) -> Option<String> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("(not text)");
        return (!matches!(site, "same-origin" | "none"))
            .then(|| format!("Sec-Fetch-Site: {site}"));
    }
    let origin = headers.get(header::ORIGIN)?;
    let origin = origin.to_str().unwrap_or("(not text)");
    let own = ["http://", "https://"].iter().any(|scheme| {
        origin
            .get(..scheme.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
            && origin[scheme.len()..].eq_ignore_ascii_case(host)
    });
    (!own).then(|| origin.to_string())
}

/// An error in the API's shape: `{"error": {"kind": ..., "message": ...}}`.
pub fn refuse(status: StatusCode, kind: &str, message: String) -> Response {
    (
        status,
        axum::Json(json!({ "error": { "kind": kind, "message": message } })),
    )
        .into_response()
}

/// `/login` and `/logout`.
pub fn login_router(guard: Arc<Guard>) -> Router {
    Router::new()
        .route(
            "/login",
            get(login_page)
                .post(sign_in)
                .layer(DefaultBodyLimit::max(MAX_SIGN_IN_BYTES)),
        )
        .route("/logout", post(sign_out))
        .with_state(guard)
}

async fn login_page(State(guard): State<Arc<Guard>>) -> Response {
    if guard.access.token.is_none() {
        return Redirect::to("/").into_response();
    }
    assets::login_page(None)
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
}

async fn sign_in(
    State(guard): State<Arc<Guard>>,
    form: Result<Form<SignIn>, FormRejection>,
) -> Response {
    if guard.access.token.is_none() {
        return Redirect::to("/").into_response();
    }
    let refused = |status: StatusCode, message: &str| {
        let mut page = assets::login_page(Some(message));
        *page.status_mut() = status;
        page
    };
    let Ok(Form(form)) = form else {
        return refused(
            StatusCode::BAD_REQUEST,
            "Send the form with the token in its field.",
        );
    };
    if !guard.token_matches(form.token.trim()) {
        tracing::info!("a sign-in with a wrong token was refused");
        return refused(StatusCode::UNAUTHORIZED, "That is not this server's token.");
    }
    let cookie = format!(
        "{}={}; Path=/; HttpOnly; SameSite=Strict",
        guard.cookie_name,
        guard.open_session()
    );
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn sign_out(State(guard): State<Arc<Guard>>, headers: HeaderMap) -> Response {
    if let Some(session) = guard.session_of(&headers) {
        guard.close_session(&session);
    }
    let mut response = Redirect::to("/login").into_response();
    let cookie = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        guard.cookie_name
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(port: u16, names: &[&str]) -> HostRule {
        HostRule::new(
            SocketAddr::from(([127, 0, 0, 1], port)),
            names.iter().map(|n| (*n).to_string()).collect(),
        )
    }

    #[test]
    fn hosts_are_addresses_localhost_or_given_names_on_the_bound_port() {
        let rule = rule(8080, &["Swarm.Example"]);
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST:8080",
            "[::1]:8080",
            "10.1.2.3:8080",
            "swarm.example:8080",
        ] {
            assert!(rule.allows(ok), "{ok}");
        }
        for refused in [
            "",
            "evil.example:8080",
            "localhost:8081",
            "localhost",
            "127.0.0.1",
            "localhost.evil.example:8080",
            "[::1",
            "[not-v6]:8080",
            "a b:8080",
            "localhost:80800",
            "localhost:",
            "127.0.0.1:8080@evil",
        ] {
            assert!(!rule.allows(refused), "{refused:?}");
        }
        assert!(self::rule(80, &[]).allows("localhost"));
        // A name given is taken on any port, or none, as a proxy in front may serve it.
        assert!(rule.allows("swarm.example"));
        assert!(rule.allows("swarm.example:443"));
    }

    #[test]
    fn tokens_and_cookies_compare_whole() {
        assert!(same_bytes(b"abc", b"abc"));
        assert!(!same_bytes(b"abc", b"abd"));
        assert!(!same_bytes(b"abc", b"abcd"));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; s=bad; b=2; s=xyz"),
        );
        assert_eq!(cookies(&headers, "s").collect::<Vec<_>>(), ["bad", "xyz"]);
        assert_eq!(cookies(&headers, "c").next(), None);
    }

    #[test]
    fn only_a_browser_naming_another_site_is_cross_origin() {
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.insert(*name, HeaderValue::from_static(value));
            }
            cross_origin(&headers, "localhost:1")
        };
        assert_eq!(with(&[]), None);
        assert_eq!(with(&[("origin", "http://localhost:1")]), None);
        assert_eq!(with(&[("origin", "HTTPS://LOCALHOST:1")]), None);
        assert!(with(&[("origin", "http://evil.example")]).is_some());
        assert!(with(&[("origin", "http://localhost:1.evil.example")]).is_some());
        assert!(with(&[("origin", "null")]).is_some());
        assert!(with(&[("sec-fetch-site", "cross-site")]).is_some());
        assert!(with(&[("sec-fetch-site", "same-site")]).is_some());
        assert_eq!(with(&[("sec-fetch-site", "same-origin")]), None);
        // A page of this server's under `Referrer-Policy: no-referrer` sends `Origin: null`
        // with its forms; the browser's own word decides.
        assert_eq!(
            with(&[("sec-fetch-site", "same-origin"), ("origin", "null")]),
            None
        );
        assert!(with(&[
            ("sec-fetch-site", "cross-site"),
            ("origin", "http://localhost:1")
        ])
        .is_some());
    }
}
