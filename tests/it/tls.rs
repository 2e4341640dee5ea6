//! HTTP/2 and TLS on the real binary: many subscriptions over one HTTP/2 connection (over TLS
//! by ALPN, and cleartext with prior knowledge), the slow-subscriber policy per HTTP/2 stream,
//! bad TLS input, a certificate replaced on disk while the hub runs, a refused 20 MiB publish
//! whose `413` is read (lingering close below TLS), and ten `EventSource`s of
//! a headless Chromium over HTTPS (Debian's `chromium`, driven over DevTools).
//!
//! Certificates are made here with rcgen: a test CA, and leaf certificates for `localhost`
//! signed by it, which clients trust through the CA alone.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, PublicKeyData, SerialNumber,
};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::support::binary::BinaryHub;
use crate::support::chromium::Chromium;
use crate::support::{publisher_token, SECRET};

const TOPIC: &str = "https://example.com/h2";
const STREAMS: usize = 50;

/// A test certificate authority that signs `localhost` certificates.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
}

/// A leaf certificate and its key, as PEM, and the DER a client sees.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
    /// The DER SubjectPublicKeyInfo, which Chromium can be told to trust.
    spki: Vec<u8>,
}

impl TestCa {
    fn new() -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "ssehub test CA");
        let cert = params.self_signed(&key).expect("CA certificate");
        Self {
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `localhost` and 127.0.0.1 named `common_name`, with `serial`.
    fn leaf(&self, common_name: &str, serial: u64) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.serial_number = Some(SerialNumber::from(serial));
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            spki: key.subject_public_key_info(),
        }
    }

    /// A client configuration trusting this CA only, offering `alpn`.
    fn client(&self, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).expect("trust the test CA");
        client_config(roots, alpn)
    }
}

fn client_config(roots: rustls::RootCertStore, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Writes `leaf` to `cert.pem` and `key.pem` in `dir` as a certificate manager does: each to
/// a temporary name, then renamed over the old file.
fn install(dir: &Path, leaf: &Leaf) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    for (path, text) in [(&key, &leaf.key_pem), (&cert, &leaf.cert_pem)] {
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, text).expect("write PEM");
        std::fs::rename(&temporary, path).expect("rename PEM");
    }
    (cert, key)
}

/// Starts the binary with TLS from `dir`.
fn start_tls_hub(cert: &Path, key: &Path) -> BinaryHub {
    let (cert, key) = (cert.to_str().expect("utf-8"), key.to_str().expect("utf-8"));
    BinaryHub::start(
        &[
            "--jwt-key",
            SECRET,
            "--anonymous",
            "--history",
            "memory",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ],
        &[],
    )
}

/// Opens a TLS connection to `hub` as `localhost`.
async fn connect_tls(
    hub: &BinaryHub,
    connector: &tokio_rustls::TlsConnector,
) -> std::io::Result<TlsStream<TcpStream>> {
    connect_tls_to(hub.addr, connector).await
}

/// Opens a TLS connection to `addr` as `localhost`.
async fn connect_tls_to(
    addr: std::net::SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("server name");
    connector.connect(name, tcp).await
}

/// An HTTP/2 client connection over `io`, driven by a task of its own.
async fn http2(
    io: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
) -> SendRequest<Full<Bytes>> {
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
}

/// `GET` over `sender`, expecting `200` over HTTP/2.
async fn get(
    sender: &SendRequest<Full<Bytes>>,
    url: &str,
) -> hyper::Response<hyper::body::Incoming> {
    let request = hyper::Request::get(url)
        .body(Full::default())
        .expect("request");
    let response = sender
        .clone()
        .send_request(request)
        .await
        .expect("response");
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    assert_eq!(response.status(), 200, "GET {url}");
    response
}

