//! Compressing responses on their way to the client (nginx `gzip on`).
//!
//! Text compresses well: an HTML page or a JSON list often shrinks to a fifth
//! of its size, so it reaches a phone on a slow link sooner. The proxy can do
//! this for every upstream behind it, once, instead of each service doing it.
//!
//! **Content negotiation.** The client says which encodings it can decode in
//! `Accept-Encoding`, each with a *q-value* (its weight, 0 to 1, default 1):
//!
//! ```text
//! Accept-Encoding: br;q=1, gzip;q=0.5, *;q=0
//! ```
//!
//! reads "brotli preferred, gzip if need be, nothing else". `q=0` means *never*
//! (`identity;q=0` even refuses the uncompressed form), and `*` stands for every
//! encoding not named. The proxy picks the encoding the client weighs highest
//! among those it offers; when the client weighs several the same (browsers
//! send `gzip, deflate, br, zstd`, all at q=1), the proxy's own order decides:
//! by default zstd, then br, then gzip. zstd at its default level compresses
//! about as well as brotli's middle levels at gzip's speed or better, brotli
//! beats gzip on text, and gzip is the one every client has. (Brotli's best
//! levels win on size, but cost tens of times more CPU: they are for files
//! compressed once, ahead of time, not for every response.) The answer says
//! what it did with `Content-Encoding: zstd`; no usable encoding means the
//! body goes as it is.
//!
//! **Why `Vary: Accept-Encoding` matters.** One URL now has several bodies: a
//! cache between the proxy and the client (a CDN, a company proxy, the
//! browser's own cache) that stored the gzip body for one client must not hand
//! it to a client that cannot decode gzip. `Vary` tells caches which request
//! headers the answer depended on, so they keep one copy per kind of
//! `Accept-Encoding`. It goes on every answer that *could* have been
//! compressed, compressed or not, so the uncompressed one is not given to a
//! client that asked for gzip either.
//!
//! **What is not compressed.** Images, video, audio, fonts in WOFF2 and zip
//! files are compressed already: a second pass costs CPU and saves nothing
//! (it often adds bytes). Bodies of a few hundred bytes fit in one network
//! packet anyway, and the encoding's own headers eat what would be saved, so
//! bodies known to be under `min_length` go as they are. Also left alone: answers
//! the upstream encoded itself, answers marked `Cache-Control: no-transform`,
//! answers to HEAD and answers without a body (204, 304), and parts of a file
//! (206 and `Content-Range`), whose byte ranges count in the uncompressed body.
//!
//! **The trade.** Compression spends the proxy's CPU to save bytes on the
//! network. For text over the internet that is nearly always worth it; on a
//! fast local network, or for a proxy short of CPU, it may not be: the
//! `level` setting moves along that line (`fastest`, `default`, `best`).
//!
//! **Streaming.** The body is compressed as it arrives, never read whole first:
//! each piece from the upstream goes into the encoder, and whenever the
//! upstream pauses the encoder is *flushed*, so what was sent so far can be
//! decoded by the client at once. A slowly growing answer (a log tail, a
//! progress page) is not held back waiting for more; a fast download is
//! compressed in big pieces, without flushes in between, for a better ratio.
//! If the upstream breaks off mid-body, the compressed body fails too and the
//! client's connection is aborted: a client never gets a complete-looking
//! compressed body for a truncated answer.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use async_compression::Level as CodecLevel;
use async_compression::tokio::write::{BrotliEncoder, GzipEncoder, ZstdEncoder};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::AsyncWrite;

use crate::body::{BodyError, ProxyBody};

/// A content coding the proxy can compress with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Zstandard (RFC 8878, `zstd` in HTTP since RFC 9659): fast, good ratio;
    /// in browsers since 2024.
    Zstd,
    /// Brotli (RFC 7932): made for the web, best on text; every current browser.
    Brotli,
    /// gzip (RFC 1952): DEFLATE, the one every HTTP client can decode.
    Gzip,
}

impl Algorithm {
    /// Every algorithm, in the proxy's default order of preference.
    pub const ALL: [Algorithm; 3] = [Algorithm::Zstd, Algorithm::Brotli, Algorithm::Gzip];

