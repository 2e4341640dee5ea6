//! The `http_server` fuzz target: arbitrary client bytes into the real HTTP/1 server as a plain
//! connection meets it (the first-request sniffer; a subscription then written by
//! `server::direct`, anything else by hyper and the router, with lingering close), through an
//! in-memory pipe, on a current-thread runtime.
//!
//! Input: a flags byte (bit 0: half-close after the last chunk; bit 1: one byte of extra
//! `yield` between chunks), a count `n` (mod 16) of chunk sizes, `n` chunk-size bytes (a chunk of
//! size 0 is 256 bytes), then the bytes the client sends, cut into those chunks (the rest in one
//! chunk).
//!
//! Properties:
//! - nothing panics: not the server's task, not the router's;
//! - whatever comes back parses as HTTP/1.x responses: a status line, header fields, and a body
//!   framed as its head says (`content-length`, chunked, none for `1xx`/`204`/`304` and for a
//!   `HEAD` request, or up to the close); only an event stream may be cut off by the close;
//!   nothing follows a response that said `connection: close`;
//! - after a half-close the connection ends, within a bound, unless an event stream is open (with
//!   bytes of a next request waiting, hyper does not read on to see the end of file); then, or
//!   without a half-close, the client leaves once the server has gone quiet, and the connection
//!   must end within a bound (an open stream's next heartbeat fails): no hang;
//! - if the input begins with a complete request (as `httparse` reads it), at least one answer
//!   comes back (hyper answers a request it cannot parse with `400`);
//! - afterwards, on fresh connections to the same hub, a subscription opens, a publish is
//!   answered `200` with its id, and the subscriber receives the event.
//!
//! Not driven: the HTTP/2 preface check in front (a 24-byte comparison; HTTP/2 bytes go to the
//! HTTP/1 server here), HTTP/2 itself and TLS.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, DuplexStream, ReadBuf};

use super::Input;
use crate::auth::{AuthConfig, JwtAlgorithm, JwtSigner, JwtVerifier};
use crate::http::HttpConfig;
use crate::hub::{Hub, HubConfig};
use crate::server::{serve_plain_for_fuzzing, ServerOptions};

/// The hub's HMAC secret.
const SECRET: &str = "fuzzing-secret-fuzzing-secret-32";
/// Small, so that fuzzed publishes reach the `413` path.
const MAX_PUBLISH_BYTES: usize = 1024;
/// How long a connection may take to end after the client half-closed or left (real time; it
/// takes microseconds). Under the lingering timeout (5 s), so that a close that waits for it
/// instead of noticing the client left fails here.
const END_WITHIN: Duration = Duration::from_secs(2);
/// The hub's heartbeat: short, so that a stream notices within [`END_WITHIN`] that its client
/// left (hyper may see it only when a write fails).
const HEARTBEAT: Duration = Duration::from_millis(100);
/// Rounds of `yield` without a new byte after which a server is taken to have gone quiet.
const QUIET_ROUNDS: usize = 64;

/// `http_server` (see the module documentation).
pub fn http_server(bytes: &[u8]) {
    let mut input = Input::new(bytes);
    let flags = input.byte();
    let half_close = flags & 1 == 1;
    let yield_between = flags & 2 == 2;
    let count = usize::from(input.byte() % 16);
    let sizes: Vec<usize> = input
        .bytes(count)
        .iter()
        .map(|&b| if b == 0 { 256 } else { usize::from(b) })
        .collect();
    let sent = input.remaining();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let hub = Hub::builder(hub_config()).build().await.expect("a hub");
        let received = exchange(&hub, sent, &sizes, half_close, yield_between).await;
        check_responses(sent, &received.bytes, received.ended);
        if half_close && starts_with_complete_request(sent) {
            assert!(
                !received.bytes.is_empty(),
                "a complete request got no answer: {:?}",
                String::from_utf8_lossy(sent)
            );
        }
        publish_and_subscribe(&hub).await;
        hub.shutdown().await;
    });
}

fn hub_config() -> HubConfig {
    HubConfig {
        history_size: 16,
        // An event stream whose client left is noticed at its next write at the latest.
        heartbeat: HEARTBEAT,
        ..HubConfig::default()
    }
}

fn http_config() -> HttpConfig {
    let verifier = || JwtVerifier::new(JwtAlgorithm::HS256, SECRET).expect("a valid secret");
    HttpConfig {
        auth: AuthConfig {
            publisher: Some(verifier()),
            subscriber: Some(verifier()),
            anonymous: true,
        },
        max_publish_bytes: MAX_PUBLISH_BYTES,
        ..HttpConfig::default()
    }
}

