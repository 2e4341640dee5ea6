//! Authorization with JWTs (draft-dunglas-mercure-07 §Authorization).
//!
//! Owns: finding the token in a request (header, then `authorization` query parameter, then the
//! `mercureAuthorization` cookie), verifying it with the configured key and algorithm, and
//! turning its `mercure` claim into grants: which topics a publisher may publish
//! ([`PublisherGrant`]) and which private updates a subscriber may receive ([`SubscriberGrant`]).
//! Mapping errors to HTTP statuses is [`crate::http::error`]'s job.
//!
//! draft-dunglas-mercure-08 tokens (RFC 9068 `at+jwt`, trusted issuers, RFC 9396
//! `authorization_details`) are [`draft08`]'s: [`Draft08Auth`] verifies them against
//! [`issuers`] (static keys, or key sets from [`jwks`]) and reads their [`details`] into the
//! same [`PublisherGrant`] and [`SubscriberGrant`], so the hub serves both dialects alike.

pub mod claims;
pub mod details;
pub mod draft08;
pub mod issuers;
pub mod jwks;
pub mod keys;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use thiserror::Error;

use crate::topic::{selector::any_matches, SelectorCache, TopicSelector};

pub use claims::{Claims, MercureClaim};
pub use details::DetailLimits;
pub use draft08::{Draft08Auth, TokenError};
pub use issuers::{Issuer, IssuerError, Role};
pub use jwks::{JwksError, JwksKeys, JwksSettings};
pub use keys::{JwtAlgorithm, JwtKeyError, JwtSigner, JwtVerifier};

/// The cookie name Mercure recommends for browser tokens.
pub const COOKIE_NAME: &str = "mercureAuthorization";

/// Why a request was not authorized.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    /// No token, and the operation needs one (401).
    #[error("missing authorization token")]
    MissingToken,
    /// An `Authorization` header that is not `Bearer <token>` (401).
    #[error("the Authorization header must be `Bearer <token>`")]
    MalformedHeader,
    /// A token that does not verify: bad signature, wrong algorithm, malformed, expired (401).
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// A valid token that does not allow the operation (403).
    #[error("forbidden: {0}")]
    Forbidden(String),
}

/// Where the token came from; a cookie needs a CSRF check before it may publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer …`.
    Header,
    /// The `authorization` query parameter.
    Query,
    /// The `mercureAuthorization` cookie.
    Cookie,
}

/// Finds the token with Mercure's precedence: the `Authorization` header wins, then the
/// `authorization` query parameter, then the cookie (§Authorization).
///
/// # Errors
/// [`AuthError::MalformedHeader`] when an `Authorization` header is present but not a bearer token.
pub fn extract_token<'a>(
    headers: &'a HeaderMap,
    query_authorization: Option<&'a str>,
) -> Result<Option<(std::borrow::Cow<'a, str>, TokenSource)>, AuthError> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| AuthError::MalformedHeader)?;
        // The scheme name is case-insensitive (RFC 9110 §11.1).
        let token = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty())
            .ok_or(AuthError::MalformedHeader)?;
        return Ok(Some((token.into(), TokenSource::Header)));
    }
    if let Some(token) = query_authorization.filter(|token| !token.is_empty()) {
        return Ok(Some((token.into(), TokenSource::Query)));
    }
    for cookies in headers.get_all(http::header::COOKIE) {
        let Ok(cookies) = cookies.to_str() else {
            continue;
        };
        for pair in cookies.split(';') {
            if let Some((name, value)) = pair.trim().split_once('=') {
                // A quoted value (RFC 6265 allows it) is the text between the quotes; `""` or a
                // lone `"` is no token at all.
                let value = value.trim_matches('"');
                if name == COOKIE_NAME && !value.is_empty() {
                    return Ok(Some((value.to_owned().into(), TokenSource::Cookie)));
                }
            }
        }
    }
    Ok(None)
}

/// The keys and policy used to authorize publishers and subscribers.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Verifies publisher tokens; without it nobody may publish over HTTP.
    pub publisher: Option<JwtVerifier>,
    /// Verifies subscriber tokens; without it only anonymous subscriptions are possible.
    pub subscriber: Option<JwtVerifier>,
    /// Whether subscribers without a token are accepted (they never get private updates).
    pub anonymous: bool,
}

/// What a verified publisher token allows.
#[derive(Debug, Clone)]
pub struct PublisherGrant {
    selectors: Vec<TopicSelector>,
}

impl PublisherGrant {
    /// Mercure §Publishers: the publisher must be allowed every topic of the update.
    ///
    /// # Errors
    /// [`AuthError::Forbidden`] naming the first topic it may not publish.
    pub fn check_topics(&self, topics: &[String]) -> Result<(), AuthError> {
        for topic in topics {
            if !self
                .selectors
                .iter()
                .any(|selector| selector.matches(topic))
            {
                return Err(AuthError::Forbidden(format!(
                    "the token's mercure.publish claim does not allow topic {topic:?}"
                )));
            }
        }
        Ok(())
    }
}

