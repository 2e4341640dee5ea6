//! Subscription webhooks (docs/WEBHOOKS.md): a receiver in this process (axum on a port-0
//! listener) takes the hub's signed POSTs; the hub is the library's router on a port-0
//! listener, or the real binary for the flags and the documented verification script.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::Router;
use http::{HeaderMap, StatusCode};
use serde_json::Value;
use ssehub::webhook::{Webhook, WebhookConfig};
use ssehub::{Hub, HubConfig};

use crate::support::binary::BinaryHub;
use crate::support::tools::repo_path;
use crate::support::{eventually, SseClient, TestHub, SECRET};

const WEBHOOK_SECRET: &str = "webhook-test-secret";

/// One request the receiver accepted.
#[derive(Debug, Clone)]
struct Received {
    signature: String,
    body: Vec<u8>,
    json: Value,
}

/// What the receiver saw, and whether it answers 503 for now.
#[derive(Clone, Default)]
struct Receiver {
    accepted: Arc<Mutex<Vec<Received>>>,
    failing: Arc<AtomicBool>,
}

impl Receiver {
    fn accepted(&self) -> Vec<Received> {
        self.accepted.lock().expect("lock").clone()
    }

    /// Every notification of the accepted `events` batches, in arrival order.
    fn events(&self) -> Vec<Value> {
        self.accepted()
            .iter()
            .filter(|r| r.json["kind"] == "events")
            .flat_map(|r| r.json["events"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// The accepted full lists, in arrival order.
    fn full_lists(&self) -> Vec<Value> {
        self.accepted()
            .into_iter()
            .filter(|r| r.json["kind"] == "full_list")
            .map(|r| r.json)
            .collect()
    }
}

async fn take(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    if receiver.failing.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let signature = headers
        .get("ssehub-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let Ok(json) = serde_json::from_slice(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    receiver.accepted.lock().expect("lock").push(Received {
        signature,
        body: body.to_vec(),
        json,
    });
    StatusCode::NO_CONTENT
}

/// Serves `receiver` on `listener` until the returned task is aborted.
fn serve(listener: tokio::net::TcpListener, receiver: Receiver) -> tokio::task::JoinHandle<()> {
    let app = Router::new()
        .route("/hook", post(take))
        .with_state(receiver);
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("receiver");
    })
}

async fn start_receiver() -> (Receiver, SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let receiver = Receiver::default();
    let task = serve(listener, receiver.clone());
    (receiver, addr, task)
}

fn webhook_config(addr: SocketAddr) -> WebhookConfig {
    WebhookConfig {
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        timeout: Duration::from_secs(2),
        ..WebhookConfig::new(format!("http://{addr}/hook"), WEBHOOK_SECRET)
    }
}

async fn hub_with(config: WebhookConfig) -> TestHub {
    let webhook = Webhook::new(config).expect("webhook");
    TestHub::start_built(Hub::builder(HubConfig::default()).webhook(webhook)).await
}

/// The id and URI of the open subscriber of `topic`.
fn subscriber_of(hub: &Hub, topic: &str) -> (u64, String) {
    hub.subscribers()
        .into_iter()
        .find(|info| info.topics == [topic])
        .map(|info| (info.id, info.uri))
        .unwrap_or_else(|| panic!("no subscriber of {topic}"))
}