    /// Its name in `Accept-Encoding` and `Content-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Algorithm::Zstd => "zstd",
            Algorithm::Brotli => "br",
            Algorithm::Gzip => "gzip",
        }
    }

    /// The algorithm with this name, as written in the config.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.token().eq_ignore_ascii_case(name.trim()))
    }

    /// Whether the coding `token` from an `Accept-Encoding` names this
    /// algorithm (`x-gzip` is an old name of gzip, RFC 9110 section 8.4.1.3).
    fn is_named(self, token: &str) -> bool {
        token.eq_ignore_ascii_case(self.token())
            || (self == Algorithm::Gzip && token.eq_ignore_ascii_case("x-gzip"))
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

/// How hard the encoder works: CPU spent against bytes saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Level {
    /// Least CPU: gzip 1, brotli 1, zstd 1.
    Fastest,
    /// The usual choice for answers made on the fly: gzip 6, brotli 4, zstd 3.
    #[default]
    Default,
    /// Smallest output, much more CPU: gzip 9, brotli 11, zstd 19.
    Best,
}

impl Level {
    /// The level's name in the config.
    pub fn from_name(name: &str) -> Option<Level> {
        match name.trim().to_ascii_lowercase().as_str() {
            "fastest" => Some(Level::Fastest),
            "default" => Some(Level::Default),
            "best" => Some(Level::Best),
            _ => None,
        }
    }

    fn quality(self, algorithm: Algorithm) -> i32 {
        match (self, algorithm) {
            (Level::Fastest, _) => 1,
            (Level::Default, Algorithm::Gzip) => 6,
            (Level::Default, Algorithm::Brotli) => 4,
            (Level::Default, Algorithm::Zstd) => 3,
            (Level::Best, Algorithm::Gzip) => 9,
            (Level::Best, Algorithm::Brotli) => 11,
            (Level::Best, Algorithm::Zstd) => 19,
        }
    }
}

/// The default `min_length`: like nginx's `gzip_min_length`, bodies known to
/// be shorter are sent as they are.
pub const DEFAULT_MIN_LENGTH: u64 = 256;

/// The media types compressed by default: text and text-like formats. Not
/// `text/event-stream` (see [`Compress::compresses_type`]), not images other
/// than SVG (which is XML text), not fonts in WOFF/WOFF2 (compressed inside).
pub const DEFAULT_TYPES: &[&str] = &[
    "text/*",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/xhtml+xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/ld+json",
    "application/manifest+json",
    "application/problem+json",
    "application/geo+json",
    "application/wasm",
    "image/svg+xml",
    "image/x-icon",
    "font/ttf",
    "font/otf",
];

/// A route's (or server's) `compress` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compress {
    /// The encodings offered, most preferred first; empty for
    /// `compress = false` (which turns the server's setting off for a route).
    pub algorithms: Vec<Algorithm>,
    /// Bodies known to be shorter than this are not compressed.
    pub min_length: u64,
    /// Media types compressed (lower case): `type/subtype` or `type/*`.
    pub types: Vec<String>,
    /// How hard to compress.
    pub level: Level,
}

impl Default for Compress {
    /// `compress = true`: every algorithm, the default types and length.
    fn default() -> Compress {
        Compress {
            algorithms: Algorithm::ALL.to_vec(),
            min_length: DEFAULT_MIN_LENGTH,
            types: DEFAULT_TYPES.iter().map(|t| (*t).to_owned()).collect(),
            level: Level::Default,
        }
    }
}

impl Compress {
    /// `compress = false`: no compression here, whatever the server says.
    pub fn off() -> Compress {
        Compress {
            algorithms: Vec::new(),
            ..Compress::default()
        }
    }

    /// Whether this setting compresses anything.
    pub fn is_on(&self) -> bool {
        !self.algorithms.is_empty()
    }

