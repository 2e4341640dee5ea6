//! The emitter lifecycle: heartbeats, maximum lifetime, and leaving the registry at once on
//! timeout, completion, error or disconnect. Heartbeats and the lifetime deadline run on paused
//! time (a hub in this process read through `Hub::subscribe`); what the wire shows of them runs
//! over TCP.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use ssehub::hub::SubscriptionStream;
use ssehub::{CloseReason, Event, HubConfig, SubscribeRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::support::{
    config, eventually, heavy, hub_without_server, open_raw_streams, reasons, sse::End, TestHub,
};

/// A subscription request for exact `topics` (no template: compiling one runs on the blocking
/// pool, which would hold paused time still).
fn request(topics: &[&str]) -> SubscribeRequest {
    SubscribeRequest {
        topics: topics.iter().map(|t| t.to_string()).collect(),
        ..SubscribeRequest::default()
    }
}

/// The next frame of `stream`; fails the test if the stream ended instead, or if nothing came
/// within a day (of paused time: a broken timer fails the test rather than hanging it).
async fn next_frame(stream: &mut SubscriptionStream) -> Bytes {
    tokio::time::timeout(Duration::from_secs(86_400), stream.next())
        .await
        .expect("a frame within a day")
        .expect("a frame, but the stream ended")
}

/// Subscribes to `topics` without a `Last-Event-ID` and reads the stream's first frame, which
/// must be the id-only cursor (`id: …` and the blank line, no data).
async fn open_after_cursor(hub: &ssehub::Hub, topics: &[&str]) -> SubscriptionStream {
    let mut stream = hub
        .subscribe(request(topics))
        .await
        .expect("subscribe")
        .stream;
    let cursor = next_frame(&mut stream).await;
    assert!(
        cursor.starts_with(b"id: ")
            && cursor.ends_with(b"\n\n")
            && !cursor.windows(5).any(|w| w == b"data:"),
        "the first frame is the cursor: {cursor:?}"
    );
    stream
}

/// Asserts that `stream` neither yields a frame nor ends for `limit`.
async fn assert_silent(stream: &mut SubscriptionStream, limit: Duration) {
    if let Ok(item) = tokio::time::timeout(limit, stream.next()).await {
        panic!("expected nothing for {limit:?}, got {item:?}");
    }
}

/// Paused time: an idle stream gets a heartbeat comment exactly every period, and nothing in
/// between.
#[tokio::test(start_paused = true)]
async fn idle_stream_gets_a_heartbeat_every_period() {
    const PERIOD: Duration = Duration::from_secs(15);
    let (hub, _) = hub_without_server(HubConfig {
        heartbeat: PERIOD,
        max_lifetime: None,
        ..HubConfig::default()
    })
    .await;
    let mut stream = open_after_cursor(&hub, &["t"]).await;
    let opened = Instant::now();
    for n in 1..=4 {
        assert_silent(&mut stream, PERIOD - Duration::from_millis(1)).await;
        assert_eq!(&next_frame(&mut stream).await[..], b":\n\n");
        assert_eq!(opened.elapsed(), PERIOD * n, "heartbeat {n}");
    }
    hub.shutdown().await;
}

/// Paused time: each event restarts the heartbeat period, so a stream with an event at least
/// every period never gets a heartbeat; the first comes one period after the last event.
#[tokio::test(start_paused = true)]
async fn heartbeat_waits_while_events_flow() {
    const PERIOD: Duration = Duration::from_secs(15);
    let (hub, _) = hub_without_server(HubConfig {
        heartbeat: PERIOD,
        max_lifetime: None,
        ..HubConfig::default()
    })
    .await;
    let mut stream = open_after_cursor(&hub, &["t"]).await;
    for i in 0..6 {
        // Polled all along: a heartbeat due in this time would show up here.
        assert_silent(&mut stream, PERIOD - Duration::from_secs(1)).await;
        hub.publish(Event::new("t", format!("e{i}")))
            .await
            .expect("publish");
        let frame = next_frame(&mut stream).await;
        assert!(
            frame.ends_with(format!("data: e{i}\n\n").as_bytes()),
            "{frame:?}"
        );
    }
    let last_event = Instant::now();
    assert_eq!(&next_frame(&mut stream).await[..], b":\n\n");
    assert_eq!(last_event.elapsed(), PERIOD);
    hub.shutdown().await;
}

/// Paused time: the maximum lifetime ends a stream at its deadline, an hour after it opened,
/// with the `Timeout` reason and nothing left in the registry; resuming from the last id seen
/// replays what was published after the end.
#[tokio::test(start_paused = true)]
async fn max_lifetime_ends_the_stream_at_its_deadline_and_the_client_resumes() {
    const LIFETIME: Duration = Duration::from_secs(3600);
    let (hub, closes) = hub_without_server(HubConfig {
        heartbeat: Duration::ZERO,
        max_lifetime: Some(LIFETIME),
        ..HubConfig::default()
    })
    .await;
    let mut stream = open_after_cursor(&hub, &["t"]).await;
    let opened = Instant::now();
    assert_silent(&mut stream, LIFETIME / 2).await;
    let before = hub
        .publish(Event::new("t", "before"))
        .await
        .expect("publish");
    assert!(next_frame(&mut stream).await.ends_with(b"data: before\n\n"));
    assert_silent(&mut stream, LIFETIME / 2 - Duration::from_secs(1)).await;
    let end = tokio::time::timeout(Duration::from_secs(60), stream.next()).await;
    assert!(
        matches!(end, Ok(None)),
        "the stream ends at its deadline: {end:?}"
    );
    assert_eq!(opened.elapsed(), LIFETIME);
    drop(stream);
    assert_eq!(reasons(&closes), [CloseReason::Timeout]);
    assert_eq!(hub.subscriber_count(), 0);
    // Like EventSource: reconnect with the last id, get what was published in between.
    hub.publish(Event::new("t", "while away"))
        .await
        .expect("publish");
    let mut again = hub
        .subscribe(SubscribeRequest {
            last_event_id: Some(before.id),
            ..request(&["t"])
        })
        .await
        .expect("resume")
        .stream;
    assert!(next_frame(&mut again)
        .await
        .ends_with(b"data: while away\n\n"));
    hub.shutdown().await;
}

/// Over TCP, on the real clock: the stream that the maximum lifetime ends is finished properly
/// (the chunked terminator, which EventSource treats as "reconnect"), and the client resumes over
/// HTTP with `lastEventID`. The deadline itself is tested on paused time above.
#[tokio::test]
async fn max_lifetime_ends_the_stream_cleanly_and_the_client_resumes() {
    let hub = TestHub::start(HubConfig {
        max_lifetime: Some(Duration::from_millis(500)),
        ..config()
    })
    .await;
    let mut sub = hub.subscribe("topic=t").await;
    let (_, id) = hub.publish(&[("topic", "t"), ("data", "before")]).await;
    assert_eq!(sub.next_event().await.id, id);
    assert_eq!(sub.wait_end(Duration::from_secs(3)).await, Some(End::Clean));
    eventually(Duration::from_secs(2), "timeout hook", || {
        hub.close_reasons() == [CloseReason::Timeout]
    })
    .await;
    assert_eq!(hub.hub.subscriber_count(), 0);
    // Like EventSource: reconnect with the last id, get what was published in between.
    let (_, missed) = hub.publish(&[("topic", "t"), ("data", "while away")]).await;
    let mut again = hub.subscribe(&format!("topic=t&lastEventID={id}")).await;
    assert_eq!(again.next_event().await.id, missed);
}

#[tokio::test]
async fn disconnect_leaves_the_registry_at_once() {
    let hub = TestHub::start(config()).await;
    let mut stream = tokio::net::TcpStream::connect(hub.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    let mut head = [0u8; 256];
    let n = stream.read(&mut head).await.expect("response head");
    assert!(head[..n].starts_with(b"HTTP/1.1 200"));
    assert_eq!(hub.hub.subscriber_count(), 1);
    drop(stream);
    // No heartbeat or publish is needed to notice: the hub sees the EOF.
    eventually(Duration::from_secs(2), "registry empty", || {
        hub.hub.subscriber_count() == 0
    })
    .await;
    assert_eq!(hub.close_reasons(), [CloseReason::ClientDisconnected]);
}

#[tokio::test]
async fn application_can_complete_a_stream() {
    let hub = TestHub::start(config()).await;
    let mut sub = hub.subscribe("topic=t").await;
    let id = *hub.opens.lock().expect("lock").first().expect("opened");
    assert!(hub.hub.close_subscriber(id));
    assert!(!hub.hub.close_subscriber(id));
    assert_eq!(sub.wait_end(Duration::from_secs(2)).await, Some(End::Clean));
    assert_eq!(hub.close_reasons(), [CloseReason::Closed]);
    assert_eq!(hub.hub.subscriber_count(), 0);
}

/// An open hook that completes its own stream (an application refusing a subscriber as soon as
/// it sees it): the hub does not deadlock, every open hook runs before the close hooks, each
/// once, and the subscriber gets an ended stream and leaves the registry.
#[tokio::test]
async fn an_open_hook_can_complete_its_own_stream_and_the_close_follows_every_open_hook() {
    use std::sync::{Arc, Mutex, OnceLock};
    let said: Arc<Mutex<Vec<String>>> = Arc::default();
    let hub_cell: Arc<OnceLock<ssehub::Hub>> = Arc::default();
    let (first, second, closes) = (said.clone(), said.clone(), said.clone());
    let cell = hub_cell.clone();
    let hub = ssehub::Hub::builder(HubConfig::default())
        .on_open(move |info| {
            first.lock().expect("lock").push("open 1".into());
            let hub = cell
                .get()
                .expect("the hub is built before anyone subscribes");
            assert!(hub.close_subscriber(info.id), "it was registered");
        })
        .on_open(move |_| second.lock().expect("lock").push("open 2".into()))
        .on_close(move |_, reason, _| {
            closes
                .lock()
                .expect("lock")
                .push(format!("close: {}", reason.as_str()));
        })
        .build()
        .await
        .expect("hub");
    assert!(hub_cell.set(hub.clone()).is_ok());
    let mut stream = tokio::time::timeout(Duration::from_secs(5), hub.subscribe(request(&["t"])))
        .await
        .expect("subscribing does not deadlock")
        .expect("subscribe")
        .stream;
    let mut frames = 0;
    while tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the stream ends")
        .is_some()
    {
        frames += 1;
    }
    assert!(frames <= 1, "at most the cursor frame before the end");
    assert_eq!(
        *said.lock().expect("lock"),
        ["open 1", "open 2", "close: closed"]
    );
    assert_eq!(hub.subscriber_count(), 0);
}

/// 10,000 streams, opened in waves of 2,000 concurrent connections (client and server sockets
/// share this process's 20,000-file limit), each dropped in one of three ways: right after the
/// headers, after receiving an event, or with unread events still queued. Afterwards the
/// registry is empty and every open had exactly one close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_streams_opened_and_dropped_leave_an_empty_registry() {
    const WAVES: usize = 5;
    const PER_WAVE: usize = 2_000;
    let _heavy = heavy().await;
    let hub = TestHub::start(config()).await;
    for wave in 0..WAVES {
        let mut streams = open_raw_streams(hub.addr, "topic=wave", PER_WAVE).await;
        eventually(Duration::from_secs(10), "all registered", || {
            hub.hub.subscriber_count() == PER_WAVE
        })
        .await;
        // A third goes away right after the headers.
        let mut rest = streams.split_off(PER_WAVE / 3);
        drop(streams);
        hub.publish(&[("topic", "wave"), ("data", &format!("wave {wave}"))])
            .await;
        // A third reads the event first; the last third leaves it unread.
        let unread = rest.split_off(PER_WAVE / 3);
        // The event itself, not just any byte (a heartbeat or the end of the stream would be
        // bytes too).
        let frame = format!("data: wave {wave}\n\n");
        for stream in &mut rest {
            let mut read = Vec::new();
            let arrived = tokio::time::timeout(Duration::from_secs(10), async {
                let mut buf = [0u8; 256];
                while !String::from_utf8_lossy(&read).contains(&frame) {
                    let n = stream.read(&mut buf).await.expect("read");
                    assert!(n > 0, "the stream ended before the event: {read:?}");
                    read.extend_from_slice(&buf[..n]);
                }
            })
            .await;
            assert!(
                arrived.is_ok(),
                "no {frame:?} within 10 s; read {:?}",
                String::from_utf8_lossy(&read)
            );
        }
        drop(rest);
        drop(unread);
        eventually(
            Duration::from_secs(20),
            "registry empty after the wave",
            || hub.hub.subscriber_count() == 0,
        )
        .await;
    }
    eprintln!(
        "{} streams opened and dropped in {WAVES} waves",
        WAVES * PER_WAVE
    );
    // A stream leaves the registry first, then its close hook runs (on the thread that dropped
    // it): the last hooks may still be running when the registry is empty.
    eventually(Duration::from_secs(10), "every close hook ran", || {
        hub.closes.lock().expect("lock").len() >= WAVES * PER_WAVE
    })
    .await;
    let opens = hub.opens.lock().expect("lock").len();
    let closes = hub.closes.lock().expect("lock").len();
    assert_eq!((opens, closes), (WAVES * PER_WAVE, WAVES * PER_WAVE));
    assert!(hub
        .close_reasons()
        .iter()
        .all(|reason| *reason == CloseReason::ClientDisconnected));
}

#[tokio::test]
async fn dropping_a_library_subscription_unregisters_it() {
    let hub = ssehub::Hub::builder(HubConfig::default())
        .build()
        .await
        .expect("hub");
    let subscription = hub
        .subscribe(SubscribeRequest {
            topics: vec!["t".into()],
            ..SubscribeRequest::default()
        })
        .await
        .expect("subscribe");
    assert_eq!(hub.subscriber_count(), 1);
    drop(subscription);
    assert_eq!(hub.subscriber_count(), 0);
    hub.shutdown().await;
}

#[tokio::test]
async fn one_encoding_is_shared_by_every_subscriber() {
    let hub = ssehub::Hub::builder(HubConfig::default())
        .build()
        .await
        .expect("hub");
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(open_after_cursor(&hub, &["t"]).await);
    }
    hub.publish(ssehub::Event::new("t", "shared"))
        .await
        .expect("publish");
    let mut frames = Vec::new();
    for stream in &mut streams {
        frames.push(stream.next().await.expect("frame"));
    }
    // The same buffer, not three copies of it.
    assert!(frames
        .windows(2)
        .all(|pair| pair[0].as_ptr() == pair[1].as_ptr()));
    assert!(std::str::from_utf8(&frames[0])
        .expect("utf-8")
        .ends_with("data: shared\n\n"));
    hub.shutdown().await;
}