/// Opens a connection to the hub's server over an in-memory pipe.
fn connect(hub: &Hub) -> (DuplexStream, tokio::task::JoinHandle<()>) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let app = crate::http::router(hub.clone(), http_config());
    let serving = tokio::spawn(async move {
        serve_plain_for_fuzzing(server, app, &ServerOptions::default()).await;
    });
    (client, serving)
}

/// What one connection returned.
struct Received {
    bytes: Vec<u8>,
    /// The server closed the connection (end of file), as opposed to the client leaving.
    ended: bool,
}

/// Reads whatever is ready now, without waiting: `Some(0)` at end of file, `None` when nothing
/// is ready.
async fn read_ready(client: &mut DuplexStream, into: &mut Vec<u8>) -> Option<usize> {
    let mut chunk = [0u8; 4096];
    poll_fn(|cx| {
        let mut buf = ReadBuf::new(&mut chunk);
        match Pin::new(&mut *client).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => Poll::Ready(Some(buf.filled().len())),
            // A pipe does not fail; treat it as the end.
            Poll::Ready(Err(_)) => Poll::Ready(Some(0)),
            Poll::Pending => Poll::Ready(None),
        }
    })
    .await
    .inspect(|&n| into.extend_from_slice(&chunk[..n]))
}

/// Sends `sent` in chunks of `sizes`, reads the answers, and ends the connection; asserts that
/// the server's task neither panics nor outlives the bound.
async fn exchange(
    hub: &Hub,
    sent: &[u8],
    sizes: &[usize],
    half_close: bool,
    yield_between: bool,
) -> Received {
    let (mut client, serving) = connect(hub);
    let mut received = Received {
        bytes: Vec::new(),
        ended: false,
    };
    let mut rest = sent;
    let mut sizes = sizes.iter();
    while !rest.is_empty() {
        let size = sizes.next().copied().unwrap_or(rest.len()).min(rest.len());
        let (chunk, after) = rest.split_at(size);
        rest = after;
        // Inputs are at most a few KiB and the pipe holds 64: a write never waits for the
        // server, and reading in between keeps its answers from filling the pipe.
        if client.write_all(chunk).await.is_err() {
            // The server closed the connection: what it wrote is still there to read.
            let read = tokio::time::timeout(END_WITHIN, client.read_to_end(&mut received.bytes));
            assert!(read.await.is_ok(), "a closed pipe that does not end");
            received.ended = true;
            break;
        }
        tokio::task::yield_now().await;
        if yield_between {
            tokio::task::yield_now().await;
        }
        if read_ready(&mut client, &mut received.bytes).await == Some(0) {
            received.ended = true;
            break;
        }
    }
    if half_close && !received.ended {
        // The server may have closed already, which makes this fail: fine.
        let _ = client.shutdown().await;
    }
    let mut quiet = 0;
    while !received.ended && quiet < QUIET_ROUNDS {
        match read_ready(&mut client, &mut received.bytes).await {
            Some(0) => received.ended = true,
            Some(_) => quiet = 0,
            None => quiet += 1,
        }
        tokio::task::yield_now().await;
    }
    // After a half-close the connection must end, unless an event stream is open: with bytes
    // of a next request waiting behind it, hyper does not read on and sees the end of file
    // only when a write fails (the next heartbeat, once the client is gone; checked below).
    let streaming =
        memchr::memmem::find(&received.bytes, b"content-type: text/event-stream").is_some();
    if half_close && !received.ended && !streaming {
        let read = tokio::time::timeout(END_WITHIN, client.read_to_end(&mut received.bytes));
        assert!(
            read.await.is_ok(),
            "the connection did not end within {END_WITHIN:?} of the client's half-close"
        );
        received.ended = true;
    }
    drop(client);
    match tokio::time::timeout(END_WITHIN, serving).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => panic!("the connection's task failed: {error}"),
        Err(_) => panic!("the connection did not end within {END_WITHIN:?} of the client leaving"),
    }
    received
}