    /// Whether a body of this `Content-Type` is worth compressing. Parameters
    /// (`; charset=utf-8`) do not count. `text/event-stream` (server-sent
    /// events) is compressed only when listed by its full name, not through
    /// `text/*`: an event stream stays open for minutes, and each small event
    /// must reach the browser at once, so compressing it saves little and
    /// some clients and middle boxes handle it badly.
    pub fn compresses_type(&self, content_type: &str) -> bool {
        let media = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let Some((kind, _)) = media.split_once('/') else {
            return false;
        };
        self.types.iter().any(|t| {
            if let Some(prefix) = t.strip_suffix("/*") {
                prefix == kind && media != "text/event-stream"
            } else {
                *t == media
            }
        })
    }
}

/// One entry of `Accept-Encoding`: a coding and its weight in thousandths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Weighted<'a> {
    coding: &'a str,
    q: u16,
}

/// Reads `Accept-Encoding` into its entries. Entries that cannot be read (a
/// q-value that is not a number from 0 to 1, an empty coding) are skipped, as
/// if the client had not sent them.
fn weighted_codings(accept: &str) -> impl Iterator<Item = Weighted<'_>> {
    accept.split(',').filter_map(|entry| {
        let mut parts = entry.split(';');
        let coding = parts.next()?.trim();
        if coding.is_empty() || coding.contains(char::is_whitespace) {
            return None;
        }
        let mut q = 1000;
        for param in parts {
            let (name, value) = param.split_once('=')?;
            if name.trim().eq_ignore_ascii_case("q") {
                q = parse_qvalue(value.trim())?;
            }
        }
        Some(Weighted { coding, q })
    })
}

/// A q-value (RFC 9110 section 12.4.2: `0` to `1` with at most three
/// decimals) in thousandths, or `None` if it is not one.
pub fn parse_qvalue(text: &str) -> Option<u16> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |n, b| n * 10 + u16::from(b - b'0'));
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The encoding to answer with, given the client's `Accept-Encoding` and the
/// proxy's `offered` encodings (most preferred first); `None` to send the body
/// as it is.
///
/// - an encoding the client names gets its q-value; one it does not name gets
///   the `*` entry's, or 0 (not acceptable) when there is no `*`;
/// - the highest q-value above 0 wins; a tie goes to the earlier in `offered`;
/// - `identity` (no encoding) wins only when the client weighs it, by name
///   or through `*`, strictly above the best encoding (`gzip;q=0.5,
///   identity`); unnamed, it is always acceptable but never preferred, so
///   `gzip;q=0.8` still means "gzip, please". When the client refuses
///   identity and accepts nothing the proxy has, the body goes uncompressed
///   anyway, as nginx does, rather than a 406 Not Acceptable.
pub fn negotiate(accept: &str, offered: &[Algorithm]) -> Option<Algorithm> {
    let weight = |named: &dyn Fn(&str) -> bool| -> Option<u16> {
        weighted_codings(accept)
            .find(|w| named(w.coding))
            .map(|w| w.q)
    };
    let star = weight(&|c| c == "*");
    // Unnamed, identity is acceptable but no one's preference.
    let identity = weight(&|c| c.eq_ignore_ascii_case("identity"))
        .or(star)
        .unwrap_or(0);
    let mut best: Option<(Algorithm, u16)> = None;
    for &algorithm in offered {
        let q = weight(&|c| algorithm.is_named(c)).or(star).unwrap_or(0);
        if q > 0 && best.is_none_or(|(_, best_q)| q > best_q) {
            best = Some((algorithm, q));
        }
    }
    best.filter(|(_, q)| *q >= identity).map(|(a, _)| a)
}

/// Every `Accept-Encoding` line of a request as one list (almost always there
/// is one line, and it is returned as it is).
pub fn accept_encoding(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut lines = headers.get_all(header::ACCEPT_ENCODING).iter();
    let first = lines.next()?;
    let rest: Vec<&[u8]> = lines.map(HeaderValue::as_bytes).collect();
    if rest.is_empty() {
        return Some(first.clone());
    }
    let joined = std::iter::once(first.as_bytes())
        .chain(rest)
        .collect::<Vec<_>>()
        .join(&b", "[..]);
    HeaderValue::from_bytes(&joined).ok()
}

