//! `ssehub serve --demo`: the demo page in a real headless Chromium, its token and polling
//! endpoints, and its refusal to start without an HMAC key.
//!
//! Chromium is driven through the DevTools protocol over a WebSocket (`tokio-tungstenite`, in
//! `support::chromium`; `scripts/test` installs Chromium, and the test fails without it):
//! `--dump-dom` and `--screenshot` capture the page at its load event, before any
//! event arrives, and `--virtual-time-budget` never returns while an `EventSource` is open.
//!
//! Set `SSEHUB_DEMO_SCREENSHOT=docs/demo.png` to have the page test save a screenshot of what it
//! saw (1200×800).

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::support::binary::BinaryHub;
use crate::support::chromium::Chromium;
use crate::support::{subscriber_token, SECRET};

const DEMO_TOPIC: &str = "https://example.com/demo";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

fn base_url(hub: &BinaryHub) -> String {
    format!("http://{}", hub.addr)
}

async fn demo_token(base: &str) -> Value {
    let response = reqwest::get(format!("{base}/demo/token"))
        .await
        .expect("GET /demo/token");
    assert_eq!(response.status(), 200);
    serde_json::from_str(&response.text().await.expect("body")).expect("JSON")
}

/// Publishes `data` on `topic` with `token`; returns the status and body.
async fn publish(
    base: &str,
    token: &str,
    topic: &str,
    data: &str,
    id: Option<&str>,
) -> (u16, String) {
    let mut form = vec![("topic", topic), ("data", data)];
    if let Some(id) = id {
        form.push(("id", id));
    }
    let response = reqwest::Client::new()
        .post(format!("{base}/.well-known/mercure"))
        .bearer_auth(token)
        .form(&form)
        .send()
        .await
        .expect("publish");
    (
        response.status().as_u16(),
        response.text().await.expect("body"),
    )
}

async fn get_json(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.expect("GET");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The page state the test checks, read in one evaluation.
const PAGE_STATE: &str = r#"({
    opened: document.body.dataset.sseOpened === "true",
    status: document.getElementById("status").dataset.state,
    rows: document.getElementById("event-rows").innerText,
    sse: Number(document.getElementById("sse-events").textContent),
    long: Number(document.getElementById("long-events").textContent),
    short: Number(document.getElementById("short-events").textContent),
    shortRequests: Number(document.getElementById("short-requests").textContent),
    sseDelay: document.getElementById("sse-last").textContent,
})"#;