/// What a subscriber may receive beyond public updates.
#[derive(Debug, Clone, Default)]
pub struct SubscriberGrant {
    /// Selectors from `mercure.subscribe`: a private update is delivered when one of its
    /// topics matches one of them. Empty for anonymous subscribers.
    pub private_selectors: Vec<TopicSelector>,
    /// When the token expires; the stream must end then (Mercure §Subscribers).
    pub expires_at: Option<SystemTime>,
    /// `mercure.payload`, kept for subscription events.
    pub payload: Option<serde_json::Value>,
}

impl SubscriberGrant {
    /// Whether a private update with these topics may be delivered.
    pub fn allows_private(&self, topics: &[String]) -> bool {
        any_matches(&self.private_selectors, topics)
    }

    /// Time left until the token expires (zero when already past), if it expires.
    pub fn time_left(&self) -> Option<Duration> {
        self.expires_at.map(|at| {
            at.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        })
    }
}

impl AuthConfig {
    /// Verifies a publisher token and returns what it allows.
    ///
    /// # Errors
    /// 401-class errors for missing or invalid tokens; [`AuthError::Forbidden`] when the token has
    /// no `mercure.publish` selectors (Mercure: then it may publish nothing).
    pub fn authorize_publisher(
        &self,
        token: Option<&str>,
        cache: &SelectorCache,
    ) -> Result<PublisherGrant, AuthError> {
        let token = token.ok_or(AuthError::MissingToken)?;
        let verifier = self.publisher.as_ref().ok_or_else(|| {
            AuthError::Forbidden("publishing is disabled: no publisher key is configured".into())
        })?;
        let claims = verifier.verify(token)?;
        let selectors: Vec<_> = claims
            .mercure
            .and_then(|mercure| mercure.publish)
            .unwrap_or_default()
            .iter()
            .map(|s| cache.get(s))
            .collect();
        if selectors.is_empty() {
            return Err(AuthError::Forbidden(
                "the token has no mercure.publish claim: it may not publish".into(),
            ));
        }
        Ok(PublisherGrant { selectors })
    }

    /// Verifies a subscriber token (if any) and returns what it allows.
    ///
    /// # Errors
    /// [`AuthError::MissingToken`] when there is no token and anonymous subscribers are off;
    /// [`AuthError::InvalidToken`] when the token does not verify.
    pub fn authorize_subscriber(
        &self,
        token: Option<&str>,
        cache: &SelectorCache,
    ) -> Result<SubscriberGrant, AuthError> {
        let Some(token) = token else {
            return if self.anonymous {
                Ok(SubscriberGrant::default())
            } else {
                Err(AuthError::MissingToken)
            };
        };
        let verifier = self.subscriber.as_ref().ok_or_else(|| {
            AuthError::InvalidToken("no subscriber key is configured to verify it".into())
        })?;
        let claims = verifier.verify(token)?;
        // An expiry too far away to represent is no expiry.
        let expires_at = claims
            .exp
            .and_then(|exp| UNIX_EPOCH.checked_add(Duration::from_secs(exp)));
        let mercure = claims.mercure.unwrap_or_default();
        Ok(SubscriberGrant {
            private_selectors: mercure
                .subscribe
                .unwrap_or_default()
                .iter()
                .map(|s| cache.get(s))
                .collect(),
            expires_at,
            payload: mercure.payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("valid header"));
        }
        map
    }

    #[test]
    fn header_beats_query_and_cookie() {
        let h = headers(&[
            ("authorization", "Bearer H"),
            ("cookie", "mercureAuthorization=C"),
        ]);
        let (token, source) = extract_token(&h, Some("Q")).expect("ok").expect("some");
        assert_eq!((token.as_ref(), source), ("H", TokenSource::Header));
    }

    #[test]
    fn query_beats_cookie() {
        let h = headers(&[("cookie", "a=b; mercureAuthorization=C")]);
        let (token, source) = extract_token(&h, Some("Q")).expect("ok").expect("some");
        assert_eq!((token.as_ref(), source), ("Q", TokenSource::Query));
        let (token, source) = extract_token(&h, None).expect("ok").expect("some");
        assert_eq!((token.as_ref(), source), ("C", TokenSource::Cookie));
    }

    #[test]
    fn an_empty_quoted_cookie_is_no_token() {
        // Found by the `jwt` fuzz target: `""` used to be returned as an empty token.
        for value in ["mercureAuthorization=\"\"", "mercureAuthorization=\""] {
            assert_eq!(
                extract_token(&headers(&[("cookie", value)]), None),
                Ok(None)
            );
        }
        let quoted = headers(&[("cookie", "mercureAuthorization=\"T\"")]);
        let (token, source) = extract_token(&quoted, None).expect("ok").expect("some");
        assert_eq!((token.as_ref(), source), ("T", TokenSource::Cookie));
    }

    #[test]
    fn non_bearer_header_is_rejected() {
        for value in ["Basic abc", "Bearer", "Bearer ", "Bearerabc", "bear abc"] {
            let h = headers(&[("authorization", value)]);
            assert_eq!(
                extract_token(&h, None),
                Err(AuthError::MalformedHeader),
                "{value}"
            );
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for value in ["Bearer abc", "bearer abc", "BEARER abc", "bEaReR  abc "] {
            let h = headers(&[("authorization", value)]);
            let (token, source) = extract_token(&h, None).expect("ok").expect("a token");
            assert_eq!(
                (token.as_ref(), source),
                ("abc", TokenSource::Header),
                "{value}"
            );
        }
    }
}
