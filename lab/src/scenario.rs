//! Scenario files: a scripted run against the lab's stack, written as TOML so
//! an instructor can add one without writing Rust.
//!
//! ```toml
//! title = "round-robin: three replicas, taken in turn"
//!
//! [[steps]]
//! note = "Each replica answers with its own name."
//!
//! [[steps]]
//! request = "GET http://localhost/api/whoami"
//! repeat = 3
//! show = ["served-by"]
//! expect = { status = 200 }
//!
//! [[steps]]
//! stop = "whoami-2"
//! ```
//!
//! Each step does one thing:
//! - `note = "..."` prints a comment; `gap = true` an empty line;
//! - `request = "METHOD URL"` sends a request through the proxy (`https://`
//!   URLs go to its TLS listener, trusting the lab's CA unless
//!   `trust_lab_ca = false`), with optional `headers`, `body` (text) or
//!   `body_size` (that many bytes, for upload limits), `repeat`,
//!   `concurrency` (requests in flight at once), `show` (what to print of each
//!   answer, see [`Show`]) and `expect` (`status`, `statuses` for a repeat,
//!   `headers`, `body_contains`, `body_lacks`, `json` with fields of a JSON
//!   body such as `{ "headers.x-real-ip" = "203.0.113.7" }`, `trace_contains`
//!   with text the proxy's decision trace must have, which asks for the
//!   trace, `version` such as `"HTTP/2"`): an answer that differs is marked
//!   in the transcript and fails the run. Expected header and JSON values
//!   are written as the transcript shows them: ports as names
//!   (`https://localhost:<https-port>/`), and `"(none)"` for a header that
//!   must be absent;
//! - a request step with `via = "l4"` is sent to one of the proxy's layer-4
//!   listeners instead (`l4`, `l4-proxy-protocol`, `l4-passthrough`,
//!   `l4-terminate`: see `lab/stack/layer4.toml`), over a connection of its
//!   own, so the transcript can name the address the proxy accepted it
//!   from `<client>` wherever a server reports it (this client's own end;
//!   in Docker, docker-proxy's, read from the proxy's access log; one
//!   connection at a time: a step with `concurrency` cannot tell whose
//!   line is whose); `show = ["certificate"]` prints the
//!   certificate an HTTPS server presented; `expect = { no_answer = true }`
//!   says the proxy must close the connection without an answer (the line
//!   then says why the client gave up);
//! - `websocket = "ws://localhost/ws"` opens a WebSocket through the proxy
//!   and shows the handshake's answer (`101 Switching Protocols` when the
//!   upgrade went through), then one message it receives, then for each of
//!   `send = ["hello", "bye"]` the message sent and the one message that
//!   comes back (waiting at most 5 s), then closes; `pause = "3s"` keeps the
//!   client silent that long before each message after the first (a quiet
//!   user: idle timeouts show); it takes `headers`, `show` (about the
//!   handshake's answer) and `expect` too, whose `replies = ["hello", "bye"]`
//!   are the messages that must come back, one after each message sent;
//! - `stop = "whoami-2"` / `start = "whoami-2"` stops or restarts a service;
//! - `wait = "1s"` lets time pass (rate limits refill, health checks run);
//! - `wait_for = { request = "GET ...", status = 200, within = "10s" }` polls
//!   until an answer has that status.
//!
//! A scenario that does not parse gets an error naming the file, line and
//! column, and how to fix it.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde::Deserialize;
use toml::Spanned;

use crate::client::{Exchange, LabClient, WebSocketEvent, send_https, send_on_new_connection};
use crate::stack::LabStack;
use crate::transcript::Transcript;

/// The scenarios shipped with the lab, by name (`lab/scenarios/NAME.toml`),
/// built into the binary so `lab scenario NAME` works from any folder.
pub const BUILT_IN: &[(&str, &str)] = &[
    ("routing", include_str!("../scenarios/routing.toml")),
    (
        "host-routing",
        include_str!("../scenarios/host-routing.toml"),
    ),
    ("headers", include_str!("../scenarios/headers.toml")),
    ("round-robin", include_str!("../scenarios/round-robin.toml")),
    ("failover", include_str!("../scenarios/failover.toml")),
    (
        "https-redirect",
        include_str!("../scenarios/https-redirect.toml"),
    ),
    ("rate-limit", include_str!("../scenarios/rate-limit.toml")),
    ("cors", include_str!("../scenarios/cors.toml")),
    ("caching", include_str!("../scenarios/caching.toml")),
    ("trace", include_str!("../scenarios/trace.toml")),
    ("debugging", include_str!("../scenarios/debugging.toml")),
    ("rewrite", include_str!("../scenarios/rewrite.toml")),
    ("compression", include_str!("../scenarios/compression.toml")),
    ("websocket", include_str!("../scenarios/websocket.toml")),
    ("security", include_str!("../scenarios/security.toml")),
    ("l4-vs-l7", include_str!("../scenarios/l4-vs-l7.toml")),
];

/// A parsed scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The title printed at the top of the transcript.
    pub title: String,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// One step of a scenario.
#[derive(Debug, Clone)]
pub enum Step {
    /// A comment for the reader.
    Note(String),
    /// An empty line.
    Gap,
    /// Requests sent through the proxy.
    Request(Box<RequestStep>),
    /// A WebSocket opened through the proxy, and messages sent on it.
    WebSocket(Box<WebSocketStep>),
    /// Stop a service; the proxy is not told.
    Stop(String),
    /// Start a stopped service again.
    Start(String),
    /// Let time pass.
    Wait(Duration),
    /// Poll a request until its answer has a status, at most for a while.
    WaitFor {
        /// The request to poll.
        request: Request,
        /// The status to wait for.
        status: u16,
        /// How long to keep trying.
        within: Duration,
    },
}

/// A request as a scenario writes it.
#[derive(Debug, Clone)]
pub struct Request {
    /// GET, POST, ...
    pub method: Method,
    /// `http` or `https`.
    pub scheme: String,
    /// The host name the client asks for (the `Host` header, or TLS SNI).
    pub host: String,
    /// Path and query.
    pub path: String,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// The request body.
    pub body: Bytes,
    /// For `https`: trust the lab's local CA (a client that was told to).
    pub trust_lab_ca: bool,
    /// The layer-4 listener to send it to (`l4`, ...), instead of the
    /// proxy's HTTP or HTTPS listener.
    pub via: Option<String>,
}

/// A `request` step.
#[derive(Debug, Clone)]
pub struct RequestStep {
    /// What to send.
    pub request: Request,
    /// How many times.
    pub repeat: usize,
    /// How many at once.
    pub concurrency: usize,
    /// What to print of each answer, each under its label (`None`: the
    /// default label).
    pub show: Vec<(Option<String>, Show)>,
    /// ... and of answers with a 1xx to 3xx status only.
    pub show_ok: Vec<(Option<String>, Show)>,
    /// ... and of answers with a 4xx or 5xx status only.
    pub show_errors: Vec<(Option<String>, Show)>,
    /// What each answer must be.
    pub expect: Expect,
}