/// The methods of the complete requests at the start of `sent`, as far as `httparse` and the
/// usual framing read them; used to know which answers have no body (`HEAD`).
fn request_methods(sent: &[u8]) -> Vec<String> {
    let mut methods = Vec::new();
    let mut rest = sent;
    while !rest.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 100];
        let mut request = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(length)) = request.parse(rest) else {
            break;
        };
        let method = request.method.unwrap_or_default().to_owned();
        let mut content_length = None;
        let mut chunked = false;
        for header in request.headers.iter() {
            if header.name.eq_ignore_ascii_case("content-length") {
                content_length = std::str::from_utf8(header.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<usize>().ok());
                if content_length.is_none() {
                    return methods;
                }
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = true;
            }
        }
        methods.push(method);
        rest = &rest[length..];
        if chunked {
            // Chunked request bodies: not followed further (the answers after it are not
            // checked for `HEAD`).
            break;
        }
        let body = content_length.unwrap_or(0);
        if body > rest.len() {
            break;
        }
        rest = &rest[body..];
    }
    methods
}

/// Whether `sent` begins with one complete request that hyper must answer: complete for
/// `httparse`, with no body, or a body of a declared length that is all there. (The HTTP/2
/// preface is not HTTP/1.x: hyper closes without an answer.)
fn starts_with_complete_request(sent: &[u8]) -> bool {
    if sent.starts_with(b"PRI ") {
        return false;
    }
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut request = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(length)) = request.parse(sent) else {
        return false;
    };
    let mut body = 0;
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return false;
        }
        if header.name.eq_ignore_ascii_case("content-length") {
            match std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
            {
                Some(n) => body = n,
                None => return false,
            }
        }
    }
    sent.len() - length >= body
}

/// Checks that `received` is a sequence of well-formed HTTP/1.x responses (see the module
/// documentation); `ended`: the server closed the connection.
fn check_responses(sent: &[u8], received: &[u8], ended: bool) {
    let methods = request_methods(sent);
    let mut rest = received;
    let mut answered = 0;
    let show = || String::from_utf8_lossy(received).into_owned();
    while !rest.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        let length = match response.parse(rest) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => {
                assert!(!ended, "a response head cut off by the close: {:?}", show());
                return;
            }
            Err(error) => panic!("not an HTTP/1.x response ({error}): {:?}", show()),
        };
        let status = response.code.expect("a complete head has a status");
        let header = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
        };
        let closes = header("connection").is_some_and(|v| v.contains("close"));
        let event_stream =
            header("content-type").is_some_and(|v| v.starts_with("text/event-stream"));
        let chunked =
            header("transfer-encoding").is_some_and(|v| v.trim_end().ends_with("chunked"));
        let content_length = header("content-length");
        rest = &rest[length..];
        if (100..200).contains(&status) {
            continue;
        }
        let head_request = methods.get(answered).is_some_and(|m| m == "HEAD");
        answered += 1;
        let body_done = if head_request || status == 204 || status == 304 {
            Some(0)
        } else if chunked {
            chunked_length(rest)
        } else if let Some(value) = content_length {
            let n: usize = value
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("content-length {value:?}: {:?}", show()));
            (rest.len() >= n).then_some(n)
        } else {
            // Delimited by the close.
            assert!(ended, "a body without framing, and no close: {:?}", show());
            Some(rest.len())
        };
        match body_done {
            Some(n) => rest = &rest[n..],
            None => {
                assert!(
                    !ended || event_stream,
                    "a response body cut off by the close: {:?}",
                    show()
                );
                return;
            }
        }
        assert!(
            !closes || rest.is_empty(),
            "bytes after a response that closes the connection: {:?}",
            show()
        );
    }
}

/// The length of a complete chunked body at the start of `bytes` (chunks, last chunk,
/// trailers, blank line), or `None` if it is incomplete. A malformed one fails.
fn chunked_length(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line_end = memchr::memmem::find(&bytes[at..], b"\r\n")?;
        let line = &bytes[at..at + line_end];
        let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
        let size = std::str::from_utf8(size_text)
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or_else(|| panic!("a bad chunk size line {:?}", String::from_utf8_lossy(line)));
        at += line_end + 2;
        if size == 0 {
            // Trailers, then the blank line.
            loop {
                let end = memchr::memmem::find(&bytes[at..], b"\r\n")?;
                at += end + 2;
                if end == 0 {
                    return Some(at);
                }
            }
        }
        if bytes.len() < at + size + 2 {
            return None;
        }
        assert_eq!(
            &bytes[at + size..at + size + 2],
            b"\r\n",
            "a chunk not ended by CRLF"
        );
        at += size + 2;
    }
}

