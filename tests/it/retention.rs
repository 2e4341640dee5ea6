//! Retention per topic (`[[retention]]` in the config file), with the real binary: two rules,
//! a replay from `earliest`, on the durable history and on Redis shared by two instances.
//! Subscribers of topics whose events were all kept see no loss signal and no early end.

use std::time::Duration;

use crate::support::binary::BinaryHub;
use crate::support::redis::RedisServer;
use crate::support::{expect_metric, publish_with, publisher_token, SseClient, SECRET};

/// Each room keeps its 2 newest events; a ticker keeps its events for 1 s.
const TWO_RULES: &str = r#"
[[retention]]
topics = "https://example.com/rooms/{id}"
max_events = 2

[[retention]]
topics = "https://example.com/ticker/{symbol}"
max_age = "1s"
"#;

/// Rooms 1, 2 and 9, ticker A, and a topic under no rule; `both` is on ticker A and room 9.
const EVENTS: &[(&str, &[&str])] = &[
    ("r1a", &["rooms/1"]),
    ("t1", &["ticker/A"]),
    ("o1", &["other"]),
    ("r1b", &["rooms/1"]),
    ("r2a", &["rooms/2"]),
    ("both", &["ticker/A", "rooms/9"]),
    ("r1c", &["rooms/1"]),
    ("t2", &["ticker/A"]),
    ("r1d", &["rooms/1"]),
];

/// What the two rules keep of [`EVENTS`] once the ticker's second passed.
const KEPT: &[&str] = &["o1", "r2a", "both", "r1c", "r1d"];

fn config_file(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("ssehub.toml");
    std::fs::write(&path, TWO_RULES).expect("write config");
    path.to_str().expect("utf-8").to_owned()
}

async fn publish_events(url: &str) {
    let token = publisher_token(&["*"]);
    for (id, topics) in EVENTS {
        let topics: Vec<String> = topics
            .iter()
            .map(|t| format!("https://example.com/{t}"))
            .collect();
        let mut form: Vec<(&str, &str)> = topics.iter().map(|t| ("topic", t.as_str())).collect();
        form.extend([("id", *id), ("data", *id)]);
        let (status, body) = publish_with(url, &token, &form).await;
        assert_eq!(status, 200, "{body}");
    }
}

/// Opens a replay of `topics` from `last_event_id` and reads until 300 ms pass without an
/// event; the stream must still be open then (an early end would hide missing events).
async fn replay(url: &str, topics: &[&str], last_event_id: &str) -> SseClient {
    let query: Vec<String> = topics
        .iter()
        .map(|t| match *t {
            "*" => "topic=*".to_owned(),
            t => format!("topic=https://example.com/{t}"),
        })
        .collect();
    SseClient::open(
        &format!("{url}?{}", query.join("&")),
        &[("last-event-id", last_event_id)],
    )
    .await
}

async fn ids_of(client: &mut SseClient) -> Vec<String> {
    let mut ids = Vec::new();
    while let Some(event) = client.next_event_within(Duration::from_millis(300)).await {
        ids.push(event.id);
    }
    assert!(
        client.ended.is_none(),
        "the replay ended: {:?}",
        client.ended
    );
    ids
}

/// Waits (at most 10 s) until the history of `hub` holds as many events as [`KEPT`]: the
/// ticker's second ran out and a trim applied it. Replays are not used for waiting: streams
/// resuming together share recently read pages (`SharedReads`), so polling with replays would
/// keep serving the page read first.
async fn wait_for_trim(hub: &BinaryHub) {
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = client
            .get(format!("http://{}/metrics", hub.addr))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body");
        let held = expect_metric(&text, "ssehub_history_events");
        if held == KEPT.len() as u64 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the history still holds {held} events, expected {}",
            KEPT.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A replay of everything from `earliest` gives what the rules kept, with no loss signal.
async fn check_earliest(url: &str) {
    let mut client = replay(url, &["*"], "earliest").await;
    assert_eq!(ids_of(&mut client).await, KEPT);
    assert!(client.signals.is_empty(), "no loss signal for `earliest`");
}

/// A subscriber of topics whose events were all kept resumes gap-free; one resuming from an
/// event a rule dropped is told.
async fn check_resumes(url: &str) {
    let mut kept = replay(url, &["rooms/2", "other", "rooms/9"], "o1").await;
    assert_eq!(ids_of(&mut kept).await, ["r2a", "both"]);
    assert!(
        kept.signals.is_empty(),
        "no loss signal: {:?}",
        kept.signals
    );
    assert_eq!(kept.header("last-event-id"), Some("o1"));

    let mut dropped = replay(url, &["rooms/1"], "r1a").await;
    assert_eq!(ids_of(&mut dropped).await, ["r1c", "r1d"]);
    let signal = dropped.signals.first().expect("a loss signal");
    assert!(
        signal.data.contains("\"requestedId\":\"r1a\"") && signal.data.contains("earliest"),
        "{}",
        signal.data
    );
}

#[tokio::test]
async fn two_rules_on_the_durable_history_shape_a_replay_from_earliest() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config_file(&dir);
    let hub = BinaryHub::start(
        &["--config", &config, "--jwt-key", SECRET, "--anonymous"],
        &[],
    );
    publish_events(&hub.url).await;
    wait_for_trim(&hub).await;
    check_earliest(&hub.url).await;
    check_resumes(&hub.url).await;
    hub.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rules_on_redis_shape_a_replay_from_earliest_on_every_instance() {
    let redis = RedisServer::start(false).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config_file(&dir);
    let start = || BinaryHub::start_on_redis(&redis, &["--config", &config]);
    let (a, b) = (start(), start());
    publish_events(&a.url).await;
    wait_for_trim(&a).await;
    wait_for_trim(&b).await;
    check_earliest(&b.url).await;
    check_earliest(&a.url).await;
    check_resumes(&b.url).await;
    a.terminate();
    b.terminate();
}

#[test]
fn a_rule_with_a_broken_template_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ssehub.toml");
    let broken = TWO_RULES.replace("ticker/{symbol}", "ticker/{symbol");
    std::fs::write(&path, broken).expect("write config");
    let mut child = crate::support::binary::ssehub_command()
        .args(["serve", "--addr", "127.0.0.1:0", "--jwt-key", SECRET])
        .arg("--config")
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ssehub");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("try_wait").is_none() {
        if std::time::Instant::now() >= deadline {
            // It serves instead of refusing: stop it (by its PID) and fail.
            let _ = child.kill();
            let _ = child.wait();
            panic!("ssehub started with a broken retention rule");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("[[retention]]")
            && stderr.contains("rule 2")
            && stderr.contains("https://example.com/ticker/{symbol"),
        "{stderr}"
    );
}
