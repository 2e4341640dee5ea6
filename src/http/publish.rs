//! `POST /.well-known/mercure`: the publish endpoint (draft-dunglas-mercure-07 §Publication).
//!
//! Reads the form (`topic` repeated, `data`, `private`, `id`, `type`, `retry`), authorizes the
//! publisher for every topic, and answers `200` with the event id once the event is in history.
//! Any refusal happens before the hub sees the event, so a rejected publish changes nothing.
//! A retry (an `Idempotency-Key` seen within the window, or an id held with the same content;
//! [`crate::idempotency`]) is answered `200` with the original id and `Idempotent-Replayed:
//! true`, and stored and delivered nothing; a key reused for other content gets `422`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, StatusCode};
use http_body::Body as _;

use super::error::ApiError;
use super::{query_param, HttpConfig};
use crate::auth::{self, TokenSource};
use crate::event::{generate_id, Event};
use crate::hub::Hub;
use crate::idempotency::{IdempotencyKey, KeyError};

/// Handles a publish.
///
/// # Errors
/// `401`/`403` for authorization, `413` for a body over the limit, `415` for a body that is not a
/// form, `400` for an invalid update, `503` when it cannot be stored.
pub async fn publish(
    State(hub): State<Hub>,
    State(config): State<Arc<HttpConfig>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let query_token = query
        .as_deref()
        .and_then(|q| query_param(q, "authorization"));
    let (token, source) = match auth::extract_token(&headers, query_token.as_deref())? {
        Some((token, source)) => (Some(token), Some(source)),
        None => (None, None),
    };
    if source == Some(TokenSource::Cookie) {
        check_cookie_origin(&config, &headers)?;
    }
    let grant = config
        .auth
        .authorize_publisher(token.as_deref(), hub.selector_cache())?;

    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        let essence = content_type
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim();
        if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the body must be application/x-www-form-urlencoded",
            ));
        }
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
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;
    let event = parse_form(&bytes)?;
    grant.check_topics(&event.topics)?;
    let key = idempotency_key(&headers)?;
    let receipt = hub.publish_with_key(event, key).await?;
    let mut response = (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        receipt.id,
    )
        .into_response();
    if receipt.retry {
        // As Stripe's API says it: the answer is the original publish's, nothing was stored.
        response.headers_mut().insert(
            http::HeaderName::from_static(REPLAYED),
            http::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

/// The response header that marks the answer to a recognised retry.
pub const REPLAYED: &str = "idempotent-replayed";

/// The request's `Idempotency-Key`, if it has one.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::bad_request(KeyError::Repeated.to_string()));
    }
    IdempotencyKey::parse(value.as_bytes())
        .map(Some)
        .map_err(|error| ApiError::bad_request(error.to_string()))
}

/// draft-ietf-httpapi-idempotency-key-header.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Mercure §Publication form fields to an [`Event`]. The first `topic` is canonical; the first
/// occurrence of every other field wins.
pub(crate) fn parse_form(body: &[u8]) -> Result<Event, ApiError> {
    let mut topics = Vec::new();
    let (mut data, mut id, mut event_type, mut retry, mut private) =
        (None, None, None, None, false);
    for (name, value) in form_urlencoded::parse(body) {
        match name.as_ref() {
            "topic" => topics.push(value.into_owned()),
            "data" => {
                data.get_or_insert_with(|| value.into_owned());
            }
            "id" => {
                id.get_or_insert_with(|| value.into_owned());
            }
            "type" => {
                event_type.get_or_insert_with(|| value.into_owned());
            }
            // An empty `retry` is an absent one, as for Mercure's hub.
            "retry" if retry.is_none() && !value.is_empty() => {
                retry = Some(parse_retry(&value)?);
            }
            // Mercure: "If this name is set, the update MUST NOT be dispatched to subscribers
            // not authorized to receive it", whatever its value.
            "private" => private = true,
            _ => {}
        }
    }
    Ok(Event {
        // An empty `id` (a form field left empty) is an absent one, as for Mercure's hub: the
        // hub generates it. Empty `type` is the default type, likewise.
        id: id.filter(|id| !id.is_empty()).unwrap_or_else(generate_id),
        topics,
        data: data.unwrap_or_default(),
        event_type: event_type.filter(|t| !t.is_empty()),
        retry,
        private,
    })
}

fn parse_retry(value: &str) -> Result<u64, ApiError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request(
            "`retry` must be a whole number of milliseconds",
        ));
    }
    value
        .parse()
        .map_err(|_| ApiError::bad_request("`retry` is too large"))
}

/// A cookie is sent by the browser on any cross-site form post, so a cookie-authorized publish
/// must come from an origin the operator allowed (CSRF protection).
fn check_cookie_origin(config: &HttpConfig, headers: &HeaderMap) -> Result<(), ApiError> {
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    match origin {
        Some(origin)
            if config
                .publish_origins
                .iter()
                .any(|allowed| allowed == origin || allowed == "*") =>
        {
            Ok(())
        }
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "a publish authorized by cookie must come from an allowed Origin (see --publish-origins)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_map_to_the_event() {
        let event = parse_form(b"topic=a&topic=b&data=x%0Ay&id=1&type=t&retry=5&private=on")
            .expect("valid");
        assert_eq!(event.topics, ["a", "b"]);
        assert_eq!(event.data, "x\ny");
        assert_eq!(event.id, "1");
        assert_eq!(event.event_type.as_deref(), Some("t"));
        assert_eq!(event.retry, Some(5));
        assert!(event.private);
    }

    #[test]
    fn missing_id_is_generated() {
        let event = parse_form(b"topic=a").expect("valid");
        assert!(event.id.starts_with("urn:uuid:"));
        assert!(!event.private);
    }

    #[test]
    fn empty_id_type_and_retry_count_as_absent() {
        let event = parse_form(b"topic=a&id=&type=&retry=&data=").expect("valid");
        assert!(event.id.starts_with("urn:uuid:"), "{}", event.id);
        assert_eq!(event.event_type, None);
        assert_eq!(event.retry, None);
        assert_eq!(event.data, "");
        // `private` with any value, even empty, makes the update private (Mercure).
        assert!(parse_form(b"topic=a&private=").expect("valid").private);
    }

    #[test]
    fn bad_retry_is_rejected() {
        for body in [
            &b"topic=a&retry=-1"[..],
            b"topic=a&retry=1s",
            b"topic=a&retry=+",
            b"topic=a&retry=99999999999999999999999",
        ] {
            assert_eq!(
                parse_form(body).map_err(|e| e.status),
                Err(StatusCode::BAD_REQUEST)
            );
        }
    }
}
