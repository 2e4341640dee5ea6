//! Trusted issuers of draft-08 tokens, each bound to its own keys and algorithms.
//!
//! draft-dunglas-mercure-08 §Token Validation: every trusted key is associated with the issuer
//! identifier it belongs to, and a token is verified "using only the key(s) associated with the
//! token's `iss`, never a pooled set spanning issuers"; the accepted algorithms are an explicit
//! allow-list, never derived from the token, and `alg` must suit the key (no algorithm
//! confusion). An [`Issuer`] is one such binding: an `iss`, the roles it signs tokens for
//! (publishers, subscribers or both, so that the two roles may use different keys, as the
//! draft recommends), the allowed algorithms, and its keys: static (an HMAC secret, or a PEM
//! public key) or a JWK Set URL ([`super::jwks`]). Several [`Issuer`]s may share one `iss`
//! (one for publishers, one for subscribers; or a rotation of static keys).
//!
//! Verifying the token itself (header, claims, signature) is [`super::draft08`]'s job.

use std::fmt;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use thiserror::Error;

use super::jwks::{JwksError, JwksKeys};

/// Which tokens an issuer's keys verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Tokens presented to publish.
    Publisher,
    /// Tokens presented to subscribe.
    Subscriber,
}

/// An issuer that cannot be used as configured.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IssuerError {
    /// An empty `iss`.
    #[error("the issuer identifier is empty")]
    EmptyIssuer,
    /// No algorithm allowed.
    #[error("the issuer {0:?} allows no algorithm")]
    NoAlgorithm(String),
    /// An algorithm name jsonwebtoken does not know (`none` included).
    #[error("unknown JWT algorithm {0:?} (expected one of HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)")]
    UnknownAlgorithm(String),
    /// Algorithms that do not suit the key: HMAC with a public key or a key set, an
    /// asymmetric one with a secret, or two families for one PEM key.
    #[error("the issuer {issuer:?}: {reason}")]
    Mismatch {
        /// The issuer.
        issuer: String,
        /// What does not fit.
        reason: String,
    },
    /// The key does not parse (or its file cannot be read).
    #[error("the issuer {issuer:?}: invalid key: {reason}")]
    BadKey {
        /// The issuer.
        issuer: String,
        /// Why.
        reason: String,
    },
    /// The key set URL cannot be used.
    #[error("the issuer {issuer:?}: {source}")]
    Jwks {
        /// The issuer.
        issuer: String,
        /// Why.
        source: JwksError,
    },
}

/// Parses an algorithm name exactly as RFC 7518 writes it (`none` is not one).
///
/// # Errors
/// [`IssuerError::UnknownAlgorithm`].
pub fn parse_algorithm(name: &str) -> Result<Algorithm, IssuerError> {
    name.parse::<Algorithm>()
        .map_err(|_| IssuerError::UnknownAlgorithm(name.to_owned()))
}

/// The algorithms allowed by default for a key set: every asymmetric one.
pub const ASYMMETRIC: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Where an issuer's keys come from.
#[derive(Clone)]
enum Keys {
    /// Configured keys, each with an optional `kid`.
    Static(Vec<(Option<String>, Arc<DecodingKey>)>),
    /// A JWK Set URL.
    Jwks(JwksKeys),
}

/// One trusted issuer: its `iss`, roles, allowed algorithms and keys.
#[derive(Clone)]
pub struct Issuer {
    iss: String,
    publisher: bool,
    subscriber: bool,
    algorithms: Vec<Algorithm>,
    keys: Keys,
    /// Listed in the protected resource metadata's `authorization_servers`.
    authorization_server: bool,
}

impl fmt::Debug for Issuer {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = match &self.keys {
            Keys::Static(keys) => format!("{} static", keys.len()),
            Keys::Jwks(jwks) => format!("JWKS {}", jwks.url()),
        };
        f.debug_struct("Issuer")
            .field("iss", &self.iss)
            .field("publisher", &self.publisher)
            .field("subscriber", &self.subscriber)
            .field("algorithms", &self.algorithms)
            .field("keys", &keys)
            .finish()
    }
}

impl Issuer {
    /// An issuer signing with the HMAC `secret`, for both roles; `algorithms` must all be
    /// HMAC ones (HS256 is the usual one).
    ///
    /// # Errors
    /// An empty issuer or secret, no algorithm, or a non-HMAC algorithm.
    pub fn with_secret(
        iss: &str,
        secret: &str,
        algorithms: &[Algorithm],
    ) -> Result<Self, IssuerError> {
        check(
            iss,
            algorithms,
            Some(AlgorithmFamily::Hmac),
            "an HMAC secret",
        )?;
        if secret.is_empty() {
            return Err(bad_key(iss, "the secret is empty"));
        }
        // A public key used as an HMAC secret lets anyone who has it sign tokens.
        if secret.trim_start().starts_with("-----BEGIN") {
            return Err(mismatch(
                iss,
                "a PEM key is not an HMAC secret: name its asymmetric algorithm (RS256, ES256, EdDSA…)",
            ));
        }
        let key = DecodingKey::from_secret(secret.as_bytes()).map_err(|e| bad_key(iss, e))?;
        Ok(Self::new(
            iss,
            algorithms,
            Keys::Static(vec![(None, Arc::new(key))]),
        ))
    }

