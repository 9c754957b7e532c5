//! Metrics: numbers about the traffic, for Prometheus to collect.
//!
//! The access log tells the story of each request; metrics tell the sum of
//! all of them, cheaply, as a few numbers that a monitoring system reads
//! every few seconds and draws over time ("requests per second by status",
//! "95th percentile latency", "is any upstream server down?").
//!
//! # Three kinds of metric
//! - A **counter** only goes up: `proxy_requests_total` is the number of
//!   requests answered since the proxy started. Prometheus looks at how fast
//!   it grows (`rate(proxy_requests_total[1m])` is requests per second), so a
//!   restart, which starts it from 0 again, is harmless.
//! - A **gauge** goes up and down: `proxy_open_connections` is how many client
//!   connections are open *now*.
//! - A **histogram** counts observations into buckets (`le="0.1"`: took at most
//!   100 ms) and keeps their sum and count, so Prometheus can estimate
//!   percentiles (`histogram_quantile(0.95, ...)`) and averages over any window.
//!
//! # Labels, and why their values must be few
//! A label splits a metric into series: `proxy_requests_total{server="app.localhost",
//! route="/api/", status_class="2xx"}`. Every distinct set of label values is a
//! separate series that Prometheus stores forever, so labels must take few
//! values. That is why `route` is the *configured* route path (`/api/`), never
//! the request path (`/api/tasks/17`): request paths are chosen by clients,
//! and a client scanning random URLs would create millions of series and take
//! down the monitoring. The same goes for `status_class` (`2xx`, never the exact
//! status) and for the server label (the first `server_names` entry).
//!
//! # Cheap on the hot path
//! The counters and the histogram for every (server, route) are looked up once,
//! when a configuration is compiled into a [`Snapshot`]: a request finds its own
//! by the router's indices, and counting it is an atomic add, with no label
//! hashing and no allocation. Counters live in [`Metrics`], which survives
//! reloads, so a reload never sets them back to zero.
//!
//! # Pull, not push
//! Some numbers are *state*, not events: whether each upstream server is up,
//! how many requests each has in progress. Keeping a gauge in step with every
//! change would cost work on every request and could drift; instead
//! [`render`] reads them from the live snapshot when Prometheus asks (a
//! *scrape*). That costs nothing between scrapes and is always right.
//!
//! # A separate listener on loopback
//! The metrics name every upstream server, route and limit zone: internals a
//! client has no business seeing. So they are served by the admin listener
//! (`admin = { addr = "127.0.0.1:9090" }`, see [`crate::server`]), never on
//! the proxy's own ports, and by default only on loopback, where only this
//! machine (a Prometheus agent next to it) can read them.

use std::sync::Arc;

use http::{Response, StatusCode, header};
use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::body::ProxyBody;
use crate::cache::CacheStatus;
use crate::config::{Action, Config};
use crate::proxy::{RequestCtx, Snapshot};

/// The `Content-Type` of Prometheus' text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// The classes of the `status_class` label, by the status' first digit.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The values of the cache's `result` label (see [`cache_result`]).
const CACHE_RESULTS: [&str; 7] = [
    "hit",
    "stale",
    "collapsed",
    "revalidated",
    "expired",
    "miss",
    "bypass",
];