/// A `websocket` step.
#[derive(Debug, Clone)]
pub struct WebSocketStep {
    /// The host name the client asks for (the `Host` header).
    pub host: String,
    /// Path and query.
    pub path: String,
    /// Extra handshake headers.
    pub headers: Vec<(String, String)>,
    /// Text messages to send, one at a time, each waiting for one reply.
    pub send: Vec<String>,
    /// How long the client stays silent before each message after the first.
    pub pause: Duration,
    /// What to print of the handshake's answer.
    pub show: Vec<(Option<String>, Show)>,
    /// What the handshake's answer must be.
    pub expect: Expect,
}

/// What to print of an answer, as a `label: value` line under it.
#[derive(Debug, Clone, PartialEq)]
pub enum Show {
    /// `served-by`: the whoami replica that answered (`x-served-by`).
    ServedBy,
    /// `header:NAME`: a response header, or `(none)`.
    Header(String),
    /// `body`: the body as text, trimmed.
    Body,
    /// `title`: an HTML page's `<title>`.
    Title,
    /// `tasks`: a tasks-api list, without timestamps.
    Tasks,
    /// `json:a.b`: a field of a JSON answer (whoami's echo), by dotted path.
    Json(String),
    /// `version`: the HTTP version (HTTP/2 is chosen by ALPN over TLS).
    Version,
    /// `trace`: the proxy's decision trace (`x-lab-trace-N` headers).
    Trace,
    /// `size`: the body's size, and for a compressed answer its size on the
    /// wire and decoded.
    Size,
    /// `certificate`: the names the HTTPS server's certificate is for, and
    /// its issuer.
    Certificate,
}

/// What the answers of a request step must be.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// Every answer's status.
    pub status: Option<u16>,
    /// Each answer's status, in order (for `repeat`).
    pub statuses: Option<Vec<u16>>,
    /// Response headers every answer must have, with these values.
    pub headers: Vec<(String, String)>,
    /// Text every answer's body must contain.
    pub body_contains: Option<String>,
    /// Text no answer's body may contain.
    pub body_lacks: Option<String>,
    /// Fields of a JSON body (`headers.x-real-ip`) and the text each must have.
    pub json: Vec<(String, String)>,
    /// The HTTP version of every answer (HTTP/2 when ALPN chose it).
    pub version: Option<http::Version>,
    /// For a WebSocket: the message that must come back after each one sent.
    pub replies: Option<Vec<String>>,
    /// Text the proxy's decision trace (`x-lab-trace-N` headers) must contain;
    /// the request asks for the trace (`X-Lab-Trace: 1`).
    pub trace_contains: Option<String>,
    /// The connection must end without any answer (a layer-4 listener
    /// closing it).
    pub no_answer: bool,
}

impl Expect {
    /// Whether anything is expected at all (a step may only show things).
    pub fn is_empty(&self) -> bool {
        self.status.is_none()
            && self.statuses.is_none()
            && self.headers.is_empty()
            && self.body_contains.is_none()
            && self.body_lacks.is_none()
            && self.json.is_empty()
            && self.version.is_none()
            && self.replies.is_none()
            && self.trace_contains.is_none()
            && !self.no_answer
    }
}

impl Step {
    /// Whether the step checks anything: a request or websocket step with
    /// an `expect`.
    pub fn expects_something(&self) -> bool {
        match self {
            Step::Request(step) => !step.expect.is_empty(),
            Step::WebSocket(step) => !step.expect.is_empty(),
            _ => false,
        }
    }
}

/// A scenario file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file does not parse or a step is wrong.
    #[error("{file}:{line}:{column}: {message}\n  help: {help}")]
    Invalid {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
        /// How to fix it.
        help: String,
    },
    /// No scenario of that name.
    #[error("no scenario named `{0}`; the scenarios are: {names}", names = names().join(", "))]
    Unknown(String),
}

/// The built-in scenarios' names, in order.
pub fn names() -> Vec<&'static str> {
    BUILT_IN.iter().map(|(name, _)| *name).collect()
}

/// A built-in scenario by name.
pub fn built_in(name: &str) -> Result<Scenario, ScenarioError> {
    let (_, text) = BUILT_IN
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| ScenarioError::Unknown(name.to_owned()))?;
    Scenario::parse(text, &format!("lab/scenarios/{name}.toml"))
}

// ---------------------------------------------------------------------------
// The file format, as serde reads it.
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    title: String,
    steps: Vec<Spanned<RawStep>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    note: Option<String>,
    gap: Option<bool>,
    request: Option<Spanned<String>>,
    headers: Option<BTreeMap<String, String>>,
    body: Option<String>,
    body_size: Option<Spanned<i64>>,
    repeat: Option<Spanned<i64>>,
    concurrency: Option<Spanned<i64>>,
    trust_lab_ca: Option<bool>,
    show: Option<Vec<Spanned<String>>>,
    show_ok: Option<Vec<Spanned<String>>>,
    show_errors: Option<Vec<Spanned<String>>>,
    expect: Option<RawExpect>,
    stop: Option<String>,
    start: Option<String>,
    wait: Option<Spanned<String>>,
    wait_for: Option<RawWaitFor>,
    websocket: Option<Spanned<String>>,
    send: Option<Vec<String>>,
    pause: Option<Spanned<String>>,
    via: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    status: Option<u16>,
    statuses: Option<Vec<u16>>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body_contains: Option<String>,
    body_lacks: Option<String>,
    #[serde(default)]
    json: BTreeMap<String, String>,
    version: Option<Spanned<String>>,
    replies: Option<Spanned<Vec<String>>>,
    trace_contains: Option<String>,
    no_answer: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWaitFor {
    request: Spanned<String>,
    status: u16,
    within: Spanned<String>,
}