/// Opens [`STREAMS`] subscriptions over the one connection of `sender` (`base`: scheme and
/// authority), publishes one event over the same connection, checks that every stream
/// receives it, and returns the streams, still open.
async fn many_streams_receive_one_event(
    sender: SendRequest<Full<Bytes>>,
    base: &str,
) -> Vec<hyper::body::Incoming> {
    let url = format!("{base}/.well-known/mercure?topic={TOPIC}");
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        // The hub registers a subscriber before it answers, so after the headers a publish
        // reaches every stream.
        streams.push(get(&sender, &url).await.into_body());
    }
    let publish = hyper::Request::post(format!("{base}/.well-known/mercure"))
        .header(
            "authorization",
            format!("Bearer {}", publisher_token(&["*"])),
        )
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(format!(
            "topic={TOPIC}&data=over-one-connection&id=h2-1"
        ))))
        .expect("publish request");
    let response = sender.clone().send_request(publish).await.expect("publish");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    let receive = streams.into_iter().map(|mut body| async move {
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("data: over-one-connection\n") {
            let frame = body
                .frame()
                .await
                .expect("the stream stays open")
                .expect("frame");
            if let Ok(data) = frame.into_data() {
                seen.extend_from_slice(&data);
            }
        }
        assert!(String::from_utf8_lossy(&seen).contains("id: h2-1\n"));
        body
    });
    tokio::time::timeout(
        Duration::from_secs(15),
        futures_util::future::join_all(receive),
    )
    .await
    .expect("every stream receives the event within 15 s")
}

#[tokio::test]
async fn fifty_subscriptions_share_one_http2_connection_over_tls() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = install(dir.path(), &ca.leaf("first", 1));
    let hub = start_tls_hub(&cert, &key);
    assert!(hub.url.starts_with("http://"));
    let tls = connect_tls(&hub, &ca.client(&[b"h2", b"http/1.1"]))
        .await
        .expect("TLS handshake with a trusted certificate");
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(b"h2".as_slice()),
        "ALPN picks HTTP/2"
    );
    let sender = http2(tls).await;
    let base = format!("https://localhost:{}", hub.addr.port());
    many_streams_receive_one_event(sender, &base).await;
    println!("{STREAMS} streams over one TLS connection (ALPN h2) each received the event");
}

#[tokio::test]
async fn fifty_subscriptions_share_one_cleartext_http2_connection() {
    let mut hub = BinaryHub::start(
        &["--jwt-key", SECRET, "--anonymous", "--history", "memory"],
        &[],
    );
    let tcp = TcpStream::connect(hub.addr).await.expect("connect");
    let sender = http2(tcp).await;
    let base = format!("http://{}", hub.addr);
    let streams = many_streams_receive_one_event(sender, &base).await;
    println!("{STREAMS} streams over one h2c connection each received the event");

    // SIGTERM ends every stream of the connection and the hub exits without dropping it.
    hub.terminate();
    let ends = streams.into_iter().map(|mut body| async move {
        while let Some(frame) = body.frame().await {
            frame.expect("the stream ends cleanly");
        }
    });
    tokio::time::timeout(
        Duration::from_secs(10),
        futures_util::future::join_all(ends),
    )
    .await
    .expect("every stream ends within 10 s of SIGTERM");
    wait_for_log(&hub, "all connections closed").await;
    let status = hub
        .wait_exit(Duration::from_secs(10))
        .expect("the hub exits");
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn bad_tls_clients_are_closed_and_the_hub_keeps_serving() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = install(dir.path(), &ca.leaf("first", 1));
    let hub = start_tls_hub(&cert, &key);

    // Plain HTTP to the TLS port: no HTTP answer, and the connection is closed promptly.
    let mut tcp = TcpStream::connect(hub.addr).await.expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer))
        .await
        .expect("the hub closes a plain HTTP connection within 5 s");
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP got an HTTP answer: {:?} ({read:?})",
        String::from_utf8_lossy(&answer)
    );

    // A client that does not trust the certificate fails the handshake.
    let untrusting = client_config(rustls::RootCertStore::empty(), &[b"h2"]);
    let error = connect_tls(&hub, &untrusting)
        .await
        .expect_err("an unknown issuer fails the handshake");
    assert!(
        error.to_string().contains("UnknownIssuer") || error.to_string().contains("issuer"),
        "{error}"
    );

    // Garbage after a TLS-looking first byte, then an abrupt close.
    let mut tcp = TcpStream::connect(hub.addr).await.expect("connect");
    tcp.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3])
        .await
        .expect("write");
    drop(tcp);

    // The hub still serves trusted clients, over HTTP/2 and HTTP/1.1.
    let sender = http2(
        connect_tls(&hub, &ca.client(&[b"h2"]))
            .await
            .expect("trusted handshake"),
    )
    .await;
    get(
        &sender,
        &format!("https://localhost:{}/healthz", hub.addr.port()),
    )
    .await;
    let tls = connect_tls(&hub, &ca.client(&[b"http/1.1"]))
        .await
        .expect("trusted handshake");
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(b"http/1.1".as_slice())
    );
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    let response = sender
        .send_request(
            hyper::Request::get("/healthz")
                .header("host", "localhost")
                .body(Full::<Bytes>::default())
                .expect("request"),
        )
        .await
        .expect("HTTP/1.1 response");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), hyper::Version::HTTP_11);
}