/// Every metric the proxy counts, in one registry. Made once per proxy and
/// kept across reloads.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    rate_limited: IntCounterVec,
    conn_limited: IntCounterVec,
    cache: IntCounterVec,
    upstream_errors: IntCounterVec,
    open_connections: IntGauge,
    connections: IntCounter,
    stream_connections: IntCounterVec,
    stream_bytes: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric at zero.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let vec = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("a valid metric name and labels");
            registry
                .register(Box::new(vec.clone()))
                .expect("each metric is registered once");
            vec
        };
        let requests = counter(
            "proxy_requests_total",
            "Requests answered, by server, configured route and status class.",
            &["server", "route", "status_class"],
        );
        let rate_limited = counter(
            "proxy_rate_limited_total",
            "Requests refused by a request-rate limit (limit_req), by zone.",
            &["zone"],
        );
        let conn_limited = counter(
            "proxy_conn_limited_total",
            "Requests refused by a concurrency limit (limit_conn), by zone.",
            &["zone"],
        );
        let cache = counter(
            "proxy_cache_requests_total",
            "Requests on a cached route, by cache zone and what the cache did.",
            &["zone", "result"],
        );
        let upstream_errors = counter(
            "proxy_upstream_errors_total",
            "Requests that failed at the upstream, by upstream and RFC 9209 error type.",
            &["upstream", "kind"],
        );
        // Layer 4: the listen address as configured and the upstream's name
        // are few values; the end is one of five words.
        let stream_connections = counter(
            "proxy_stream_connections_total",
            "TCP stream connections ended, by stream listener, upstream and how they ended.",
            &["listen", "upstream", "end"],
        );
        let stream_bytes = counter(
            "proxy_stream_bytes_total",
            "Bytes copied by TCP streams, by stream listener and direction (to_upstream, to_client).",
            &["listen", "direction"],
        );
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "proxy_request_duration_seconds",
                "Time from a request's arrival to its response head, by server and route.",
            ),
            &["server", "route"],
        )
        .expect("a valid histogram");
        registry
            .register(Box::new(duration.clone()))
            .expect("registered once");
        let open_connections =
            IntGauge::new("proxy_open_connections", "Client connections open now (a WebSocket counts until its upgrade; the tunnel is not counted).")
                .expect("a valid gauge");
        registry
            .register(Box::new(open_connections.clone()))
            .expect("registered once");
        let connections =
            IntCounter::new("proxy_connections_total", "Client connections accepted.")
                .expect("a valid counter");
        registry
            .register(Box::new(connections.clone()))
            .expect("registered once");
        Metrics {
            registry,
            requests,
            duration,
            rate_limited,
            conn_limited,
            cache,
            upstream_errors,
            open_connections,
            connections,
            stream_connections,
            stream_bytes,
        }
    }

    /// Counts one ended TCP stream connection (see [`crate::stream`]): how it
    /// ended and the bytes it carried each way.
    pub fn stream_ended(
        &self,
        listen: &str,
        upstream: &str,
        end: &str,
        to_upstream: u64,
        to_client: u64,
    ) {
        self.stream_connections
            .with_label_values(&[listen, upstream, end])
            .inc();
        self.stream_bytes
            .with_label_values(&[listen, "to_upstream"])
            .inc_by(to_upstream);
        self.stream_bytes
            .with_label_values(&[listen, "to_client"])
            .inc_by(to_client);
    }

    /// Counts a connection or request refused by the concurrency zone `zone`.
    pub fn conn_limited(&self, zone: &str) {
        self.conn_limited.with_label_values(&[zone]).inc();
    }

    /// Counts a client connection as open until the returned guard is dropped.
    pub fn connection_opened(&self) -> OpenConnection {
        self.connections.inc();
        self.open_connections.inc();
        OpenConnection(self.open_connections.clone())
    }
}

