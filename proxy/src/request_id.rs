//! Naming each request, so one request can be followed through every log.
//!
//! **Request id.** A request that crosses the proxy leaves a line in the
//! proxy's access log and more lines in the upstream's logs. To find all the
//! lines of one request, the proxy gives it an id and sends the id along:
//! - a client (or a proxy in front) that sends `X-Request-Id` keeps its id,
//!   if it looks like an id (up to 200 letters, digits and `-_.:@=+/`);
//! - otherwise the proxy makes one: 32 hex digits, like nginx's `$request_id`;
//! - the id goes upstream, into the access log, and back to the client in the
//!   response, so a user reporting a problem can quote it.
//!
//! **Trace context** ([W3C `traceparent`](https://www.w3.org/TR/trace-context/)).
//! Distributed tracing systems (OpenTelemetry, Jaeger, ...) follow a request
//! across services with one header:
//!
//! ```text
//! traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
//!              |  trace id: the whole journey      |  parent id: the  | flags (01: sampled)
//!              version                             |  caller's span
//! ```
//!
//! The proxy is one hop of the journey: it keeps the trace id and the flags,
//! and puts its own span id in place of the parent id, so the upstream's
//! spans hang under the proxy's. Without a valid `traceparent` it starts a new
//! trace. `tracestate`, the vendors' extra data, passes unchanged (and is
//! dropped with an invalid `traceparent`, as the specification asks). When the
//! proxy makes the request id itself, it uses the trace id, so logs and traces
//! name the request the same way.

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// `traceparent`: the W3C trace context header.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate`: vendor data that travels with `traceparent`.
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// The default request id header.
pub const DEFAULT_HEADER: &str = "x-request-id";

/// The longest client-sent id the proxy keeps.
const MAX_ID_LEN: usize = 200;

/// The names one request carries through the proxy.
#[derive(Debug, Clone)]
pub struct RequestIds {
    /// The header that carries the request id (`X-Request-Id` by default).
    pub header: HeaderName,
    /// The request id: the client's, or made here.
    pub request_id: HeaderValue,
    /// Whether the proxy made the id (the client sent none, or an unusable one).
    pub generated: bool,
    /// The `traceparent` sent upstream: the trace's id, the proxy's own span id.
    pub traceparent: HeaderValue,
    /// Whether the client's `traceparent` was valid and its trace continues.
    pub continued_trace: bool,
}

impl RequestIds {
    /// Reads the client's ids from `headers` and decides the request's.
    /// `tracestate` is removed from `headers` when the trace does not continue.
    pub fn assign(headers: &mut HeaderMap, id_header: &HeaderName) -> RequestIds {
        let span_id = nonzero_u64();
        let parent = headers.get(&TRACEPARENT).and_then(parse_traceparent);
        let (trace_id, flags) = match parent {
            Some(parent) => (parent.trace_id, parent.flags),
            None => {
                headers.remove(&TRACESTATE);
                (nonzero_u128(), 0)
            }
        };
        let traceparent = format!("00-{trace_id:032x}-{span_id:016x}-{flags:02x}");
        let client_id = headers
            .get(id_header)
            .filter(|v| is_usable_id(v.as_bytes()));
        let (request_id, generated) = match client_id {
            Some(id) => (id.clone(), false),
            None => (hex_value(&format!("{trace_id:032x}")), true),
        };
        RequestIds {
            header: id_header.clone(),
            request_id,
            generated,
            traceparent: hex_value(&traceparent),
            continued_trace: parent.is_some(),
        }
    }
}

/// A header value made of hex digits and dashes: always valid.
fn hex_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Whether a client-sent id is kept: short, and only characters that cannot
/// break a log line or a header.
fn is_usable_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'_' | b'.' | b':' | b'@' | b'=' | b'+' | b'/')
        })
}

/// The parts of a valid `traceparent` the proxy carries on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TraceParent {
    trace_id: u128,
    flags: u8,
}

