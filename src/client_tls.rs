//! The TLS settings of the hub's own outgoing HTTP clients (JWK Set fetches, webhooks): rustls
//! on ring (the server's provider) with the system's roots. Building the reqwest client itself,
//! with its timeout and redirect policy, is each caller's job.

use std::sync::Arc;

/// A rustls client configuration on ring that verifies servers against the system's roots;
/// without system roots, one with no roots (`https://` then fails verification, and says so;
/// `http://` still works), after a warning naming `purpose`.
///
/// # Errors
/// The provider refuses the default protocol versions (a build problem).
pub(crate) fn platform_config(purpose: &str) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    Ok(match rustls_platform_verifier::Verifier::new(provider) {
        Ok(verifier) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth(),
        Err(error) => {
            tracing::warn!(%error, "no system roots: https:// {purpose} cannot be verified");
            builder
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        }
    })
}
