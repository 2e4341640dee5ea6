//! The orders example (`examples/orders.rs`): an axum application with its own PostgreSQL
//! database, reached through a pool of 5 connections, and an embedded hub. With 1,000 streams
//! open on it, database-backed requests still succeed and the pool stays idle between them: no
//! stream holds a pooled connection. The latencies with and without the streams are printed,
//! not asserted.
//!
//! Needs PostgreSQL at `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`), as on
//! the project's machines and CI. The example runs as its own process, built by cargo.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use crate::support::{heavy, open_raw_streams};

const STREAMS: usize = 1_000;
const ROUNDS: usize = 50;
/// The topic selector of every stream: all orders.
const TOPIC_SELECTOR: &str = "/orders/{id}";

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// The example's binary, built by cargo into `target/<profile>/examples`, beside the `deps`
/// folder of this test binary. `cargo test` builds examples before it runs tests, but not when
/// only this test target is selected (`--test it`), so it is built here too: a no-op when it is
/// fresh, and it never runs a stale example. (Cargo releases its build lock before it runs the
/// tests.)
fn example_binary() -> PathBuf {
    let test_binary = std::env::current_exe().expect("test binary path");
    let profile_dir = test_binary
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test binary>");
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build
        .args(["build", "--quiet", "--example", "orders"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    match profile_dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            build.arg("--release");
        }
        Some(profile) => {
            build.args(["--profile", profile]);
        }
    }
    let status = build.status().expect("run cargo build --example orders");
    assert!(status.success(), "cargo build --example orders: {status}");
    profile_dir
        .join("examples")
        .join(format!("orders{}", std::env::consts::EXE_SUFFIX))
}

/// The example running as a child process on 127.0.0.1:0; killed on drop if still running.
struct OrdersApp {
    child: Child,
    addr: SocketAddr,
    /// Its log lines after the `listening` one (drained by a thread, so the pipe never fills).
    _logs: mpsc::Receiver<String>,
}

