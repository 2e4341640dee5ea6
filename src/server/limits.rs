//! Connection limits: at most so many connections open at once, and optionally from one
//! address; a refused plain connection is answered (`503`, `429`, or for an `EventSource` a
//! `200` stream that sets `retry:`) and closed.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::TcpStream;

use super::{ServerOptions, RESERVED_FILES};
use crate::metrics::{ConnectionMetrics, Reason};

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// [`ServerOptions::max_connections`] reached.
    Total,
    /// [`ServerOptions::max_connections_per_ip`] reached for this address.
    PerAddress,
}

impl Refusal {
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Total => "total",
            Self::PerAddress => "per_address",
        }
    }

    /// The whole HTTP/1.1 response sent to an `EventSource` before closing: a `200` event
    /// stream whose only frame says why and sets `retry:` between 5 and 10 s (jittered, so that
    /// the browsers refused together do not come back together).
    pub(super) fn event_stream_response(self) -> Vec<u8> {
        let why = match self {
            Self::Total => "the hub has too many open connections",
            Self::PerAddress => "too many open connections from your address",
        };
        let delay_ms = fastrand::u64(5_000..=10_000);
        let frame = crate::wire::encode_retry(
            &format!("refused for now: {why}; retry in {delay_ms} ms"),
            delay_ms,
        );
        let mut response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
             cache-control: private, no-cache, no-store, must-revalidate, max-age=0\r\n\
             retry-after: {}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
            delay_ms.div_ceil(1000),
            frame.len()
        )
        .into_bytes();
        response.extend_from_slice(&frame);
        response
    }

    /// The whole HTTP/1.1 response sent before closing.
    pub(super) fn response(self) -> &'static [u8] {
        match self {
            Self::Total => {
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
                  retry-after: 5\r\nconnection: close\r\ncontent-length: 51\r\n\r\n\
                  the hub has too many open connections; retry later\n"
            }
            Self::PerAddress => {
                b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain; charset=utf-8\r\n\
                  retry-after: 5\r\nconnection: close\r\ncontent-length: 56\r\n\r\n\
                  too many open connections from your address; close some\n"
            }
        }
    }
}

/// The connection limits and the connections they count.
pub(super) struct ConnectionLimits {
    pub(super) max_total: usize,
    pub(super) max_per_ip: usize,
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    metrics: ConnectionMetrics,
}

impl ConnectionLimits {
    pub(super) fn new(options: &ServerOptions) -> Self {
        let max_total = match options.max_connections {
            0 => rlimit::getrlimit(rlimit::Resource::NOFILE)
                .map(|(soft, _)| usize::try_from(soft).unwrap_or(usize::MAX))
                .unwrap_or(1024)
                .saturating_sub(RESERVED_FILES)
                .max(1),
            n => n,
        };
        Self {
            max_total,
            max_per_ip: options.max_connections_per_ip,
            open: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            metrics: options.metrics.clone(),
        }
    }

    /// Counts a new connection from `ip`, or says which limit refuses it.
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, Refusal> {
        // Only the accept loop admits, so this check and the increment below cannot race.
        if self.open.load(Ordering::Acquire) >= self.max_total {
            return Err(Refusal::Total);
        }
        let ip = ip.to_canonical();
        if self.max_per_ip > 0 {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
            let count = per_ip.entry(ip).or_insert(0);
            if *count >= self.max_per_ip {
                return Err(Refusal::PerAddress);
            }
            *count += 1;
        }
        self.open.fetch_add(1, Ordering::AcqRel);
        self.metrics.open.inc();
        Ok(ConnectionSlot {
            limits: Arc::clone(self),
            ip,
        })
    }

    pub(super) fn refused(&self, refusal: Refusal) {
        self.metrics
            .rejected
            .get_or_create(&Reason {
                reason: refusal.label(),
            })
            .inc();
    }
}

/// One counted connection; dropping it (when the connection's task ends) frees its place.
pub(super) struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let limits = &self.limits;
        limits.open.fetch_sub(1, Ordering::AcqRel);
        limits.metrics.open.dec();
        if limits.max_per_ip > 0 {
            let mut per_ip = limits.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = per_ip.get_mut(&self.ip) {
                *count -= 1;
                if *count == 0 {
                    per_ip.remove(&self.ip);
                }
            }
        }
    }
}

/// Most refused connections being answered at once; beyond it they are closed without an
/// answer, so refusing never costs more than this many extra descriptors.
pub(super) const MAX_REFUSALS_IN_FLIGHT: usize = 256;

/// Most bytes of a refused connection's request head read to choose its answer...
const REFUSAL_HEAD_BYTES: usize = 8 * 1024;
/// ...and the longest it is waited for.
const REFUSAL_HEAD_TIME: Duration = Duration::from_millis(500);

/// Answers a refused plain connection and closes it. The request head is read first (at most
/// 8 KiB, for at most half a second), because a browser's `EventSource` fails for good
/// on any status but `200`: a `GET` that accepts `text/event-stream` is answered with a `200`
/// stream that only sets a jittered `retry:` and ends, so the browser comes back by itself once
/// connections free; anything else gets the `503`/`429`. Then whatever the client still sends
/// is read (at most 64 KiB) so that closing does not reset the connection before the client
/// read the answer.
pub(super) async fn refuse(stream: TcpStream, refusal: Refusal) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = stream;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    // A client that sends nothing (or too slowly) gets the plain answer.
    let read_head = async {
        loop {
            match wants_event_stream(&head) {
                Some(answer) => return answer,
                None if head.len() >= REFUSAL_HEAD_BYTES => return false,
                None => {}
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let event_source = tokio::time::timeout(REFUSAL_HEAD_TIME, read_head)
        .await
        .unwrap_or(false);
    let answered = async {
        if event_source {
            stream.write_all(&refusal.event_stream_response()).await?;
        } else {
            stream.write_all(refusal.response()).await?;
        }
        stream.shutdown().await?;
        let mut read = head.len();
        while read < 64 * 1024 {
            match stream.read(&mut chunk).await? {
                0 => break,
                n => read += n,
            }
        }
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), answered).await;
}

/// Whether the request head read so far is a `GET` that accepts `text/event-stream`: `None`
/// while the head is incomplete.
fn wants_event_stream(read: &[u8]) -> Option<bool> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(read) {
        Ok(httparse::Status::Partial) => None,
        // Unreadable or too many headers: not an `EventSource` we can recognise.
        Err(_) => Some(false),
        Ok(httparse::Status::Complete(_)) => Some(
            request.method == Some("GET")
                && request.headers.iter().any(|header| {
                    header.name.eq_ignore_ascii_case("accept")
                        && crate::http::subscribe::accept_names_event_stream(header.value)
                }),
        ),
    }
}
