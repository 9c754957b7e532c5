//! The access log: one line per request, written when the request is over.
//!
//! The default format is nginx's `combined`, which log tools (GoAccess,
//! AWStats, fail2ban, ...) read as is, followed by what an operator of a
//! proxy needs on top:
//!
//! ```text
//! 127.0.0.1 - - [23/Nov/2026:18:02:11 +0000] "GET /api/tasks HTTP/1.1" 200 512 "-" "curl/8.5.0" rt=0.004 upstream=127.0.0.1:8000 upstream_status=200 upstream_time=0.003 id=4bf92f35... end=done
//! ```
//!
//! - `rt`: seconds from the request's arrival to the last byte of the answer;
//! - `upstream`, `upstream_status`, `upstream_time` (to the response head):
//!   the server that answered, as it answered (`-` when none was asked: a
//!   `return` route, a cache hit, a refusal);
//! - `id`: the request id (see [`crate::request_id`]);
//! - `end`: how the request ended, in the spirit of HAProxy's termination
//!   flags: `done`, `client_closed` (the client went away before the whole
//!   answer was sent), `upstream_broke` (the upstream cut its body off or went
//!   silent), `limited` (a rate or connection limit refused it), or the
//!   `Proxy-Status` error of a failed request (`connection_refused`,
//!   `http_response_timeout`, ...).
//!
//! With `format = "json"` each line is one JSON object with the same facts,
//! for log pipelines (Loki, Elasticsearch, `jq`).
//!
//! The line is written when the body has been sent (or abandoned): only then
//! are the bytes sent and the way it ended known. Where it goes is the
//! binary's choice (`access_log = { path = ... }`, see `proxy::logging`):
//! the proxy emits it as a `tracing` event of target `proxy::access`, and
//! when nobody listens (tests, benchmarks) nothing is counted or formatted.

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::HeaderValue;
use http_body::{Body, Frame};

use crate::body::{BodyError, ProxyBody};

/// The `tracing` target access-log lines are emitted under.
pub const TARGET: &str = "proxy::access";

/// How lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// nginx's `combined`, plus the proxy's fields.
    #[default]
    Combined,
    /// One JSON object per line.
    Json,
}

/// Where access-log lines go (the `proxy` binary's choice; see `proxy::logging`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard output, like a container's log (the default).
    #[default]
    Stdout,
    /// Standard error, with the error log.
    Stderr,
    /// A file, appended to, reopened on SIGUSR1 (log rotation).
    File(std::path::PathBuf),
    /// Nowhere.
    Off,
}

/// The `access_log` setting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessLogSettings {
    /// Where lines go.
    pub target: LogTarget,
    /// How they are written.
    pub format: LogFormat,
}

/// Whether anyone listens for access-log lines (so a request should keep
/// what its line will need).
pub fn is_on() -> bool {
    tracing::enabled!(target: TARGET, tracing::Level::INFO)
}

/// Everything one line says, gathered while the request ran.
#[derive(Debug)]
pub struct Record {
    /// How to write it.
    pub format: LogFormat,
    /// The client's address.
    pub remote_addr: std::net::IpAddr,
    /// When the request arrived (wall clock, for the timestamp).
    pub time: SystemTime,
    /// When the request arrived (monotonic, for durations).
    pub started: Instant,
    /// `GET /path?query HTTP/1.1`.
    pub request_line: String,
    /// The status sent to the client.
    pub status: u16,
    /// `Referer`, if sent.
    pub referer: Option<HeaderValue>,
    /// `User-Agent`, if sent.
    pub user_agent: Option<HeaderValue>,
    /// The upstream server asked, its status, and the time to its response head.
    pub upstream: Option<(std::sync::Arc<str>, u16, Duration)>,
    /// The request id.
    pub request_id: HeaderValue,
    /// How it ended, when known before the body (a failure or a refusal).
    pub end: Option<&'static str>,
}

