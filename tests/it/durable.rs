//! The durable history of `ssehub serve`: restarts, crashes, retention, damage and a full disk.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::binary::BinaryHub;
use crate::support::{publish_with, publisher_token, SseClient, SECRET};

const ARGS: &[&str] = &["--jwt-key", SECRET, "--anonymous"];

/// Every event a fresh subscriber to `*` gets when resuming from `from`, until the stream
/// goes quiet (failing the test if it ends instead).
async fn replay_all(url: &str, from: &str) -> (Vec<(String, String)>, Option<String>) {
    let mut sub = SseClient::open(&format!("{url}?topic=*"), &[("last-event-id", from)]).await;
    assert_eq!(sub.status, 200);
    let header = sub.header("last-event-id").map(str::to_owned);
    let mut events = Vec::new();
    while let Some(event) = sub.next_event_within(Duration::from_millis(1500)).await {
        events.push((event.id, event.data));
    }
    // Quiet, not over: a stream that ended early would look like a short replay.
    assert!(
        sub.ended.is_none(),
        "the replay stream ended ({:?}) after {events:?}",
        sub.ended
    );
    (events, header)
}

#[tokio::test]
async fn history_survives_a_restart_and_replays_exactly_once_in_order() {
    let base = tempfile::tempdir().expect("temp dir");
    // A directory that does not exist yet: serve creates it.
    let data_dir = base.path().join("nested").join("ssehub-data");
    let mut hub = BinaryHub::start_in(&data_dir, ARGS, &[]);
    let token = publisher_token(&["*"]);
    for id in ["a", "b", "c"] {
        let (status, _) = publish_with(
            &hub.url,
            &token,
            &[("topic", "t"), ("id", id), ("data", id)],
        )
        .await;
        assert_eq!(status, 200);
    }
    hub.terminate();
    assert!(hub
        .wait_exit(Duration::from_secs(10))
        .expect("exits")
        .success());
    assert!(data_dir.join("history.redb").is_file());

    let hub = BinaryHub::start_in(
        &data_dir,
        &["--jwt-key", SECRET, "--anonymous", "--subscriptions"],
        &[],
    );
    // The subscriptions API's `lastEventID` starts from the newest stored event after a restart.
    let api = reqwest::Client::new()
        .get(format!(
            "http://{}/.well-known/mercure/subscriptions",
            hub.addr
        ))
        .bearer_auth(crate::support::subscriber_token(
            &["/.well-known/mercure/subscriptions"],
            None,
        ))
        .send()
        .await
        .expect("api");
    let document: serde_json::Value =
        serde_json::from_str(&api.text().await.expect("body")).expect("json");
    assert_eq!(document["lastEventID"], "c");
    let (events, header) = replay_all(&hub.url, "a").await;
    assert_eq!(header.as_deref(), Some("a"));
    let ids: Vec<_> = events.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["b", "c"]);
    // New events continue the same log.
    let (status, _) = publish_with(&hub.url, &token, &[("topic", "t"), ("id", "d")]).await;
    assert_eq!(status, 200);
    let (events, _) = replay_all(&hub.url, "c").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "d");
}

