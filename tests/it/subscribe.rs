//! Subscribing (Mercure §Subscription, §Topic Selectors).

use std::time::Duration;

use crate::support::{config, TestHub};

#[tokio::test]
async fn stream_headers_keep_proxies_from_buffering_or_caching() {
    let hub = TestHub::start(config()).await;
    // `open` fails if the headers do not arrive within 5 s: they are sent before any event.
    let sub = hub.subscribe("topic=t").await;
    assert_eq!(sub.status, 200);
    assert_eq!(sub.header("content-type"), Some("text/event-stream"));
    assert_eq!(
        sub.header("cache-control"),
        Some("private, no-cache, no-store, must-revalidate, max-age=0")
    );
    assert_eq!(sub.header("x-accel-buffering"), Some("no"));
    // No Last-Event-ID asked, none answered.
    assert_eq!(sub.header("last-event-id"), None);
}

#[tokio::test]
async fn headers_arrive_at_once_on_an_idle_hub() {
    let hub = TestHub::start(config()).await;
    let started = std::time::Instant::now();
    let sub = hub
        .subscribe("topic=nothing-will-ever-be-published-here")
        .await;
    assert_eq!(sub.status, 200);
    // Far below the 15 s heartbeat: the headers were flushed, not carried by a first frame.
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn exact_wildcard_and_template_selectors() {
    let hub = TestHub::start(config()).await;
    let mut exact = hub.subscribe("topic=https://example.com/books/1").await;
    let mut any = hub.subscribe("topic=*").await;
    let mut template = hub
        .subscribe("topic=https://example.com/books/%7Bid%7D")
        .await;
    let mut other = hub
        .subscribe("topic=https://example.com/authors/%7Bid%7D")
        .await;

    let (_, book1) = hub
        .publish(&[("topic", "https://example.com/books/1"), ("data", "1")])
        .await;
    let (_, book2) = hub
        .publish(&[("topic", "https://example.com/books/2"), ("data", "2")])
        .await;

    assert_eq!(exact.next_event().await.id, book1);
    assert_eq!(any.next_ids(2).await, [book1.clone(), book2.clone()]);
    assert_eq!(template.next_ids(2).await, [book1, book2]);
    exact.assert_no_event(Duration::from_millis(200)).await;
    other.assert_no_event(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn every_subscriber_of_a_topic_sees_the_same_order() {
    let hub = TestHub::start(config()).await;
    let mut subs = Vec::new();
    for query in ["topic=t", "topic=*", "topic=%7Bx%7D", "topic=t&topic=u"] {
        subs.push(hub.subscribe(query).await);
    }
    let mut published = Vec::new();
    let publishes = (0..50).map(|i| {
        let hub = &hub;
        async move {
            hub.publish(&[("topic", "t"), ("data", &i.to_string())])
                .await
                .1
        }
    });
    // Concurrent publishers: the hub picks one order, and every subscriber sees that order.
    published.extend(futures_util::future::join_all(publishes).await);
    let first = subs[0].next_ids(50).await;
    for sub in &mut subs[1..] {
        assert_eq!(sub.next_ids(50).await, first);
    }
    let mut sorted_first = first.clone();
    sorted_first.sort();
    published.sort();
    assert_eq!(sorted_first, published);
}