/// `type topic` of each notification, e.g. `opened /a`.
fn summary(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["type"].as_str().unwrap_or("?"),
                e["subscription"]["topic"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().filter_map(|e| e["seq"].as_u64()).collect()
}

#[tokio::test]
async fn notifications_of_one_instance_arrive_in_order_and_shutdown_sends_the_last_closes() {
    let (receiver, addr, _server) = start_receiver().await;
    let hub = hub_with(webhook_config(addr)).await;
    let mut clients = Vec::new();
    for topic in ["/a", "/b", "/c"] {
        // The response head comes once the subscriber is registered and announced.
        clients.push(hub.subscribe(&format!("topic={topic}")).await);
    }
    let (b, b_uri) = subscriber_of(&hub.hub, "/b");
    let (a, _) = subscriber_of(&hub.hub, "/a");
    assert!(hub.hub.close_subscriber(b));
    assert!(hub.hub.close_subscriber(a));
    eventually(Duration::from_secs(10), "five notifications", || {
        receiver.events().len() >= 5
    })
    .await;
    let events = receiver.events();
    assert_eq!(
        summary(&events),
        [
            "opened /a",
            "opened /b",
            "opened /c",
            "closed /b",
            "closed /a"
        ]
    );
    assert_eq!(seqs(&events), [1, 2, 3, 4, 5]);
    // The documents are the subscription events' JSON-LD.
    let closed_b = &events[3];
    assert_eq!(closed_b["reason"], "closed");
    assert_eq!(closed_b["subscription"]["subscriber"], b_uri.as_str());
    assert_eq!(closed_b["subscription"]["active"], false);
    assert_eq!(closed_b["subscription"]["type"], "Subscription");
    assert_eq!(
        closed_b["subscription"]["@context"],
        "https://mercure.rocks/"
    );
    let instances: Vec<_> = receiver
        .accepted()
        .iter()
        .map(|r| r.json["instance"].clone())
        .collect();
    assert!(
        instances
            .iter()
            .all(|i| i == &instances[0] && i.is_string()),
        "{instances:?}"
    );
    // Counted once the receiver's answer is back, after it recorded the batch.
    let webhook = hub.hub.metrics().webhook.clone();
    eventually(Duration::from_secs(5), "five delivered", || {
        webhook.delivered.get() >= 5
    })
    .await;
    assert_eq!(webhook.delivered.get(), 5);

    // Shutdown closes /c, and delivers its "closed" before the hub's shutdown returns.
    hub.stop().await;
    let events = receiver.events();
    assert_eq!(summary(&events[5..]), ["closed /c"], "{events:?}");
    assert_eq!(events[5]["reason"], "shutdown");
    drop(clients);
}

#[tokio::test]
async fn a_receiver_down_for_ten_seconds_gets_everything_afterwards_in_order() {
    // A port nobody listens on for now: connections are refused.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let hub = hub_with(WebhookConfig {
        max_backoff: Duration::from_secs(1),
        ..webhook_config(addr)
    })
    .await;
    let metrics = hub.hub.metrics().webhook.clone();
    let mut clients = Vec::new();
    for n in 0..4 {
        clients.push(hub.subscribe(&format!("topic=/t{n}")).await);
    }
    let (first, _) = subscriber_of(&hub.hub, "/t0");
    hub.hub.close_subscriber(first);
    eventually(Duration::from_secs(5), "failed attempts", || {
        metrics.failed_attempts.get() >= 2
    })
    .await;
    // The receiver is down for 10 s (the scenario, not a wait for a condition).
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(metrics.failed_attempts.get() >= 5, "the hub kept retrying");
    assert_eq!(metrics.delivered.get(), 0);
    assert_eq!(metrics.queued.get(), 5);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("rebind the receiver's port");
    let receiver = Receiver::default();
    let _server = serve(listener, receiver.clone());
    eventually(Duration::from_secs(10), "every notification", || {
        receiver.events().len() >= 5
    })
    .await;
    let events = receiver.events();
    assert_eq!(
        summary(&events),
        [
            "opened /t0",
            "opened /t1",
            "opened /t2",
            "opened /t3",
            "closed /t0"
        ]
    );
    assert_eq!(
        seqs(&events),
        [1, 2, 3, 4, 5],
        "nothing lost, nothing twice"
    );
    assert_eq!(metrics.dropped.get(), 0);
    // The receiver records a batch before it answers; the hub empties its queue once the
    // answer is back.
    eventually(Duration::from_secs(5), "the queue emptied", || {
        metrics.queued.get() == 0
    })
    .await;
    hub.stop().await;
}

#[tokio::test]
async fn a_full_queue_drops_the_oldest_notifications_and_counts_them() {
    let (receiver, addr, _server) = start_receiver().await;
    receiver.failing.store(true, Ordering::SeqCst);
    let hub = hub_with(WebhookConfig {
        queue_capacity: 3,
        max_backoff: Duration::from_millis(200),
        ..webhook_config(addr)
    })
    .await;
    let metrics = hub.hub.metrics().webhook.clone();
    let mut clients = Vec::new();
    for n in 1..=6 {
        clients.push(hub.subscribe(&format!("topic=/t{n}")).await);
    }
    assert_eq!(metrics.dropped.get(), 3);
    assert_eq!(metrics.queued.get(), 3);
    // Two more failures after the last push: the attempt after them peeked the queue as it is
    // now, so no older batch is still on its way when the receiver comes back.
    let failed = metrics.failed_attempts.get();
    eventually(Duration::from_secs(5), "two more failed attempts", || {
        metrics.failed_attempts.get() >= failed + 2
    })
    .await;
    receiver.failing.store(false, Ordering::SeqCst);
    eventually(Duration::from_secs(10), "the newest three", || {
        receiver.events().len() >= 3
    })
    .await;
    let events = receiver.events();
    assert_eq!(summary(&events), ["opened /t4", "opened /t5", "opened /t6"]);
    assert_eq!(seqs(&events), [4, 5, 6], "the gap in seq shows the drop");
    // The receiver records a batch before it answers; the hub counts it once the answer is back.
    eventually(Duration::from_secs(5), "the delivery counted", || {
        metrics.delivered.get() >= 3
    })
    .await;
    let page = hub.hub.render_metrics().await;
    assert_eq!(
        crate::support::expect_metric(&page, "ssehub_webhook_dropped_total"),
        3
    );
    assert_eq!(
        crate::support::expect_metric(&page, "ssehub_webhook_delivered_total"),
        3
    );
    hub.stop().await;
}