/// Publishers run flat out while the hub is killed with SIGKILL at a random moment, again and
/// again on the same data directory. After every restart the store opens, and every publish
/// that was acknowledged is replayed, each publisher's in its order, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_sigkill() {
    let iterations: usize = std::env::var("SSEHUB_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let data = tempfile::tempdir().expect("temp dir");
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos() as u64;
    for iteration in 0..iterations {
        let mut hub = BinaryHub::start_in(data.path(), ARGS, &[]);
        let url = hub.url.clone();
        let mut publishers = Vec::new();
        for p in 0..4 {
            let (url, acked) = (url.clone(), acked.clone());
            publishers.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                let token = publisher_token(&["*"]);
                for i in 0.. {
                    let id = format!("i{iteration}-p{p}-{i}");
                    let sent = client
                        .post(&url)
                        .bearer_auth(&token)
                        .form(&[("topic", "crash"), ("id", id.as_str()), ("data", "x")])
                        .send()
                        .await;
                    match sent {
                        Ok(response) if response.status() == 200 => {
                            acked.lock().expect("lock").push(id);
                        }
                        // The hub is gone: this publish may or may not have been stored.
                        _ => break,
                    }
                }
            }));
        }
        // A random moment between 150 and 650 ms into the storm.
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        tokio::time::sleep(Duration::from_millis(150 + (seed >> 33) % 500)).await;
        hub.crash();
        for publisher in publishers {
            publisher.await.expect("publisher");
        }

        let hub = BinaryHub::start_in(data.path(), ARGS, &[]);
        let (events, _) = replay_all(&hub.url, "earliest").await;
        let replayed: Vec<&str> = events.iter().map(|(id, _)| id.as_str()).collect();
        let unique: HashSet<&str> = replayed.iter().copied().collect();
        assert_eq!(unique.len(), replayed.len(), "no event twice");
        let acked = acked.lock().expect("lock").clone();
        let missing: Vec<_> = acked
            .iter()
            .filter(|id| !unique.contains(id.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "iteration {iteration}: acknowledged but lost: {missing:?}"
        );
        // Each publisher's events are in the order it published them.
        let mut position = HashMap::new();
        for (index, id) in replayed.iter().enumerate() {
            position.insert(*id, index);
        }
        for pair in acked.windows(2) {
            let same_publisher = pair[0].rsplit_once('-').map(|(p, _)| p)
                == pair[1].rsplit_once('-').map(|(p, _)| p);
            if same_publisher {
                assert!(
                    position[pair[0].as_str()] < position[pair[1].as_str()],
                    "{pair:?} out of order"
                );
            }
        }
        assert!(acked.len() > iteration, "publishes were acknowledged");
        drop(hub);
    }
}

#[tokio::test]
async fn a_last_event_id_older_than_retention_gets_what_is_left_and_says_so() {
    let hub = BinaryHub::start(
        &["--jwt-key", SECRET, "--anonymous", "--history-size", "3"],
        &[],
    );
    let token = publisher_token(&["*"]);
    for id in ["a", "b", "c", "d", "e"] {
        publish_with(&hub.url, &token, &[("topic", "t"), ("id", id)]).await;
    }
    let (events, header) = replay_all(&hub.url, "a").await;
    let ids: Vec<_> = events.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["c", "d", "e"]);
    // "b" was dropped: the client asked for "a" and learns that replay starts after "b".
    assert_eq!(header.as_deref(), Some("b"));
}

