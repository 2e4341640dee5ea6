//! The JDK-only publisher `examples/java/Publish.java` (docs/SPRING.md), run with `java` in
//! source-file mode against the real binary: its public and private updates reach the
//! subscribers they should and no other, its retries with one `Idempotency-Key` store one
//! event, it retries a `503` until the hub can store the update, and its help and errors say
//! what to do. `scripts/test` installs Debian's
//! `default-jdk-headless`; without `java` these tests fail rather than skip.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::binary::{clear_ssehub_env, BinaryHub};
use crate::support::redis::RedisServer;
use crate::support::{publish_with, publisher_token, subscriber_token, SseClient, SECRET};

/// `java examples/java/Publish.java` with no `SSEHUB_*` variable but those in `env`.
fn publish_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/java/Publish.java");
    let mut command = Command::new("java");
    clear_ssehub_env(&mut command);
    command.arg(source).args(args).envs(env.iter().copied());
    command
}

/// Runs the publisher to completion (on the blocking pool: a JVM compiling the file takes
/// seconds).
async fn run_publish(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = publish_command(args, env);
    tokio::task::spawn_blocking(move || {
        command
            .output()
            .expect("java runs (scripts/test installs default-jdk-headless)")
    })
    .await
    .expect("java task")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs the publisher and returns the event id it printed, failing the test unless it exited 0.
async fn publish_ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = run_publish(args, env).await;
    assert!(
        output.status.success(),
        "Publish.java failed ({}): {}{}",
        output.status,
        stdout(&output),
        stderr(&output)
    );
    let id = stdout(&output);
    assert!(!id.is_empty(), "no id printed; stderr: {}", stderr(&output));
    id
}

/// A publisher running in the background, its stderr read line by line, so a test can act
/// between two of its attempts. Killed on drop if still running.
struct RunningPublish {
    child: Child,
    stderr_lines: mpsc::Receiver<String>,
}

