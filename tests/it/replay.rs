//! Reconnection and state reconciliation (Mercure §Reconciliation).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ssehub::HubConfig;

use crate::support::{config, publisher_token, SseClient, TestHub};

async fn publish_ids(hub: &TestHub, topic: &str, ids: &[&str]) {
    for id in ids {
        let (status, _) = hub
            .publish(&[("topic", topic), ("id", id), ("data", id)])
            .await;
        assert_eq!(status, 200);
    }
}

#[tokio::test]
async fn last_event_id_header_replays_what_followed_and_says_so() {
    let hub = TestHub::start(config()).await;
    publish_ids(&hub, "t", &["a", "b", "c"]).await;
    publish_ids(&hub, "other", &["x"]).await;
    publish_ids(&hub, "t", &["d"]).await;
    let mut sub = SseClient::open(&format!("{}?topic=t", hub.url), &[("last-event-id", "b")]).await;
    assert_eq!(sub.header("last-event-id"), Some("b"));
    assert_eq!(sub.next_ids(2).await, ["c", "d"]);
    sub.assert_no_event(Duration::from_millis(100)).await;
    // Live events follow the replay.
    publish_ids(&hub, "t", &["e"]).await;
    assert_eq!(sub.next_event().await.id, "e");
    // A gap-free resume never carries the loss signal (it would have come first).
    assert!(sub.signals.is_empty(), "{:?}", sub.signals);
    assert!(!String::from_utf8_lossy(&sub.raw).contains("event: mercure"));
}

/// The signal's JSON, checked field by field.
fn assert_gap_signal(sub: &SseClient, requested: &str, resumed_after: &str) {
    assert_eq!(sub.signals.len(), 1, "one loss signal: {:?}", sub.signals);
    let signal = &sub.signals[0];
    assert_eq!(
        signal.id, "",
        "the signal carries no id (the last event id stays)"
    );
    let data: serde_json::Value = serde_json::from_str(&signal.data).expect("JSON data");
    assert_eq!(data["type"], "replayGap", "{data}");
    assert_eq!(data["requestedId"], requested, "{data}");
    assert_eq!(data["resumedAfter"], resumed_after, "{data}");
    let raw = String::from_utf8_lossy(&sub.raw);
    assert!(
        raw.starts_with("event: mercure\n"),
        "the stream starts with it: {raw:?}"
    );
}

#[tokio::test]
async fn a_stream_without_last_event_id_starts_with_a_cursor_and_resumes_from_it() {
    let hub = TestHub::start(config()).await;
    publish_ids(&hub, "t", &["a", "b"]).await;
    let mut sub = hub.subscribe("topic=t").await;
    assert_eq!(sub.header("last-event-id"), Some("b"));
    // The first frame names the newest event and fires nothing.
    sub.assert_no_event(Duration::from_millis(200)).await;
    assert_eq!(String::from_utf8_lossy(&sub.raw), "id: b\n\n");
    // Cut before any event; what is published meanwhile is replayed from the cursor, once.
    drop(sub);
    publish_ids(&hub, "t", &["c", "d"]).await;
    let mut back = hub.subscribe("topic=t&lastEventID=b").await;
    assert_eq!(back.next_ids(2).await, ["c", "d"]);
    back.assert_no_event(Duration::from_millis(200)).await;
    assert!(back.signals.is_empty());
}

#[tokio::test]
async fn the_initial_cursor_can_be_turned_off() {
    let hub = TestHub::start(HubConfig {
        initial_cursor: false,
        ..config()
    })
    .await;
    publish_ids(&hub, "t", &["a"]).await;
    let mut sub = hub.subscribe("topic=t").await;
    assert_eq!(sub.header("last-event-id"), None);
    sub.assert_no_event(Duration::from_millis(200)).await;
    assert!(
        sub.raw.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&sub.raw)
    );
}

#[tokio::test]
async fn publishers_cannot_forge_the_hub_signal() {
    let hub = TestHub::start(config()).await;
    let (status, body) = hub.publish(&[("topic", "t"), ("type", "mercure")]).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("reserved"), "{body}");
}

#[tokio::test]
async fn last_event_id_query_parameter_works_and_the_header_wins() {
    let hub = TestHub::start(config()).await;
    publish_ids(&hub, "t", &["a", "b", "c"]).await;
    let mut by_query = hub.subscribe("topic=t&lastEventID=a").await;
    assert_eq!(by_query.header("last-event-id"), Some("a"));
    assert_eq!(by_query.next_ids(2).await, ["b", "c"]);
    let mut both = SseClient::open(
        &format!("{}?topic=t&lastEventID=a", hub.url),
        &[("last-event-id", "b")],
    )
    .await;
    assert_eq!(both.header("last-event-id"), Some("b"));
    assert_eq!(both.next_event().await.id, "c");
}

