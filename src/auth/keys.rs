//! JWT keys: verifying (the hub) and signing (`ssehub token`, tests).
//!
//! Each verifier accepts exactly one algorithm, the configured one: a token whose header names
//! another algorithm (including `none`, or HS256 signed with an RSA public key) is rejected.
//! Header parameters that point at other keys (`kid`, `jku`, `jwk`, `x5u`, `x5c`) are ignored:
//! only the configured key verifies. `exp` and `nbf` are checked when present; `aud` only when
//! the verifier was given audiences ([`JwtVerifier::with_audience`]), and then it is required.
//! Error messages say why a token was refused without echoing any part of it.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use thiserror::Error;

use super::{AuthError, Claims};

/// The signature algorithms ssehub accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256; the key is a shared secret.
    #[default]
    HS256,
    /// HMAC with SHA-384.
    HS384,
    /// HMAC with SHA-512.
    HS512,
    /// RSA PKCS#1 v1.5 with SHA-256; the hub needs the PEM public key.
    RS256,
    /// RSA with SHA-384.
    RS384,
    /// RSA with SHA-512.
    RS512,
    /// ECDSA P-256 with SHA-256; the hub needs the PEM public key.
    ES256,
    /// ECDSA P-384 with SHA-384.
    ES384,
}

impl JwtAlgorithm {
    fn to_jsonwebtoken(self) -> Algorithm {
        match self {
            Self::HS256 => Algorithm::HS256,
            Self::HS384 => Algorithm::HS384,
            Self::HS512 => Algorithm::HS512,
            Self::RS256 => Algorithm::RS256,
            Self::RS384 => Algorithm::RS384,
            Self::RS512 => Algorithm::RS512,
            Self::ES256 => Algorithm::ES256,
            Self::ES384 => Algorithm::ES384,
        }
    }

    /// Whether the key is a shared secret (HMAC) rather than a PEM key.
    pub fn is_hmac(self) -> bool {
        matches!(self, Self::HS256 | Self::HS384 | Self::HS512)
    }
}

impl FromStr for JwtAlgorithm {
    type Err = JwtKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_uppercase().as_str() {
            "HS256" => Self::HS256,
            "HS384" => Self::HS384,
            "HS512" => Self::HS512,
            "RS256" => Self::RS256,
            "RS384" => Self::RS384,
            "RS512" => Self::RS512,
            "ES256" => Self::ES256,
            "ES384" => Self::ES384,
            _ => return Err(JwtKeyError::UnknownAlgorithm(s.to_owned())),
        })
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A key that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JwtKeyError {
    /// Not one of [`JwtAlgorithm`]'s names.
    #[error("unknown JWT algorithm {0:?} (expected HS256, HS384, HS512, RS256, RS384, RS512, ES256 or ES384)")]
    UnknownAlgorithm(String),
    /// An empty HMAC secret.
    #[error("the JWT key is empty")]
    Empty,
    /// A PEM key that does not parse, or a file that cannot be read.
    #[error("invalid {algorithm} key: {reason}")]
    Invalid {
        /// The algorithm it was meant for.
        algorithm: JwtAlgorithm,
        /// What went wrong.
        reason: String,
    },
}

/// Reads key material: PEM text itself, or the path of a PEM file.
fn pem_bytes(algorithm: JwtAlgorithm, material: &str) -> Result<Vec<u8>, JwtKeyError> {
    if material.trim_start().starts_with("-----BEGIN") {
        return Ok(material.as_bytes().to_vec());
    }
    std::fs::read(material).map_err(|e| JwtKeyError::Invalid {
        algorithm,
        reason: format!("not PEM text, and reading it as a file path failed: {e}"),
    })
}

type KeyResult<K> = jsonwebtoken::errors::Result<K>;

/// Loads a key of either kind (decoding or encoding): the secret itself for HMAC, else PEM text
/// or a PEM file, read with the constructor for the algorithm's family.
fn load_key<K>(
    algorithm: JwtAlgorithm,
    material: &str,
    from_secret: fn(&[u8]) -> KeyResult<K>,
    from_ec_pem: fn(&[u8]) -> KeyResult<K>,
    from_rsa_pem: fn(&[u8]) -> KeyResult<K>,
) -> Result<K, JwtKeyError> {
    if material.is_empty() {
        return Err(JwtKeyError::Empty);
    }
    let loaded = if algorithm.is_hmac() {
        from_secret(material.as_bytes())
    } else {
        let pem = pem_bytes(algorithm, material)?;
        match algorithm {
            JwtAlgorithm::ES256 | JwtAlgorithm::ES384 => from_ec_pem(&pem),
            _ => from_rsa_pem(&pem),
        }
    };
    loaded.map_err(|e| JwtKeyError::Invalid {
        algorithm,
        reason: e.to_string(),
    })
}

