//! Serving the router: the accept loop, per-connection limits, HTTP/2, TLS and graceful
//! shutdown.
//!
//! axum's own `serve` offers no connection settings, and a push server needs two of them:
//! a header read timeout (a client that never finishes its request must not hold a connection)
//! and a write timeout (a client that stops reading must not hold one either: once its socket
//! buffer is full, hyper stops polling the response body, so only the socket can notice).
//! So connections are served with hyper directly, each wrapped in [`TimedIo`].
//!
//! Protocols: a plain listener speaks HTTP/1.1, and HTTP/2 to clients that start with its
//! preface (h2c with prior knowledge, RFC 9113 §3.3). With [`ServerOptions::tls`] the listener
//! speaks TLS only ([`tls`]) and ALPN picks the protocol: `h2`, else HTTP/1.1. Over HTTP/2 every
//! subscription of a browser tab shares one connection (HTTP/1.1 allows six per origin).
//!
//! HTTP/2 settings (see [`ServerOptions`] and the constants below): at most
//! [`ServerOptions::http2_max_concurrent_streams`] streams per connection; receive windows of
//! [`HTTP2_STREAM_WINDOW_BYTES`] per stream and [`HTTP2_CONNECTION_WINDOW_BYTES`] per
//! connection, which bound what a publisher may send before the hub reads it (the send
//! direction is governed by the client's own windows); at most [`HTTP2_SEND_BUFFER_BYTES`]
//! buffered per stream; a PING every [`ServerOptions::http2_keep_alive_interval`], and a
//! connection whose peer does not answer within as long again is closed.
//!
//! Connection limits: at most [`ServerOptions::max_connections`] open at once (by default as
//! many as the open-file limit allows, less a reserve for the hub's own files, so that the hub
//! never fails an `accept` for want of descriptors), and optionally at most
//! [`ServerOptions::max_connections_per_ip`] from one client address. A plain connection over a
//! limit is answered at once with `503` (total) or `429` (per address), without reading its
//! request, and closed; a TLS connection is closed (answering would cost a handshake).
//!
//! Slow subscribers over HTTP/2: flow control is per stream, so a stream whose window the client
//! does not reopen simply stops being polled; its subscriber queue fills and the hub closes that
//! subscriber alone (`SlowConsumer`), while the other streams of the connection continue. A
//! client that stops reading the connection altogether trips the write timeout, which closes
//! the connection and all its streams.

/// Implements `AsyncWrite` for a wrapper that only changes reads, by forwarding every call to
/// its `inner` field.
macro_rules! forward_async_write {
    ($wrapper:ident) => {
        impl<I: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for $wrapper<I> {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }

            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
            }
        }
    };
}

mod direct;
pub mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;
use tracing::{debug, info, warn, Instrument};

pub use tls::{TlsConfig, TlsError};

use crate::metrics::{ConnectionMetrics, Reason};

/// File descriptors kept for the hub itself (its store, logs, Redis, the listener) when
/// [`ServerOptions::max_connections`] is derived from the open-file limit.
pub const RESERVED_FILES: usize = 64;

