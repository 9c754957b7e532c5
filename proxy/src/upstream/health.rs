//! Is a server fit to receive requests? Two independent opinions:
//!
//! - **Passive** health (nginx `max_fails` / `fail_timeout`): the proxy counts
//!   the failures of real requests. `max_fails` failures within `fail_timeout`
//!   take the server out of rotation for `fail_timeout`. After that it gets
//!   real requests again: the first one that succeeds brings it back; one
//!   that fails takes it out again at once.
//! - **Active** health (HAProxy's `check` with `fall` / `rise`): a background
//!   task asks every server for a health path at an interval, whether or not
//!   traffic flows. `fall` failed checks in a row mark it down, `rise` good
//!   checks in a row mark it up again (see [`super::checks`]).
//!
//! A server receives requests only when neither opinion says it is down.
//! All times come from tokio's clock, so tests can pause and advance it.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// One server's health state.
#[derive(Debug, Default)]
pub struct ServerHealth {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Failures counted in the current window.
    fails: u32,
    /// When the current counting window began.
    window_start: Option<Instant>,
    /// Out of rotation until then (passive).
    down_until: Option<Instant>,
    /// The active checks' verdict: down after `fall` failed checks.
    checks_down: bool,
    /// Consecutive check results that disagree with the current verdict.
    streak: u32,
}

/// What a passive-health report changed, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing worth a log line.
    None,
    /// The server was taken out of rotation until the given time.
    Down(Duration),
    /// The server is back in rotation.
    Up,
}

impl ServerHealth {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a few integers; a panic elsewhere cannot leave it torn.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the server may receive requests at `now`. With `passive`
    /// false, only the active checks' verdict counts (nginx never takes the
    /// only server of a pool out for `max_fails`: there is nowhere else to go).
    pub fn is_available(&self, now: Instant, passive: bool) -> bool {
        let state = self.state();
        !state.checks_down && (!passive || state.down_until.is_none_or(|until| now >= until))
    }

    /// Whether the active checks currently say the server is down.
    pub fn is_checked_down(&self) -> bool {
        self.state().checks_down
    }

    /// Counts a failed request. `max_fails` = 0 turns passive health off.
    pub fn failed(&self, now: Instant, max_fails: u32, fail_timeout: Duration) -> Change {
        if max_fails == 0 {
            return Change::None;
        }
        let mut state = self.state();
        // Back from a down period, it failed its first request: out again.
        let probing = state.fails >= max_fails;
        if !probing
            && state
                .window_start
                .is_none_or(|start| now >= start + fail_timeout)
        {
            state.fails = 0;
            state.window_start = Some(now);
        }
        state.fails = state.fails.saturating_add(1);
        if state.fails >= max_fails {
            state.down_until = Some(now + fail_timeout);
            Change::Down(fail_timeout)
        } else {
            Change::None
        }
    }

    /// Counts a successful request: a server that was out is back.
    pub fn succeeded(&self, max_fails: u32) -> Change {
        let mut state = self.state();
        if max_fails > 0 && state.fails >= max_fails {
            state.fails = 0;
            state.window_start = None;
            state.down_until = None;
            Change::Up
        } else {
            Change::None
        }
    }

    /// Records one active check; returns `Some(up)` when the verdict changed.
    pub fn checked(&self, ok: bool, fall: u32, rise: u32) -> Option<bool> {
        let mut state = self.state();
        // A result that agrees with the verdict resets the streak.
        if ok != state.checks_down {
            state.streak = 0;
            return None;
        }
        state.streak += 1;
        let needed = if state.checks_down { rise } else { fall };
        if state.streak < needed {
            return None;
        }
        state.streak = 0;
        state.checks_down = !state.checks_down;
        Some(!state.checks_down)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_S: Duration = Duration::from_secs(10);

    fn secs(start: Instant, s: u64) -> Instant {
        start + Duration::from_secs(s)
    }

    #[test]
    fn max_fails_failures_within_fail_timeout_take_a_server_out_for_fail_timeout() {
        let health = ServerHealth::default();
        let t0 = Instant::now();
        assert_eq!(health.failed(t0, 3, TEN_S), Change::None);
        assert_eq!(health.failed(secs(t0, 4), 3, TEN_S), Change::None);
        assert!(health.is_available(secs(t0, 5), true));
        assert_eq!(health.failed(secs(t0, 9), 3, TEN_S), Change::Down(TEN_S));
        assert!(!health.is_available(secs(t0, 9), true));
        assert!(!health.is_available(secs(t0, 18), true));
        assert!(
            health.is_available(secs(t0, 19), true),
            "back after fail_timeout"
        );
    }

    #[test]
    fn failures_further_apart_than_fail_timeout_do_not_add_up() {
        let health = ServerHealth::default();
        let t0 = Instant::now();
        for s in [0, 10, 20, 30] {
            assert_eq!(
                health.failed(secs(t0, s), 2, TEN_S),
                Change::None,
                "at {s}s"
            );
        }
        assert!(health.is_available(secs(t0, 30), true));
    }

    #[test]
    fn after_its_down_period_one_failure_takes_a_server_out_again_and_one_success_brings_it_back() {
        let health = ServerHealth::default();
        let t0 = Instant::now();
        assert_eq!(health.failed(t0, 2, TEN_S), Change::None);
        assert_eq!(health.failed(t0, 2, TEN_S), Change::Down(TEN_S));
        assert_eq!(health.failed(secs(t0, 10), 2, TEN_S), Change::Down(TEN_S));
        assert!(!health.is_available(secs(t0, 15), true));
        assert!(health.is_available(secs(t0, 20), true));
        assert_eq!(health.succeeded(2), Change::Up);
        assert_eq!(
            health.failed(secs(t0, 21), 2, TEN_S),
            Change::None,
            "a fresh count"
        );
    }

    #[test]
    fn max_fails_zero_never_takes_a_server_out() {
        let health = ServerHealth::default();
        let t0 = Instant::now();
        for _ in 0..100 {
            assert_eq!(health.failed(t0, 0, TEN_S), Change::None);
        }
        assert!(health.is_available(t0, true));
    }

    #[test]
    fn checks_need_fall_failures_in_a_row_to_go_down_and_rise_successes_to_come_back() {
        let health = ServerHealth::default();
        let now = Instant::now();
        assert_eq!(health.checked(false, 3, 2), None);
        assert_eq!(health.checked(false, 3, 2), None);
        assert_eq!(
            health.checked(true, 3, 2),
            None,
            "a good check resets the count"
        );
        assert_eq!(health.checked(false, 3, 2), None);
        assert_eq!(health.checked(false, 3, 2), None);
        assert_eq!(health.checked(false, 3, 2), Some(false));
        assert!(!health.is_available(now, true));
        assert_eq!(health.checked(true, 3, 2), None);
        assert_eq!(health.checked(true, 3, 2), Some(true));
        assert!(health.is_available(now, true));
    }
}
