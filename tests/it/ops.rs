//! Running it for real: metrics and health endpoints.

use std::time::Duration;

use crate::support::binary::BinaryHub;
use crate::support::{config, eventually, SseClient, TestHub, SECRET};

/// The value of the sample `name` (with its labels, e.g. `x_total{reason="a"}`) in OpenMetrics text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

async fn scrape(url: &str) -> String {
    let response = reqwest::get(url).await.expect("scrape");
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("application/openmetrics-text"));
    response.text().await.expect("body")
}

#[tokio::test]
async fn metrics_count_streams_events_replays_and_rejections() {
    let hub = TestHub::start(config()).await;
    let metrics_url = format!("http://{}/metrics", hub.addr);
    let mut a = hub.subscribe("topic=t").await;
    let _b = hub.subscribe("topic=t&topic=u").await;
    for i in 0..3 {
        let (status, _) = hub
            .publish(&[("topic", "t"), ("id", &format!("e{i}"))])
            .await;
        assert_eq!(status, 200);
    }
    a.next_ids(3).await;
    // One rejected publish (no token) and one rejected subscription (no topic).
    let unauthorized = reqwest::Client::new()
        .post(&hub.url)
        .form(&[("topic", "t")])
        .send()
        .await
        .expect("post");
    assert_eq!(unauthorized.status(), 401);
    assert_eq!(hub.subscribe("lastEventID=x").await.status, 400);
    // A replay of two events.
    let mut replay = hub.subscribe("topic=t&lastEventID=e0").await;
    replay.next_ids(2).await;

    let text = scrape(&metrics_url).await;
    assert_eq!(
        sample(&text, "ssehub_subscribers_connected"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(sample(&text, "ssehub_subscriptions"), Some(4.0));
    assert_eq!(sample(&text, "ssehub_events_published_total"), Some(3.0));
    assert_eq!(sample(&text, "ssehub_events_delivered_total"), Some(6.0));
    assert_eq!(sample(&text, "ssehub_events_replayed_total"), Some(2.0));
    assert_eq!(
        sample(&text, "ssehub_publish_duration_seconds_count"),
        Some(3.0)
    );
    assert_eq!(sample(&text, "ssehub_history_events"), Some(3.0));
    assert_eq!(sample(&text, "ssehub_ready"), Some(1.0));
    assert_eq!(
        sample(
            &text,
            r#"ssehub_requests_rejected_total{reason="unauthorized"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"ssehub_requests_rejected_total{reason="bad_request"}"#
        ),
        Some(1.0)
    );
    assert!(text.trim_end().ends_with("# EOF"));

    drop(a);
    eventually(Duration::from_secs(2), "close counted", || {
        hub.hub.subscriber_count() == 2
    })
    .await;
    let text = scrape(&metrics_url).await;
    assert_eq!(
        sample(
            &text,
            r#"ssehub_streams_closed_total{reason="client_disconnected"}"#
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let hub = TestHub::start(config()).await;
    let health = reqwest::get(format!("http://{}/healthz", hub.addr))
        .await
        .expect("get");
    assert_eq!(health.status(), 200);
    let ready = reqwest::get(format!("http://{}/readyz", hub.addr))
        .await
        .expect("get");
    assert_eq!(ready.status(), 200);
    hub.hub.shutdown().await;
    let ready = reqwest::get(format!("http://{}/readyz", hub.addr))
        .await
        .expect("get");
    assert_eq!(
        ready.status(),
        503,
        "a hub that is shutting down takes no more publishes"
    );
}

#[tokio::test]
async fn metrics_can_move_to_their_own_listener_or_be_turned_off() {
    let hub = BinaryHub::start(
        &[
            "--jwt-key",
            SECRET,
            "--anonymous",
            "--metrics",
            "127.0.0.1:0",
        ],
        &[],
    );
    let metrics_addr = loop {
        let line = hub
            .logs
            .recv_timeout(Duration::from_secs(10))
            .expect("metrics listener logged");
        if let Some(rest) = line.split("metrics_addr=").nth(1) {
            break rest.split_whitespace().next().expect("addr").to_owned();
        }
    };
    let _sub = SseClient::open(&format!("{}?topic=t", hub.url), &[]).await;
    let text = scrape(&format!("http://{metrics_addr}/metrics")).await;
    assert_eq!(sample(&text, "ssehub_subscribers_connected"), Some(1.0));
    let main = reqwest::get(format!("http://{}/metrics", hub.addr))
        .await
        .expect("get");
    assert_eq!(main.status(), 404, "not on the public listener any more");

    let off = BinaryHub::start(
        &["--jwt-key", SECRET, "--anonymous", "--metrics", "off"],
        &[],
    );
    let response = reqwest::get(format!("http://{}/metrics", off.addr))
        .await
        .expect("get");
    assert_eq!(response.status(), 404);
}

/// The durable history reports its bytes against `--history-max-bytes` (the alert
/// `SsehubHistoryNearByteCap` divides one by the other); a store without a byte cap reports 0.
#[tokio::test]
async fn history_bytes_and_their_cap_are_exported() {
    let hub = BinaryHub::start(
        &[
            "--jwt-key",
            SECRET,
            "--anonymous",
            "--history-max-bytes",
            "5000",
        ],
        &[],
    );
    let metrics_url = format!("http://{}/metrics", hub.addr);
    let text = scrape(&metrics_url).await;
    assert_eq!(sample(&text, "ssehub_history_bytes"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "ssehub_history_max_bytes"), Some(5000.0));
    let token = crate::support::publisher_token(&["*"]);
    let data = "x".repeat(1000);
    for _ in 0..20 {
        let (status, _) =
            crate::support::publish_with(&hub.url, &token, &[("topic", "t"), ("data", &data)])
                .await;
        assert_eq!(status, 200);
    }
    // 20 KB published, at most 5000 bytes kept: retention trims by size.
    let text = scrape(&metrics_url).await;
    let held = sample(&text, "ssehub_history_bytes").expect("history bytes");
    assert!(held > 3000.0 && held <= 5000.0, "{held}");

    let memory = TestHub::start(config()).await;
    let text = scrape(&format!("http://{}/metrics", memory.addr)).await;
    assert_eq!(sample(&text, "ssehub_history_bytes"), Some(0.0));
    assert_eq!(sample(&text, "ssehub_history_max_bytes"), Some(0.0));
}