#[tokio::test]
async fn demo_page_shows_published_events_in_headless_chromium() {
    let hub = BinaryHub::start(&["--jwt-key", SECRET, "--anonymous", "--demo"], &[]);
    let base = base_url(&hub);
    let page_url = format!("{base}/");
    let html = reqwest::get(&page_url)
        .await
        .expect("GET /")
        .text()
        .await
        .expect("page");
    assert!(
        html.contains("new EventSource("),
        "the page subscribes by itself"
    );
    let token = demo_token(&base).await["token"]
        .as_str()
        .expect("a token")
        .to_owned();

    let browser = Chromium::open(&page_url, &["--window-size=1200,800"]).await;
    let mut page = browser.page(&page_url).await;
    page.call(
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": 1200, "height": 800, "deviceScaleFactor": 1, "mobile": false }),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let state = page.eval("document.body.dataset.sseOpened").await;
        if state == "true" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the page's EventSource never opened"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Publish until the event list shows one and each of short polling, long polling and SSE
    // has seen at least one (the pollers start their cursors on their own schedule).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let mut sent = 0;
    let state = loop {
        sent += 1;
        let data = json!({ "message": format!("from-the-test-{sent}"), "published_at": now_ms() });
        let (status, body) = publish(&base, &token, DEMO_TOPIC, &data.to_string(), None).await;
        assert_eq!(status, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let state = page.eval(PAGE_STATE).await;
        let seen = |key: &str| state[key].as_f64().unwrap_or(0.0) >= 1.0;
        if state["rows"]
            .as_str()
            .is_some_and(|rows| rows.contains("from-the-test-"))
            && seen("sse")
            && seen("long")
            && seen("short")
        {
            break state;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the page did not show the events: {state}"
        );
    };
    assert_eq!(state["opened"], true, "{state}");
    assert_eq!(state["status"], "open", "{state}");
    assert!(state["shortRequests"].as_f64() >= Some(2.0), "{state}");
    assert!(
        state["sseDelay"]
            .as_str()
            .is_some_and(|d| d.ends_with("ms") || d.ends_with(" s")),
        "SSE delays are measured: {state}"
    );

    if let Ok(path) = std::env::var("SSEHUB_DEMO_SCREENSHOT") {
        // A few more events, so the picture shows the three methods side by side.
        for n in 1..=8 {
            let data = json!({ "message": format!("hello world #{n}"), "published_at": now_ms() });
            publish(&base, &token, DEMO_TOPIC, &data.to_string(), None).await;
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let shot = page
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("image data"))
            .expect("base64");
        std::fs::write(&path, png).expect("write the screenshot");
    }
}

#[tokio::test]
async fn demo_token_publishes_only_under_the_demo_topic() {
    let hub = BinaryHub::start(&["--jwt-key", SECRET, "--anonymous", "--demo"], &[]);
    let base = base_url(&hub);
    let answer = demo_token(&base).await;
    let token = answer["token"].as_str().expect("a token");
    let lifetime = answer["expires_at"].as_u64().expect("expiry") - now_ms() / 1000;
    assert!((590..=601).contains(&lifetime), "10 minutes: {answer}");
    for topic in [DEMO_TOPIC, "https://example.com/demo/rooms/1"] {
        let (status, body) = publish(&base, token, topic, "ok", None).await;
        assert_eq!(status, 200, "{topic}: {body}");
    }
    for topic in [
        "https://example.com/other",
        "https://example.com/demonstration",
    ] {
        let (status, body) = publish(&base, token, topic, "no", None).await;
        assert_eq!(status, 403, "{topic}: {body}");
    }

    // Without --demo there is no page and no token.
    let plain = BinaryHub::start(&["--jwt-key", SECRET, "--anonymous"], &[]);
    for path in ["/", "/demo/token", "/demo/poll?topic=t"] {
        let response = reqwest::get(format!("{}{path}", base_url(&plain)))
            .await
            .expect("GET");
        assert_eq!(response.status(), 404, "{path}");
    }
}

#[tokio::test]
async fn demo_polling_endpoints_answer_from_a_cursor() {
    let hub = BinaryHub::start(&["--jwt-key", SECRET, "--anonymous", "--demo"], &[]);
    let base = base_url(&hub);
    let token = demo_token(&base).await["token"]
        .as_str()
        .expect("a token")
        .to_owned();
    let topic = urlencode(DEMO_TOPIC);

    // Without a cursor: where the feed is now (`earliest` while it is empty).
    let (status, answer) = get_json(&format!("{base}/demo/poll?topic={topic}")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({ "events": [], "last_id": "earliest" }));

    publish(&base, &token, DEMO_TOPIC, "one", Some("demo-1")).await;
    publish(
        &base,
        &token,
        "https://example.com/demo/elsewhere",
        "x",
        None,
    )
    .await;
    publish(&base, &token, DEMO_TOPIC, "two", Some("demo-2")).await;
    let (_, answer) = get_json(&format!("{base}/demo/poll?topic={topic}&after=earliest")).await;
    assert_eq!(
        answer,
        json!({ "events": [
            { "id": "demo-1", "type": "message", "data": "one" },
            { "id": "demo-2", "type": "message", "data": "two" },
        ], "last_id": "demo-2" })
    );
    let (_, answer) = get_json(&format!("{base}/demo/poll?topic={topic}")).await;
    assert_eq!(answer["last_id"], "demo-2", "{answer}");
    let (_, answer) = get_json(&format!("{base}/demo/poll?topic={topic}&after=demo-2")).await;
    assert_eq!(answer, json!({ "events": [], "last_id": "demo-2" }));

    // A long poll from the newest id waits for the next event, and answers with it.
    let url = format!("{base}/demo/longpoll?topic={topic}&after=demo-2");
    let mut waiting = tokio::spawn(async move { get_json(&url).await });
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut waiting)
            .await
            .is_err(),
        "the long poll answered before any event"
    );
    publish(&base, &token, DEMO_TOPIC, "three", Some("demo-3")).await;
    let (status, answer) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the long poll answers once an event is published")
        .expect("task");
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({ "events": [{ "id": "demo-3", "type": "message", "data": "three" }], "last_id": "demo-3" })
    );
    // From an older cursor it answers at once with what it missed.
    let (_, answer) = get_json(&format!("{base}/demo/longpoll?topic={topic}&after=demo-1")).await;
    assert_eq!(answer["events"][0]["id"], "demo-2", "{answer}");

    // The endpoints authorize like the subscribe endpoint: no --anonymous, no token, no events.
    let closed = BinaryHub::start(&["--jwt-key", SECRET, "--demo"], &[]);
    let closed_base = base_url(&closed);
    for endpoint in ["poll", "longpoll"] {
        let (status, _) = get_json(&format!(
            "{closed_base}/demo/{endpoint}?topic={topic}&after=earliest"
        ))
        .await;
        assert_eq!(status, 401, "{endpoint}");
    }
    let subscriber = subscriber_token(&[], None);
    let (status, answer) = get_json(&format!(
        "{closed_base}/demo/poll?topic={topic}&authorization={subscriber}"
    ))
    .await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test]
async fn demo_refuses_to_start_without_an_hmac_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let private = dir.path().join("private.pem");
    let public = dir.path().join("public.pem");
    let openssl = |args: &[&std::ffi::OsStr]| {
        let status = Command::new("openssl")
            .args(args)
            .status()
            .expect("openssl is installed by scripts/test");
        assert!(status.success());
    };
    openssl(&[
        "genpkey".as_ref(),
        "-algorithm".as_ref(),
        "EC".as_ref(),
        "-pkeyopt".as_ref(),
        "ec_paramgen_curve:P-256".as_ref(),
        "-out".as_ref(),
        private.as_os_str(),
    ]);
    openssl(&[
        "pkey".as_ref(),
        "-pubout".as_ref(),
        "-in".as_ref(),
        private.as_os_str(),
        "-out".as_ref(),
        public.as_os_str(),
    ]);
    let mut child = crate::support::binary::ssehub_command()
        .args(["serve", "--addr", "127.0.0.1:0", "--history", "memory"])
        .args(["--jwt-algorithm", "ES256", "--demo", "--publisher-jwt-key"])
        .arg(&public)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ssehub");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            panic!("ssehub --demo with an ES256 key started instead of failing");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    assert!(!status.success());
    assert!(
        stderr.contains("--demo") && stderr.contains("HMAC") && stderr.contains("ES256"),
        "{stderr}"
    );
}

fn urlencode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
