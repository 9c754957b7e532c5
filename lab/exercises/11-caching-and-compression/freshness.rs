//! Chapter 11, in Rust: what a shared cache may keep, and how long it may
//! answer with it without asking the upstream (RFC 9111, as this proxy
//! reads it).
//!
//! Check it with `cargo run -p lab -- check 11`; the chapter is
//! docs/11-caching-and-compression.md, a hint is `cargo run -p lab -- hint 11`.
//!
//! **Kept or not** (`store`): the first rule that applies gives the reason.
//!
//! 1. Only answers to `GET` are kept (`NotStored::Method`).
//! 2. The request's `Cache-Control` says `no-store` (`RequestNoStore`).
//! 3. The response's says `no-store` (`NoStore`) or 4. `private` (`Private`).
//! 5. The request has `Authorization`, and the response says none of
//!    `public`, `s-maxage`, `must-revalidate` (`Authorization`).
//! 6. The response has `Set-Cookie` and does not say `public` (`SetCookie`).
//! 7. A `Vary` line lists `*` (`VaryAny`).
//! 8. The status is 1xx, 206 or 304 (`Status`).
//! 9. The lifetime (below). Without one of its own: a status other than
//!    200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501 that does not
//!    say `public` is not kept (`Status`); the others take the route's
//!    `default_ttl`, and without one are not kept (`NoFreshness`).
//!
//! `no-cache` is not `no-store`: such a response is kept (the proxy asks
//! the upstream before each use of it, which is not this exercise).
//!
//! **Cache-Control** may come on several lines; its directives are
//! separated by commas, their names in any case, a number maybe in quotes
//! (`s-maxage="30"`). A number read carefully: anything but digits is 0,
//! more than 2^31 is 2^31, and of a directive given twice the smaller wins.
//!
//! **The lifetime**, in seconds: `s-maxage` (it is for shared caches like
//! this one), else `max-age`, else `Expires` minus `Date` (minus the time
//! it arrived, `now`, when there is no `Date`; never below 0; an `Expires`
//! that is not a date means 0). `http_date` reads a date.
//!
//! **The age** when it arrived: the `Age` header (an earlier cache held it
//! that long), or the time from `Date` to `now` less 1 second, whichever is
//! more; a `Date` after `now` adds nothing. The second less is this proxy's
//! own: `Date` is written to the second, so one second apart is rounding.
//! (RFC 9111 section 4.2.3 also adds the time the request took; the proxy
//! does not.) After that, the age grows with the time since it arrived.
//! Several lines of `Age`, `Date` or `Expires`: the first counts.
//!
//! Fresh: younger than its lifetime.
//!
//! **Where this proxy reads RFC 9111 its own way** (the check follows the
//! proxy): a `Set-Cookie` keeps an answer out unless it says `public` (the
//! RFC would keep it); `private="Set-Cookie"`, private for some headers
//! only, counts as `private`; only GET answers are kept, never a 206; of a
//! directive given twice the smaller number wins (the RFC: the first, or
//! stale); the age is one second less and adds no request time (above); and
//! no lifetime is guessed (the RFC allows a guess, e.g. a tenth of the time
//! since `Last-Modified`): the proxy only uses the `default_ttl` it was
//! configured with.

use course_kit::freshness::{Exchange, Freshness, NotStored, http_date};

/// A response the cache keeps, and what it knows of its freshness.
pub struct Stored {
    // TODO: what must it remember to answer lifetime, age, ttl and is_fresh later?
}

impl Freshness for Stored {
    fn store(exchange: &Exchange<'_>) -> Result<Self, NotStored> {
        // TODO: rules 1 to 9, the lifetime and the age it arrived with.
        todo!(
            "Stored::store for a {} answered {}",
            exchange.method,
            exchange.status
        )
    }

    fn lifetime(&self) -> u64 {
        todo!("Stored::lifetime")
    }

    fn age(&self, now: u64) -> u64 {
        todo!("Stored::age at {now}")
    }

    fn ttl(&self, now: u64) -> i64 {
        // TODO: lifetime minus age, below 0 once stale.
        todo!("Stored::ttl at {now}")
    }

    fn is_fresh(&self, now: u64) -> bool {
        todo!("Stored::is_fresh at {now}")
    }
}
