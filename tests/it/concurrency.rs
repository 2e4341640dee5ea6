//! Concurrency and slow clients: no subscriber can hold back the others.

use std::time::Duration;

use ssehub::server::ServerOptions;
use ssehub::{CloseReason, HubConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{config, eventually, publisher_token, TestHub};

/// A subscriber that stops reading fills its socket, then its queue; the hub disconnects it
/// (and counts it) while a normal subscriber receives every event. The write timeout then closes
/// the stalled connection itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_and_the_others_keep_receiving() {
    const EVENTS: usize = 400;
    let hub = TestHub::start_with(
        HubConfig {
            queue_capacity: 8,
            ..config()
        },
        ServerOptions {
            dispatch_timeout: Duration::from_secs(2),
            ..ServerOptions::default()
        },
    )
    .await;
    let mut stalled = tokio::net::TcpStream::connect(hub.addr)
        .await
        .expect("connect");
    stalled
        .write_all(b"GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    let mut head = [0u8; 256];
    let n = stalled.read(&mut head).await.expect("head");
    assert!(head[..n].starts_with(b"HTTP/1.1 200"));
    let mut normal = hub.subscribe("topic=t").await;

    // 32 KiB per event: a few megabytes in all, far more than the socket buffers hold.
    let payload = "x".repeat(32 * 1024);
    let reader = tokio::spawn(async move {
        let mut ids = Vec::with_capacity(EVENTS);
        for _ in 0..EVENTS {
            ids.push(normal.next_event().await.id);
        }
        // Hand the client back: it must stay connected for the count below.
        (ids, normal)
    });
    let client = reqwest::Client::new();
    let token = publisher_token(&["*"]);
    let mut published = Vec::with_capacity(EVENTS);
    for i in 0..EVENTS {
        let id = format!("e{i}");
        let status = client
            .post(&hub.url)
            .bearer_auth(&token)
            .form(&[
                ("topic", "t"),
                ("id", id.as_str()),
                ("data", payload.as_str()),
            ])
            .send()
            .await
            .expect("publish")
            .status();
        assert_eq!(status, 200);
        published.push(id);
    }
    let (received, _normal) = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the normal subscriber was not held back")
        .expect("reader");
    assert_eq!(received, published);
    eventually(Duration::from_secs(5), "slow subscriber dropped", || {
        hub.close_reasons().contains(&CloseReason::SlowConsumer)
    })
    .await;
    assert_eq!(
        hub.hub.subscriber_count(),
        1,
        "only the normal subscriber is left"
    );

    // The stalled connection is closed by the server: draining it reaches EOF (or a reset).
    let drained = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the server closed the stalled connection");
}

/// Publishers, steady subscribers and subscribers that come and go all at once: the steady ones
/// get every event in one order, and the registry ends empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_publish_and_disconnect_run_concurrently() {
    const PUBLISHERS: usize = 4;
    const PER_PUBLISHER: usize = 100;
    let hub = std::sync::Arc::new(TestHub::start(config()).await);
    let mut steady = Vec::new();
    for query in ["topic=c", "topic=*", "topic=%7Bname%7D"] {
        steady.push(hub.subscribe(query).await);
    }
    let mut churn = Vec::new();
    for worker in 0..8 {
        let hub = hub.clone();
        churn.push(tokio::spawn(async move {
            for round in 0..20 {
                let query = match (worker + round) % 3 {
                    0 => "topic=c",
                    1 => "topic=*&topic=other",
                    _ => "topic=%7Bx%7D&lastEventID=earliest",
                };
                let mut sub = hub.subscribe(query).await;
                assert_eq!(sub.status, 200);
                let _ = sub
                    .next_event_within(Duration::from_millis(5 * (round as u64 % 4)))
                    .await;
            }
        }));
    }
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let hub = hub.clone();
        publishers.push(tokio::spawn(async move {
            for i in 0..PER_PUBLISHER {
                let (status, _) = hub
                    .publish(&[("topic", "c"), ("data", &format!("{p}-{i}"))])
                    .await;
                assert_eq!(status, 200);
            }
        }));
    }
    for task in publishers.into_iter().chain(churn) {
        task.await.expect("task");
    }
    let total = PUBLISHERS * PER_PUBLISHER;
    let first = steady[0].next_ids(total).await;
    for sub in &mut steady[1..] {
        assert_eq!(sub.next_ids(total).await, first);
    }
    eventually(
        Duration::from_secs(5),
        "only the steady subscribers left",
        || hub.hub.subscriber_count() == 3,
    )
    .await;
    drop(steady);
    eventually(Duration::from_secs(5), "registry empty", || {
        hub.hub.subscriber_count() == 0
    })
    .await;
}
