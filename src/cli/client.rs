//! The HTTP(S) clients of the client subcommands (`publish`, `subscribe`, `bench`): reqwest on
//! rustls with the ring provider, the server's own (`server::tls`).
//!
//! Trust: with `--ca-cert PEM`, the certificates of that file are the only roots (a hub with a
//! private CA, or the tests' CA); without it, the system's roots, through
//! `rustls-platform-verifier`. The same [`tls_config`] feeds the bench's own TLS connections
//! (`tokio-rustls`, where it counts connections exactly).

use std::path::Path;
use std::sync::Arc;

use anyhow::{ensure, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// A TLS client configuration on ring: the roots of `ca_cert` only, or the system's roots,
/// offering the ALPN protocols `alpn` (most preferred first).
///
/// # Errors
/// An unreadable or empty `--ca-cert` file.
pub fn tls_config(ca_cert: Option<&Path>, alpn: &[&[u8]]) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let mut config = match ca_cert {
        Some(path) => builder
            .with_root_certificates(read_roots(path)?)
            .with_no_client_auth(),
        None => match rustls_platform_verifier::Verifier::new(provider) {
            Ok(verifier) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth(),
            // A system without a CA bundle can still reach `http://` hubs; `https://` ones then
            // fail verification, with the hint to pass --ca-cert.
            Err(error) => {
                tracing::warn!(%error, "no system roots: https:// hubs need --ca-cert");
                builder
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth()
            }
        },
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A reqwest client for `http://` and `https://` hubs (HTTP/1.1), trusting `ca_cert` or the
/// system's roots.
///
/// # Errors
/// As [`tls_config`].
pub fn http_client(ca_cert: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls_config(ca_cert, &[b"http/1.1"])?)
        .build()
        .context("building the HTTP client")
}

/// The certificates of the PEM file `path`, as the only trusted roots.
///
/// # Errors
/// A file that cannot be read, holds no certificate, or one that is not a usable CA.
pub fn read_roots(path: &Path) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path)
        .with_context(|| format!("--ca-cert {}", path.display()))?
    {
        let cert = cert.with_context(|| format!("--ca-cert {}", path.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("--ca-cert {}: not a usable CA", path.display()))?;
    }
    ensure!(
        !roots.is_empty(),
        "--ca-cert {}: no certificate",
        path.display()
    );
    Ok(roots)
}

/// A hint for a request that failed before any answer: for `https://`, which roots were
/// trusted, so a certificate signed by a private CA points to `--ca-cert`.
pub(crate) fn trust_hint(url: &str, ca_cert: Option<&Path>) -> String {
    match (url.starts_with("https://"), ca_cert) {
        (false, _) => String::new(),
        (true, Some(path)) => format!(" (trusting only the CA of --ca-cert {})", path.display()),
        (true, None) => {
            " (trusting the system's roots; for a hub with its own CA, pass --ca-cert PEM)".into()
        }
    }
}

/// Whether `error` is a TLS handshake that failed on the server's certificate (untrusted,
/// expired, for another name): a lasting failure, unlike a refused or dropped connection.
pub(crate) fn certificate_rejected(error: &reqwest::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(rustls::Error::InvalidCertificate(_)) = current.downcast_ref() {
            return true;
        }
        // `io::Error::source` skips the error it wraps (which may be another `io::Error`, as
        // the connector wraps tokio-rustls's): step into it instead.
        cause = match current.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => current.source(),
        };
    }
    false
}