impl RunningPublish {
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = publish_command(args, env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("java runs (scripts/test installs default-jdk-headless)");
        let (lines, stderr_lines) = mpsc::channel();
        let child_stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(child_stderr).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stderr_lines,
        }
    }

    /// Waits (at most 60 s) for a stderr line containing every one of `parts`.
    async fn wait_for_stderr(&mut self, parts: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut before = Vec::new();
        loop {
            match self.stderr_lines.try_recv() {
                Ok(line) if parts.iter().all(|part| line.contains(part)) => return,
                Ok(line) => before.push(line),
                Err(mpsc::TryRecvError::Disconnected) => {
                    panic!("Publish.java ended without printing {parts:?}: {before:?}")
                }
                Err(mpsc::TryRecvError::Empty) => {
                    assert!(
                        Instant::now() < deadline,
                        "Publish.java printed no line with {parts:?} within 60 s: {before:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Waits (at most 60 s) for the publisher to exit; returns its status and what it printed.
    async fn finish(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "Publish.java did not finish within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mut out = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            stdout.read_to_string(&mut out).expect("stdout");
        }
        (status, out.trim().to_owned())
    }
}

impl Drop for RunningPublish {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A hub (the binary) with the test key, anonymous subscribers allowed, history in memory.
fn start_hub(extra: &[&str]) -> BinaryHub {
    let mut args = vec!["--jwt-key", SECRET, "--anonymous", "--history", "memory"];
    args.extend_from_slice(extra);
    BinaryHub::start(&args, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_update_from_java_reaches_a_subscriber_with_the_printed_id() {
    let hub = start_hub(&[]);
    let topic = "https://example.com/books/1";
    let mut subscriber = SseClient::open(&format!("{}?topic={topic}", hub.url), &[]).await;
    assert_eq!(subscriber.status, 200);

    let id = publish_ok(
        &[
            "--topic",
            topic,
            "--data",
            r#"{"title":"Dune","note":"é & ="}"#,
            "--type",
            "book",
            "--retry",
            "2500",
        ],
        &[
            ("SSEHUB_URL", hub.url.as_str()),
            ("SSEHUB_PUBLISHER_JWT_KEY", SECRET),
        ],
    )
    .await;
    let event = subscriber.next_event().await;
    assert_eq!(event.id, id);
    assert!(id.starts_with("urn:uuid:"), "a generated id: {id}");
    assert_eq!(event.data, r#"{"title":"Dune","note":"é & ="}"#);
    assert_eq!(event.event_type, "book");
    assert_eq!(event.retry, Some(2500));

    // A ready token (SSEHUB_TOKEN) instead of a key, the URL as a flag and the id chosen.
    let token = publisher_token(&["https://example.com/books/{id}"]);
    let id = publish_ok(
        &["--url", &hub.url, "--topic", topic, "--id", "book-1-v2"],
        &[("SSEHUB_TOKEN", token.as_str())],
    )
    .await;
    assert_eq!(id, "book-1-v2");
    assert_eq!(subscriber.next_event().await.id, "book-1-v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_update_from_java_reaches_only_the_authorized_subscriber() {
    let hub = start_hub(&[]);
    let topic = "https://example.com/users/42";
    let url = format!("{}?topic={topic}", hub.url);
    let token = subscriber_token(&[topic], Some(Duration::from_secs(600)));
    let bearer = format!("Bearer {token}");
    let mut user = SseClient::open(&url, &[("authorization", &bearer)]).await;
    let mut anonymous = SseClient::open(&url, &[]).await;
    assert_eq!((user.status, anonymous.status), (200, 200));

    let env = [("SSEHUB_URL", hub.url.as_str()), ("SSEHUB_JWT_KEY", SECRET)];
    let private = publish_ok(
        &["--topic", topic, "--data", "for user 42", "--private"],
        &env,
    )
    .await;
    let public = publish_ok(&["--topic", topic, "--data", "for everyone"], &env).await;

    let first = user.next_event().await;
    assert_eq!(
        (first.id.as_str(), first.data.as_str()),
        (private.as_str(), "for user 42")
    );
    assert_eq!(user.next_event().await.id, public);
    // The anonymous stream's first event is the later public one: the private update, published
    // before it on the same topic, was not sent (and the stream was open to receive it).
    let first = anonymous.next_event().await;
    assert_eq!(
        (first.id.as_str(), first.data.as_str()),
        (public.as_str(), "for everyone")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javas_help_names_the_options_and_bad_usage_exits_2() {
    let output = run_publish(&["--help"], &[]).await;
    assert!(output.status.success(), "--help: {}", output.status);
    let help = stdout(&output);
    for option in [
        "--topic",
        "--data",
        "--private",
        "--id",
        "--type",
        "--retry",
        "--idempotency-key",
        "--url",
        "SSEHUB_URL",
        "SSEHUB_PUBLISHER_JWT_KEY",
        "SSEHUB_TOKEN",
    ] {
        assert!(
            help.contains(option),
            "--help does not name {option}:\n{help}"
        );
    }

    let output = run_publish(&["--data", "x"], &[("SSEHUB_JWT_KEY", SECRET)]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("give at least one --topic"),
        "{}",
        stderr(&output)
    );
    let output = run_publish(&["--topic", "t"], &[]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("SSEHUB_PUBLISHER_JWT_KEY"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_with_a_wrong_key_gets_a_clear_error_and_exits_1_without_retrying() {
    let hub = start_hub(&[]);
    let output = run_publish(
        &["--topic", "t", "--data", "x"],
        &[
            ("SSEHUB_URL", hub.url.as_str()),
            (
                "SSEHUB_PUBLISHER_JWT_KEY",
                "not-the-hub-key-but-just-as-long-as-it",
            ),
        ],
    )
    .await;
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        stdout(&output).is_empty(),
        "printed an id: {}",
        stdout(&output)
    );
    assert!(message.contains("refused the update (401)"), "{message}");
    assert!(
        message.contains("bad signature"),
        "the hub's reason: {message}"
    );
    assert!(
        message.contains("--publisher-jwt-key"),
        "what to check: {message}"
    );
    assert!(
        !message.contains("retrying"),
        "a 401 is not retried: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_retries_until_a_late_hub_answers_and_one_key_stores_one_event() {
    // A free port for a hub that is not there yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let url = format!("http://127.0.0.1:{port}/.well-known/mercure");
    let key = "3f2c9d1e-late-hub-order-7";
    let args = [
        "--topic",
        "https://example.com/orders/7",
        "--data",
        "shipped",
        "--idempotency-key",
        key,
        "--attempts",
        "30",
    ];
    let env = [("SSEHUB_URL", url.as_str()), ("SSEHUB_JWT_KEY", SECRET)];

    let mut publisher = RunningPublish::spawn(&args, &env);
    // Start the hub only once the publisher has failed to connect and said it retries.
    publisher
        .wait_for_stderr(&["cannot connect", "retrying"])
        .await;
    let port_arg = format!("127.0.0.1:{port}");
    let hub = start_hub(&["--addr", &port_arg]);
    let (status, id) = publisher.finish().await;
    assert!(status.success(), "Publish.java: {status}");
    assert!(id.starts_with("urn:uuid:"), "printed id: {id:?}");

    // The same update with the same key again (a retry whose first answer was lost): the
    // original id, and a note that the hub already had it.
    let output = run_publish(&args, &env).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), id);
    assert!(
        stderr(&output).contains("already had this update"),
        "{}",
        stderr(&output)
    );

    // One event in history before a marker published after both runs.
    let (status, marker) = publish_with(
        &hub.url,
        &publisher_token(&["*"]),
        &[
            ("topic", "https://example.com/orders/7"),
            ("data", "marker"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let mut replay = SseClient::open(
        &format!(
            "{}?topic=https://example.com/orders/7&lastEventID=earliest",
            hub.url
        ),
        &[],
    )
    .await;
    assert_eq!(replay.next_ids(2).await, [id, marker]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_retries_a_503_until_the_hub_can_store_the_update_and_it_is_delivered_once() {
    // A hub on a Redis of its own, without a spool: while Redis is away a publish gets 503.
    let mut redis = RedisServer::start(false).await;
    let hub = BinaryHub::start_on_redis(&redis, &["--spool-max-events", "0"]);
    redis.stop();
    let topic = "https://example.com/orders/8";
    let mut publisher = RunningPublish::spawn(
        &["--topic", topic, "--data", "paid", "--attempts", "30"],
        &[("SSEHUB_URL", hub.url.as_str()), ("SSEHUB_JWT_KEY", SECRET)],
    );
    // Bring Redis back only once the publisher was refused with a 503 and said it retries.
    publisher
        .wait_for_stderr(&["the hub answered 503", "retrying"])
        .await;
    redis.restart().await;
    let (status, id) = publisher.finish().await;
    assert!(status.success(), "Publish.java: {status}");

    let (status, marker) = publish_with(
        &hub.url,
        &publisher_token(&["*"]),
        &[("topic", topic), ("data", "marker")],
    )
    .await;
    assert_eq!(status, 200);
    let mut replay = SseClient::open(
        &format!("{}?topic={topic}&lastEventID=earliest", hub.url),
        &[],
    )
    .await;
    let first = replay.next_event().await;
    assert_eq!(
        (first.id.as_str(), first.data.as_str()),
        (id.as_str(), "paid")
    );
    assert_eq!(replay.next_event().await.id, marker);
}