/// A client connection, counted in `proxy_open_connections` while it lives.
#[derive(Debug)]
pub struct OpenConnection(IntGauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One route's series, resolved once per snapshot.
#[derive(Debug)]
struct RouteSeries {
    by_class: [IntCounter; 5],
    duration: Histogram,
}

impl RouteSeries {
    fn new(metrics: &Metrics, server: &str, route: &str) -> RouteSeries {
        RouteSeries {
            by_class: STATUS_CLASSES
                .map(|class| metrics.requests.with_label_values(&[server, route, class])),
            duration: metrics.duration.with_label_values(&[server, route]),
        }
    }
}

/// The series one configuration's requests count into, found by index:
/// what [`Snapshot`] holds. Built by [`SnapshotMetrics::new`] when the
/// configuration is compiled, so a request never looks a label up.
#[derive(Debug)]
pub struct SnapshotMetrics {
    /// The registry, shared by every snapshot of one proxy.
    pub shared: Arc<Metrics>,
    /// `servers[s].0[r]` is route `r` of server `s`; `.1` its "no route" (404).
    servers: Vec<(Vec<RouteSeries>, RouteSeries)>,
    /// For a request no server took (no server configured).
    unrouted: RouteSeries,
    rate_zones: Vec<IntCounter>,
    conn_zones: Vec<IntCounter>,
    /// `cache_zones[z][i]` counts result `CACHE_RESULTS[i]` of zone `z`.
    cache_zones: Vec<[IntCounter; CACHE_RESULTS.len()]>,
}

impl SnapshotMetrics {
    /// Resolves the series of every server, route and zone of `config`.
    pub fn new(shared: Arc<Metrics>, config: &Config) -> SnapshotMetrics {
        let m = &shared;
        let servers = config
            .servers
            .iter()
            .map(|server| {
                let name = server
                    .names
                    .first()
                    .map_or_else(|| "-".to_owned(), ToString::to_string);
                let routes = server
                    .routes
                    .iter()
                    .map(|route| RouteSeries::new(m, &name, &route.path))
                    .collect();
                (routes, RouteSeries::new(m, &name, "-"))
            })
            .collect();
        SnapshotMetrics {
            servers,
            unrouted: RouteSeries::new(m, "-", "-"),
            rate_zones: config
                .rate_zones
                .iter()
                .map(|z| m.rate_limited.with_label_values(&[&z.name]))
                .collect(),
            conn_zones: config
                .conn_zones
                .iter()
                .map(|z| m.conn_limited.with_label_values(&[&z.name]))
                .collect(),
            cache_zones: config
                .cache_zones
                .iter()
                .map(|z| CACHE_RESULTS.map(|r| m.cache.with_label_values(&[&z.name, r])))
                .collect(),
            shared,
        }
    }
}

/// Counts one answered request: its status class and time to the response
/// head on its route, and, when they happened, a limit's refusal, what the
/// cache did and an upstream failure.
pub fn record(snapshot: &Snapshot, ctx: &RequestCtx, response: &Response<ProxyBody>) {
    let metrics = &snapshot.metrics;
    let matched = ctx.matched;
    let server = matched.and_then(|m| metrics.servers.get(m.server));
    let series = match (server, matched.and_then(|m| m.route)) {
        (Some((routes, _)), Some(route)) => routes.get(route),
        (Some((_, no_route)), None) => Some(no_route),
        (None, _) => None,
    }
    .unwrap_or(&metrics.unrouted);
    series.by_class[class_index(response.status())].inc();
    series.duration.observe(ctx.started.elapsed().as_secs_f64());

    if ctx.limited.is_none() && ctx.cache.is_none() && ctx.error.is_none() {
        return;
    }
    let config = &snapshot.config;
    let server = matched.and_then(|m| config.servers.get(m.server));
    let route = matched
        .zip(server)
        .and_then(|(m, s)| s.routes.get(m.route?));
    if let (Some(zone), Some(server), Some(route)) = (&ctx.limited, server, route) {
        // Which kind of limit refused: the zone named, among the route's own.
        let conn = route
            .limit_conn
            .as_ref()
            .or(server.limit_conn.as_ref())
            .map(|l| l.zone)
            .filter(|&i| config.conn_zones.get(i).is_some_and(|z| &z.name == zone));
        let rate = route
            .limit_req
            .as_ref()
            .or(server.limit_req.as_ref())
            .map(|l| l.zone)
            .filter(|&i| config.rate_zones.get(i).is_some_and(|z| &z.name == zone));
        // Both kinds may have a zone of that name: a rate refusal is the one
        // that says when to come back.
        let by_rate = response.headers().contains_key(header::RETRY_AFTER);
        match (conn, rate) {
            (Some(i), None) => metrics.conn_zones.get(i),
            (None, Some(i)) => metrics.rate_zones.get(i),
            (Some(i), Some(_)) if !by_rate => metrics.conn_zones.get(i),
            (_, Some(i)) => metrics.rate_zones.get(i),
            (None, None) => None,
        }
        .inspect(|c| c.inc());
    }
    if let (Some(status), Some(server), Some(route)) = (&ctx.cache, server, route)
        && let Some(settings) = route.cache.as_ref().or(server.cache.as_ref())
        && let Some(zone) = metrics.cache_zones.get(settings.zone)
    {
        zone[cache_result(status)].inc();
    }
    if let (Some(kind), Some(route)) = (ctx.error, route)
        && kind.is_upstream_failure()
        && let Action::Proxy(pass) = &route.action
        && let Some(upstream) = config.upstreams.get(pass.upstream)
        // An error path: the label lookup (a hash, no allocation once the
        // series exists) is fine here.
        && let Ok(counter) = metrics
            .shared
            .upstream_errors
            .get_metric_with_label_values(&[upstream.name.as_str(), kind.proxy_status_type()])
    {
        counter.inc();
    }
}

/// The `result` label for what the cache did (an index into `CACHE_RESULTS`):
/// `hit`; `stale` (a stale copy served while it is refreshed);
/// `collapsed` (another request's fetch reused); `revalidated` (a stale copy
/// confirmed by a 304); `expired` (a stale copy replaced); `miss` (not in
/// the cache); `bypass` (not cacheable, or the client asked for a fresh one).
fn cache_result(status: &CacheStatus) -> usize {
    let name = if status.collapsed == Some(true) {
        "collapsed"
    } else if status.hit {
        if status.ttl.is_some_and(|ttl| ttl < 0) {
            "stale"
        } else {
            "hit"
        }
    } else {
        match status.fwd {
            Some("stale") if status.fwd_status == Some(304) => "revalidated",
            Some("stale") => "expired",
            Some("request" | "bypass") => "bypass",
            _ => "miss",
        }
    };
    CACHE_RESULTS.iter().position(|r| *r == name).unwrap_or(0)
}

/// The text Prometheus reads at `GET /metrics`: the counters, and the gauges
/// read from `snapshot` now (pull model): each upstream server's health
/// (`proxy_upstream_server_up`, 1 when the balancer may pick it) and its
/// requests in progress (`proxy_upstream_in_flight`).
pub fn render(snapshot: &Snapshot) -> String {
    let mut families = snapshot.metrics.shared.registry.gather();
    let up = IntGaugeVec::new(
        Opts::new(
            "proxy_upstream_server_up",
            "1 when the upstream server may receive requests (health checks and max_fails), else 0.",
        ),
        &["upstream", "server"],
    );
    let in_flight = IntGaugeVec::new(
        Opts::new(
            "proxy_upstream_in_flight",
            "Requests in progress on the upstream server now.",
        ),
        &["upstream", "server"],
    );
    if let (Ok(up), Ok(in_flight)) = (up, in_flight) {
        let now = tokio::time::Instant::now();
        for pool in &snapshot.upstreams {
            let servers = pool.servers();
            for server in servers.iter() {
                let labels = [pool.name.as_str(), &*server.address];
                if let Ok(gauge) = up.get_metric_with_label_values(&labels) {
                    let available = server.health.is_available(now, servers.len() > 1);
                    gauge.set(i64::from(available));
                }
                if let Ok(gauge) = in_flight.get_metric_with_label_values(&labels) {
                    gauge.set(i64::from(server.peer.in_flight()));
                }
            }
        }
        families.extend(up.collect());
        families.extend(in_flight.collect());
    }
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut text = Vec::new();
    if let Err(err) = TextEncoder::new().encode(&families, &mut text) {
        tracing::error!("cannot encode the metrics: {err}");
    }
    String::from_utf8(text).unwrap_or_default()
}

/// Where `status` goes in [`STATUS_CLASSES`] (a status over 599, which
/// no server should send, counts as 5xx).
fn class_index(status: StatusCode) -> usize {
    usize::from(status.as_u16() / 100).clamp(1, 5) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_results_have_names_from_the_fixed_set() {
        let result = |status: CacheStatus| CACHE_RESULTS[cache_result(&status)];
        let hit = CacheStatus {
            hit: true,
            ttl: Some(7),
            ..CacheStatus::default()
        };
        assert_eq!(result(hit), "hit");
        let stale = CacheStatus {
            hit: true,
            ttl: Some(-2),
            ..CacheStatus::default()
        };
        assert_eq!(result(stale), "stale");
        let miss = CacheStatus {
            fwd: Some("uri-miss"),
            stored: true,
            ..CacheStatus::default()
        };
        assert_eq!(result(miss), "miss");
        let revalidated = CacheStatus {
            fwd: Some("stale"),
            fwd_status: Some(304),
            ..CacheStatus::default()
        };
        assert_eq!(result(revalidated), "revalidated");
        let bypass = CacheStatus {
            fwd: Some("bypass"),
            ..CacheStatus::default()
        };
        assert_eq!(result(bypass), "bypass");
    }

    #[test]
    fn statuses_fall_into_five_classes() {
        let class = |status: u16| {
            STATUS_CLASSES[class_index(StatusCode::from_u16(status).expect("a status"))]
        };
        assert_eq!(class(101), "1xx");
        assert_eq!(class(200), "2xx");
        assert_eq!(class(404), "4xx");
        assert_eq!(class(502), "5xx");
        assert_eq!(class(999), "5xx");
    }
}