/// What [`decide`] concluded for one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The type is not one to compress: the response is left exactly as it is.
    NotCompressible,
    /// The response may not be changed: the upstream encoded it already, or
    /// said `Cache-Control: no-transform`. Left exactly as it is.
    Untouchable(&'static str),
    /// Could have been compressed, but not this time (the reason says why):
    /// only `Vary: Accept-Encoding` is added.
    Identity(&'static str),
    /// Compress with this algorithm.
    Compress(Algorithm),
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::NotCompressible => {
                f.write_str("compression: the content type is not one to compress")
            }
            Decision::Untouchable(why) => write!(f, "compression: left alone, {why}"),
            Decision::Identity(why) => write!(
                f,
                "compression: sent uncompressed, {why}; Vary: Accept-Encoding added"
            ),
            Decision::Compress(algorithm) => write!(
                f,
                "compression: {algorithm}, the client's best choice among those offered; Content-Length dropped, Vary: Accept-Encoding added"
            ),
        }
    }
}

/// Decides what to do with one response, from the request's method and
/// `Accept-Encoding`, and the response's status, headers and known length.
pub fn decide(
    setting: &Compress,
    method: &Method,
    accept: Option<&HeaderValue>,
    status: StatusCode,
    headers: &HeaderMap,
    known_length: Option<u64>,
) -> Decision {
    let compressible = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| setting.compresses_type(t));
    if !compressible {
        return Decision::NotCompressible;
    }
    if headers.contains_key(header::CONTENT_ENCODING) {
        return Decision::Untouchable("the upstream encoded the body itself");
    }
    let no_transform = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("no-transform"));
    if no_transform {
        return Decision::Untouchable("Cache-Control: no-transform forbids changing the body");
    }
    if *method == Method::HEAD {
        return Decision::Identity("a HEAD answer has no body");
    }
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Decision::Identity("this status has no body");
    }
    if status == StatusCode::PARTIAL_CONTENT || headers.contains_key(header::CONTENT_RANGE) {
        return Decision::Identity("a byte range counts in the uncompressed body");
    }
    let length = known_length.or_else(|| {
        headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
    });
    if length.is_some_and(|n| n < setting.min_length) {
        return Decision::Identity("the body is shorter than min_length");
    }
    let Some(accept) = accept.and_then(|v| v.to_str().ok()) else {
        return Decision::Identity("the client sent no Accept-Encoding");
    };
    match negotiate(accept, &setting.algorithms) {
        Some(algorithm) => Decision::Compress(algorithm),
        None => Decision::Identity("the client accepts none of the offered encodings"),
    }
}

/// Adds `accept-encoding` to the response's `Vary`, as one merged list,
/// unless it is there already or `Vary: *` says the answer varies on
/// everything anyway.
pub fn add_vary(headers: &mut HeaderMap) {
    let existing: Vec<&str> = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .collect();
    if existing
        .iter()
        .any(|name| *name == "*" || name.eq_ignore_ascii_case("accept-encoding"))
    {
        return;
    }
    let mut merged = existing.join(", ");
    if !merged.is_empty() {
        merged.push_str(", ");
    }
    merged.push_str("Accept-Encoding");
    if let Ok(value) = HeaderValue::from_str(&merged) {
        headers.insert(header::VARY, value);
    }
}

/// The headers of a response whose body is now encoded with `algorithm`: its
/// `Content-Encoding`; no `Content-Length` (the new length is known only at
/// the end; the body goes chunked, or in HTTP/2 frames); a strong `ETag`
/// made weak (`W/"..."`), because the bytes differ from the upstream's while
/// the content means the same, which is what a weak validator says (nginx
/// does the same); no `Accept-Ranges`, since ranges of the encoded body are
/// not offered.
pub fn mark_encoded(headers: &mut HeaderMap, algorithm: Algorithm) {
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(algorithm.token()),
    );
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_RANGES);
    if let Some(etag) = headers.get(header::ETAG)
        && etag.as_bytes().starts_with(b"\"")
    {
        let mut weak = b"W/".to_vec();
        weak.extend_from_slice(etag.as_bytes());
        if let Ok(value) = HeaderValue::from_bytes(&weak) {
            headers.insert(header::ETAG, value);
        }
    }
}

