//! draft-dunglas-mercure-08 access tokens: RFC 9068 `at+jwt` verified against trusted issuers,
//! their `authorization_details` turned into the hub's grants.
//!
//! Owns: [`Draft08Auth`], the verifier a draft-08 request is authorized with, and
//! [`TokenError`], its refusals, each with its RFC 6750 error code. §Token Validation, in order:
//! - the header `typ` is `at+jwt` (or `application/at+jwt`, case-insensitively);
//! - `iss` names a trusted issuer that signs tokens for the role asked (publisher or
//!   subscriber); only that issuer's keys are tried, never a pool spanning issuers;
//! - `alg` is on that issuer's allow-list (`none` never is: jsonwebtoken does not even parse
//!   it), and the key's family must suit it (jsonwebtoken checks it per key);
//! - `exp` is required and the current time must be before it; `nbf` is checked when present;
//!   `aud` must be, or contain, the configured resource identifier;
//! - the Mercure `authorization_details` parse whole ([`super::details`]).
//!
//! Every failure of a presented token is `invalid_token` (the body says why; the challenge
//! does not, so a client is not told which check failed). The grants are the hub's own
//! [`PublisherGrant`] and [`SubscriberGrant`], so the hub below is the same for both dialects.
//! Where a token is read from and which dialect a request speaks is the HTTP layer's business.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use thiserror::Error;

use super::details::{self, DetailLimits, UrlPatternCompiler, MERCURE_DETAIL_TYPE};
use super::issuers::{Issuer, Role};
use super::jwks::JwksError;
use super::{PublisherGrant, SubscriberGrant};

/// The RFC 9728 well-known prefix of protected resource metadata.
pub const METADATA_PREFIX: &str = "/.well-known/oauth-protected-resource";

/// Why a draft-08 request was not authorized; [`TokenError::error_code`] is its RFC 6750 code.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenError {
    /// No token, and the operation needs one: 401 with a bare challenge (no error code).
    #[error("missing access token")]
    Missing,
    /// The token's presentation is malformed (in the URL, an `Authorization` header that is
    /// not `Bearer`): 400 `invalid_request`.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The token does not validate: 401 `invalid_token`.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// A valid token that does not grant the operation: 403 `insufficient_scope`.
    #[error("insufficient scope: {0}")]
    InsufficientScope(String),
    /// The issuer's key set was never fetched and cannot be fetched now: 503, for a cause
    /// that will pass (the client is not at fault).
    #[error("the token cannot be verified now: {0}")]
    KeysUnavailable(String),
}

impl TokenError {
    /// The RFC 6750 §3.1 `error` of the challenge, if the error has one.
    pub fn error_code(&self) -> Option<&'static str> {
        match self {
            Self::Missing | Self::KeysUnavailable(_) => None,
            Self::InvalidRequest(_) => Some("invalid_request"),
            Self::InvalidToken(_) => Some("invalid_token"),
            Self::InsufficientScope(_) => Some("insufficient_scope"),
        }
    }
}

/// Whether `token` is a JWT access token by its header (`typ` `at+jwt`, or
/// `application/at+jwt`, case-insensitively: RFC 7515 §4.1.9, RFC 9068 §4). A token whose
/// header cannot be read is not one. This is how the HTTP layer tells a draft-08 token.
pub fn is_access_token(token: &str) -> bool {
    jsonwebtoken::decode_header(token)
        .ok()
        .and_then(|header| header.typ)
        .is_some_and(|typ| is_at_jwt(&typ))
}

fn is_at_jwt(typ: &str) -> bool {
    let bare = match (typ.get(..12), typ.get(12..)) {
        (Some(prefix), Some(rest)) if prefix.eq_ignore_ascii_case("application/") => rest,
        _ => typ,
    };
    bare.eq_ignore_ascii_case("at+jwt")
}

/// The claims read from a verified access token.
#[derive(Debug, Deserialize)]
struct AccessClaims {
    #[serde(default, deserialize_with = "super::claims::numeric_date")]
    exp: Option<u64>,
    #[serde(default)]
    authorization_details: Option<serde_json::Value>,
}

/// The `iss` of a token, read before its signature is checked (to choose the keys).
#[derive(Deserialize)]
struct IssuerOnly {
    iss: Option<serde_json::Value>,
}

struct Inner {
    resource_identifier: String,
    issuers: Vec<Issuer>,
    limits: DetailLimits,
    urlpattern: Option<UrlPatternCompiler>,
}

