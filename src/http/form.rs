//! Reading an `application/x-www-form-urlencoded` request body: a publish's form
//! ([`super::publish`]) and a `QUERY` subscription's ([`super::subscribe`]).
//!
//! This module owns the checks that come before the form is parsed: the `Content-Type`
//! (`415`) and the size limit, `--max-publish-bytes` (`413`). Parsing the fields, and what
//! they mean, stays with each endpoint.

use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderMap, StatusCode};
use http_body::Body as _;

use super::error::ApiError;
use super::HttpConfig;

/// The one media type a form body may have.
const FORM: &str = "application/x-www-form-urlencoded";

/// What a request without a `Content-Type` header means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Untyped {
    /// Its body is read as a form: a publish, as Mercure's reference hub reads one.
    Form,
    /// It is refused with `415`: a `QUERY` subscription must say what its body is.
    Refused,
}

/// Reads a form body whole, at most `config.max_publish_bytes` of it. `what` names the body
/// in the `415` ("the body", "a QUERY subscription's body"); `untyped` says whether a request
/// without a `Content-Type` is read or refused.
///
/// # Errors
/// `415` when the `Content-Type`'s essence (its part before any `;` parameters, compared
/// without regard to case) is not `application/x-www-form-urlencoded`, or the header is not
/// visible ASCII, or it is missing and `untyped` is [`Untyped::Refused`]; `413` when the
/// declared length or the body read is over the limit, or the body was cut off.
pub(super) async fn read_form(
    config: &HttpConfig,
    headers: &HeaderMap,
    body: Body,
    what: &str,
    untyped: Untyped,
) -> Result<Bytes, ApiError> {
    let is_form = match headers.get(header::CONTENT_TYPE) {
        Some(content_type) => content_type
            .to_str()
            .ok()
            .and_then(|value| value.split(';').next())
            .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(FORM)),
        None => untyped == Untyped::Form,
    };
    if !is_form {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("{what} must be {FORM}"),
        ));
    }
    let limit = config.max_publish_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the {limit}-byte limit (or was cut off)"),
        )
    };
    // A declared length over the limit is refused before any of the body is read: with
    // `Expect: 100-continue` the client then gets the 413 instead of `100 Continue` (hyper
    // sends that only once the body is polled) and never sends the body at all.
    if usize::try_from(body.size_hint().lower()).map_or(true, |declared| declared > limit) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(content_type: Option<&'static str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = content_type {
            headers.insert(header::CONTENT_TYPE, http::HeaderValue::from_static(value));
        }
        headers
    }

    async fn read(
        content_type: Option<&'static str>,
        body: &'static str,
        untyped: Untyped,
    ) -> Result<Bytes, ApiError> {
        let config = HttpConfig {
            max_publish_bytes: 8,
            ..HttpConfig::default()
        };
        let headers = headers(content_type);
        read_form(&config, &headers, Body::from(body), "the body", untyped).await
    }

    #[tokio::test]
    async fn a_form_with_parameters_in_any_case_is_read() {
        for untyped in [Untyped::Form, Untyped::Refused] {
            let got = read(
                Some("Application/X-WWW-Form-Urlencoded ; charset=utf-8"),
                "topic=t",
                untyped,
            )
            .await
            .expect("a form");
            assert_eq!(got, Bytes::from_static(b"topic=t"));
        }
    }

    #[tokio::test]
    async fn a_missing_content_type_is_read_or_refused_as_asked() {
        let got = read(None, "topic=t", Untyped::Form).await.expect("read");
        assert_eq!(got, Bytes::from_static(b"topic=t"));
        let error = read(None, "topic=t", Untyped::Refused)
            .await
            .expect_err("refused");
        assert_eq!(error.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[tokio::test]
    async fn another_media_type_gets_415_naming_the_body() {
        for untyped in [Untyped::Form, Untyped::Refused] {
            let error = read(Some("application/json"), "{}", untyped)
                .await
                .expect_err("refused");
            assert_eq!(error.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
            assert_eq!(
                error.message,
                "the body must be application/x-www-form-urlencoded"
            );
        }
    }

    #[tokio::test]
    async fn a_body_over_the_limit_gets_413() {
        let error = read(Some(FORM), "topic=toolong", Untyped::Form)
            .await
            .expect_err("too large");
        assert_eq!(error.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(error.message.contains("8-byte limit"), "{}", error.message);
    }
}