/// Verifies tokens with one key and one algorithm.
#[derive(Clone)]
pub struct JwtVerifier {
    algorithm: JwtAlgorithm,
    key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for JwtVerifier {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithm", &self.algorithm)
            .field("audience", &self.validation.aud)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// A verifier for `algorithm`: `material` is the HMAC secret, or the PEM public key (text
    /// or file path) for RSA and ECDSA.
    ///
    /// # Errors
    /// [`JwtKeyError`] when the key is empty or does not parse.
    pub fn new(algorithm: JwtAlgorithm, material: &str) -> Result<Self, JwtKeyError> {
        let key = load_key(
            algorithm,
            material,
            DecodingKey::from_secret,
            DecodingKey::from_ec_pem,
            DecodingKey::from_rsa_pem,
        )?;
        let mut validation = Validation::new(algorithm.to_jsonwebtoken());
        // Mercure tokens may omit `exp`; when present it is still checked.
        validation.required_spec_claims.clear();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = 0;
        validation.validate_aud = false;
        Ok(Self {
            algorithm,
            key,
            validation,
        })
    }

    /// Requires tokens to carry an `aud` claim naming one of `audiences` (a string, or an array
    /// with at least one of them). Without audiences (the default, and Mercure's behaviour) `aud`
    /// is not looked at. Empty strings are ignored.
    #[must_use]
    pub fn with_audience<S: AsRef<str>>(mut self, audiences: &[S]) -> Self {
        let audiences: Vec<&str> = audiences
            .iter()
            .map(AsRef::as_ref)
            .filter(|audience| !audience.is_empty())
            .collect();
        if audiences.is_empty() {
            self.validation.validate_aud = false;
            self.validation.aud = None;
            self.validation.required_spec_claims.remove("aud");
        } else {
            self.validation.set_audience(&audiences);
            self.validation.validate_aud = true;
            // jsonwebtoken checks `aud` only when the token has one: a token without it would
            // pass, so it is made required (RFC 7519 §4.1.3).
            self.validation
                .required_spec_claims
                .insert("aud".to_owned());
        }
        self
    }

    /// The algorithm this verifier accepts.
    pub fn algorithm(&self) -> JwtAlgorithm {
        self.algorithm
    }

    /// Verifies the signature, algorithm, `exp`, `nbf` and (when configured) `aud`, and decodes
    /// the claims.
    ///
    /// # Errors
    /// [`AuthError::InvalidToken`] saying why, without echoing the token.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| {
                AuthError::InvalidToken(match e.kind() {
                    ErrorKind::ExpiredSignature => EXPIRED.into(),
                    ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
                    ErrorKind::InvalidSignature => "bad signature".into(),
                    ErrorKind::InvalidAlgorithm => format!(
                        "the token is not signed with the configured algorithm {}",
                        self.algorithm
                    ),
                    ErrorKind::InvalidAudience => {
                        "the token's aud claim names no audience this hub accepts".into()
                    }
                    // Also when the claim is there with the wrong type (jsonwebtoken counts only
                    // parsed claims as present).
                    ErrorKind::MissingRequiredClaim(claim) => {
                        format!("the token has no valid {claim} claim, which this hub requires")
                    }
                    ErrorKind::InvalidClaimFormat(claim) => {
                        format!("the token's {claim} claim has the wrong type")
                    }
                    // The header is parsed first: an unknown `alg` (`none`, `None`, …) or a
                    // header that is not JSON fails there, before any signature check.
                    ErrorKind::Json(_) if jsonwebtoken::decode_header(token).is_err() => format!(
                        "malformed token: its header is not JSON naming a supported algorithm \
                         (this hub accepts {} only, and never unsigned `alg: none` tokens)",
                        self.algorithm
                    ),
                    // Never the parser's message: it quotes the offending claim value.
                    ErrorKind::Json(_) => "malformed token: the claims are not a JSON object of \
                         the expected shape (exp and nbf numbers, mercure.publish and \
                         mercure.subscribe arrays of strings, no key twice)"
                        .into(),
                    ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
                        "malformed token: a part is not base64url-encoded UTF-8".into()
                    }
                    _ => "malformed token: expected header.claims.signature, without `crit` \
                          or `b64` header parameters this hub does not support"
                        .into(),
                })
            })?;
        // RFC 7519 §4.1.4: the current time MUST be before `exp`. jsonwebtoken still accepts
        // a token during the second its `exp` names (and rounds a fractional `exp` up).
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        if claims.exp.is_some_and(|exp| exp <= now) {
            return Err(AuthError::InvalidToken(EXPIRED.into()));
        }
        Ok(claims)
    }
}

