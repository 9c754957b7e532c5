//! Chapter 02's code exercise: which route a request takes, and the path
//! its upstream receives.
//!
//! Routes have path prefixes; the **longest** prefix that matches wins,
//! whatever the order the routes were written in. A prefix matches whole
//! path segments: `/api` matches `/api` and `/api/tasks`, never `/apix`
//! (the trap of nginx's `location /api`, which the proxy's `proxy check`
//! warns about). A route may **strip** its prefix, so an API written to
//! answer `/tasks` can live under `/api/` (nginx's `proxy_pass
//! http://api/;`, with its trailing slash). The query string is not part
//! of the path: it is never matched, and it goes on unchanged.

use crate::{Checks, Report, expect_same};

/// One route of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The path prefix, starting with `/`: `/`, `/api`, `/api/`.
    pub prefix: &'static str,
    /// Whether the prefix is removed before the request goes on.
    pub strip_prefix: bool,
}

/// A route table.
pub trait PrefixRouter: Sized {
    /// A router over these routes (known afterwards by their index).
    fn new(routes: &[Route]) -> Self;

    /// For a request target (a path, maybe followed by `?` and a query),
    /// the index of the route it takes and the target its upstream
    /// receives; `None` when no route matches.
    fn route(&self, target: &str) -> Option<(usize, String)>;
}

/// Route `/`, `/api/` (stripped) and `/api/admin/` (kept), in a shuffled order.
const TABLE: &[Route] = &[
    Route {
        prefix: "/api/",
        strip_prefix: true,
    },
    Route {
        prefix: "/api/admin/",
        strip_prefix: false,
    },
    Route {
        prefix: "/",
        strip_prefix: false,
    },
];

/// `Ok` when each target in `cases` goes where it says.
fn routes<R: PrefixRouter>(
    table: &[Route],
    cases: &[(&str, Option<(usize, &str)>)],
) -> Result<(), String> {
    let router = R::new(table);
    for (target, expected) in cases {
        let expected = expected.map(|(i, t)| (i, t.to_owned()));
        let got = router.route(target);
        let show = |r: &Option<(usize, String)>| match r {
            Some((i, t)) => format!("route {i} (`{}`) with `{t}`", table[*i].prefix),
            None => "no route".to_owned(),
        };
        if got.as_ref().is_some_and(|(i, _)| *i >= table.len()) {
            return Err(format!(
                "`{target}`: expected {}, got route {}, but there are only {} routes",
                show(&expected),
                got.map_or(0, |(i, _)| i),
                table.len()
            ));
        }
        expect_same(show(&expected), show(&got)).map_err(|e| format!("`{target}`: {e}"))?;
    }
    Ok(())
}

/// Checks a [`PrefixRouter`].
pub fn check<R: PrefixRouter + 'static>() -> Report {
    let mut checks =
        Checks::new("prefix.rs: longest-prefix routing and prefix stripping (chapter 02)");
    checks.property(
        "the longest matching prefix wins, whatever the order of the routes",
        || {
            routes::<R>(
                TABLE,
                &[
                    ("/", Some((2, "/"))),
                    ("/about.html", Some((2, "/about.html"))),
                    ("/api/admin/users", Some((1, "/api/admin/users"))),
                ],
            )
        },
    );
    checks.property(
        "a stripped prefix leaves the rest of the path: `/api/tasks` goes on as `/tasks`, `/api/` as `/`",
        || {
            routes::<R>(
                TABLE,
                &[
                    ("/api/tasks", Some((0, "/tasks"))),
                    ("/api/tasks/7", Some((0, "/tasks/7"))),
                    ("/api/", Some((0, "/"))),
                ],
            )
        },
    );
    checks.property(
        "a prefix matches whole segments: `/api` matches `/api` and `/api/tasks`, not `/apix`",
        || {
            let table = [
                Route {
                    prefix: "/",
                    strip_prefix: false,
                },
                Route {
                    prefix: "/api",
                    strip_prefix: true,
                },
            ];
            routes::<R>(
                &table,
                &[
                    ("/apix", Some((0, "/apix"))),
                    ("/apiary/bees", Some((0, "/apiary/bees"))),
                    ("/api", Some((1, "/"))),
                    ("/api/tasks", Some((1, "/tasks"))),
                ],
            )
        },
    );
    checks.property(
        "the query is kept and never matched: `/api/tasks?done=true` goes on as `/tasks?done=true`",
        || {
            routes::<R>(
                TABLE,
                &[
                    ("/api/tasks?done=true", Some((0, "/tasks?done=true"))),
                    ("/api/?page=2", Some((0, "/?page=2"))),
                    ("/search?q=/api/admin/", Some((2, "/search?q=/api/admin/"))),
                ],
            )?;
            let table = [Route {
                prefix: "/api",
                strip_prefix: true,
            }];
            routes::<R>(&table, &[("/api?page=2", Some((0, "/?page=2")))])
        },
    );
    checks.property(
        "without a route for `/`, a path no prefix matches has no route",
        || {
            let table = [Route {
                prefix: "/api/",
                strip_prefix: true,
            }];
            routes::<R>(
                &table,
                &[("/", None), ("/apix", None), ("/api/x", Some((0, "/x")))],
            )
        },
    );
    checks.finish()
}