/// Verifies draft-08 access tokens for one resource identifier and a set of trusted issuers.
/// Cheap to clone (shared).
#[derive(Clone)]
pub struct Draft08Auth {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Draft08Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Draft08Auth")
            .field("resource_identifier", &self.inner.resource_identifier)
            .field("issuers", &self.inner.issuers)
            .field("limits", &self.inner.limits)
            .field("urlpattern", &self.inner.urlpattern.is_some())
            .finish()
    }
}

/// A draft-08 configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Draft08ConfigError {
    /// The resource identifier is not an absolute `http(s)://` URL (or its path holds `{`,
    /// `}`, `*` or `:`).
    #[error("the resource identifier {0:?} is not an absolute https:// (or http://) URL whose path has no `{{`, `}}`, `*` or `:`")]
    BadResourceIdentifier(String),
    /// No trusted issuer.
    #[error("no trusted issuer: draft-08 tokens could never verify")]
    NoIssuer,
}

impl Draft08Auth {
    /// A verifier accepting tokens whose `aud` names `resource_identifier` (§Token Validation:
    /// the hub's canonical URL is recommended, e.g. `https://hub.example.com/.well-known/mercure`;
    /// it need not be the origin the hub is served at), signed by one of `issuers`.
    ///
    /// # Errors
    /// A resource identifier that is not an absolute URL, or no issuer.
    pub fn new(
        resource_identifier: &str,
        issuers: Vec<Issuer>,
    ) -> Result<Self, Draft08ConfigError> {
        // The metadata document is routed at a path derived from it: characters the router
        // reads as parameters or wildcards are refused here rather than panicking there.
        let routable = |(_, path): (&str, &str)| !path.contains(['{', '}', '*', ':']);
        if !split_url(resource_identifier).is_some_and(routable) {
            return Err(Draft08ConfigError::BadResourceIdentifier(
                resource_identifier.to_owned(),
            ));
        }
        if issuers.is_empty() {
            return Err(Draft08ConfigError::NoIssuer);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                resource_identifier: resource_identifier.to_owned(),
                issuers,
                limits: DetailLimits::default(),
                urlpattern: None,
            }),
        })
    }

    /// With other limits on `authorization_details`.
    #[must_use]
    pub fn with_limits(self, limits: DetailLimits) -> Self {
        self.rebuild(|inner| inner.limits = limits)
    }

    /// With a compiler for `urlpattern` matchers; without one, tokens using them are refused
    /// (§Topic Matcher List: an unsupported `match_type` rejects the token).
    #[must_use]
    pub fn with_urlpattern(self, compile: UrlPatternCompiler) -> Self {
        self.rebuild(|inner| inner.urlpattern = Some(compile))
    }

    fn rebuild(self, change: impl FnOnce(&mut Inner)) -> Self {
        let inner = &self.inner;
        let mut copy = Inner {
            resource_identifier: inner.resource_identifier.clone(),
            issuers: inner.issuers.clone(),
            limits: inner.limits,
            urlpattern: inner.urlpattern.clone(),
        };
        change(&mut copy);
        Self {
            inner: Arc::new(copy),
        }
    }

    /// The resource identifier tokens must name in `aud`.
    pub fn resource_identifier(&self) -> &str {
        &self.inner.resource_identifier
    }

    /// RFC 9728 §3.1: the path of the metadata document, the well-known prefix followed by the
    /// resource identifier's path (`/.well-known/oauth-protected-resource/.well-known/mercure`).
    pub fn metadata_path(&self) -> String {
        let path = split_url(&self.inner.resource_identifier).map_or("", |(_, path)| path);
        let path = path.trim_end_matches('/');
        format!("{METADATA_PREFIX}{path}")
    }

    /// The URL of the metadata document, derived from the resource identifier (what the
    /// challenge's `resource_metadata` names).
    pub fn metadata_url(&self) -> String {
        let origin = split_url(&self.inner.resource_identifier).map_or("", |(origin, _)| origin);
        format!("{origin}{}", self.metadata_path())
    }

    /// The RFC 9728 metadata document (§Protected Resource Metadata). `cookie_name` is the
    /// cookie the hub also reads tokens from, if any.
    pub fn metadata(&self, cookie_name: Option<&str>) -> serde_json::Value {
        let mut document = serde_json::json!({
            "resource": self.inner.resource_identifier,
            "bearer_methods_supported": ["header"],
            "authorization_details_types_supported": [MERCURE_DETAIL_TYPE],
        });
        let mut servers: Vec<&str> = Vec::new();
        for issuer in &self.inner.issuers {
            if issuer.is_authorization_server() && !servers.contains(&issuer.iss()) {
                servers.push(issuer.iss());
            }
        }
        if !servers.is_empty() {
            document["authorization_servers"] = servers.into();
        }
        if let Some(name) = cookie_name {
            document["mercure_cookie"] = name.into();
        }
        if self.inner.urlpattern.is_none() {
            // The default set is exact and urlpattern; say that only exact is supported.
            document["mercure_matcher_types_supported"] = serde_json::json!(["exact"]);
        }
        document
    }

    /// Verifies a publisher's token: what it may publish (§Publishers).
    ///
    /// # Errors
    /// [`TokenError::InvalidToken`] for a token that does not validate;
    /// [`TokenError::InsufficientScope`] for one that grants no `publish` at all;
    /// [`TokenError::KeysUnavailable`] when the issuer's key set cannot be had.
    pub async fn verify_publisher(&self, token: &str) -> Result<PublisherGrant, TokenError> {
        let (_, grants) = self.verify(token, Role::Publisher).await?;
        let selectors = grants.publish_selectors();
        if selectors.is_empty() {
            return Err(TokenError::InsufficientScope(
                "the token grants the publish action on no topic".into(),
            ));
        }
        Ok(PublisherGrant { selectors })
    }

    /// Verifies a subscriber's token: which private updates it may receive (§Subscribers),
    /// until when, and the payload of the subscription (§Payloads: of the first `subscribe`
    /// detail matching one of `subscription_matchers`, the subscription's own matcher strings).
    ///
    /// # Errors
    /// As [`Self::verify_publisher`], without `InsufficientScope`: a token without `subscribe`
    /// grants is valid and receives public updates only.
    pub async fn verify_subscriber(
        &self,
        token: &str,
        subscription_matchers: &[String],
    ) -> Result<SubscriberGrant, TokenError> {
        let (exp, grants) = self.verify(token, Role::Subscriber).await?;
        Ok(SubscriberGrant {
            private_selectors: grants.subscribe_selectors(),
            expires_at: UNIX_EPOCH.checked_add(Duration::from_secs(exp)),
            payload: grants.payload_for(subscription_matchers),
        })
    }

    /// The checks of §Token Validation; returns `exp` and the grants.
    async fn verify(&self, token: &str, role: Role) -> Result<(u64, details::Grants), TokenError> {
        let invalid = |why: &str| TokenError::InvalidToken(why.to_owned());
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            invalid(
                "malformed token: expected header.claims.signature with a JSON header naming a \
                 supported algorithm (never `none`)",
            )
        })?;
        if !header.typ.as_deref().is_some_and(is_at_jwt) {
            return Err(invalid("the token's typ is not at+jwt (RFC 9068)"));
        }
        let iss = jsonwebtoken::dangerous::insecure_decode_claims::<IssuerOnly>(token)
            .ok()
            .and_then(|claims| claims.iss)
            .ok_or_else(|| invalid("the token has no iss claim"))?;
        let iss = iss
            .as_str()
            .ok_or_else(|| invalid("the token's iss claim is not a string"))?;
        let issuers: Vec<&Issuer> = self
            .inner
            .issuers
            .iter()
            .filter(|issuer| issuer.iss() == iss && issuer.serves(role))
            .collect();
        if issuers.is_empty() {
            return Err(invalid(match role {
                Role::Publisher => {
                    "the token's iss is not an issuer this hub trusts for publishers"
                }
                Role::Subscriber => {
                    "the token's iss is not an issuer this hub trusts for subscribers"
                }
            }));
        }
        let alg = header.alg;
        let allowing: Vec<&&Issuer> = issuers.iter().filter(|i| i.allows(alg)).collect();
        if allowing.is_empty() {
            return Err(TokenError::InvalidToken(format!(
                "the token's alg {alg:?} is not allowed for its issuer"
            )));
        }
        let validation = self.validation(alg, iss);
        let mut last = None;
        for issuer in allowing {
            let keys = match issuer.keys_for(alg, header.kid.as_deref()).await {
                Ok(keys) => keys,
                Err(error) => {
                    last = Some(error);
                    continue;
                }
            };
            for key in keys {
                match jsonwebtoken::decode::<AccessClaims>(token, &key, &validation) {
                    Ok(data) => return self.accept(data.claims),
                    // Another key of the issuer may be the one (rotation, no kid).
                    Err(e)
                        if matches!(
                            e.kind(),
                            ErrorKind::InvalidSignature
                                | ErrorKind::InvalidKeyFormat
                                | ErrorKind::InvalidEcdsaKey
                                | ErrorKind::InvalidAlgorithm
                        ) => {}
                    Err(e) => return Err(describe(e.kind())),
                }
            }
        }
        match last {
            Some(JwksError::Unavailable(reason)) => Err(TokenError::KeysUnavailable(reason)),
            _ if header.kid.is_some() => Err(invalid(
                "bad signature, or a kid none of the issuer's keys has",
            )),
            _ => Err(invalid("bad signature")),
        }
    }

    /// jsonwebtoken's validation for `alg`: `exp`, `aud` and `iss` required, `nbf` checked,
    /// no leeway (the extra `exp` check of [`Self::accept`] closes jsonwebtoken's last second).
    fn validation(&self, alg: Algorithm, iss: &str) -> Validation {
        let mut validation = Validation::new(alg);
        validation.required_spec_claims =
            HashSet::from(["exp".to_owned(), "aud".to_owned(), "iss".to_owned()]);
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_audience(&[&self.inner.resource_identifier]);
        validation.set_issuer(&[iss]);
        validation
    }

    fn accept(&self, claims: AccessClaims) -> Result<(u64, details::Grants), TokenError> {
        let exp = claims
            .exp
            .ok_or_else(|| TokenError::InvalidToken("the token has no exp claim".into()))?;
        // RFC 7519 §4.1.4: the current time MUST be before `exp`.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        if exp <= now {
            return Err(TokenError::InvalidToken("the token has expired".into()));
        }
        let grants = details::parse(
            claims.authorization_details.as_ref(),
            &self.inner.limits,
            self.inner.urlpattern.as_ref(),
        )
        .map_err(TokenError::InvalidToken)?;
        Ok((exp, grants))
    }
}

