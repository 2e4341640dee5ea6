//! Several ssehub instances sharing one event log in Redis (`--history redis --redis-url redis://…`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::binary::BinaryHub;
use crate::support::redis::RedisServer;
use crate::support::{publish_with, publisher_token, SseClient};

fn instances(redis: &RedisServer, count: usize) -> Vec<BinaryHub> {
    instances_with(redis, count, &[])
}

/// `count` instances on `redis`, with `extra` settings.
pub fn instances_with(redis: &RedisServer, count: usize, extra: &[&str]) -> Vec<BinaryHub> {
    (0..count)
        .map(|_| BinaryHub::start_on_redis(redis, extra))
        .collect()
}

/// Reads until `n` events arrived (failing after 10 s without one).
async fn ids(sub: &mut SseClient, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        match sub.next_event_within(Duration::from_secs(10)).await {
            Some(event) => ids.push(event.id),
            None => panic!("got {} of {n} events (ended: {:?})", ids.len(), sub.ended),
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_anywhere_reach_every_instance_in_one_order() {
    let redis = RedisServer::start(false).await;
    let hubs = instances(&redis, 3);
    let mut subs = Vec::new();
    for hub in &hubs {
        subs.push(SseClient::open(&format!("{}?topic=t", hub.url), &[]).await);
        subs.push(SseClient::open(&format!("{}?topic=*", hub.url), &[]).await);
    }
    // Three publishers, one per instance, all at once.
    let token = publisher_token(&["*"]);
    let mut publishers = Vec::new();
    for (p, hub) in hubs.iter().enumerate() {
        let (url, token) = (hub.url.clone(), token.clone());
        publishers.push(tokio::spawn(async move {
            for i in 0..50 {
                let (status, _) = publish_with(
                    &url,
                    &token,
                    &[("topic", "t"), ("id", &format!("p{p}-{i}"))],
                )
                .await;
                assert_eq!(status, 200);
            }
        }));
    }
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    let first = ids(&mut subs[0], 150).await;
    for sub in &mut subs[1..] {
        assert_eq!(
            ids(sub, 150).await,
            first,
            "every subscriber on every instance, one order"
        );
    }
    let mut sorted = first.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 150, "each event exactly once");
}

#[tokio::test]
async fn a_client_resumes_on_another_instance_with_exactly_what_it_missed() {
    let redis = RedisServer::start(false).await;
    let hubs = instances(&redis, 3);
    let token = publisher_token(&["*"]);
    let mut on_a = SseClient::open(&format!("{}?topic=t", hubs[0].url), &[]).await;
    for i in 0..10 {
        publish_with(
            &hubs[2].url,
            &token,
            &[("topic", "t"), ("id", &format!("first-{i}"))],
        )
        .await;
    }
    let seen = ids(&mut on_a, 10).await;
    drop(on_a);
    let mut missed = Vec::new();
    for i in 0..15 {
        let id = format!("missed-{i}");
        publish_with(&hubs[1].url, &token, &[("topic", "t"), ("id", &id)]).await;
        missed.push(id);
    }
    let last = seen.last().expect("seen").clone();
    let mut on_c = SseClient::open(
        &format!("{}?topic=t", hubs[2].url),
        &[("last-event-id", &last)],
    )
    .await;
    assert_eq!(on_c.header("last-event-id"), Some(last.as_str()));
    assert_eq!(ids(&mut on_c, 15).await, missed);
    on_c.assert_no_event(Duration::from_millis(300)).await;
}

/// Redis is stopped and restarted in the middle of a stream of publishes, on instances without a
/// spool (`--spool-max-events 0`; `spool.rs` tests the default). Publishes fail with 503 while
/// it is away, open streams stay open, and when it is back every instance resumes
/// from the last entry it delivered: each live subscriber gets every acknowledged event exactly
/// once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_stream_loses_and_repeats_nothing() {
    let mut redis = RedisServer::start(true).await;
    let hubs = instances_with(&redis, 3, &["--spool-max-events", "0"]);
    let mut subs = Vec::new();
    for hub in &hubs {
        subs.push(SseClient::open(&format!("{}?topic=t", hub.url), &[]).await);
    }
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let refused = Arc::new(Mutex::new(0usize));
    let urls: Vec<String> = hubs.iter().map(|h| h.url.clone()).collect();
    let publisher = {
        let (acked, refused) = (acked.clone(), refused.clone());
        tokio::spawn(async move {
            let token = publisher_token(&["*"]);
            for i in 0..300 {
                let id = format!("e{i}");
                let (status, _) =
                    publish_with(&urls[i % 3], &token, &[("topic", "t"), ("id", &id)]).await;
                match status {
                    200 => acked.lock().expect("lock").push(id),
                    503 => *refused.lock().expect("lock") += 1,
                    other => panic!("unexpected status {other}"),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    redis.stop();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let readyz = format!("http://{}/readyz", hubs[0].addr);
    let during = reqwest::get(&readyz).await.expect("readyz");
    assert_eq!(during.status(), 503, "not ready while Redis is away");
    // A browser resuming now cannot be replayed to: it is told to come back (200, retry:),
    // not failed for good with a 503; a backend client gets the 503.
    let resume = format!("{}?topic=t&lastEventID=e0", hubs[1].url);
    let mut browser = SseClient::open(&resume, &[]).await;
    assert_eq!(browser.status, 200, "{:?}", browser.headers);
    assert_eq!(
        browser.wait_end(Duration::from_secs(10)).await,
        Some(crate::support::sse::End::Clean)
    );
    let told = String::from_utf8_lossy(&browser.raw).into_owned();
    assert!(
        told.contains("refused for now") && told.contains("\nretry: "),
        "{told}"
    );
    let backend = reqwest::get(&resume).await.expect("get");
    assert_eq!(backend.status(), 503);
    redis.restart().await;
    publisher.await.expect("publisher");
    let mut ready_again = false;
    for _ in 0..50 {
        if reqwest::get(&readyz).await.expect("readyz").status() == 200 {
            ready_again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready_again, "ready again once Redis is back");
    let acked = acked.lock().expect("lock").clone();
    assert!(
        *refused.lock().expect("lock") > 0,
        "some publishes met the outage and got 503"
    );
    assert!(acked.len() > 100);
    for sub in &mut subs {
        let mut received = Vec::new();
        while let Some(event) = sub.next_event_within(Duration::from_secs(5)).await {
            received.push(event.id);
        }
        assert!(
            sub.ended.is_none(),
            "the stream stayed open through the outage"
        );
        let mut unique = received.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), received.len(), "no event twice");
        // Every acknowledged event, in publish order (refused ones were never stored).
        let delivered: Vec<_> = received
            .iter()
            .filter(|id| acked.contains(id))
            .cloned()
            .collect();
        assert_eq!(delivered, acked);
    }
}

#[tokio::test]
async fn clients_of_a_killed_instance_resume_on_another() {
    let redis = RedisServer::start(false).await;
    let mut hubs = instances(&redis, 3);
    let token = publisher_token(&["*"]);
    let mut on_a = SseClient::open(&format!("{}?topic=t", hubs[0].url), &[]).await;
    publish_with(&hubs[1].url, &token, &[("topic", "t"), ("id", "before")]).await;
    assert_eq!(on_a.next_event().await.id, "before");
    hubs[0].crash();
    assert!(
        on_a.wait_end(Duration::from_secs(5)).await.is_some(),
        "the client sees its hub die"
    );
    let mut missed = Vec::new();
    for i in 0..20 {
        let id = format!("while-down-{i}");
        publish_with(&hubs[1].url, &token, &[("topic", "t"), ("id", &id)]).await;
        missed.push(id);
    }
    // The browser reconnects, through the load balancer, to another instance.
    let mut on_c = SseClient::open(
        &format!("{}?topic=t", hubs[2].url),
        &[("last-event-id", "before")],
    )
    .await;
    assert_eq!(ids(&mut on_c, 20).await, missed);
}

#[tokio::test]
async fn a_redis_that_lost_its_data_is_detected_and_served_on() {
    let mut redis = RedisServer::start(false).await;
    let hub = BinaryHub::start_on_redis(&redis, &[]);
    let token = publisher_token(&["*"]);
    for id in ["a", "b"] {
        let (status, _) = publish_with(&hub.url, &token, &[("topic", "t"), ("id", id)]).await;
        assert_eq!(status, 200);
    }
    let mut live = SseClient::open(&format!("{}?topic=t", hub.url), &[]).await;
    // Restarted without persistence: everything is gone.
    redis.restart().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let detected = loop {
        match hub.logs.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.contains("Redis lost its data") => break true,
            _ if std::time::Instant::now() > deadline => break false,
            _ => {}
        }
    };
    assert!(detected, "the instance logs that Redis lost its data");
    // Publishing works again, and live subscribers keep receiving.
    let mut status = 0;
    for _ in 0..50 {
        status = publish_with(&hub.url, &token, &[("topic", "t"), ("id", "c")])
            .await
            .0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
    assert_eq!(live.next_event().await.id, "c");
    // A client resuming from a lost id is told replay starts at `earliest`.
    let resumed = SseClient::open(&format!("{}?topic=t", hub.url), &[("last-event-id", "a")]).await;
    assert_eq!(resumed.header("last-event-id"), Some("earliest"));
}

#[tokio::test]
async fn the_first_replay_read_after_a_redis_restart_succeeds() {
    use ssehub::history::{History, RedisHistory, ReplayFrom};
    use std::sync::Arc;
    let mut redis = RedisServer::start(true).await;
    let history = Arc::new(
        RedisHistory::connect(&redis.url(), "restart-reads", 1_000)
            .await
            .expect("connect"),
    );
    let stored = history
        .clone()
        .append(
            (0..5)
                .map(|i| ssehub::Event::new("t", format!("{i}")).into())
                .collect(),
        )
        .await
        .expect("append");
    let stored: Vec<_> = stored
        .iter()
        .map(|a| a.stored().expect("a new event").clone())
        .collect();
    // Redis restarts (keeping its data): the history's connection is now dead, and nothing
    // used it since, so the very next read is the first to meet the broken connection.
    redis.restart().await;
    let start = history
        .clone()
        .locate(ReplayFrom::AfterId(stored[1].id.clone()))
        .await
        .expect("locating a replay right after the restart works");
    assert_eq!(start.after_seq, stored[1].seq);
    redis.restart().await;
    let page = history
        .clone()
        .read_page(start.after_seq, start.through_seq, 10)
        .await
        .expect("reading a page right after the restart works");
    let ids: Vec<_> = page.events.iter().map(|e| e.id.clone()).collect();
    let expected: Vec<_> = stored[2..].iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids, expected);
}

/// Whether the page's `EventSource` received every one of `ids` (as data) and never failed.
fn page_has(ids: &[String]) -> String {
    let list = serde_json::to_string(ids).expect("JSON");
    format!("{list}.every((id) => t.data.includes(id))")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_on_an_instance_whose_redis_restarts_miss_nothing() {
    use crate::support::chromium::{
        event_source_page, hub_origin_page, start_event_source, EVENT_SOURCE_STATE,
    };
    let mut redis = RedisServer::start(true).await;
    let hub = instances(&redis, 1).remove(0);
    let base = hub.url.trim_end_matches("/.well-known/mercure").to_owned();
    let token = publisher_token(&["*"]);
    let (_open_browser, mut open_page) = event_source_page(&base, "topic=t").await;
    open_page
        .wait_until(
            "es.readyState === 1",
            Duration::from_secs(20),
            EVENT_SOURCE_STATE,
        )
        .await;
    let mut acked = Vec::new();
    for i in 0..3 {
        let id = format!("before-{i}");
        let (status, body) = publish_with(
            &hub.url,
            &token,
            &[("topic", "t"), ("id", &id), ("data", &id)],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        acked.push(id);
    }
    open_page
        .wait_until(
            &page_has(&acked),
            Duration::from_secs(10),
            EVENT_SOURCE_STATE,
        )
        .await;

    // A page that connects right after the restart, resuming after the first event: its
    // replay is read on the connection the restart broke, and must be served at once.
    let (_late_browser, mut late_page) = hub_origin_page(&base).await;
    redis.restart().await;
    start_event_source(&mut late_page, "topic=t&lastEventID=before-0").await;
    // Publishes around the restart: some may meet the instance before it reconnected (503,
    // retried); every acknowledged one must reach both pages.
    for i in 0..3 {
        let id = format!("after-{i}");
        let mut answered = 0;
        for _ in 0..100 {
            answered = publish_with(
                &hub.url,
                &token,
                &[("topic", "t"), ("id", &id), ("data", &id)],
            )
            .await
            .0;
            if answered == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(answered, 200, "{id} was never acknowledged");
        acked.push(id);
    }
    open_page
        .wait_until(
            &format!("{} && t.errors === 0", page_has(&acked)),
            Duration::from_secs(15),
            EVENT_SOURCE_STATE,
        )
        .await;
    late_page
        .wait_until(
            &format!("{} && t.errors === 0", page_has(&acked[1..])),
            Duration::from_secs(15),
            EVENT_SOURCE_STATE,
        )
        .await;
    let late: serde_json::Value = serde_json::from_str(
        late_page
            .eval(EVENT_SOURCE_STATE)
            .await
            .as_str()
            .expect("state"),
    )
    .expect("JSON");
    assert_eq!(late["opened"], 1, "served on its first connection: {late}");
    assert_eq!(
        late["data"][0], "before-1",
        "the replay comes first: {late}"
    );
}

#[tokio::test]
async fn a_redis_that_went_away_fails_publishes_with_503_and_retry_after() {
    let mut redis = RedisServer::start(false).await;
    let history = ssehub::history::RedisHistory::connect(&redis.url(), "ssehub", 0)
        .await
        .expect("connect");
    let hub = crate::support::TestHub::start_on(crate::support::config(), Arc::new(history)).await;
    let (status, body) = hub.publish(&[("topic", "t"), ("id", "before")]).await;
    assert_eq!(status, 200, "{body}");

    redis.stop();
    let response = reqwest::Client::new()
        .post(&hub.url)
        .bearer_auth(publisher_token(&["*"]))
        .form(&[("topic", "t"), ("id", "during")])
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), 503);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(
        response.text().await.expect("body"),
        "not stored: Redis does not answer\n"
    );
    let ready = reqwest::get(format!("http://{}/readyz", hub.addr))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);
    let reason = ready.text().await.expect("body");
    assert!(reason.starts_with("not ready: "), "{reason}");
}
