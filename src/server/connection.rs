//! One accepted connection: what its first bytes speak (the HTTP/2 preface, an HTTP/1.1
//! subscription, another request), and serving it — plain or over TLS — with hyper or, for a
//! plain HTTP/1.1 subscription, with [`super::direct`]; the router as a hyper service. Every
//! connection hyper serves closes through [`Linger`], so that an early answer is read.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tower::ServiceExt;
use tracing::debug;

use super::direct;
use super::io::{GreetingTimeout, TimedIo};
use super::limits::ConnectionSlot;
use super::linger::{Linger, TrackedBody, UnreadBody};
use super::Protocols;

/// The HTTP/2 connection preface (RFC 9113 §3.4), which a client speaking HTTP/2 sends first.
pub(super) const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

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

/// Finds out what a plain connection speaks, and reads its first HTTP/1.1 request head (a `GET`
/// of `subscribe_path` is read whole), within `timeout` for each.
async fn greet(
    mut io: TimedIo,
    timeout: Duration,
    max_head_bytes: usize,
    subscribe_path: &[u8],
) -> Greeting {
    match tokio::time::timeout(timeout, starts_with_preface(io.stream())).await {
        Ok(Ok(true)) => return Greeting::Http2(io),
        Ok(Ok(false)) => {}
        Ok(Err(error)) => return Greeting::Failed(format!("connection failed: {error}")),
        Err(_) => return Greeting::Failed("no request within the header read timeout".into()),
    }
    let reading = direct::read_first_head(&mut io, max_head_bytes, subscribe_path);
    match tokio::time::timeout(timeout, reading).await {
        Ok(Ok(direct::FirstRequest::Subscription(request))) => {
            Greeting::Subscription(io, Box::new(request))
        }
        Ok(Ok(direct::FirstRequest::Other(read))) => Greeting::Other(io, read),
        Ok(Ok(direct::FirstRequest::Closed)) => Greeting::Failed("closed before a request".into()),
        Ok(Err(error)) => Greeting::Failed(format!("connection failed: {error}")),
        Err(_) => Greeting::Failed("no request within the header read timeout".into()),
    }
}

/// One accepted connection, before its protocol is known.
pub(super) struct Connection {
    pub(super) remote: SocketAddr,
    pub(super) app: Router,
    pub(super) protocols: Arc<Protocols>,
    /// Tells the connection when the server shuts down, and keeps the shutdown waiting for it.
    pub(super) watcher: Watcher,
    /// Its place under the connection limits, freed when the connection's task ends.
    pub(super) _slot: ConnectionSlot,
}

impl Connection {
    /// A plain connection: HTTP/2 if it starts with the preface, else HTTP/1.1; either within
    /// `greeting_timeout`. Over HTTP/1.1, a first request that is a subscription is served by
    /// [`direct`] (no hyper buffers held for the life of the stream), anything else by hyper.
    ///
    /// This future lives as long as the connection, so its size is memory per open stream: the
    /// greeting and hyper's connections are boxed, and only a subscription's writer is held in
    /// place (`connection_state_stays_small`).
    pub(super) async fn serve_plain(
        self,
        io: TimedIo,
        greeting_timeout: Duration,
        max_head_bytes: usize,
    ) {
        let remote = self.remote;
        let subscribe_path = &self.protocols.subscribe_path;
        match Box::pin(greet(io, greeting_timeout, max_head_bytes, subscribe_path)).await {
            Greeting::Http2(io) => {
                // HTTP/2 refuses a request body with RST_STREAM, not by closing: nothing to
                // mark, but the connection's own close still lingers when bytes are waiting.
                let io = Linger::new(io, self.protocols.linger, None);
                let io = TokioIo::new(GreetingTimeout::new(io, greeting_timeout));
                let connection = self
                    .protocols
                    .http2
                    .serve_connection(io, self.service(None));
                if let Err(error) = Box::pin(self.watcher.watch(connection)).await {
                    debug!(%remote, %error, "HTTP/2 connection ended with an error");
                }
            }
            Greeting::Subscription(io, request) => {
                let service = self.service(None);
                // Held until the stream ends, so that graceful shutdown waits for it.
                let _watcher = self.watcher;
                direct::serve_subscription(io, *request, service).await;
            }
            Greeting::Other(io, read) => {
                let connection =
                    serve_http1(&self.protocols, io, read, self.app.clone(), self.remote);
                if let Err(error) = Box::pin(self.watcher.watch(connection)).await {
                    debug!(%remote, %error, "connection ended with an error");
                }
            }
            Greeting::Failed(why) => debug!(%remote, "{why}"),
        }
    }

    /// A TLS connection: the handshake, then the protocol ALPN chose; both within
    /// `handshake_timeout` (each).
    pub(super) async fn serve_tls(
        self,
        io: TimedIo,
        acceptor: tokio_rustls::TlsAcceptor,
        handshake_timeout: Duration,
    ) {
        let remote = self.remote;
        // Below TLS: the drain discards raw TLS records, which need no decrypting.
        let unread = UnreadBody::default();
        let io = Linger::new(io, self.protocols.linger, Some(unread.clone()));
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
        let service = self.service((!http2).then_some(unread));
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

    /// The router as a hyper service, with the peer address for `ConnectInfo`, marking
    /// `unread` (HTTP/1) when a request body is left unread.
    fn service(&self, unread: Option<UnreadBody>) -> RouterService {
        RouterService::new(self.app.clone(), self.remote, unread)
    }
}

/// Serves HTTP/1.x with hyper on `io`, whose first bytes `read` were already taken from it:
/// the path of every plain connection that is not a subscription or HTTP/2, and of the
/// `http_server` fuzz target (over an in-memory pipe). Its close lingers ([`Linger`]).
pub(super) fn serve_http1<I>(
    protocols: &Protocols,
    io: I,
    read: bytes::Bytes,
    app: Router,
    remote: SocketAddr,
) -> hyper::server::conn::http1::Connection<TokioIo<direct::Rewind<Linger<I>>>, RouterService>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let unread = UnreadBody::default();
    let io = Linger::new(io, protocols.linger, Some(unread.clone()));
    let io = TokioIo::new(direct::Rewind::new(io, read));
    let service = RouterService {
        app,
        remote,
        unread: Some(unread),
    };
    protocols.http1.serve_connection(io, service)
}

/// The router as a hyper service for one connection.
#[derive(Clone)]
pub(super) struct RouterService {
    app: Router,
    /// Inserted into each request as `ConnectInfo<SocketAddr>`.
    remote: SocketAddr,
    /// HTTP/1: marked when a request body is dropped before its end, so that the connection
    /// lingers when hyper closes it ([`Linger`]). `None` over HTTP/2 and for subscriptions.
    unread: Option<UnreadBody>,
}

impl RouterService {
    /// `app` for one connection from `remote`; `unread` as in [`Connection::service`].
    pub(super) fn new(app: Router, remote: SocketAddr, unread: Option<UnreadBody>) -> Self {
        Self {
            app,
            remote,
            unread,
        }
    }

    /// Routes one request.
    pub(super) fn route(
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
        match &self.unread {
            Some(unread) if !request.body().is_end_stream() => {
                let unread = unread.clone();
                self.route(
                    request.map(|body| axum::body::Body::new(TrackedBody::new(body, unread))),
                )
            }
            _ => self.route(request.map(axum::body::Body::new)),
        }
    }
}
