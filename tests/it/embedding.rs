//! The hub embedded in an application: its router merged beside the application's own routes,
//! or nested under a prefix (whose streams must still get the server's small writer), and the
//! application publishing directly.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use ssehub::server::ServerOptions;
use ssehub::{Event, Hub};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::support::{config, heavy, http_config, open_raw_streams_at, proc_status_kib, SseClient};

async fn announce(State(hub): State<Hub>, body: String) -> Result<String, ssehub::http::ApiError> {
    Ok(hub.publish(Event::new("/news", body)).await?.id)
}

#[tokio::test]
async fn an_application_route_publishes_to_browsers_through_the_merged_router() {
    let shutdown = CancellationToken::new();
    let hub = Hub::builder(config())
        .shutdown(shutdown.child_token())
        .build()
        .await
        .expect("hub");
    let app = Router::new()
        .route("/announce", post(announce))
        .route("/health", axum::routing::get(|| async { "app ok" }))
        .with_state(hub.clone())
        .merge(ssehub::http::router(hub.clone(), http_config()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(ssehub::server::serve(
        listener,
        app,
        ssehub::server::ServerOptions::default(),
        shutdown.clone().cancelled_owned(),
    ));

    let mut sub = SseClient::open(
        &format!("http://{addr}/.well-known/mercure?topic=/news"),
        &[],
    )
    .await;
    let health = reqwest::get(format!("http://{addr}/health"))
        .await
        .expect("get");
    assert_eq!(health.text().await.expect("body"), "app ok");
    let id = reqwest::Client::new()
        .post(format!("http://{addr}/announce"))
        .body("release 1.0")
        .send()
        .await
        .expect("post")
        .text()
        .await
        .expect("id");
    let event = sub.next_event().await;
    assert_eq!((event.id, event.data.as_str()), (id, "release 1.0"));

    shutdown.cancel();
    assert_eq!(
        sub.wait_end(Duration::from_secs(5)).await,
        Some(crate::support::sse::End::Clean)
    );
    server.await.expect("join").expect("serve");
    hub.shutdown().await;
    assert_eq!(hub.subscriber_count(), 0);
}

/// Where the nested router's subscriptions are, seen from the client.
const NESTED_TARGET: &str = "/events/.well-known/mercure?topic=t";

/// Tells [`nested_router_server_process`] which `ServerOptions::subscribe_path` to serve with
/// (`default`: the option left alone).
const SUBSCRIBE_PATH_VAR: &str = "SSEHUB_TEST_NESTED_SUBSCRIBE_PATH";

/// The server of [`a_router_nested_under_a_prefix_keeps_the_small_writer`], run in a process of
/// its own (this test binary, started again for this test alone) so that its memory is the
/// hub's alone: a hub whose router is nested under `/events`, served by `server::serve`. It
/// prints `ADDR=` and the bound address, and serves until its stdin closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the server process of a_router_nested_under_a_prefix_keeps_the_small_writer"]
async fn nested_router_server_process() {
    let Ok(subscribe_path) = std::env::var(SUBSCRIBE_PATH_VAR) else {
        return;
    };
    rlimit::increase_nofile_limit(u64::MAX).expect("raise the open-file limit");
    let shutdown = CancellationToken::new();
    let hub = Hub::builder(config())
        .shutdown(shutdown.child_token())
        .build()
        .await
        .expect("hub");
    let app = Router::new().nest("/events", ssehub::http::router(hub.clone(), http_config()));
    let mut options = ServerOptions::default();
    if subscribe_path != "default" {
        options.subscribe_path = subscribe_path;
    }
    let listener = ssehub::server::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    println!("ADDR={}", listener.local_addr().expect("addr"));
    let stop = shutdown.clone();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        stop.cancel();
    });
    ssehub::server::serve(listener, app, options, shutdown.cancelled_owned())
        .await
        .expect("serve");
    hub.shutdown().await;
}

/// A [`nested_router_server_process`] running; stopped (stdin closed, then killed if it lingers)
/// when dropped.
struct NestedHubProcess {
    child: Child,
    addr: SocketAddr,
}

impl NestedHubProcess {
    /// Starts the process and waits (at most 30 s) for the address it prints.
    fn start(subscribe_path: &str) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("the test binary"))
            .args([
                "embedding::nested_router_server_process",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(SUBSCRIBE_PATH_VAR, subscribe_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the server process");
        let stdout = child.stdout.take().expect("stdout");
        let (found, address) = std::sync::mpsc::channel();
        // Reads the output to its end, so the process never blocks on a full pipe; the test
        // harness prints `ADDR=` after the test's name, on the same line.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some((_, addr)) = line.split_once("ADDR=") {
                    let _ = found.send(addr.trim().to_owned());
                }
            }
        });
        let addr = match address.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr.parse().expect("an address"),
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server process printed no address within 30 s: {error}");
            }
        };
        Self { child, addr }
    }
}