#[tokio::test]
async fn earliest_replays_everything_kept() {
    let hub = TestHub::start(config()).await;
    publish_ids(&hub, "t", &["a", "b"]).await;
    let mut sub = hub.subscribe("topic=t&lastEventID=earliest").await;
    assert_eq!(sub.header("last-event-id"), Some("earliest"));
    assert_eq!(sub.next_ids(2).await, ["a", "b"]);
    assert!(sub.signals.is_empty(), "asking for the oldest is no gap");
}

#[tokio::test]
async fn unknown_id_is_not_treated_as_now() {
    let hub = TestHub::start(config()).await;
    publish_ids(&hub, "t", &["a", "b"]).await;
    let mut sub = hub.subscribe("topic=t&lastEventID=never-published").await;
    // The client learns that replay did not resume after its id...
    assert_eq!(sub.header("last-event-id"), Some("earliest"));
    // ...and gets everything the hub still has rather than nothing.
    assert_eq!(sub.next_ids(2).await, ["a", "b"]);
    // The browser, which cannot read that header, is told in the stream.
    assert_gap_signal(&sub, "never-published", "earliest");
}

#[tokio::test]
async fn id_dropped_from_history_reports_where_replay_really_starts() {
    let hub = TestHub::start(HubConfig {
        history_size: 2,
        ..config()
    })
    .await;
    publish_ids(&hub, "t", &["a", "b", "c", "d"]).await;
    let mut sub = hub.subscribe("topic=t&lastEventID=a").await;
    // "b" was dropped: replay resumes after it, not after "a", so the client knows it lost "b".
    assert_eq!(sub.header("last-event-id"), Some("b"));
    assert_eq!(sub.next_ids(2).await, ["c", "d"]);
    assert_gap_signal(&sub, "a", "b");
}

#[tokio::test]
async fn empty_history_says_earliest() {
    let hub = TestHub::start(config()).await;
    let sub = hub.subscribe("topic=t&lastEventID=x").await;
    assert_eq!(sub.header("last-event-id"), Some("earliest"));
}

/// A publisher publishes 400 events as fast as it can; a subscriber reads a few, disconnects,
/// reconnects with its last id, and so on. Together its connections must see every event
/// exactly once, in order: registering before reading history leaves no gap, and dropping live
/// events the replay covered leaves no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_during_a_publish_storm_loses_and_repeats_nothing() {
    const TOTAL: usize = 400;
    let hub = Arc::new(TestHub::start(config()).await);
    let done = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (hub, done) = (hub.clone(), done.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let token = publisher_token(&["*"]);
            let mut ids = Vec::new();
            for i in 0..TOTAL {
                let id = format!("e{i}");
                let response = client
                    .post(&hub.url)
                    .bearer_auth(&token)
                    .form(&[("topic", "storm"), ("id", id.as_str()), ("data", "x")])
                    .send()
                    .await
                    .expect("publish");
                assert_eq!(response.status(), 200);
                ids.push(id);
            }
            done.store(true, Ordering::SeqCst);
            ids
        })
    };
    let mut received: Vec<String> = Vec::new();
    let mut connections = 0;
    // The first connection starts before the first publish and resumes from `earliest`.
    let mut last = "earliest".to_owned();
    while received.len() < TOTAL {
        connections += 1;
        let mut sub = SseClient::open(
            &format!("{}?topic=storm", hub.url),
            &[("last-event-id", last.as_str())],
        )
        .await;
        if last != "earliest" {
            assert_eq!(sub.header("last-event-id"), Some(last.as_str()));
        }
        // Read a handful, then drop the connection mid-stream.
        for _ in 0..7 {
            match sub.next_event_within(Duration::from_secs(5)).await {
                Some(event) => {
                    last = event.id.clone();
                    received.push(event.id);
                }
                None => break,
            }
            if received.len() == TOTAL {
                break;
            }
        }
    }
    let published = publisher.await.expect("publisher");
    assert!(done.load(Ordering::SeqCst));
    assert!(connections > 10, "the test reconnected {connections} times");
    assert_eq!(received, published, "every event exactly once, in order");
}

#[tokio::test]
async fn non_ascii_ids_resume_like_any_other() {
    let hub = TestHub::start(config()).await;
    publish_ids(&hub, "t", &["주문-1🦀", "주문-2"]).await;
    // Browsers send Last-Event-ID as UTF-8.
    let value = reqwest::header::HeaderValue::from_bytes("주문-1🦀".as_bytes()).expect("bytes");
    let response = reqwest::Client::new()
        .get(format!("{}?topic=t", hub.url))
        .header("last-event-id", value)
        .send()
        .await
        .expect("subscribe");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["last-event-id"].as_bytes(),
        "주문-1🦀".as_bytes()
    );
    let mut parser = ssehub::wire::Parser::new();
    let mut stream = response.bytes_stream();
    let mut events = Vec::new();
    while events.is_empty() {
        use futures_util::StreamExt;
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("event")
            .expect("chunk")
            .expect("bytes");
        events.extend(parser.push(&chunk).expect("parse"));
    }
    assert_eq!(events[0].id, "주문-2");
}