fn start_fails(data_dir: &std::path::Path) -> String {
    let output = crate::support::binary::ssehub_command()
        .args(["serve", "--addr", "127.0.0.1:0", "--jwt-key", SECRET])
        .env("SSEHUB_DATA_DIR", data_dir)
        .output()
        .expect("run ssehub");
    assert!(
        !output.status.success(),
        "a damaged history must stop start-up"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn a_damaged_history_file_stops_startup_with_a_recovery_hint() {
    let data = tempfile::tempdir().expect("temp dir");
    let mut hub = BinaryHub::start_in(data.path(), ARGS, &[]);
    let token = publisher_token(&["*"]);
    for i in 0..200 {
        publish_with(
            &hub.url,
            &token,
            &[("topic", "t"), ("data", &"x".repeat(500 + i))],
        )
        .await;
    }
    hub.terminate();
    hub.wait_exit(Duration::from_secs(10)).expect("exits");
    let file = data.path().join("history.redb");
    let original = std::fs::read(&file).expect("read");

    // Bytes overwritten in the middle of the file.
    let mut damaged = original.clone();
    let middle = damaged.len() / 2;
    for byte in &mut damaged[middle..middle + 4096] {
        *byte ^= 0xa5;
    }
    std::fs::write(&file, &damaged).expect("write");
    let stderr = start_fails(data.path());
    assert!(
        stderr.contains("damaged") && stderr.contains("move the file aside"),
        "{stderr}"
    );

    // A file cut short.
    std::fs::write(&file, &original[..original.len() / 3]).expect("write");
    let stderr = start_fails(data.path());
    assert!(
        stderr.contains("damaged") && stderr.contains("move the file aside"),
        "{stderr}"
    );

    // The documented recovery: move the file aside, and the hub starts with an empty history.
    std::fs::rename(&file, data.path().join("history.redb.damaged")).expect("move aside");
    let hub = BinaryHub::start_in(data.path(), ARGS, &[]);
    let (events, header) = replay_all(&hub.url, "some-old-id").await;
    assert!(events.is_empty());
    assert_eq!(header.as_deref(), Some("earliest"));
}

/// A small tmpfs mounted for the test (the test suite runs as root, as CI does).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (the test suite runs as root)"
        );
        Self { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_fails_publishes_with_503_and_the_hub_recovers() {
    let disk = SmallDisk::mount("8m");
    let data_dir = disk.dir.path().join("data");
    let hub = BinaryHub::start_in(&data_dir, ARGS, &[]);
    let token = publisher_token(&["*"]);
    let mut sub = SseClient::open(&format!("{}?topic=t", hub.url), &[]).await;
    let (status, _) = publish_with(&hub.url, &token, &[("topic", "t"), ("id", "before")]).await;
    assert_eq!(status, 200);
    assert_eq!(sub.next_event().await.id, "before");

    // Fill the disk.
    let filler = disk.dir.path().join("filler");
    let _ = std::process::Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of={}", filler.display()),
            "bs=64k",
        ])
        .stderr(std::process::Stdio::null())
        .status();
    let payload = "y".repeat(200 * 1024);
    let mut refused = None;
    for i in 0..50 {
        let (status, body) = publish_with(
            &hub.url,
            &token,
            &[
                ("topic", "t"),
                ("id", &format!("full-{i}")),
                ("data", &payload),
            ],
        )
        .await;
        if status != 200 {
            refused = Some((status, body));
            break;
        }
    }
    let (status, body) = refused.expect("a publish is refused once the disk is full");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not stored"), "{body}");
    // Open streams stay open and the hub keeps answering.
    let health = SseClient::open(&format!("{}?topic=t", hub.url), &[]).await;
    assert_eq!(health.status, 200);

    // Space returns: publishing works again, and what was stored is still there.
    std::fs::remove_file(&filler).expect("free space");
    let mut ok = false;
    for _ in 0..50 {
        let (status, _) = publish_with(&hub.url, &token, &[("topic", "t"), ("id", "after")]).await;
        if status == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "publishing recovers when space returns");
    let (events, _) = replay_all(&hub.url, "before").await;
    assert_eq!(events.last().map(|(id, _)| id.as_str()), Some("after"));
    drop(sub);
    drop(hub);
}

#[tokio::test]
async fn a_damaged_record_that_retention_must_drop_fails_publishes_with_500_naming_it() {
    use ssehub::history::{DurableHistory, LocalHistory, Retention, SyncPolicy};
    use ssehub::Event;

    // More events than the store reads the ids of at open (16,384), so that the oldest record
    // is first read by retention, on the next publish.
    const KEPT: u64 = 20_000;
    let data = tempfile::tempdir().expect("temp dir");
    let retention = Retention {
        max_events: KEPT,
        max_age: None,
        max_bytes: None,
    };
    {
        let history =
            DurableHistory::open(data.path(), retention, SyncPolicy::Batch).expect("open");
        for chunk in (0..KEPT).collect::<Vec<_>>().chunks(4096) {
            let events = chunk
                .iter()
                .map(|i| {
                    Event {
                        id: format!("e{i}"),
                        ..Event::new("t", "x")
                    }
                    .into()
                })
                .collect();
            history.append_now(events).expect("append");
        }
    }
    // Event 1's record overwritten, through redb: the file is still a valid database.
    {
        let events: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("events");
        let db = redb::Database::create(data.path().join("history.redb")).expect("redb");
        let txn = db.begin_write().expect("write");
        txn.open_table(events)
            .expect("events")
            .insert(1, b"\xff".as_slice())
            .expect("insert");
        txn.commit().expect("commit");
    }
    let history = DurableHistory::open(data.path(), retention, SyncPolicy::Batch).expect("opens");
    let hub = crate::support::TestHub::start_on(crate::support::config(), Arc::new(history)).await;
    let (status, body) = hub.publish(&[("topic", "t"), ("id", "new")]).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(
        body,
        "not stored: the stored record of event 1 does not decode\n"
    );
    // Not stored: a replay from the newest kept event finds nothing after it.
    let (events, header) = replay_all(&hub.url, &format!("e{}", KEPT - 1)).await;
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(header, Some(format!("e{}", KEPT - 1)));
}