/// HTTP/2 receive window of one stream: what a client may send on it (a publish body) before
/// the hub has read it. One default-sized publish (1 MiB) fits.
pub const HTTP2_STREAM_WINDOW_BYTES: u32 = 1024 * 1024;
/// HTTP/2 receive window of a whole connection, shared by its streams.
pub const HTTP2_CONNECTION_WINDOW_BYTES: u32 = 4 * 1024 * 1024;
/// Most response bytes buffered for one HTTP/2 stream beyond what the socket took; a stream
/// that stops being read holds at most this much (plus its queued events).
pub const HTTP2_SEND_BUFFER_BYTES: usize = 128 * 1024;

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// How long a client may take to send its request headers (default 10 s). The same limit
    /// applies to the TLS handshake, and to the first bytes of a plain connection (before it
    /// is known whether it speaks HTTP/1.1 or HTTP/2).
    pub header_read_timeout: Duration,
    /// How long one write to a client may stay blocked before the connection is dropped
    /// (default 30 s; `--dispatch-timeout`, Mercure's `dispatch_timeout`). This is what finally
    /// closes a subscriber that stopped reading.
    pub dispatch_timeout: Duration,
    /// How long shutdown waits for open connections to finish before dropping them (default 5 s).
    pub shutdown_timeout: Duration,
    /// Largest request head (request line and headers), in bytes (default 64 KiB); for HTTP/2
    /// the largest header list.
    pub max_header_bytes: usize,
    /// Serve TLS (HTTP/2 and HTTP/1.1 by ALPN) with this certificate; `None` (the default):
    /// plain HTTP/1.1, and HTTP/2 with prior knowledge.
    pub tls: Option<TlsConfig>,
    /// Most streams (subscriptions and requests) open at once on one HTTP/2 connection
    /// (default 256); a browser queues the ones above it.
    pub http2_max_concurrent_streams: u32,
    /// Idle time before the hub PINGs an HTTP/2 peer; a peer that does not answer within as
    /// long again is disconnected (default 20 s; zero disables).
    pub http2_keep_alive_interval: Duration,
    /// Most client connections open at once; more are refused at once (`503`). `0` (the
    /// default): the open-file limit less [`RESERVED_FILES`].
    pub max_connections: usize,
    /// Most connections open at once from one IP address; more are refused at once (`429`).
    /// `0` (the default): no limit. Behind a reverse proxy every client shares the proxy's
    /// address: leave it off there and limit at the proxy.
    pub max_connections_per_ip: usize,
    /// Where connection figures go (the hub's [`crate::metrics::Metrics::connections`]); unregistered
    /// handles by default.
    pub metrics: ConnectionMetrics,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            dispatch_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(5),
            max_header_bytes: 64 * 1024,
            tls: None,
            http2_max_concurrent_streams: 256,
            http2_keep_alive_interval: Duration::from_secs(20),
            max_connections: 0,
            max_connections_per_ip: 0,
            metrics: ConnectionMetrics::default(),
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// [`ServerOptions::max_connections`] reached.
    Total,
    /// [`ServerOptions::max_connections_per_ip`] reached for this address.
    PerAddress,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Self::Total => "total",
            Self::PerAddress => "per_address",
        }
    }

    /// The whole HTTP/1.1 response sent before closing.
    fn response(self) -> &'static [u8] {
        match self {
            Self::Total => {
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
                  retry-after: 5\r\nconnection: close\r\ncontent-length: 51\r\n\r\n\
                  the hub has too many open connections; retry later\n"
            }
            Self::PerAddress => {
                b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain; charset=utf-8\r\n\
                  retry-after: 5\r\nconnection: close\r\ncontent-length: 56\r\n\r\n\
                  too many open connections from your address; close some\n"
            }
        }
    }
}

/// The connection limits and the connections they count.
struct ConnectionLimits {
    max_total: usize,
    max_per_ip: usize,
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    metrics: ConnectionMetrics,
}

impl ConnectionLimits {
    fn new(options: &ServerOptions) -> Self {
        let max_total = match options.max_connections {
            0 => rlimit::getrlimit(rlimit::Resource::NOFILE)
                .map(|(soft, _)| usize::try_from(soft).unwrap_or(usize::MAX))
                .unwrap_or(1024)
                .saturating_sub(RESERVED_FILES)
                .max(1),
            n => n,
        };
        Self {
            max_total,
            max_per_ip: options.max_connections_per_ip,
            open: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            metrics: options.metrics.clone(),
        }
    }

    /// Counts a new connection from `ip`, or says which limit refuses it.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, Refusal> {
        // Only the accept loop admits, so this check and the increment below cannot race.
        if self.open.load(Ordering::Acquire) >= self.max_total {
            return Err(Refusal::Total);
        }
        let ip = ip.to_canonical();
        if self.max_per_ip > 0 {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
            let count = per_ip.entry(ip).or_insert(0);
            if *count >= self.max_per_ip {
                return Err(Refusal::PerAddress);
            }
            *count += 1;
        }
        self.open.fetch_add(1, Ordering::AcqRel);
        self.metrics.open.inc();
        Ok(ConnectionSlot {
            limits: Arc::clone(self),
            ip,
        })
    }

    fn refused(&self, refusal: Refusal) {
        self.metrics
            .rejected
            .get_or_create(&Reason {
                reason: refusal.label(),
            })
            .inc();
    }
}

/// One counted connection; dropping it (when the connection's task ends) frees its place.
struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let limits = &self.limits;
        limits.open.fetch_sub(1, Ordering::AcqRel);
        limits.metrics.open.dec();
        if limits.max_per_ip > 0 {
            let mut per_ip = limits.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = per_ip.get_mut(&self.ip) {
                *count -= 1;
                if *count == 0 {
                    per_ip.remove(&self.ip);
                }
            }
        }
    }
}

/// Most refused connections being answered at once; beyond it they are closed without an
/// answer, so refusing never costs more than this many extra descriptors.
const MAX_REFUSALS_IN_FLIGHT: usize = 256;

