//! whoami: a service that answers every request with its own name and a
//! description of the request it received.
//!
//! Put three replicas behind a load balancer, send a few requests, and the
//! `name` field shows the rotation: round-robin made visible. The name is the
//! replica's identity, not its process id: in containers every service's main
//! process is PID 1, so PIDs cannot tell replicas apart, but each container
//! gets its own hostname, so the hostname (or an explicit `--name`) can.
//!
//! The rest of the reply shows the request as the backend saw it, after the
//! proxy had its say: the `host` header, the `x-forwarded-*` headers, and the
//! `remote_addr` of the TCP peer, which behind a proxy is the proxy itself.
//!
//! `GET /cached` is for the caching tour: see [`app`].
//! `/ws` is also a WebSocket endpoint: a client that asks to upgrade is
//! greeted with one text message naming the replica (`connected to
//! whoami-1`), then every text or binary message it sends comes back
//! unchanged, until it closes. Through a proxy this shows the handshake
//! passing through and, connection after connection, the round-robin.
//! A plain `GET /ws` is echoed as JSON like any other request.
//!
//! With `--proxy-protocol` (see [`crate::serve_accepting_proxy_protocol`]), a
//! connection may start with a PROXY protocol header, and the reply's
//! `proxy_protocol` shows what it said: the client a layer-4 proxy reported,
//! next to the TCP peer (the proxy itself) in `remote_addr`.
//!
//! Run with: `cargo run -p backends --bin whoami -- --name whoami-1`

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router, middleware};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};

/// Name used when neither `--name`, `HOSTNAME` nor `/etc/hostname` gives one.
const FALLBACK_NAME: &str = "whoami";

/// Response header that carries the replica's name, so the replica can be
/// identified even from responses whose body is not JSON (like `/health`).
pub const SERVED_BY_HEADER: &str = "x-served-by";

/// Who this replica is: the name that tells it apart from its siblings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The replica's name, as reported in every answer.
    pub name: String,
}

impl Identity {
    /// Picks the replica's name: the `explicit` one if given, else the
    /// `HOSTNAME` environment variable (set by Docker to the container id),
    /// else the contents of `/etc/hostname`, else `"whoami"`.
    ///
    /// Blank values are skipped, so `--name ""` falls through to the hostname.
    pub fn new(explicit: Option<String>) -> Self {
        let name = choose_name(
            explicit,
            || std::env::var("HOSTNAME").ok(),
            || std::fs::read_to_string("/etc/hostname").ok(),
        );
        Self { name }
    }
}

/// The first non-blank candidate, trimmed; the later candidates are only
/// looked up when the earlier ones give nothing.
fn choose_name(
    explicit: Option<String>,
    env_hostname: impl FnOnce() -> Option<String>,
    file_hostname: impl FnOnce() -> Option<String>,
) -> String {
    fn non_blank(value: Option<String>) -> Option<String> {
        value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }
    non_blank(explicit)
        .or_else(|| non_blank(env_hostname()))
        .or_else(|| non_blank(file_hostname()))
        .unwrap_or_else(|| FALLBACK_NAME.to_owned())
}

/// What whoami answers: the replica's name and the request as it arrived.
///
/// This is the JSON body of every answer except `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Echo {
    /// Name of the replica that answered.
    pub name: String,
    /// Request method, such as `GET`.
    pub method: String,
    /// Request path, without the query string.
    pub path: String,
    /// Raw query string (after `?`), or `null` when there was none.
    pub query: Option<String>,
    /// Address of the TCP peer that sent the request, as `ip:port`. Behind a
    /// proxy this is the proxy's address, not the browser's.
    pub remote_addr: Option<String>,
    /// Request headers by lowercase name, sorted; a header sent several times
    /// has its values joined with `", "`.
    pub headers: BTreeMap<String, String>,
    /// Size of the request body in bytes; the body itself is read and dropped.
    pub body_bytes: u64,
    /// What a PROXY protocol header in front of the connection said (the
    /// client's address as a layer-4 proxy reported it), beside the TCP
    /// peer in `remote_addr`; `null` when the connection had none (or
    /// whoami was started without `--proxy-protocol`).
    #[serde(default)]
    pub proxy_protocol: Option<crate::proxy_protocol::ProxySeen>,
}