/// Parses `traceparent` as the W3C specification says: lowercase hex fields
/// of fixed lengths; version `ff`, an all-zero trace id or parent id are
/// invalid. A later version may append fields after the four known ones.
fn parse_traceparent(value: &HeaderValue) -> Option<TraceParent> {
    let text = value.to_str().ok()?.trim();
    let mut fields = text.split('-');
    let version = fields.next()?;
    let trace_id = fields.next()?;
    let parent_id = fields.next()?;
    let flags_and_rest = fields.next()?;
    let (flags, extra) = (flags_and_rest, fields.next());
    let is_hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    if !(is_hex(version, 2) && is_hex(trace_id, 32) && is_hex(parent_id, 16) && is_hex(flags, 2)) {
        return None;
    }
    // Version 00 has exactly four fields; `ff` is forbidden.
    if version == "ff" || (version == "00" && extra.is_some()) {
        return None;
    }
    let trace_id = u128::from_str_radix(trace_id, 16).ok()?;
    let parent_id = u64::from_str_radix(parent_id, 16).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    if trace_id == 0 || parent_id == 0 {
        return None;
    }
    // Only the `sampled` flag is defined for version 00; pass on what we know.
    Some(TraceParent {
        trace_id,
        flags: if version == "00" { flags } else { flags & 1 },
    })
}

fn nonzero_u128() -> u128 {
    loop {
        let n = fastrand::u128(..);
        if n != 0 {
            return n;
        }
    }
}

fn nonzero_u64() -> u64 {
    loop {
        let n = fastrand::u64(..);
        if n != 0 {
            return n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assign(pairs: &[(&str, &str)]) -> (RequestIds, HeaderMap) {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        let ids = RequestIds::assign(&mut headers, &HeaderName::from_static(DEFAULT_HEADER));
        (ids, headers)
    }

    fn fields(traceparent: &HeaderValue) -> Vec<String> {
        traceparent
            .to_str()
            .expect("ascii")
            .split('-')
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn without_ids_a_new_trace_starts_and_its_id_names_the_request() {
        let (ids, _) = assign(&[]);
        let parts = fields(&ids.traceparent);
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[0], "00");
        assert_eq!(parts[1].len(), 32);
        assert_eq!(parts[2].len(), 16);
        assert_eq!(parts[3], "00");
        assert!(ids.generated);
        assert!(!ids.continued_trace);
        assert_eq!(ids.request_id.to_str().expect("ascii"), parts[1]);
    }

    #[test]
    fn a_valid_traceparent_keeps_its_trace_and_flags_with_the_proxy_as_parent() {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (ids, headers) = assign(&[("traceparent", incoming), ("tracestate", "vendor=1")]);
        let parts = fields(&ids.traceparent);
        assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(parts[2], "00f067aa0ba902b7");
        assert_eq!(parts[3], "01");
        assert!(ids.continued_trace);
        assert_eq!(
            headers.get(&TRACESTATE).map(|v| v.as_bytes()),
            Some(&b"vendor=1"[..])
        );
    }

    #[test]
    fn invalid_traceparents_start_a_new_trace_and_drop_tracestate() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "not a traceparent",
        ] {
            let (ids, headers) = assign(&[("traceparent", bad), ("tracestate", "vendor=1")]);
            assert!(!ids.continued_trace, "{bad}");
            assert!(!fields(&ids.traceparent)[1].starts_with("4bf92f"), "{bad}");
            assert!(headers.get(&TRACESTATE).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_later_version_may_carry_more_fields() {
        let (ids, _) = assign(&[(
            "traceparent",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-more",
        )]);
        assert!(ids.continued_trace);
        let parts = fields(&ids.traceparent);
        assert_eq!(parts[0], "00");
        assert_eq!(parts[3], "01");
    }

    #[test]
    fn a_clients_request_id_is_kept_when_it_looks_like_an_id() {
        let (ids, _) = assign(&[("x-request-id", "checkout-7f3a:2")]);
        assert_eq!(ids.request_id, "checkout-7f3a:2");
        assert!(!ids.generated);
        for bad in ["", "with space", "quote\"", &"x".repeat(201)] {
            let (ids, _) = assign(&[("x-request-id", bad)]);
            assert!(ids.generated, "{bad:?}");
            assert_eq!(ids.request_id.len(), 32);
        }
    }

    #[test]
    fn every_request_gets_a_different_id() {
        let (a, _) = assign(&[]);
        let (b, _) = assign(&[]);
        assert_ne!(a.request_id, b.request_id);
        assert_ne!(a.traceparent, b.traceparent);
    }
}
