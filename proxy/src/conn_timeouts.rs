//! The two clocks of a client connection, with nginx's meanings:
//!
//! - `client_header_timeout`: once a connection is open, or once the first
//!   byte of a new request has arrived on it, the whole request head must
//!   arrive within this, or the connection is closed (a slowloris client,
//!   sending one header byte at a time, is cut off);
//! - `keepalive_timeout`: between two requests, a keep-alive connection may
//!   sit idle this long before the proxy closes it.
//!
//! While a request is being served, neither runs: the upstream timeouts and
//! the client's own pace decide how long that takes.
//!
//! hyper has only the first clock, and starts it as soon as it waits for the
//! next request head, so on its own an idle connection would be closed after
//! `client_header_timeout`. The proxy therefore keeps the clocks itself:
//! [`ConnActivity`] records which phase a connection is in, [`WatchedIo`]
//! notices the first bytes of a new request, and [`watch`] closes the
//! connection when the phase's deadline passes.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Version;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a client connection may spend in each waiting phase.
#[derive(Debug, Clone, Copy)]
pub struct ConnTimeouts {
    /// From the first byte of a request (or the connection's opening) to the
    /// end of its head.
    pub header: Duration,
    /// Idle between two requests.
    pub keepalive: Duration,
}

/// What a connection is doing, shared by its reader, its requests and its
/// watchdog.
#[derive(Debug, Clone)]
pub struct ConnActivity(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Debug, Clone, Copy)]
struct State {
    phase: Phase,
    /// When the phase began.
    since: Instant,
    /// Requests being served (more than one on HTTP/2).
    in_flight: u32,
    /// HTTP/2 sends frames of its own between requests (window updates,
    /// pings), so bytes read do not mean a request has begun.
    multiplexed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request head to be complete.
    ReadingHead,
    /// At least one request is being served.
    Busy,
    /// Between requests.
    Idle,
}

/// Why [`watch`] closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutOff {
    /// The request head did not arrive within `client_header_timeout`.
    HeaderTimeout,
    /// No new request came within `keepalive_timeout`.
    IdleTimeout,
}

impl ConnActivity {
    /// A connection just opened: its first request head is awaited.
    pub fn new() -> ConnActivity {
        ConnActivity(Arc::new(Shared {
            state: Mutex::new(State {
                phase: Phase::ReadingHead,
                since: Instant::now(),
                in_flight: 0,
                multiplexed: false,
            }),
            changed: Notify::new(),
        }))
    }

    /// Bytes arrived from the client: on an idle HTTP/1 connection, a new
    /// request has begun, and its head is on the header clock.
    fn bytes_read(&self) {
        self.update(|state| {
            if state.phase == Phase::Idle && !state.multiplexed {
                state.phase = Phase::ReadingHead;
                state.since = Instant::now();
                true
            } else {
                false
            }
        });
    }

    /// A request head has arrived; the connection is busy until the returned
    /// guard (held by the response body) is dropped.
    pub fn request_started(&self, version: Version) -> InFlight {
        self.update(|state| {
            state.in_flight += 1;
            state.multiplexed |= version == Version::HTTP_2;
            state.phase = Phase::Busy;
            false
        });
        InFlight(self.clone())
    }

    /// Changes the state; wakes the watchdog when `change` says the deadline moved.
    fn update(&self, change: impl FnOnce(&mut State) -> bool) {
        let moved = match self.0.state.lock() {
            Ok(mut state) => change(&mut state),
            Err(_) => false,
        };
        if moved {
            self.0.changed.notify_one();
        }
    }

    /// When the current phase runs out, and what running out means.
    fn deadline(&self, timeouts: ConnTimeouts) -> Option<(Instant, CutOff)> {
        let state = *self.0.state.lock().ok()?;
        match state.phase {
            Phase::Busy => None,
            Phase::ReadingHead => Some((state.since + timeouts.header, CutOff::HeaderTimeout)),
            Phase::Idle => Some((state.since + timeouts.keepalive, CutOff::IdleTimeout)),
        }
    }
}

