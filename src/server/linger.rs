//! Lingering close: when the hub closes a connection while the client may still be sending
//! (a request refused before its body was read: `413`, `401`/`403` on a publish, `415`, `431`),
//! the answer is sent, the write side is shut down, and what the client still sends is read
//! and thrown away until it stops, for a bounded time, before the socket is closed.
//!
//! Why: closing a TCP socket with unread bytes in its receive buffer (or receiving bytes after
//! the close) makes the kernel answer with a reset, and a reset makes the client's kernel drop
//! whatever the client had not read yet, the answer included. A publisher writing a 20 MiB body
//! before reading (Python's `http.client`, `requests`) then sees `ConnectionResetError` instead
//! of the `413`, and cannot tell "too large" from "the hub crashed". nginx calls this
//! `lingering_close`, bounded by `lingering_time` (in total) and `lingering_timeout` (between
//! reads); the two settings here are [`LingerSettings`] (`--lingering-time`,
//! `--lingering-timeout`).
//!
//! How: [`Linger`] wraps a connection's socket, below TLS and hyper. hyper closes a connection
//! by flushing its answer and calling `poll_shutdown`; this wrapper then shuts down the write
//! side (the client reads the answer, then end of file) and, if the client may still be sending,
//! reads into a buffer on the stack and discards it: memory does not grow with what the client
//! sends, and the only state is two timers, allocated when lingering starts. The client "may
//! still be sending" when a request body was dropped before its end ([`UnreadBody`], set by the
//! router service) or when bytes are waiting at the moment of the close (a head over the size
//! limit, a pipelined request after an error); otherwise it waits at most
//! [`QUIET_CLOSE_GRACE`] (the rest of an oversized head may still be on its way), and a client
//! that answers the hub's FIN with its own, as clients do after `Connection: close` or on an
//! idle connection, ends the wait at once. A client that has already closed its side (end of
//! file seen) is never waited for.
//!
//! HTTP/2 needs none of this per request: h2 answers an early response with `RST_STREAM`
//! (`NO_ERROR`, RFC 9113 §8.1) and discards the stream's further data, and the connection goes
//! on. The wrapper still lingers when an HTTP/2 connection itself closes with bytes waiting.
//!
//! What it leaves to others: the plain HTTP/1.1 subscription writer ([`super::direct`]) closes
//! its own socket (a subscription has no body), and connections refused at the connection
//! limits have their own, smaller drain ([`super::limits`]).

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tracing::debug;

/// How long a closing connection keeps reading and discarding what its client still sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LingerSettings {
    /// The longest time spent draining one connection in all (`--lingering-time`, default
    /// 30 s, as nginx). Zero: close at once, without draining.
    pub time: Duration,
    /// The longest gap between two reads while draining (`--lingering-timeout`, default 5 s,
    /// as nginx): a client that pauses longer is taken to have stopped.
    pub timeout: Duration,
}

