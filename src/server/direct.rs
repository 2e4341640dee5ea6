//! Subscriptions over plain HTTP/1.1, written to the socket without hyper's connection buffers.
//!
//! Why: a subscription is one `GET` followed by hours of a response body. Served by hyper, every
//! open stream keeps hyper's 8 KiB read buffer and 8 KiB write buffer for its whole life, which
//! was most of the hub's memory per idle stream (`BENCHMARKS.md`). A subscription needs neither:
//! its request has no body, and its frames are already encoded, shared `Bytes` ready for the
//! socket. So the first request head of a plain connection is read here ([`read_first_head`]);
//! if it may be a subscription (a `GET` of [`ServerOptions::subscribe_path`], by default
//! `/.well-known/mercure?…`; HTTP/1.1, no body, no upgrade), the router answers it as usual, and
//! if the answer carries the [`EventStream`] extension (the subscribe handler's mark), an event
//! stream is written here: the head, then each body frame as one chunk of the chunked transfer
//! coding in one vectored write, then the last chunk when the stream ends. Any other answer is
//! written whole, whatever its `Content-Type`. Everything else (publishes, other paths,
//! HTTP/1.0, odd heads) goes to hyper with the bytes read so far put back in front ([`Rewind`]),
//! so hyper still parses and answers every request this module does not fully understand,
//! errors included.
//!
//! What this module must get right, and where: the head is read within the header read timeout
//! and at most the head size limit (the caller's timeout; [`read_first_head`]); a client that
//! closes or sends anything while its stream is open ends the stream at once (the subscriber
//! leaves the registry when the body is dropped); a write blocked for longer than the write
//! timeout ends it ([`super::TimedIo`]); responses that are not event streams (a 401, a 400, a
//! 503) are written whole with `connection: close`.
//!
//! [`ServerOptions::subscribe_path`]: super::ServerOptions::subscribe_path
//! [`EventStream`]: crate::http::EventStream

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::{Buf, Bytes, BytesMut};
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::{RouterService, TimedIo};
use crate::http::EventStream;

/// Whether the bytes read so far can still begin the request line of a subscription: `GET `,
/// then `subscribe_path` (whose query string carries the topics).
fn may_be_subscription(read: &[u8], subscribe_path: &[u8]) -> bool {
    const METHOD: &[u8] = b"GET ";
    let (method, rest) = read.split_at(read.len().min(METHOD.len()));
    let seen = rest.len().min(subscribe_path.len());
    method == &METHOD[..method.len()] && rest[..seen] == subscribe_path[..seen]
}
/// What a client connection is to this module: TCP in production, an in-memory pipe when
/// fuzzing.
pub(super) trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> ClientIo for S {}

/// Most header fields read here (hyper's default is 100 as well); more go to hyper.
const MAX_HEADERS: usize = 100;
/// Most bytes of a response that is not an event stream (an error) written here.
const MAX_PLAIN_BODY_BYTES: usize = 1024 * 1024;

/// The first request of a plain HTTP/1.1 connection, as far as it was read.
pub(super) enum FirstRequest {
    /// A subscription, read completely (and nothing after it).
    Subscription(http::Request<()>),
    /// Anything else: the bytes read so far, for hyper.
    Other(Bytes),
    /// The client closed the connection before sending anything.
    Closed,
}

/// Reads the first request head of a connection, stopping as soon as it is clearly not a
/// subscription (a `GET` of `subscribe_path`). The caller bounds the time; `max_head_bytes`
/// bounds the size.
pub(super) async fn read_first_head<S: AsyncRead + Unpin>(
    io: &mut TimedIo<S>,
    max_head_bytes: usize,
    subscribe_path: &[u8],
) -> io::Result<FirstRequest> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if buf.len() >= max_head_bytes {
            // hyper answers 431.
            return Ok(FirstRequest::Other(buf.freeze()));
        }
        if buf.capacity() == buf.len() {
            buf.reserve(buf.len().min(max_head_bytes - buf.len()).max(1024));
        }
        if io.read_buf(&mut buf).await? == 0 {
            return Ok(if buf.is_empty() {
                FirstRequest::Closed
            } else {
                FirstRequest::Other(buf.freeze())
            });
        }
        if !may_be_subscription(&buf, subscribe_path) {
            return Ok(FirstRequest::Other(buf.freeze()));
        }
        match parse_subscription(&buf, subscribe_path) {
            Parsed::Subscription(request) => return Ok(FirstRequest::Subscription(request)),
            Parsed::Other => return Ok(FirstRequest::Other(buf.freeze())),
            Parsed::Partial => {}
        }
    }
}

