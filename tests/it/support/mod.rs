//! Test support: a hub served on a port-0 listener, the real binary, an SSE client built on
//! reqwest and our WHATWG parser, and token helpers.

#![allow(dead_code)]

pub mod binary;
pub mod chromium;
pub mod draft08;
pub mod observe;
pub mod postgres;
pub mod redis;
pub mod sse;
pub mod tools;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ssehub::auth::{AuthConfig, Claims, JwtAlgorithm, JwtSigner, JwtVerifier, MercureClaim};
use ssehub::server::ServerOptions;
use ssehub::{CloseReason, HttpConfig, Hub, HubConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use sse::SseClient;

/// The HMAC secret of test hubs.
pub const SECRET: &str = "integration-test-secret-of-at-least-32-bytes";

/// Waits until `condition` holds, checking every 10 ms, for at most `limit`.
pub async fn eventually(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The hub settings of test hubs: the defaults (the keys are HTTP settings, [`http_config`]).
pub fn config() -> HubConfig {
    HubConfig::default()
}

/// The HTTP settings of test hubs: HS256 keys ([`SECRET`]) and anonymous subscribers allowed.
pub fn http_config() -> HttpConfig {
    HttpConfig {
        auth: AuthConfig {
            publisher: Some(JwtVerifier::new(JwtAlgorithm::HS256, SECRET).expect("key")),
            subscriber: Some(JwtVerifier::new(JwtAlgorithm::HS256, SECRET).expect("key")),
            anonymous: true,
        },
        ..HttpConfig::default()
    }
}

/// Signs claims with [`SECRET`].
pub fn sign(claims: &Claims) -> String {
    JwtSigner::new(JwtAlgorithm::HS256, SECRET)
        .expect("key")
        .sign(claims)
        .expect("sign")
}

/// A publisher token for `selectors`.
pub fn publisher_token(selectors: &[&str]) -> String {
    sign(&Claims {
        exp: None,
        mercure: Some(MercureClaim {
            publish: Some(selectors.iter().map(|s| s.to_string()).collect()),
            ..MercureClaim::default()
        }),
    })
}

/// A subscriber token for private updates of `selectors`, expiring after `lifetime` if given.
pub fn subscriber_token(selectors: &[&str], lifetime: Option<Duration>) -> String {
    let exp = lifetime
        .map(|d| (SystemTime::now().duration_since(UNIX_EPOCH).expect("clock") + d).as_secs());
    sign(&Claims {
        exp,
        mercure: Some(MercureClaim {
            subscribe: Some(selectors.iter().map(|s| s.to_string()).collect()),
            ..MercureClaim::default()
        }),
    })
}

/// Close events recorded by the hub's `on_close` hook.
pub type Closes = Arc<Mutex<Vec<(u64, CloseReason)>>>;

/// A hub in this process with no server, for tests on paused time
/// (`#[tokio::test(start_paused = true)]`). Its streams are read straight from
/// [`Hub::subscribe`] or from the body of a router response (`tower::ServiceExt::oneshot`),
/// with no socket in between: whenever the hub waits, the runtime is idle and tokio moves its
/// clock to the next timer, so an hour of lifetime takes no time and happens at an exact instant.
/// Returns the hub and the record of its close hook.
pub async fn hub_without_server(config: HubConfig) -> (Hub, Closes) {
    let closes: Closes = Arc::default();
    let c = closes.clone();
    let hub = Hub::builder(config)
        .on_close(move |info, reason, _| c.lock().expect("lock").push((info.id, reason)))
        .build()
        .await
        .expect("hub");
    (hub, closes)
}

/// The reasons recorded in `closes`, in order.
pub fn reasons(closes: &Closes) -> Vec<CloseReason> {
    closes
        .lock()
        .expect("lock")
        .iter()
        .map(|(_, r)| *r)
        .collect()
}

/// A hub served in this process on 127.0.0.1:0.
pub struct TestHub {
    pub hub: Hub,
    pub addr: SocketAddr,
    /// `http://addr/.well-known/mercure`
    pub url: String,
    pub opens: Arc<Mutex<Vec<u64>>>,
    pub closes: Closes,
    shutdown: CancellationToken,
    server: Option<JoinHandle<()>>,
}

impl TestHub {
    /// `config` with the test HTTP settings ([`http_config`]) and default server options.
    pub async fn start(config: HubConfig) -> Self {
        Self::start_full(config, http_config(), ServerOptions::default()).await
    }

    /// `config` and `http` (keys, origins, limits of the routes), default server options.
    pub async fn start_http(config: HubConfig, http: HttpConfig) -> Self {
        Self::start_full(config, http, ServerOptions::default()).await
    }

    /// `config` and `options` with the test HTTP settings ([`http_config`]).
    pub async fn start_with(config: HubConfig, options: ServerOptions) -> Self {
        Self::start_full(config, http_config(), options).await
    }

    /// A hub on the given history store (durable, Redis...), with the test HTTP settings.
    pub async fn start_on(config: HubConfig, history: Arc<dyn ssehub::history::History>) -> Self {
        Self::launch(
            Hub::builder(config).history(history),
            http_config(),
            ServerOptions::default(),
        )
        .await
    }

    /// A hub from `builder` (a webhook, a history...), with the test HTTP settings.
    pub async fn start_built(builder: ssehub::HubBuilder) -> Self {
        Self::launch(builder, http_config(), ServerOptions::default()).await
    }

    /// Every setting given.
    pub async fn start_full(config: HubConfig, http: HttpConfig, options: ServerOptions) -> Self {
        Self::launch(Hub::builder(config), http, options).await
    }

    async fn launch(builder: ssehub::HubBuilder, http: HttpConfig, options: ServerOptions) -> Self {
        let shutdown = CancellationToken::new();
        let opens: Arc<Mutex<Vec<u64>>> = Arc::default();
        let closes: Closes = Arc::default();
        let (o, c) = (opens.clone(), closes.clone());
        let hub = builder
            .shutdown(shutdown.child_token())
            .on_open(move |info| o.lock().expect("lock").push(info.id))
            .on_close(move |info, reason, _| c.lock().expect("lock").push((info.id, reason)))
            .build()
            .await
            .expect("hub");
        let listener = ssehub::server::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = ssehub::http::router(hub.clone(), http);
        let token = shutdown.clone();
        let server = tokio::spawn(async move {
            ssehub::server::serve(listener, app, options, token.cancelled_owned())
                .await
                .expect("serve");
        });
        Self {
            hub,
            addr,
            url: format!("http://{addr}/.well-known/mercure"),
            opens,
            closes,
            shutdown,
            server: Some(server),
        }
    }

    /// The reasons of every close so far.
    pub fn close_reasons(&self) -> Vec<CloseReason> {
        self.closes
            .lock()
            .expect("lock")
            .iter()
            .map(|(_, r)| *r)
            .collect()
    }

    /// Publishes a form with a `*` publisher token; returns status and body.
    pub async fn publish(&self, form: &[(&str, &str)]) -> (u16, String) {
        publish_with(&self.url, &publisher_token(&["*"]), form).await
    }

    /// Opens a subscription to `query` (e.g. `topic=a&topic=b`).
    pub async fn subscribe(&self, query: &str) -> SseClient {
        SseClient::open(&format!("{}?{query}", self.url), &[]).await
    }

    /// Stops the server and the hub and waits for both.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.expect("server task");
        }
        self.hub.shutdown().await;
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Publishes `form` to `url` with `token`.
pub async fn publish_with(url: &str, token: &str, form: &[(&str, &str)]) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .form(form)
        .send()
        .await
        .expect("publish request");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// Serializes the tests that open thousands of sockets: they share this process's open-file
/// limit. Also raises the soft limit to the hard one.
pub async fn heavy() -> tokio::sync::MutexGuard<'static, ()> {
    static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let guard = HEAVY.lock().await;
    rlimit::increase_nofile_limit(u64::MAX).expect("raise the open-file limit");
    guard
}

/// Opens `count` raw subscriptions to `addr` for `query`, at most 250 connecting at once,
/// and returns them after each got its `200` head.
pub async fn open_raw_streams(
    addr: SocketAddr,
    query: &str,
    count: usize,
) -> Vec<tokio::net::TcpStream> {
    open_raw_streams_at(addr, &format!("/.well-known/mercure?{query}"), count).await
}

/// Like [`open_raw_streams`], for any `target` (path and query), such as a router nested under
/// a prefix.
pub async fn open_raw_streams_at(
    addr: SocketAddr,
    target: &str,
    count: usize,
) -> Vec<tokio::net::TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut streams = Vec::with_capacity(count);
    let mut connecting = Vec::new();
    for i in 0..count {
        let request = request.clone();
        connecting.push(tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            stream.write_all(request.as_bytes()).await.expect("request");
            let mut head = [0u8; 512];
            let n = stream.read(&mut head).await.expect("head");
            assert!(
                head[..n].starts_with(b"HTTP/1.1 200"),
                "{:?}",
                String::from_utf8_lossy(&head[..n])
            );
            stream
        }));
        if connecting.len() == 250 || i + 1 == count {
            for task in connecting.drain(..) {
                streams.push(task.await.expect("connect task"));
            }
        }
    }
    streams
}

/// A field of `/proc/PID/status` in KiB (`VmRSS:`, `VmHWM:`).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("field")
}

/// The value of the sample `name` (with its labels, if any, as written) in OpenMetrics `text`,
/// or `None` when the page does not have it (see [`observe::MetricValues::get`]: an unwritten
/// label of a declared family is 0, a missing metric is `None`).
pub fn metric(text: &str, name: &str) -> Option<u64> {
    observe::MetricValues::parse(text)
        .get(name)
        .map(|value| value as u64)
}

/// Like [`metric`], failing the test (with the page) when the metric is missing.
pub fn expect_metric(text: &str, name: &str) -> u64 {
    metric(text, name).unwrap_or_else(|| panic!("metric {name} is not on the page:\n{text}"))
}
