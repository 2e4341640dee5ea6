//! The settings of the real binary: the config file is read by `serve` alone and layered
//! defaults < file < `SSEHUB_*` < flags; a bad value names its source; the history flags
//! (`--history redis --redis-url`, the deprecated `--transport`) refuse contradictions.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::binary::BinaryHub;
use crate::support::redis::RedisServer;
use crate::support::{publisher_token, SseClient, SECRET};

/// `ssehub ARGS` with no `SSEHUB_*` variable from the caller's environment.
fn ssehub(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ssehub"));
    command.args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SSEHUB_") {
            command.env_remove(name);
        }
    }
    command
}

/// Runs `command` to its end, within 20 s: a start-up that should fail but serves instead is
/// killed (by its PID) and reported as `None`.
fn output_within(command: &mut Command) -> Option<Output> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ssehub");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("try_wait").is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(child.wait_with_output().expect("output"))
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A config file of `serve` settings only, in a directory that lives as long as the guard.
fn serve_config(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ssehub.toml");
    std::fs::write(&path, text).expect("write config");
    let path = path.to_str().expect("utf-8 path").to_owned();
    (dir, path)
}

#[tokio::test]
async fn publish_subscribe_and_token_ignore_the_serve_config_file() {
    let hub = BinaryHub::start(
        &["--jwt-key", SECRET, "--anonymous", "--history", "memory"],
        &[],
    );
    // Settings only `serve` knows: spliced into another command's flags, each would be refused.
    let (_dir, config) = serve_config(
        "heartbeat = \"1s\"\nhistory = \"memory\"\nanonymous = true\nmax_topics = 3\n",
    );

    let output = output_within(
        ssehub(&["token", "--jwt-key", SECRET, "--publish", "*"]).env("SSEHUB_CONFIG", &config),
    )
    .expect("token ends");
    assert!(output.status.success(), "token: {}", stderr(&output));
    let token = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

    // `--topic serve`: the word that the old argv splicing looked for.
    let output = output_within(
        ssehub(&[
            "publish", "--url", &hub.url, "--topic", "serve", "--data", "hello", "--id", "e1",
            "--token", &token,
        ])
        .env("SSEHUB_CONFIG", &config),
    )
    .expect("publish ends");
    assert!(output.status.success(), "publish: {}", stderr(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "e1");

    let output = output_within(
        ssehub(&[
            "subscribe",
            "--url",
            &hub.url,
            "--topic",
            "serve",
            "--last-event-id",
            "earliest",
            "--count",
            "1",
            "--format",
            "json",
            "--no-reconnect",
        ])
        .env("SSEHUB_CONFIG", &config),
    )
    .expect("subscribe ends after one event");
    assert!(output.status.success(), "subscribe: {}", stderr(&output));
    let event: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON event");
    assert_eq!(event["id"], "e1");
    assert_eq!(event["data"], "hello");
}

/// Heartbeats every 150 ms reach a subscriber of `hub` (the file, env or flag that set 150 ms
/// won); with 10 minutes or the 15 s default, none would in the 700 ms waited.
async fn heartbeats_are_fast(hub: &BinaryHub, which: &str) {
    let mut sub = SseClient::open(&format!("{}?topic=t", hub.url), &[]).await;
    assert_eq!(sub.status, 200, "{which}");
    sub.assert_no_event(Duration::from_millis(700)).await;
    assert!(sub.comments_seen() >= 2, "{which}: {}", sub.comments_seen());
}

#[tokio::test]
async fn the_file_beats_defaults_the_environment_beats_the_file_and_flags_beat_both() {
    let settings = format!("jwt_key = \"{SECRET}\"\nanonymous = true\nhistory = \"memory\"\n");

    let (_a, fast_file) = serve_config(&format!("{settings}heartbeat = \"150ms\"\n"));
    let hub = BinaryHub::start(&["--config", &fast_file], &[]);
    heartbeats_are_fast(&hub, "file over the 15 s default").await;
    drop(hub);

    let (_b, slow_file) = serve_config(&format!("{settings}heartbeat = \"10m\"\n"));
    let hub = BinaryHub::start(
        &[],
        &[("SSEHUB_CONFIG", &slow_file), ("SSEHUB_HEARTBEAT", "150ms")],
    );
    heartbeats_are_fast(&hub, "environment over file").await;
    drop(hub);

    let hub = BinaryHub::start(
        &["--config", &slow_file, "--heartbeat", "150ms"],
        &[("SSEHUB_HEARTBEAT", "10m")],
    );
    heartbeats_are_fast(&hub, "flag over environment and file").await;
}

#[test]
fn a_bad_value_names_where_it_came_from() {
    let from_env = output_within(
        ssehub(&["serve", "--jwt-key", SECRET, "--addr", "127.0.0.1:0"])
            .env("SSEHUB_HEARTBEAT", "soon"),
    )
    .expect("refused at start-up");
    assert!(!from_env.status.success());
    let text = stderr(&from_env);
    assert!(
        text.contains("--heartbeat") && text.contains("SSEHUB_HEARTBEAT"),
        "{text}"
    );

    let from_flag = output_within(
        ssehub(&[
            "serve",
            "--jwt-key",
            SECRET,
            "--addr",
            "127.0.0.1:0",
            "--heartbeat",
            "soon",
        ])
        .env("SSEHUB_HEARTBEAT", "15s"),
    )
    .expect("refused at start-up");
    assert!(!from_flag.status.success());
    let text = stderr(&from_flag);
    assert!(
        text.contains("--heartbeat") && !text.contains("SSEHUB_HEARTBEAT"),
        "the flag, not the variable: {text}"
    );

    let (_dir, file) = serve_config("max_lifetime = \"forever\"\n");
    let from_file = output_within(&mut ssehub(&[
        "serve",
        "--jwt-key",
        SECRET,
        "--addr",
        "127.0.0.1:0",
        "--history",
        "memory",
        "--config",
        &file,
    ]))
    .expect("refused at start-up: the file was read");
    assert!(!from_file.status.success());
    let text = stderr(&from_file);
    assert!(
        text.contains(&file) && text.contains("max_lifetime"),
        "{text}"
    );
}

#[test]
fn contradictory_history_flags_stop_start_up_naming_them() {
    let url = "redis://127.0.0.1:1/0";
    for (flags, named) in [
        (
            &["--transport", url, "--history", "memory"][..],
            &["--transport", "--history"][..],
        ),
        (&["--history", "redis"], &["--history redis", "--redis-url"]),
        (
            &["--history", "memory", "--redis-url", url],
            &["--redis-url", "--history"],
        ),
    ] {
        let args = [
            &["serve", "--jwt-key", SECRET, "--addr", "127.0.0.1:0"][..],
            flags,
        ]
        .concat();
        let output = output_within(&mut ssehub(&args)).expect("refused at start-up");
        assert!(!output.status.success(), "{flags:?}");
        let text = stderr(&output);
        assert!(named.iter().all(|n| text.contains(n)), "{flags:?}: {text}");
    }
}

/// A hub process, killed by its PID when dropped (the test failed or is over).
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `ssehub serve ARGS` until it logs "listening", and returns every line logged so far.
fn start_and_read_logs_until_listening(args: &[&str]) -> (Running, Vec<String>) {
    let mut child = ssehub(&[&["serve", "--addr", "127.0.0.1:0"][..], args].concat())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ssehub");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) {
        let listening = line.contains("listening");
        lines.push(line);
        if listening {
            return (Running(child), lines);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("ssehub did not start: {lines:?}");
}

/// The address in the "listening" line of `logs`.
fn bound_addr(logs: &[String]) -> String {
    logs.iter()
        .find_map(|l| l.split("addr=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("bound address")
        .to_owned()
}

#[tokio::test]
async fn transport_still_selects_the_redis_history_with_a_warning() {
    let redis = RedisServer::start(false).await;
    let url = redis.url();
    let common = ["--jwt-key", SECRET, "--anonymous"];
    // Each instance its own data directory (for its spool).
    let dirs = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let dir = |d: &tempfile::TempDir| d.path().to_string_lossy().into_owned();
    let (old_dir, new_dir) = (dir(&dirs.0), dir(&dirs.1));
    let (_old, old_logs) = start_and_read_logs_until_listening(
        &[&common[..], &["--transport", &url, "--data-dir", &old_dir]].concat(),
    );
    let warning = old_logs
        .iter()
        .find(|line| line.contains("WARN") && line.contains("--transport"))
        .unwrap_or_else(|| panic!("no deprecation warning in {old_logs:?}"));
    assert!(warning.contains("--history redis --redis-url"), "{warning}");
    let (_new, new_logs) = start_and_read_logs_until_listening(
        &[
            &common[..],
            &[
                "--history",
                "redis",
                "--redis-url",
                &url,
                "--data-dir",
                &new_dir,
            ],
        ]
        .concat(),
    );
    assert!(
        !new_logs.iter().any(|line| line.contains("deprecated")),
        "{new_logs:?}"
    );
    // Both are on the shared log in Redis: published on the new spelling's instance, the event
    // is replayed by the old one's.
    let mercure = |logs: &[String]| format!("http://{}/.well-known/mercure", bound_addr(logs));
    let (status, _) = crate::support::publish_with(
        &mercure(&new_logs),
        &publisher_token(&["*"]),
        &[("topic", "t"), ("id", "via-redis-url")],
    )
    .await;
    assert_eq!(status, 200);
    let mut sub = SseClient::open(
        &format!("{}?topic=t&lastEventID=earliest", mercure(&old_logs)),
        &[],
    )
    .await;
    assert_eq!(sub.status, 200);
    let event = sub
        .next_event_within(Duration::from_secs(5))
        .await
        .expect("the event, through Redis");
    assert_eq!(event.id, "via-redis-url");
}