/// The whoami service: `GET /health` answers `ok`, `GET /cached` answers with
/// caching headers chosen by its query (see `cached`), and every other request,
/// whatever its method or path, is echoed back as an [`Echo`] JSON body.
///
/// Every answer carries an `x-served-by: <name>` header.
pub fn app(identity: Identity) -> Router {
    let served_by = served_by_value(&identity.name);
    Router::new()
        // Only GET /health is special; POST /health and the like are echoed.
        .route("/health", get(health).fallback(echo))
        .route(
            "/cached",
            get(cached)
                .with_state(Arc::new(std::sync::atomic::AtomicU64::new(0)))
                .fallback(echo),
        )
        .route("/ws", get(websocket_or_echo).fallback(echo))
        .fallback(echo)
        .layer(middleware::map_response_with_state(
            served_by,
            stamp_served_by,
        ))
        .with_state(Arc::new(identity))
}

/// Liveness check for a proxy or an orchestrator: cheap, and never echoes.
async fn health() -> &'static str {
    "ok"
}

/// Describes the request back to the client.
async fn echo(State(identity): State<Arc<Identity>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    // Present when the app is served by `crate::serve`, which records the peer
    // address of every connection.
    let remote_addr = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.to_string());
    let proxy_protocol = parts
        .extensions
        .get::<crate::proxy_protocol::ProxySeen>()
        .cloned();

    let body_bytes = match count_body_bytes(body).await {
        Ok(n) => n,
        Err(err) => {
            tracing::warn!("could not read the request body: {err}");
            let error =
                serde_json::json!({ "error": format!("could not read the request body: {err}") });
            return (StatusCode::BAD_REQUEST, Json(error)).into_response();
        }
    };

    let reply = Echo {
        name: identity.name.clone(),
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        remote_addr,
        headers: collect_headers(&parts.headers),
        body_bytes,
        proxy_protocol,
    };
    tracing::info!(
        method = %reply.method,
        path = %reply.path,
        remote_addr = reply.remote_addr.as_deref().unwrap_or("unknown"),
        "echoed request"
    );
    Json(reply).into_response()
}

/// `GET /cached?cache_control=max-age=5&etag=v1`, for the caching tour: an
/// answer whose `Cache-Control` is the `cache_control` parameter, with an
/// `ETag` (`"v1"`, or the `etag` parameter). A request whose `If-None-Match`
/// names that ETag gets `304 Not Modified` and no body. Every request,
/// 304s too, is counted: the count is in the body (`built on request #3`) and
/// in an `x-whoami-requests` header, so a transcript shows when a cache
/// really asked this upstream.
async fn cached(
    State(count): State<Arc<std::sync::atomic::AtomicU64>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    let param = |name: &str| {
        uri.query()?
            .split('&')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
    };
    let etag = format!("\"{}\"", param("etag").unwrap_or("v1"));
    let not_modified = headers
        .get(axum::http::header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes());
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        format!("built on request #{n}\n").into_response()
    };
    let out = response.headers_mut();
    if let Some(value) = param("cache_control").and_then(|v| HeaderValue::from_str(v).ok()) {
        out.insert(axum::http::header::CACHE_CONTROL, value);
    }
    if let Ok(value) = HeaderValue::from_str(&etag) {
        out.insert(axum::http::header::ETAG, value);
    }
    out.insert("x-whoami-requests", HeaderValue::from(n));
    response
}

/// `GET /ws`: a WebSocket when the client asks for one (`Connection:
/// upgrade`, `Upgrade: websocket`), else the JSON echo like everywhere else.
async fn websocket_or_echo(State(identity): State<Arc<Identity>>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => {
            let name = identity.name.clone();
            upgrade.on_upgrade(move |socket| greet_and_echo(socket, name))
        }
        Err(_) => echo(State(identity), Request::from_parts(parts, body)).await,
    }
}

