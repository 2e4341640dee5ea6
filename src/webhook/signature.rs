//! The signature of a webhook request (docs/WEBHOOKS.md): the header
//! `Ssehub-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
//!
//! The timestamp is signed with the body, so a receiver that checks it against its clock
//! (within a tolerance, 5 minutes in the documented example) refuses a request replayed later.
//! [`verify`] is the receiver's side, in Rust; `examples/webhook/verify.py` is the same in
//! Python's standard library.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use thiserror::Error;

/// The name of the signature header.
pub const SIGNATURE_HEADER: &str = "Ssehub-Signature";

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignatureError {
    /// The header is not `t=<digits>,v1=<hex>`.
    #[error("the signature header is not t=<unix seconds>,v1=<hex>")]
    Malformed,
    /// The timestamp is further from the receiver's clock than the tolerance.
    #[error("the signature's timestamp is {0} s away from now, beyond the tolerance")]
    Stale(u64),
    /// No `v1` value matches the body.
    #[error("the signature does not match the body")]
    Mismatch,
}

fn mac(secret: &[u8], timestamp: u64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length (RFC 2104: a long one is hashed first).
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The value of [`SIGNATURE_HEADER`] for `body` sent at `timestamp` (Unix seconds).
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    format!("t={timestamp},v1={hex}")
}

/// Checks `header` for `body` at `now` (Unix seconds): its timestamp within `tolerance_s` of
/// `now`, and one of its `v1` values the HMAC of `"<t>.<body>"` (compared in constant time).
/// Several `v1` values are allowed, for a secret being rotated.
///
/// # Errors
/// [`SignatureError`] saying which check failed.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: u64,
    tolerance_s: u64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => {
                timestamp = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| SignatureError::Malformed)?,
                )
            }
            Some(("v1", value)) => signatures.push(decode_hex(value)?),
            // Other schemes may come later; they are not ours to check.
            Some(_) => {}
            None => return Err(SignatureError::Malformed),
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let skew = now.abs_diff(timestamp);
    if skew > tolerance_s {
        return Err(SignatureError::Stale(skew));
    }
    let expected = mac(secret, timestamp, body);
    if signatures
        .iter()
        .any(|signature| expected.clone().verify_slice(signature).is_ok())
    {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

fn decode_hex(text: &str) -> Result<Vec<u8>, SignatureError> {
    if text.len() % 2 != 0 {
        return Err(SignatureError::Malformed);
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or(SignatureError::Malformed)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_the_hmac_of_the_timestamp_and_the_body() {
        // The value Python's hmac module gives for the same input (an independent computation).
        let header = sign(b"secret", 1_700_000_000, b"{}");
        assert_eq!(
            header,
            "t=1700000000,v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
        assert_eq!(
            verify(b"secret", &header, b"{}", 1_700_000_010, 300),
            Ok(())
        );
    }

    #[test]
    fn tampering_a_wrong_secret_or_an_old_timestamp_is_refused() {
        let body = br#"{"kind":"events"}"#;
        let header = sign(b"secret", 1_700_000_000, body);
        assert_eq!(
            verify(
                b"secret",
                &header,
                br#"{"kind":"evenTs"}"#,
                1_700_000_000,
                300
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", &header, body, 1_700_000_000, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"secret", &header, body, 1_700_000_301, 300),
            Err(SignatureError::Stale(301))
        );
        // The timestamp is signed: moving it breaks the signature.
        let moved = header.replace("t=1700000000", "t=1700000100");
        assert_eq!(
            verify(b"secret", &moved, body, 1_700_000_100, 300),
            Err(SignatureError::Mismatch)
        );
        for bad in ["", "t=1", "v1=00", "t=x,v1=00", "t=1,v1=0g"] {
            assert_eq!(
                verify(b"secret", bad, body, 1, 300),
                Err(SignatureError::Malformed),
                "{bad:?}"
            );
        }
        // A second v1 (a secret being rotated) may be the one that matches.
        let rotated = format!("{header},v1={}", "00".repeat(32));
        assert_eq!(
            verify(b"secret", &rotated, body, 1_700_000_000, 300),
            Ok(())
        );
    }
}