/// jsonwebtoken's refusal, said without quoting the token.
fn describe(kind: &ErrorKind) -> TokenError {
    TokenError::InvalidToken(
        match kind {
            ErrorKind::ExpiredSignature => "the token has expired",
            ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
            ErrorKind::InvalidAudience => {
                "the token's aud does not name this hub's resource identifier"
            }
            ErrorKind::InvalidIssuer => "the token's iss is not the issuer whose key verified it",
            ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => {
                "the token has no exp claim"
            }
            ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => {
                "the token has no aud claim"
            }
            ErrorKind::MissingRequiredClaim(_) => {
                "the token lacks a required claim (iss, aud, exp)"
            }
            ErrorKind::InvalidClaimFormat(_) => "a claim of the token has the wrong type",
            ErrorKind::Json(_) => {
                "malformed token: the claims are not a JSON object of the expected shape"
            }
            _ => "malformed token",
        }
        .to_owned(),
    )
}

/// `scheme://authority` and the path (possibly empty) of an absolute http(s) URL.
fn split_url(url: &str) -> Option<(&str, &str)> {
    let scheme_end = url.find("://")?;
    let scheme = &url[..scheme_end];
    if !(scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("http")) {
        return None;
    }
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if authority_end == 0 {
        return None;
    }
    let origin_end = scheme_end + 3 + authority_end;
    let path_and_more = &url[origin_end..];
    let path_end = path_and_more
        .find(['?', '#'])
        .unwrap_or(path_and_more.len());
    Some((&url[..origin_end], &path_and_more[..path_end]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::{json, Value};

    const RESOURCE: &str = "https://localhost/.well-known/mercure";
    const ISS: &str = "https://localhost";
    const SECRET: &str = "!ChangeThisMercureHubJWTSecretKey!";

    fn auth() -> Draft08Auth {
        let issuer = Issuer::with_secret(ISS, SECRET, &[Algorithm::HS256]).expect("issuer");
        Draft08Auth::new(RESOURCE, vec![issuer]).expect("auth")
    }

    fn later() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + 600
    }

    fn all_topics() -> Value {
        json!([
            {"type": MERCURE_DETAIL_TYPE, "actions": ["publish"], "topics": [{"match": "*"}]},
            {"type": MERCURE_DETAIL_TYPE, "actions": ["subscribe"], "topics": [{"match": "https://a/1"}]},
        ])
    }

    fn claims() -> Value {
        json!({"iss": ISS, "aud": RESOURCE, "exp": later(), "authorization_details": all_topics()})
    }

    fn sign_with(typ: Option<&str>, alg: Algorithm, secret: &str, claims: &Value) -> String {
        let header = Header {
            typ: typ.map(str::to_owned),
            ..Header::new(alg)
        };
        let key = EncodingKey::from_secret(secret.as_bytes()).expect("key");
        jsonwebtoken::encode(&header, claims, &key).expect("sign")
    }

    fn sign(claims: &Value) -> String {
        sign_with(Some("at+jwt"), Algorithm::HS256, SECRET, claims)
    }

    fn changed(change: impl FnOnce(&mut serde_json::Map<String, Value>)) -> String {
        let mut c = claims();
        if let Some(object) = c.as_object_mut() {
            change(object);
        }
        sign(&c)
    }

    async fn refusal(token: &str) -> String {
        match auth().verify_publisher(token).await {
            Err(TokenError::InvalidToken(why)) => why,
            other => panic!("expected invalid_token, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_valid_access_token_grants_its_details() {
        let grant = auth()
            .verify_publisher(&sign(&claims()))
            .await
            .expect("valid");
        assert!(grant.check_topics(&["https://anything".into()]).is_ok());
        let grant = auth()
            .verify_subscriber(&sign(&claims()), &["https://a/1".into()])
            .await
            .expect("valid");
        assert!(grant.allows_private(&["https://a/1".into()]));
        assert!(!grant.allows_private(&["https://a/2".into()]));
        assert!(grant.expires_at.is_some());
        // `aud` may be an array naming the resource among others; typ is case-insensitive.
        let token = changed(|c| {
            c.insert("aud".into(), json!(["https://other", RESOURCE]));
        });
        assert!(auth().verify_publisher(&token).await.is_ok());
        for typ in ["application/at+jwt", "AT+JWT"] {
            let token = sign_with(Some(typ), Algorithm::HS256, SECRET, &claims());
            assert!(auth().verify_publisher(&token).await.is_ok(), "{typ}");
            assert!(is_access_token(&token));
        }
    }

    #[tokio::test]
    async fn every_failed_check_is_an_invalid_token() {
        let cases: Vec<(String, &str)> = vec![
            (
                sign_with(Some("JWT"), Algorithm::HS256, SECRET, &claims()),
                "typ",
            ),
            (sign_with(None, Algorithm::HS256, SECRET, &claims()), "typ"),
            (
                changed(|c| {
                    c.remove("iss");
                }),
                "no iss",
            ),
            (
                changed(|c| {
                    c.insert("iss".into(), json!("https://localhost/"));
                }),
                "iss",
            ),
            (
                changed(|c| {
                    c.insert("iss".into(), json!(7));
                }),
                "not a string",
            ),
            (
                changed(|c| {
                    c.remove("aud");
                }),
                "aud",
            ),
            (
                changed(|c| {
                    c.insert("aud".into(), json!("https://localhost"));
                }),
                "aud",
            ),
            (
                changed(|c| {
                    c.insert("aud".into(), json!(["x", "y"]));
                }),
                "aud",
            ),
            (
                changed(|c| {
                    c.remove("exp");
                }),
                "exp",
            ),
            (
                changed(|c| {
                    c.insert("exp".into(), json!(1));
                }),
                "expired",
            ),
            (
                changed(|c| {
                    c.insert("nbf".into(), json!(later()));
                }),
                "nbf",
            ),
            (
                changed(|c| {
                    c.insert(
                        "authorization_details".into(),
                        json!([{"type": MERCURE_DETAIL_TYPE}]),
                    );
                }),
                "actions",
            ),
            (
                sign_with(Some("at+jwt"), Algorithm::HS384, SECRET, &claims()),
                "HS384",
            ),
            (
                sign_with(
                    Some("at+jwt"),
                    Algorithm::HS256,
                    "another secret",
                    &claims(),
                ),
                "bad signature",
            ),
            // header {"alg":"none","typ":"at+jwt"}, no signature
            (
                "eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.e30.".to_owned(),
                "malformed",
            ),
            ("not a token".to_owned(), "malformed"),
        ];
        for (token, expected) in cases {
            let why = refusal(&token).await;
            assert!(why.contains(expected), "{expected}: {why}");
        }
    }

    #[tokio::test]
    async fn keys_are_never_pooled_across_issuers_or_roles() {
        let a = Issuer::with_secret("https://a", "secret-a", &[Algorithm::HS256]).expect("a");
        let b = Issuer::with_secret("https://b", "secret-b", &[Algorithm::HS256])
            .expect("b")
            .for_roles(&[Role::Subscriber]);
        let c = Issuer::with_secret("https://c", "secret-c", &[Algorithm::HS256]).expect("c");
        let auth = Draft08Auth::new(RESOURCE, vec![a, b, c]).expect("auth");
        let token = |iss: &str, secret: &str| {
            let mut c = claims();
            c["iss"] = json!(iss);
            sign_with(Some("at+jwt"), Algorithm::HS256, secret, &c)
        };
        assert!(auth
            .verify_publisher(&token("https://a", "secret-a"))
            .await
            .is_ok());
        assert!(auth
            .verify_publisher(&token("https://c", "secret-c"))
            .await
            .is_ok());
        // C's key, claiming to be A: only A's key is tried, though C is trusted too.
        assert!(matches!(
            auth.verify_publisher(&token("https://a", "secret-c")).await,
            Err(TokenError::InvalidToken(_))
        ));
        // B signs for subscribers only.
        assert!(auth
            .verify_subscriber(&token("https://b", "secret-b"), &[])
            .await
            .is_ok());
        assert!(matches!(
            auth.verify_publisher(&token("https://b", "secret-b")).await,
            Err(TokenError::InvalidToken(why)) if why.contains("for publishers")
        ));
    }

    #[tokio::test]
    async fn a_token_without_publish_grants_is_insufficient_scope() {
        let token = changed(|c| {
            c.insert(
                "authorization_details".into(),
                json!([{"type": MERCURE_DETAIL_TYPE, "actions": ["subscribe"], "topics": [{"match": "*"}]}]),
            );
        });
        assert!(matches!(
            auth().verify_publisher(&token).await,
            Err(TokenError::InsufficientScope(_))
        ));
        let token = changed(|c| {
            c.remove("authorization_details");
        });
        let grant = auth()
            .verify_subscriber(&token, &[])
            .await
            .expect("valid, grants nothing");
        assert!(grant.private_selectors.is_empty());
    }

    #[test]
    fn metadata_is_derived_from_the_resource_identifier() {
        let auth = auth();
        assert_eq!(
            auth.metadata_path(),
            "/.well-known/oauth-protected-resource/.well-known/mercure"
        );
        assert_eq!(
            auth.metadata_url(),
            "https://localhost/.well-known/oauth-protected-resource/.well-known/mercure"
        );
        let document = auth.metadata(Some("mercureAuthorization"));
        assert_eq!(document["resource"], RESOURCE);
        assert_eq!(document["bearer_methods_supported"], json!(["header"]));
        assert_eq!(document["mercure_cookie"], "mercureAuthorization");
        assert!(document.get("authorization_servers").is_none());
        let root = Draft08Auth::new(
            "https://hub.example:8443",
            vec![Issuer::with_secret(ISS, "s", &[Algorithm::HS256])
                .expect("i")
                .advertised()],
        )
        .expect("auth");
        assert_eq!(
            root.metadata_url(),
            "https://hub.example:8443/.well-known/oauth-protected-resource"
        );
        assert_eq!(root.metadata(None)["authorization_servers"], json!([ISS]));
        for bad in [
            "localhost/.well-known/mercure",
            "ftp://x/y",
            "https:///x",
            "",
            "https://h/{id}",
            "https://h/a/:b",
        ] {
            assert!(Draft08Auth::new(bad, vec![]).is_err(), "{bad}");
        }
        assert_eq!(
            Draft08Auth::new(RESOURCE, vec![]).err(),
            Some(Draft08ConfigError::NoIssuer)
        );
    }

    #[test]
    fn error_codes_are_rfc_6750s() {
        assert_eq!(TokenError::Missing.error_code(), None);
        assert_eq!(
            TokenError::InvalidRequest(String::new()).error_code(),
            Some("invalid_request")
        );
        assert_eq!(
            TokenError::InvalidToken(String::new()).error_code(),
            Some("invalid_token")
        );
        assert_eq!(
            TokenError::InsufficientScope(String::new()).error_code(),
            Some("insufficient_scope")
        );
        assert!(!is_access_token("garbage") && !is_at_jwt("application/") && !is_at_jwt("jwt"));
        assert!(!is_at_jwt("applicatioé/at+jwt"));
    }
}
