//! The byte pipe of a stream: one copy per direction, each passing the end
//! of its stream (a TCP FIN) on, so a half-closed connection keeps working.
//!
//! **Half-close.** TCP lets one side say "I have nothing more to send" (it
//! shuts down its write half, sending a FIN) and still read what the other
//! side sends. Many protocols rely on it: a client sends its whole request
//! and closes its side to say so, then reads the answer. A pipe that closed
//! both connections at the first FIN would cut that answer off. So here each
//! direction copies until its reader reaches the end, then shuts down the
//! write half of the *other* connection (passing the FIN on), and the pipe
//! ends only when both directions have ended.
//!
//! **Idle timeout.** A connection on which no byte moves in either direction
//! for `idle` is closed (nginx's `proxy_timeout`): otherwise a client that
//! went away without a FIN (its machine lost power, a NAT forgot it) would
//! hold two sockets forever.
//!
//! **Errors.** A read or write that fails (a reset) ends the pipe at once:
//! both connections are dropped, which resets or closes them.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::End;

/// Each direction's copy buffer starts at this size (an idle connection
/// holds two of them: with 64 KiB from the start, 2,000 idle connections
/// cost 180 MiB)...
const FIRST_BUFFER: usize = 8 * 1024;
/// ...and doubles each time a read fills it, up to this size (fewer system
/// calls for a bulk transfer).
const MAX_BUFFER: usize = 64 * 1024;

/// What a pipe carried, and why it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piped {
    /// Bytes written to the upstream (sent by the client).
    pub to_upstream: u64,
    /// Bytes written to the client (sent by the upstream).
    pub to_client: u64,
    /// Who closed first, or the idle timeout.
    pub end: End,
}

/// Copies bytes both ways between `client` and `upstream` until both
/// directions have ended (each end passed on as a shutdown of the other
/// side's write half), one fails, or nothing has moved for `idle`.
pub async fn pipe<C, U>(client: C, upstream: U, idle: Duration) -> Piped
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let state = State::new();
    let (client_read, client_write) = tokio::io::split(client);
    let (upstream_read, upstream_write) = tokio::io::split(upstream);
    let up = one_way(
        client_read,
        upstream_write,
        &state,
        &state.to_upstream,
        Side::Client,
    );
    let down = one_way(
        upstream_read,
        client_write,
        &state,
        &state.to_client,
        Side::Upstream,
    );
    let end = tokio::select! {
        ended = async { tokio::try_join!(up, down) } => match ended {
            Ok(_) => state.first_end().unwrap_or(End::ClientClosed),
            // The first to close wins; a reset after a clean FIN keeps the FIN's side.
            Err(failed) => state.first_end().unwrap_or(failed),
        },
        () = state.silent_for(idle) => End::IdleTimeout,
    };
    Piped {
        to_upstream: state.to_upstream.load(Ordering::Relaxed),
        to_client: state.to_client.load(Ordering::Relaxed),
        end,
    }
}

/// Which connection a direction reads from.
#[derive(Debug, Clone, Copy)]
enum Side {
    Client,
    Upstream,
}

impl Side {
    fn closed(self) -> End {
        match self {
            Side::Client => End::ClientClosed,
            Side::Upstream => End::UpstreamClosed,
        }
    }

    fn other(self) -> Side {
        match self {
            Side::Client => Side::Upstream,
            Side::Upstream => Side::Client,
        }
    }
}

/// One direction: reads from `from` until its end, writing everything to
/// `to`, then shuts `to`'s write half down (the FIN passed on). `Err` names
/// the side whose connection broke.
async fn one_way<R, W>(
    mut from: R,
    mut to: W,
    state: &State,
    bytes: &AtomicU64,
    side: Side,
) -> Result<(), End>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; FIRST_BUFFER];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(_) => return Err(side.closed()),
        };
        // A full buffer: more is probably waiting, read it in bigger bites next time.
        let grow = n == buf.len() && buf.len() < MAX_BUFFER;
        state.touch();
        let Some(chunk) = buf.get(..n) else {
            return Err(side.closed());
        };
        if to.write_all(chunk).await.is_err() {
            return Err(side.other().closed());
        }
        bytes.fetch_add(n as u64, Ordering::Relaxed);
        state.touch();
        if grow {
            buf.resize(buf.len() * 2, 0);
        }
    }
    state.note_end(side.closed());
    // Half-close: the other side learns there is no more, and may still answer.
    let _ = to.shutdown().await;
    Ok(())
}