    /// An issuer verified with a PEM public key (`pem` is the PEM text, or a file holding it),
    /// for both roles. `algorithms` must be of the key's family, one family only: RSA
    /// (RS*, PS*), ECDSA (ES256, ES384) or EdDSA.
    ///
    /// # Errors
    /// An empty issuer, no algorithm, an HMAC algorithm, two families, or a key that does not
    /// parse for the family.
    pub fn with_public_key(
        iss: &str,
        pem: &str,
        algorithms: &[Algorithm],
    ) -> Result<Self, IssuerError> {
        let family = algorithms.first().map(|alg| alg.family());
        check(iss, algorithms, family, "one PEM public key")?;
        if family == Some(AlgorithmFamily::Hmac) {
            return Err(mismatch(
                iss,
                "an HMAC algorithm with a public key would use the public key as a shared \
                 secret (anyone could sign): give the secret instead, or an asymmetric algorithm",
            ));
        }
        let bytes = if pem.trim_start().starts_with("-----BEGIN") {
            pem.as_bytes().to_vec()
        } else {
            std::fs::read(pem).map_err(|e| {
                bad_key(
                    iss,
                    format!("not PEM text, and reading it as a file failed: {e}"),
                )
            })?
        };
        let key = match family {
            Some(AlgorithmFamily::Rsa) => DecodingKey::from_rsa_pem(&bytes),
            Some(AlgorithmFamily::Ec) => DecodingKey::from_ec_pem(&bytes),
            _ => DecodingKey::from_ed_pem(&bytes),
        }
        .map_err(|e| bad_key(iss, e))?;
        Ok(Self::new(
            iss,
            algorithms,
            Keys::Static(vec![(None, Arc::new(key))]),
        ))
    }

    /// An issuer whose keys come from a JWK Set, for both roles; `algorithms` must be
    /// asymmetric (an empty list means [`ASYMMETRIC`]).
    ///
    /// # Errors
    /// An empty issuer or an HMAC algorithm.
    pub fn with_jwks(
        iss: &str,
        jwks: JwksKeys,
        algorithms: &[Algorithm],
    ) -> Result<Self, IssuerError> {
        let algorithms = if algorithms.is_empty() {
            ASYMMETRIC
        } else {
            algorithms
        };
        check(iss, algorithms, None, "a key set")?;
        if algorithms
            .iter()
            .any(|alg| alg.family() == AlgorithmFamily::Hmac)
        {
            return Err(mismatch(
                iss,
                "a key set publishes public keys: HMAC algorithms need a shared secret (`key`)",
            ));
        }
        Ok(Self::new(iss, algorithms, Keys::Jwks(jwks)))
    }

    fn new(iss: &str, algorithms: &[Algorithm], keys: Keys) -> Self {
        Self {
            iss: iss.to_owned(),
            publisher: true,
            subscriber: true,
            algorithms: algorithms.to_vec(),
            keys,
            authorization_server: false,
        }
    }

    /// Limits the issuer to the given roles (by default both).
    #[must_use]
    pub fn for_roles(mut self, roles: &[Role]) -> Self {
        self.publisher = roles.contains(&Role::Publisher);
        self.subscriber = roles.contains(&Role::Subscriber);
        self
    }

    /// Names the static key with a `kid`, which tokens may use as a hint (no effect on a key
    /// set, whose keys carry their own).
    #[must_use]
    pub fn with_kid(mut self, kid: &str) -> Self {
        if let Keys::Static(keys) = &mut self.keys {
            for (own, _) in keys.iter_mut() {
                *own = Some(kid.to_owned());
            }
        }
        self
    }

    /// Lists the issuer as an authorization server in the protected resource metadata.
    #[must_use]
    pub fn advertised(mut self) -> Self {
        self.authorization_server = true;
        self
    }

    /// The issuer identifier.
    pub fn iss(&self) -> &str {
        &self.iss
    }

    /// Whether it is listed as an authorization server.
    pub fn is_authorization_server(&self) -> bool {
        self.authorization_server
    }

    /// Whether its keys verify tokens for `role`.
    pub fn serves(&self, role: Role) -> bool {
        match role {
            Role::Publisher => self.publisher,
            Role::Subscriber => self.subscriber,
        }
    }