impl Default for LingerSettings {
    fn default() -> Self {
        Self {
            time: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Bytes read per read while draining. On the stack of the `poll_shutdown` call, never in the
/// connection's state.
const DRAIN_CHUNK_BYTES: usize = 16 * 1024;
/// How long a close waits for the client when nothing shows that it is still sending (no
/// unread body, no bytes waiting): enough for bytes in flight to arrive, or for the client to
/// answer the hub's FIN with its own, which ends the wait at once.
const QUIET_CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Most reads per poll while draining, so that one fast sender cannot hold the worker thread;
/// the task then yields and is polled again.
const DRAIN_READS_PER_POLL: usize = 64;

/// Set by the router service when a request body was dropped before its end: the client may
/// still be sending it, so the connection lingers when it closes. Shared by the connection's
/// service and its [`Linger`] socket.
#[derive(Debug, Clone, Default)]
pub(crate) struct UnreadBody(Arc<AtomicBool>);

impl UnreadBody {
    fn mark(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn is_marked(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A request body that marks [`UnreadBody`] if it is dropped before its end.
pub(crate) struct TrackedBody<B: http_body::Body> {
    inner: B,
    unread: UnreadBody,
    /// The end was seen (or the body failed: hyper then closes the connection itself).
    done: bool,
}

impl<B: http_body::Body> TrackedBody<B> {
    pub(crate) fn new(inner: B, unread: UnreadBody) -> Self {
        Self {
            inner,
            unread,
            done: false,
        }
    }
}

impl<B: http_body::Body<Data = Bytes> + Unpin> http_body::Body for TrackedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.done = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B: http_body::Body> Drop for TrackedBody<B> {
    fn drop(&mut self) {
        if !self.done && !self.inner.is_end_stream() {
            self.unread.mark();
        }
    }
}

/// Where a [`Linger`] socket is in its life.
enum Phase {
    /// Serving: reads and writes pass through.
    Open,
    /// Closing: the write side is being flushed and shut down.
    ShuttingDown,
    /// Reading and discarding until the client stops or a limit is reached.
    Draining(Box<Draining>),
    /// Closed (as far as this wrapper goes): the owner drops the socket next.
    Closed,
}

/// The timers of a draining connection.
struct Draining {
    /// When draining ends whatever the client does ([`LingerSettings::time`]).
    total: Pin<Box<Sleep>>,
    /// When the client is taken to have stopped, unless it sends again first.
    idle: Pin<Box<Sleep>>,
    /// The longest pause between reads: the lingering timeout, or [`QUIET_CLOSE_GRACE`] when
    /// nothing showed that the client is still sending.
    idle_timeout: Duration,
    /// The last time bytes were read, to move `idle` lazily (once it fires) rather than on
    /// every read.
    last_read: Instant,
    /// Bytes discarded, for the log.
    discarded: u64,
}

/// A socket that lingers when it is shut down (see the module documentation).
pub(crate) struct Linger<I> {
    inner: I,
    settings: LingerSettings,
    /// Set by the connection's HTTP/1 service; `None` where bodies are refused otherwise.
    unread: Option<UnreadBody>,
    /// The client closed its side: nothing more will come.
    peer_closed: bool,
    phase: Phase,
}

impl<I> Linger<I> {
    /// Wraps `inner`; `unread` is the flag the connection's service sets.
    pub(crate) fn new(inner: I, settings: LingerSettings, unread: Option<UnreadBody>) -> Self {
        Self {
            inner,
            settings,
            unread,
            peer_closed: false,
            phase: Phase::Open,
        }
    }
}

/// What one read gave while draining or probing.
enum Drained {
    /// Bytes (discarded).
    Bytes(usize),
    /// End of file, or an error: the client is gone.
    Gone,
    /// Nothing waiting.
    Nothing,
}

impl<I: AsyncRead + AsyncWrite + Unpin> Linger<I> {
    /// One read into a scratch buffer on the stack.
    fn read_and_discard(&mut self, cx: &mut Context<'_>) -> Drained {
        let mut scratch = [0u8; DRAIN_CHUNK_BYTES];
        let mut buf = ReadBuf::new(&mut scratch);
        match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                self.peer_closed = true;
                Drained::Gone
            }
            Poll::Ready(Ok(())) => Drained::Bytes(buf.filled().len()),
            Poll::Ready(Err(_)) => Drained::Gone,
            Poll::Pending => Drained::Nothing,
        }
    }

    /// After the write side is shut down: whether to drain, and the timers if so.
    fn start_draining(&mut self, cx: &mut Context<'_>) -> Phase {
        if self.peer_closed || self.settings.time.is_zero() {
            return Phase::Closed;
        }
        let configured = if self.settings.timeout.is_zero() {
            self.settings.time
        } else {
            self.settings.timeout.min(self.settings.time)
        };
        let (first, idle_timeout) = match self.read_and_discard(cx) {
            Drained::Gone => return Phase::Closed,
            Drained::Bytes(n) => (n as u64, configured),
            Drained::Nothing if self.unread.as_ref().is_some_and(UnreadBody::is_marked) => {
                (0, configured)
            }
            // Nothing says the client is still sending, nor that it is not: hyper also closes
            // after a head over the size limit, whose next bytes may not have arrived yet.
            // Wait a little for them (or for the client's own close, which ends it at once).
            Drained::Nothing => (0, configured.min(QUIET_CLOSE_GRACE)),
        };
        let now = Instant::now();
        debug!("lingering: draining what the client still sends");
        Phase::Draining(Box::new(Draining {
            total: Box::pin(tokio::time::sleep_until(now + self.settings.time)),
            idle: Box::pin(tokio::time::sleep_until(now + idle_timeout)),
            idle_timeout,
            last_read: now,
            discarded: first,
        }))
    }

    /// Drains until the client stops, closes, or a limit is reached.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        for _ in 0..DRAIN_READS_PER_POLL {
            match self.read_and_discard(cx) {
                Drained::Bytes(n) => {
                    if let Phase::Draining(draining) = &mut self.phase {
                        draining.discarded += n as u64;
                        draining.last_read = Instant::now();
                    }
                }
                Drained::Gone => {
                    if let Phase::Draining(draining) = &self.phase {
                        debug!(
                            discarded_bytes = draining.discarded,
                            "lingering: the client stopped"
                        );
                    }
                    return Poll::Ready(());
                }
                Drained::Nothing => {
                    let Phase::Draining(draining) = &mut self.phase else {
                        return Poll::Ready(());
                    };
                    if draining.total.as_mut().poll(cx).is_ready() {
                        debug!(
                            discarded_bytes = draining.discarded,
                            "lingering: the lingering time is over"
                        );
                        return Poll::Ready(());
                    }
                    loop {
                        if draining.idle.as_mut().poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                        let due = draining.last_read + draining.idle_timeout;
                        if due <= Instant::now() {
                            debug!(
                                discarded_bytes = draining.discarded,
                                "lingering: the client paused longer than the lingering timeout"
                            );
                            return Poll::Ready(());
                        }
                        // Bytes came since the timer was set: wait from the last of them.
                        draining.idle.as_mut().reset(due);
                    }
                }
            }
        }
        // Still sending: let other tasks run, then continue.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Linger<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(())))
            && buf.filled().len() == before
            && buf.remaining() > 0
        {
            self.peer_closed = true;
        }
        result
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Linger<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// Flushes, shuts down the write side, then lingers (see the module documentation). A
    /// failure to flush or shut down ends it: the client is gone, and there is nothing to
    /// protect.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match &this.phase {
                Phase::Open => this.phase = Phase::ShuttingDown,
                Phase::ShuttingDown => {
                    let shut = match Pin::new(&mut this.inner).poll_flush(cx) {
                        Poll::Ready(Ok(())) => {
                            std::task::ready!(Pin::new(&mut this.inner).poll_shutdown(cx))
                        }
                        Poll::Ready(Err(error)) => Err(error),
                        Poll::Pending => return Poll::Pending,
                    };
                    match shut {
                        Ok(()) => this.phase = this.start_draining(cx),
                        Err(error) => {
                            this.phase = Phase::Closed;
                            return Poll::Ready(Err(error));
                        }
                    }
                }
                Phase::Draining(_) => {
                    std::task::ready!(this.poll_drain(cx));
                    this.phase = Phase::Closed;
                }
                Phase::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    const SETTINGS: LingerSettings = LingerSettings {
        time: Duration::from_secs(30),
        timeout: Duration::from_secs(5),
    };

    /// A server socket over an in-memory pipe with a small buffer (writes block until the other
    /// side reads), and the client's end.
    fn pipe(unread: bool) -> (Linger<DuplexStream>, DuplexStream) {
        let (client, server) = tokio::io::duplex(4096);
        let flag = UnreadBody::default();
        if unread {
            flag.mark();
        }
        (Linger::new(server, SETTINGS, Some(flag)), client)
    }

    /// Shuts `server` down in a task of its own; returns how long (paused) time ran until
    /// it finished.
    fn close(mut server: Linger<DuplexStream>) -> tokio::task::JoinHandle<Duration> {
        tokio::spawn(async move {
            let started = Instant::now();
            // Fails when the client is already gone; the close must still finish.
            let _ = server
                .write_all(b"HTTP/1.1 413 Payload Too Large\r\n\r\n")
                .await;
            server.shutdown().await.expect("shutdown");
            started.elapsed()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn an_unread_body_is_drained_until_the_client_stops_and_the_answer_arrives() {
        let (server, mut client) = pipe(true);
        let closing = close(server);
        // 8 MiB through a 4 KiB pipe: only a drain lets it through.
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..128 {
            client.write_all(&chunk).await.expect("the body is taken");
        }
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.expect("answer");
        assert!(answer.starts_with(b"HTTP/1.1 413"), "{answer:?}");
        drop(client);
        let took = closing.await.expect("close");
        assert!(took < SETTINGS.timeout, "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_left_after_the_lingering_timeout() {
        let (server, _client) = pipe(true);
        let took = close(server).await.expect("close");
        assert_eq!(took, SETTINGS.timeout);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_keeps_sending_is_left_after_the_lingering_time() {
        let (server, mut client) = pipe(true);
        let closing = close(server);
        // A byte a second, forever: never idle for the lingering timeout.
        let sending = tokio::spawn(async move {
            while client.write_all(b"x").await.is_ok() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let took = closing.await.expect("close");
        assert!(
            took >= SETTINGS.time && took <= SETTINGS.time + Duration::from_secs(1),
            "{took:?}"
        );
        sending.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_close_waits_only_a_short_grace_and_not_for_a_closed_client() {
        // No unread body, nothing waiting: a short wait for bytes still in flight.
        let (server, _client) = pipe(false);
        assert_eq!(close(server).await.expect("close"), QUIET_CLOSE_GRACE);
        // ... which the client's own close ends at once.
        let (server, mut client) = pipe(false);
        let closing = close(server);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.expect("answer");
        drop(client);
        assert_eq!(closing.await.expect("close"), Duration::ZERO);
        // A client that already closed is not waited for, even with an unread body.
        let (mut server, client) = pipe(true);
        drop(client);
        let mut byte = [0u8; 1];
        assert_eq!(server.read(&mut byte).await.expect("end of file"), 0);
        assert_eq!(close(server).await.expect("close"), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_waiting_at_the_close_are_drained_without_an_unread_body() {
        // A head over the limit, a pipelined request after an error: hyper answered, bytes wait.
        let (server, mut client) = pipe(false);
        client
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("waiting bytes");
        let took = close(server).await.expect("close");
        assert_eq!(took, SETTINGS.timeout, "drained, then waited for more");
    }
}
