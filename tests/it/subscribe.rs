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
    // No Last-Event-ID asked: the header names where the stream starts (nothing published
    // yet), as the stream's first frame does.
    assert_eq!(sub.header("last-event-id"), Some("earliest"));
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

/// Reads from `stream` until `needle` has arrived (or 5 s passed); returns everything read.
async fn read_until(stream: &mut tokio::net::TcpStream, needle: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut text = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&text).contains(needle) {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => text.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// Reads from `stream` until the hub closes it (EOF, or a reset after the answer); fails the test
/// if the connection is still open after 5 s. Returns everything read.
async fn read_to_close(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut text = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => text.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the connection was still open after 5 s; read so far: {:?}",
                String::from_utf8_lossy(&text)
            ),
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// Plain HTTP/1.1 subscriptions are written by the hub itself (`server/direct.rs`), not by
/// hyper: check the wire format and the ways such a stream ends.
#[tokio::test]
async fn subscriptions_written_directly_are_well_formed_http() {
    use tokio::io::AsyncWriteExt;
    let hub = TestHub::start(config()).await;
    let mut stream = tokio::net::TcpStream::connect(hub.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    let head = read_until(&mut stream, "\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("\r\ntransfer-encoding: chunked\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\ndate: "), "{head}");
    assert!(
        head.contains("\r\ncontent-type: text/event-stream\r\n"),
        "{head}"
    );
    let (status, _) = hub
        .publish(&[("topic", "t"), ("id", "e1"), ("data", "hello")])
        .await;
    assert_eq!(status, 200);
    // One chunk: its size in hex, the frame, CRLF.
    let frame = "id: e1\ndata: hello\n\n";
    let chunk = read_until(&mut stream, "hello\n\n\r\n").await;
    assert!(
        chunk.ends_with(&format!("{:x}\r\n{frame}\r\n", frame.len())),
        "{chunk:?}"
    );
    // A client may not send anything more on an open stream: the hub closes it.
    assert_eq!(hub.hub.subscriber_count(), 1);
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    crate::support::eventually(Duration::from_secs(5), "the stream to close", || {
        hub.hub.subscriber_count() == 0
    })
    .await;
    read_to_close(&mut stream).await;

    // An error answer is written whole, with its length, and the connection closes.
    let mut stream = tokio::net::TcpStream::connect(hub.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /.well-known/mercure HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    let answer = read_to_close(&mut stream).await;
    let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
    assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
    assert!(head.contains("\r\nconnection: close"), "{head}");
    assert!(
        head.contains(&format!("\r\ncontent-length: {}", body.len())),
        "{head}"
    );
    // Framing fields once each (the router's own content-length is replaced, not repeated).
    assert_eq!(head.matches("content-length").count(), 1, "{head}");
    assert_eq!(head.matches("connection").count(), 1, "{head}");

    // A subscription with a request body is hyper's to answer, and works as well.
    let mut stream = tokio::net::TcpStream::connect(hub.addr)
        .await
        .expect("connect");
    stream
        .write_all(
            b"GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab",
        )
        .await
        .expect("request");
    let head = read_until(&mut stream, "\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let (status, _) = hub
        .publish(&[("topic", "t"), ("id", "e2"), ("data", "again")])
        .await;
    assert_eq!(status, 200);
    assert!(read_until(&mut stream, "again")
        .await
        .contains("id: e2\ndata: again\n\n"));
}