impl Scenario {
    /// Parses a scenario; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Scenario, ScenarioError> {
        let at = |span: std::ops::Range<usize>, message: String, help: &str| {
            let before = &text[..span.start.min(text.len())];
            ScenarioError::Invalid {
                file: file.to_owned(),
                line: before.matches('\n').count() + 1,
                // In characters, not bytes: a column counts what the reader sees.
                column: before[before.rfind('\n').map_or(0, |i| i + 1)..]
                    .chars()
                    .count()
                    + 1,
                message,
                help: help.to_owned(),
            }
        };
        let raw: RawScenario = toml::from_str(text).map_err(|err| {
            at(
                err.span().unwrap_or(0..0),
                err.message().to_owned(),
                "see the format at the top of lab/src/scenario.rs, or a file in lab/scenarios/",
            )
        })?;
        let mut steps = Vec::with_capacity(raw.steps.len());
        for spanned in &raw.steps {
            let step = spanned.get_ref();
            let here = |message: String, help: &str| at(spanned.span(), message, help);
            let actions = [
                step.note.is_some(),
                step.gap.is_some(),
                step.request.is_some(),
                step.stop.is_some(),
                step.start.is_some(),
                step.wait.is_some(),
                step.wait_for.is_some(),
                step.websocket.is_some(),
            ];
            if actions.iter().filter(|a| **a).count() != 1 {
                return Err(here(
                    "a step must do exactly one thing".into(),
                    "give it one of: note, gap, request, websocket, stop, start, wait, wait_for",
                ));
            }
            let request_only = step.body.is_some()
                || step.via.is_some()
                || step.body_size.is_some()
                || step.repeat.is_some()
                || step.concurrency.is_some()
                || step.trust_lab_ca.is_some()
                || step.show_ok.is_some()
                || step.show_errors.is_some();
            if request_only && step.request.is_none() {
                return Err(here(
                    "body, body_size, via, repeat, concurrency, trust_lab_ca, show_ok and show_errors belong to a request step".into(),
                    "add request = \"GET http://localhost/\", or remove them",
                ));
            }
            let answered = step.headers.is_some() || step.show.is_some() || step.expect.is_some();
            if answered && step.request.is_none() && step.websocket.is_none() {
                return Err(here(
                    "headers, show and expect belong to a request or websocket step".into(),
                    "add request = \"GET http://localhost/\" or websocket = \"ws://localhost/ws\", or remove them",
                ));
            }
            if (step.send.is_some() || step.pause.is_some()) && step.websocket.is_none() {
                return Err(here(
                    "`send` and `pause` belong to a websocket step".into(),
                    "add websocket = \"ws://localhost/ws\", or remove them",
                ));
            }
            let raw_expect = step.expect.as_ref();
            if let Some(replies) = raw_expect.and_then(|e| e.replies.as_ref())
                && step.websocket.is_none()
            {
                return Err(at(
                    replies.span(),
                    "`expect.replies` are the messages a WebSocket sends back".into(),
                    "use it on a websocket step; for a request, use body_contains",
                ));
            }
            let version = match raw_expect.and_then(|e| e.version.as_ref()) {
                None => None,
                Some(v) if step.request.is_none() => {
                    return Err(at(
                        v.span(),
                        "`expect.version` belongs to a request step".into(),
                        "a WebSocket handshake is always HTTP/1.1: remove it",
                    ));
                }
                Some(v) => Some(parse_version(v).map_err(|(s, m, h)| at(s, m, h))?),
            };
            let shows = |list: &Option<Vec<Spanned<String>>>| {
                list.iter()
                    .flatten()
                    .map(|item| {
                        let label = show_label(item.get_ref()).map(str::to_owned);
                        let what = parse_show(item.get_ref()).ok_or_else(|| {
                            at(
                                item.span(),
                                format!("`{}` is not something to show", item.get_ref()),
                                "use served-by, header:NAME, body, size, title, tasks, json:FIELD, version, certificate or trace (optionally LABEL = WHAT)",
                            )
                        })?;
                        Ok((label, what))
                    })
                    .collect::<Result<Vec<_>, ScenarioError>>()
            };
            let expect = step
                .expect
                .as_ref()
                .map(|e| Expect {
                    status: e.status,
                    statuses: e.statuses.clone(),
                    headers: e.headers.clone().into_iter().collect(),
                    body_contains: e.body_contains.clone(),
                    body_lacks: e.body_lacks.clone(),
                    json: e.json.clone().into_iter().collect(),
                    version,
                    replies: e.replies.as_ref().map(|r| r.get_ref().clone()),
                    trace_contains: e.trace_contains.clone(),
                    no_answer: e.no_answer.unwrap_or(false),
                })
                .unwrap_or_default();
            if expect.no_answer && step.websocket.is_some() {
                return Err(here(
                    "`expect.no_answer` is for a request step".into(),
                    "a WebSocket handshake is answered: expect a status instead",
                ));
            }
            let via = match &step.via {
                None => None,
                Some(name) if crate::stack::STREAM_LISTENERS.contains(&name.get_ref().as_str()) => {
                    Some(name.get_ref().clone())
                }
                Some(name) => {
                    return Err(at(
                        name.span(),
                        format!(
                            "`{}` is not one of the lab's layer-4 listeners",
                            name.get_ref()
                        ),
                        "use one of: l4, l4-proxy-protocol, l4-passthrough, l4-terminate (lab/stack/layer4.toml)",
                    ));
                }
            };
            let parsed = if let Some(text) = &step.note {
                Step::Note(text.clone())
            } else if step.gap.is_some() {
                Step::Gap
            } else if let Some(name) = &step.stop {
                Step::Stop(name.clone())
            } else if let Some(name) = &step.start {
                Step::Start(name.clone())
            } else if let Some(wait) = &step.wait {
                Step::Wait(parse_duration(wait).map_err(|(s, m, h)| at(s, m, h))?)
            } else if let Some(wait_for) = &step.wait_for {
                Step::WaitFor {
                    request: parse_request(&wait_for.request, None, Bytes::new(), None)
                        .map_err(|(s, m, h)| at(s, m, h))?,
                    status: wait_for.status,
                    within: parse_duration(&wait_for.within).map_err(|(s, m, h)| at(s, m, h))?,
                }
            } else if let Some(request) = &step.request {
                let count = |v: &Option<Spanned<i64>>, what: &str| match v {
                    None => Ok(1),
                    Some(n) => usize::try_from(*n.get_ref())
                        .ok()
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or_else(|| {
                            at(
                                n.span(),
                                format!("`{what}` must be from 1 to 1000"),
                                "leave it out for 1",
                            )
                        }),
                };
                let body = match (&step.body, &step.body_size) {
                    (Some(_), Some(size)) => {
                        return Err(at(
                            size.span(),
                            "a step has either `body` or `body_size`, not both".into(),
                            "keep `body` for a text you write, `body_size` for N bytes of filler",
                        ));
                    }
                    (Some(text), None) => Bytes::from(text.clone()),
                    (None, Some(size)) => filler_body(size).map_err(|(s, m, h)| at(s, m, h))?,
                    (None, None) => Bytes::new(),
                };
                let mut request =
                    parse_request(request, step.headers.as_ref(), body, step.trust_lab_ca)
                        .map_err(|(s, m, h)| at(s, m, h))?;
                request.via = via;
                Step::Request(Box::new(RequestStep {
                    request,
                    repeat: count(&step.repeat, "repeat")?,
                    concurrency: count(&step.concurrency, "concurrency")?,
                    show: shows(&step.show)?,
                    show_ok: shows(&step.show_ok)?,
                    show_errors: shows(&step.show_errors)?,
                    expect,
                }))
            } else if let Some(url) = &step.websocket {
                if expect.statuses.is_some() {
                    return Err(here(
                        "`expect.statuses` is for a repeated request; a websocket step has one handshake".into(),
                        "use expect = { status = 101 }",
                    ));
                }
                let (host, path) = parse_websocket_url(url).map_err(|(s, m, h)| at(s, m, h))?;
                Step::WebSocket(Box::new(WebSocketStep {
                    host,
                    path,
                    headers: step
                        .headers
                        .iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    send: step.send.clone().unwrap_or_default(),
                    pause: match &step.pause {
                        Some(pause) => parse_duration(pause).map_err(|(s, m, h)| at(s, m, h))?,
                        None => Duration::ZERO,
                    },
                    show: shows(&step.show)?,
                    expect,
                }))
            } else {
                return Err(here("an empty step".into(), "give it one thing to do"));
            };
            steps.push(parsed);
        }
        Ok(Scenario {
            title: raw.title,
            steps,
        })
    }
}