#[tokio::test]
async fn an_empty_last_event_id_counts_as_absent() {
    let hub = TestHub::start(config()).await;
    publish_ids(&hub, "t", &["a", "b"]).await;
    let mut sub = SseClient::open(&format!("{}?topic=t", hub.url), &[("last-event-id", "")]).await;
    // Absent: the stream starts at the newest event, and says so.
    assert_eq!(sub.header("last-event-id"), Some("b"));
    sub.assert_no_event(Duration::from_millis(200)).await;
    // An empty header leaves the query parameter in charge.
    let mut sub = SseClient::open(
        &format!("{}?topic=t&lastEventID=a", hub.url),
        &[("last-event-id", "")],
    )
    .await;
    assert_eq!(sub.header("last-event-id"), Some("a"));
    assert_eq!(sub.next_event().await.id, "b");
}

/// A replay that falls behind retention (events it had not reached yet were dropped) ends the
/// stream rather than skipping them silently; the client's reconnection then reports the loss.
#[tokio::test]
async fn a_replay_overtaken_by_retention_ends_instead_of_skipping() {
    let closes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = closes.clone();
    let hub = ssehub::Hub::builder(HubConfig {
        history_size: 1000,
        ..HubConfig::default()
    })
    .on_close(move |_, reason, _| recorded.lock().expect("lock").push(reason))
    .build()
    .await
    .expect("hub");
    for i in 0..1000 {
        let mut event = ssehub::Event::new("t", "x".repeat(100));
        event.id = format!("old-{i}");
        hub.publish(event).await.expect("publish");
    }
    let mut subscription = hub
        .subscribe(ssehub::SubscribeRequest {
            topics: vec!["t".into()],
            last_event_id: Some("earliest".into()),
            ..Default::default()
        })
        .await
        .expect("subscribe");
    use futures_util::StreamExt;
    // The first page of the replay.
    let first = subscription.stream.next().await.expect("first frame");
    assert!(std::str::from_utf8(&first)
        .expect("utf-8")
        .starts_with("id: old-0\n"));
    // Meanwhile 1,000 new events push every old one out of the history.
    for i in 0..1000 {
        let mut event = ssehub::Event::new("t", "y");
        event.id = format!("new-{i}");
        hub.publish(event).await.expect("publish");
    }
    // Whatever was already read may still come, then the stream ends.
    while tokio::time::timeout(Duration::from_secs(5), subscription.stream.next())
        .await
        .expect("the stream ends")
        .is_some()
    {}
    drop(subscription);
    assert_eq!(
        *closes.lock().expect("lock"),
        [ssehub::CloseReason::SlowConsumer]
    );
    hub.shutdown().await;
}

/// A client resuming from `earliest` asked for whatever is oldest: events that retention drops
/// between locating the start and reading the first page are not a gap for it, and its stream
/// must not end (it would retry into the same race on a busy hub).
#[tokio::test]
async fn earliest_replay_overtaken_by_retention_still_delivers_what_is_left() {
    use futures_util::StreamExt;
    let hub = ssehub::Hub::builder(HubConfig {
        history_size: 5,
        ..config()
    })
    .build()
    .await
    .expect("hub");
    let publish = |id: &'static str| {
        let hub = hub.clone();
        async move {
            let mut event = ssehub::Event::new("t", id);
            event.id = id.into();
            hub.publish(event).await.expect("publish");
        }
    };
    for id in ["e1", "e2", "e3", "e4", "e5"] {
        publish(id).await;
    }
    // Located now (after 0, through e5), read only when first polled.
    let subscription = hub
        .subscribe(ssehub::SubscribeRequest {
            topics: vec!["t".into()],
            last_event_id: Some("earliest".into()),
            ..Default::default()
        })
        .await
        .expect("subscribe");
    // Retention drops e1 and e2 before the first page is read.
    publish("e6").await;
    publish("e7").await;
    let mut stream = subscription.stream;
    let mut text = String::new();
    while !text.contains("id: e7") {
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
            Ok(Some(frame)) => text.push_str(&String::from_utf8_lossy(&frame)),
            // The stream ended (or stalled) before e7.
            Ok(None) | Err(_) => break,
        }
    }
    let ids: Vec<_> = text
        .lines()
        .filter_map(|line| line.strip_prefix("id: "))
        .collect();
    assert_eq!(ids, ["e3", "e4", "e5", "e6", "e7"], "{text}");
}
