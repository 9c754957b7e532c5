//! Chapter 11's code exercise: when a shared cache may keep a response, and
//! for how long it may answer with it without asking the upstream again
//! (RFC 9111, as this proxy's cache reads it: proxy/src/cache/policy.rs).
//!
//! A **shared** cache serves everyone behind the proxy, so it keeps nothing
//! that may be one person's: no `private` or `no-store` answer, no answer
//! to a request with `Authorization` unless the answer allows it, no answer
//! that sets a cookie unless it says `public`.
//!
//! A kept response is **fresh** while its **age** is below its **freshness
//! lifetime** (RFC 9111 section 4.2):
//!
//! - the lifetime is `s-maxage` (meant for shared caches), else `max-age`,
//!   else `Expires` minus `Date`;
//! - the age is how old it already was when it arrived (an earlier cache's
//!   `Age`, or the time since its `Date`) plus the time it has been kept.
//!
//! Time is an argument (seconds since 1970), so [`check`] can play the same
//! exchanges every time and expect the same answers. Dates in headers are
//! HTTP dates (`Mon, 23 Nov 2026 12:00:00 GMT`): [`http_date`] reads them.

use std::fmt;

use crate::{Checks, Report, expect_same};

/// One request and the response the upstream gave it.
#[derive(Debug, Clone, Copy)]
pub struct Exchange<'a> {
    /// The request's method: `GET`, `HEAD`, `POST`, ...
    pub method: &'a str,
    /// The request's headers (names in any case, a name maybe on several lines).
    pub request: &'a [(&'a str, &'a str)],
    /// The response's status: 200, 404, ...
    pub status: u16,
    /// The response's headers.
    pub response: &'a [(&'a str, &'a str)],
    /// The route's `default_ttl` in seconds (nginx's `proxy_cache_valid`):
    /// the lifetime of a response that says nothing about its own.
    pub default_ttl: Option<u64>,
    /// When the response arrived: seconds since 1970-01-01 00:00:00 UTC.
    pub now: u64,
}

/// Why a shared cache does not keep a response; the first that applies, in
/// this order. The proxy writes it in `Cache-Status` as `detail=...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// Only responses to GET are kept.
    Method,
    /// The request said `Cache-Control: no-store`.
    RequestNoStore,
    /// The response said `no-store`.
    NoStore,
    /// The response said `private`: for the user's own browser only.
    Private,
    /// The request carried `Authorization`, and the response said none of
    /// `public`, `s-maxage`, `must-revalidate`.
    Authorization,
    /// The response sets a cookie and did not say `public`.
    SetCookie,
    /// `Vary: *`: the response depends on things no request header shows.
    VaryAny,
    /// A status never kept (1xx, 206, 304), or one kept only with a lifetime
    /// of its own (any but 200, 203, 204, 300, 301, 308, 404, 405, 410,
    /// 414, 501) that has none and does not say `public`.
    Status,
    /// Nothing says how long it is fresh, and the route has no `default_ttl`.
    NoFreshness,
}

impl fmt::Display for NotStored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let detail = match self {
            NotStored::Method => "method",
            NotStored::RequestNoStore => "request-no-store",
            NotStored::NoStore => "no-store",
            NotStored::Private => "private",
            NotStored::Authorization => "authorization",
            NotStored::SetCookie => "set-cookie",
            NotStored::VaryAny => "vary-star",
            NotStored::Status => "status",
            NotStored::NoFreshness => "no-freshness",
        };
        write!(f, "not stored ({detail})")
    }
}