type RawError = (std::ops::Range<usize>, String, &'static str);

fn parse_duration(raw: &Spanned<String>) -> Result<Duration, RawError> {
    humantime::parse_duration(raw.get_ref().trim()).map_err(|err| {
        (
            raw.span(),
            format!("`{}` is not a duration: {err}", raw.get_ref()),
            "write a number and a unit, e.g. \"500ms\" or \"2s\"",
        )
    })
}

/// `"HTTP/2"` (or `"HTTP/2.0"`, `"HTTP/1.1"`, ...), as an expectation.
fn parse_version(raw: &Spanned<String>) -> Result<http::Version, RawError> {
    let text = raw.get_ref().trim().to_ascii_uppercase();
    Ok(match text.trim_end_matches(".0") {
        "HTTP/1" => http::Version::HTTP_10,
        "HTTP/1.1" => http::Version::HTTP_11,
        "HTTP/2" => http::Version::HTTP_2,
        "HTTP/3" => http::Version::HTTP_3,
        _ => {
            return Err((
                raw.span(),
                format!("`{}` is not an HTTP version", raw.get_ref()),
                "write \"HTTP/1.1\" or \"HTTP/2\"",
            ));
        }
    })
}

/// The version as people write it: `HTTP/2`, `HTTP/1.1`.
fn version_name(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/?",
    }
}

/// The largest `body_size`: 64 MiB, held in memory while it is sent.
pub const MAX_BODY_SIZE: u64 = 64 * 1024 * 1024;

/// `body_size = 1025`: that many bytes of filler (`x`), to try a
/// `max_body_size` without writing the body out in the file.
fn filler_body(raw: &Spanned<i64>) -> Result<Bytes, RawError> {
    u64::try_from(*raw.get_ref())
        .ok()
        .filter(|n| *n <= MAX_BODY_SIZE)
        .and_then(|n| usize::try_from(n).ok())
        .map(|n| Bytes::from(vec![b'x'; n]))
        .ok_or_else(|| {
            (
                raw.span(),
                format!("`body_size` must be a number of bytes from 0 to {MAX_BODY_SIZE} (64 MiB)"),
                "write e.g. body_size = 1025 for one byte over a 1k limit",
            )
        })
}

/// `"GET http://localhost/api/whoami"` (the method may be left out: GET).
fn parse_request(
    raw: &Spanned<String>,
    headers: Option<&BTreeMap<String, String>>,
    body: Bytes,
    trust_lab_ca: Option<bool>,
) -> Result<Request, RawError> {
    let bad = |message: String| {
        (
            raw.span(),
            message,
            "write \"METHOD URL\", e.g. \"GET http://localhost/api/whoami\" or \"POST https://secure.localhost/api/tasks\"",
        )
    };
    let text = raw.get_ref().trim();
    let (method, url) = match text.split_once(' ') {
        Some((method, url)) => (method, url.trim()),
        None => ("GET", text),
    };
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| bad(format!("`{method}` is not an HTTP method")))?;
    let uri: http::Uri = url
        .parse()
        .map_err(|_| bad(format!("`{url}` is not a URL")))?;
    let scheme = match uri.scheme_str() {
        Some(s @ ("http" | "https")) => s.to_owned(),
        _ => return Err(bad(format!("`{url}` must start with http:// or https://"))),
    };
    let host = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .ok_or_else(|| bad(format!("`{url}` has no host")))?;
    Ok(Request {
        method,
        scheme,
        host,
        path: uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned()),
        headers: headers
            .map(|h| h.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        body,
        trust_lab_ca: trust_lab_ca.unwrap_or(true),
        via: None,
    })
}

/// `"ws://localhost/ws"`: the host and the path of a WebSocket step.
fn parse_websocket_url(raw: &Spanned<String>) -> Result<(String, String), RawError> {
    let help = "write \"ws://HOST/PATH\", e.g. \"ws://localhost/ws\"";
    let url = raw.get_ref().trim();
    let bad = |message: String| (raw.span(), message, help);
    let uri: http::Uri = url
        .parse()
        .map_err(|_| bad(format!("`{url}` is not a URL")))?;
    match uri.scheme_str() {
        Some("ws") => {}
        Some("wss") => {
            return Err((
                raw.span(),
                format!("`{url}`: wss:// (WebSocket over TLS) is not supported by the lab's steps"),
                "use ws://, which goes to the proxy's plain HTTP listener",
            ));
        }
        _ => return Err(bad(format!("`{url}` must start with ws://"))),
    }
    let host = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .ok_or_else(|| bad(format!("`{url}` has no host")))?;
    let path = uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned());
    Ok((host, path))
}

/// `served-by`, `header:NAME`, ...; `LABEL = WHAT` prints under LABEL.
fn parse_show(text: &str) -> Option<Show> {
    let what = text
        .rsplit_once(" = ")
        .map_or(text, |(_, what)| what)
        .trim();
    Some(match what {
        "served-by" => Show::ServedBy,
        "body" => Show::Body,
        "title" => Show::Title,
        "tasks" => Show::Tasks,
        "version" => Show::Version,
        "trace" => Show::Trace,
        "size" => Show::Size,
        "certificate" => Show::Certificate,
        _ => {
            if let Some(name) = what.strip_prefix("header:") {
                Show::Header(name.trim().to_ascii_lowercase())
            } else if let Some(path) = what.strip_prefix("json:") {
                Show::Json(path.trim().to_owned())
            } else {
                return None;
            }
        }
    })
}

/// The field at `path` (`headers.x-real-ip`) of a JSON body, as text;
/// `(not received)` when it is not there. This client's own address, when
/// known, reads `<client>`.
fn json_field(exchange: &Exchange, path: &str) -> String {
    let mut value = exchange.json().unwrap_or_default();
    for key in path.split('.') {
        value = value[key].take();
    }
    let text = match value {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => "(not received)".into(),
        other => other.to_string(),
    };
    match exchange.client_addr {
        Some(client) => text.replace(&client.to_string(), "<client>"),
        None => text,
    }
}

/// The label a `show` entry prints under.
fn show_label(text: &str) -> Option<&str> {
    text.rsplit_once(" = ").map(|(label, _)| label.trim())
}

// ---------------------------------------------------------------------------
// Running a scenario.
// ---------------------------------------------------------------------------

/// How to run a scenario.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Ask the proxy for its decision trace (`X-Lab-Trace: 1`) on every request,
    /// and print it.
    pub trace: bool,
}

/// The result of a run: the transcript, and every expectation that failed.
#[derive(Debug)]
pub struct Outcome {
    /// What happened.
    pub transcript: Transcript,
    /// Expectations that were not met (also marked in the transcript).
    pub failures: Vec<String>,
}