/// After the handshake: one greeting naming the replica, then every text or
/// binary message is sent back as it came, until the client closes (axum
/// answers its close frame and pings by itself: the next `recv` sends the
/// close reply, then ends).
async fn greet_and_echo(mut socket: WebSocket, name: String) {
    let greeting = format!("connected to {name}");
    if socket.send(Message::Text(greeting.into())).await.is_err() {
        return;
    }
    while let Some(Ok(message)) = socket.recv().await {
        let reply = match message {
            Message::Text(_) | Message::Binary(_) => message,
            Message::Close(_) | Message::Ping(_) | Message::Pong(_) => continue,
        };
        if socket.send(reply).await.is_err() {
            break;
        }
    }
    tracing::info!(name = %name, "websocket closed");
}

/// Reads the body frame by frame, keeping only a count, so that a body of any
/// size is accepted without holding it in memory.
async fn count_body_bytes(mut body: Body) -> Result<u64, axum::Error> {
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            total += data.len() as u64;
        }
    }
    Ok(total)
}

/// Turns the header map into a sorted name-to-value map. Names are already
/// lowercase in `HeaderMap`; values that are not UTF-8 are shown lossily.
fn collect_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    headers
        .keys()
        .map(|name| {
            let joined = headers
                .get_all(name)
                .iter()
                .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join(", ");
            (name.as_str().to_owned(), joined)
        })
        .collect()
}

/// Builds the `x-served-by` value. A name can hold characters that are not
/// allowed in a header (such as control characters), so anything other than
/// printable ASCII is replaced by `?` rather than failing.
fn served_by_value(name: &str) -> HeaderValue {
    let printable: String = name
        .chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect();
    HeaderValue::from_str(&printable).unwrap_or_else(|_| HeaderValue::from_static(FALLBACK_NAME))
}

/// Middleware that adds `x-served-by` to every response, including errors.
async fn stamp_served_by(State(served_by): State<HeaderValue>, mut response: Response) -> Response {
    response.headers_mut().insert(SERVED_BY_HEADER, served_by);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> Option<String> {
        None
    }

    #[test]
    fn an_explicit_name_wins_over_the_hostname() {
        let name = choose_name(Some("whoami-1".into()), || Some("abc123".into()), none);
        assert_eq!(name, "whoami-1");
    }

    #[test]
    fn a_blank_name_falls_back_to_the_hostname_variable() {
        let name = choose_name(Some("  ".into()), || Some("abc123\n".into()), none);
        assert_eq!(name, "abc123");
    }

    #[test]
    fn the_hostname_file_is_used_when_the_variable_is_missing() {
        let name = choose_name(None, none, || Some("container-7\n".into()));
        assert_eq!(name, "container-7");
    }

    #[test]
    fn with_no_source_at_all_the_name_is_whoami() {
        assert_eq!(choose_name(None, none, none), "whoami");
    }

    #[test]
    fn repeated_headers_are_joined_and_bad_bytes_shown_lossily() {
        let mut headers = HeaderMap::new();
        headers.append("x-b", HeaderValue::from_static("one"));
        headers.append("x-b", HeaderValue::from_static("two"));
        headers.append(
            "x-a",
            HeaderValue::from_bytes(b"caf\xe9").expect("obs-text bytes are a valid header value"),
        );
        let collected = collect_headers(&headers);
        let names: Vec<&str> = collected.keys().map(String::as_str).collect();
        assert_eq!(names, ["x-a", "x-b"]);
        assert_eq!(collected["x-b"], "one, two");
        assert_eq!(collected["x-a"], "caf\u{fffd}");
    }

    #[test]
    fn a_name_with_control_characters_still_makes_a_header() {
        assert_eq!(served_by_value("web\n1"), "web?1");
        assert_eq!(served_by_value("café"), "caf?");
    }
}