/// Waits for a log line of `hub` containing `needle`.
async fn wait_for_log(hub: &BinaryHub, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match hub.logs.try_recv() {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => continue,
            Err(std::sync::mpsc::TryRecvError::Empty) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no log line with {needle:?} within 15 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(std::sync::mpsc::TryRecvError::Disconnected) => panic!("the hub exited"),
        }
    }
}

/// The certificate a new connection to `hub` is shown.
async fn presented_certificate(hub: &BinaryHub, ca: &TestCa) -> CertificateDer<'static> {
    let tls = connect_tls(hub, &ca.client(&[b"h2"]))
        .await
        .expect("TLS handshake");
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("a certificate")
        .clone()
        .into_owned()
}

#[tokio::test]
async fn a_certificate_replaced_on_disk_is_used_by_new_connections() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let first = ca.leaf("first", 1);
    let (cert, key) = install(dir.path(), &first);
    let hub = start_tls_hub(&cert, &key);
    assert_eq!(presented_certificate(&hub, &ca).await, first.der);
    // An HTTP/2 connection opened with the first certificate.
    let old_connection = http2(
        connect_tls(&hub, &ca.client(&[b"h2"]))
            .await
            .expect("handshake"),
    )
    .await;
    let healthz = format!("https://localhost:{}/healthz", hub.addr.port());

    // A broken certificate file is reported, and the first certificate stays in use.
    std::fs::write(&cert, "not a certificate").expect("write garbage");
    let line = wait_for_log(&hub, "keeping the previous certificate").await;
    assert!(line.contains("cert.pem"), "{line}");
    assert_eq!(presented_certificate(&hub, &ca).await, first.der);

    // A new valid pair (another key, serial and name) is picked up without a restart.
    let second = ca.leaf("second", 2);
    install(dir.path(), &second);
    wait_for_log(&hub, "TLS certificate reloaded").await;
    assert_eq!(presented_certificate(&hub, &ca).await, second.der);
    assert_ne!(first.der, second.der);
    // The connection opened before the reload keeps working.
    get(&old_connection, &healthz).await;
    println!("the replaced certificate (CN=second, serial 2) is presented to new connections");
}

#[tokio::test]
async fn over_http2_a_stream_that_is_not_read_is_closed_alone_as_slow() {
    const EVENTS: usize = 300;
    let hub = BinaryHub::start(
        &[
            "--jwt-key",
            SECRET,
            "--anonymous",
            "--history",
            "memory",
            "--queue-capacity",
            "8",
        ],
        &[],
    );
    let tcp = TcpStream::connect(hub.addr).await.expect("connect");
    // Headers and body of a publish go out as two writes: without this, Nagle holds the second
    // until the hub's delayed ACK (40 ms per publish).
    tcp.set_nodelay(true).expect("nodelay");
    // A small window per stream and a large one for the connection: the stream nobody reads
    // runs out of window while the connection and its other streams keep going.
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(16 * 1024)
        .initial_connection_window_size(16 * 1024 * 1024)
        .handshake(TokioIo::new(tcp))
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let base = format!("http://{}", hub.addr);
    let url = format!("{base}/.well-known/mercure?topic={TOPIC}");
    let mut unread = get(&sender, &url).await.into_body();
    let mut read = get(&sender, &url).await.into_body();
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        let last = format!("id: e-{}\n", EVENTS - 1);
        while !String::from_utf8_lossy(&seen).contains(&last) {
            let frame = read.frame().await.expect("open").expect("frame");
            if let Ok(data) = frame.into_data() {
                seen.extend_from_slice(&data);
            }
        }
        // Every event's frame starts with its id line (the stream's cursor names no `e-` id).
        String::from_utf8_lossy(&seen).matches("id: e-").count()
    });
    let data = "x".repeat(1024);
    let authorization = format!("Bearer {}", publisher_token(&["*"]));
    for n in 0..EVENTS {
        let publish = hyper::Request::post(format!("{base}/.well-known/mercure"))
            .header("authorization", &authorization)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(format!(
                "topic={TOPIC}&data={data}&id=e-{n}"
            ))))
            .expect("publish request");
        let response = sender.clone().send_request(publish).await.expect("publish");
        assert_eq!(response.status(), 200);
    }
    let received = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("the stream that is read gets every event within 20 s")
        .expect("reader");
    assert_eq!(received, EVENTS);
    let line = wait_for_log(&hub, "slow_consumer").await;
    assert!(line.contains("stream closed"), "{line}");
    // The unread stream holds what its window and the hub's buffers took, then ends.
    let mut unread_bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(frame) = unread.frame().await {
            if let Ok(data) = frame.expect("frame").into_data() {
                unread_bytes.extend_from_slice(&data);
            }
        }
    })
    .await
    .expect("the slow stream ends once read");
    let unread_events = String::from_utf8_lossy(&unread_bytes)
        .matches("id: e-")
        .count();
    assert!(unread_events < EVENTS, "{unread_events}");
    // The connection itself is fine.
    get(&sender, &format!("{base}/healthz")).await;
    println!(
        "over one h2c connection: the read stream got {received} events, the unread one {unread_events} before it was closed as slow"
    );
}

