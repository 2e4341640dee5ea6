//! What a browser's `EventSource` sees when it resumes: a stream opened without an id still
//! gives it a cursor (so a cut before its first event loses nothing), and a replay that cannot
//! be gap-free tells it so with an event of the reserved `mercure` type, which `onmessage`
//! never sees. Headless Chromium, on the hub's own origin.

use std::time::Duration;

use crate::support::chromium::{event_source_page, EVENT_SOURCE_STATE};
use crate::support::{config, eventually, TestHub};

#[tokio::test]
async fn a_browser_cut_before_its_first_event_gets_what_followed_once() {
    let hub = TestHub::start(config()).await;
    let (_, old) = hub.publish(&[("topic", "t"), ("data", "old")]).await;
    let (_browser, mut page) = event_source_page(&format!("http://{}", hub.addr), "topic=t").await;
    page.wait_until(
        "es.readyState === 1",
        Duration::from_secs(20),
        EVENT_SOURCE_STATE,
    )
    .await;
    eventually(Duration::from_secs(5), "the page's stream is open", || {
        hub.hub.subscriber_count() == 1
    })
    .await;
    // Cut the connection before any event reached the page.
    let id = *hub
        .opens
        .lock()
        .expect("lock")
        .last()
        .expect("an open stream");
    assert!(hub.hub.close_subscriber(id));
    eventually(Duration::from_secs(2), "the stream is gone", || {
        hub.hub.subscriber_count() == 0
    })
    .await;
    // Two events while the browser waits to reconnect (its own delay, about 3 s).
    for data in ["first-missed", "second-missed"] {
        let (status, _) = hub.publish(&[("topic", "t"), ("data", data)]).await;
        assert_eq!(status, 200);
    }
    assert_eq!(
        hub.hub.subscriber_count(),
        0,
        "both were published while the page was away"
    );
    page.wait_until(
        "t.data.length >= 2 && es.readyState === 1",
        Duration::from_secs(15),
        EVENT_SOURCE_STATE,
    )
    .await;
    // A little longer, to see a duplicate if one were coming.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let state: serde_json::Value =
        serde_json::from_str(page.eval(EVENT_SOURCE_STATE).await.as_str().expect("state"))
            .expect("JSON");
    assert_eq!(
        state["data"],
        serde_json::json!(["first-missed", "second-missed"]),
        "both, once, and not the event from before the page connected ({old}): {state}"
    );
    assert_eq!(state["opened"], 2, "{state}");
}

#[tokio::test]
async fn a_browser_resuming_after_a_gap_is_told_in_the_stream() {
    let hub = TestHub::start(ssehub::HubConfig {
        history_size: 2,
        ..config()
    })
    .await;
    for id in ["a", "b", "c", "d"] {
        let (status, _) = hub
            .publish(&[("topic", "t"), ("id", id), ("data", id)])
            .await;
        assert_eq!(status, 200);
    }
    // "a" and "b" are gone: resuming after "a" cannot be gap-free.
    let (_browser, mut page) =
        event_source_page(&format!("http://{}", hub.addr), "topic=t&lastEventID=a").await;
    page.wait_until(
        "t.data.length >= 2",
        Duration::from_secs(15),
        EVENT_SOURCE_STATE,
    )
    .await;
    let state: serde_json::Value =
        serde_json::from_str(page.eval(EVENT_SOURCE_STATE).await.as_str().expect("state"))
            .expect("JSON");
    // `onmessage` saw exactly the replay, never the signal; the listener for `mercure` saw it.
    assert_eq!(state["data"], serde_json::json!(["c", "d"]), "{state}");
    assert_eq!(
        state["signals"],
        serde_json::json!([{"type": "replayGap", "requestedId": "a", "resumedAfter": "b"}]),
        "{state}"
    );
}
