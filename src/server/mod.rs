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
//! Refusals are readable: a request answered before its body was read (`413`, `401`) closes
//! its connection through `linger`, which drains what the client still sends for up to
//! [`ServerOptions::lingering_time`] before closing, so that the client reads the answer
//! instead of a reset.
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

mod connection;
mod direct;
mod io;
mod limits;
mod linger;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::{debug, info, warn, Instrument};

pub use io::TimedIo;
pub use linger::LingerSettings;
pub use tls::{TlsConfig, TlsError};

use connection::{Connection, RouterService};
use limits::{refuse, ConnectionLimits, MAX_REFUSALS_IN_FLIGHT};

use crate::metrics::ConnectionMetrics;

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
    /// When the hub closes a connection whose client may still be sending (a request refused
    /// before its body was read), the longest time it keeps reading and discarding what comes,
    /// so the client reads the answer instead of a reset (default 30 s, nginx's
    /// `lingering_time`; zero: close at once).
    pub lingering_time: Duration,
    /// While lingering, the longest pause between two reads before the client is taken to have
    /// stopped (default 5 s, nginx's `lingering_timeout`; zero: only the lingering time
    /// applies).
    pub lingering_timeout: Duration,
    /// Where connection figures go (the hub's [`crate::metrics::Metrics::connections`]); unregistered
    /// handles by default.
    pub metrics: ConnectionMetrics,
    /// The path where the router subscribes (default [`crate::http::MERCURE_PATH`]): a plain
    /// HTTP/1.1 `GET` of it is read by the server itself, and if the router's answer carries
    /// [`crate::http::EventStream`], the stream is written without hyper's per-connection
    /// buffers (about 3.7 KB per idle stream instead of 12). An application that nests
    /// [`crate::http::router`] under a prefix sets the full path here
    /// (`/events/.well-known/mercure`); with the wrong path its streams still work, through
    /// hyper. It must start with `/` and hold no query, fragment, space or control character
    /// ([`serve`] refuses it otherwise).
    pub subscribe_path: String,
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
            lingering_time: LingerSettings::default().time,
            lingering_timeout: LingerSettings::default().timeout,
            metrics: ConnectionMetrics::default(),
            subscribe_path: crate::http::MERCURE_PATH.to_owned(),
        }
    }
}

/// A [`ServerOptions::subscribe_path`] that no request line could name.
#[derive(Debug, thiserror::Error)]
#[error(
    "subscribe_path {path:?} is not a path: it must start with `/` and hold no `?`, `#`, space \
     or control character"
)]
pub struct InvalidSubscribePath {
    /// The refused value.
    pub path: String,
}

impl ServerOptions {
    /// Checks the options that could be wrong whatever the listener: today the
    /// [`subscribe_path`](Self::subscribe_path).
    ///
    /// # Errors
    /// [`InvalidSubscribePath`].
    pub fn validate(&self) -> Result<(), InvalidSubscribePath> {
        let path = &self.subscribe_path;
        let valid = path.starts_with('/')
            && !path
                .bytes()
                .any(|b| b == b'?' || b == b'#' || b == b' ' || b.is_ascii_control());
        if valid {
            Ok(())
        } else {
            Err(InvalidSubscribePath { path: path.clone() })
        }
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
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
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
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
    /// How a closing connection drains (`linger`).
    linger: LingerSettings,
    /// [`ServerOptions::subscribe_path`]: the plain HTTP/1.1 `GET`s that [`direct`] reads.
    subscribe_path: Box<[u8]>,
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
        let linger = LingerSettings {
            time: options.lingering_time,
            timeout: options.lingering_timeout,
        };
        Self {
            http1,
            http2,
            linger,
            subscribe_path: options.subscribe_path.as_bytes().into(),
        }
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
/// Options that [`ServerOptions::validate`] refuses (`InvalidInput`, before anything is
/// served). Accept errors (such as running out of file descriptors) are logged and retried.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    options
        .validate()
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
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

/// Serves one plain HTTP/1.x connection on `io` as the accept loop does, less the HTTP/2
/// preface check: the first request head is read here ([`direct::read_first_head`]); a
/// subscription is answered and written by [`direct`], anything else by hyper with the bytes
/// read put back. Returns when the connection ends. For the `http_server` fuzz target, which
/// drives it through an in-memory pipe.
#[cfg(feature = "fuzzing")]
pub(crate) async fn serve_plain_for_fuzzing<I>(io: I, app: Router, options: &ServerOptions)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let protocols = Protocols::new(options);
    let remote = SocketAddr::from(([127, 0, 0, 1], 1));
    let mut io = TimedIo::new(io, options.dispatch_timeout);
    let reading =
        direct::read_first_head(&mut io, options.max_header_bytes, &protocols.subscribe_path);
    match tokio::time::timeout(options.header_read_timeout, reading).await {
        Ok(Ok(direct::FirstRequest::Subscription(request))) => {
            direct::serve_subscription(io, request, RouterService::new(app, remote, None)).await;
        }
        Ok(Ok(direct::FirstRequest::Other(read))) => {
            let connection = connection::serve_http1(&protocols, io, read, app, remote);
            if let Err(error) = connection.await {
                debug!(%error, "fuzzed connection ended with an error");
            }
        }
        Ok(Ok(direct::FirstRequest::Closed)) | Ok(Err(_)) | Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpStream;

    use super::limits::Refusal;
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

    #[tokio::test]
    async fn a_subscribe_path_that_is_not_a_path_is_refused_before_serving() {
        assert!(ServerOptions::default().validate().is_ok());
        let nested = ServerOptions {
            subscribe_path: "/events/.well-known/mercure".into(),
            ..ServerOptions::default()
        };
        assert!(nested.validate().is_ok());
        for bad in [
            "",
            "events/.well-known/mercure",
            "/a?topic=t",
            "/a#b",
            "/a b",
            "/a\r\n",
        ] {
            let options = ServerOptions {
                subscribe_path: bad.into(),
                ..ServerOptions::default()
            };
            assert!(options.validate().is_err(), "{bad:?}");
            let listener = bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
            // Refused at once: the shutdown future never resolves.
            let serving = serve(listener, Router::new(), options, std::future::pending());
            let served = tokio::time::timeout(Duration::from_secs(5), serving).await;
            let error = served.expect("refused, not served").expect_err(bad);
            assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput, "{bad:?}");
            assert!(error.to_string().contains("subscribe_path"), "{error}");
        }
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