/// The SPKI pin Chromium's `--ignore-certificate-errors-spki-list` takes: base64 of the
/// SHA-256 of the DER SubjectPublicKeyInfo (hashed by the `openssl` command).
fn spki_pin(spki: &[u8], dir: &Path) -> String {
    use base64::Engine;
    let path = dir.join("spki.der");
    std::fs::write(&path, spki).expect("write SPKI");
    let output = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-binary"])
        .arg(&path)
        .output()
        .expect("run openssl");
    assert!(output.status.success() && output.stdout.len() == 32);
    base64::engine::general_purpose::STANDARD.encode(output.stdout)
}

/// Opens ten `EventSource`s on [`TOPIC`] from the page; over HTTP/1.1 the seventh would wait
/// for a free connection.
const OPEN_TEN_EVENT_SOURCES: &str = r#"(() => {
    window.opened = 0;
    window.received = [];
    for (let i = 0; i < 10; i++) {
        const source = new EventSource("/.well-known/mercure?topic=" + encodeURIComponent("https://example.com/h2"));
        source.onopen = () => { window.opened += 1; };
        source.onmessage = (event) => { window.received.push(i + ":" + event.data); };
    }
    return true;
})()"#;

const PAGE_STATE: &str = r#"JSON.stringify({
    opened: window.opened,
    received: window.received,
    protocol: performance.getEntriesByType("navigation")[0].nextHopProtocol,
})"#;

#[tokio::test]
async fn ten_event_sources_in_headless_chromium_share_one_http2_connection() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let leaf = ca.leaf("localhost", 1);
    let (cert, key) = install(dir.path(), &leaf);
    let hub = start_tls_hub(&cert, &key);
    let base = format!("https://localhost:{}", hub.addr.port());
    let page_url = format!("{base}/healthz");
    let pin = format!(
        "--ignore-certificate-errors-spki-list={}",
        spki_pin(&leaf.spki, dir.path())
    );
    let browser = Chromium::open(&page_url, &[pin.as_str()]).await;
    let mut page = browser.page(&page_url).await;
    page.wait_until(
        r#"document.readyState === "complete" && document.body.innerText.length > 0"#,
        Duration::from_secs(30),
        PAGE_STATE,
    )
    .await;
    assert_eq!(
        page.eval(r#"performance.getEntriesByType("navigation")[0].nextHopProtocol"#)
            .await,
        "h2",
        "Chromium loaded the page over HTTP/2"
    );
    assert_eq!(page.eval(OPEN_TEN_EVENT_SOURCES).await, true);
    page.wait_until("window.opened === 10", Duration::from_secs(20), PAGE_STATE)
        .await;
    // The hub logs each stream's peer address: one address, hence one connection.
    let mut remotes = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let line = wait_for_log(&hub, "stream opened").await;
        let remote = line
            .split("remote=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("the peer address is logged");
        remotes.insert(remote.to_owned());
    }
    assert_eq!(remotes.len(), 1, "the EventSources came from {remotes:?}");

    let mut sender = http2(
        connect_tls(&hub, &ca.client(&[b"h2"]))
            .await
            .expect("handshake"),
    )
    .await;
    let publish = hyper::Request::post(format!("{base}/.well-known/mercure"))
        .header(
            "authorization",
            format!("Bearer {}", publisher_token(&["*"])),
        )
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(format!(
            "topic={TOPIC}&data=to-the-browser"
        ))))
        .expect("publish request");
    let response = sender.send_request(publish).await.expect("publish");
    assert_eq!(response.status(), 200);
    page.wait_until(
        "window.received.length === 10 && window.received.every((r) => r.endsWith(':to-the-browser'))",
        Duration::from_secs(20),
        PAGE_STATE,
    )
    .await;
    println!(
        "headless Chromium: 10 EventSources over one HTTPS/h2 connection ({}) each received the event: {}",
        remotes.first().map_or("", String::as_str),
        page.eval(PAGE_STATE).await
    );
}