/// The message of an expired token.
const EXPIRED: &str = "the token has expired";

/// Signs tokens (for `ssehub token` and for tests).
#[derive(Clone)]
pub struct JwtSigner {
    algorithm: JwtAlgorithm,
    key: EncodingKey,
}

impl fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSigner")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl JwtSigner {
    /// A signer: `material` is the HMAC secret, or the PEM private key (text or file path).
    ///
    /// # Errors
    /// [`JwtKeyError`] when the key is empty or does not parse.
    pub fn new(algorithm: JwtAlgorithm, material: &str) -> Result<Self, JwtKeyError> {
        let key = load_key(
            algorithm,
            material,
            EncodingKey::from_secret,
            EncodingKey::from_ec_pem,
            EncodingKey::from_rsa_pem,
        )?;
        Ok(Self { algorithm, key })
    }

    /// Signs `claims` into a compact JWS.
    ///
    /// # Errors
    /// [`JwtKeyError::Invalid`] when signing fails.
    pub fn sign(&self, claims: &Claims) -> Result<String, JwtKeyError> {
        self.sign_json(claims)
    }

    /// Signs any claims that serialize to a JSON object (for claims [`Claims`] does not carry,
    /// such as `aud`).
    ///
    /// # Errors
    /// [`JwtKeyError::Invalid`] when signing fails.
    pub fn sign_json(&self, claims: &impl serde::Serialize) -> Result<String, JwtKeyError> {
        self.sign_with(Header::new(self.algorithm.to_jsonwebtoken()), claims)
    }

    /// Signs `claims` as an RFC 9068 access token: JOSE header `typ: at+jwt`, the token
    /// draft-dunglas-mercure-08 expects.
    ///
    /// # Errors
    /// [`JwtKeyError::Invalid`] when signing fails.
    pub fn sign_access_token(&self, claims: &impl serde::Serialize) -> Result<String, JwtKeyError> {
        let header = Header {
            typ: Some("at+jwt".into()),
            ..Header::new(self.algorithm.to_jsonwebtoken())
        };
        self.sign_with(header, claims)
    }

    fn sign_with(
        &self,
        header: Header,
        claims: &impl serde::Serialize,
    ) -> Result<String, JwtKeyError> {
        jsonwebtoken::encode(&header, claims, &self.key).map_err(|e| JwtKeyError::Invalid {
            algorithm: self.algorithm,
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::MercureClaim;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    fn claims(exp: Option<u64>) -> Claims {
        Claims {
            exp,
            mercure: Some(MercureClaim {
                publish: Some(vec!["*".into()]),
                ..MercureClaim::default()
            }),
        }
    }

    #[test]
    fn hs256_round_trip_and_wrong_secret() {
        let signer =
            JwtSigner::new(JwtAlgorithm::HS256, "secret-secret-secret-secret-1234").expect("key");
        let token = signer.sign(&claims(None)).expect("sign");
        let verifier =
            JwtVerifier::new(JwtAlgorithm::HS256, "secret-secret-secret-secret-1234").expect("key");
        assert_eq!(verifier.verify(&token), Ok(claims(None)));
        let other =
            JwtVerifier::new(JwtAlgorithm::HS256, "another-secret-another-secret-12").expect("key");
        assert!(matches!(
            other.verify(&token),
            Err(AuthError::InvalidToken(_))
        ));
    }

    #[test]
    fn expired_token_is_rejected_and_missing_exp_is_fine() {
        let signer = JwtSigner::new(JwtAlgorithm::HS256, "k").expect("key");
        let verifier = JwtVerifier::new(JwtAlgorithm::HS256, "k").expect("key");
        let expired = signer.sign(&claims(Some(1))).expect("sign");
        assert_eq!(
            verifier.verify(&expired),
            Err(AuthError::InvalidToken("the token has expired".into()))
        );
        let eternal = signer.sign(&claims(None)).expect("sign");
        assert!(verifier.verify(&eternal).is_ok());
    }

    #[test]
    fn other_algorithm_is_rejected() {
        let signer = JwtSigner::new(JwtAlgorithm::HS512, "k").expect("key");
        let verifier = JwtVerifier::new(JwtAlgorithm::HS256, "k").expect("key");
        let token = signer.sign(&claims(None)).expect("sign");
        assert!(matches!(
            verifier.verify(&token),
            Err(AuthError::InvalidToken(_))
        ));
    }

    #[test]
    fn alg_none_is_rejected() {
        // header {"alg":"none","typ":"JWT"}, claims {"mercure":{"publish":["*"]}}, no signature
        let token = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJtZXJjdXJlIjp7InB1Ymxpc2giOlsiKiJdfX0.";
        let verifier = JwtVerifier::new(JwtAlgorithm::HS256, "k").expect("key");
        assert!(matches!(
            verifier.verify(token),
            Err(AuthError::InvalidToken(_))
        ));
    }

    /// Signs raw JSON claims (HS256, secret `k`).
    fn sign_json(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"k").expect("key"),
        )
        .expect("sign")
    }

    #[test]
    fn audience_is_required_only_when_configured() {
        use serde_json::json;
        let open = JwtVerifier::new(JwtAlgorithm::HS256, "k").expect("key");
        let strict = open.clone().with_audience(&["hub-a", "", "hub-b"]);
        let cases = [
            (json!({}), true, Err("no valid aud claim")),
            (json!({"aud": "hub-a"}), true, Ok(())),
            (json!({"aud": ["x", "hub-b"]}), true, Ok(())),
            (json!({"aud": "other"}), true, Err("no audience")),
            (json!({"aud": ["x", "y"]}), true, Err("no audience")),
            (json!({"aud": []}), true, Err("no audience")),
            (json!({"aud": ""}), true, Err("no audience")),
            // Unset, `aud` is not looked at at all, whatever its type.
            (json!({"aud": 7}), true, Err("no valid aud claim")),
        ];
        for (claims, open_accepts, strict_result) in cases {
            let token = sign_json(claims.clone());
            assert_eq!(open.verify(&token).is_ok(), open_accepts, "{claims}");
            match (strict.verify(&token), strict_result) {
                (Ok(_), Ok(())) => {}
                (Err(AuthError::InvalidToken(message)), Err(expected)) => {
                    assert!(message.contains(expected), "{claims}: {message}");
                }
                (other, _) => panic!("{claims}: {other:?}"),
            }
        }
        let cleared = strict.with_audience::<&str>(&[]);
        assert!(cleared.verify(&sign_json(json!({}))).is_ok());
    }

    #[test]
    fn an_exp_of_this_very_second_is_expired() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let verifier = JwtVerifier::new(JwtAlgorithm::HS256, "k").expect("key");
        let token = sign_json(serde_json::json!({ "exp": now }));
        assert_eq!(
            verifier.verify(&token),
            Err(AuthError::InvalidToken(EXPIRED.into()))
        );
    }

    #[test]
    fn messages_never_quote_the_token() {
        let verifier = JwtVerifier::new(JwtAlgorithm::HS256, "k").expect("key");
        let token = sign_json(serde_json::json!({"mercure": {"publish": "secret-topic-name"}}));
        let Err(AuthError::InvalidToken(message)) = verifier.verify(&token) else {
            panic!("a string publish claim must be refused");
        };
        assert!(!message.contains("secret-topic-name"), "{message}");
        assert!(message.contains("arrays of strings"), "{message}");
    }

    #[test]
    fn garbage_is_rejected_without_panicking() {
        let verifier = JwtVerifier::new(JwtAlgorithm::HS256, "k").expect("key");
        for token in ["", ".", "..", "a.b.c", "🦀.🦀.🦀", "eyJ.eyJ.x"] {
            assert!(verifier.verify(token).is_err());
        }
    }

    #[test]
    fn bad_pem_is_a_key_error() {
        assert!(JwtVerifier::new(
            JwtAlgorithm::RS256,
            "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----"
        )
        .is_err());
        assert!(JwtVerifier::new(JwtAlgorithm::HS256, "").is_err());
        assert!("XX999".parse::<JwtAlgorithm>().is_err());
    }
}
