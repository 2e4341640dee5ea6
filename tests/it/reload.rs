//! Reload without a restart, on the real binary: SIGHUP reads the config file again and
//! applies the keys (ending the open streams whose token no longer verifies), CORS and
//! publish origins, the log level and the limits that can change; a broken file is refused
//! and the configuration in effect stays; a setting that needs a restart is named and not
//! applied. Every wait is on a log line or a condition, with a deadline.

use std::process::Command;
use std::time::{Duration, Instant};

use ssehub::auth::{Claims, JwtAlgorithm, JwtSigner, MercureClaim};

use crate::support::binary::BinaryHub;
use crate::support::sse::End;
use crate::support::SseClient;

const PUBLISHER_KEY: &str = "reload-test-publisher-key-of-at-least-32-bytes";
const OLD_KEY: &str = "reload-test-old-subscriber-key-of-32-bytes-or-more";
const NEW_KEY: &str = "reload-test-new-subscriber-key-of-32-bytes-or-more";
const TOPIC: &str = "https://example.com/books/1";

fn sign(key: &str, mercure: MercureClaim) -> String {
    JwtSigner::new(JwtAlgorithm::HS256, key)
        .expect("key")
        .sign(&Claims {
            exp: None,
            mercure: Some(mercure),
        })
        .expect("sign")
}

fn subscriber(key: &str) -> String {
    sign(
        key,
        MercureClaim {
            subscribe: Some(vec!["*".into()]),
            ..MercureClaim::default()
        },
    )
}

fn publisher(key: &str) -> String {
    sign(
        key,
        MercureClaim {
            publish: Some(vec!["*".into()]),
            ..MercureClaim::default()
        },
    )
}

/// A hub started with `--config FILE`, which the test rewrites before each SIGHUP.
struct ReloadHub {
    hub: BinaryHub,
    _dir: tempfile::TempDir,
    file: std::path::PathBuf,
    /// Every log line read so far.
    seen: Vec<String>,
}

impl ReloadHub {
    fn start(config: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("ssehub.toml");
        std::fs::write(&file, config).expect("write config");
        let path = file.to_str().expect("utf-8 path").to_owned();
        let hub = BinaryHub::start(&["--config", &path, "--history", "memory"], &[]);
        Self {
            hub,
            _dir: dir,
            file,
            seen: Vec::new(),
        }
    }