/// Connects to `addr`, sends `greeting`, and returns how long the hub took to close the
/// connection (everything it sent is read and ignored).
async fn closed_after(addr: std::net::SocketAddr, greeting: &[u8]) -> Duration {
    let started = tokio::time::Instant::now();
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(greeting).await.expect("write");
    let mut ignored = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut ignored))
        .await
        .expect("the hub closes the connection within 10 s");
    started.elapsed()
}

#[tokio::test]
async fn connections_that_never_make_a_request_are_closed() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = install(dir.path(), &ca.leaf("first", 1));
    let options = ssehub::server::ServerOptions {
        header_read_timeout: Duration::from_millis(500),
        http2_keep_alive_interval: Duration::from_millis(500),
        ..ssehub::server::ServerOptions::default()
    };
    let plain =
        crate::support::TestHub::start_with(crate::support::config(), options.clone()).await;
    // Nothing at all; half of the HTTP/2 preface; the whole preface and then silence (the
    // keep-alive PING goes unanswered).
    for greeting in [
        b"".as_slice(),
        b"PRI * HTTP/2.0\r\n".as_slice(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".as_slice(),
    ] {
        let elapsed = closed_after(plain.addr, greeting).await;
        assert!(
            elapsed >= Duration::from_millis(400),
            "{:?} closed after {elapsed:?}",
            String::from_utf8_lossy(greeting)
        );
    }
    let tls = crate::support::TestHub::start_with(
        crate::support::config(),
        ssehub::server::ServerOptions {
            tls: Some(ssehub::server::TlsConfig::from_pem_files(&cert, &key).expect("TLS config")),
            ..options
        },
    )
    .await;
    // No ClientHello: the handshake times out.
    closed_after(tls.addr, b"").await;
    // Both hubs still serve.
    let sender = http2(TcpStream::connect(plain.addr).await.expect("connect")).await;
    get(&sender, &format!("http://{}/healthz", plain.addr)).await;
    let sender = http2(
        connect_tls_to(tls.addr, &ca.client(&[b"h2"]))
            .await
            .expect("handshake"),
    )
    .await;
    get(
        &sender,
        &format!("https://localhost:{}/healthz", tls.addr.port()),
    )
    .await;
    plain.stop().await;
    tls.stop().await;
}

/// Lingering close works below TLS (`server::linger` wraps the socket under rustls): a
/// publisher that writes a 20 MiB body over HTTP/1.1 over TLS before reading anything reads
/// the whole `413`, not a reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_publisher_writing_20_mib_before_reading_gets_the_413() {
    const BODY_BYTES: usize = 20 * 1024 * 1024;
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = install(dir.path(), &ca.leaf("linger", 1));
    let hub = start_tls_hub(&cert, &key);
    let mut tls = connect_tls(&hub, &ca.client(&[b"http/1.1"]))
        .await
        .expect("TLS handshake");
    let head = format!(
        "POST /.well-known/mercure HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {BODY_BYTES}\r\n\r\n",
        publisher_token(&["*"])
    );
    tls.write_all(head.as_bytes()).await.expect("head");
    let chunk = vec![b'x'; 64 * 1024];
    for written in (0..BODY_BYTES).step_by(chunk.len()) {
        if let Err(error) = tls.write_all(&chunk).await {
            panic!("the write failed after {written} of {BODY_BYTES} body bytes: {error}");
        }
    }
    tls.flush().await.expect("flush");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut answer))
        .await
        .expect("the answer and the end within 20 s")
        .expect("a clean TLS close after the answer");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413 "), "{text:?}");
    assert!(text.ends_with("(or was cut off)\n"), "{text:?}");
}