// Short-lived (one per read of a head); boxing the request would cost an allocation for nothing.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    Subscription(http::Request<()>),
    Other,
    Partial,
}

/// Whether `bytes` are exactly one complete subscription request head: a `GET` of
/// `subscribe_path`, with or without a query.
fn parse_subscription(bytes: &[u8], subscribe_path: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    let length = match head.parse(bytes) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let path = head.path.unwrap_or_default().as_bytes();
    let of_subscribe_path = path
        .strip_prefix(subscribe_path)
        .is_some_and(|rest| rest.is_empty() || rest[0] == b'?');
    // Bytes after the head would be a pipelined request (or a body): hyper's business.
    if length != bytes.len()
        || head.method != Some("GET")
        || head.version != Some(1)
        || !of_subscribe_path
    {
        return Parsed::Other;
    }
    let mut request = http::Request::builder()
        .method(http::Method::GET)
        .version(http::Version::HTTP_11);
    for header in head.headers.iter() {
        let name = header.name.as_bytes();
        let has_body = name.eq_ignore_ascii_case(b"transfer-encoding")
            || (name.eq_ignore_ascii_case(b"content-length") && header.value != b"0");
        if has_body || name.eq_ignore_ascii_case(b"upgrade") {
            return Parsed::Other;
        }
        request = request.header(header.name, header.value);
    }
    match request.uri(head.path.unwrap_or_default()).body(()) {
        Ok(request) => Parsed::Subscription(request),
        // A header name, value or URI that `http` refuses: hyper answers it.
        Err(_) => Parsed::Other,
    }
}

/// Answers a subscription request and, if the router opened a stream (its answer carries
/// [`EventStream`]), writes it until it ends, the client leaves or a write times out. The
/// connection closes afterwards.
pub(super) fn serve_subscription<S: ClientIo>(
    io: TimedIo<S>,
    request: http::Request<()>,
    service: RouterService,
) -> impl std::future::Future<Output = ()> + Send {
    // Not an `async fn`: routing's state is large, and the request too; boxed here, neither is
    // part of the future that lives as long as the stream (`connection_state_stays_small`).
    stream_answer(io, Box::pin(answer(request, service)))
}

type AnswerFuture = Pin<Box<dyn std::future::Future<Output = io::Result<Answer>> + Send>>;

async fn stream_answer<S: ClientIo>(mut io: TimedIo<S>, answer: AnswerFuture) {
    let written = match answer.await {
        Ok(Answer::Stream { head, body }) => write_stream(&mut io, head, body).await,
        Ok(Answer::Whole(response)) => io.write_all(&response).await,
        Err(error) => Err(error),
    };
    if let Err(error) = written {
        tracing::debug!(%error, "subscription connection ended");
    }
    let _ = io.shutdown().await;
}

/// What the router answered, ready to write.
enum Answer {
    /// An event stream (marked [`EventStream`]): its encoded head, and the body to write as
    /// chunks.
    Stream { head: Vec<u8>, body: Body },
    /// Any other response (an error, usually), encoded whole with its length, whatever its
    /// `Content-Type`.
    Whole(Vec<u8>),
}

async fn answer(request: http::Request<()>, service: RouterService) -> io::Result<Answer> {
    let response = match service.route(request.map(|()| Body::empty())).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let (mut parts, body) = response.into_parts();
    // Framing is this module's to write, once.
    for framing in [
        http::header::CONTENT_LENGTH,
        http::header::TRANSFER_ENCODING,
        http::header::CONNECTION,
    ] {
        parts.headers.remove(framing);
    }
    // The subscribe handler's mark, not the content type: a handler's `text/event-stream` error
    // page (or an application's own finite body) is written whole and the connection closed.
    if parts.extensions.get::<EventStream>().is_some() {
        let head = encode_head(&parts, &[("transfer-encoding", b"chunked")]);
        return Ok(Answer::Stream { head, body });
    }
    let body = http_body_util::Limited::new(body, MAX_PLAIN_BODY_BYTES)
        .collect()
        .await
        .map_err(io::Error::other)?
        .to_bytes();
    let length = body.len().to_string();
    let mut response = encode_head(
        &parts,
        &[
            ("content-length", length.as_bytes()),
            ("connection", b"close"),
        ],
    );
    response.extend_from_slice(&body);
    Ok(Answer::Whole(response))
}

