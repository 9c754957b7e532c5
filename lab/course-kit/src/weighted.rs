//! Chapter 04's code exercise: smooth weighted round-robin, the way nginx
//! takes turns among the servers of an `upstream` block.
//!
//! Servers have weights: with weights 2, 1, 1 the first server gets half of
//! the requests and the others a quarter each. The naive order, `0 0 1 2`,
//! sends the heavy server its requests back to back; nginx's *smooth* order,
//! `0 1 2 0`, spreads them out. The learner writes a [`Picker`]; [`check`]
//! asks it for turns and compares them with the order nginx gives.

use crate::{Checks, Report, expect_eq, expect_same, list};

/// Takes turns among a fixed list of servers, each in proportion to its
/// weight. Servers are known by their index in the list of weights.
pub trait Picker: Sized {
    /// A picker for servers with these weights (`weights[i]` is server
    /// `i`'s). A server of weight 0 is never picked.
    fn new(weights: &[u32]) -> Self;

    /// The next server's index, among the servers that are up (`up[i]` for
    /// server `i`; `up` is as long as the list of weights). `None` when no
    /// server can be picked. On a tie, the lower index wins, as in nginx.
    fn pick(&mut self, up: &[bool]) -> Option<usize>;
}

/// The first `n` picks of a new picker with `weights`, every server up.
fn picks<P: Picker>(weights: &[u32], n: usize) -> Vec<Option<usize>> {
    let mut picker = P::new(weights);
    let up = vec![true; weights.len()];
    (0..n).map(|_| picker.pick(&up)).collect()
}

/// Picks as the report writes them: `0, 1, 2` (`-` for none).
fn show(picks: &[Option<usize>]) -> String {
    let words: Vec<String> = picks
        .iter()
        .map(|p| p.map_or_else(|| "-".to_owned(), |i| i.to_string()))
        .collect();
    list(&words)
}

/// How many times each server was picked.
fn counts(picks: &[Option<usize>], servers: usize) -> Vec<usize> {
    let mut counts = vec![0; servers];
    for &i in picks.iter().flatten() {
        if let Some(c) = counts.get_mut(i) {
            *c += 1;
        }
    }
    counts
}

/// `Ok` when the first picks are `expected`.
fn order<P: Picker>(weights: &[u32], expected: &[usize]) -> Result<(), String> {
    let got = picks::<P>(weights, expected.len());
    let expected: Vec<Option<usize>> = expected.iter().copied().map(Some).collect();
    if got == expected {
        Ok(())
    } else {
        Err(format!("expected {}, got {}", show(&expected), show(&got)))
    }
}

/// `Ok` when `n` picks share out as `expected`.
fn shares<P: Picker>(weights: &[u32], n: usize, expected: &[usize]) -> Result<(), String> {
    let got = picks::<P>(weights, n);
    if got.iter().any(Option::is_none) {
        return Err(format!(
            "expected a server at every pick, got none at pick {}",
            got.iter().position(Option::is_none).map_or(0, |i| i + 1)
        ));
    }
    expect_eq(expected.to_vec(), counts(&got, weights.len()))
        .map_err(|e| format!("picks per server: {e}"))
}

/// Checks a [`Picker`] against nginx's smooth weighted round-robin.
pub fn check<P: Picker + 'static>() -> Report {
    let mut checks = Checks::new("weighted.rs: smooth weighted round-robin (chapter 04)");
    checks.property(
        "equal weights [1, 1, 1]: plain round-robin, 0, 1, 2, 0, 1, 2",
        || order::<P>(&[1, 1, 1], &[0, 1, 2, 0, 1, 2]),
    );
    checks.property(
        "weights [2, 1, 1]: smooth, 0, 1, 2, 0 each round (not 0, 0, 1, 2)",
        || order::<P>(&[2, 1, 1], &[0, 1, 2, 0, 0, 1, 2, 0]),
    );
    checks.property(
        "weights [5, 1, 1]: the heavy server's turns spread out, 0, 0, 1, 0, 2, 0, 0",
        || order::<P>(&[5, 1, 1], &[0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]),
    );
    checks.property(
        "weights [3, 2, 1]: 600 picks give exactly 300, 200, 100",
        || shares::<P>(&[3, 2, 1], 600, &[300, 200, 100]),
    );
    checks.property(
        "weights [1, 0, 2]: a server of weight 0 is never picked (300 picks: 100, 0, 200)",
        || shares::<P>(&[1, 0, 2], 300, &[100, 0, 200]),
    );
    checks.property("weights [0, 0]: no server can be picked, so None", || {
        let got = picks::<P>(&[0, 0], 3);
        expect_same(show(&[None, None, None]), show(&got))
    });
    checks.property("one server, weight 4: it gets every pick", || {
        shares::<P>(&[4], 10, &[10])
    });
    checks.property(
        "a server that is down is skipped (up = [true, false, true]: 0, 2, 0, 2), and no server up means None",
        || {
            let mut picker = P::new(&[1, 1, 1]);
            let got: Vec<Option<usize>> = (0..4)
                .map(|_| picker.pick(&[true, false, true]))
                .collect();
            let expected = [Some(0), Some(2), Some(0), Some(2)];
            if got != expected {
                return Err(format!(
                    "expected {}, got {}",
                    show(&expected),
                    show(&got)
                ));
            }
            expect_eq(None, picker.pick(&[false, false, false]))
                .map_err(|e| format!("with every server down: {e}"))
        },
    );
    checks.property(
        "a server back up gets its share again: weights [1, 1, 1], server 1 down for 100 picks, then 300 picks give 100 each (give or take 1)",
        || {
            let mut picker = P::new(&[1, 1, 1]);
            for _ in 0..100 {
                if picker.pick(&[true, false, true]) == Some(1) {
                    return Err("expected never server 1 while it is down, got it".to_owned());
                }
            }
            let got: Vec<Option<usize>> = (0..300).map(|_| picker.pick(&[true; 3])).collect();
            let counts = counts(&got, 3);
            if counts.iter().all(|&c| (99..=101).contains(&c)) {
                Ok(())
            } else {
                Err(format!("expected about 100, 100, 100, got {}", list(&counts)))
            }
        },
    );
    checks.finish()
}
