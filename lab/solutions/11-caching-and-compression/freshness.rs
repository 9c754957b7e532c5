//! Chapter 11, in Rust: what a shared cache may keep, and how long it may
//! answer with it without asking the upstream.
//!
//! A reference solution of lab/exercises/11-caching-and-compression/freshness.rs.
//! The proxy's own is proxy/src/cache/policy.rs (`storable`,
//! `explicit_lifetime`, `initial_age`) and the `Entry` of
//! proxy/src/cache/store.rs (`age`, `ttl`, `is_fresh`).

use course_kit::freshness::{Exchange, Freshness, NotStored, http_date};

/// A response the cache keeps, and what it knows of its freshness.
pub struct Stored {
    /// How long it is fresh, counted from its origin.
    lifetime: u64,
    /// How old it was when it arrived.
    initial_age: u64,
    /// When it arrived.
    arrived: u64,
}

/// RFC 9111 section 1.2.2: a larger number of seconds counts as 2^31.
const MAX_SECONDS: u64 = 1 << 31;

/// The Cache-Control directives a shared cache acts on.
#[derive(Default)]
struct Directives {
    no_store: bool,
    private: bool,
    public: bool,
    must_revalidate: bool,
    max_age: Option<u64>,
    s_maxage: Option<u64>,
}

/// The values of `name`'s lines, in order.
fn lines<'a>(headers: &'a [(&'a str, &'a str)], name: &'a str) -> impl Iterator<Item = &'a str> {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// `delta-seconds`: digits only; anything else is 0 (the careful reading),
/// too big is 2^31.
fn seconds(text: &str) -> u64 {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    text.parse::<u64>()
        .map_or(MAX_SECONDS, |n| n.min(MAX_SECONDS))
}

/// Every Cache-Control line's directives; of a number given twice, the
/// smaller (the proxy's choice: RFC 9111 says the first, or stale).
fn directives(headers: &[(&str, &str)]) -> Directives {
    let mut d = Directives::default();
    for directive in lines(headers, "cache-control").flat_map(|v| v.split(',')) {
        let (name, argument) = match directive.split_once('=') {
            Some((name, argument)) => (name.trim(), Some(argument.trim().trim_matches('"'))),
            None => (directive.trim(), None),
        };
        let number = |old: Option<u64>| {
            let new = argument.map_or(0, seconds);
            Some(old.map_or(new, |old| old.min(new)))
        };
        match name.to_ascii_lowercase().as_str() {
            "no-store" => d.no_store = true,
            "private" => d.private = true,
            "public" => d.public = true,
            "must-revalidate" => d.must_revalidate = true,
            "max-age" => d.max_age = number(d.max_age),
            "s-maxage" => d.s_maxage = number(d.s_maxage),
            _ => {}
        }
    }
    d
}

/// Statuses kept without a lifetime of their own, with the route's default.
fn heuristically_cacheable(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

impl Freshness for Stored {
    fn store(exchange: &Exchange<'_>) -> Result<Self, NotStored> {
        let response = exchange.response;
        let cc = directives(response);
        if exchange.method != "GET" {
            return Err(NotStored::Method);
        }
        if directives(exchange.request).no_store {
            return Err(NotStored::RequestNoStore);
        }
        if cc.no_store {
            return Err(NotStored::NoStore);
        }
        if cc.private {
            return Err(NotStored::Private);
        }
        let has = |headers: &[(&str, &str)], name| lines(headers, name).next().is_some();
        if has(exchange.request, "authorization")
            && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate)
        {
            return Err(NotStored::Authorization);
        }
        // The proxy's choice, stricter than the RFC: a session cookie must
        // not reach the next visitor.
        if has(response, "set-cookie") && !cc.public {
            return Err(NotStored::SetCookie);
        }
        if lines(response, "vary")
            .flat_map(|v| v.split(','))
            .any(|name| name.trim() == "*")
        {
            return Err(NotStored::VaryAny);
        }
        if (100..200).contains(&exchange.status) || matches!(exchange.status, 206 | 304) {
            return Err(NotStored::Status);
        }

        let date = lines(response, "date").next().and_then(http_date);
        // s-maxage, else max-age, else Expires minus Date (or now).
        let explicit = match cc.s_maxage.or(cc.max_age) {
            Some(seconds) => Some(seconds),
            None => lines(response, "expires").next().map(|expires| {
                http_date(expires).map_or(0, |expires| {
                    expires.saturating_sub(date.unwrap_or(exchange.now))
                })
            }),
        };
        let lifetime = match explicit {
            Some(lifetime) => lifetime,
            None if !(heuristically_cacheable(exchange.status) || cc.public) => {
                return Err(NotStored::Status);
            }
            None => exchange.default_ttl.ok_or(NotStored::NoFreshness)?,
        };

        // The age it arrived with: Age, or the time since Date less a
        // second of rounding, whichever is more. The second less, and no
        // response delay added (RFC 9111 section 4.2.3), are the proxy's.
        let age_value = lines(response, "age").next().map_or(0, seconds);
        let apparent = date.map_or(0, |date| {
            exchange.now.saturating_sub(date).saturating_sub(1)
        });
        Ok(Stored {
            lifetime,
            initial_age: age_value.max(apparent),
            arrived: exchange.now,
        })
    }

    fn lifetime(&self) -> u64 {
        self.lifetime
    }

    fn age(&self, now: u64) -> u64 {
        self.initial_age + now.saturating_sub(self.arrived)
    }

    fn ttl(&self, now: u64) -> i64 {
        self.lifetime as i64 - self.age(now) as i64
    }

    fn is_fresh(&self, now: u64) -> bool {
        self.age(now) < self.lifetime
    }
}
