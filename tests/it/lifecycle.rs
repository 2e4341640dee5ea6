//! The emitter lifecycle: heartbeats, maximum lifetime, and leaving the registry at once on
//! timeout, completion, error or disconnect.

use std::time::Duration;

use futures_util::StreamExt;
use ssehub::{CloseReason, HubConfig, SubscribeRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{config, eventually, heavy, open_raw_streams, sse::End, TestHub};

#[tokio::test]
async fn idle_stream_gets_heartbeats() {
    let hub = TestHub::start(HubConfig {
        heartbeat: Duration::from_millis(100),
        ..config()
    })
    .await;
    let mut sub = hub.subscribe("topic=t").await;
    sub.assert_no_event(Duration::from_millis(550)).await;
    assert!(
        sub.comments_seen() >= 3,
        "saw {} heartbeats",
        sub.comments_seen()
    );
    assert!(String::from_utf8_lossy(&sub.raw).starts_with(":\n\n"));
}

#[tokio::test]
async fn heartbeat_waits_while_events_flow() {
    let hub = TestHub::start(HubConfig {
        heartbeat: Duration::from_millis(400),
        ..config()
    })
    .await;
    let mut sub = hub.subscribe("topic=t").await;
    for _ in 0..6 {
        hub.publish(&[("topic", "t")]).await;
        sub.next_event().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sub.comments_seen(), 0, "no heartbeat on a busy stream");
}

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
        let subscription = hub
            .subscribe(SubscribeRequest {
                topics: vec!["t".into()],
                ..SubscribeRequest::default()
            })
            .await
            .expect("subscribe");
        streams.push(subscription.stream);
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