impl OrdersApp {
    fn start(table: &str) -> Self {
        let mut child = Command::new(example_binary())
            .env("ADDR", "127.0.0.1:0")
            .env("DATABASE_URL", database_url())
            .env("ORDERS_TABLE", table)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the orders example");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, logs) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let addr = loop {
            let line = logs
                .recv_timeout(Duration::from_secs(30))
                .expect("the orders example logs its address within 30 s (is PostgreSQL up?)");
            if !line.contains("listening") {
                continue;
            }
            if let Some(rest) = line.split(" addr=").nth(1) {
                let addr = rest.split_whitespace().next().expect("address");
                break addr.parse().expect("socket address");
            }
        };
        Self {
            child,
            addr,
            _logs: logs,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends SIGTERM by PID and waits up to 10 s for a clean exit.
    fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                assert!(status.success(), "the orders example exited with {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the orders example did not exit within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for OrdersApp {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Latencies of the database-backed requests of one run.
#[derive(Default)]
struct Latencies {
    /// `POST /orders`: an `INSERT`, then a publish that fans out to every open stream.
    post: Vec<Duration>,
    /// `GET /orders/{id}` right after each `POST`.
    get: Vec<Duration>,
    /// `GET /orders/{id}` alone, with no event in flight.
    read_only: Vec<Duration>,
}

impl Latencies {
    fn summary(&self) -> String {
        fn median_max(samples: &[Duration]) -> String {
            let mut sorted = samples.to_vec();
            sorted.sort();
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            format!(
                "median {:.2} ms, max {:.2} ms",
                ms(sorted[sorted.len() / 2]),
                ms(sorted[sorted.len() - 1])
            )
        }
        format!(
            "POST /orders {}; GET /orders/{{id}} after it {}; GET alone {}",
            median_max(&self.post),
            median_max(&self.get),
            median_max(&self.read_only)
        )
    }
}

/// `POST /orders` with `item`; returns the new id.
async fn create_order(client: &reqwest::Client, app: &OrdersApp, item: &str) -> i64 {
    let response = client
        .post(app.url("/orders"))
        .body(item.to_owned())
        .send()
        .await
        .expect("POST /orders");
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    let body = response.text().await.expect("body");
    body.trim().parse().expect("the new order's id")
}

/// `GET path` as JSON, expecting `200`.
async fn get_json(client: &reqwest::Client, app: &OrdersApp, path: &str) -> serde_json::Value {
    let response = client.get(app.url(path)).send().await.expect("GET");
    assert_eq!(response.status(), reqwest::StatusCode::OK, "GET {path}");
    let body = response.text().await.expect("body");
    serde_json::from_str(&body).expect("JSON")
}

/// `ROUNDS` times: create an order, then read it back; then read them all again. Every answer
/// is checked.
async fn orders_round_trip(
    client: &reqwest::Client,
    app: &OrdersApp,
    label: &str,
) -> (Latencies, Vec<i64>) {
    let mut latencies = Latencies::default();
    let mut ids = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let item = format!("{label} {round}");
        let started = Instant::now();
        let id = create_order(client, app, &item).await;
        latencies.post.push(started.elapsed());
        let started = Instant::now();
        let order = get_json(client, app, &format!("/orders/{id}")).await;
        latencies.get.push(started.elapsed());
        assert_eq!(order, serde_json::json!({ "id": id, "item": item }));
        ids.push(id);
    }
    // The same reads again, once no event is being delivered.
    for id in &ids {
        let started = Instant::now();
        let order = get_json(client, app, &format!("/orders/{id}")).await;
        latencies.read_only.push(started.elapsed());
        assert_eq!(order["id"], *id);
    }
    (latencies, ids)
}

/// Reads a raw SSE response until its text holds `needle`. The body is chunked, but each chunk
/// holds whole SSE frames, so a `data:` line is never split by chunk framing.
async fn read_until(stream: &mut tokio::net::TcpStream, needle: &str) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = stream.read(&mut buf).await.expect("read the stream");
            assert!(n > 0, "the stream ended before {needle:?}");
            seen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&seen).contains(needle) {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{needle:?} within 10 s"));
}

/// The pool is idle: every connection it opened is back, none is awaited, and it never opened
/// more than its 5.
fn assert_pool_idle(stats: &serde_json::Value) {
    let pool = &stats["pool"];
    assert_eq!(pool["max_size"], 5, "{stats}");
    assert!(pool["size"].as_u64().expect("size") <= 5, "{stats}");
    assert_eq!(pool["available"], pool["size"], "{stats}");
    assert_eq!(pool["waiting"], 0, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_open_streams_leave_the_database_pool_to_ordinary_requests() {
    let _heavy = heavy().await;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    let table = format!("orders_it_{}_{nanos}", std::process::id());
    let mut app = OrdersApp::start(&table);
    let client = reqwest::Client::new();

    // Warm up (pool connections, prepared statements), then measure with no stream open.
    for i in 0..5 {
        create_order(&client, &app, &format!("warm-up {i}")).await;
    }
    let (without_streams, _) = orders_round_trip(&client, &app, "quiet").await;

    let mut streams = open_raw_streams(app.addr, "topic=/orders/%7Bid%7D", STREAMS).await;
    let stats = get_json(&client, &app, "/stats").await;
    assert_eq!(stats["streams"]["open"], STREAMS, "{stats}");
    assert_eq!(
        stats["streams"]["open_by_topic"][TOPIC_SELECTOR], STREAMS,
        "the on_open hook counted every stream: {stats}"
    );
    assert_pool_idle(&stats);

    // Each POST also fans its event out to the 1,000 streams.
    let (with_streams, ids) = orders_round_trip(&client, &app, "busy").await;
    assert_eq!(ids.len(), ROUNDS);
    let stats = get_json(&client, &app, "/stats").await;
    assert_eq!(stats["streams"]["open"], STREAMS, "{stats}");
    assert_pool_idle(&stats);

    // One more order reaches a sample of the streams, spread over the whole set.
    let item = format!("final order of {table}");
    let id = create_order(&client, &app, &item).await;
    let needle = format!("data: {}", serde_json::json!({ "id": id, "item": item }));
    for index in (0..STREAMS).step_by(STREAMS / 10).chain([STREAMS - 1]) {
        read_until(&mut streams[index], &needle).await;
    }

    let count = get_json(&client, &app, "/orders/count").await;
    assert_eq!(count["count"], 5 + 2 * ROUNDS + 1);
    let missing = client
        .get(app.url(&format!("/orders/{}", id + 1000)))
        .send()
        .await
        .expect("GET");
    assert_eq!(missing.status(), reqwest::StatusCode::NOT_FOUND);

    // The clients go away: the on_close hook sees 1,000 errors (client disconnected).
    drop(streams);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = get_json(&client, &app, "/stats").await;
        if stats["streams"]["open"] == 0 && stats["streams"]["closed"]["error"] == STREAMS {
            assert_eq!(stats["streams"]["open_by_topic"], serde_json::json!({}));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "streams not closed within 20 s: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    eprintln!(
        "{ROUNDS} database-backed rounds, pool of 5 connections:\n  \
         no stream open:        {}\n  \
         {STREAMS} streams open:     {}",
        without_streams.summary(),
        with_streams.summary()
    );

    app.terminate();
    // A table named by the caller outlives the example: drop it here.
    let (db, connection) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    let connection = tokio::spawn(connection);
    db.batch_execute(&format!("DROP TABLE {table}"))
        .await
        .expect("drop the test table");
    drop(db);
    connection
        .await
        .expect("connection task")
        .expect("connection");
}