/// `body`, compressed with `algorithm` at `level` as it streams.
pub fn encode(body: ProxyBody, algorithm: Algorithm, level: Level) -> ProxyBody {
    Compressed {
        inner: body,
        encoder: Encoder::new(algorithm, level),
        unflushed: false,
        state: State::Streaming,
    }
    .boxed()
}

/// Output gathered in the encoder is sent once it reaches this many bytes,
/// even if the upstream keeps sending without a pause.
const SEND_AT: usize = 32 * 1024;

/// The encoder for one response, writing its output into a buffer the body
/// takes from.
enum Encoder {
    Gzip(GzipEncoder<Vec<u8>>),
    /// Boxed: brotli's state is several KiB, the others' a few hundred bytes.
    Brotli(Box<BrotliEncoder<Vec<u8>>>),
    Zstd(ZstdEncoder<Vec<u8>>),
}

impl Encoder {
    fn new(algorithm: Algorithm, level: Level) -> Encoder {
        let quality = CodecLevel::Precise(level.quality(algorithm));
        let out = Vec::new();
        match algorithm {
            Algorithm::Gzip => Encoder::Gzip(GzipEncoder::with_quality(out, quality)),
            Algorithm::Brotli => {
                Encoder::Brotli(Box::new(BrotliEncoder::with_quality(out, quality)))
            }
            // Browsers decode zstd with at most an 8 MiB window (RFC 9659):
            // the highest levels would use more, so it is capped.
            Algorithm::Zstd => Encoder::Zstd(ZstdEncoder::with_quality_and_params(
                out,
                quality,
                &[async_compression::zstd::CParameter::window_log(23)],
            )),
        }
    }

    fn writer(&mut self) -> Pin<&mut (dyn AsyncWrite + Send + Sync + Unpin)> {
        match self {
            Encoder::Gzip(e) => Pin::new(e),
            Encoder::Brotli(e) => Pin::new(e),
            Encoder::Zstd(e) => Pin::new(e),
        }
    }

    fn output(&mut self) -> &mut Vec<u8> {
        match self {
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::Brotli(e) => e.get_mut(),
            Encoder::Zstd(e) => e.get_mut(),
        }
    }

    /// Drives one of the encoder's writing steps to its end. The encoder
    /// writes into a `Vec`, which never has to wait, so no step ever does.
    fn run<T>(
        &mut self,
        mut step: impl FnMut(
            Pin<&mut (dyn AsyncWrite + Send + Sync + Unpin)>,
            &mut Context<'_>,
        ) -> Poll<io::Result<T>>,
    ) -> io::Result<T> {
        let mut cx = Context::from_waker(Waker::noop());
        match step(self.writer(), &mut cx) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::Error::other("the encoder could not write to memory")),
        }
    }

    fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = self.run(|w, cx| w.poll_write(cx, data))?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            data = &data[n..];
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.run(|w, cx| w.poll_flush(cx))
    }

    fn finish(&mut self) -> io::Result<()> {
        self.run(|w, cx| w.poll_shutdown(cx))
    }

    fn take(&mut self) -> Bytes {
        Bytes::from(std::mem::take(self.output()))
    }
}

enum State {
    Streaming,
    /// The encoded body is complete; the upstream's trailers go next.
    Trailers(HeaderMap),
    Done,
}

/// A body compressed frame by frame as the upstream's arrives.
struct Compressed {
    inner: ProxyBody,
    encoder: Encoder,
    /// Data went into the encoder since its last flush.
    unflushed: bool,
    state: State,
}

impl Compressed {
    /// Some encoded bytes as a data frame, or nothing if there are none yet.
    fn data_frame(&mut self) -> Option<Frame<Bytes>> {
        let out = self.encoder.take();
        (!out.is_empty()).then(|| Frame::data(out))
    }
}

fn failed(err: io::Error) -> BodyError {
    Box::new(io::Error::new(
        err.kind(),
        format!("compressing the response: {err}"),
    ))
}

