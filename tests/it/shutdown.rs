//! Graceful shutdown of the real binary.

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use crate::support::binary::BinaryHub;
use crate::support::{heavy, open_raw_streams, publish_with, publisher_token, SECRET};

/// 10,000 open streams, then SIGTERM: the hub stops accepting, ends every stream with a proper
/// end of the chunked body (so clients reconnect elsewhere), and exits within a few seconds.
///
/// "Stopped accepting" is checked while the process is still alive: a connection that has sent
/// nothing yet keeps the shutdown waiting (for up to the header read timeout, within the
/// shutdown timeout), and the test lets it go only after a new connection was refused. A
/// refused connection after the process exited would prove nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_ten_thousand_streams_ends_them_cleanly_and_exits_quickly() {
    const STREAMS: usize = 10_000;
    let _heavy = heavy().await;
    let mut hub = BinaryHub::start(
        &[
            "--jwt-key",
            SECRET,
            "--anonymous",
            "--header-read-timeout",
            "30s",
            "--shutdown-timeout",
            "30s",
        ],
        &[],
    );
    let mut streams = open_raw_streams(hub.addr, "topic=t", STREAMS).await;
    let (status, _) = publish_with(
        &hub.url,
        &publisher_token(&["*"]),
        &[("topic", "t"), ("data", "last")],
    )
    .await;
    assert_eq!(status, 200);
    // Holds the shutdown open: accepted, but no request yet.
    let holder = tokio::net::TcpStream::connect(hub.addr)
        .await
        .expect("connect the holder");

    let signalled = Instant::now();
    hub.terminate();
    // Until the hub handles the signal it still accepts; each such connection is dropped at once
    // (it holds nothing). Once one is refused, the hub must still be running.
    let refused_while_alive = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match tokio::net::TcpStream::connect(hub.addr).await {
                Ok(accepted) => drop(accepted),
                Err(_) => break hub.child.try_wait().expect("try_wait").is_none(),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("a connection is refused within 10 s of SIGTERM");
    assert!(
        refused_while_alive,
        "the hub had exited before it refused a connection: nothing shows it stopped accepting"
    );
    // Read every stream to its end while the hub shuts down.
    let mut clean = 0;
    for stream in &mut streams {
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut rest)).await;
        if matches!(read, Ok(Ok(_))) && rest.ends_with(b"0\r\n\r\n") {
            clean += 1;
        }
    }
    assert_eq!(
        hub.child.try_wait().expect("try_wait"),
        None,
        "the idle connection holds the shutdown open"
    );
    drop(holder);
    let (status, took) = tokio::task::spawn_blocking(move || {
        let status = hub.wait_exit(Duration::from_secs(30));
        (status, signalled.elapsed())
    })
    .await
    .expect("wait");
    let status = status.expect("the hub exited");
    assert!(status.success(), "exit status {status}");
    eprintln!("SIGTERM with {STREAMS} open streams: the hub exited after {took:?}");
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    assert_eq!(
        clean, STREAMS,
        "every stream ended with the chunked terminator"
    );
}

/// A hub whose stderr was closed (its log collector went away) keeps serving, and still shuts
/// down on SIGTERM: a log line that cannot be written must not take a task down with it.
#[tokio::test]
async fn a_closed_stderr_neither_breaks_requests_nor_shutdown() {
    let mut hub = BinaryHub::start(
        &["--jwt-key", SECRET, "--anonymous"],
        &[("RUST_LOG", "debug")],
    );
    // Dropping the receiver ends the thread that reads the hub's stderr, closing the pipe.
    hub.logs = std::sync::mpsc::channel().1;
    for _ in 0..3 {
        let mut sub = crate::support::SseClient::open(&format!("{}?topic=t", hub.url), &[]).await;
        assert_eq!(sub.status, 200);
        let (status, _) = publish_with(
            &hub.url,
            &publisher_token(&["*"]),
            &[("topic", "t"), ("data", "x")],
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(sub.next_event().await.data, "x");
    }
    hub.terminate();
    let status = tokio::task::spawn_blocking(move || hub.wait_exit(Duration::from_secs(10)))
        .await
        .expect("join")
        .expect("the hub exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
}
