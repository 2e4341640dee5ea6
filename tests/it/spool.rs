//! Publishes survive a Redis outage: each instance spools what it acknowledges while Redis is
//! away and forwards it, in order, when Redis is back (`src/history/spool.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cluster::instances_with;
use crate::support::binary::BinaryHub;
use crate::support::redis::RedisServer;
use crate::support::{expect_metric, publisher_token, SseClient};

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.expect("get");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

fn base(hub: &BinaryHub) -> String {
    format!("http://{}", hub.addr)
}

/// Publishes `id` to `url`; the status (0 when the connection failed).
async fn publish(client: &reqwest::Client, url: &str, token: &str, id: &str) -> u16 {
    match client
        .post(url)
        .bearer_auth(token)
        .form(&[("topic", "t"), ("id", id), ("data", id)])
        .send()
        .await
    {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

/// The ids `sub` receives until it got every one of `wanted` (failing after `limit`).
async fn ids_until_all(sub: &mut SseClient, wanted: &[String], limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut ids: Vec<String> = Vec::new();
    let mut missing: std::collections::HashSet<&String> = wanted.iter().collect();
    while !missing.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(event) = sub.next_event_within(left).await else {
            panic!(
                "{} of {} events missing, e.g. {:?} (ended: {:?})",
                missing.len(),
                wanted.len(),
                missing.iter().take(3).collect::<Vec<_>>(),
                sub.ended
            );
        };
        missing.remove(&event.id);
        ids.push(event.id);
    }
    ids
}

fn assert_once_each(ids: &[String], acked: &[String], whose: &str) {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in ids {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "{whose}: delivered twice: {twice:?}");
    for id in acked {
        assert_eq!(counts.get(id.as_str()), Some(&1), "{whose}: {id} missing");
    }
}

/// The scenario: three instances, Redis stopped for 20 s while publishers keep going on
/// two of them, one of those SIGKILLed during the outage and started again on its data
/// directory once Redis is back. Nothing is refused, lost or doubled, and every subscriber, live
/// or replaying from any instance, sees one order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_during_a_redis_outage_are_spooled_forwarded_in_order_and_survive_a_kill() {
    let _heavy = crate::support::heavy().await;
    let mut redis = RedisServer::start(true).await;
    let mut hubs = instances_with(&redis, 3, &[]);
    let a_dir = tempfile::tempdir().expect("dir");
    // Instance A runs on a data directory of the test's, so that it restarts on its spool.
    hubs[0] = BinaryHub::start_in_on_redis(a_dir.path(), &redis, &[]);
    let mut on_b = SseClient::open(&format!("{}?topic=t", hubs[1].url), &[]).await;
    let mut on_c = SseClient::open(&format!("{}?topic=t", hubs[2].url), &[]).await;

    let token = publisher_token(&["*"]);
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let refused: Arc<Mutex<Vec<(String, u16)>>> = Arc::default();
    let a_url: Arc<Mutex<String>> = Arc::new(Mutex::new(hubs[0].url.clone()));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut publishers = Vec::new();
    for (name, url) in [("a", None), ("b", Some(hubs[1].url.clone()))] {
        let (acked, refused, a_url, stop, token) = (
            acked.clone(),
            refused.clone(),
            a_url.clone(),
            stop.clone(),
            token.clone(),
        );
        publishers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut i = 0;
            while !stop.is_cancelled() {
                let url = url
                    .clone()
                    .unwrap_or_else(|| a_url.lock().expect("lock").clone());
                let id = format!("{name}-{i}");
                match publish(&client, &url, &token, &id).await {
                    200 => {
                        acked.lock().expect("lock").push(id);
                        i += 1;
                    }
                    // The instance is down (killed): not a refusal; try the next id later.
                    0 => tokio::time::sleep(Duration::from_millis(50)).await,
                    status => {
                        refused.lock().expect("lock").push((id, status));
                        i += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_outage = acked.lock().expect("lock").len();
    redis.stop();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (status, body) = get(&format!("{}/readyz", base(&hubs[1]))).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("degraded: spooling"), "{body}");
    let metrics = get(&format!("{}/metrics", base(&hubs[1]))).await.1;
    assert!(
        expect_metric(&metrics, "ssehub_spool_events") > 0,
        "{metrics}"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    // A crash in the middle of the outage: what A acknowledged is in its spool file.
    hubs[0].crash();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = acked.lock().expect("lock").len() - before_outage;
    redis.restart().await;
    let restarted = BinaryHub::start_in_on_redis(a_dir.path(), &redis, &[]);
    *a_url.lock().expect("lock") = restarted.url.clone();
    hubs[0] = restarted;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    let refused = refused.lock().expect("lock").clone();
    assert!(refused.is_empty(), "refused below the cap: {refused:?}");
    let acked = acked.lock().expect("lock").clone();
    assert!(
        during > 10,
        "publishes were acknowledged during the outage ({during})"
    );
    assert!(acked.iter().any(|id| id.starts_with("a-")));

    let b_ids = ids_until_all(&mut on_b, &acked, Duration::from_secs(30)).await;
    let c_ids = ids_until_all(&mut on_c, &acked, Duration::from_secs(30)).await;
    assert_once_each(&b_ids, &acked, "live on B");
    assert_once_each(&c_ids, &acked, "live on C");
    assert_eq!(b_ids, c_ids, "one order for every subscriber");
    // Each publisher's events in the order they were acknowledged (A's spool before A's new
    // publishes).
    for name in ["a-", "b-"] {
        let mine: Vec<_> = b_ids.iter().filter(|id| id.starts_with(name)).collect();
        let acked_mine: Vec<_> = acked.iter().filter(|id| id.starts_with(name)).collect();
        assert_eq!(mine, acked_mine, "{name} in acknowledgement order");
    }
    // Replay from any instance: the same events, once, in the same order.
    for hub in &hubs {
        let mut replay =
            SseClient::open(&format!("{}?topic=t&lastEventID=earliest", hub.url), &[]).await;
        let ids = ids_until_all(&mut replay, &acked, Duration::from_secs(30)).await;
        assert_eq!(ids, b_ids[..ids.len()], "replay on {}", hub.url);
    }
    for hub in &hubs {
        let (status, body) = get(&format!("{}/readyz", base(hub))).await;
        assert_eq!((status, body.as_str()), (200, "ready\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_answers_503_and_what_it_held_is_delivered_when_redis_is_back() {
    let mut redis = RedisServer::start(true).await;
    let hub = instances_with(&redis, 1, &["--spool-max-events", "3"]).remove(0);
    let mut sub = SseClient::open(&format!("{}?topic=t", hub.url), &[]).await;
    let (client, token) = (reqwest::Client::new(), publisher_token(&["*"]));
    redis.stop();
    let mut statuses = Vec::new();
    for i in 0..4 {
        statuses.push(publish(&client, &hub.url, &token, &format!("s{i}")).await);
    }
    assert_eq!(statuses, [200, 200, 200, 503]);
    let response = client
        .post(&hub.url)
        .bearer_auth(&token)
        .form(&[("topic", "t"), ("id", "s4")])
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert!(
        response
            .text()
            .await
            .expect("body")
            .contains("spool is full"),
        "the answer says why"
    );
    let (status, body) = get(&format!("{}/readyz", base(&hub))).await;
    assert_eq!(status, 503, "a full spool takes no publish: {body}");
    redis.restart().await;
    let held: Vec<String> = (0..3).map(|i| format!("s{i}")).collect();
    let ids = ids_until_all(&mut sub, &held, Duration::from_secs(20)).await;
    assert_eq!(ids, held);
    assert_eq!(publish(&client, &hub.url, &token, "after").await, 200);
    assert_eq!(sub.next_event().await.id, "after");
}

/// Instances started while Redis is down (a fleet restarted during an outage): each serves, says
/// it is degraded, spools what it is sent and acknowledges it; when Redis comes up, every
/// instance's subscriber, connected during the outage, gets every instance's spooled publishes,
/// each once and in one order, and later publishes too. Neither instance had ever reached Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_started_while_redis_is_down_serve_spool_and_deliver_when_it_comes_up() {
    let mut redis = RedisServer::not_started(true);
    let hubs = instances_with(&redis, 2, &[]);
    let mut subs = Vec::new();
    for hub in &hubs {
        subs.push(SseClient::open(&format!("{}?topic=t", hub.url), &[]).await);
    }
    let (client, token) = (reqwest::Client::new(), publisher_token(&["*"]));
    let mut acked = Vec::new();
    for (i, hub) in hubs.iter().enumerate() {
        for n in 0..2 {
            let id = format!("i{i}-{n}");
            assert_eq!(publish(&client, &hub.url, &token, &id).await, 200, "{id}");
            acked.push(id);
        }
        let (status, body) = get(&format!("{}/readyz", base(hub))).await;
        assert_eq!(status, 200, "a spooling instance takes publishes: {body}");
        assert!(body.starts_with("degraded: spooling"), "{body}");
    }
    redis.restart().await;
    let mut orders = Vec::new();
    for (i, sub) in subs.iter_mut().enumerate() {
        let ids = ids_until_all(sub, &acked, Duration::from_secs(30)).await;
        assert_once_each(&ids, &acked, &format!("instance {i}'s subscriber"));
        orders.push(ids);
    }
    assert_eq!(orders[0], orders[1], "one order on every instance");
    assert_eq!(publish(&client, &hubs[1].url, &token, "after").await, 200);
    for sub in &mut subs {
        assert_eq!(sub.next_event().await.id, "after");
    }
    for hub in &hubs {
        let (status, body) = get(&format!("{}/readyz", base(hub))).await;
        assert_eq!((status, body.as_str()), (200, "ready\n"));
    }
}

/// A Redis that answers but refuses (here a database it does not have) is a setting to fix,
/// not an outage to wait out: the start fails at once and says why.
#[tokio::test]
async fn a_redis_that_answers_and_refuses_stops_startup_saying_why() {
    let redis = RedisServer::start(false).await;
    let url = format!("redis://127.0.0.1:{}/99", redis.port);
    let data = tempfile::tempdir().expect("dir");
    let mut child = crate::support::binary::ssehub_command()
        .args(["serve", "--addr", "127.0.0.1:0", "--jwt-key", "k"])
        .args(["--history", "redis", "--redis-url", &url])
        .arg("--data-dir")
        .arg(data.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ssehub");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            // Stop it by its PID before failing, so a failed check leaves no process behind.
            let _ = child.kill();
            let _ = child.wait();
            panic!("ssehub was still running after 20 s: the refusal did not stop the start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let output = child.wait_with_output().expect("output");
    assert!(!output.status.success(), "the start must fail");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("opening the history") && stderr.contains("DB index is out of range"),
        "{stderr}"
    );
}
