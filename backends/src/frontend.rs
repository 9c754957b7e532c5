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
//! into the binary; read it, it is meant to be read.
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
}
