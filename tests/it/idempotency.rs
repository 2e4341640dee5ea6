//! Idempotent publish: a retry (the same `Idempotency-Key` within the window, or the same id
//! with the same content) is answered with the original id and is not stored or delivered again;
//! on the durable store, and across instances over Redis.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ssehub::history::{DurableHistory, History, Retention, SyncPolicy};

use crate::support::binary::BinaryHub;
use crate::support::redis::RedisServer;
use crate::support::{config, expect_metric, publisher_token, SseClient, TestHub};

async fn durable_hub() -> (TestHub, tempfile::TempDir) {
    let data = tempfile::tempdir().expect("tempdir");
    let history: Arc<dyn History> = Arc::new(
        DurableHistory::open(data.path(), Retention::default(), SyncPolicy::Batch).expect("open"),
    );
    (TestHub::start_on(config(), history).await, data)
}

struct Answer {
    status: u16,
    body: String,
    replayed: bool,
}

async fn publish(url: &str, key: Option<&str>, form: &[(&str, &str)]) -> Answer {
    let mut request = reqwest::Client::new()
        .post(url)
        .bearer_auth(publisher_token(&["*"]))
        .form(form);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.expect("publish");
    let status = response.status().as_u16();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    Answer {
        status,
        body: response.text().await.expect("body"),
        replayed,
    }
}

/// The ids of events `sub` receives up to and including the event with id `marker`.
async fn ids_until(sub: &mut SseClient, marker: &str) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let Some(event) = sub.next_event_within(Duration::from_secs(10)).await else {
            panic!("no marker after {ids:?} (ended: {:?})", sub.ended);
        };
        let done = event.id == marker;
        ids.push(event.id);
        if done {
            return ids;
        }
    }
}

#[tokio::test]
async fn a_retry_with_the_same_key_is_answered_with_the_original_id_and_delivered_once() {
    let (hub, _data) = durable_hub().await;
    let mut sub = hub.subscribe("topic=t").await;
    let form = [("topic", "t"), ("data", "order 42 paid")];
    let first = publish(&hub.url, Some("\"key-1\""), &form).await;
    assert_eq!(
        (first.status, first.replayed),
        (200, false),
        "{}",
        first.body
    );
    // The retry carries no id either: the hub would generate another, yet it is the same update.
    let retry = publish(&hub.url, Some("key-1"), &form).await;
    assert_eq!(
        (retry.status, retry.replayed),
        (200, true),
        "{}",
        retry.body
    );
    assert_eq!(retry.body, first.body, "the original id");
    let reused = publish(
        &hub.url,
        Some("key-1"),
        &[("topic", "t"), ("data", "other")],
    )
    .await;
    assert_eq!(reused.status, 422, "{}", reused.body);
    assert!(
        reused.body.contains("Idempotency-Key") && reused.body.contains(&first.body),
        "{}",
        reused.body
    );
    let marker = publish(&hub.url, None, &[("topic", "t"), ("id", "marker")]).await;
    assert_eq!(marker.status, 200);
    assert_eq!(
        ids_until(&mut sub, "marker").await,
        [first.body, "marker".into()]
    );
    let metrics = hub.hub.render_metrics().await;
    assert_eq!(expect_metric(&metrics, "ssehub_publish_retries_total"), 1);
    assert_eq!(expect_metric(&metrics, "ssehub_events_published_total"), 2);
}

#[tokio::test]
async fn a_publish_whose_id_is_held_with_the_same_content_is_a_retry_and_other_content_is_new() {
    let (hub, _data) = durable_hub().await;
    let mut sub = hub.subscribe("topic=t").await;
    let a = [("topic", "t"), ("id", "x"), ("data", "a")];
    let first = publish(&hub.url, None, &a).await;
    let retry = publish(&hub.url, None, &a).await;
    assert_eq!((first.status, first.replayed), (200, false));
    assert_eq!(
        (retry.status, retry.body.as_str(), retry.replayed),
        (200, "x", true)
    );
    // Another type, privacy or data is another update, stored under the same id.
    let b = [("topic", "t"), ("id", "x"), ("data", "b")];
    let second = publish(&hub.url, None, &b).await;
    assert_eq!((second.status, second.replayed), (200, false));
    publish(&hub.url, None, &[("topic", "t"), ("id", "marker")]).await;
    let mut datas = Vec::new();
    while datas.len() < 3 {
        let event = sub.next_event().await;
        datas.push((event.id, event.data));
    }
    assert_eq!(
        datas,
        [
            ("x".into(), "a".into()),
            ("x".into(), "b".into()),
            ("marker".into(), String::new())
        ]
    );
    // draft-dunglas-mercure-08: a reused id resumes after its earliest occurrence.
    let mut resumed =
        SseClient::open(&format!("{}?topic=t", hub.url), &[("Last-Event-ID", "x")]).await;
    let event = resumed.next_event().await;
    assert_eq!((event.id.as_str(), event.data.as_str()), ("x", "b"));
    assert_eq!(resumed.next_event().await.id, "marker");
}

