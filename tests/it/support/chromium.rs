//! Headless Chromium (Debian's `chromium`) driven over the DevTools protocol, for the tests of
//! pages: a minimal WebSocket client (RFC 6455), since `--dump-dom` and `--screenshot` capture a
//! page at its load event, before any event has arrived.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Installs Debian's `chromium` unless it is already there.
pub fn ensure_chromium() {
    let present = Command::new("chromium")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        let status = Command::new("apt-get")
            .args(["install", "-y", "chromium"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .expect("apt-get");
        assert!(status.success(), "apt-get install -y chromium failed");
    }
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
        ensure_chromium();
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

/// A DevTools protocol session over a WebSocket (RFC 6455): text frames out (masked, as a
/// client must), text frames in (possibly fragmented); no extensions.
pub struct DevTools {
    socket: TcpStream,
    next_id: u64,
}

impl DevTools {
    async fn connect(url: &str) -> Self {
        let rest = url.strip_prefix("ws://").expect("a ws:// URL");
        let (host, path) = rest.split_once('/').expect("a path");
        let mut socket = TcpStream::connect(host).await.expect("connect to DevTools");
        // No Origin header: DevTools only checks the origins of browser pages.
        let request = format!(
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: c3NlaHViLWRlbW8tdGVzdA==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        socket
            .write_all(request.as_bytes())
            .await
            .expect("handshake");
        // Read the response head byte by byte, so no frame byte is consumed with it.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(socket.read_u8().await.expect("handshake response"));
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        Self { socket, next_id: 0 }
    }

    async fn send_text(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mut frame = vec![0x81]; // FIN, text
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x5a, 0x17, 0xc3, 0x9e];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.socket.write_all(&frame).await.expect("send frame");
    }

    async fn read_message(&mut self) -> String {
        let mut message = Vec::new();
        loop {
            let first = self.socket.read_u8().await.expect("frame");
            let second = self.socket.read_u8().await.expect("frame");
            let len = match second & 0x7f {
                126 => u64::from(self.socket.read_u16().await.expect("length")),
                127 => self.socket.read_u64().await.expect("length"),
                n => u64::from(n),
            };
            let mut mask = [0; 4];
            if second & 0x80 != 0 {
                self.socket.read_exact(&mut mask).await.expect("mask");
            }
            let mut payload = vec![0; len as usize];
            self.socket.read_exact(&mut payload).await.expect("payload");
            for (i, byte) in payload.iter_mut().enumerate() {
                *byte ^= mask[i % 4];
            }
            match first & 0x0f {
                0x0..=0x2 => {
                    message.extend_from_slice(&payload);
                    if first & 0x80 != 0 {
                        return String::from_utf8(message).expect("UTF-8 message");
                    }
                }
                0x9 => {
                    // Ping: answer with a pong carrying the same payload.
                    let mut pong = vec![0x8a, 0x80 | payload.len() as u8, 0, 0, 0, 0];
                    pong.extend_from_slice(&payload);
                    self.socket.write_all(&pong).await.expect("pong");
                }
                0x8 => panic!("DevTools closed the connection"),
                _ => {}
            }
        }
    }

    /// Calls a DevTools method and returns its result.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({ "id": id, "method": method, "params": params });
        self.send_text(&request.to_string()).await;
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
