//! Slow and hostile clients against the real binary: requests that never finish (slowloris),
//! too many connections overall and from one address, oversized heads, pipelining abuse. Each
//! is limited by a setting, gets a clear answer or a close, and costs bounded memory while an
//! ordinary subscriber keeps receiving.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::binary::BinaryHub;
use crate::support::sse::SseClient;
use crate::support::{
    expect_metric, heavy, proc_status_kib, publish_with, publisher_token, SECRET,
};

/// Connects to `addr` from the loopback address `source` (127.0.0.0/8 is all loopback).
async fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    socket.connect(addr).await
}

/// Sends a subscription request and returns the stream and the first bytes of the answer.
async fn subscribe_raw(source: Ipv4Addr, addr: SocketAddr) -> (TcpStream, String) {
    let mut stream = connect_from(source, addr).await.expect("connect");
    stream
        .write_all(b"GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    let mut head = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut head))
        .await
        .expect("an answer within 5 s")
        .unwrap_or(0);
    (stream, String::from_utf8_lossy(&head[..n]).into_owned())
}

async fn scrape(hub: &BinaryHub) -> String {
    // From an address of its own, so that a per-address limit does not count the scraper.
    let client = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)))
        .build()
        .expect("client");
    client
        .get(format!("http://{}/metrics", hub.addr))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body")
}

