//! Connection limits: at most so many connections open at once, and optionally from one
//! address; a refused plain connection is answered (`503`, `429`) without reading its request.

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

/// Answers a refused plain connection and closes it: the response is written without reading
/// the request, then whatever the client sends is read (at most 64 KiB, for at most a second)
/// so that closing does not reset the connection before the client read the answer.
pub(super) async fn refuse(stream: TcpStream, refusal: Refusal) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = stream;
    let answered = async {
        stream.write_all(refusal.response()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut read = 0;
        while read < 64 * 1024 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => read += n,
            }
        }
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), answered).await;
}
