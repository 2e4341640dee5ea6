//! Lingering close: a request refused before its body was read (`413`, `401`) is answered, and
//! the hub reads and discards what the client still sends before closing, so a client that
//! writes its whole body before reading (Python's `http.client`, `requests`) reads the answer
//! instead of a connection reset. Over HTTP/2 the refused stream alone is reset.
//!
//! The clients here are raw sockets (and the `h2` crate), because what matters is the order of
//! bytes on the wire: the whole body written first, the answer read afterwards.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ssehub::server::ServerOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::support::binary::BinaryHub;
use crate::support::{config, proc_status_kib, publisher_token, TestHub, SECRET};

/// The body a publisher sends: 20 times the default `--max-publish-bytes`.
const BODY_BYTES: usize = 20 * 1024 * 1024;
/// Bytes per write of the body.
const CHUNK_BYTES: usize = 64 * 1024;

/// How the body is framed.
#[derive(Debug, Clone, Copy)]
enum Framing {
    ContentLength,
    Chunked,
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses everything a connection returned as responses: zero or more `1xx` heads, then one
/// final response framed by `content-length`. `None` when the bytes are not that (cut off,
/// garbled, or empty).
fn parse_responses(bytes: &[u8]) -> Option<(Vec<u16>, Response)> {
    let mut informational = Vec::new();
    let mut rest = bytes;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut head = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(length) = head.parse(rest).ok()? else {
            return None;
        };
        let status = head.code?;
        let headers: Vec<(String, String)> = head
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        rest = &rest[length..];
        if (100..200).contains(&status) {
            informational.push(status);
            continue;
        }
        let response = Response {
            status,
            headers,
            body: String::new(),
        };
        let body_length: usize = response.header("content-length")?.parse().ok()?;
        if rest.len() != body_length {
            return None;
        }
        let body = String::from_utf8_lossy(rest).into_owned();
        return Some((informational, Response { body, ..response }));
    }
}

/// The head of a publish of `BODY_BYTES`, with `token` if any.
fn publish_head(framing: Framing, token: Option<&str>, expect: bool) -> String {
    let mut head = String::from(
        "POST /.well-known/mercure HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: application/x-www-form-urlencoded\r\n",
    );
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    match framing {
        Framing::ContentLength => head.push_str(&format!("Content-Length: {BODY_BYTES}\r\n")),
        Framing::Chunked => head.push_str("Transfer-Encoding: chunked\r\n"),
    }
    if expect {
        head.push_str("Expect: 100-continue\r\n");
    }
    head.push_str("\r\n");
    head
}

/// What a client that writes before it reads saw.
#[derive(Debug)]
struct Outcome {
    /// The first write that failed, if one did (`ConnectionReset`, `BrokenPipe`).
    write_error: Option<std::io::Error>,
    /// Body bytes written before that.
    written: usize,
    /// Everything read after writing, up to end of file (or the read error).
    read: Vec<u8>,
    read_error: Option<std::io::Error>,
}

/// Sends a publish of [`BODY_BYTES`] (`topic=big&data=xxx…`) the way Python's `http.client`
/// does: the head, then the whole body, and only then reads the answer, to end of file.
/// `halfway` is told when half the body is written.
async fn publish_then_read(
    addr: std::net::SocketAddr,
    framing: Framing,
    token: Option<&str>,
    halfway: Option<oneshot::Sender<()>>,
) -> Outcome {
    send_then_read(addr, framing, publish_head(framing, token, false), halfway).await
}

/// [`publish_then_read`] with a head of the caller's.
async fn send_then_read(
    addr: std::net::SocketAddr,
    framing: Framing,
    head: String,
    halfway: Option<oneshot::Sender<()>>,
) -> Outcome {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut halfway = halfway;
    let mut outcome = Outcome {
        write_error: None,
        written: 0,
        read: Vec::new(),
        read_error: None,
    };
    if let Err(error) = stream.write_all(head.as_bytes()).await {
        outcome.write_error = Some(error);
        return outcome;
    }
    let mut chunk = vec![b'x'; CHUNK_BYTES];
    chunk[..15].copy_from_slice(b"topic=big&data=");
    while outcome.written < BODY_BYTES {
        let data = &chunk[..];
        let written = match framing {
            Framing::ContentLength => stream.write_all(data).await,
            Framing::Chunked => {
                let mut framed = format!("{:x}\r\n", data.len()).into_bytes();
                framed.extend_from_slice(data);
                framed.extend_from_slice(b"\r\n");
                stream.write_all(&framed).await
            }
        };
        if let Err(error) = written {
            outcome.write_error = Some(error);
            return outcome;
        }
        // Only the first chunk starts the form.
        outcome.written += data.len();
        chunk[..15].fill(b'x');
        if outcome.written >= BODY_BYTES / 2 {
            if let Some(halfway) = halfway.take() {
                let _ = halfway.send(());
            }
        }
    }
    if let Framing::Chunked = framing {
        if let Err(error) = stream.write_all(b"0\r\n\r\n").await {
            outcome.write_error = Some(error);
            return outcome;
        }
    }
    match tokio::time::timeout(
        Duration::from_secs(20),
        stream.read_to_end(&mut outcome.read),
    )
    .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => outcome.read_error = Some(error),
        Err(_) => panic!("no end of file within 20 s after the body"),
    }
    outcome
}

