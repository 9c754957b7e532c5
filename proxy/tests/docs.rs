//! The "life of a request" page must name every step `proxy.rs` runs, and
//! every step it names must exist, so the page cannot drift from the code.

use std::path::Path;

fn read(relative: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// The request steps: the public functions of proxy.rs, in file order.
fn steps_in_code() -> Vec<String> {
    read("proxy/src/proxy.rs")
        .lines()
        .filter_map(|line| {
            let rest = line
                .strip_prefix("pub fn ")
                .or_else(|| line.strip_prefix("pub async fn "))?;
            Some(rest.split(['(', '<']).next()?.to_owned())
        })
        .collect()
}

#[test]
fn the_life_of_a_request_page_names_every_step_in_proxy_rs() {
    let page = read("docs/life-of-a-request.md");
    let steps = steps_in_code();
    assert!(steps.len() >= 7, "steps found: {steps:?}");
    for step in &steps {
        if step == "rewrite_path" {
            continue; // a helper of rewrite_request, not a step of its own
        }
        assert!(
            page.contains(&format!("`{step}`")),
            "docs/life-of-a-request.md does not mention `{step}`"
        );
    }
}

#[test]
fn every_step_the_page_names_exists_in_proxy_rs() {
    let page = read("docs/life-of-a-request.md");
    let steps = steps_in_code();
    for line in page.lines().filter(|l| l.contains(". **`")) {
        let named = line
            .split("**`")
            .nth(1)
            .and_then(|rest| rest.split('`').next())
            .unwrap_or_default();
        assert!(
            steps.iter().any(|s| s == named),
            "the page names `{named}`, which proxy.rs lacks"
        );
    }
}

#[test]
fn the_annotated_config_in_the_readme_is_valid() {
    let readme = read("README.md");
    let block = readme
        .split("A configuration, annotated")
        .nth(1)
        .and_then(|rest| rest.split("```toml\n").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("the README has an annotated config");
    // The README abbreviates the hash; put a real one in its place.
    let hash = bcrypt::hash("example", 4).expect("hash");
    let config = block.replace("$2b$12$...", &hash);
    match proxy::Config::parse(&config, "README.md") {
        Ok(parsed) => {
            let warnings = proxy::lint::lint(&parsed, &config, "README.md");
            assert!(
                warnings.is_empty(),
                "the README's config has warnings:\n{}",
                warnings.iter().map(ToString::to_string).collect::<String>()
            );
        }
        Err(errors) => panic!("the README's config is invalid:\n{errors}"),
    }
}
