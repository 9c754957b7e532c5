//! Chapter 02, in Rust: which route a request takes, and the path its
//! upstream receives.
//!
//! Check it with `cargo run -p lab -- check 02`; the chapter is
//! docs/02-path-routing.md, a hint is `cargo run -p lab -- hint 02`.
//!
//! The rules:
//!
//! - A request target is a path, maybe followed by `?` and a query:
//!   `/api/tasks?done=true`. Only the path is matched; the query goes on
//!   unchanged.
//! - A prefix matches whole segments of the path: `/api` matches `/api` and
//!   `/api/tasks` but not `/apix`; `/api/` matches `/api/` and `/api/tasks`.
//!   (nginx's `location /api` also matches `/apix`: a classic trap.)
//! - Of the routes whose prefix matches, the one with the **longest** prefix
//!   wins, whatever their order.
//! - A route with `strip_prefix` removes its prefix from the path, and the
//!   result always starts with `/`: with prefix `/api/`, `/api/tasks` goes
//!   on as `/tasks` and `/api/` as `/` (nginx: `proxy_pass http://api/;`).

use course_kit::prefix::{PrefixRouter, Route};

/// A route table.
pub struct Routes {
    // TODO: what does it need to remember?
}

impl PrefixRouter for Routes {
    fn new(routes: &[Route]) -> Self {
        todo!("Routes::new for {} routes", routes.len())
    }

    fn route(&self, target: &str) -> Option<(usize, String)> {
        // TODO: split off the query, find the longest matching prefix,
        // strip it if the route says so, put the query back.
        todo!("Routes::route for {target}")
    }
}