/// How long until the hub closes a connection that keeps sending a request head it never
/// finishes (one byte every 200 ms), or that sends nothing at all.
async fn slow_client(addr: SocketAddr, partial_head: bool) -> Option<Duration> {
    let opened = Instant::now();
    let mut stream = TcpStream::connect(addr).await.ok()?;
    if partial_head {
        stream
            .write_all(b"GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: x\r\n")
            .await
            .ok()?;
    }
    let mut buf = [0u8; 256];
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => return Some(opened.elapsed()),
                // An error answer (408) before the close is fine too.
                Ok(_) => {}
            },
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                if partial_head && stream.write_all(b"X").await.is_err() {
                    return Some(opened.elapsed());
                }
                if opened.elapsed() > Duration::from_secs(30) {
                    return None;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_after_the_header_timeout_and_others_keep_receiving() {
    const SLOW: usize = 4_000;
    let _heavy = heavy().await;
    let hub = BinaryHub::start(
        &[
            "--jwt-key",
            SECRET,
            "--anonymous",
            "--header-read-timeout",
            "2s",
        ],
        &[],
    );
    let pid = hub.child.id();
    let mut subscriber = SseClient::open(&format!("{}?topic=t", hub.url), &[]).await;
    assert_eq!(subscriber.status, 200);
    let rss_before = proc_status_kib(pid, "VmRSS:");

    // Half send part of a head and then a byte every 200 ms, half send nothing.
    let slow: Vec<_> = (0..SLOW)
        .map(|i| tokio::spawn(slow_client(hub.addr, i % 2 == 0)))
        .collect();
    let token = publisher_token(&["*"]);
    let mut peak_rss = rss_before;
    let mut worst_delivery = Duration::ZERO;
    for i in 0..20 {
        let sent = Instant::now();
        let (status, body) = publish_with(
            &hub.url,
            &token,
            &[("topic", "t"), ("data", &format!("e{i}"))],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let event = subscriber
            .next_event_within(Duration::from_secs(5))
            .await
            .expect("the ordinary subscriber keeps receiving");
        assert_eq!(event.data, format!("e{i}"));
        worst_delivery = worst_delivery.max(sent.elapsed());
        peak_rss = peak_rss.max(proc_status_kib(pid, "VmRSS:"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut closed_after = Vec::with_capacity(SLOW);
    for task in slow {
        closed_after.push(
            task.await
                .expect("slow client")
                .expect("the hub closes a slow client within 30 s"),
        );
    }
    closed_after.sort();
    let open_after = expect_metric(&scrape(&hub).await, "ssehub_connections_open");
    eprintln!(
        "slowloris: {SLOW} connections closed after {:?} (median) to {:?} (max); hub RSS {} KiB \
         before, {} KiB at most ({} bytes per slow connection); publish-to-delivery at most \
         {worst_delivery:?}; {open_after} connections open after",
        closed_after[SLOW / 2],
        closed_after[SLOW - 1],
        rss_before,
        peak_rss,
        (peak_rss.saturating_sub(rss_before) * 1024) / SLOW as u64,
    );
    // The head timeout is 2 s; connecting thousands at once on two cores adds some.
    assert!(closed_after[SLOW - 1] < Duration::from_secs(10));
    assert!(
        closed_after[0] >= Duration::from_millis(1_500),
        "{:?}",
        closed_after[0]
    );
    assert!(
        worst_delivery < Duration::from_secs(2),
        "{worst_delivery:?}"
    );
    // The subscriber's connection and the scrape itself.
    assert!(open_after <= 2, "{open_after} connections still open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_address_limit_get_429_and_other_addresses_are_served() {
    let _heavy = heavy().await;
    let hub = BinaryHub::start(
        &[
            "--jwt-key",
            SECRET,
            "--anonymous",
            "--max-connections-per-ip",
            "20",
        ],
        &[],
    );
    let attacker = Ipv4Addr::new(127, 0, 0, 1);
    let mut held = Vec::new();
    for _ in 0..20 {
        let (stream, head) = subscribe_raw(attacker, hub.addr).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        held.push(stream);
    }
    let (_, refused) = subscribe_raw(attacker, hub.addr).await;
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    assert!(
        refused.contains("too many open connections from your address"),
        "{refused}"
    );
    // Another client is not affected.
    let (_other, head) = subscribe_raw(Ipv4Addr::new(127, 0, 0, 2), hub.addr).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // A closed connection frees its place.
    drop(held.pop());
    let started = Instant::now();
    loop {
        let (stream, head) = subscribe_raw(attacker, hub.addr).await;
        if head.starts_with("HTTP/1.1 200") {
            held.push(stream);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{head}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = scrape(&hub).await;
    assert!(
        expect_metric(
            &metrics,
            "ssehub_connections_rejected_total{reason=\"per_address\"}"
        ) >= 1,
        "{metrics}"
    );
    // 20 from the attacker, one from 127.0.0.2, the scrape.
    assert_eq!(
        expect_metric(&metrics, "ssehub_connections_open"),
        22,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_total_limit_get_503_until_one_closes() {
    let _heavy = heavy().await;
    let hub = BinaryHub::start(
        &[
            "--jwt-key",
            SECRET,
            "--anonymous",
            "--max-connections",
            "30",
        ],
        &[],
    );
    let mut held = Vec::new();
    for i in 0..30 {
        let (stream, head) = subscribe_raw(Ipv4Addr::new(127, 0, 1, i), hub.addr).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        held.push(stream);
    }
    let (_, refused) = subscribe_raw(Ipv4Addr::new(127, 0, 2, 1), hub.addr).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("retry-after: 5"), "{refused}");
    assert!(refused.contains("too many open connections"), "{refused}");
    // An EventSource (it accepts text/event-stream) refused at the connection limit is told to
    // come back in a 200 stream: a browser never retries an error status.
    let mut browser = connect_from(Ipv4Addr::new(127, 0, 2, 2), hub.addr)
        .await
        .expect("connect");
    browser
        .write_all(
            b"GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: x\r\n\
              Accept: text/event-stream\r\n\r\n",
        )
        .await
        .expect("request");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), browser.read_to_end(&mut answer))
        .await
        .expect("the answer and the end within 5 s")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        answer.contains("content-type: text/event-stream"),
        "{answer}"
    );
    let (_, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let mut parser = ssehub::wire::Parser::new();
    assert_eq!(
        parser.push(body.as_bytes()).expect("an event stream"),
        vec![]
    );
    let delay = parser.reconnection_time_ms().expect("a retry field");
    assert!((5_000..=10_000).contains(&delay), "{answer}");
    held.truncate(29);
    let started = Instant::now();
    loop {
        let (stream, head) = subscribe_raw(Ipv4Addr::new(127, 0, 2, 1), hub.addr).await;
        if head.starts_with("HTTP/1.1 200") {
            held.push(stream);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{head}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let metrics = scrape(&hub).await;
    assert!(
        expect_metric(
            &metrics,
            "ssehub_connections_rejected_total{reason=\"total\"}"
        ) >= 1,
        "{metrics}"
    );
}

/// Sends `request` on a fresh connection and returns the whole answer, read until the hub
/// closes the connection; fails the test if it is still open after 5 s.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The hub may answer and close before it read everything: ignore write errors.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut buf).await {
                // EOF, or a reset after an answer to a request the hub did not read whole.
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(
        read.is_ok(),
        "the hub did not close the connection within 5 s; answer so far: {answer:.300}"
    );
    answer
}

#[tokio::test]
async fn oversized_heads_get_431_or_414_and_too_many_topics_400() {
    let hub = BinaryHub::start(
        &[
            "--jwt-key",
            SECRET,
            "--anonymous",
            "--max-header-bytes",
            "16384",
        ],
        &[],
    );
    let big_header = format!(
        "GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let answer = exchange(hub.addr, big_header.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.200}");
    let long_query = format!(
        "GET /.well-known/mercure?topic={} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(20_000)
    );
    let answer = exchange(hub.addr, long_query.as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 431") || answer.starts_with("HTTP/1.1 414"),
        "{answer:.200}"
    );
    // Within the head limit, but more topics than allowed (64 by default).
    let topics: String = (0..65).map(|i| format!("topic=t{i}&")).collect();
    let answer = exchange(
        hub.addr,
        format!(
            "GET /.well-known/mercure?{topics} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:.200}");
    assert!(answer.contains("too many topics"), "{answer}");
    // Still serving.
    let (status, _) = publish_with(&hub.url, &publisher_token(&["*"]), &[("topic", "t")]).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_and_a_pipeline_never_read_is_dropped() {
    let _heavy = heavy().await;
    let hub = BinaryHub::start(
        &[
            "--jwt-key",
            SECRET,
            "--anonymous",
            "--dispatch-timeout",
            "2s",
        ],
        &[],
    );
    let pid = hub.child.id();
    // 1,000 requests in one write: 1,000 answers, in order, on the one connection.
    let pipeline = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".repeat(999)
        + "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let answer = exchange(hub.addr, pipeline.as_bytes()).await;
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 1_000);

    // A client that pipelines 200,000 requests (about 7 MB) and never reads an answer: once its
    // socket buffers are full the hub stops reading its requests, and the write timeout drops
    // the connection.
    let rss_before = proc_status_kib(pid, "VmRSS:");
    let mut subscriber = SseClient::open(&format!("{}?topic=t", hub.url), &[]).await;
    let mut abuser = TcpStream::connect(hub.addr).await.expect("connect");
    let chunk = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1_000);
    let started = Instant::now();
    let mut sent_requests = 0;
    let dropped = loop {
        let write =
            tokio::time::timeout(Duration::from_secs(1), abuser.write_all(chunk.as_bytes()));
        match write.await {
            Ok(Ok(())) => sent_requests += 1_000,
            // Blocked: the hub stopped reading. Err: the hub closed it.
            Ok(Err(_)) => break true,
            Err(_) => {}
        }
        if sent_requests >= 200_000 {
            break false;
        }
        if started.elapsed() > Duration::from_secs(20) {
            break false;
        }
    };
    // Wait for the close if the writes merely blocked.
    let closed = dropped || {
        let mut buf = vec![0u8; 1 << 16];
        let deadline = Instant::now() + Duration::from_secs(10);
        // Drain what the hub wrote before it gave up; the end is EOF or a reset.
        loop {
            match tokio::time::timeout_at(deadline.into(), abuser.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(_)) => {}
                Err(_) => break false,
            }
        }
    };
    let peak = proc_status_kib(pid, "VmHWM:");
    let (status, _) = publish_with(
        &hub.url,
        &publisher_token(&["*"]),
        &[("topic", "t"), ("data", "still here")],
    )
    .await;
    assert_eq!(status, 200);
    let event = subscriber
        .next_event_within(Duration::from_secs(5))
        .await
        .expect("the subscriber keeps receiving");
    assert_eq!(event.data, "still here");
    eprintln!(
        "pipelining: {sent_requests} requests written before the hub stopped reading; closed: \
         {closed}; hub RSS {rss_before} KiB before, peak {peak} KiB"
    );
    assert!(
        closed,
        "the hub dropped a connection that never read its answers"
    );
    assert!(
        sent_requests < 200_000,
        "the hub kept reading requests nobody reads answers of"
    );
}