/// A response a shared cache keeps, and its freshness.
pub trait Freshness: Sized {
    /// Decides on a response as it arrives (at `exchange.now`): kept, or
    /// why not.
    fn store(exchange: &Exchange<'_>) -> Result<Self, NotStored>;

    /// Its freshness lifetime in seconds: how long after its origin it is
    /// fresh.
    fn lifetime(&self) -> u64;

    /// Its age in seconds at `now` (never before it arrived): how old it
    /// was when it arrived, plus the time since.
    fn age(&self, now: u64) -> u64;

    /// Seconds of freshness left at `now`: lifetime minus age, negative once
    /// stale (the `ttl` of `Cache-Status: proxy; hit; ttl=42`).
    fn ttl(&self, now: u64) -> i64;

    /// Whether it is fresh at `now`: younger than its lifetime. A fresh
    /// response is served without asking the upstream.
    fn is_fresh(&self, now: u64) -> bool;
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, the one form senders
/// may write, RFC 9110 section 5.6.7) in seconds since 1970; `None` for
/// anything else, a wrong day of the week included. (The proxy also reads
/// the two obsolete forms, `Sunday, 06-Nov-94 ...` and asctime's; the
/// checks never send them.)
pub fn http_date(text: &str) -> Option<u64> {
    let s = text.trim().as_bytes();
    if s.len() != 29
        || &s[3..5] != b", "
        || s[7] != b' '
        || s[11] != b' '
        || s[16] != b' '
        || s[19] != b':'
        || s[22] != b':'
        || &s[25..] != b" GMT"
    {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u64> {
        let digits = &s[range];
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    let day = number(5..7)?;
    let month = MONTHS.iter().position(|m| m.as_bytes() == &s[8..11])? as u64 + 1;
    let year = number(12..16)?;
    let (hour, minute, second) = (number(17..19)?, number(20..22)?, number(23..25)?);
    if year < 1970 || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_since_epoch(year, month, day);
    if WEEKDAYS[(days % 7) as usize].as_bytes() != &s[..3] {
        return None;
    }
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

/// `secs` since 1970 as an HTTP date: `Mon, 23 Nov 2026 12:00:00 GMT`.
pub fn imf_fixdate(secs: u64) -> String {
    let days = secs / 86_400;
    let rest = secs % 86_400;
    let (mut year, mut day) = (1970, days);
    while day >= days_in_year(year) {
        day -= days_in_year(year);
        year += 1;
    }
    let mut month = 1;
    while day >= days_in_month(year, month) {
        day -= days_in_month(year, month);
        month += 1;
    }
    format!(
        "{}, {:02} {} {year} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        day + 1,
        MONTHS[(month - 1) as usize],
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// 1970-01-01 was a Thursday.
const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn is_leap(year: u64) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_year(year: u64) -> u64 {
    if is_leap(year) { 366 } else { 365 }
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn days_since_epoch(year: u64, month: u64, day: u64) -> u64 {
    let years: u64 = (1970..year).map(days_in_year).sum();
    let months: u64 = (1..month).map(|m| days_in_month(year, m)).sum();
    years + months + day - 1
}

/// The moment the checks happen: Mon, 23 Nov 2026 12:00:00 GMT.
pub const NOW: u64 = 1_795_435_200;

/// `NOW` plus (or minus) `seconds`, as an HTTP date.
fn at(seconds: i64) -> String {
    imf_fixdate(NOW.saturating_add_signed(seconds))
}

/// A GET with these request headers, answered with `status` and these
/// response headers, at [`NOW`], without a `default_ttl`.
fn get<'a>(
    request: &'a [(&'a str, &'a str)],
    status: u16,
    response: &'a [(&'a str, &'a str)],
) -> Exchange<'a> {
    Exchange {
        method: "GET",
        request,
        status,
        response,
        default_ttl: None,
        now: NOW,
    }
}

/// An exchange as the report writes it: `GET (Authorization: ...) -> 200
/// with Cache-Control: max-age=60`.
fn show(exchange: &Exchange<'_>) -> String {
    let lines = |headers: &[(&str, &str)]| {
        let words: Vec<String> = headers.iter().map(|(n, v)| format!("{n}: {v}")).collect();
        words.join("; ")
    };
    let mut out = exchange.method.to_owned();
    if !exchange.request.is_empty() {
        out.push_str(&format!(" ({})", lines(exchange.request)));
    }
    out.push_str(&format!(" -> {}", exchange.status));
    if !exchange.response.is_empty() {
        out.push_str(&format!(" with {}", lines(exchange.response)));
    }
    if let Some(ttl) = exchange.default_ttl {
        out.push_str(&format!(", default_ttl {ttl} s"));
    }
    out
}

/// What a decision is, in words: `stored, fresh for 60 s` (its lifetime
/// and its ttl on arrival) or `not stored (private)`.
fn decision<S: Freshness>(exchange: &Exchange<'_>) -> (String, Option<S>) {
    match S::store(exchange) {
        Ok(stored) => (
            format!(
                "stored: lifetime {} s, age {} s, ttl {} s",
                stored.lifetime(),
                stored.age(exchange.now),
                stored.ttl(exchange.now)
            ),
            Some(stored),
        ),
        Err(why) => (why.to_string(), None),
    }
}

/// `Ok` when `exchange` is stored with this lifetime and age on arrival.
fn stored<S: Freshness>(exchange: Exchange<'_>, lifetime: u64, age: u64) -> Result<(), String> {
    let expected = format!(
        "stored: lifetime {lifetime} s, age {age} s, ttl {} s",
        lifetime as i64 - age as i64
    );
    let (got, _) = decision::<S>(&exchange);
    expect_same(expected, got).map_err(|e| format!("{}: {e}", show(&exchange)))
}

/// `Ok` when `exchange` is not stored, for this reason.
fn refused<S: Freshness>(exchange: Exchange<'_>, why: NotStored) -> Result<(), String> {
    let (got, _) = decision::<S>(&exchange);
    expect_same(why, got).map_err(|e| format!("{}: {e}", show(&exchange)))
}

/// Checks a [`Freshness`] against the proxy's cache.
pub fn check<S: Freshness + 'static>() -> Report {
    use NotStored::*;
    let mut checks = Checks::new(
        "freshness.rs: what a shared cache keeps, and how long it is fresh (chapter 11)",
    );
    checks.property(
        "`Cache-Control: max-age=60` is stored with a lifetime of 60 s: fresh 59 s later, stale 60 s later",
        || {
            let response = [("Cache-Control", "max-age=60")];
            let exchange = get(&[], 200, &response);
            stored::<S>(exchange, 60, 0)?;
            let Ok(entry) = S::store(&exchange) else {
                return Err("expected it stored".to_owned());
            };
            for (later, fresh, ttl) in [(59, true, 1), (60, false, 0), (75, false, -15)] {
                let now = NOW + later;
                let got = format!("fresh {}, ttl {} s", entry.is_fresh(now), entry.ttl(now));
                expect_same(format!("fresh {fresh}, ttl {ttl} s"), got)
                    .map_err(|e| format!("{later} s after it arrived: {e}"))?;
            }
            Ok(())
        },
    );
    checks.property(
        "s-maxage, for shared caches, wins over max-age here: `max-age=60, s-maxage=5` is fresh for 5 s, `s-maxage=300, max-age=10` for 300 s",
        || {
            stored::<S>(get(&[], 200, &[("Cache-Control", "max-age=60, s-maxage=5")]), 5, 0)?;
            stored::<S>(get(&[], 200, &[("Cache-Control", "s-maxage=300, max-age=10")]), 300, 0)
        },
    );
    checks.property(
        "Expires counts from Date (Date 11:00:00, Expires 11:00:30: 30 s), from now without a Date; an Expires that is no date (`0`) is stale at once; max-age wins over Expires",
        || {
            let date = at(-3600);
            let expires = at(-3570);
            stored::<S>(get(&[], 200, &[("Date", &date), ("Expires", &expires)]), 30, 3599)?;
            let in_a_minute = at(60);
            stored::<S>(get(&[], 200, &[("Expires", &in_a_minute)]), 60, 0)?;
            stored::<S>(get(&[], 200, &[("Expires", "0")]), 0, 0)?;
            stored::<S>(
                get(
                    &[],
                    200,
                    &[("Expires", &in_a_minute), ("Cache-Control", "max-age=5")],
                ),
                5,
                0,
            )
        },
    );
    checks.property(
        "an Age from an earlier cache counts: `max-age=60` with `Age: 50` has 10 s left, not 60",
        || {
            stored::<S>(
                get(&[], 200, &[("Cache-Control", "max-age=60"), ("Age", "50")]),
                60,
                50,
            )?;
            stored::<S>(
                get(&[], 200, &[("Cache-Control", "max-age=60"), ("Age", "90")]),
                60,
                90,
            )
        },
    );
    checks.property(
        "the time since Date is age too, less one second of rounding: Date 10 s ago is 9 s old; the larger of that and Age counts; a Date in the future is no age",
        || {
            let ten_ago = at(-10);
            let max_age = ("Cache-Control", "max-age=60");
            stored::<S>(get(&[], 200, &[max_age, ("Date", &ten_ago)]), 60, 9)?;
            stored::<S>(get(&[], 200, &[max_age, ("Date", &ten_ago), ("Age", "30")]), 60, 30)?;
            let one_ago = at(-1);
            stored::<S>(get(&[], 200, &[max_age, ("Date", &one_ago)]), 60, 0)?;
            let future = at(600);
            stored::<S>(get(&[], 200, &[max_age, ("Date", &future), ("Age", "3")]), 60, 3)
        },
    );
    checks.property(
        "a kept response ages: arrived with `Age: 5` and `max-age=60`, it is 25 s old 20 s later (35 s left), and stale from 55 s later",
        || {
            let response = [("Cache-Control", "max-age=60"), ("Age", "5")];
            let Ok(entry) = S::store(&get(&[], 200, &response)) else {
                return Err("expected it stored".to_owned());
            };
            for (later, age, ttl, fresh) in [(20, 25, 35, true), (54, 59, 1, true), (55, 60, 0, false)] {
                let now = NOW + later;
                let got = format!(
                    "age {} s, ttl {} s, fresh {}",
                    entry.age(now),
                    entry.ttl(now),
                    entry.is_fresh(now)
                );
                expect_same(format!("age {age} s, ttl {ttl} s, fresh {fresh}"), got)
                    .map_err(|e| format!("{later} s after it arrived: {e}"))?;
            }
            Ok(())
        },
    );
    checks.property(
        "no-store and private are never kept by a shared cache, whatever max-age says; nor when the request says no-store",
        || {
            refused::<S>(get(&[], 200, &[("Cache-Control", "no-store, max-age=60")]), NoStore)?;
            refused::<S>(get(&[], 200, &[("Cache-Control", "max-age=60, private")]), Private)?;
            refused::<S>(
                get(&[], 200, &[("Cache-Control", "private=\"Set-Cookie\", s-maxage=60")]),
                Private,
            )?;
            refused::<S>(
                get(&[("Cache-Control", "no-store")], 200, &[("Cache-Control", "max-age=60")]),
                RequestNoStore,
            )
        },
    );
    checks.property(
        "no-cache is not no-store: a `no-cache, max-age=60` response is kept, with its lifetime (the proxy asks the upstream before each use)",
        || stored::<S>(get(&[], 200, &[("Cache-Control", "no-cache, max-age=60")]), 60, 0),
    );
    checks.property(
        "an answer to a request with Authorization is kept only when it says public, s-maxage or must-revalidate",
        || {
            let auth = [("Authorization", "Basic YTpi")];
            refused::<S>(get(&auth, 200, &[("Cache-Control", "max-age=60")]), Authorization)?;
            stored::<S>(get(&auth, 200, &[("Cache-Control", "public, max-age=60")]), 60, 0)?;
            stored::<S>(get(&auth, 200, &[("Cache-Control", "s-maxage=9")]), 9, 0)?;
            stored::<S>(
                get(&auth, 200, &[("Cache-Control", "must-revalidate, max-age=3")]),
                3,
                0,
            )
        },
    );
    checks.property(
        "a response that sets a cookie is kept only when it says public (this proxy's choice: a session cookie must not reach the next visitor)",
        || {
            refused::<S>(
                get(&[], 200, &[("Cache-Control", "max-age=60"), ("Set-Cookie", "session=1")]),
                SetCookie,
            )?;
            stored::<S>(
                get(
                    &[],
                    200,
                    &[("Cache-Control", "public, max-age=60"), ("Set-Cookie", "session=1")],
                ),
                60,
                0,
            )
        },
    );
    checks.property(
        "`Vary: *` is never kept; `Vary: Accept-Language` is",
        || {
            refused::<S>(
                get(
                    &[],
                    200,
                    &[
                        ("Cache-Control", "max-age=60"),
                        ("Vary", "Accept-Encoding, *"),
                    ],
                ),
                VaryAny,
            )?;
            stored::<S>(
                get(
                    &[],
                    200,
                    &[("Cache-Control", "max-age=60"), ("Vary", "Accept-Language")],
                ),
                60,
                0,
            )
        },
    );
    checks.property(
        "only answers to GET are kept: not HEAD, POST or DELETE; and a refusal gives the first reason in the order of NotStored",
        || {
            let response = [("Cache-Control", "max-age=60")];
            for method in ["HEAD", "POST", "DELETE"] {
                let exchange = Exchange {
                    method,
                    ..get(&[], 200, &response)
                };
                refused::<S>(exchange, Method)?;
            }
            let exchange = Exchange {
                method: "POST",
                ..get(&[], 200, &[("Cache-Control", "no-store")])
            };
            refused::<S>(exchange, Method)?;
            refused::<S>(
                get(
                    &[("Authorization", "Bearer t")],
                    200,
                    &[("Cache-Control", "private"), ("Set-Cookie", "a=1"), ("Vary", "*")],
                ),
                Private,
            )
        },
    );
    checks.property(
        "statuses: 206, 304 and 1xx are never kept; 302 and 500 only with a lifetime of their own; 200 and 404 without one take the route's default_ttl, and are not kept without it",
        || {
            let max_age = [("Cache-Control", "max-age=7")];
            refused::<S>(get(&[], 206, &max_age), Status)?;
            refused::<S>(get(&[], 304, &max_age), Status)?;
            refused::<S>(get(&[], 103, &max_age), Status)?;
            stored::<S>(get(&[], 302, &max_age), 7, 0)?;
            refused::<S>(get(&[], 500, &[]), Status)?;
            refused::<S>(Exchange { default_ttl: Some(10), ..get(&[], 500, &[]) }, Status)?;
            refused::<S>(get(&[], 200, &[]), NoFreshness)?;
            stored::<S>(Exchange { default_ttl: Some(10), ..get(&[], 404, &[]) }, 10, 0)?;
            stored::<S>(
                Exchange {
                    default_ttl: Some(10),
                    ..get(&[], 500, &[("Cache-Control", "public")])
                },
                10,
                0,
            )
        },
    );
    checks.property(
        "directives are read from every Cache-Control line, in any case, and carefully: quoted `s-maxage=\"30\"`, `max-age=abc` is 0, `max-age=60, max-age=10` is 10, a huge number counts as 2^31",
        || {
            stored::<S>(
                get(&[], 200, &[("cache-control", "Public"), ("Cache-Control", "MAX-AGE=60")]),
                60,
                0,
            )?;
            stored::<S>(get(&[], 200, &[("Cache-Control", "s-maxage=\"30\"")]), 30, 0)?;
            stored::<S>(get(&[], 200, &[("Cache-Control", "max-age=abc")]), 0, 0)?;
            stored::<S>(
                get(&[], 200, &[("Cache-Control", "max-age=60"), ("Cache-Control", "max-age=10")]),
                10,
                0,
            )?;
            stored::<S>(
                get(&[], 200, &[("Cache-Control", "max-age=99999999999999999999")]),
                1 << 31,
                0,
            )
        },
    );
    checks.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_are_read_and_written_both_ways() {
        assert_eq!(http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(imf_fixdate(NOW), "Mon, 23 Nov 2026 12:00:00 GMT");
        assert_eq!(http_date("Mon, 23 Nov 2026 12:00:00 GMT"), Some(NOW));
        assert_eq!(
            http_date("Tue, 29 Feb 2028 23:59:59 GMT"),
            Some(1_835_481_599)
        );
        for secs in [0, 951_782_400, NOW, 4_102_444_800, 1_835_481_599] {
            assert_eq!(http_date(&imf_fixdate(secs)), Some(secs), "{secs}");
        }
        for bad in [
            "0",
            "",
            "Sun, 23 Nov 2026 12:00:00 GMT",
            "Mon, 31 Nov 2026 12:00:00 GMT",
            "Mon, 23 Nov 2026 24:00:00 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Mon, 23 Nov 2026 12:00:00 UTC",
            "Mon, 23 Nov 1969 12:00:00 GMT",
        ] {
            assert_eq!(http_date(bad), None, "{bad}");
        }
    }
}