impl Body for Compressed {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        loop {
            match std::mem::replace(&mut this.state, State::Streaming) {
                State::Done => {
                    this.state = State::Done;
                    return Poll::Ready(None);
                }
                State::Trailers(trailers) => {
                    this.state = State::Done;
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                State::Streaming => {}
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if let Err(err) = this.encoder.write(&data) {
                            this.state = State::Done;
                            return Poll::Ready(Some(Err(failed(err))));
                        }
                        this.unflushed = true;
                        if this.encoder.output().len() >= SEND_AT
                            && let Some(frame) = this.data_frame()
                        {
                            return Poll::Ready(Some(Ok(frame)));
                        }
                    }
                    Err(frame) => {
                        // Trailers end the body: finish the encoded stream first.
                        if let Ok(trailers) = frame.into_trailers() {
                            if let Err(err) = this.encoder.finish() {
                                this.state = State::Done;
                                return Poll::Ready(Some(Err(failed(err))));
                            }
                            this.state = State::Trailers(trailers);
                            if let Some(frame) = this.data_frame() {
                                return Poll::Ready(Some(Ok(frame)));
                            }
                        }
                    }
                },
                // The upstream failed mid-body: so does this body, without
                // finishing the encoded stream, so the client cannot take
                // what it got for a complete answer.
                Poll::Ready(Some(Err(err))) => {
                    this.state = State::Done;
                    return Poll::Ready(Some(Err(err)));
                }
                Poll::Ready(None) => {
                    this.state = State::Done;
                    if let Err(err) = this.encoder.finish() {
                        return Poll::Ready(Some(Err(failed(err))));
                    }
                    return Poll::Ready(this.data_frame().map(Ok));
                }
                Poll::Pending => {
                    // The upstream paused: send what it gave so far, decodable now.
                    if this.unflushed {
                        this.unflushed = false;
                        if let Err(err) = this.encoder.flush() {
                            this.state = State::Done;
                            return Poll::Ready(Some(Err(failed(err))));
                        }
                        if let Some(frame) = this.data_frame() {
                            return Poll::Ready(Some(Ok(frame)));
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use Algorithm::{Brotli, Gzip, Zstd};

    const ALL: &[Algorithm] = &Algorithm::ALL;

    #[test]
    fn the_highest_q_value_wins() {
        assert_eq!(negotiate("br;q=1, gzip;q=0.5", ALL), Some(Brotli));
        assert_eq!(negotiate("gzip;q=0.9, br;q=0.3", ALL), Some(Gzip));
        assert_eq!(negotiate("gzip, zstd;q=0.999", ALL), Some(Gzip));
    }

    #[test]
    fn ties_go_to_the_proxys_order() {
        assert_eq!(negotiate("gzip, deflate, br, zstd", ALL), Some(Zstd));
        assert_eq!(negotiate("gzip, br", ALL), Some(Brotli));
        assert_eq!(negotiate("gzip, br", &[Gzip, Brotli]), Some(Gzip));
        assert_eq!(negotiate("br;q=0.5, gzip;q=0.50", ALL), Some(Brotli));
    }

    #[test]
    fn q_zero_refuses_an_encoding() {
        assert_eq!(negotiate("br;q=0, gzip", ALL), Some(Gzip));
        assert_eq!(negotiate("gzip;q=0", ALL), None);
        assert_eq!(negotiate("gzip;q=0.000, br;q=0.0", ALL), None);
    }

    #[test]
    fn only_offered_encodings_are_chosen() {
        assert_eq!(negotiate("zstd", &[Brotli, Gzip]), None);
        assert_eq!(negotiate("deflate, compress", ALL), None);
        assert_eq!(negotiate("", ALL), None);
    }

    #[test]
    fn star_stands_for_every_encoding_not_named() {
        assert_eq!(negotiate("*", ALL), Some(Zstd));
        assert_eq!(negotiate("zstd;q=0, *", ALL), Some(Brotli));
        assert_eq!(negotiate("gzip, *;q=0", ALL), Some(Gzip));
        assert_eq!(negotiate("*;q=0", ALL), None);
        assert_eq!(negotiate("br;q=0.2, *;q=0.5", ALL), Some(Zstd));
    }

    #[test]
    fn identity_wins_only_when_the_client_prefers_it() {
        assert_eq!(negotiate("gzip;q=0.5, identity", ALL), None);
        assert_eq!(negotiate("gzip;q=0.5, identity;q=0.5", ALL), Some(Gzip));
        assert_eq!(negotiate("gzip, identity;q=0", ALL), Some(Gzip));
        assert_eq!(negotiate("identity", ALL), None);
        assert_eq!(negotiate("gzip;q=0.1", ALL), Some(Gzip));
        assert_eq!(negotiate("gzip;q=0.4, *;q=0.5", ALL), Some(Zstd));
        assert_eq!(negotiate("gzip;q=0.4, *;q=0.5", &[Gzip]), None);
        // Identity refused and nothing usable: sent as it is (no 406).
        assert_eq!(negotiate("deflate, identity;q=0", ALL), None);
        // `*;q=0` refuses identity too, but gzip is named.
        assert_eq!(negotiate("gzip;q=0.3, *;q=0", ALL), Some(Gzip));
    }

    #[test]
    fn codings_and_q_are_case_insensitive() {
        assert_eq!(negotiate("GZIP", ALL), Some(Gzip));
        assert_eq!(negotiate("Br;Q=0.8, gzip;q=0.4", ALL), Some(Brotli));
        assert_eq!(negotiate("x-gzip", ALL), Some(Gzip));
        assert_eq!(negotiate("IDENTITY, gzip;q=0.1", ALL), None);
    }

    #[test]
    fn junk_entries_are_skipped_not_fatal() {
        assert_eq!(negotiate("br;q=2, gzip", ALL), Some(Gzip));
        assert_eq!(negotiate("br;q=abc, gzip;q=0.1", ALL), Some(Gzip));
        assert_eq!(negotiate("br;q=0.1234, gzip;q=0.1", ALL), Some(Gzip));
        assert_eq!(negotiate("br;q, gzip;q=0.1", ALL), Some(Gzip));
        assert_eq!(negotiate(",,; ,gzip ; q=0.5 ,", ALL), Some(Gzip));
        assert_eq!(negotiate("g zip, br;level=5", ALL), Some(Brotli));
        assert_eq!(negotiate("zstd;q=-1, zstd;q=1.5", ALL), None);
    }

    #[test]
    fn q_values_are_read_as_the_rfc_writes_them() {
        assert_eq!(parse_qvalue("1"), Some(1000));
        assert_eq!(parse_qvalue("1.000"), Some(1000));
        assert_eq!(parse_qvalue("0.5"), Some(500));
        assert_eq!(parse_qvalue("0.05"), Some(50));
        assert_eq!(parse_qvalue("0."), Some(0));
        assert_eq!(parse_qvalue("1.001"), None);
        assert_eq!(parse_qvalue("0.0001"), None);
        assert_eq!(parse_qvalue(".5"), None);
        assert_eq!(parse_qvalue("+0.5"), None);
    }

    #[test]
    fn types_match_by_media_type_and_event_streams_need_naming() {
        let c = Compress::default();
        assert!(c.compresses_type("text/html; charset=utf-8"));
        assert!(c.compresses_type("Application/JSON"));
        assert!(c.compresses_type("image/svg+xml"));
        assert!(!c.compresses_type("image/png"));
        assert!(!c.compresses_type("application/octet-stream"));
        assert!(!c.compresses_type("text"));
        assert!(!c.compresses_type("text/event-stream"));
        let sse = Compress {
            types: vec!["text/event-stream".into()],
            ..Compress::default()
        };
        assert!(sse.compresses_type("text/event-stream"));
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                    HeaderValue::from_str(v).expect("value"),
                )
            })
            .collect()
    }

