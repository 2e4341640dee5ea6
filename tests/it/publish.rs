//! Publishing (Mercure §Publication).

use crate::support::{config, TestHub};

#[tokio::test]
async fn publish_answers_the_id_as_text_and_subscribers_get_every_field() {
    let hub = TestHub::start(config()).await;
    let mut sub = hub.subscribe("topic=https://example.com/books/1").await;
    let response = reqwest::Client::new()
        .post(&hub.url)
        .bearer_auth(crate::support::publisher_token(&["*"]))
        .form(&[
            ("topic", "https://example.com/books/1"),
            ("data", "{\"title\":\"Dune\"}"),
            ("id", "book-1-v2"),
            ("type", "book"),
            ("retry", "2500"),
        ])
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/plain"));
    assert_eq!(response.text().await.expect("body"), "book-1-v2");

    let event = sub.next_event().await;
    assert_eq!(event.id, "book-1-v2");
    assert_eq!(event.event_type, "book");
    assert_eq!(event.data, "{\"title\":\"Dune\"}");
    assert_eq!(event.retry, Some(2500));
    let raw = String::from_utf8_lossy(&sub.raw);
    assert!(
        raw.contains("id: book-1-v2\nevent: book\nretry: 2500\ndata: {\"title\":\"Dune\"}\n\n"),
        "{raw}"
    );
}

#[tokio::test]
async fn publish_without_id_gets_a_unique_uuid_urn() {
    let hub = TestHub::start(config()).await;
    let (status, first) = hub.publish(&[("topic", "t"), ("data", "a")]).await;
    assert_eq!(status, 200);
    let (_, second) = hub.publish(&[("topic", "t"), ("data", "b")]).await;
    assert!(first.starts_with("urn:uuid:"), "{first}");
    assert_ne!(first, second);
}

#[tokio::test]
async fn alternate_topics_reach_their_subscribers_once() {
    let hub = TestHub::start(config()).await;
    let mut canonical = hub.subscribe("topic=/books/1").await;
    let mut alternate = hub.subscribe("topic=/users/7/books").await;
    let mut both = hub.subscribe("topic=/books/1&topic=/users/7/books").await;
    let (_, id) = hub
        .publish(&[
            ("topic", "/books/1"),
            ("topic", "/users/7/books"),
            ("data", "x"),
        ])
        .await;
    assert_eq!(canonical.next_event().await.id, id);
    assert_eq!(alternate.next_event().await.id, id);
    assert_eq!(both.next_event().await.id, id);
    let (_, next) = hub
        .publish(&[("topic", "/users/7/books"), ("data", "y")])
        .await;
    // `both` got the first event exactly once: its next event is the second publish.
    assert_eq!(both.next_event().await.id, next);
}

#[tokio::test]
async fn acknowledged_publish_is_already_in_history() {
    let hub = TestHub::start(config()).await;
    let (status, id) = hub.publish(&[("topic", "t"), ("data", "stored")]).await;
    assert_eq!(status, 200);
    // Subscribing right after the acknowledgement replays it: it was stored before the 200.
    let mut sub = hub.subscribe("topic=t&lastEventID=earliest").await;
    let event = sub.next_event().await;
    assert_eq!((event.id, event.data), (id, "stored".to_owned()));
}

#[tokio::test]
async fn line_breaks_in_data_survive_http_and_the_wire() {
    let hub = TestHub::start(config()).await;
    let mut sub = hub.subscribe("topic=t").await;
    hub.publish(&[("topic", "t"), ("data", "a\r\nb\rc\n\n d")])
        .await;
    assert_eq!(sub.next_event().await.data, "a\nb\nc\n\n d");
}
