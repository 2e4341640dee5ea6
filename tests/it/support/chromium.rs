//! Headless Chromium (Debian's `chromium`) driven over the DevTools protocol, for the tests of
//! pages: JSON messages over a WebSocket (`tokio-tungstenite`), since `--dump-dom` and
//! `--screenshot` capture a page at its load event, before any event has arrived. Chromium is
//! installed by `scripts/test` (as CI runs it); a test that finds none fails rather than skips.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Fails the test unless Debian's `chromium` runs: `scripts/test` installs it, and a browser
/// test that skipped itself on a machine without it would pass having tested nothing.
pub fn require_chromium() {
    let present = Command::new("chromium")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        present,
        "chromium is not installed: run scripts/test (it installs it) or apt-get install chromium"
    );
}

/// A headless Chromium with remote debugging, killed (by its own PID) on drop.
pub struct Chromium {
    child: Child,
    _profile: tempfile::TempDir,
    /// The DevTools HTTP address, `127.0.0.1:PORT`.
    devtools: String,
}

impl Chromium {
    /// Opens `url` in a new headless Chromium, with `extra_args` on its command line.
    pub async fn open(url: &str, extra_args: &[&str]) -> Self {
        require_chromium();
        let profile = tempfile::tempdir().expect("profile dir");
        let child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
            ])
            .args(extra_args)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromium");
        // Chromium writes the port it bound into the profile once DevTools listens.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|text| text.lines().next().map(str::to_owned))
                .filter(|line| !line.is_empty())
            {
                break port;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromium did not open DevTools within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Self {
            child,
            _profile: profile,
            devtools: format!("127.0.0.1:{port}"),
        }
    }

    /// Connects to the tab showing `url`.
    pub async fn page(&self, url: &str) -> DevTools {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let targets: Value = match reqwest::get(format!("http://{}/json/list", self.devtools))
                .await
            {
                Ok(response) => serde_json::from_str(&response.text().await.unwrap_or_default())
                    .unwrap_or_default(),
                Err(_) => Value::Null,
            };
            let socket = targets.as_array().and_then(|targets| {
                targets
                    .iter()
                    .find(|t| t["type"] == "page" && t["url"].as_str() == Some(url))
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            });
            if let Some(socket) = socket {
                return DevTools::connect(socket).await;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no chromium tab shows {url}: {targets}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A DevTools protocol session: one WebSocket, requests matched to answers by `id`.
pub struct DevTools {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl DevTools {
    async fn connect(url: &str) -> Self {
        // No Origin header (tungstenite sends none): DevTools only checks the origins of pages.
        let (socket, _response) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect to DevTools");
        Self { socket, next_id: 0 }
    }

    /// The next text message; pings are answered by tungstenite.
    async fn read_message(&mut self) -> String {
        loop {
            match self.socket.next().await {
                Some(Ok(Message::Text(text))) => return text.as_str().to_owned(),
                Some(Ok(Message::Close(frame))) => {
                    panic!("DevTools closed the connection: {frame:?}")
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => panic!("DevTools connection failed: {error}"),
                None => panic!("DevTools closed the connection"),
            }
        }
    }

    /// Calls a DevTools method and returns its result.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({ "id": id, "method": method, "params": params });
        self.socket
            .send(Message::text(request.to_string()))
            .await
            .expect("send to DevTools");
        loop {
            let message: Value =
                serde_json::from_str(&self.read_message().await).expect("JSON message");
            if message["id"] == id {
                assert!(message.get("error").is_none(), "{method}: {message}");
                return message["result"].clone();
            }
        }
    }

    /// Evaluates a JavaScript expression in the page and returns its value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await;
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` every 100 ms until it is `true`, for at most `limit`.
    pub async fn wait_until(&mut self, expression: &str, limit: Duration, state: &str) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.eval(expression).await != Value::Bool(true) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not true within {limit:?}: {expression}; page state {}",
                self.eval(state).await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// What the page's `EventSource` did so far (see [`event_source_page`]), as a JSON string.
pub const EVENT_SOURCE_STATE: &str = "JSON.stringify({opened: t.opened, errors: t.errors, \
     states: t.states, data: t.data, signals: t.signals, readyState: es.readyState})";

/// Opens a Chromium tab on the hub's own origin (`/healthz`) and starts an `EventSource` there
/// that records what it sees in `window.t`.
pub async fn event_source_page(base: &str, query: &str) -> (Chromium, DevTools) {
    let (browser, mut page) = hub_origin_page(base).await;
    start_event_source(&mut page, query).await;
    (browser, page)
}

/// Opens a Chromium tab on the hub's own origin (`/healthz`), so that its scripts reach the
/// hub without CORS, and waits until the page is loaded.
pub async fn hub_origin_page(base: &str) -> (Chromium, DevTools) {
    let page_url = format!("{base}/healthz");
    let browser = Chromium::open(&page_url, &[]).await;
    let mut page = browser.page(&page_url).await;
    // The tab may still be loading the page: wait for it, or the script runs in a document
    // that is about to be replaced.
    page.wait_until(
        "document.readyState === 'complete' && location.pathname === '/healthz'",
        Duration::from_secs(20),
        "document.readyState",
    )
    .await;
    (browser, page)
}

/// Starts an `EventSource` on `/.well-known/mercure?QUERY` in `page`, recording what it sees
/// in `window.t` ([`EVENT_SOURCE_STATE`]): `onmessage` data, and apart from it the hub's
/// `mercure` signals, as a page that refetches its state after a gap would listen for them.
pub async fn start_event_source(page: &mut DevTools, query: &str) {
    let started = page
        .eval(&format!(
            "window.t = {{opened: 0, errors: 0, states: [], data: [], signals: []}}; \
             window.es = new EventSource('/.well-known/mercure?{query}'); \
             es.onopen = () => t.opened++; \
             es.onerror = () => {{ t.errors++; t.states.push(es.readyState); }}; \
             es.onmessage = (e) => t.data.push(e.data); \
             es.addEventListener('mercure', (e) => t.signals.push(JSON.parse(e.data))); true"
        ))
        .await;
    assert_eq!(started, serde_json::Value::Bool(true));
}