/// A step could not run at all (not: an answer had an unexpected status).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A request got no answer.
    #[error(transparent)]
    Request(#[from] crate::client::RequestError),
    /// The stack could not stop or start a service.
    #[error(transparent)]
    Stack(crate::stack::LabStackError),
    /// A step names a layer-4 listener the stack does not have.
    #[error(
        "this stack has no layer-4 listener `{0}`: steps with `via` need the lab's own stack \
         (`lab scenario NAME`, in-process or with --docker), whose listeners are in lab/stack/layer4.toml"
    )]
    NoListener(String),
}

/// Runs `scenario` against `stack`.
pub async fn run(
    scenario: &Scenario,
    stack: &mut impl LabStack,
    options: RunOptions,
) -> Result<Outcome, RunError> {
    let client = LabClient::new(stack.proxy_addr());
    let mut t = Transcript::new(&scenario.title, stack);
    let mut failures = Vec::new();
    for step in &scenario.steps {
        match step {
            Step::Note(text) => {
                for line in text.lines() {
                    t.note(line);
                }
            }
            Step::Gap => t.gap(),
            Step::Stop(name) => stack.stop_service(name).await.map_err(RunError::Stack)?,
            Step::Start(name) => stack.start_service(name).await.map_err(RunError::Stack)?,
            Step::Wait(duration) => tokio::time::sleep(*duration).await,
            Step::WaitFor {
                request,
                status,
                within,
            } => {
                let deadline = tokio::time::Instant::now() + *within;
                loop {
                    let answer = send(&client, stack, request, false, false).await;
                    if matches!(&answer, Ok(Answer::Exchange(e)) if e.status.as_u16() == *status) {
                        break;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        let failure = format!(
                            "{} {}://{}{} did not answer {status} within {}",
                            request.method,
                            request.scheme,
                            request.host,
                            request.path,
                            humantime::format_duration(*within)
                        );
                        t.line(&format!("!! {failure}"));
                        failures.push(failure);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Step::WebSocket(step) => {
                let trace = options.trace
                    || step.expect.trace_contains.is_some()
                    || step.show.iter().any(|(_, s)| *s == Show::Trace);
                run_websocket(&mut t, &mut failures, stack, step, trace).await?;
            }
            Step::Request(step) => {
                // Showing the trace, or expecting something of it, means asking for it.
                let trace = options.trace
                    || step.expect.trace_contains.is_some()
                    || [&step.show, &step.show_ok, &step.show_errors]
                        .iter()
                        .any(|list| list.iter().any(|(_, s)| *s == Show::Trace));
                let mut answers = Vec::with_capacity(step.repeat);
                let mut left = step.repeat;
                while left > 0 {
                    let batch = left.min(step.concurrency);
                    left -= batch;
                    let no_answer = step.expect.no_answer;
                    let sends =
                        (0..batch).map(|_| send(&client, stack, &step.request, trace, no_answer));
                    for answer in futures_util::future::join_all(sends).await {
                        answers.push(answer?);
                    }
                }
                for (i, answer) in answers.iter().enumerate() {
                    record(&mut t, &mut failures, step, i, answer, options);
                }
            }
        }
    }
    Ok(Outcome {
        transcript: t,
        failures,
    })
}

/// An answer, or an HTTPS client refusing the proxy's certificate.
enum Answer {
    Exchange(Box<Exchange>),
    Refused { line: String },
}

/// A step's request headers, plus `X-Lab-Trace: 1` when the run asks the
/// proxy for its decision trace.
fn with_trace(headers: &[(String, String)], trace: bool) -> Vec<(&str, &str)> {
    let mut list: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if trace {
        list.push(("x-lab-trace", "1"));
    }
    list
}

/// Sends one request: to the proxy's HTTP or HTTPS listener, or over a new
/// connection to the layer-4 listener it goes `via`. A request that gets no
/// answer is an error, unless the step said it might: an HTTPS client that
/// does not trust the lab's CA (`refused`), or `no_answer` (`no answer`).
async fn send(
    client: &LabClient,
    stack: &impl LabStack,
    request: &Request,
    trace: bool,
    no_answer: bool,
) -> Result<Answer, RunError> {
    let headers = with_trace(&request.headers, trace);
    let via = match &request.via {
        Some(name) => Some(
            stack
                .stream_addr(name)
                .ok_or_else(|| RunError::NoListener(name.clone()))?,
        ),
        None => None,
    };
    let (method, body) = (request.method.clone(), request.body.clone());
    let (host, path) = (request.host.as_str(), request.path.as_str());
    let mut sent = if request.scheme == "https" {
        let root = request.trust_lab_ca.then_some(stack.ca_root_pem());
        let target = via.unwrap_or(stack.proxy_tls_addr());
        send_https(target, method, host, path, &headers, body, root).await
    } else if let Some(target) = via {
        send_on_new_connection(target, method, host, path, &headers, body).await
    } else {
        client.send(method, host, path, &headers, body).await
    };
    // Behind a hop of its own (Docker's for published ports), the proxy saw
    // the client under another address: that one is `<client>`.
    if let Some(name) = &request.via
        && let Some(seen) = stack
            .client_seen_by_proxy(name)
            .await
            .map_err(RunError::Stack)?
        && let Ok(exchange) = &mut sent
    {
        exchange.client_addr = Some(seen);
    }
    let untrusted = request.scheme == "https" && !request.trust_lab_ca;
    match sent {
        Ok(exchange) => Ok(Answer::Exchange(Box::new(exchange))),
        Err(err) if no_answer || untrusted => Ok(Answer::Refused {
            line: format!(
                "{} {}://{host}{path}{} -> {}: {}",
                request.method,
                request.scheme,
                via_label(request.via.as_deref()),
                if no_answer { "no answer" } else { "refused" },
                root_cause(&err)
            ),
        }),
        Err(err) => Err(err.into()),
    }
}

/// ` via <proxy-l4>` for a request sent to a layer-4 listener, else nothing.
fn via_label(via: Option<&str>) -> String {
    via.map(|name| format!(" via <proxy-{name}>"))
        .unwrap_or_default()
}

/// Runs a `websocket` step: the handshake's answer, what it shows, and each
/// message sent (`->`) and received (`<-`).
async fn run_websocket(
    t: &mut Transcript,
    failures: &mut Vec<String>,
    stack: &impl LabStack,
    step: &WebSocketStep,
    trace: bool,
) -> Result<(), RunError> {
    let headers = with_trace(&step.headers, trace);
    let talk = crate::client::websocket(
        stack.proxy_addr(),
        &step.host,
        &step.path,
        &headers,
        &step.send,
        step.pause,
    )
    .await?;
    let exchange = &talk.handshake;
    t.exchange(exchange);
    for (label, show) in &step.show {
        show_detail(t, exchange, show, label.as_deref());
    }
    if trace && !step.show.iter().any(|(_, s)| *s == Show::Trace) {
        show_detail(t, exchange, &Show::Trace, None);
    }
    for event in &talk.events {
        t.line(&match event {
            WebSocketEvent::Sent(text) => format!("    -> {text:?}"),
            WebSocketEvent::Received(text) => format!("    <- {text:?}"),
            WebSocketEvent::Silence => format!(
                "    <- (nothing within {})",
                humantime::format_duration(crate::client::WEBSOCKET_WAIT)
            ),
            WebSocketEvent::Paused(pause) => {
                format!("    .. silent for {}", humantime::format_duration(*pause))
            }
            WebSocketEvent::Closed(how) => format!("    closed: {how}"),
        });
    }
    let mut wrong = Vec::new();
    if let Some(status) = step.expect.status
        && exchange.status.as_u16() != status
    {
        wrong.push(format!("expected status {status}"));
    }
    header_expectations(t, exchange, &step.expect, &mut wrong);
    let opened = exchange.status == http::StatusCode::SWITCHING_PROTOCOLS;
    if step.expect.replies.is_some() && !opened && step.expect.status.is_none() {
        wrong.push("expected replies, but no WebSocket was opened".to_owned());
    }
    if let Some(replies) = step.expect.replies.as_ref().filter(|_| opened) {
        // The event after each message sent is its reply, if it is one.
        let got: Vec<&WebSocketEvent> = talk
            .events
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e, WebSocketEvent::Sent(_)))
            .map(|(i, _)| talk.events.get(i + 1).unwrap_or(&WebSocketEvent::Silence))
            .collect();
        for (n, reply) in replies.iter().enumerate() {
            let answer = match got.get(n) {
                Some(WebSocketEvent::Received(text)) if text == reply => continue,
                Some(WebSocketEvent::Received(text)) => format!("{text:?}"),
                Some(WebSocketEvent::Silence) => "nothing".to_owned(),
                _ => match talk.events.last() {
                    Some(WebSocketEvent::Closed(how)) if got.len() <= n => {
                        format!("it was never sent: {how}")
                    }
                    _ => "nothing".to_owned(),
                },
            };
            wrong.push(format!(
                "expected the reply {reply:?} to message {} ({answer})",
                n + 1
            ));
        }
    }
    wrong.extend(missing_from_trace(t, exchange, &step.expect));
    for problem in wrong {
        t.line(&format!("!! {problem}"));
        failures.push(format!(
            "websocket ws://{}{}: {problem}, got {}",
            step.host, step.path, exchange.status
        ));
    }
    Ok(())
}

/// Prints one answer and checks it against the step's expectations.
fn record(
    t: &mut Transcript,
    failures: &mut Vec<String>,
    step: &RequestStep,
    i: usize,
    answer: &Answer,
    options: RunOptions,
) {
    let exchange = match answer {
        Answer::Refused { line } => {
            t.line(line);
            return;
        }
        Answer::Exchange(exchange) => exchange,
    };
    t.exchange_via(exchange, &via_label(step.request.via.as_deref()));
    let mut wrong = Vec::new();
    if step.expect.no_answer {
        wrong.push("expected no answer (the connection closed)".to_owned());
    }
    let expected_status = step
        .expect
        .statuses
        .as_ref()
        .and_then(|s| s.get(i).copied())
        .or(step.expect.status);
    if let Some(status) = expected_status
        && exchange.status.as_u16() != status
    {
        wrong.push(format!("expected status {status}"));
    }
    if let Some(version) = step.expect.version
        && exchange.version != version
    {
        wrong.push(format!(
            "expected {} (it was {})",
            version_name(version),
            version_name(exchange.version)
        ));
    }
    header_expectations(t, exchange, &step.expect, &mut wrong);
    if let Some(text) = &step.expect.body_contains
        && !exchange.text().contains(text.as_str())
    {
        wrong.push(format!("expected a body containing {text:?}"));
    }
    if let Some(text) = &step.expect.body_lacks
        && exchange.text().contains(text.as_str())
    {
        wrong.push(format!("expected a body without {text:?}"));
    }
    // Compared as the transcript shows them, like headers: in Docker the
    // network's gateway reads 127.0.0.1, as in-process.
    for (path, value) in &step.expect.json {
        let got = json_field(exchange, path);
        if got != *value && t.normalised(&got) != *value {
            wrong.push(format!("expected {path} = {value:?} (it was {got:?})"));
        }
    }
    wrong.extend(missing_from_trace(t, exchange, &step.expect));
    let by_status = if exchange.status.as_u16() >= 400 {
        &step.show_errors
    } else {
        &step.show_ok
    };
    for (label, show) in step.show.iter().chain(by_status) {
        show_detail(t, exchange, show, label.as_deref());
    }
    if options.trace {
        show_detail(t, exchange, &Show::Trace, None);
    }
    for problem in wrong {
        let failure = format!(
            "{} {}{}: {problem}, got {}",
            exchange.method, exchange.host, exchange.path, exchange.status
        );
        t.line(&format!("!! {problem}"));
        failures.push(failure);
    }
}

/// The expected headers, each compared as the transcript shows it (ports as
/// names, `(none)` when absent).
fn header_expectations(
    t: &Transcript,
    exchange: &Exchange,
    expect: &Expect,
    wrong: &mut Vec<String>,
) {
    for (name, value) in &expect.headers {
        let got = exchange.header(name);
        if got == Some(value.as_str()) {
            continue;
        }
        let shown = got.map_or_else(|| "(none)".to_owned(), |v| t.normalised(v));
        if shown != *value {
            wrong.push(format!("expected {name}: {value}"));
        }
    }
}

fn show_detail(t: &mut Transcript, exchange: &Exchange, show: &Show, label: Option<&str>) {
    let mut detail = |default: &str, value: &str| t.detail(label.unwrap_or(default), value);
    match show {
        Show::ServedBy => detail(
            "served by",
            exchange.header("x-served-by").unwrap_or("(unknown)"),
        ),
        Show::Header(name) => detail(name, exchange.header(name).unwrap_or("(none)")),
        Show::Body => detail("body", exchange.text().trim()),
        Show::Size => detail("size", &exchange.size()),
        Show::Title => detail("page title", &page_title(exchange)),
        Show::Tasks => detail("tasks", &task_titles(exchange)),
        Show::Version => detail(
            "protocol",
            &match (&exchange.alpn, exchange.scheme) {
                (Some(_), _) => format!("{:?} (chosen by ALPN)", exchange.version),
                (None, "https") => {
                    format!("{:?} (no ALPN: the server chose none)", exchange.version)
                }
                (None, _) => format!("{:?}", exchange.version),
            },
        ),
        Show::Json(path) => detail(path, &json_field(exchange, path)),
        Show::Certificate => detail(
            "certificate",
            exchange
                .certificate
                .as_deref()
                .unwrap_or("(none: not HTTPS)"),
        ),
        Show::Trace => {
            for line in trace_lines(exchange) {
                t.line(&format!("    | {line}"));
            }
        }
    }
}

/// The proxy's decision trace of an answer, in order (empty when the proxy
/// sent none).
fn trace_lines(exchange: &Exchange) -> Vec<&str> {
    let mut lines: Vec<(&str, &str)> = exchange
        .headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-lab-trace-"))
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
        .collect();
    lines.sort();
    lines.into_iter().map(|(_, line)| line).collect()
}

/// What `trace_contains` expected and the trace lacks, with the likely
/// reason when there was no trace at all. The trace is read as the
/// transcript shows it (`<whoami-1>`, `in <ms>`).
fn missing_from_trace(t: &Transcript, exchange: &Exchange, expect: &Expect) -> Option<String> {
    let text = expect.trace_contains.as_ref()?;
    let lines = trace_lines(exchange);
    if lines.is_empty() {
        return Some(format!(
            "expected a decision trace containing {text:?}, but the proxy sent no trace \
             (it answers X-Lab-Trace only to clients whose address is in trace_from)"
        ));
    }
    (!lines
        .iter()
        .any(|line| t.normalised(line).contains(text.as_str())))
    .then(|| format!("expected a decision trace containing {text:?}"))
}

/// The innermost cause of an error: for a TLS failure, what rustls said.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn page_title(exchange: &Exchange) -> String {
    let text = exchange.text();
    text.split_once("<title>")
        .and_then(|(_, rest)| rest.split_once("</title>"))
        .map(|(title, _)| title.trim().to_owned())
        .unwrap_or_else(|| "(no title)".into())
}

