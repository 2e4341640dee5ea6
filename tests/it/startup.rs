//! The start-up contract of `ssehub serve`, the CLI clients, and CORS.

use std::process::Command;
use std::time::Duration;

use crate::support::binary::BinaryHub;
use crate::support::{config, http_config, SseClient, TestHub, SECRET};

fn ssehub() -> Command {
    crate::support::binary::ssehub_command()
}

#[tokio::test]
async fn binary_on_port_zero_works_with_its_own_cli_clients() {
    let hub = BinaryHub::start(
        &["--addr", "127.0.0.1:0", "--jwt-key", SECRET, "--anonymous"],
        &[],
    );
    assert_ne!(hub.addr.port(), 0);
    let subscriber = crate::support::binary::ssehub_command()
        .args([
            "subscribe",
            "--url",
            &hub.url,
            "--topic",
            "/books/{id}",
            "--count",
            "1",
            "--format",
            "json",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("subscriber");
    let token = ssehub()
        .args(["token", "--jwt-key", SECRET, "--publish", "/books/{id}"])
        .output()
        .expect("token");
    assert!(token.status.success());
    let token = String::from_utf8(token.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    // Publish until the subscriber (which connects on its own schedule) has seen one.
    let output = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let mut subscriber = subscriber;
        // A new id each time: the same id with the same content would be a retry, answered
        // and not delivered again.
        for attempt in 1.. {
            let id = format!("cli-{attempt}");
            let publish = ssehub()
                .args([
                    "publish", "--url", &hub.url, "--topic", "/books/1", "--data", "hello", "--id",
                    &id, "--token", &token,
                ])
                .output()
                .expect("publish");
            assert!(
                publish.status.success(),
                "{}",
                String::from_utf8_lossy(&publish.stderr)
            );
            assert_eq!(String::from_utf8_lossy(&publish.stdout).trim(), id);
            if subscriber.try_wait().expect("wait").is_some() {
                break;
            }
            if std::time::Instant::now() > deadline {
                let _ = subscriber.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        subscriber.wait_with_output().expect("output")
    })
    .await
    .expect("join");
    let line = String::from_utf8(output.stdout).expect("utf-8");
    let event: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON line");
    assert!(
        event["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("cli-")),
        "{event}"
    );
    assert_eq!(event["data"], "hello");
}

#[tokio::test]
async fn settings_come_from_the_environment() {
    let hub = BinaryHub::start(
        &[],
        &[
            ("SSEHUB_JWT_KEY", SECRET),
            ("SSEHUB_ANONYMOUS", "true"),
            ("SSEHUB_HEARTBEAT", "150ms"),
        ],
    );
    let mut sub = SseClient::open(&format!("{}?topic=t", hub.url), &[]).await;
    assert_eq!(sub.status, 200, "anonymous from the environment");
    sub.assert_no_event(Duration::from_millis(700)).await;
    assert!(sub.comments_seen() >= 2, "heartbeat from the environment");
}

#[test]
fn a_wrong_setting_stops_startup_naming_it() {
    for (args, needle) in [
        (
            &["--jwt-key", "k", "--heartbeat", "soon"][..],
            "--heartbeat",
        ),
        (
            &["--jwt-key", "k", "--cors-origins", "example.com"][..],
            "--cors-origins",
        ),
        (
            &["--jwt-key", "k", "--history-size=-3"][..],
            "--history-size",
        ),
        (
            &["--jwt-key", "k", "--jwt-algorithm", "XX1"][..],
            "--jwt-algorithm",
        ),
        (&["--anonymous"][..], "--publisher-jwt-key"),
    ] {
        let output = ssehub()
            .arg("serve")
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .env_remove("SSEHUB_JWT_KEY")
            .output()
            .expect("run");
        assert!(!output.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn serve_help_documents_every_setting_with_its_default() {
    let output = ssehub().args(["serve", "--help"]).output().expect("help");
    let help = String::from_utf8(output.stdout).expect("utf-8");
    for setting in [
        "--addr",
        "--publisher-jwt-key",
        "--subscriber-jwt-key",
        "--jwt-algorithm",
        "--anonymous",
        "--cors-origins",
        "--heartbeat",
        "--max-lifetime",
        "--history-size",
        "SSEHUB_HEARTBEAT",
        "[default: 15s]",
        "[default: 127.0.0.1:3000]",
    ] {
        assert!(help.contains(setting), "missing {setting} in:\n{help}");
    }
}

#[tokio::test]
async fn cors_answers_an_allowed_origin_with_credentials_and_never_a_star() {
    let mut http = http_config();
    http.cors_origins = vec![
        "https://app.example.com".into(),
        "http://localhost:5173".into(),
    ];
    let hub = TestHub::start_http(config(), http).await;
    let client = reqwest::Client::new();
    let response = client
        .get(format!("{}?topic=t", hub.url))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .expect("get");
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(
        response.headers()["access-control-allow-credentials"],
        "true"
    );
    let preflight = client
        .request(reqwest::Method::OPTIONS, &hub.url)
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "http://localhost:5173"
    );
    // draft-08: a fetch-based client may subscribe with QUERY, and read the Link cursor.
    let query_preflight = client
        .request(reqwest::Method::OPTIONS, &hub.url)
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "QUERY")
        .send()
        .await
        .expect("preflight");
    assert!(query_preflight.status().is_success());
    let methods = query_preflight.headers()["access-control-allow-methods"]
        .to_str()
        .expect("ascii");
    assert!(methods.contains("QUERY"), "{methods}");
    let exposed = response.headers()["access-control-expose-headers"]
        .to_str()
        .expect("ascii")
        .to_ascii_lowercase();
    assert!(exposed.contains("link"), "{exposed}");
    let other = client
        .get(format!("{}?topic=t", hub.url))
        .header("origin", "https://evil.example.net")
        .send()
        .await
        .expect("get");
    assert!(other.headers().get("access-control-allow-origin").is_none());

    let mut any = http_config();
    any.cors_origins = vec!["*".into()];
    let hub = TestHub::start_http(config(), any).await;
    let response = client
        .get(format!("{}?topic=t", hub.url))
        .header("origin", "https://anywhere.example")
        .send()
        .await
        .expect("get");
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    assert!(response
        .headers()
        .get("access-control-allow-credentials")
        .is_none());
}

#[tokio::test]
async fn a_config_file_sets_what_flags_and_environment_do_not() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("ssehub.toml");
    std::fs::write(
        &file,
        format!(
            "jwt_key = \"{SECRET}\"\nanonymous = true\nheartbeat = \"10m\"\nhistory = \"memory\"\n"
        ),
    )
    .expect("write");
    // The environment beats the file: heartbeats every 150 ms, not every 10 minutes.
    let hub = BinaryHub::start(
        &["--config", file.to_str().expect("utf-8 path")],
        &[("SSEHUB_HEARTBEAT", "150ms")],
    );
    let mut sub = SseClient::open(&format!("{}?topic=t", hub.url), &[]).await;
    assert_eq!(sub.status, 200, "anonymous from the file");
    sub.assert_no_event(Duration::from_millis(700)).await;
    assert!(sub.comments_seen() >= 2);

    std::fs::write(&file, "heartbeet = \"1s\"\n").expect("write");
    let output = ssehub()
        .args(["serve", "--addr", "127.0.0.1:0", "--config"])
        .arg(&file)
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("heartbeet") && stderr.contains("ssehub.toml"),
        "{stderr}"
    );
}

#[tokio::test]
async fn tokens_never_reach_the_logs() {
    let hub = BinaryHub::start(
        &["--jwt-key", SECRET, "--log-format", "json"],
        &[("RUST_LOG", "debug")],
    );
    let subscriber = crate::support::subscriber_token(&["*"], None);
    let publisher = crate::support::publisher_token(&["*"]);
    // By header, by query parameter and by cookie; valid and invalid.
    let mut by_query = SseClient::open(
        &format!("{}?topic=t&authorization={subscriber}", hub.url),
        &[],
    )
    .await;
    let _by_cookie = SseClient::open(
        &format!("{}?topic=t", hub.url),
        &[("cookie", &format!("mercureAuthorization={subscriber}"))],
    )
    .await;
    let bad = SseClient::open(
        &format!("{}?topic=t", hub.url),
        &[("authorization", "Bearer not.a-valid.token-SECRETMARK")],
    )
    .await;
    assert_eq!(bad.status, 401);
    let (status, _) =
        crate::support::publish_with(&hub.url, &publisher, &[("topic", "t"), ("id", "x")]).await;
    assert_eq!(status, 200);
    by_query.next_event().await;
    drop(by_query);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut logs = Vec::new();
    while let Ok(line) = hub.logs.try_recv() {
        logs.push(line);
    }
    assert!(
        logs.iter().any(|l| l.contains("stream opened")),
        "debug logs were captured"
    );
    for line in &logs {
        for secret in [
            subscriber.as_str(),
            publisher.as_str(),
            "SECRETMARK",
            SECRET,
        ] {
            assert!(
                !line.contains(secret),
                "a token or key reached the logs: {line}"
            );
        }
        assert!(line.starts_with('{'), "JSON log lines: {line}");
    }
}

/// `ssehub subscribe` reconnects like a browser: when the hub ends the stream (here its
/// maximum lifetime), it waits the server's `retry` and resumes with `Last-Event-ID`, so an
/// event published while it was away still arrives, exactly once.
#[tokio::test]
async fn the_cli_subscriber_reconnects_and_resumes() {
    let hub = BinaryHub::start(
        &[
            "--jwt-key",
            SECRET,
            "--anonymous",
            "--history",
            "memory",
            "--max-lifetime",
            "1s",
        ],
        &[],
    );
    let subscriber = crate::support::binary::ssehub_command()
        .args([
            "subscribe",
            "--url",
            &hub.url,
            "--topic",
            "t",
            "--count",
            "3",
            "--format",
            "json",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("subscriber");
    let token = crate::support::publisher_token(&["*"]);
    // The first event also tells clients to reconnect after 300 ms.
    let started = std::time::Instant::now();
    let at = |ms: u64| started + Duration::from_millis(ms);
    tokio::time::sleep_until(at(400).into()).await;
    crate::support::publish_with(
        &hub.url,
        &token,
        &[("topic", "t"), ("id", "e1"), ("retry", "300")],
    )
    .await;
    // The stream ends at about 1 s; the client is away until about 1.3 s.
    tokio::time::sleep_until(at(1100).into()).await;
    crate::support::publish_with(&hub.url, &token, &[("topic", "t"), ("id", "e2")]).await;
    tokio::time::sleep_until(at(1800).into()).await;
    crate::support::publish_with(&hub.url, &token, &[("topic", "t"), ("id", "e3")]).await;
    let output = tokio::task::spawn_blocking(move || subscriber.wait_with_output())
        .await
        .expect("join")
        .expect("output");
    let ids: Vec<String> = String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).expect("json line");
            event["id"].as_str().expect("id").to_owned()
        })
        .collect();
    assert_eq!(ids, ["e1", "e2", "e3"]);
}

#[test]
fn the_token_command_signs_publish_subscribe_and_expiry() {
    let output = ssehub()
        .args([
            "token",
            "--jwt-key",
            SECRET,
            "--publish",
            "/a/{id}",
            "--subscribe",
            "/b",
            "--exp",
            "1h",
        ])
        .output()
        .expect("token");
    assert!(output.status.success());
    let token = String::from_utf8(output.stdout).expect("utf-8");
    let verifier =
        ssehub::auth::JwtVerifier::new(ssehub::auth::JwtAlgorithm::HS256, SECRET).expect("key");
    let claims = verifier.verify(token.trim()).expect("valid token");
    let mercure = claims.mercure.expect("mercure claim");
    assert_eq!(mercure.publish, Some(vec!["/a/{id}".to_owned()]));
    assert_eq!(mercure.subscribe, Some(vec!["/b".to_owned()]));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let exp = claims.exp.expect("exp");
    assert!(
        (now + 3590..=now + 3610).contains(&exp),
        "exp {exp} is about an hour away"
    );
}

#[test]
fn the_token_command_signs_an_audience_that_an_audience_checking_hub_accepts() {
    let token = |aud: &[&str]| {
        let mut args = vec!["token", "--jwt-key", SECRET, "--subscribe", "/b"];
        for a in aud {
            args.extend(["--aud", a]);
        }
        let output = ssehub().args(&args).output().expect("token");
        assert!(output.status.success());
        String::from_utf8(output.stdout)
            .expect("utf-8")
            .trim()
            .to_owned()
    };
    let verifier = ssehub::auth::JwtVerifier::new(ssehub::auth::JwtAlgorithm::HS256, SECRET)
        .expect("key")
        .with_audience(&["ssehub"]);
    assert!(verifier.verify(&token(&["ssehub"])).is_ok());
    assert!(verifier.verify(&token(&["other", "ssehub"])).is_ok());
    assert!(verifier.verify(&token(&["other"])).is_err());
    assert!(verifier.verify(&token(&[])).is_err());
}
