//! Serving the router: the accept loop, per-connection limits and graceful shutdown.
//!
//! axum's own `serve` offers no connection settings, and a push server needs two of them:
//! a header read timeout (a client that never finishes its request must not hold a connection)
//! and a write timeout (a client that stops reading must not hold one either: once its socket
//! buffer is full, hyper stops polling the response body, so only the socket can notice).
//! So connections are served with hyper directly, each wrapped in [`TimedIo`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;
use tracing::{debug, info, warn};

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// How long a client may take to send its request headers (default 10 s).
    pub header_read_timeout: Duration,
    /// How long one write to a client may stay blocked before the connection is dropped
    /// (default 30 s). This is what finally closes a subscriber that stopped reading.
    pub write_timeout: Duration,
    /// How long shutdown waits for open connections to finish before dropping them (default 5 s).
    pub shutdown_timeout: Duration,
    /// Largest request head (request line and headers), in bytes (default 64 KiB).
    pub max_header_bytes: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(5),
            max_header_bytes: 64 * 1024,
        }
    }
}

/// Binds `addr` with a listen backlog of 4,096 (the kernel caps it at `net.core.somaxconn`).
///
/// `tokio::net::TcpListener::bind` always asks for 128: a reconnect storm of a few hundred
/// clients at once then overflows the queue, and every dropped SYN costs its client a one-second
/// retransmission.
///
/// # Errors
/// The address cannot be bound.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets open
/// connections finish for up to [`ServerOptions::shutdown_timeout`], and returns.
///
/// SSE responses never finish by themselves: cancel the hub (its shutdown token) together with
/// `shutdown` so that every stream ends and its connection can close.
///
/// # Errors
/// None today: accept errors (such as running out of file descriptors) are logged and retried.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(options.max_header_bytes.max(8192))
        .keep_alive(true);
    // Every connection's task, so that the ones still open after the shutdown timeout can be
    // ended rather than left running behind the caller's back.
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Reap finished connections so the set only holds live ones.
        while connections.try_join_next().is_some() {}
        let (stream, remote) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning; the listener recovers
                    // when connections close.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Events are small and latency matters; coalescing happens in the stream instead.
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%error, "set_nodelay failed");
        }
        let io = TokioIo::new(TimedIo::new(stream, options.write_timeout));
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
            let mut request = request.map(axum::body::Body::new);
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(remote));
            app.clone().oneshot(request)
        });
        let connection = graceful.watch(http.serve_connection(io, service));
        connections.spawn(async move {
            if let Err(error) = connection.await {
                debug!(%remote, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    match tokio::time::timeout(options.shutdown_timeout, graceful.shutdown()).await {
        Ok(()) => info!("all connections closed"),
        Err(_) => {
            warn!(
                open = connections.len(),
                timeout_ms = options.shutdown_timeout.as_millis() as u64,
                "connections still open after the shutdown timeout; dropping them"
            );
            connections.abort_all();
        }
    }
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// A TCP stream whose writes fail with `TimedOut` after staying blocked for too long.
///
/// The timer is allocated the first time a write blocks and reused after that, so a
/// connection whose writes never block costs no timer.
pub struct TimedIo {
    inner: TcpStream,
    write_timeout: Duration,
    stall_timer: Option<Pin<Box<Sleep>>>,
    stalled: bool,
}

impl TimedIo {
    /// Wraps `inner`; a zero `write_timeout` disables the timeout.
    pub fn new(inner: TcpStream, write_timeout: Duration) -> Self {
        Self {
            inner,
            write_timeout,
            stall_timer: None,
            stalled: false,
        }
    }

    fn watch<T>(
        &mut self,
        result: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        if result.is_ready() || self.write_timeout.is_zero() {
            self.stalled = false;
            return result;
        }
        if !self.stalled {
            self.stalled = true;
            let deadline = Instant::now() + self.write_timeout;
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

impl AsyncRead for TimedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TimedIo {
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