/// The status line and header fields, plus `extra` fields, and the blank line.
fn encode_head(parts: &http::response::Parts, extra: &[(&str, &[u8])]) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(parts.status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    for (name, value) in [("date", date.as_bytes())]
        .into_iter()
        .chain(extra.iter().copied())
    {
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Writes an event stream: the head, then every body frame as one chunk.
async fn write_stream<S: ClientIo>(
    io: &mut TimedIo<S>,
    head: Vec<u8>,
    body: Body,
) -> io::Result<()> {
    io.write_all(&head).await?;
    drop(head);
    StreamBody {
        io,
        body,
        pending: None,
        finished: false,
    }
    .await
}

/// Writes an event stream's body as chunks until it ends, the client closes or sends anything
/// (it has nothing to send: the request had no body), or a write fails.
///
/// A future written by hand rather than an `async` block: it lives as long as the stream, so
/// its size is memory per open stream, and this one holds only the socket, the body and the
/// chunk being written (an `async` version with `select!` held about 600 bytes).
struct StreamBody<'a, S> {
    io: &'a mut TimedIo<S>,
    body: Body,
    /// The chunk being written, if the socket did not take all of it at once.
    pending: Option<Chunk>,
    /// The last chunk is pending or written: done once it is.
    finished: bool,
}

impl<S: ClientIo> std::future::Future for StreamBody<'_, S> {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some(chunk) = &mut this.pending {
                std::task::ready!(chunk.poll_write(this.io, cx))?;
                this.pending = None;
                if this.finished {
                    return Poll::Ready(Ok(()));
                }
            }
            // A one-byte read that is not kept: the client has nothing to send, so any byte,
            // or the end of its side, ends the stream.
            let mut byte = [0u8; 1];
            let mut probe = ReadBuf::new(&mut byte);
            match Pin::new(&mut *this.io).poll_read(cx, &mut probe) {
                Poll::Ready(Ok(())) if probe.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the client sent data on an open event stream",
                    )))
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => {}
            }
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            this.pending = Some(Chunk::data(data));
                        }
                    }
                }
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(io::Error::other(error))),
                Poll::Ready(None) => {
                    this.pending = Some(Chunk::last());
                    this.finished = true;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// One chunk of the chunked transfer coding (`SIZE\r\nDATA\r\n`), written with one vectored
/// write when the socket takes it all (it usually does).
struct Chunk {
    size_line: [u8; 18],
    size_line_len: u8,
    size_line_sent: u8,
    /// What is left of the data.
    data: Bytes,
    /// How much of the closing CRLF was sent.
    crlf_sent: u8,
}

impl Chunk {
    fn data(data: Bytes) -> Self {
        let mut size_line = [0u8; 18];
        let size_line_len = {
            use std::io::Write;
            let mut cursor = io::Cursor::new(&mut size_line[..]);
            // 16 hex digits and CRLF always fit.
            let _ = write!(cursor, "{:x}\r\n", data.len());
            cursor.position() as u8
        };
        Self {
            size_line,
            size_line_len,
            size_line_sent: 0,
            data,
            crlf_sent: 0,
        }
    }

    /// The last chunk: `0\r\n\r\n`.
    fn last() -> Self {
        let mut size_line = [0u8; 18];
        size_line[..3].copy_from_slice(b"0\r\n");
        Self {
            size_line,
            size_line_len: 3,
            size_line_sent: 0,
            data: Bytes::new(),
            crlf_sent: 0,
        }
    }

    fn poll_write<S: ClientIo>(
        &mut self,
        io: &mut TimedIo<S>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let parts = [
                io::IoSlice::new(
                    &self.size_line[self.size_line_sent.into()..self.size_line_len.into()],
                ),
                io::IoSlice::new(&self.data),
                io::IoSlice::new(&b"\r\n"[self.crlf_sent.into()..]),
            ];
            if parts.iter().all(|part| part.is_empty()) {
                return Poll::Ready(Ok(()));
            }
            let written = std::task::ready!(Pin::new(&mut *io).poll_write_vectored(cx, &parts))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(written);
        }
    }

    fn advance(&mut self, mut written: usize) {
        let from_size_line = written.min(usize::from(self.size_line_len - self.size_line_sent));
        self.size_line_sent += from_size_line as u8;
        written -= from_size_line;
        let from_data = written.min(self.data.len());
        self.data.advance(from_data);
        written -= from_data;
        self.crlf_sent += written as u8;
    }
}