impl Default for ConnActivity {
    fn default() -> Self {
        ConnActivity::new()
    }
}

/// A request being served; dropping it (when its response has been sent, or
/// abandoned) may leave the connection idle.
#[derive(Debug)]
pub struct InFlight(ConnActivity);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.update(|state| {
            state.in_flight = state.in_flight.saturating_sub(1);
            if state.in_flight == 0 {
                state.phase = Phase::Idle;
                state.since = Instant::now();
                true
            } else {
                false
            }
        });
    }
}

/// Runs a connection until it ends, or until its current phase's deadline
/// passes; then the connection is dropped, which closes it, as nginx closes
/// a connection whose timer fires. A busy connection is never cut off here.
pub async fn watch<F: Future>(
    activity: ConnActivity,
    timeouts: ConnTimeouts,
    connection: F,
) -> Result<F::Output, CutOff> {
    tokio::pin!(connection);
    loop {
        let deadline = activity.deadline(timeouts);
        tokio::select! {
            output = connection.as_mut() => return Ok(output),
            () = activity.0.changed.notified() => {}
            () = sleep_until(deadline.map(|(at, _)| at)) => {
                // The phase may have changed just as the timer fired: check again.
                if let Some((at, why)) = activity.deadline(timeouts)
                    && at <= Instant::now()
                {
                    return Err(why);
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A client stream that tells its [`ConnActivity`] when bytes arrive.
#[derive(Debug)]
pub struct WatchedIo<T> {
    inner: T,
    activity: ConnActivity,
}

impl<T> WatchedIo<T> {
    /// Wraps `inner`, reporting reads to `activity`.
    pub fn new(inner: T, activity: ConnActivity) -> WatchedIo<T> {
        WatchedIo { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WatchedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_read();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WatchedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: ConnTimeouts = ConnTimeouts {
        header: Duration::from_secs(5),
        keepalive: Duration::from_secs(75),
    };

    /// How long `watch` lets a connection that never ends live.
    async fn lifetime(activity: &ConnActivity) -> (Duration, CutOff) {
        let start = Instant::now();
        let why = watch(activity.clone(), TIMEOUTS, std::future::pending::<()>())
            .await
            .expect_err("a pending connection only ends by a timeout");
        (start.elapsed(), why)
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_must_send_its_head_within_the_header_timeout() {
        let activity = ConnActivity::new();
        assert_eq!(
            lifetime(&activity).await,
            (Duration::from_secs(5), CutOff::HeaderTimeout)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed_after_the_keepalive_timeout() {
        let activity = ConnActivity::new();
        drop(activity.request_started(Version::HTTP_11));
        assert_eq!(
            lifetime(&activity).await,
            (Duration::from_secs(75), CutOff::IdleTimeout)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_on_an_idle_connection_start_the_header_clock() {
        let activity = ConnActivity::new();
        drop(activity.request_started(Version::HTTP_11));
        let watched = activity.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            watched.bytes_read();
        });
        assert_eq!(
            lifetime(&activity).await,
            (Duration::from_secs(35), CutOff::HeaderTimeout)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_is_never_cut_off_and_idles_when_its_last_request_ends() {
        let activity = ConnActivity::new();
        let first = activity.request_started(Version::HTTP_2);
        let second = activity.request_started(Version::HTTP_2);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(500)).await;
            drop(first);
            tokio::time::sleep(Duration::from_secs(500)).await;
            drop(second);
        });
        // HTTP/2 frames between requests do not start the header clock.
        let (lived, why) = lifetime(&activity).await;
        assert_eq!(
            (lived, why),
            (Duration::from_secs(1075), CutOff::IdleTimeout)
        );
        activity.bytes_read();
        assert_eq!(
            activity.deadline(TIMEOUTS).map(|(_, why)| why),
            Some(CutOff::IdleTimeout)
        );
    }
}
