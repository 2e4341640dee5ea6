//! Connections of the subscriber side: one `TcpStream` per HTTP/1.1 subscription (or per
//! `--http2` group), with a TLS handshake for `https://`.
//!
//! This side stays on hyper's `conn` handshakes over tokio-rustls rather than reqwest: reqwest
//! pools connections and hides how many it opens, and the bench must open exactly one
//! connection per subscription (or per group of `--http2` streams) to measure the memory each
//! costs the server. The TLS configuration is the CLI's own ([`crate::cli::client::tls_config`]:
//! ring, `--ca-cert` or the system's roots), so publishing (reqwest) and subscribing trust alike.

use std::path::Path;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::plan::Endpoint;
use crate::cli::client::tls_config;

/// A TLS client (ring) trusting `ca_cert` (or the system's roots) and offering the one ALPN
/// protocol `alpn`.
///
/// # Errors
/// As [`tls_config`].
pub(super) fn tls_connector(ca_cert: Option<&Path>, alpn: &[u8]) -> anyhow::Result<TlsConnector> {
    Ok(TlsConnector::from(Arc::new(tls_config(ca_cert, &[alpn])?)))
}

/// A byte stream to the server: TCP, or TLS over TCP.
pub(super) trait Socket: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Socket for T {}
pub(super) type Io = TokioIo<Box<dyn Socket>>;

/// Opens a connection to `endpoint`, with a TLS handshake for `https://`.
pub(super) async fn connect(endpoint: &Endpoint, tls: Option<&TlsConnector>) -> Result<Io, String> {
    let stream = TcpStream::connect(endpoint.addr)
        .await
        .map_err(|e| format!("connecting to {}: {e}", endpoint.addr))?;
    // Small writes (the request) go out at once; the server's frames are what we measure.
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    match (&endpoint.tls_name, tls) {
        (Some(name), Some(connector)) => {
            let stream = connector.connect(name.clone(), stream).await.map_err(|e| {
                format!(
                    "TLS handshake with {}: {e}{}",
                    endpoint.addr,
                    if matches!(
                        e.get_ref().and_then(|e| e.downcast_ref()),
                        Some(rustls::Error::InvalidCertificate(_))
                    ) {
                        " (pass --ca-cert PEM for a hub whose CA is not among the system's roots)"
                    } else {
                        ""
                    }
                )
            })?;
            Ok(TokioIo::new(Box::new(stream)))
        }
        // `Plan::new` makes a TLS client for every `https://` subscribe URL.
        (Some(_), None) => Err("https:// without a TLS client (a bug)".into()),
        (None, _) => Ok(TokioIo::new(Box::new(stream))),
    }
}
