//! Bad input gets a clear 4xx (or 503 with Retry-After) and changes nothing.

use std::time::Duration;

use ssehub::{HttpConfig, HubConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{config, http_config, publisher_token, TestHub};

async fn post_raw(hub: &TestHub, content_type: &str, body: Vec<u8>) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(&hub.url)
        .bearer_auth(publisher_token(&["*"]))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("post");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

#[tokio::test]
async fn rejected_publishes_get_clear_errors_and_change_nothing() {
    let hub = TestHub::start_http(
        config(),
        HttpConfig {
            max_publish_bytes: 1024,
            ..http_config()
        },
    )
    .await;
    let mut sub = hub.subscribe("topic=*").await;
    let form = "application/x-www-form-urlencoded";
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            form,
            format!("topic=t&data={}", "x".repeat(2000)).into_bytes(),
            413,
            "limit",
        ),
        (form, b"data=no-topic".to_vec(), 400, "missing topic"),
        (
            form,
            b"topic=&data=x".to_vec(),
            400,
            "`topic` must not be empty",
        ),
        (
            form,
            b"topic=+%09&data=x".to_vec(),
            400,
            "`topic` must not be empty",
        ),
        (form, b"topic=t&topic=&data=x".to_vec(), 400, "`topic`"),
        (form, b"topic=t&id=+a".to_vec(), 400, "space or tab"),
        (form, b"topic=t&id=a%09".to_vec(), 400, "space or tab"),
        (
            form,
            b"topic=t&type=++".to_vec(),
            400,
            "`type` must not be only whitespace",
        ),
        (form, b"topic=t&id=a%0Ab".to_vec(), 400, "`id`"),
        (form, b"topic=t&id=a%0Db".to_vec(), 400, "`id`"),
        (form, b"topic=t&type=a%0D%0Ab".to_vec(), 400, "`type`"),
        (form, b"topic=t&id=%23fragment".to_vec(), 400, "`#`"),
        (form, b"topic=t&id=earliest".to_vec(), 400, "earliest"),
        (form, b"topic=t&retry=soon".to_vec(), 400, "retry"),
        (
            "application/json",
            b"{\"topic\":\"t\"}".to_vec(),
            415,
            "x-www-form-urlencoded",
        ),
        (form, vec![0xff, 0xfe, b'&', b'='], 400, "missing topic"),
    ];
    for (content_type, body, status, needle) in cases {
        let (got, message) = post_raw(&hub, content_type, body).await;
        assert_eq!(got, status, "{message}");
        assert!(
            message.contains(needle),
            "{message:?} should mention {needle:?}"
        );
    }
    let too_many: String = (0..100).map(|i| format!("topic=t{i}&")).collect();
    let (status, message) = post_raw(&hub, form, too_many.into_bytes()).await;
    assert_eq!(status, 400, "{message}");
    // Nothing was stored or delivered.
    assert_eq!(hub.hub.history_len(), 0);
    sub.assert_no_event(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn bad_subscriptions_get_400() {
    let hub = TestHub::start(config()).await;
    let none = hub.subscribe("lastEventID=x").await;
    assert_eq!(none.status, 400);
    for query in ["topic=", "topic=+", "topic=t&topic=", "topic=%09"] {
        let blank = reqwest::get(format!("{}?{query}", hub.url))
            .await
            .expect("get");
        assert_eq!(blank.status(), 400, "{query}");
        let message = blank.text().await.expect("body");
        assert!(message.contains("`topic` must not be empty"), "{message}");
    }
    // An empty `authorization` query parameter is no token (an anonymous subscription here);
    // an `Authorization` header with an empty bearer token is a malformed header.
    let anonymous = hub.subscribe("topic=t&authorization=").await;
    assert_eq!(anonymous.status, 200);
    drop(anonymous);
    let empty_bearer = reqwest::Client::new()
        .get(format!("{}?topic=t", hub.url))
        .header("authorization", "Bearer ")
        .send()
        .await
        .expect("get");
    assert_eq!(empty_bearer.status(), 401);
    let not_utf8 = reqwest::Client::new()
        .get(format!("{}?topic=t", hub.url))
        .header(
            "last-event-id",
            reqwest::header::HeaderValue::from_bytes(b"id-\xff").expect("obs-text"),
        )
        .send()
        .await
        .expect("get");
    assert_eq!(not_utf8.status(), 400);
    assert!(not_utf8.text().await.expect("body").contains("UTF-8"));
    let too_many: String = (0..65).map(|i| format!("topic=t{i}&")).collect();
    let sub = hub.subscribe(&too_many).await;
    assert_eq!(sub.status, 400);
    assert_eq!(hub.hub.subscriber_count(), 0);
}

#[tokio::test]
async fn more_streams_than_allowed_get_503_with_retry_after() {
    let hub = TestHub::start(HubConfig {
        max_subscribers: 2,
        ..config()
    })
    .await;
    let _a = hub.subscribe("topic=t").await;
    let _b = hub.subscribe("topic=t").await;
    let response = reqwest::get(format!("{}?topic=t", hub.url))
        .await
        .expect("get");
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    assert!(response
        .text()
        .await
        .expect("body")
        .contains("too many open streams"));
    drop(_a);
    crate::support::eventually(Duration::from_secs(2), "a slot frees up", || {
        hub.hub.subscriber_count() == 1
    })
    .await;
    assert_eq!(hub.subscribe("topic=t").await.status, 200);
}

#[tokio::test]
async fn garbage_requests_never_break_the_server() {
    let hub = TestHub::start(config()).await;
    let requests: &[&[u8]] = &[
        b"GET /.well-known/mercure?topic=%ZZ&topic=%FF%FE HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /.well-known/mercure?topic HTTP/1.1\r\nHost: x\r\nLast-Event-ID: \xff\xfe\r\n\r\n",
        b"POST /.well-known/mercure HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\r\nContent-Length: 3\r\n\r\na=b",
        b"POST /.well-known/mercure HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n",
        b"BREW /.well-known/mercure HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x00\x01\x02 garbage\r\n\r\n",
    ];
    for request in requests {
        let mut stream = tokio::net::TcpStream::connect(hub.addr)
            .await
            .expect("connect");
        stream.write_all(request).await.expect("write");
        let mut response = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut response))
            .await
            .expect("an answer or a close")
            .unwrap_or(0);
        let text = String::from_utf8_lossy(&response[..n]);
        assert!(n == 0 || text.starts_with("HTTP/1.1 "), "{text}");
        assert!(!text.starts_with("HTTP/1.1 5"), "{text}");
    }
    // Still serving.
    let (status, _) = hub.publish(&[("topic", "t")]).await;
    assert_eq!(status, 200);
}
