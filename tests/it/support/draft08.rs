//! draft-dunglas-mercure-08 tokens for tests: `at+jwt` access tokens of one issuer signing
//! with Mercure's documented default secret, their `authorization_details`, and HTTP settings
//! that trust that issuer beside the draft-07 test keys.
//!
//! The resource identifier is `https://localhost/.well-known/mercure` while the hub is served
//! at `127.0.0.1:<port>`, as when Mercure's own draft-08 cases run against a hub at another
//! origin.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use ssehub::auth::{Draft08Auth, Issuer};
use ssehub::HttpConfig;

use super::http_config;

/// The resource identifier tokens name in `aud`.
pub const RESOURCE: &str = "https://localhost/.well-known/mercure";
/// The issuer the hub trusts.
pub const ISS: &str = "https://localhost";
/// Mercure's documented default secret.
pub const SECRET: &str = "!ChangeThisMercureHubJWTSecretKey!";
/// The `authorization_details` type of Mercure grants.
pub const DETAIL: &str = "https://mercure.rocks/authorization-detail";
/// Where the RFC 9728 metadata document of [`RESOURCE`] is.
pub const METADATA_URL: &str =
    "https://localhost/.well-known/oauth-protected-resource/.well-known/mercure";

/// Ten minutes from now, as an `exp`.
pub fn later() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 600
}

/// One grant of `action` on exact `topics`.
pub fn grant(action: &str, topics: &[&str]) -> Value {
    let topics: Vec<Value> = topics.iter().map(|t| json!({"match": t})).collect();
    json!({"type": DETAIL, "actions": [action], "topics": topics})
}

/// The claims of an access token of `iss` for [`RESOURCE`] with these grants.
pub fn claims(iss: &str, details: Vec<Value>) -> Value {
    json!({
        "iss": iss, "aud": RESOURCE, "exp": later(), "sub": "urn:example:test",
        "authorization_details": details,
    })
}

/// `claims` signed as an `at+jwt` with `key`.
pub fn sign(key: &EncodingKey, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let header = Header {
        typ: Some("at+jwt".into()),
        kid: kid.map(str::to_owned),
        ..Header::new(alg)
    };
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

/// `claims` signed with [`SECRET`] (HS256).
pub fn hs256(claims: &Value) -> String {
    let key = EncodingKey::from_secret(SECRET.as_bytes()).expect("key");
    sign(&key, Algorithm::HS256, None, claims)
}

/// The test hub's settings (draft-07 keys, anonymous subscribers when `anonymous`) plus the
/// draft-08 issuer [`ISS`] signing with [`SECRET`].
pub fn draft08_http(anonymous: bool) -> HttpConfig {
    let issuer = Issuer::with_secret(ISS, SECRET, &[Algorithm::HS256]).expect("issuer");
    let mut http = http_config();
    http.auth.anonymous = anonymous;
    http.draft08 = Some(Draft08Auth::new(RESOURCE, vec![issuer]).expect("draft-08"));
    http
}