    /// Rewrites the config file and sends SIGHUP; returns the log lines up to the end of the
    /// reload (applied or refused).
    fn reload(&mut self, config: &str) -> Vec<String> {
        std::fs::write(&self.file, config).expect("rewrite config");
        let from = self.seen.len();
        let status = Command::new("kill")
            .args(["-HUP", &self.hub.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        self.wait_log("the end of the reload", |line| {
            line.contains("configuration reloaded") || line.contains("reload refused")
        });
        self.seen[from..].to_vec()
    }

    /// Waits up to 10 s for a log line matching `wanted`, among the lines not yet read.
    fn wait_log(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.hub.logs.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line for {what} within 10 s; seen:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn url(&self) -> &str {
        &self.hub.url
    }

    fn base(&self) -> String {
        format!("http://{}", self.hub.addr)
    }

    async fn subscribe(&self, token: Option<&str>) -> SseClient {
        let url = format!("{}?topic={TOPIC}", self.url());
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        SseClient::open(&url, &headers).await
    }

    async fn publish(&self, key: &str, data: &str) -> u16 {
        crate::support::publish_with(
            self.url(),
            &publisher(key),
            &[("topic", TOPIC), ("data", data)],
        )
        .await
        .0
    }
}

/// `(status, body)` of a subscription request that is expected to be refused.
async fn subscribe_status(url: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{url}?topic={TOPIC}"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .expect("subscribe request")
}

/// Publishes `data` and checks that `stream` receives it.
async fn receives(hub: &ReloadHub, stream: &mut SseClient, data: &str) {
    assert_eq!(hub.publish(PUBLISHER_KEY, data).await, 200);
    let event = stream
        .next_event_within(Duration::from_secs(5))
        .await
        .unwrap_or_else(|| {
            panic!(
                "the stream did not receive {data:?} (ended: {:?})",
                stream.ended.is_some()
            )
        });
    assert_eq!(event.data, data);
}

fn keys(subscriber_key: &str) -> String {
    format!("publisher_jwt_key = \"{PUBLISHER_KEY}\"\nsubscriber_jwt_key = \"{subscriber_key}\"\n")
}

#[tokio::test]
async fn a_rotated_subscriber_key_ends_streams_of_old_tokens_and_keeps_the_others() {
    let mut hub = ReloadHub::start(&keys(OLD_KEY));
    let mut old = hub.subscribe(Some(&subscriber(OLD_KEY))).await;
    assert_eq!(old.status, 200);
    receives(&hub, &mut old, "before").await;

    let lines = hub.reload(&keys(NEW_KEY));
    assert!(
        lines.iter().any(|l| l.contains("configuration reloaded")),
        "{lines:?}"
    );
    // The old-key stream is ended, and the log says why.
    assert!(
        matches!(old.wait_end(Duration::from_secs(5)).await, Some(End::Clean)),
        "the stream of an old-key token is still open"
    );
    let why = lines
        .iter()
        .find(|l| l.contains("stream ended: its token no longer verifies"))
        .unwrap_or_else(|| panic!("no log line says why the stream ended: {lines:?}"));
    assert!(why.contains("reason="), "{why}");

    // New subscriptions: the old key is refused, the new one accepted.
    assert_eq!(subscribe_status(hub.url(), &subscriber(OLD_KEY)).await, 401);
    let mut new = hub.subscribe(Some(&subscriber(NEW_KEY))).await;
    assert_eq!(new.status, 200);
    receives(&hub, &mut new, "after").await;

    // A reload that keeps the subscriber key re-checks the new-key stream and keeps it.
    let lines = hub.reload(&format!(
        "{}anonymous = false\ncors_origins = [\"https://x.example\"]\n",
        keys(NEW_KEY)
    ));
    let done = lines
        .iter()
        .find(|l| l.contains("configuration reloaded"))
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert!(
        done.contains("streams_checked=1") && done.contains("streams_ended=0"),
        "{done}"
    );
    receives(&hub, &mut new, "still open").await;
    assert!(new.ended.is_none());
}

#[tokio::test]
async fn cors_and_publish_origins_change_on_the_next_request_while_streams_stay_open() {
    let settings = |origin: &str| {
        format!(
            "{}cors_origins = [\"{origin}\"]\npublish_origins = [\"{origin}\"]\n",
            keys(OLD_KEY)
        )
    };
    let mut hub = ReloadHub::start(&settings("https://a.example"));
    let mut stream = hub.subscribe(Some(&subscriber(OLD_KEY))).await;
    assert_eq!(stream.status, 200);
    let client = reqwest::Client::new();
    let (base, url) = (hub.base(), hub.url().to_owned());
    let allowed = |origin: &'static str| {
        let request = client
            .get(format!("{base}/healthz"))
            .header("origin", origin);
        async move {
            let response = request.send().await.expect("healthz");
            response
                .headers()
                .get("access-control-allow-origin")
                .map(|v| v.to_str().expect("ascii").to_owned())
        }
    };
    let cookie_publish = |origin: &'static str| {
        let request = client
            .post(&url)
            .header("origin", origin)
            .header(
                "cookie",
                format!("mercureAuthorization={}", publisher(PUBLISHER_KEY)),
            )
            .form(&[("topic", TOPIC), ("data", origin)]);
        async move { request.send().await.expect("publish").status().as_u16() }
    };
    assert_eq!(
        allowed("https://a.example").await.as_deref(),
        Some("https://a.example")
    );
    assert_eq!(allowed("https://b.example").await, None);
    assert_eq!(cookie_publish("https://b.example").await, 403);

    hub.reload(&settings("https://b.example"));
    assert_eq!(
        allowed("https://b.example").await.as_deref(),
        Some("https://b.example")
    );
    assert_eq!(allowed("https://a.example").await, None);
    assert_eq!(cookie_publish("https://a.example").await, 403);
    assert_eq!(cookie_publish("https://b.example").await, 200);
    // The stream opened before the reload is open, and got the cookie publish.
    let event = stream
        .next_event_within(Duration::from_secs(5))
        .await
        .expect("the stream opened before the reload receives");
    assert_eq!(event.data, "https://b.example");
}

#[tokio::test]
async fn the_log_level_changes_on_reload() {
    // A full hub tells an EventSource to come back later, and logs that at debug.
    let settings = |level: &str| {
        format!(
            "{}anonymous = true\nmax_subscribers = 1\nlog_level = \"{level}\"\n",
            keys(OLD_KEY)
        )
    };
    const REFUSED: &str = "subscription refused for now";
    let mut hub = ReloadHub::start(&settings("info"));
    let open = hub.subscribe(None).await;
    assert_eq!(open.status, 200);
    let mut refused = hub.subscribe(None).await;
    assert!(matches!(
        refused.wait_end(Duration::from_secs(5)).await,
        Some(End::Clean)
    ));
    // Lines are written in order: what the refusal logged comes before the reload's lines.
    let lines = hub.reload(&settings("debug"));
    assert!(
        lines.iter().any(|l| l.contains("configuration reloaded")),
        "{lines:?}"
    );
    assert!(
        !hub.seen.iter().any(|l| l.contains(REFUSED)),
        "a debug line at info: {:?}",
        hub.seen
    );
    let mut refused = hub.subscribe(None).await;
    assert!(matches!(
        refused.wait_end(Duration::from_secs(5)).await,
        Some(End::Clean)
    ));
    hub.wait_log("a debug line once at debug", |l| l.contains(REFUSED));
}

#[tokio::test]
async fn a_broken_configuration_is_refused_and_the_old_one_stays() {
    let mut hub = ReloadHub::start(&keys(OLD_KEY));
    let mut stream = hub.subscribe(Some(&subscriber(OLD_KEY))).await;
    assert_eq!(stream.status, 200);
    for (broken, names) in [
        // Not TOML: the error names the file.
        (
            format!("{}subscriber_jwt_key = ", keys(NEW_KEY)),
            "ssehub.toml",
        ),
        // A bad value: the error names the setting, and nothing of the file is applied.
        (
            format!("{}cors_origins = [\"not an origin\"]\n", keys(NEW_KEY)),
            "--cors-origins",
        ),
    ] {
        let lines = hub.reload(&broken);
        let refused = lines
            .iter()
            .find(|l| l.contains("reload refused"))
            .unwrap_or_else(|| panic!("not refused: {lines:?}"));
        assert!(refused.contains(names), "{refused}");
        assert!(
            !lines.iter().any(|l| l.contains("configuration reloaded")),
            "{lines:?}"
        );
        // The old key still verifies, for open streams and new ones.
        receives(&hub, &mut stream, names).await;
        assert_eq!(subscribe_status(hub.url(), &subscriber(NEW_KEY)).await, 401);
        let again = hub.subscribe(Some(&subscriber(OLD_KEY))).await;
        assert_eq!(again.status, 200);
    }
}

#[tokio::test]
async fn limits_change_on_reload_and_settings_that_need_a_restart_are_named() {
    let settings = |publish_bytes: usize, subscribers: usize, heartbeat: &str| {
        format!(
            "{}anonymous = true\nmax_publish_bytes = {publish_bytes}\nmax_subscribers = {subscribers}\nheartbeat = \"{heartbeat}\"\n",
            keys(OLD_KEY)
        )
    };
    let mut hub = ReloadHub::start(&settings(1000, 1, "15s"));
    let big = "x".repeat(2000);
    assert_eq!(hub.publish(PUBLISHER_KEY, &big).await, 413);
    let mut first = hub.subscribe(None).await;
    assert_eq!(first.status, 200);
    let full = reqwest::Client::new()
        .get(format!("{}?topic={TOPIC}", hub.url()))
        .send()
        .await
        .expect("subscribe");
    assert_eq!(full.status().as_u16(), 503, "max_subscribers = 1 is full");

    let lines = hub.reload(&settings(100_000, 2, "1s"));
    let restart = lines
        .iter()
        .find(|l| l.contains("needs a restart"))
        .unwrap_or_else(|| panic!("no warning for heartbeat: {lines:?}"));
    assert!(restart.contains("heartbeat"), "{restart}");
    // max_subscribers = 2 takes a second stream (not a 200 that says "come back later").
    let mut second = hub.subscribe(None).await;
    assert_eq!(second.status, 200);
    assert_eq!(hub.publish(PUBLISHER_KEY, &big).await, 200);
    for stream in [&mut first, &mut second] {
        let event = stream
            .next_event_within(Duration::from_secs(5))
            .await
            .expect("both streams receive");
        assert_eq!(event.data, big);
    }
    // The heartbeat was not applied: no comment within 3 s with `1s` in the file.
    let before = first.comments_seen();
    first.assert_no_event(Duration::from_secs(3)).await;
    assert_eq!(
        first.comments_seen(),
        before,
        "the heartbeat changed without a restart"
    );
}
