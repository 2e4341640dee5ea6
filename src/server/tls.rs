//! TLS for the listener: the certificate and key from PEM files, reloaded when they change.
//!
//! Browsers speak HTTP/2 only over TLS, and over HTTP/1.1 they open at most six connections per
//! origin, so a page with a seventh `EventSource` waits. With `--tls-cert` and `--tls-key` the
//! listener offers `h2` and `http/1.1` by ALPN and every stream of a page shares one connection.
//!
//! Certificates are renewed on disk (certbot, cert-manager) while the hub runs. A background
//! check ([`TlsConfig::watch_files`], every [`RELOAD_CHECK_INTERVAL`]) compares the files'
//! modification times and lengths with the last ones seen and loads the pair again when either
//! changed; new handshakes then get the new certificate and open connections keep theirs. A pair
//! that does not load (a half-written file, a key that does not match the certificate) is logged
//! once and the previous certificate stays in use until the files change again.
//!
//! The crypto provider is rustls' `ring`, named explicitly rather than installed as the process
//! default, so an application embedding the hub with another provider is not disturbed. The
//! accept loop, timeouts and protocol selection live in [`crate::server`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use thiserror::Error;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

/// How often the certificate files are checked for changes.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// The ALPN protocols offered, most preferred first (RFC 7301; RFC 9113 §3.2: `h2` is HTTP/2
/// over TLS).
const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A certificate and key pair that cannot be used.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file that cannot be read or holds no PEM section of the expected kind.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The private key is of an unsupported type or does not match the certificate.
    #[error("{}: {source}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why.
        source: rustls::Error,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// What the listener needs to accept TLS connections: the acceptor, and the certificate it
/// presents, which [`Self::watch_files`] keeps current. Cheap to clone.
#[derive(Clone)]
pub struct TlsConfig {
    /// Performs handshakes with the resolver below, offering `h2` and `http/1.1`.
    acceptor: TlsAcceptor,
    /// Shared with the acceptor's configuration: replacing its certificate changes what the
    /// next handshake presents.
    certificate: Arc<ReloadingCertificate>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert_path", &self.certificate.cert_path)
            .field("key_path", &self.certificate.key_path)
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Loads the certificate chain (`cert_path`: the leaf first, then intermediates) and the
    /// private key (`key_path`: PKCS#8, PKCS#1 or SEC1), both PEM.
    ///
    /// # Errors
    /// A file that cannot be read or parsed, a key that does not match the certificate.
    pub fn from_pem_files(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let stamps = FileStamps::read(cert_path, key_path);
        let key = load_pair(cert_path, key_path, &provider)?;
        let certificate = Arc::new(ReloadingCertificate {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            provider: Arc::clone(&provider),
            current: RwLock::new(Arc::new(key)),
            seen: Mutex::new(stamps),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&certificate) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            certificate,
        })
    }

    /// The acceptor for incoming connections.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Loads the files again if their modification time or length changed since they were last
    /// seen. Returns whether a new certificate is now in use; a pair that fails to load is
    /// logged and the previous certificate kept.
    pub fn reload_if_changed(&self) -> bool {
        self.certificate.reload_if_changed()
    }

    /// Checks the files every [`RELOAD_CHECK_INTERVAL`], forever; the server runs it while it
    /// serves and drops it when it stops.
    pub async fn watch_files(self) {
        let mut interval = tokio::time::interval(RELOAD_CHECK_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            // Two `stat`s, and rarely a parse: too little to need the blocking pool.
            self.reload_if_changed();
        }
    }
}

/// The certificate resolver: whatever pair loaded last.
struct ReloadingCertificate {
    cert_path: PathBuf,
    key_path: PathBuf,
    /// Parses private keys when reloading.
    provider: Arc<CryptoProvider>,
    /// Read on every handshake, written on a reload: an `RwLock` held only to clone the `Arc`.
    current: RwLock<Arc<CertifiedKey>>,
    /// The files as they were when last loaded or tried, so that an unchanged broken pair is
    /// not parsed (and logged) again at every check.
    seen: Mutex<FileStamps>,
}

impl fmt::Debug for ReloadingCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCertificate")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl ReloadingCertificate {
    fn reload_if_changed(&self) -> bool {
        let stamps = FileStamps::read(&self.cert_path, &self.key_path);
        {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            if *seen == stamps {
                return false;
            }
            *seen = stamps;
        }
        match load_pair(&self.cert_path, &self.key_path, &self.provider) {
            Ok(key) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
                info!(
                    cert = %self.cert_path.display(),
                    key = %self.key_path.display(),
                    "TLS certificate reloaded"
                );
                true
            }
            Err(error) => {
                warn!(
                    %error,
                    "the TLS certificate files changed but do not load; keeping the previous certificate"
                );
                false
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

/// Modification time and length of the two files (`None` where `stat` failed): a change in
/// either means the pair should be loaded again.
#[derive(Debug, PartialEq, Eq)]
struct FileStamps([Option<(SystemTime, u64)>; 2]);

impl FileStamps {
    fn read(cert_path: &Path, key_path: &Path) -> Self {
        let stamp = |path: &Path| {
            let metadata = std::fs::metadata(path).ok()?;
            Some((metadata.modified().ok()?, metadata.len()))
        };
        Self([stamp(cert_path), stamp(key_path)])
    }
}

/// Reads and checks one certificate chain and its key.
fn load_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let file_error = |path: &Path, reason: String| TlsError::File {
        path: path.to_owned(),
        reason,
    };
    let cert_pem =
        std::fs::read(cert_path).map_err(|e| file_error(cert_path, format!("reading: {e}")))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(cert_path, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(file_error(
            cert_path,
            "no CERTIFICATE section (expected a PEM certificate chain)".into(),
        ));
    }
    let key_pem =
        std::fs::read(key_path).map_err(|e| file_error(key_path, format!("reading: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        file_error(
            key_path,
            format!("no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|source| TlsError::Key {
        path: key_path.to_owned(),
        source,
    })
}