#[tokio::test]
async fn the_full_list_names_the_open_subscriptions_periodically() {
    let (receiver, addr, _server) = start_receiver().await;
    let hub = hub_with(WebhookConfig {
        full_list_interval: Duration::from_millis(300),
        ..webhook_config(addr)
    })
    .await;
    let _a = hub.subscribe("topic=/a").await;
    let _b = hub.subscribe("topic=/b").await;
    let (_, a_uri) = subscriber_of(&hub.hub, "/a");
    let (b, b_uri) = subscriber_of(&hub.hub, "/b");
    let listed = |list: &Value| -> Vec<String> {
        let mut uris: Vec<String> = list["subscriptions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["subscriber"].as_str().map(str::to_owned))
            .collect();
        uris.sort();
        uris
    };
    let mut both = vec![a_uri.clone(), b_uri.clone()];
    both.sort();
    eventually(Duration::from_secs(10), "a full list of both", || {
        receiver
            .full_lists()
            .last()
            .is_some_and(|l| listed(l) == both)
    })
    .await;
    let list = receiver.full_lists().pop().expect("a list");
    assert_eq!(list["interval_seconds"], 0.3);
    assert_eq!(list["subscriptions"][0]["active"], true);
    hub.hub.close_subscriber(b);
    eventually(Duration::from_secs(10), "a full list without /b", || {
        receiver
            .full_lists()
            .last()
            .is_some_and(|l| listed(l) == [a_uri.clone()])
    })
    .await;
    // Counted once the receiver's answer is back, which is after it recorded the list.
    eventually(Duration::from_secs(10), "two full lists counted", || {
        hub.hub.metrics().webhook.full_lists.get() >= 2
    })
    .await;
    hub.stop().await;
}

/// Runs examples/webhook/verify.py on `body` with `header` and `secret`: whether it says valid.
fn python_verifies(secret: &str, header: &str, body: &[u8]) -> bool {
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .arg(repo_path("examples/webhook/verify.py"))
        .args(["--secret", secret, "--header", header])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body)
        .expect("write the body");
    let output = child.wait_with_output().expect("verify.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    match output.status.code() {
        Some(0) => {
            assert_eq!(stdout.trim(), "valid");
            true
        }
        Some(1) => false,
        other => panic!(
            "verify.py failed ({other:?}): {}",
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

#[tokio::test]
async fn the_binary_signs_its_requests_as_the_documented_verification_checks() {
    let (receiver, addr, _server) = start_receiver().await;
    let url = format!("http://{addr}/hook");
    let hub = BinaryHub::start(
        &[
            "--history",
            "memory",
            "--anonymous",
            "--webhook",
            &url,
            "--webhook-full-list-interval",
            "1s",
        ],
        &[
            ("SSEHUB_JWT_KEY", SECRET),
            ("SSEHUB_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ],
    );
    let _client = SseClient::open(&format!("{}?topic=/signed", hub.url), &[]).await;
    eventually(
        Duration::from_secs(10),
        "an events batch and a full list",
        || {
            let accepted = receiver.accepted();
            accepted.iter().any(|r| r.json["kind"] == "events")
                && accepted.iter().any(|r| r.json["kind"] == "full_list")
        },
    )
    .await;
    for request in receiver.accepted() {
        assert!(request.signature.starts_with("t="), "{}", request.signature);
        assert!(
            python_verifies(WEBHOOK_SECRET, &request.signature, &request.body),
            "a genuine request is accepted: {}",
            request.signature
        );
        assert!(
            ssehub::webhook::verify(
                WEBHOOK_SECRET.as_bytes(),
                &request.signature,
                &request.body,
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("clock")
                    .as_secs(),
                300
            )
            .is_ok(),
            "and by the Rust check"
        );
    }
    let request = receiver
        .accepted()
        .into_iter()
        .find(|r| r.json["kind"] == "events")
        .expect("an events batch");
    assert_eq!(request.json["events"][0]["type"], "opened");
    assert_eq!(
        request.json["events"][0]["subscription"]["topic"],
        "/signed"
    );
    let text = String::from_utf8(request.body.clone()).expect("UTF-8");
    let tampered = text.replacen("\"opened\"", "\"closed\"", 1);
    assert_ne!(tampered, text);
    assert!(!python_verifies(
        WEBHOOK_SECRET,
        &request.signature,
        tampered.as_bytes()
    ));
    assert!(!python_verifies(
        "another secret",
        &request.signature,
        &request.body
    ));
    let moved = {
        let t: u64 = request.signature[2..]
            .split(',')
            .next()
            .and_then(|t| t.parse().ok())
            .expect("t");
        request
            .signature
            .replacen(&format!("t={t}"), &format!("t={}", t + 1), 1)
    };
    assert!(
        !python_verifies(WEBHOOK_SECRET, &moved, &request.body),
        "t is signed"
    );
    hub.terminate();
}
