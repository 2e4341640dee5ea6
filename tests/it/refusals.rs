//! Refusals of a subscription for a cause that will pass (a full hub, shutdown): an
//! `EventSource` is told to come back in the stream (`200`, `retry:`, end), because a browser
//! never retries an error status; other clients get `503` with `Retry-After`. Causes that will
//! not pass keep their 4xx whatever the client accepts.

use std::collections::BTreeSet;
use std::time::Duration;

use ssehub::HubConfig;

use crate::support::chromium::{event_source_page, EVENT_SOURCE_STATE};
use crate::support::sse::{End, SseClient};
use crate::support::{config, expect_metric, TestHub};

/// Opens `url` as an `EventSource` does and reads the refusal to its end: the `retry:` delay.
async fn refused_for_now(url: &str) -> u64 {
    let mut sub = SseClient::open(url, &[]).await;
    assert_eq!(sub.status, 200, "an EventSource gets a 200 stream");
    assert_eq!(sub.header("content-type"), Some("text/event-stream"));
    assert_eq!(
        sub.wait_end(Duration::from_secs(5)).await,
        Some(End::Clean),
        "the refusal ends its stream so that the browser reconnects"
    );
    let raw = String::from_utf8_lossy(&sub.raw).into_owned();
    assert!(
        raw.contains(": refused for now: "),
        "the stream says why: {raw:?}"
    );
    let mut parser = ssehub::wire::Parser::new();
    assert_eq!(
        parser.push(&sub.raw).expect("a valid event stream"),
        vec![],
        "no event reaches the page's handlers: {raw:?}"
    );
    parser
        .reconnection_time_ms()
        .unwrap_or_else(|| panic!("no retry field in {raw:?}"))
}

#[tokio::test]
async fn a_full_hub_tells_an_event_source_to_come_back_later_with_jitter() {
    let hub = TestHub::start(HubConfig {
        max_subscribers: 1,
        ..config()
    })
    .await;
    let held = hub.subscribe("topic=t").await;
    assert_eq!(held.status, 200);
    let url = format!("{}?topic=t", hub.url);
    let mut delays = BTreeSet::new();
    for _ in 0..8 {
        let delay = refused_for_now(&url).await;
        assert!(
            (5_000..=10_000).contains(&delay),
            "between once and twice the full hub's 5 s: {delay} ms"
        );
        delays.insert(delay);
    }
    assert!(
        delays.len() > 1,
        "refused browsers must not all come back at the same moment: {delays:?}"
    );
    // Nothing stayed registered, and the refusals are counted like the 503s they replace.
    assert_eq!(hub.hub.subscriber_count(), 1);
    let metrics = hub.hub.render_metrics().await;
    assert!(
        expect_metric(
            &metrics,
            r#"ssehub_requests_rejected_total{reason="unavailable"}"#
        ) >= 8,
        "{metrics}"
    );

    // Any other client still reads a 503 with Retry-After (covered in `bad_input` too).
    let plain = reqwest::get(&url).await.expect("get");
    assert_eq!(plain.status(), 503);
    assert_eq!(plain.headers()["retry-after"], "5");

    // When the place frees, the same request is served.
    drop(held);
    crate::support::eventually(Duration::from_secs(2), "the place frees", || {
        hub.hub.subscriber_count() == 0
    })
    .await;
    let mut sub = hub.subscribe("topic=t").await;
    assert_eq!(sub.status, 200);
    let (_, id) = hub.publish(&[("topic", "t"), ("data", "after")]).await;
    assert_eq!(sub.next_event().await.id, id);
}

#[tokio::test]
async fn a_hub_shutting_down_tells_an_event_source_to_come_back_soon() {
    let hub = TestHub::start(config()).await;
    hub.hub.shutdown().await;
    let delay = refused_for_now(&format!("{}?topic=t", hub.url)).await;
    assert!((1_000..=2_000).contains(&delay), "{delay} ms");
    let plain = reqwest::get(format!("{}?topic=t", hub.url))
        .await
        .expect("get");
    assert_eq!(plain.status(), 503);
}

#[tokio::test]
async fn causes_that_will_not_pass_keep_their_status_for_an_event_source_too() {
    let http = crate::support::http_config();
    let hub = TestHub::start_http(
        HubConfig {
            max_subscribers: 1,
            ..config()
        },
        ssehub::HttpConfig {
            auth: ssehub::auth::AuthConfig {
                anonymous: false,
                ..http.auth.clone()
            },
            ..http
        },
    )
    .await;
    // Without a token (anonymous subscribers are off), with a bad one, and a blank selector:
    // retrying changes nothing, so the browser is right to give up.
    let missing = SseClient::open(&format!("{}?topic=t", hub.url), &[]).await;
    assert_eq!(missing.status, 401);
    let forged = SseClient::open(
        &format!("{}?topic=t", hub.url),
        &[("authorization", "Bearer not-a-token")],
    )
    .await;
    assert_eq!(forged.status, 401);
    let token = crate::support::subscriber_token(&["*"], None);
    let blank = SseClient::open(
        &format!("{}?topic=%20", hub.url),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(blank.status, 400);
    assert_eq!(hub.hub.subscriber_count(), 0);
}

#[tokio::test]
async fn a_browser_refused_by_a_full_hub_comes_back_by_itself() {
    let hub = TestHub::start(HubConfig {
        max_subscribers: 1,
        ..config()
    })
    .await;
    let held = hub.subscribe("topic=t").await;
    assert_eq!(held.status, 200);
    let (_browser, mut page) = event_source_page(&format!("http://{}", hub.addr), "topic=t").await;
    // Refused: the stream opened and ended, and the EventSource waits to reconnect (state 0,
    // CONNECTING). An error status would have closed it for good (state 2).
    page.wait_until("t.errors >= 1", Duration::from_secs(20), EVENT_SOURCE_STATE)
        .await;
    let state = page.eval(EVENT_SOURCE_STATE).await;
    let state: serde_json::Value =
        serde_json::from_str(state.as_str().expect("state")).expect("JSON");
    assert_eq!(state["states"][0], 0, "the browser will retry: {state}");
    assert_eq!(
        hub.hub.subscriber_count(),
        1,
        "the refused page holds no place"
    );

    // The place frees; the page comes back within its retry delay (5–10 s) and gets events.
    drop(held);
    crate::support::eventually(Duration::from_secs(2), "the place frees", || {
        hub.hub.subscriber_count() == 0
    })
    .await;
    crate::support::eventually(Duration::from_secs(15), "the page reconnects", || {
        hub.hub.subscriber_count() == 1
    })
    .await;
    let (status, _) = hub
        .publish(&[("topic", "t"), ("data", "after-the-refusal")])
        .await;
    assert_eq!(status, 200);
    page.wait_until(
        "t.data.includes('after-the-refusal') && es.readyState === 1",
        Duration::from_secs(10),
        EVENT_SOURCE_STATE,
    )
    .await;
}
