//! draft-08 authorization at the HTTP edge: RFC 6750 challenges and the RFC 9728 protected
//! resource metadata document (draft-dunglas-mercure-08 §Error Responses, §Protected Resource
//! Metadata).
//!
//! Owns: turning a [`TokenError`] into an [`ApiError`] whose `WWW-Authenticate: Bearer`
//! challenge carries the RFC 6750 `error` code and the `resource_metadata` URL; serving the
//! metadata document; and [`draft08_token`], the condition under which a request's token is a
//! draft-08 one (its header says `typ: at+jwt` and the hub has a [`Draft08Auth`]). Which
//! dialect a request speaks as a whole is decided above this; the verification itself is
//! [`crate::auth::draft08`]'s.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{HeaderValue, StatusCode};

use super::{ApiError, HttpConfig};
use crate::auth::{self, draft08, AuthError, Draft08Auth, TokenError, TokenSource};

/// Seconds a client is told to wait when an issuer's key set cannot be fetched.
const KEYS_RETRY_AFTER_SECS: u64 = 5;

/// The draft-08 verifier, when `token` is a draft-08 access token and the hub has one.
///
/// # Errors
/// `400 invalid_request` for an access token in the URL (§Presenting the Access Token: the
/// `authorization` query parameter is not accepted for draft-08 tokens, RFC 9700).
pub(crate) fn draft08_token<'a>(
    config: &'a HttpConfig,
    token: Option<(&str, TokenSource)>,
) -> Result<Option<&'a Draft08Auth>, ApiError> {
    let (Some(auth), Some((token, source))) = (config.draft08.as_ref(), token) else {
        return Ok(None);
    };
    if !draft08::is_access_token(token) {
        return Ok(None);
    }
    if source == TokenSource::Query {
        return Err(token_error(
            auth,
            TokenError::InvalidRequest(
                "access tokens are never accepted in the URL: send `Authorization: Bearer <token>` \
                 (or the cookie)"
                    .into(),
            ),
        ));
    }
    Ok(Some(auth))
}

/// A draft-08 refusal: its status, its text body, and the challenge.
pub(crate) fn token_error(auth: &Draft08Auth, error: TokenError) -> ApiError {
    let status = match error {
        TokenError::Missing | TokenError::InvalidToken(_) => StatusCode::UNAUTHORIZED,
        TokenError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
        TokenError::InsufficientScope(_) => StatusCode::FORBIDDEN,
        TokenError::KeysUnavailable(_) => {
            return ApiError::unavailable(error.to_string(), KEYS_RETRY_AFTER_SECS)
        }
    };
    ApiError {
        challenge: Some(challenge(auth, error.error_code())),
        ..ApiError::new(status, error.to_string())
    }
}

/// A draft-07 refusal, with `resource_metadata` in the challenge of a missing token when the
/// hub also speaks draft-08 (§Error Responses: a client without a token learns where to get
/// one). Other draft-07 refusals are unchanged.
pub(crate) fn auth_error(config: &HttpConfig, error: AuthError) -> ApiError {
    match (&config.draft08, error) {
        (Some(auth), AuthError::MissingToken) => ApiError {
            challenge: Some(challenge(auth, None)),
            ..ApiError::from(AuthError::MissingToken)
        },
        (_, error) => error.into(),
    }
}

/// `Bearer [error="…", ]resource_metadata="…"` (RFC 6750 §3, RFC 9728 §5.1). The error's
/// reason is in the body only: the challenge does not say which check failed.
fn challenge(auth: &Draft08Auth, code: Option<&str>) -> HeaderValue {
    // The URL comes from the configured resource identifier; quotes and backslashes, which
    // it should never contain, are dropped rather than escaped.
    let url: String = auth
        .metadata_url()
        .chars()
        .filter(|c| *c != '"' && *c != '\\')
        .collect();
    let value = match code {
        Some(code) => format!("Bearer error=\"{code}\", resource_metadata=\"{url}\""),
        None => format!("Bearer resource_metadata=\"{url}\""),
    };
    // The resource identifier was checked to be an absolute URL, but any byte a header cannot
    // carry falls back to the bare scheme rather than failing the answer.
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

/// `GET /.well-known/oauth-protected-resource/…`: the RFC 9728 metadata document.
/// With the subscriptions API on, it says so (`mercure_subscriptions`).
pub(crate) async fn metadata(
    State(config): State<Arc<HttpConfig>>,
    State(hub): State<crate::hub::Hub>,
) -> Response {
    match &config.draft08 {
        Some(auth) => {
            let mut document = auth.metadata(Some(auth::COOKIE_NAME));
            if hub.config().subscriptions {
                document["mercure_subscriptions"] = true.into();
            }
            Json(document).into_response()
        }
        // Routed only when draft-08 is configured.
        None => ApiError::new(StatusCode::NOT_FOUND, "not found").into_response(),
    }
}
