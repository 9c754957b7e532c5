//! Inputs for the benchmarks, and the naive baselines they are measured against.
//!
//! Run with `cargo bench -p lab-benches`. Benchmarks measure; they assert nothing.

use proxy::Config;

/// A config with one server and `routes` prefix routes (`/svc0/`, `/svc1/`, ...,
/// plus `/`), all forwarding to one upstream.
pub fn config_with_routes(routes: usize) -> Config {
    let mut text = String::from(
        "[[listen]]\naddr = \"127.0.0.1:0\"\n\n[[servers]]\nserver_names = [\"app.localhost\"]\n",
    );
    text.push_str("[[servers.routes]]\npath = \"/\"\nupstream = \"app\"\n");
    for i in 0..routes.saturating_sub(1) {
        // Prefixes of varied lengths, as real configs have.
        let depth = "x/".repeat(i % 7);
        text.push_str(&format!(
            "[[servers.routes]]\npath = \"/svc{i}/{depth}\"\nupstream = \"app\"\n"
        ));
    }
    text.push_str("[upstreams.app]\nservers = [\"127.0.0.1:9000\"]\n");
    match Config::parse(&text, "bench.toml") {
        Ok(config) => config,
        Err(errors) => panic!("benchmark config is invalid: {errors}"),
    }
}

/// The obvious way to find the longest matching prefix: look at every route.
/// The real router is measured against this.
pub fn linear_longest_prefix<'a>(prefixes: &'a [String], path: &str) -> Option<&'a str> {
    prefixes
        .iter()
        .filter(|p| path.starts_with(p.as_str()))
        .max_by_key(|p| p.len())
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_baseline_and_the_router_agree() {
        let config = config_with_routes(100);
        let router = proxy::router::Router::new(&config);
        let prefixes: Vec<String> = config.servers[0]
            .routes
            .iter()
            .map(|r| r.path.clone())
            .collect();
        for path in ["/", "/svc42/x/x/x/", "/svc42/", "/svc99/x/x/y", "/none"] {
            let by_router = router
                .route(Some("app.localhost"), path)
                .route
                .map(|i| config.servers[0].routes[i].path.as_str());
            assert_eq!(by_router, linear_longest_prefix(&prefixes, path), "{path}");
        }
    }
}
