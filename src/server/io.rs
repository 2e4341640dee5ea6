//! The connection's I/O wrappers: [`TimedIo`] (a write blocked longer than the dispatch
//! timeout fails, so a client that stops reading cannot hold a connection) and
//! `GreetingTimeout` (the first request must arrive within the header read timeout).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::connection::HTTP2_PREFACE;

/// A stream (TCP; an in-memory pipe when fuzzing) whose writes fail with `TimedOut` after
/// staying blocked for too long.
///
/// The timer is allocated the first time a write blocks and reused after that, so a
/// connection whose writes never block costs no timer.
pub struct TimedIo<S = TcpStream> {
    inner: S,
    dispatch_timeout: Duration,
    stall_timer: Option<Pin<Box<Sleep>>>,
    stalled: bool,
}

impl TimedIo<TcpStream> {
    /// The TCP stream inside.
    pub fn stream(&self) -> &TcpStream {
        &self.inner
    }
}

impl<S> TimedIo<S> {
    /// Wraps `inner`; a zero `dispatch_timeout` disables the timeout.
    pub fn new(inner: S, dispatch_timeout: Duration) -> Self {
        Self {
            inner,
            dispatch_timeout,
            stall_timer: None,
            stalled: false,
        }
    }

    fn watch<T>(
        &mut self,
        result: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        if result.is_ready() || self.dispatch_timeout.is_zero() {
            self.stalled = false;
            return result;
        }
        if !self.stalled {
            self.stalled = true;
            let deadline = Instant::now() + self.dispatch_timeout;
            match &mut self.stall_timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.stall_timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let expired = self
            .stall_timer
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
        if expired {
            self.stalled = false;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client has not read for longer than the write timeout",
            )));
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(result, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(result, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Fails reads with `TimedOut` when a connection has not shown its protocol within a timeout:
/// the first byte that is not the HTTP/2 preface (HTTP/1.x), or the whole preface (HTTP/2).
///
/// hyper's header read timeout starts once hyper reads an HTTP/1 request, and its HTTP/2
/// keep-alive PINGs once the preface has arrived; before that, a client that connects and
/// sends nothing would hold its connection forever. After the greeting this wrapper only
/// forwards.
pub(super) struct GreetingTimeout<I> {
    inner: I,
    /// Until the protocol is known: the deadline and how much of the preface has matched.
    pending: Option<(Pin<Box<Sleep>>, usize)>,
}

impl<I> GreetingTimeout<I> {
    /// Wraps `inner`; a zero `timeout` disables the limit.
    pub(super) fn new(inner: I, timeout: Duration) -> Self {
        let pending =
            (!timeout.is_zero()).then(|| (Box::pin(tokio::time::sleep(timeout)), 0_usize));
        Self { inner, pending }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for GreetingTimeout<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let Some((deadline, matched)) = self.pending.as_mut() else {
            return result;
        };
        match &result {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                let expected = &HTTP2_PREFACE[*matched..];
                let n = read.len().min(expected.len());
                // EOF, or a byte off the preface: HTTP/1.x, which hyper times from here.
                let known = if read.is_empty() || read[..n] != expected[..n] {
                    true
                } else {
                    *matched += n;
                    *matched == HTTP2_PREFACE.len()
                };
                if known {
                    self.pending = None;
                }
            }
            Poll::Ready(Err(_)) => {}
            Poll::Pending => {
                if deadline.as_mut().poll(cx).is_ready() {
                    self.pending = None;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client sent no request within the header read timeout",
                    )));
                }
            }
        }
        result
    }
}

forward_async_write!(GreetingTimeout);
