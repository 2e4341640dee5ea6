//! The fan-out under one fast publisher: streams are woken a slice at a time, and when the
//! fan-out lags the publisher is paced (its answers wait) instead of subscribers being dropped.

use std::time::Duration;

use ssehub::wire::Parser;
use ssehub::HubConfig;
use tokio::io::AsyncReadExt;

use crate::support::{config, eventually, heavy, open_raw_streams, publisher_token, TestHub};

/// With a tiny queue per subscriber, a publisher that ran ahead of the fan-out would overflow
/// the queues of the streams woken last (a pass over 2,000 streams takes 16 slices, and each
/// slice may take one more event): every subscriber would be dropped as too slow. A budget of
/// one byte makes the fan-out take a new event only once the previous one reached every stream,
/// so the publisher waits instead, and everyone gets everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_fan_out_paces_the_publisher_instead_of_dropping_subscribers() {
    const SUBSCRIBERS: usize = 2_000;
    const EVENTS: usize = 100;
    let _heavy = heavy().await;
    let hub = TestHub::start(HubConfig {
        queue_capacity: 4,
        max_queued_bytes: 1,
        ..config()
    })
    .await;
    let streams = open_raw_streams(hub.addr, "topic=t", SUBSCRIBERS).await;
    eventually(Duration::from_secs(10), "all registered", || {
        hub.hub.subscriber_count() == SUBSCRIBERS
    })
    .await;
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let mut parser = Parser::new();
                let mut ids = Vec::with_capacity(EVENTS);
                let mut buf = vec![0u8; 16 * 1024];
                while ids.len() < EVENTS {
                    let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf))
                        .await
                        .expect("an event within 30 s")
                        .expect("read");
                    assert!(n > 0, "the stream ended after {} events", ids.len());
                    // Chunked framing: the size lines are not SSE fields the parser keeps
                    // (they have no colon and end in CRLF: ignored lines), the frames are.
                    for event in parser.push(&buf[..n]).expect("well-formed stream") {
                        ids.push(event.id);
                    }
                }
                ids
            })
        })
        .collect();

    let client = reqwest::Client::new();
    let token = publisher_token(&["*"]);
    for i in 0..EVENTS {
        let status = client
            .post(&hub.url)
            .bearer_auth(&token)
            .form(&[("topic", "t"), ("id", &format!("e{i}")), ("data", "x")])
            .send()
            .await
            .expect("publish")
            .status();
        assert_eq!(status, 200);
    }
    let expected: Vec<String> = (0..EVENTS).map(|i| format!("e{i}")).collect();
    for reader in readers {
        assert_eq!(reader.await.expect("reader"), expected);
    }
    let metrics = hub.hub.metrics();
    assert_eq!(metrics.slow_subscribers_disconnected.get(), 0);
    assert!(
        metrics.fanout_paced.get() > 0,
        "the fan-out never paced the publisher"
    );
}