    fn decision(method: Method, status: u16, pairs: &[(&str, &str)], accept: &str) -> Decision {
        let accept = HeaderValue::from_str(accept).expect("value");
        decide(
            &Compress::default(),
            &method,
            (!accept.is_empty()).then_some(&accept),
            StatusCode::from_u16(status).expect("status"),
            &headers(pairs),
            None,
        )
    }

    #[test]
    fn what_is_left_alone_and_why() {
        let html = ("content-type", "text/html");
        assert_eq!(
            decision(Method::GET, 200, &[html], "gzip"),
            Decision::Compress(Gzip)
        );
        assert_eq!(
            decision(Method::GET, 200, &[("content-type", "image/png")], "gzip"),
            Decision::NotCompressible
        );
        assert_eq!(
            decision(Method::GET, 200, &[], "gzip"),
            Decision::NotCompressible
        );
        assert!(matches!(
            decision(
                Method::GET,
                200,
                &[html, ("content-encoding", "br")],
                "gzip"
            ),
            Decision::Untouchable(_)
        ));
        assert!(matches!(
            decision(
                Method::GET,
                200,
                &[html, ("cache-control", "public, No-Transform")],
                "gzip"
            ),
            Decision::Untouchable(_)
        ));
        for (method, status, extra) in [
            (Method::HEAD, 200, None),
            (Method::GET, 204, None),
            (Method::GET, 304, None),
            (Method::GET, 206, None),
            (Method::GET, 200, Some(("content-range", "bytes 0-9/100"))),
            (Method::GET, 200, Some(("content-length", "255"))),
        ] {
            let mut pairs = vec![html];
            pairs.extend(extra);
            assert!(
                matches!(
                    decision(method.clone(), status, &pairs, "gzip"),
                    Decision::Identity(_)
                ),
                "{method} {status} {extra:?}"
            );
        }
        assert_eq!(
            decision(Method::GET, 200, &[html, ("content-length", "256")], "gzip"),
            Decision::Compress(Gzip)
        );
        assert!(matches!(
            decision(Method::GET, 200, &[html], ""),
            Decision::Identity(_)
        ));
    }