/// Answers a refused plain connection and closes it: the response is written without reading
/// the request, then whatever the client sends is read (at most 64 KiB, for at most a second)
/// so that closing does not reset the connection before the client read the answer.
async fn refuse(stream: TcpStream, refusal: Refusal) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = stream;
    let answered = async {
        stream.write_all(refusal.response()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut read = 0;
        while read < 64 * 1024 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => read += n,
            }
        }
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), answered).await;
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

/// The connection builders, configured once and shared by every connection task.
///
/// The protocol is known before a builder is picked (ALPN over TLS; the HTTP/2 preface sniffed
/// on plain connections, `starts_with_preface`), so each connection gets hyper's own HTTP/1.1 or
/// HTTP/2 connection, not hyper-util's auto builder: the auto builder's connection is one type
/// sized for HTTP/2's state, and every idle HTTP/1.1 stream paid for it (about 7 KB more per
/// open stream, measured with `bench/idle_memory.py`).
struct Protocols {
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

impl Protocols {
    fn new(options: &ServerOptions) -> Self {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(options.header_read_timeout)
            .max_buf_size(options.max_header_bytes.max(8192))
            .keep_alive(true);
        let keep_alive = (!options.http2_keep_alive_interval.is_zero())
            .then_some(options.http2_keep_alive_interval);
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(options.http2_max_concurrent_streams)
            .initial_stream_window_size(HTTP2_STREAM_WINDOW_BYTES)
            .initial_connection_window_size(HTTP2_CONNECTION_WINDOW_BYTES)
            .max_send_buf_size(HTTP2_SEND_BUFFER_BYTES)
            .max_header_list_size(u32::try_from(options.max_header_bytes).unwrap_or(u32::MAX))
            .keep_alive_interval(keep_alive)
            .keep_alive_timeout(options.http2_keep_alive_interval);
        Self { http1, http2 }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets open
/// connections finish for up to [`ServerOptions::shutdown_timeout`], and returns.
///
/// SSE responses never finish by themselves: cancel the hub (its shutdown token) together with
/// `shutdown` so that every stream ends and its connection can close.
///
/// With [`ServerOptions::tls`], the certificate files are checked for changes while serving
/// ([`TlsConfig::watch_files`]).
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
    let protocols = Arc::new(Protocols::new(&options));
    let limits = Arc::new(ConnectionLimits::new(&options));
    info!(
        max_connections = limits.max_total,
        max_connections_per_ip = limits.max_per_ip,
        "connection limits"
    );
    let refusals_in_flight = Arc::new(AtomicUsize::new(0));
    // Ends with this function (dropped, hence aborted, on every return path).
    let _reload = options.tls.clone().map(|tls| {
        let task = tls
            .watch_files()
            .instrument(tracing::info_span!("tls_certificate_reload"));
        AbortOnDrop(tokio::spawn(task))
    });
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
        let slot = match limits.admit(remote.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                limits.refused(refusal);
                debug!(%remote, limit = refusal.label(), "connection refused: limit reached");
                let answering = refusals_in_flight.fetch_add(1, Ordering::AcqRel);
                if options.tls.is_none() && answering < MAX_REFUSALS_IN_FLIGHT {
                    let in_flight = Arc::clone(&refusals_in_flight);
                    tokio::spawn(async move {
                        refuse(stream, refusal).await;
                        in_flight.fetch_sub(1, Ordering::AcqRel);
                    });
                } else {
                    refusals_in_flight.fetch_sub(1, Ordering::AcqRel);
                }
                continue;
            }
        };
        // Events are small and latency matters; coalescing happens in the stream instead.
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%error, "set_nodelay failed");
        }
        let connection = Connection {
            remote,
            app: app.clone(),
            protocols: Arc::clone(&protocols),
            // Taken now, so that graceful shutdown also waits for connections still in their
            // TLS handshake.
            watcher: graceful.watcher(),
            _slot: slot,
        };
        match &options.tls {
            None => {
                let io = TimedIo::new(stream, options.dispatch_timeout);
                connections.spawn(connection.serve_plain(
                    io,
                    options.header_read_timeout,
                    options.max_header_bytes.max(8192),
                ));
            }
            Some(tls) => {
                let io = TimedIo::new(stream, options.dispatch_timeout);
                connections.spawn(connection.serve_tls(
                    io,
                    tls.acceptor().clone(),
                    options.header_read_timeout,
                ));
            }
        }
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