/// Checks that the client wrote its whole body and then read one complete answer `status`
/// whose body contains `needle`.
fn assert_answer_read(outcome: &Outcome, status: u16, needle: &str) {
    assert!(
        outcome.write_error.is_none(),
        "the client's write failed after {} of {BODY_BYTES} body bytes: {:?}",
        outcome.written,
        outcome.write_error
    );
    assert!(
        outcome.read_error.is_none(),
        "reading the answer failed after {} bytes: {:?}",
        outcome.read.len(),
        outcome.read_error
    );
    let (informational, response) = parse_responses(&outcome.read).unwrap_or_else(|| {
        panic!(
            "not one complete response: {:?}",
            String::from_utf8_lossy(&outcome.read)
        )
    });
    assert!(informational.is_empty(), "{informational:?}");
    assert_eq!(response.status, status, "{response:?}");
    assert!(response.body.contains(needle), "{response:?}");
}

/// A subscriber and a small publish on `hub` work (while another client is being drained).
async fn hub_still_serves(hub: &TestHub, id: &str) {
    let mut subscriber = hub.subscribe("topic=meanwhile").await;
    assert_eq!(subscriber.status, 200);
    let (status, body) = hub
        .publish(&[("topic", "meanwhile"), ("data", "hello"), ("id", id)])
        .await;
    assert_eq!(status, 200, "{body}");
    let event = subscriber
        .next_event_within(Duration::from_secs(5))
        .await
        .expect("the event, while the big publish is drained");
    assert_eq!(event.id, id);
}

