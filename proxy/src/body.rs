//! The one body type the proxy passes around.
//!
//! Bodies are *streamed*: an upstream's response body is handed to the client
//! frame by frame as it arrives, and the same for uploads, so a 1 GiB download
//! costs a few buffers of memory, not 1 GiB. A boxed body lets a streamed body
//! and a small body the proxy makes itself (an error page) share one type.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};

/// Any error a body can end with: the network (`hyper::Error`), or the proxy
/// cutting an upload off at `max_body_size` (`LengthLimitError`).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A request or response body flowing through the proxy.
pub type ProxyBody = BoxBody<Bytes, BodyError>;

/// A body hyper received, as a [`ProxyBody`].
pub fn streamed(incoming: hyper::body::Incoming) -> ProxyBody {
    incoming.map_err(BodyError::from).boxed()
}

/// A body the proxy makes itself, sent in one piece.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A body that holds `guard` until the body is finished or dropped: how a
/// connection-limit slot stays taken while a response streams.
pub fn holding<G: Send + Sync + Unpin + 'static>(body: ProxyBody, guard: G) -> ProxyBody {
    Holding {
        body,
        _guard: guard,
    }
    .boxed()
}

struct Holding<G> {
    body: ProxyBody,
    _guard: G,
}

impl<G: Unpin> http_body::Body for Holding<G> {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BodyError>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A body that fails if no frame arrives for `idle`: nginx's
/// `proxy_read_timeout`, which limits the time *between two reads*, not the
/// whole transfer. A slow download that keeps moving is fine; an upstream that
/// goes silent mid-body is cut off, and the client's connection is aborted
/// rather than handed a body that looks complete.
pub fn with_read_timeout(body: ProxyBody, idle: std::time::Duration) -> ProxyBody {
    ReadTimeout {
        body,
        idle,
        deadline: None,
        timed_out: |idle| Box::new(ReadTimedOut(idle)),
    }
    .boxed()
}

/// The upstream sent nothing for longer than `read_timeout` mid-body.
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent nothing for {0:?} in the middle of the body (read_timeout)")]
pub struct ReadTimedOut(pub std::time::Duration);

/// A request body from the client, as the proxy sends it on: nginx's
/// `client_body_timeout` (no byte for `idle` between two reads fails it), and
/// every failure marked as the client's ([`ClientBodyError`]), so that a
/// client that vanishes mid-upload, stalls, or sends a broken chunked body is
/// answered 400/408 and never counted against the upstream (see
/// [`crate::error::classify_send_error`]).
pub fn from_client(incoming: hyper::body::Incoming, idle: std::time::Duration) -> ProxyBody {
    ReadTimeout {
        body: incoming
            .map_err(|err| Box::new(ClientBodyError::Broken(err)) as BodyError)
            .boxed(),
        idle,
        deadline: None,
        timed_out: |idle| Box::new(ClientBodyError::TimedOut(idle)),
    }
    .boxed()
}

/// The client's request body failed: the client's fault, not the upstream's.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    /// No byte of the body arrived for `client_body_timeout`: 408.
    #[error(
        "the client sent nothing for {0:?} in the middle of the request body (client_body_timeout)"
    )]
    TimedOut(std::time::Duration),
    /// The connection closed mid-body, or the body's framing was invalid
    /// (a bad chunk size): 400.
    #[error("the client's request body broke off: {0}")]
    Broken(hyper::Error),
}

struct ReadTimeout {
    body: ProxyBody,
    idle: std::time::Duration,
    /// Started at the first poll: before that, nobody is reading.
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    timed_out: fn(std::time::Duration) -> BodyError,
}

impl http_body::Body for ReadTimeout {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BodyError>>> {
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + self.idle;
                if let Some(deadline) = self.deadline.as_mut() {
                    deadline.as_mut().reset(next);
                }
                Poll::Ready(frame)
            }
            Poll::Pending => {
                let idle = self.idle;
                let deadline = self
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err((self.timed_out)(idle)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// When a request body last moved on its way to the upstream: each frame
/// taken from it, and its end, count. The wait for the upstream's answer is
/// counted from there (see [`crate::upstream::UpstreamPool::send`]), so a
/// long upload that keeps moving is never cut off by `read_timeout`, while
/// an upstream that stops reading it (the upload stands still) still is.
#[derive(Debug, Clone)]
pub struct Progress {
    since: tokio::time::Instant,
    /// Microseconds after `since` of the last move.
    last: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            since: tokio::time::Instant::now(),
            last: std::sync::Arc::default(),
        }
    }
}

impl Progress {
    /// `body`, noting here each time a frame is taken from it or it ends.
    pub fn watch(&self, body: ProxyBody) -> ProxyBody {
        Watched {
            body,
            progress: self.clone(),
        }
        .boxed()
    }

    /// When the body last moved (when the progress began, if never).
    pub fn last(&self) -> tokio::time::Instant {
        let micros = self.last.load(std::sync::atomic::Ordering::Relaxed);
        self.since + std::time::Duration::from_micros(micros)
    }

    fn moved(&self) {
        let micros = self.since.elapsed().as_micros();
        self.last.store(
            u64::try_from(micros).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

struct Watched {
    body: ProxyBody,
    progress: Progress,
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BodyError>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if polled.is_ready() {
            self.progress.moved();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn progress_moves_with_each_frame_taken_and_with_the_end() {
        let progress = Progress::default();
        let started = progress.last();
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            let bytes = rx.recv().await?;
            Some((Ok::<_, BodyError>(http_body::Frame::data(bytes)), rx))
        });
        let mut body = progress.watch(http_body_util::StreamBody::new(stream).boxed());
        tokio::time::sleep(Duration::from_secs(5)).await;
        // Nothing taken yet: the last move is the start.
        assert_eq!(progress.last(), started);
        tx.send(Bytes::from_static(b"a")).await.expect("send");
        body.frame().await.expect("a frame").expect("data");
        assert_eq!(progress.last(), started + Duration::from_secs(5));
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(tx);
        assert!(body.frame().await.is_none());
        assert_eq!(progress.last(), started + Duration::from_secs(8));
    }
}