#[tokio::test]
async fn a_bad_idempotency_key_is_a_400_that_stores_nothing() {
    let hub = TestHub::start(config()).await;
    let form = [("topic", "t"), ("id", "never"), ("data", "x")];
    for key in ["", "\"\"", "caf\u{e9}", "a\"b", &"k".repeat(256)] {
        let answer = publish(&hub.url, Some(key), &form).await;
        assert_eq!(answer.status, 400, "{key:?}: {}", answer.body);
        assert!(answer.body.contains("Idempotency-Key"), "{}", answer.body);
    }
    let response = reqwest::Client::new()
        .post(&hub.url)
        .bearer_auth(publisher_token(&["*"]))
        .header("Idempotency-Key", "a")
        .header("Idempotency-Key", "b")
        .form(&form)
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), 400);
    assert!(response.text().await.expect("body").contains("once"));
    let mut replay = hub.subscribe("topic=t&lastEventID=earliest").await;
    publish(&hub.url, None, &[("topic", "t"), ("id", "marker")]).await;
    assert_eq!(ids_until(&mut replay, "marker").await, ["marker"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_times_out_and_retries_under_load_delivers_every_event_once() {
    let _heavy = crate::support::heavy().await;
    let (hub, _data) = durable_hub().await;
    let mut watchers = Vec::new();
    for _ in 0..20 {
        watchers.push(hub.subscribe("topic=*").await);
    }
    const PUBLISHERS: usize = 4;
    const EACH: usize = 25;
    let timeouts = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let (url, timeouts) = (hub.url.clone(), timeouts.clone());
        tasks.push(tokio::spawn(async move {
            let token = publisher_token(&["*"]);
            let mut acknowledged = Vec::new();
            for i in 0..EACH {
                let key = format!("p{p}-e{i}");
                let data = format!("update {i} of publisher {p}");
                // A first timeout near the hub's commit time: some answers are lost after the
                // event was stored, and the retry must not store it again. Retries wait
                // longer each time, as a client's backoff does.
                let mut attempt = 0u32;
                loop {
                    assert!(Instant::now() < deadline, "publisher {p} stuck at {i}");
                    let timeout = match attempt {
                        0 => Duration::from_micros(1_000 + fastrand::u64(0..9_000)),
                        n => Duration::from_millis(5 << n.min(9)),
                    };
                    attempt += 1;
                    let client = reqwest::Client::builder()
                        .timeout(timeout)
                        .build()
                        .expect("client");
                    let sent = client
                        .post(&url)
                        .bearer_auth(&token)
                        .header("Idempotency-Key", &key)
                        .form(&[("topic", "https://example.com/orders"), ("data", &data)])
                        .send()
                        .await;
                    let answer = match sent {
                        Ok(response) => response.text().await,
                        Err(error) => Err(error),
                    };
                    match answer {
                        Ok(id) => {
                            acknowledged.push(id);
                            break;
                        }
                        Err(_) => {
                            timeouts.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            acknowledged
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.expect("publisher"));
    }
    assert_eq!(acknowledged.len(), PUBLISHERS * EACH);
    let marker = publish(
        &hub.url,
        None,
        &[("topic", "https://example.com/orders"), ("id", "marker")],
    )
    .await;
    assert_eq!(marker.status, 200);
    for watcher in &mut watchers {
        let ids = ids_until(watcher, "marker").await;
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for id in &ids[..ids.len() - 1] {
            *counts.entry(id.as_str()).or_default() += 1;
        }
        let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "delivered more than once: {twice:?}");
        for id in &acknowledged {
            assert_eq!(counts.get(id.as_str()), Some(&1), "{id} not delivered once");
        }
        assert_eq!(
            counts.len(),
            acknowledged.len(),
            "nothing unacknowledged delivered"
        );
    }
    let timeouts = timeouts.load(Ordering::Relaxed);
    let metrics = hub.hub.render_metrics().await;
    let retries = expect_metric(&metrics, "ssehub_publish_retries_total");
    eprintln!("{timeouts} timed-out attempts, {retries} retries recognised by the hub");
    assert!(
        retries > 0,
        "no answer was lost after the event was stored ({timeouts} timeouts): the test proved nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_redis_a_retry_on_another_instance_is_recognised() {
    let redis = RedisServer::start(false).await;
    let (a, b) = (
        BinaryHub::start_on_redis(&redis, &[]),
        BinaryHub::start_on_redis(&redis, &[]),
    );
    let mut on_a = SseClient::open(&format!("{}?topic=t", a.url), &[]).await;
    let mut on_b = SseClient::open(&format!("{}?topic=t", b.url), &[]).await;
    let form = [("topic", "t"), ("data", "keyed")];
    let first = publish(&a.url, Some("k-1"), &form).await;
    let retry = publish(&b.url, Some("k-1"), &form).await;
    assert_eq!(
        (first.status, first.replayed),
        (200, false),
        "{}",
        first.body
    );
    assert_eq!(
        (retry.status, retry.replayed),
        (200, true),
        "{}",
        retry.body
    );
    assert_eq!(retry.body, first.body);
    let reused = publish(&b.url, Some("k-1"), &[("topic", "t"), ("data", "other")]).await;
    assert_eq!(reused.status, 422, "{}", reused.body);
    let by_id = [("topic", "t"), ("id", "x"), ("data", "by id")];
    let x = publish(&b.url, None, &by_id).await;
    let x_again = publish(&a.url, None, &by_id).await;
    assert_eq!((x.body.as_str(), x.replayed), ("x", false));
    assert_eq!((x_again.body.as_str(), x_again.replayed), ("x", true));
    let x_other = publish(
        &a.url,
        None,
        &[("topic", "t"), ("id", "x"), ("data", "new")],
    )
    .await;
    assert_eq!((x_other.status, x_other.replayed), (200, false));
    publish(&a.url, None, &[("topic", "t"), ("id", "marker")]).await;
    let expected = [first.body.clone(), "x".into(), "x".into(), "marker".into()];
    assert_eq!(ids_until(&mut on_a, "marker").await, expected);
    assert_eq!(ids_until(&mut on_b, "marker").await, expected);
    // A reused id resumes after its earliest occurrence, on either instance.
    let mut resumed =
        SseClient::open(&format!("{}?topic=t", b.url), &[("Last-Event-ID", "x")]).await;
    let event = resumed.next_event().await;
    assert_eq!((event.id.as_str(), event.data.as_str()), ("x", "new"));
}