/// When a byte last moved through a connection, for an idle timeout: both
/// directions (and the WebSocket tunnel, `crate::upgrade`) touch it, and
/// [`LastMoved::silent_for`] waits for the silence. The clock is tokio's, so
/// tests can pause it.
#[derive(Debug)]
pub struct LastMoved {
    start: Instant,
    /// Nanoseconds from `start` to the last byte moved.
    last: AtomicU64,
}

impl LastMoved {
    /// A clock that starts now, as if a byte had just moved.
    pub fn new() -> LastMoved {
        LastMoved {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    /// A byte moved now.
    pub fn touch(&self) {
        let nanos = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.fetch_max(nanos, Ordering::Relaxed);
    }

    /// Completes once no byte has moved for `idle`: sleeps until the last
    /// movement plus `idle`, and sleeps again if bytes moved meanwhile.
    pub async fn silent_for(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_nanos(self.last.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

impl Default for LastMoved {
    fn default() -> LastMoved {
        LastMoved::new()
    }
}

/// What both directions share: the bytes each way, when a byte last moved,
/// and which side closed first.
struct State {
    moved: LastMoved,
    to_upstream: AtomicU64,
    to_client: AtomicU64,
    /// 0: nobody closed yet; 1: the client; 2: the upstream.
    first: AtomicU8,
}

impl State {
    fn new() -> State {
        State {
            moved: LastMoved::new(),
            to_upstream: AtomicU64::new(0),
            to_client: AtomicU64::new(0),
            first: AtomicU8::new(0),
        }
    }

    fn touch(&self) {
        self.moved.touch();
    }

    fn note_end(&self, end: End) {
        let code = match end {
            End::ClientClosed => 1,
            _ => 2,
        };
        let _ = self
            .first
            .compare_exchange(0, code, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn first_end(&self) -> Option<End> {
        match self.first.load(Ordering::Relaxed) {
            1 => Some(End::ClientClosed),
            2 => Some(End::UpstreamClosed),
            _ => None,
        }
    }

    /// Completes once no byte has moved for `idle`.
    async fn silent_for(&self, idle: Duration) {
        self.moved.silent_for(idle).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    #[tokio::test(start_paused = true)]
    async fn a_half_close_is_passed_on_and_the_answer_still_comes_back() {
        let (mut client, client_side) = duplex(64);
        let (upstream_side, mut upstream) = duplex(64);
        let pipe = tokio::spawn(pipe(client_side, upstream_side, Duration::from_secs(60)));
        client.write_all(b"question").await.expect("write");
        client.shutdown().await.expect("half-close");
        let mut asked = Vec::new();
        upstream
            .read_to_end(&mut asked)
            .await
            .expect("the FIN arrives");
        assert_eq!(asked, b"question");
        upstream.write_all(b"answer").await.expect("write");
        upstream.shutdown().await.expect("close");
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.expect("read");
        assert_eq!(answer, b"answer");
        let piped = pipe.await.expect("the pipe ends");
        assert_eq!(
            piped,
            Piped {
                to_upstream: 8,
                to_client: 6,
                end: End::ClientClosed
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn silence_both_ways_ends_the_pipe_and_bytes_restart_the_clock() {
        let (mut client, client_side) = duplex(64);
        let (upstream_side, mut upstream) = duplex(64);
        let pipe = tokio::spawn(pipe(client_side, upstream_side, Duration::from_secs(10)));
        tokio::time::sleep(Duration::from_secs(8)).await;
        client.write_all(b"x").await.expect("write");
        let mut one = [0u8; 1];
        upstream.read_exact(&mut one).await.expect("read");
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert!(!pipe.is_finished(), "a byte 8 s ago restarted the clock");
        let piped = pipe.await.expect("the pipe ends");
        assert_eq!(piped.end, End::IdleTimeout);
    }
}