/// Reads from `client` until `needle` appears or end of file; `None` if it did not appear.
async fn read_until(client: &mut DuplexStream, seen: &mut Vec<u8>, needle: &[u8]) -> Option<()> {
    let mut chunk = [0u8; 4096];
    loop {
        if memchr::memmem::find(seen, needle).is_some() {
            return Some(());
        }
        let n = client.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        seen.extend_from_slice(&chunk[..n]);
    }
}

/// A subscription and a publish on fresh connections to `hub` work, and the event arrives.
async fn publish_and_subscribe(hub: &Hub) {
    let (mut subscriber, subscribing) = connect(hub);
    subscriber
        .write_all(b"GET /.well-known/mercure?topic=fuzz HTTP/1.1\r\nHost: hub\r\n\r\n")
        .await
        .expect("the pipe takes it");
    let mut stream = Vec::new();
    let opened = tokio::time::timeout(
        END_WITHIN,
        read_until(&mut subscriber, &mut stream, b"\r\n\r\n"),
    );
    assert!(
        matches!(opened.await, Ok(Some(()))),
        "no subscription head: {:?}",
        String::from_utf8_lossy(&stream)
    );
    assert!(
        stream.starts_with(b"HTTP/1.1 200 "),
        "the subscription was refused: {:?}",
        String::from_utf8_lossy(&stream)
    );

    let token = JwtSigner::new(JwtAlgorithm::HS256, SECRET)
        .expect("a valid secret")
        .sign_json(&serde_json::json!({"mercure": {"publish": ["*"]}}))
        .expect("a token");
    let body = "topic=fuzz&data=after&id=after-the-fuzz";
    let request = format!(
        "POST /.well-known/mercure HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let (mut publisher, publishing) = connect(hub);
    publisher
        .write_all(request.as_bytes())
        .await
        .expect("the pipe takes it");
    let mut answer = Vec::new();
    let answered = tokio::time::timeout(END_WITHIN, publisher.read_to_end(&mut answer));
    assert!(
        matches!(answered.await, Ok(Ok(_))),
        "no answer to the publish"
    );
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 200 ") && text.ends_with("after-the-fuzz"),
        "{text:?}"
    );
    let received = tokio::time::timeout(
        END_WITHIN,
        read_until(&mut subscriber, &mut stream, b"id: after-the-fuzz\n"),
    );
    assert!(
        matches!(received.await, Ok(Some(()))),
        "the subscriber did not get the event: {:?}",
        String::from_utf8_lossy(&stream)
    );
    drop(subscriber);
    drop(publisher);
    for task in [subscribing, publishing] {
        match tokio::time::timeout(END_WITHIN, task).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => panic!("a connection's task failed: {error}"),
            Err(_) => panic!("a connection did not end after its client left"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::panic::{catch_unwind, AssertUnwindSafe};

    use super::*;

    fn accepted(sent: &[u8], received: &[u8], ended: bool) -> bool {
        catch_unwind(AssertUnwindSafe(|| check_responses(sent, received, ended))).is_ok()
    }

    #[test]
    fn well_formed_answers_pass_the_check() {
        let get = b"GET / HTTP/1.1\r\n\r\n";
        for received in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"[..],
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 413 Payload Too Large\r\ncontent-length: 1\r\nconnection: close\r\n\r\nx",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            b"",
        ] {
            assert!(accepted(get, received, true), "{:?}", String::from_utf8_lossy(received));
        }
        // A HEAD answer has a length and no body.
        let head = b"HEAD / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        assert!(accepted(
            head,
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n",
            true
        ));
        // An event stream may be cut by the close; a response still arriving may be partial.
        assert!(accepted(
            get,
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n3\r\n:\n\n\r\n",
            true
        ));
        assert!(accepted(
            get,
            b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nok",
            false
        ));
    }

    #[test]
    fn malformed_answers_fail_the_check() {
        let get = b"GET / HTTP/1.1\r\n\r\n";
        for received in [
            &b"garbage\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-",
        ] {
            assert!(
                !accepted(get, received, true),
                "{:?}",
                String::from_utf8_lossy(received)
            );
        }
    }

    #[test]
    fn complete_first_requests_are_recognized() {
        assert!(starts_with_complete_request(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(starts_with_complete_request(
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nab"
        ));
        assert!(!starts_with_complete_request(
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab"
        ));
        assert!(!starts_with_complete_request(b"GET / HTTP/1.1\r\n"));
        assert!(!starts_with_complete_request(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        ));
        assert_eq!(
            request_methods(b"HEAD / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nxGET / HTTP/1.1\r\n\r\n"),
            ["HEAD", "POST", "GET"]
        );
    }
}