async fn twenty_mib_publish_gets_its_413(framing: Framing) {
    let hub = TestHub::start(config()).await;
    let token = publisher_token(&["*"]);
    let (halfway_tx, halfway_rx) = oneshot::channel();
    let addr = hub.addr;
    let started = Instant::now();
    let client = tokio::spawn(async move {
        publish_then_read(addr, framing, Some(&token), Some(halfway_tx)).await
    });
    // The hub answers others while it drains this client (if the client got that far: if
    // not, its outcome below says why).
    if halfway_rx.await.is_ok() {
        hub_still_serves(&hub, &format!("meanwhile-{framing:?}")).await;
    }
    let outcome = client.await.expect("client task");
    println!(
        "{framing:?}: {} body bytes written, answer read {:?} after the start",
        outcome.written,
        started.elapsed()
    );
    assert_answer_read(&outcome, 413, "limit");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_writing_20_mib_before_reading_gets_the_413() {
    twenty_mib_publish_gets_its_413(Framing::ContentLength).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_publisher_writing_20_mib_before_reading_gets_the_413() {
    twenty_mib_publish_gets_its_413(Framing::Chunked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_without_a_token_and_a_20_mib_body_gets_the_401() {
    let hub = TestHub::start(config()).await;
    let outcome = publish_then_read(hub.addr, Framing::ContentLength, None, None).await;
    assert_answer_read(&outcome, 401, "");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_that_is_not_a_form_with_a_20_mib_body_gets_the_415() {
    let hub = TestHub::start(config()).await;
    let head = publish_head(
        Framing::ContentLength,
        Some(&publisher_token(&["*"])),
        false,
    )
    .replace(
        "Content-Type: application/x-www-form-urlencoded",
        "Content-Type: application/json",
    );
    assert!(head.contains("application/json"));
    let outcome = send_then_read(hub.addr, Framing::ContentLength, head, None).await;
    assert_answer_read(&outcome, 415, "x-www-form-urlencoded");
    hub_still_serves(&hub, "after-415").await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_expect_100_continue_the_413_comes_before_the_body_and_without_a_100() {
    let hub = TestHub::start(config()).await;
    for (token, status) in [(Some(publisher_token(&["*"])), 413), (None, 401)] {
        let mut stream = TcpStream::connect(hub.addr).await.expect("connect");
        let head = publish_head(Framing::ContentLength, token.as_deref(), true);
        stream.write_all(head.as_bytes()).await.expect("head");
        // Nothing of the body is sent: the answer must come by itself, and end the connection.
        let mut read = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut read))
            .await
            .expect("the answer and end of file, without sending the body")
            .expect("read");
        let (informational, response) = parse_responses(&read)
            .unwrap_or_else(|| panic!("{:?}", String::from_utf8_lossy(&read)));
        assert!(
            informational.is_empty(),
            "no 100 Continue for a refused body: {informational:?}"
        );
        assert_eq!(response.status, status, "{response:?}");
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http2_the_413_resets_only_its_stream_and_the_connection_goes_on() {
    use std::future::poll_fn;
    use std::task::Poll;

    let hub = TestHub::start(config()).await;
    let tcp = TcpStream::connect(hub.addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2c handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::post(format!("http://{}/.well-known/mercure", hub.addr))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("content-length", BODY_BYTES.to_string())
        .header(
            "authorization",
            format!("Bearer {}", publisher_token(&["*"])),
        )
        .body(())
        .expect("request");
    let (response, mut body) = client.send_request(request, false).expect("send");
    // Send the body as fast as flow control allows, until the hub resets the stream.
    let sender = tokio::spawn(async move {
        let mut sent = 0;
        loop {
            body.reserve_capacity(CHUNK_BYTES);
            let next = poll_fn(|cx| {
                if let Poll::Ready(reset) = body.poll_reset(cx) {
                    return Poll::Ready(Err(reset));
                }
                body.poll_capacity(cx).map(Ok)
            })
            .await;
            match next {
                Ok(Some(Ok(n))) if sent < BODY_BYTES => {
                    let n = n.min(BODY_BYTES - sent);
                    if let Err(error) = body.send_data(Bytes::from(vec![b'x'; n]), false) {
                        return (sent, error.reason());
                    }
                    sent += n;
                }
                Ok(Some(Ok(_))) => {
                    let _ = body.send_data(Bytes::new(), true);
                    return (sent, None);
                }
                // The stream closed under us (the reset raced the capacity check): its reason
                // is what the reset said.
                Ok(Some(Err(_))) | Ok(None) => {
                    let reset = tokio::time::timeout(
                        Duration::from_secs(5),
                        poll_fn(|cx| body.poll_reset(cx)),
                    )
                    .await;
                    return (sent, reset.ok().and_then(Result::ok));
                }
                Err(reset) => return (sent, reset.ok()),
            }
        }
    });
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("the answer within 10 s")
        .expect("response");
    assert_eq!(response.status(), 413);
    let mut answer = Vec::new();
    let mut recv = response.into_body();
    while let Some(data) = recv.data().await {
        let data = data.expect("the answer's body");
        let _ = recv.flow_control().release_capacity(data.len());
        answer.extend_from_slice(&data);
    }
    assert!(
        String::from_utf8_lossy(&answer).contains("limit"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    let (sent, reason) = tokio::time::timeout(Duration::from_secs(10), sender)
        .await
        .expect("the stream reset within 10 s")
        .expect("sender task");
    println!("HTTP/2: {sent} body bytes sent before the reset ({reason:?})");
    assert_eq!(
        reason,
        Some(h2::Reason::NO_ERROR),
        "RFC 9113 §8.1: an early answer resets the request stream with NO_ERROR"
    );
    // The connection itself goes on: a second request on it.
    let mut client = client
        .ready()
        .await
        .expect("the connection is still usable");
    let request = http::Request::get(format!("http://{}/healthz", hub.addr))
        .body(())
        .expect("request");
    let (response, _) = client.send_request(request, true).expect("send");
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .expect("second answer")
        .expect("second response");
    assert_eq!(response.status(), 200);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_stops_sending_is_cut_after_the_lingering_time() {
    const LINGERING_TIME: Duration = Duration::from_millis(1000);
    let hub = TestHub::start_with(
        config(),
        ServerOptions {
            lingering_time: LINGERING_TIME,
            lingering_timeout: Duration::from_millis(500),
            ..ServerOptions::default()
        },
    )
    .await;
    let stream = TcpStream::connect(hub.addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    // No token (a 401 before the body), and a body larger than anything it will send.
    let head = "POST /.well-known/mercure HTTP/1.1\r\nHost: localhost\r\n\
                Content-Type: application/x-www-form-urlencoded\r\n\
                Content-Length: 1000000000000\r\n\r\n";
    writer.write_all(head.as_bytes()).await.expect("head");
    // This client reads while it writes: it sees the answer at once.
    let read = tokio::spawn(async move {
        let mut read = Vec::new();
        let _ = reader.read_to_end(&mut read).await;
        read
    });
    let started = Instant::now();
    let chunk = vec![b'x'; 16 * 1024];
    // 16 KiB every 20 ms: steady, with gaps far under the lingering timeout; for at most 10 s.
    let cut = loop {
        if let Err(error) = writer.write_all(&chunk).await {
            break Some(error);
        }
        if started.elapsed() > Duration::from_secs(10) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let elapsed = started.elapsed();
    let error = cut.expect("the hub cut the connection within 10 s");
    println!("cut after {elapsed:?}: {error}");
    assert!(
        elapsed >= LINGERING_TIME && elapsed < LINGERING_TIME * 4,
        "cut after {elapsed:?}, with a lingering time of {LINGERING_TIME:?}"
    );
    let read = read.await.expect("reader");
    let (_, response) =
        parse_responses(&read).unwrap_or_else(|| panic!("{:?}", String::from_utf8_lossy(&read)));
    assert_eq!(response.status, 401, "{response:?}");
    hub.stop().await;
}

/// The drained bytes are thrown away as they come: the hub's peak memory does not grow with
/// the bodies it refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_refused_bodies_keeps_the_hub_memory_flat() {
    let hub = BinaryHub::start(&["--jwt-key", SECRET, "--history", "memory"], &[]);
    let pid = hub.child.id();
    let addr = hub.addr;
    let token = publisher_token(&["*"]);
    // Warm up: one refused body of the same kind.
    let outcome = publish_then_read(hub.addr, Framing::ContentLength, Some(&token), None).await;
    assert_answer_read(&outcome, 413, "limit");
    let rss_before = proc_status_kib(pid, "VmRSS:");
    let peak_before = proc_status_kib(pid, "VmHWM:");
    // Three at once: 60 MiB refused and drained.
    let clients: Vec<_> = (0..3)
        .map(|i| {
            let token = token.clone();
            let framing = if i % 2 == 0 {
                Framing::ContentLength
            } else {
                Framing::Chunked
            };
            tokio::spawn(async move { publish_then_read(addr, framing, Some(&token), None).await })
        })
        .collect();
    for client in clients {
        let outcome = client.await.expect("client task");
        assert_answer_read(&outcome, 413, "limit");
    }
    let peak_after = proc_status_kib(pid, "VmHWM:");
    println!(
        "hub RSS before {rss_before} KiB (peak so far {peak_before} KiB); peak after 3 × 20 MiB refused: {peak_after} KiB"
    );
    assert!(
        peak_after < rss_before.max(peak_before) + 8 * 1024,
        "the peak RSS grew from {} KiB to {peak_after} KiB",
        rss_before.max(peak_before)
    );
}

/// hyper refuses a head over `--max-header-bytes` with `431` before the client has finished
/// sending it; no body was involved, but the bytes waiting at the close make it linger too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_head_written_whole_before_reading_gets_the_431() {
    let hub = TestHub::start(config()).await;
    let mut stream = TcpStream::connect(hub.addr).await.expect("connect");
    let mut head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Padding: ".to_vec();
    head.resize(head.len() + 4 * 1024 * 1024, b'a');
    head.extend_from_slice(b"\r\n\r\n");
    for (i, chunk) in head.chunks(CHUNK_BYTES).enumerate() {
        if let Err(error) = stream.write_all(chunk).await {
            panic!(
                "the write failed after {} of {} head bytes: {error}",
                i * CHUNK_BYTES,
                head.len()
            );
        }
    }
    let mut read = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut read))
        .await
        .expect("the answer and the end within 20 s")
        .expect("read");
    let (_, response) =
        parse_responses(&read).unwrap_or_else(|| panic!("{:?}", String::from_utf8_lossy(&read)));
    assert_eq!(response.status, 431, "{response:?}");
    hub.stop().await;
}