/// An IO whose first reads return bytes already read from it.
pub(super) struct Rewind<I> {
    prefix: Option<Bytes>,
    inner: I,
}

impl<I> Rewind<I> {
    pub(super) fn new(inner: I, prefix: Bytes) -> Self {
        Self {
            prefix: (!prefix.is_empty()).then_some(prefix),
            inner,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(prefix) = &mut self.prefix {
            let n = prefix.len().min(buf.remaining());
            buf.put_slice(&prefix[..n]);
            prefix.advance(n);
            if prefix.is_empty() {
                self.prefix = None;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

forward_async_write!(Rewind);

#[cfg(test)]
mod tests {
    use super::*;

    const MERCURE: &[u8] = crate::http::MERCURE_PATH.as_bytes();

    fn parse(text: &str) -> Parsed {
        parse_subscription(text.as_bytes(), MERCURE)
    }

    #[test]
    fn subscriptions_are_recognized() {
        let Parsed::Subscription(request) =
            parse("GET /.well-known/mercure?topic=a&topic=b HTTP/1.1\r\nHost: x\r\nLast-Event-ID: e1\r\n\r\n")
        else {
            panic!("a subscription");
        };
        assert_eq!(request.uri(), "/.well-known/mercure?topic=a&topic=b");
        assert_eq!(request.headers()["last-event-id"], "e1");
        assert!(matches!(
            parse("GET /.well-known/mercure HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
            Parsed::Subscription(_)
        ));
    }

    #[test]
    fn only_a_get_of_the_mercure_path_may_be_served_here() {
        for read in [
            &b"G"[..],
            b"GET ",
            b"GET /.well",
            b"GET /.well-known/mercure?topic=a",
        ] {
            assert!(
                may_be_subscription(read, MERCURE),
                "{:?}",
                String::from_utf8_lossy(read)
            );
        }
        for read in [
            &b"P"[..],
            b"POST /.well-known/mercure",
            b"GET /other",
            b"GET  /",
        ] {
            assert!(
                !may_be_subscription(read, MERCURE),
                "{:?}",
                String::from_utf8_lossy(read)
            );
        }
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        for head in [
            "GET /.well-known/mercure/subscriptions HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /.well-known/mercureX HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /.well-known/mercure?topic=a HTTP/1.0\r\nHost: x\r\n\r\n",
            "POST /.well-known/mercure HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /.well-known/mercure?topic=a HTTP/1.1\r\nContent-Length: 3\r\n\r\n",
            "GET /.well-known/mercure?topic=a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /.well-known/mercure?topic=a HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            // A pipelined request after the subscription.
            "GET /.well-known/mercure?topic=a HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n",
            "GET /.well-known/mercure?topic=a HTTP/1.1\r\nBad Header\r\n\r\n",
        ] {
            assert!(matches!(parse(head), Parsed::Other), "{head}");
        }
        assert!(matches!(
            parse("GET /.well-known/mercure?topic=a HTTP/1.1\r\nHost: x\r\n"),
            Parsed::Partial
        ));
    }

    #[test]
    fn the_subscribe_path_is_the_one_given() {
        let nested = b"/events/.well-known/mercure";
        let head = "GET /events/.well-known/mercure?topic=a HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(matches!(
            parse_subscription(head.as_bytes(), nested),
            Parsed::Subscription(_)
        ));
        assert!(may_be_subscription(b"GET /events/.well", nested));
        // The default path is not a subscription under another one, and the other way round.
        assert!(!may_be_subscription(b"GET /.well-known/mercure", nested));
        assert!(matches!(parse(head), Parsed::Other));
        assert!(matches!(
            parse_subscription(b"GET /.well-known/mercure?topic=a HTTP/1.1\r\n\r\n", nested),
            Parsed::Other
        ));
    }
}