impl Record {
    /// The line, with `bytes` of body sent and the request over after `took`.
    pub fn line(&self, bytes: u64, took: Duration, end: &str) -> String {
        let header = |v: &Option<HeaderValue>| {
            v.as_ref()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let id = String::from_utf8_lossy(self.request_id.as_bytes());
        match self.format {
            LogFormat::Combined => {
                let mut line = format!(
                    "{} - - [{}] \"{}\" {} {} \"{}\" \"{}\" rt={:.3}",
                    self.remote_addr,
                    clf_time(self.time),
                    escape(&self.request_line),
                    self.status,
                    bytes,
                    escape(header(&self.referer).as_deref().unwrap_or("-")),
                    escape(header(&self.user_agent).as_deref().unwrap_or("-")),
                    took.as_secs_f64(),
                );
                match &self.upstream {
                    Some((server, status, time)) => {
                        let _ = write!(
                            line,
                            " upstream={server} upstream_status={status} upstream_time={:.3}",
                            time.as_secs_f64()
                        );
                    }
                    None => line.push_str(" upstream=- upstream_status=- upstream_time=-"),
                }
                let _ = write!(line, " id={} end={end}", escape(&id));
                line
            }
            LogFormat::Json => serde_json::json!({
                "time": humantime::format_rfc3339_millis(self.time).to_string(),
                "remote_addr": self.remote_addr.to_string(),
                "request": self.request_line,
                "status": self.status,
                "bytes_sent": bytes,
                "referer": header(&self.referer),
                "user_agent": header(&self.user_agent),
                "request_time": round_ms(took),
                "upstream": self.upstream.as_ref().map(|(s, _, _)| s.to_string()),
                "upstream_status": self.upstream.as_ref().map(|(_, s, _)| *s),
                "upstream_time": self.upstream.as_ref().map(|(_, _, t)| round_ms(*t)),
                "request_id": id,
                "end": end,
            })
            .to_string(),
        }
    }

    fn write(&self, bytes: u64, end: &str) {
        let line = self.line(bytes, self.started.elapsed(), end);
        tracing::info!(target: TARGET, "{line}");
    }
}

fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// nginx's `$time_local` (in UTC): `10/Oct/2000:13:55:36 +0000`, rearranged
/// from the HTTP date `Tue, 10 Oct 2000 13:55:36 GMT`.
pub fn clf_time(time: SystemTime) -> String {
    let http = httpdate::fmt_http_date(time);
    let parts: Vec<&str> = http.split(' ').collect();
    match parts.as_slice() {
        [_, day, month, year, clock, _] => format!("{day}/{month}/{year}:{clock} +0000"),
        _ => http,
    }
}

/// Quotes and control characters from the client are escaped as nginx
/// does (`\x22`), so a request cannot forge a log line or a field.
fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    if !text
        .bytes()
        .any(|b| b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b))
    {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for b in text.bytes() {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(char::from(b));
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The response body, counting the bytes it sends; the line is written when
/// it ends (`done`, or `upstream_broke` if it failed) or is dropped before
/// its end (`client_closed`).
pub fn logged(body: ProxyBody, record: Record) -> ProxyBody {
    use http_body_util::BodyExt;
    Logged {
        body,
        record: Some(record),
        bytes: 0,
    }
    .boxed()
}

struct Logged {
    body: ProxyBody,
    record: Option<Record>,
    bytes: u64,
}

impl Logged {
    fn finish(&mut self, end: &str) {
        if let Some(record) = self.record.take() {
            let end = record.end.unwrap_or(end);
            record.write(self.bytes, end);
        }
    }
}

impl Body for Logged {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
                if self.body.is_end_stream() {
                    self.finish("done");
                }
            }
            std::task::Poll::Ready(Some(Err(_))) => self.finish("upstream_broke"),
            std::task::Poll::Ready(None) => self.finish("done"),
            std::task::Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        // hyper drops an empty body without polling it: that is not a client leaving.
        let end = if self.body.is_end_stream() {
            "done"
        } else {
            "client_closed"
        };
        self.finish(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(format: LogFormat) -> Record {
        Record {
            format,
            remote_addr: "203.0.113.7".parse().expect("ip"),
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(971_186_136),
            started: Instant::now(),
            request_line: "GET /a?b=1 HTTP/1.1".into(),
            status: 200,
            referer: None,
            user_agent: Some(HeaderValue::from_static("curl/8.5.0")),
            upstream: Some(("127.0.0.1:8000".into(), 200, Duration::from_millis(3))),
            request_id: HeaderValue::from_static("abc"),
            end: None,
        }
    }

    #[test]
    fn combined_is_nginx_combined_plus_the_proxys_fields() {
        let line = record(LogFormat::Combined).line(512, Duration::from_millis(4), "done");
        assert_eq!(
            line,
            "203.0.113.7 - - [10/Oct/2000:13:55:36 +0000] \"GET /a?b=1 HTTP/1.1\" 200 512 \"-\" \"curl/8.5.0\" rt=0.004 upstream=127.0.0.1:8000 upstream_status=200 upstream_time=0.003 id=abc end=done"
        );
    }

    #[test]
    fn a_request_without_upstream_says_so() {
        let mut r = record(LogFormat::Combined);
        r.upstream = None;
        r.end = Some("limited");
        let line = r.line(0, Duration::ZERO, "done");
        assert!(
            line.ends_with("upstream=- upstream_status=- upstream_time=- id=abc end=done"),
            "{line}"
        );
    }

    #[test]
    fn json_has_the_same_facts() {
        let line = record(LogFormat::Json).line(512, Duration::from_millis(4), "client_closed");
        let value: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(value["time"], "2000-10-10T13:55:36.000Z");
        assert_eq!(value["status"], 200);
        assert_eq!(value["bytes_sent"], 512);
        assert_eq!(value["referer"], serde_json::Value::Null);
        assert_eq!(value["upstream_status"], 200);
        assert_eq!(value["upstream_time"], 0.003);
        assert_eq!(value["request_id"], "abc");
        assert_eq!(value["end"], "client_closed");
    }

    #[test]
    fn a_client_cannot_forge_a_field_or_a_line() {
        let mut r = record(LogFormat::Combined);
        r.user_agent = Some(HeaderValue::from_static("x\" 200 \"evil"));
        let line = r.line(0, Duration::ZERO, "done");
        assert!(line.contains("\"x\\x22 200 \\x22evil\""), "{line}");
        assert_eq!(escape("tab\there"), "tab\\x09here");
    }
}
