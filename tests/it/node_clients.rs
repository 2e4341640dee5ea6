//! Client libraries nobody here wrote: Node's `eventsource` package (a WHATWG `EventSource`)
//! resumes a subscription and sees the hub's loss signal as an event of the `mercure` type,
//! apart from its `message` events. `scripts/test` installs Node and the package
//! (`npm ci` in `tests/node`); without them the test fails rather than skips.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::support::{config, TestHub};

/// Runs `tests/node/gap.mjs URL MESSAGES` and returns the JSON lines it printed.
fn node_event_source(url: &str, messages: usize) -> Vec<Value> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        dir.join("node_modules/eventsource").is_dir(),
        "the eventsource package is not installed: run scripts/test (npm ci in tests/node)"
    );
    let output = Command::new("node")
        .arg(dir.join("gap.mjs"))
        .arg(url)
        .arg(messages.to_string())
        .current_dir(&dir)
        .output()
        .expect("node is installed by scripts/test");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "node failed ({}): {stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_event_source_gets_the_loss_signal_only_after_a_gap() {
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
    // "a" and "b" are gone: the signal comes first, then the replay.
    let url = format!("{}?topic=t&lastEventID=a", hub.url);
    let seen = tokio::task::spawn_blocking(move || node_event_source(&url, 2))
        .await
        .expect("node");
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[0]["kind"], "signal", "{seen:?}");
    assert_eq!(
        seen[0]["data"],
        serde_json::json!({"type": "replayGap", "requestedId": "a", "resumedAfter": "b"})
    );
    assert_eq!(seen[1]["id"], "c");
    assert_eq!(seen[2]["id"], "d");

    // Resuming after "c", which is kept: gap-free, no signal.
    let url = format!("{}?topic=t&lastEventID=c", hub.url);
    let seen = tokio::task::spawn_blocking(move || node_event_source(&url, 1))
        .await
        .expect("node");
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["kind"], "message");
    assert_eq!(seen[0]["id"], "d");
}