    #[test]
    fn vary_is_merged_once() {
        let mut h = headers(&[("vary", "Origin")]);
        add_vary(&mut h);
        add_vary(&mut h);
        assert_eq!(h["vary"], "Origin, Accept-Encoding");
        let mut h = headers(&[]);
        add_vary(&mut h);
        assert_eq!(h["vary"], "Accept-Encoding");
        let mut h = headers(&[("vary", "accept-encoding, cookie")]);
        add_vary(&mut h);
        assert_eq!(h["vary"], "accept-encoding, cookie");
        let mut h = headers(&[("vary", "*")]);
        add_vary(&mut h);
        assert_eq!(h["vary"], "*");
        let mut h = HeaderMap::new();
        h.append(header::VARY, HeaderValue::from_static("origin"));
        h.append(header::VARY, HeaderValue::from_static("cookie"));
        add_vary(&mut h);
        assert_eq!(
            h.get_all(header::VARY).iter().collect::<Vec<_>>(),
            ["origin, cookie, Accept-Encoding"]
        );
    }

    #[test]
    fn an_encoded_response_loses_its_length_and_its_strong_etag() {
        let mut h = headers(&[
            ("content-length", "1000"),
            ("etag", "\"abc\""),
            ("accept-ranges", "bytes"),
        ]);
        mark_encoded(&mut h, Brotli);
        assert_eq!(h["content-encoding"], "br");
        assert_eq!(h["etag"], "W/\"abc\"");
        assert!(!h.contains_key("content-length"));
        assert!(!h.contains_key("accept-ranges"));
        let mut weak = headers(&[("etag", "W/\"abc\"")]);
        mark_encoded(&mut weak, Gzip);
        assert_eq!(weak["etag"], "W/\"abc\"");
    }

    #[test]
    fn several_accept_encoding_lines_are_read_as_one() {
        let mut h = HeaderMap::new();
        h.append(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=0.1"),
        );
        h.append(header::ACCEPT_ENCODING, HeaderValue::from_static("br"));
        assert_eq!(accept_encoding(&h).expect("present"), "gzip;q=0.1, br");
        assert_eq!(accept_encoding(&HeaderMap::new()), None);
    }
}