/// Whether the client's first bytes are the HTTP/2 preface, read without consuming them. An
/// HTTP/1.1 request line differs from it within its first bytes; only a client that sends part
/// of the preface and pauses makes this wait (bounded by the caller's timeout).
async fn starts_with_preface(stream: &TcpStream) -> io::Result<bool> {
    let mut buf = [0u8; 24];
    debug_assert_eq!(buf.len(), HTTP2_PREFACE.len());
    loop {
        stream.readable().await?;
        let n = stream.peek(&mut buf).await?;
        if n == 0 || buf[..n] != HTTP2_PREFACE[..n] {
            return Ok(false);
        }
        if n == HTTP2_PREFACE.len() {
            return Ok(true);
        }
        // A prefix of the preface so far: the rest is on its way.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What the first bytes of a plain connection turned out to be.
enum Greeting {
    /// The HTTP/2 preface (nothing consumed).
    Http2(TimedIo),
    /// An HTTP/1.1 subscription, read completely.
    Subscription(TimedIo, Box<http::Request<()>>),
    /// Another HTTP/1.x request: the bytes read so far.
    Other(TimedIo, bytes::Bytes),
    /// Closed, timed out or failed before a request: why, for the log.
    Failed(String),
}

/// Finds out what a plain connection speaks, and reads its first HTTP/1.1 request head, within
/// `timeout` for each.
async fn greet(mut io: TimedIo, timeout: Duration, max_head_bytes: usize) -> Greeting {
    match tokio::time::timeout(timeout, starts_with_preface(io.stream())).await {
        Ok(Ok(true)) => return Greeting::Http2(io),
        Ok(Ok(false)) => {}
        Ok(Err(error)) => return Greeting::Failed(format!("connection failed: {error}")),
        Err(_) => return Greeting::Failed("no request within the header read timeout".into()),
    }
    match tokio::time::timeout(timeout, direct::read_first_head(&mut io, max_head_bytes)).await {
        Ok(Ok(direct::FirstRequest::Subscription(request))) => {
            Greeting::Subscription(io, Box::new(request))
        }
        Ok(Ok(direct::FirstRequest::Other(read))) => Greeting::Other(io, read),
        Ok(Ok(direct::FirstRequest::Closed)) => Greeting::Failed("closed before a request".into()),
        Ok(Err(error)) => Greeting::Failed(format!("connection failed: {error}")),
        Err(_) => Greeting::Failed("no request within the header read timeout".into()),
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One accepted connection, before its protocol is known.
struct Connection {
    remote: SocketAddr,
    app: Router,
    protocols: Arc<Protocols>,
    /// Tells the connection when the server shuts down, and keeps the shutdown waiting for it.
    watcher: Watcher,
    /// Its place under the connection limits, freed when the connection's task ends.
    _slot: ConnectionSlot,
}

impl Connection {
    /// A plain connection: HTTP/2 if it starts with the preface, else HTTP/1.1; either within
    /// `greeting_timeout`. Over HTTP/1.1, a first request that is a subscription is served by
    /// [`direct`] (no hyper buffers held for the life of the stream), anything else by hyper.
    ///
    /// This future lives as long as the connection, so its size is memory per open stream: the
    /// greeting and hyper's connections are boxed, and only a subscription's writer is held in
    /// place (`connection_state_stays_small`).
    async fn serve_plain(self, io: TimedIo, greeting_timeout: Duration, max_head_bytes: usize) {
        let remote = self.remote;
        match Box::pin(greet(io, greeting_timeout, max_head_bytes)).await {
            Greeting::Http2(io) => {
                let io = TokioIo::new(GreetingTimeout::new(io, greeting_timeout));
                let connection = self.protocols.http2.serve_connection(io, self.service());
                if let Err(error) = Box::pin(self.watcher.watch(connection)).await {
                    debug!(%remote, %error, "HTTP/2 connection ended with an error");
                }
            }
            Greeting::Subscription(io, request) => {
                let service = self.service();
                // Held until the stream ends, so that graceful shutdown waits for it.
                let _watcher = self.watcher;
                direct::serve_subscription(io, *request, service).await;
            }
            Greeting::Other(io, read) => {
                let io = TokioIo::new(direct::Rewind::new(io, read));
                let connection = self.protocols.http1.serve_connection(io, self.service());
                if let Err(error) = Box::pin(self.watcher.watch(connection)).await {
                    debug!(%remote, %error, "connection ended with an error");
                }
            }
            Greeting::Failed(why) => debug!(%remote, "{why}"),
        }
    }

    /// A TLS connection: the handshake, then the protocol ALPN chose; both within
    /// `handshake_timeout` (each).
    async fn serve_tls(
        self,
        io: TimedIo,
        acceptor: tokio_rustls::TlsAcceptor,
        handshake_timeout: Duration,
    ) {
        let remote = self.remote;
        let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(io)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                // Plain HTTP sent to the TLS port, a client that does not trust the
                // certificate, a scanner: nothing to answer, and not the hub's problem.
                debug!(%remote, %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                debug!(%remote, "TLS handshake timed out");
                return;
            }
        };
        let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
        let protocols = Arc::clone(&self.protocols);
        let service = self.service();
        let io = TokioIo::new(GreetingTimeout::new(stream, handshake_timeout));
        let ended = if http2 {
            // Boxed, so that this task's state is sized for HTTP/1.1.
            let connection = protocols.http2.serve_connection(io, service);
            Box::pin(self.watcher.watch(connection)).await
        } else {
            let connection = protocols.http1.serve_connection(io, service);
            self.watcher.watch(connection).await
        };
        if let Err(error) = ended {
            debug!(%remote, %error, http2, "TLS connection ended with an error");
        }
    }

    /// The router as a hyper service, with the peer address for `ConnectInfo`.
    fn service(&self) -> RouterService {
        RouterService {
            app: self.app.clone(),
            remote: self.remote,
        }
    }
}

/// The router as a hyper service for one connection.
#[derive(Clone)]
struct RouterService {
    app: Router,
    /// Inserted into each request as `ConnectInfo<SocketAddr>`.
    remote: SocketAddr,
}

impl RouterService {
    /// Routes one request.
    fn route(
        &self,
        mut request: http::Request<axum::body::Body>,
    ) -> tower::util::Oneshot<Router, http::Request<axum::body::Body>> {
        request
            .extensions_mut()
            .insert(ConnectInfo::<SocketAddr>(self.remote));
        self.app.clone().oneshot(request)
    }
}

impl hyper::service::Service<http::Request<Incoming>> for RouterService {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = tower::util::Oneshot<Router, http::Request<axum::body::Body>>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        self.route(request.map(axum::body::Body::new))
    }
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
    /// The TCP stream inside.
    pub fn stream(&self) -> &TcpStream {
        &self.inner
    }

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

/// The HTTP/2 connection preface (RFC 9113 §3.4), which a client speaking HTTP/2 sends first.
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Fails reads with `TimedOut` when a connection has not shown its protocol within a timeout:
/// the first byte that is not the HTTP/2 preface (HTTP/1.x), or the whole preface (HTTP/2).
///
/// hyper's header read timeout starts once hyper reads an HTTP/1 request, and its HTTP/2
/// keep-alive PINGs once the preface has arrived; before that, a client that connects and
/// sends nothing would hold its connection forever. After the greeting this wrapper only
/// forwards.
struct GreetingTimeout<I> {
    inner: I,
    /// Until the protocol is known: the deadline and how much of the preface has matched.
    pending: Option<(Pin<Box<Sleep>>, usize)>,
}

impl<I> GreetingTimeout<I> {
    /// Wraps `inner`; a zero `timeout` disables the limit.
    fn new(inner: I, timeout: Duration) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain connection's task lives as long as its stream: its state is memory per open
    /// stream (the direct path boxes the router's and hyper's futures for this reason).
    #[tokio::test]
    async fn connection_state_stays_small() {
        let listener = bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (stream, remote) = listener.accept().await.expect("accept");
        let graceful = GracefulShutdown::new();
        let connection = Connection {
            remote,
            app: Router::new(),
            protocols: Arc::new(Protocols::new(&ServerOptions::default())),
            watcher: graceful.watcher(),
            _slot: Arc::new(ConnectionLimits::new(&ServerOptions::default()))
                .admit(remote.ip())
                .expect("a place"),
        };
        let io = TimedIo::new(stream, Duration::from_secs(1));
        let serving = connection.serve_plain(io, Duration::from_secs(1), 8192);
        let size = std::mem::size_of_val(&serving);
        eprintln!("plain connection state: {size} bytes");
        assert!(size <= 1024, "{size} bytes");
    }

    #[test]
    fn refusal_responses_are_well_formed() {
        for refusal in [Refusal::Total, Refusal::PerAddress] {
            let text = std::str::from_utf8(refusal.response()).expect("ascii");
            let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|n| n.parse().ok())
                .expect("content-length");
            assert_eq!(length, body.len(), "{text}");
        }
    }
}