    /// Whether `alg` is on its allow-list.
    pub fn allows(&self, alg: Algorithm) -> bool {
        self.algorithms.contains(&alg)
    }

    /// Its keys that may verify a token signed with `alg` naming `kid`: for static keys, the
    /// one with that `kid` if any has it, else all of them (a `kid` is only a hint); for a key
    /// set, as [`JwksKeys::keys_for`].
    ///
    /// # Errors
    /// A key set that could never be fetched.
    pub(crate) async fn keys_for(
        &self,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<Vec<Arc<DecodingKey>>, JwksError> {
        match &self.keys {
            Keys::Static(keys) => {
                let named: Vec<_> = keys
                    .iter()
                    .filter(|(own, _)| kid.is_some() && own.as_deref() == kid)
                    .map(|(_, key)| Arc::clone(key))
                    .collect();
                Ok(if named.is_empty() {
                    keys.iter().map(|(_, key)| Arc::clone(key)).collect()
                } else {
                    named
                })
            }
            Keys::Jwks(jwks) => jwks.keys_for(alg, kid).await,
        }
    }
}

/// A non-empty issuer and algorithm list, all of `family` when one is required.
fn check(
    iss: &str,
    algorithms: &[Algorithm],
    family: Option<AlgorithmFamily>,
    what: &str,
) -> Result<(), IssuerError> {
    if iss.is_empty() {
        return Err(IssuerError::EmptyIssuer);
    }
    if algorithms.is_empty() {
        return Err(IssuerError::NoAlgorithm(iss.to_owned()));
    }
    if let Some(family) = family {
        if let Some(other) = algorithms.iter().find(|alg| alg.family() != family) {
            return Err(mismatch(
                iss,
                format!(
                    "{other:?} does not suit {what} (allowed with it: {:?})",
                    family.algorithms()
                ),
            ));
        }
    }
    Ok(())
}

fn mismatch(iss: &str, reason: impl Into<String>) -> IssuerError {
    IssuerError::Mismatch {
        issuer: iss.to_owned(),
        reason: reason.into(),
    }
}

fn bad_key(iss: &str, reason: impl fmt::Display) -> IssuerError {
    IssuerError::BadKey {
        issuer: iss.to_owned(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithms_must_suit_the_key() {
        assert!(Issuer::with_secret("https://a", "s", &[Algorithm::HS256]).is_ok());
        assert!(matches!(
            Issuer::with_secret("https://a", "s", &[Algorithm::RS256]),
            Err(IssuerError::Mismatch { .. })
        ));
        assert!(matches!(
            Issuer::with_secret("https://a", "s", &[]),
            Err(IssuerError::NoAlgorithm(_))
        ));
        assert!(matches!(
            Issuer::with_secret("", "s", &[Algorithm::HS256]),
            Err(IssuerError::EmptyIssuer)
        ));
        assert!(matches!(
            Issuer::with_secret("https://a", "", &[Algorithm::HS256]),
            Err(IssuerError::BadKey { .. })
        ));
        assert!(matches!(
            Issuer::with_secret(
                "https://a",
                "-----BEGIN PUBLIC KEY-----\nx",
                &[Algorithm::HS256]
            ),
            Err(IssuerError::Mismatch { .. })
        ));
        let pem = "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----";
        assert!(matches!(
            Issuer::with_public_key("https://a", pem, &[Algorithm::HS256]),
            Err(IssuerError::Mismatch { .. })
        ));
        assert!(matches!(
            Issuer::with_public_key("https://a", pem, &[Algorithm::RS256, Algorithm::ES256]),
            Err(IssuerError::Mismatch { .. })
        ));
        assert!(matches!(
            Issuer::with_public_key("https://a", pem, &[Algorithm::RS256]),
            Err(IssuerError::BadKey { .. })
        ));
        let jwks = JwksKeys::new("https://a/jwks", Default::default()).expect("url");
        assert!(matches!(
            Issuer::with_jwks("https://a", jwks.clone(), &[Algorithm::HS256]),
            Err(IssuerError::Mismatch { .. })
        ));
        let issuer = Issuer::with_jwks("https://a", jwks, &[]).expect("asymmetric default");
        assert!(issuer.allows(Algorithm::EdDSA) && !issuer.allows(Algorithm::HS256));
        assert!(parse_algorithm("none").is_err() && parse_algorithm("hs256").is_err());
    }

    #[test]
    fn roles_limit_what_an_issuer_verifies() {
        let issuer = Issuer::with_secret("https://a", "s", &[Algorithm::HS256])
            .expect("issuer")
            .for_roles(&[Role::Subscriber]);
        assert!(issuer.serves(Role::Subscriber) && !issuer.serves(Role::Publisher));
    }
}