/// The tasks in a `GET /tasks` answer, without their timestamps (which change
/// every run): `#1 "Title" (open)`.
fn task_titles(exchange: &Exchange) -> String {
    let Some(serde_json::Value::Array(tasks)) = exchange.json() else {
        return format!("(not a task list: {})", exchange.text().trim());
    };
    if tasks.is_empty() {
        return "(none)".into();
    }
    tasks
        .iter()
        .map(|task| {
            format!(
                "#{} {} ({})",
                task["id"],
                task["title"],
                if task["done"] == true { "done" } else { "open" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_scenario_parses() {
        for (name, _) in BUILT_IN {
            if let Err(err) = built_in(name) {
                panic!("{err}");
            }
        }
    }

    #[test]
    fn a_bad_step_is_reported_with_file_line_and_help() {
        let text = "title = \"t\"\n\n[[steps]]\nnote = \"a\"\n\n[[steps]]\nrequest = \"FETCH localhost/\"\n";
        let err = Scenario::parse(text, "x.toml").expect_err("invalid");
        let message = err.to_string();
        assert!(message.starts_with("x.toml:7:"), "{message}");
        assert!(message.contains("`localhost/` is not a URL"), "{message}");
        assert!(message.contains("help: write \"METHOD URL\""), "{message}");
    }

    #[test]
    fn a_step_doing_two_things_or_an_unknown_key_is_refused() {
        let two = "title = \"t\"\n[[steps]]\nnote = \"a\"\nstop = \"whoami-1\"\n";
        let err = Scenario::parse(two, "x.toml")
            .expect_err("invalid")
            .to_string();
        assert!(err.contains("exactly one thing"), "{err}");
        let unknown =
            "title = \"t\"\n[[steps]]\nrequest = \"GET http://localhost/\"\nrepeats = 3\n";
        let err = Scenario::parse(unknown, "x.toml")
            .expect_err("invalid")
            .to_string();
        assert!(err.starts_with("x.toml:4:"), "{err}");
        assert!(err.contains("unknown field `repeats`"), "{err}");
        let orphan = "title = \"t\"\n[[steps]]\nnote = \"a\"\nshow = [\"body\"]\n";
        let err = Scenario::parse(orphan, "x.toml")
            .expect_err("invalid")
            .to_string();
        assert!(
            err.contains("belong to a request or websocket step"),
            "{err}"
        );
    }

    #[test]
    fn a_websocket_step_is_parsed_and_its_mistakes_explained() {
        let text = "title = \"t\"\n[[steps]]\nwebsocket = \"ws://localhost/ws?room=1\"\nsend = [\"hello\", \"bye\"]\nshow = [\"served-by\"]\nexpect = { status = 101 }\n";
        let scenario = Scenario::parse(text, "x.toml").expect("valid");
        let Step::WebSocket(step) = &scenario.steps[0] else {
            panic!("a websocket step");
        };
        assert_eq!(step.host, "localhost");
        assert_eq!(step.path, "/ws?room=1");
        assert_eq!(step.send, ["hello", "bye"]);
        assert_eq!(step.show, [(None, Show::ServedBy)]);
        assert_eq!(step.expect.status, Some(101));

        let err = |text: &str| {
            Scenario::parse(text, "x.toml")
                .expect_err("invalid")
                .to_string()
        };
        let http = err("title = \"t\"\n[[steps]]\nwebsocket = \"http://localhost/ws\"\n");
        assert!(http.starts_with("x.toml:3:"), "{http}");
        assert!(http.contains("must start with ws://"), "{http}");
        assert!(http.contains("help: write \"ws://HOST/PATH\""), "{http}");
        let tls = err("title = \"t\"\n[[steps]]\nwebsocket = \"wss://localhost/ws\"\n");
        assert!(
            tls.contains("wss:// (WebSocket over TLS) is not supported"),
            "{tls}"
        );
        let orphan =
            err("title = \"t\"\n[[steps]]\nrequest = \"GET http://localhost/\"\nsend = [\"hi\"]\n");
        assert!(
            orphan.contains("`send` and `pause` belong to a websocket step"),
            "{orphan}"
        );
        let both = err(
            "title = \"t\"\n[[steps]]\nwebsocket = \"ws://localhost/ws\"\nrequest = \"GET http://localhost/\"\n",
        );
        assert!(both.contains("exactly one thing"), "{both}");
        let repeat =
            err("title = \"t\"\n[[steps]]\nwebsocket = \"ws://localhost/ws\"\nrepeat = 2\n");
        assert!(repeat.contains("belong to a request step"), "{repeat}");
        let sends =
            err("title = \"t\"\n[[steps]]\nwebsocket = \"ws://localhost/ws\"\nsend = \"hi\"\n");
        assert!(sends.starts_with("x.toml:4:"), "{sends}");
    }

    #[test]
    fn a_websocket_step_may_pause_and_expect_its_replies() {
        let text = "title = \"t\"\n[[steps]]\nwebsocket = \"ws://localhost/ws\"\nsend = [\"hello\", \"still there?\"]\npause = \"3s\"\nexpect = { status = 101, replies = [\"hello\", \"still there?\"] }\n";
        let scenario = Scenario::parse(text, "x.toml").expect("valid");
        let Step::WebSocket(step) = &scenario.steps[0] else {
            panic!("a websocket step");
        };
        assert_eq!(step.pause, Duration::from_secs(3));
        assert_eq!(
            step.expect.replies.as_deref(),
            Some(&["hello".to_owned(), "still there?".to_owned()][..])
        );
        assert!(scenario.steps[0].expects_something());

        let err = |text: &str| {
            Scenario::parse(text, "x.toml")
                .expect_err("invalid")
                .to_string()
        };
        let pause =
            err("title = \"t\"\n[[steps]]\nrequest = \"GET http://localhost/\"\npause = \"1s\"\n");
        assert!(pause.contains("belong to a websocket step"), "{pause}");
        let replies = err(
            "title = \"t\"\n[[steps]]\nrequest = \"GET http://localhost/\"\nexpect = { replies = [\"hi\"] }\n",
        );
        assert!(replies.starts_with("x.toml:4:"), "{replies}");
        assert!(replies.contains("use it on a websocket step"), "{replies}");
        let never =
            err("title = \"t\"\n[[steps]]\nwebsocket = \"ws://localhost/ws\"\npause = \"soon\"\n");
        assert!(never.contains("`soon` is not a duration"), "{never}");
    }

    #[test]
    fn a_request_may_expect_its_http_version_written_as_people_write_it() {
        let version = |v: &str| {
            let text = format!(
                "title = \"t\"\n[[steps]]\nrequest = \"GET https://localhost/\"\nexpect = {{ version = \"{v}\" }}\n"
            );
            Scenario::parse(&text, "x.toml").map(|s| match &s.steps[0] {
                Step::Request(step) => step.expect.version,
                _ => None,
            })
        };
        for (written, meant) in [
            ("HTTP/2", http::Version::HTTP_2),
            ("HTTP/2.0", http::Version::HTTP_2),
            ("http/1.1", http::Version::HTTP_11),
            ("HTTP/1.0", http::Version::HTTP_10),
        ] {
            assert_eq!(version(written).expect(written), Some(meant), "{written}");
        }
        let err = version("HTTP/9").expect_err("not a version").to_string();
        assert!(err.starts_with("x.toml:4:"), "{err}");
        assert!(err.contains("`HTTP/9` is not an HTTP version"), "{err}");
        assert!(
            err.contains("help: write \"HTTP/1.1\" or \"HTTP/2\""),
            "{err}"
        );
        let ws = Scenario::parse(
            "title = \"t\"\n[[steps]]\nwebsocket = \"ws://localhost/ws\"\nexpect = { version = \"HTTP/2\" }\n",
            "x.toml",
        )
        .expect_err("a handshake is HTTP/1.1")
        .to_string();
        assert!(ws.contains("belongs to a request step"), "{ws}");
        assert_eq!(version_name(http::Version::HTTP_2), "HTTP/2");
    }

    #[test]
    fn a_body_of_a_given_size_is_made_and_its_mistakes_explained() {
        let text = "title = \"t\"\n[[steps]]\nrequest = \"POST http://localhost/upload\"\nbody_size = 1025\n";
        let scenario = Scenario::parse(text, "x.toml").expect("valid");
        let Step::Request(step) = &scenario.steps[0] else {
            panic!("a request step");
        };
        assert_eq!(step.request.body.len(), 1025);
        assert!(step.request.body.iter().all(|b| *b == b'x'));

        let err = |text: &str| {
            Scenario::parse(text, "x.toml")
                .expect_err("invalid")
                .to_string()
        };
        let both = err(
            "title = \"t\"\n[[steps]]\nrequest = \"POST http://localhost/\"\nbody = \"a\"\nbody_size = 2\n",
        );
        assert!(both.starts_with("x.toml:5:"), "{both}");
        assert!(both.contains("either `body` or `body_size`"), "{both}");
        let negative =
            err("title = \"t\"\n[[steps]]\nrequest = \"POST http://localhost/\"\nbody_size = -1\n");
        assert!(negative.starts_with("x.toml:4:"), "{negative}");
        assert!(negative.contains("from 0 to"), "{negative}");
        let huge = err(&format!(
            "title = \"t\"\n[[steps]]\nrequest = \"POST http://localhost/\"\nbody_size = {}\n",
            MAX_BODY_SIZE + 1
        ));
        assert!(huge.contains("64 MiB"), "{huge}");
        let orphan = err("title = \"t\"\n[[steps]]\nnote = \"a\"\nbody_size = 2\n");
        assert!(orphan.contains("belong to a request step"), "{orphan}");
    }

    #[test]
    fn a_step_via_a_layer4_listener_is_parsed_and_its_mistakes_explained() {
        let text = "title = \"t\"\n[[steps]]\nrequest = \"GET https://secure.localhost/\"\nvia = \"l4-passthrough\"\nshow = [\"certificate\"]\nexpect = { no_answer = true }\n";
        let scenario = Scenario::parse(text, "x.toml").expect("valid");
        let Step::Request(step) = &scenario.steps[0] else {
            panic!("a request step");
        };
        assert_eq!(step.request.via.as_deref(), Some("l4-passthrough"));
        assert!(step.expect.no_answer);
        assert_eq!(step.show, vec![(None, Show::Certificate)]);

        let unknown =
            "title = \"t\"\n[[steps]]\nrequest = \"GET http://localhost/\"\nvia = \"l5\"\n";
        let err = Scenario::parse(unknown, "x.toml")
            .expect_err("no such listener")
            .to_string();
        assert!(
            err.starts_with("x.toml:4:7: `l5` is not one of the lab's layer-4 listeners"),
            "{err}"
        );
        assert!(
            err.contains("l4, l4-proxy-protocol, l4-passthrough, l4-terminate"),
            "{err}"
        );

        let on_a_note = "title = \"t\"\n[[steps]]\nnote = \"a\"\nvia = \"l4\"\n";
        let err = Scenario::parse(on_a_note, "x.toml")
            .expect_err("via on a note")
            .to_string();
        assert!(err.contains("via"), "{err}");
        assert!(err.contains("belong to a request step"), "{err}");

        let websocket = "title = \"t\"\n[[steps]]\nwebsocket = \"ws://localhost/ws\"\nexpect = { no_answer = true }\n";
        let err = Scenario::parse(websocket, "x.toml")
            .expect_err("no_answer on a websocket")
            .to_string();
        assert!(
            err.contains("`expect.no_answer` is for a request step"),
            "{err}"
        );
    }

    #[test]
    fn requests_default_to_get_and_keep_the_query() {
        let text = "title = \"t\"\n[[steps]]\nrequest = \"https://secure.localhost/api/tasks?done=false\"\nrepeat = 2\nshow = [\"served-by\", \"json:headers.host\"]\nexpect = { statuses = [200, 429] }\n";
        let scenario = Scenario::parse(text, "x.toml").expect("valid");
        let Step::Request(step) = &scenario.steps[0] else {
            panic!("a request step");
        };
        assert_eq!(step.request.method, Method::GET);
        assert_eq!(step.request.scheme, "https");
        assert_eq!(step.request.host, "secure.localhost");
        assert_eq!(step.request.path, "/api/tasks?done=false");
        assert_eq!(step.repeat, 2);
        assert_eq!(
            step.show,
            [
                (None, Show::ServedBy),
                (None, Show::Json("headers.host".into()))
            ]
        );
        assert_eq!(step.expect.statuses, Some(vec![200, 429]));
    }
}
