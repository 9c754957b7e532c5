//! frontend: the web page the proxy serves at `/`.
//!
//! A browser only ever talks to one address, the proxy's. The page it loads
//! from the frontend calls `/api/whoami` and `/api/tasks` on that same address,
//! and the proxy sends those paths to other services: this is path-based
//! routing, and it is why the page uses relative URLs only. With no host or
//! port written into it, the page works whatever address, port or scheme
//! (HTTP or HTTPS) the proxy is reached on, and the browser sees a single
//! origin, so no cross-origin (CORS) rules get in the way.
//!
//! The page is one self-contained HTML file, `src/frontend/index.html`, built
//! into the binary; read it, it is meant to be read. Its panels make the
//! proxy's work visible: round-robin across the whoami replicas (bars per
//! replica), a burst against the rate-limited `/limited/` (accepted and
//! refused over time), the headers the backend saw, tasks in tasks-api's
//! database, and the proxy's decision trace (`X-Lab-Trace: 1`, answered for
//! clients in `trace_from`). `lab/tests/browser.rs` clicks through it all in
//! headless Chromium.
//!
//! Run with: `cargo run -p backends --bin frontend -- --listen 127.0.0.1:3000`

use axum::Router;
use axum::response::Html;
use axum::routing::get;

/// The page, compiled into the binary so the service needs no files at run time.
pub const INDEX_HTML: &str = include_str!("frontend/index.html");

/// The frontend service: `GET /` serves the page and `GET /health` answers `ok`.
pub fn app() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/health", get(health))
}

async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

/// Liveness check for a proxy or an orchestrator.
async fn health() -> &'static str {
    "ok"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_uses_no_absolute_urls() {
        assert!(!INDEX_HTML.contains("http://"));
        assert!(!INDEX_HTML.contains("https://"));
        assert!(!INDEX_HTML.contains("//localhost"));
    }

    #[test]
    fn the_page_keeps_its_title_and_the_ids_the_browser_tests_use() {
        assert!(INDEX_HTML.contains("<title>Proxy lab</title>"));
        for id in [
            "rr-button",
            "rr-bars",
            "rr-strip",
            "rl-button",
            "rl-timeline",
            "rl-accepted",
            "rl-rejected",
            "headers-table",
            "task-title",
            "task-add",
            "task-list",
            "trace-button",
            "trace-lines",
            "trace-status",
        ] {
            assert!(
                INDEX_HTML.contains(&format!("id=\"{id}\"")),
                "the page lost #{id}"
            );
        }
    }

    #[test]
    fn every_request_goes_to_a_path_on_the_same_origin() {
        for path in ["\"/api/whoami\"", "\"/limited/\"", "\"/api/tasks\""] {
            assert!(INDEX_HTML.contains(path), "the page calls {path}");
        }
        assert!(INDEX_HTML.contains("\"X-Lab-Trace\": \"1\""));
    }
}