impl Drop for NestedHubProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server process's resident memory per idle nested stream, in bytes: RSS with `STREAMS`
/// more streams open, less RSS before them, divided by `STREAMS`. A few streams are opened
/// first so that what every stream shares (the runtime's threads, the registry) is counted in
/// neither.
async fn idle_bytes_per_nested_stream(subscribe_path: &str) -> u64 {
    const WARM_UP: usize = 50;
    const STREAMS: usize = 1_000;
    let hub = NestedHubProcess::start(subscribe_path);
    let pid = hub.child.id();
    let open = |count| {
        tokio::time::timeout(
            Duration::from_secs(60),
            open_raw_streams_at(hub.addr, NESTED_TARGET, count),
        )
    };
    let warm = open(WARM_UP)
        .await
        .expect("warm-up streams open within 60 s");
    let before = proc_status_kib(pid, "VmRSS:");
    let streams = open(STREAMS).await.expect("the streams open within 60 s");
    let after = proc_status_kib(pid, "VmRSS:");
    drop((warm, streams));
    let per_stream = after.saturating_sub(before) * 1024 / STREAMS as u64;
    eprintln!(
        "subscribe_path {subscribe_path}: RSS {before} KiB before, {after} KiB with {STREAMS} \
         idle nested streams: {per_stream} bytes per stream"
    );
    per_stream
}

/// Issue 14: an application that nests the router under `/events` and tells the server where
/// subscriptions are (`ServerOptions::subscribe_path`) keeps the direct writer's memory per idle
/// stream; with the option left at its default the same streams go through hyper, whose
/// per-connection buffers cost several KB more each. Measured in a server process of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_nested_under_a_prefix_keeps_the_small_writer() {
    let _heavy = heavy().await;
    let direct = idle_bytes_per_nested_stream("/events/.well-known/mercure").await;
    let through_hyper = idle_bytes_per_nested_stream("default").await;
    // BENCHMARKS.md: about 3.7 KB per idle stream with the direct writer (release build) and
    // 12.4 KB through hyper; hyper's two 8 KiB buffers are most of the difference.
    assert!(
        direct <= 8 * 1024,
        "{direct} bytes per idle nested stream: not the small writer"
    );
    assert!(
        direct + 4 * 1024 <= through_hyper,
        "{direct} bytes per stream with subscribe_path, {through_hyper} without: the option \
         made no difference"
    );
}

/// Writes a raw HTTP/1.1 `GET target` to `addr` and reads the answer until the server closes
/// the connection (within 5 s).
async fn raw_get_until_close(addr: SocketAddr, target: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("request");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection within 5 s")
        .expect("read");
    String::from_utf8(answer).expect("ASCII")
}

/// The server streams a response because the handler marked it (`http::EventStream`), not
/// because of its `Content-Type`: an unmarked `text/event-stream` answer on the subscribe path
/// is written whole, with its length, and the connection closed.
#[tokio::test]
async fn only_a_response_marked_as_an_event_stream_is_streamed_by_the_server() {
    async fn handler(uri: axum::http::Uri) -> axum::response::Response {
        let mut response = axum::response::Response::new(axum::body::Body::from("data: x\n\n"));
        response.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("text/event-stream"),
        );
        if uri.query() == Some("mark") {
            response.extensions_mut().insert(ssehub::http::EventStream);
        }
        response
    }
    let app = Router::new().route(ssehub::http::MERCURE_PATH, get(handler));
    let listener = ssehub::server::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(ssehub::server::serve(
        listener,
        app,
        ServerOptions::default(),
        shutdown.clone().cancelled_owned(),
    ));

    let unmarked = raw_get_until_close(addr, "/.well-known/mercure?plain").await;
    let (head, body) = unmarked.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200"), "{unmarked}");
    assert!(
        head.contains("content-type: text/event-stream"),
        "{unmarked}"
    );
    assert!(head.contains("content-length: 9"), "{unmarked}");
    assert!(head.contains("connection: close"), "{unmarked}");
    assert!(!head.contains("transfer-encoding"), "{unmarked}");
    assert_eq!(body, "data: x\n\n");

    let marked = raw_get_until_close(addr, "/.well-known/mercure?mark").await;
    let (head, body) = marked.split_once("\r\n\r\n").expect("a head");
    assert!(head.contains("transfer-encoding: chunked"), "{marked}");
    assert!(!head.contains("content-length"), "{marked}");
    assert_eq!(body, "9\r\ndata: x\n\n\r\n0\r\n\r\n");

    shutdown.cancel();
    server.await.expect("join").expect("serve");
}
