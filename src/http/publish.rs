//! `POST /.well-known/mercure`: the publish endpoint (draft-dunglas-mercure-07 and -08
//! §Publication).
//!
//! Reads the form (`topic` repeated, `data`, `private`, `id`, `type`, `retry`: the same fields
//! in both dialects), authorizes the publisher for every topic, and answers `200` with the
//! event id once the event is in history. The dialect ([`super::dialect`]: here the token's
//! `typ` and cookie, or a token in the URL) adds draft-08's rules for a draft-08 publish; the
//! reserved hub namespace is refused in both. Any refusal happens before the hub sees the
//! event, so a rejected publish changes nothing; an update published in either dialect goes
//! to the subscribers of both, with the same id.
//! A retry (an `Idempotency-Key` seen within the window, or an id held with the same content;
//! [`crate::idempotency`]) is answered `200` with the original id and `Idempotent-Replayed:
//! true`, and stored and delivered nothing; a key reused for other content gets `422`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, StatusCode};

use super::dialect::{self, Markers};
use super::error::ApiError;
use super::form;
use super::{bearer, query_param, HttpConfig, MERCURE_PATH};
use crate::auth::{TokenError, TokenSource};
use crate::dialect::Dialect;
use crate::event::{generate_id, Event, EventError};
use crate::hub::Hub;
use crate::idempotency::{IdempotencyKey, KeyError};
use crate::telemetry::TraceIds;

/// Handles a publish. With tracing on, the request is the `publish` span (continuing the
/// request's W3C `traceparent`), and the event carries its ids to the store, the dispatch and
/// the deliveries.
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
    if !hub.tracing().is_on() {
        return handle(hub, config, query, headers, body, None)
            .await
            .map(|(response, _)| response);
    }
    let traceparent = headers
        .get(TRACEPARENT)
        .and_then(|value| value.to_str().ok());
    let mut span = hub.tracing().publish(traceparent);
    let ids = span.ids();
    let answer = handle(hub, config, query, headers, body, ids).await;
    match &answer {
        Ok((_, id)) => span.finish(Ok(id.as_deref().unwrap_or_default())),
        Err(error) => span.finish(Err(&error.message)),
    }
    answer.map(|(response, _)| response)
}

/// The W3C Trace Context request header.
const TRACEPARENT: &str = "traceparent";

/// The publish itself: the response, and (traced only: a copy costs an allocation) the event
/// id for the span.
async fn handle(
    hub: Hub,
    config: Arc<HttpConfig>,
    query: Option<String>,
    headers: HeaderMap,
    body: Body,
    trace: Option<TraceIds>,
) -> Result<(Response, Option<String>), ApiError> {
    let query_token = query
        .as_deref()
        .and_then(|q| query_param(q, "authorization"));
    // draft-08 §Publication keeps draft-07's form (`topic`, `data`, `private`, `id`, `type`,
    // `retry`): only the token (its `typ`, its cookie, never in the URL) tells the dialect.
    let mut markers = Markers::default();
    if query_token.is_some() {
        markers.note_param("authorization");
    }
    // An access token in the URL is draft-08's `invalid_request` (RFC 6750), which says more
    // than "mixes the dialects".
    bearer::draft08_token(
        &config,
        query_token.as_deref().map(|t| (t, TokenSource::Query)),
    )?;
    let resolved = dialect::resolve(config.dialects, markers, &headers, query_token.as_deref())?;
    let (token, source) = match resolved.token {
        Some((token, source)) => (Some(token), Some(source)),
        None => (None, None),
    };
    if source == Some(TokenSource::Cookie) {
        check_cookie_origin(&config, &headers)?;
    }
    // A draft-08 access token (header `typ: at+jwt`) is verified by the draft-08 issuers.
    let draft08 = bearer::draft08_token(&config, token.as_deref().zip(source))?;
    let grant = match (draft08, token.as_deref()) {
        (Some(auth), Some(token)) => auth
            .verify_publisher(token)
            .await
            .map_err(|e| bearer::token_error(auth, e))?,
        _ => dialect::authorize_publisher(
            &config,
            resolved.dialect,
            token.as_deref(),
            hub.selector_cache(),
        )
        .map_err(|e| bearer::auth_error(&config, e))?,
    };

    // Mercure's reference hub reads a publish without a `Content-Type` as a form.
    let bytes = form::read_form(&config, &headers, body, "the body", form::Untyped::Form).await?;
    let event = parse_form(&bytes)?;
    check_reserved_namespace(&event.topics)?;
    if resolved.dialect == Dialect::Draft08 {
        check_draft08(&event)?;
        // draft-08 §Publication: a request over a size limit (topics per update, a field's
        // length) is 413; draft-07 clients keep the 400 they always got.
        match event.validate(&hub.config().event_limits) {
            Err(error @ (EventError::TooManyTopics { .. } | EventError::FieldTooLong { .. })) => {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    error.to_string(),
                ))
            }
            Err(error) => return Err(error.into()),
            Ok(()) => {}
        }
    }
    grant
        .check_topics(&event.topics)
        .map_err(|e| match draft08 {
            // draft-08 §Publishers: 403 with `error="insufficient_scope"`.
            Some(auth) => bearer::token_error(auth, TokenError::InsufficientScope(e.to_string())),
            None => e.into(),
        })?;
    let key = idempotency_key(&headers)?;
    let traced = trace.is_some();
    let receipt = hub.publish_traced(event, key, trace).await?;
    let id = traced.then(|| receipt.id.clone());
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
    Ok((response, id))
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

/// draft-08 §Publication, §Reserved Hub Namespace: no topic may address the hub's own path
/// subtree (`/.well-known/mercure` and below), where the hub publishes subscription events. The
/// topic is resolved against the hub's URL with the WHATWG URL parser (dot segments removed,
/// `%2e` included), then percent-encoded unreserved characters in its path are decoded, and
/// the path compared whatever the scheme or host. A topic that is not a URL reference cannot
/// name a hub path and passes.
///
/// Applied in both dialects: an update from a draft-07 publisher reaches draft-08
/// subscribers, so a forged subscription event would mislead them just the same.
fn check_reserved_namespace(topics: &[String]) -> Result<(), ApiError> {
    // A blank topic would resolve to the hub's URL itself; the hub refuses it with a clearer
    // reason (`EventError::BlankTopic`).
    for topic in topics.iter().filter(|topic| !topic.trim().is_empty()) {
        let Some(url) = crate::topic::url_pattern::resolve_topic(topic) else {
            continue;
        };
        let path = decode_unreserved(url.path());
        let reserved = path
            .strip_prefix(MERCURE_PATH)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        if reserved {
            return Err(ApiError::bad_request(format!(
                "topic {topic:?} is in the hub's reserved namespace ({MERCURE_PATH} and below, \
                 where the hub publishes its own events)"
            )));
        }
    }
    Ok(())
}

/// `path` with its percent-encoded unreserved characters (RFC 3986 §2.3: ALPHA, DIGIT, `-`,
/// `.`, `_`, `~`) decoded, so `/.well-known/%6Dercure` is `/.well-known/mercure`.
fn decode_unreserved(path: &str) -> std::borrow::Cow<'_, str> {
    if !path.contains('%') {
        return path.into();
    }
    // A URL's serialized path is ASCII (everything else is percent-encoded), so bytes are
    // characters here.
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        let decoded = (byte == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        match decoded {
            Some(unreserved) => {
                out.push(unreserved);
                i += 3;
            }
            None => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned().into()
}

/// The rules draft-08 §Publication adds to draft-07's: no topic is exactly `*` (the wildcard
/// matcher would make it unaddressable), and topics, `id` and `type` hold no C0/C1 control,
/// DEL or format character (they travel in headers and are compared byte for byte).
fn check_draft08(event: &Event) -> Result<(), ApiError> {
    use crate::topic::value::{describe, forbidden_char};
    if event.topics.iter().any(|topic| topic == "*") {
        return Err(ApiError::bad_request(
            "a topic must not be `*`: it is the wildcard matcher, so no subscriber could select it alone",
        ));
    }
    let fields = event
        .topics
        .iter()
        .map(|topic| ("topic", topic.as_str()))
        .chain(std::iter::once(("id", event.id.as_str())))
        .chain(event.event_type.as_deref().map(|t| ("type", t)));
    for (field, value) in fields {
        if let Some(c) = forbidden_char(value) {
            return Err(ApiError::bad_request(format!(
                "`{field}` contains {}, a control or format character (not allowed in draft-08)",
                describe(c)
            )));
        }
    }
    Ok(())
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
    fn the_reserved_namespace_is_refused_in_every_spelling() {
        for topic in [
            "/.well-known/mercure",
            "/.well-known/mercure/subscriptions/a/b",
            "https://hub.example.com/.well-known/mercure/subscriptions/x",
            "/.well-known/%6Dercure/x",
            "/.well-known/%6dercure",
            "/.well-known/mercure/../mercure/x",
            "/a/%2e%2e/.well-known/mercure/x",
            "mercure/subscriptions/x", // relative to the hub URL
        ] {
            assert!(
                check_reserved_namespace(&[topic.to_owned()]).is_err(),
                "{topic}"
            );
        }
        for topic in [
            "/.well-known/mercurex",
            "/.well-known/mercure%2Fx",
            "https://example.com/books/1",
            "urn:uuid:1",
            "plain",
            "http://[::1",
            "", // refused by the hub as blank, with that reason
        ] {
            assert!(
                check_reserved_namespace(&[topic.to_owned()]).is_ok(),
                "{topic}"
            );
        }
    }

    #[test]
    fn draft08_refuses_star_controls_and_format_characters() {
        let event = |topic: &str, id: &str, event_type: Option<&str>| Event {
            id: id.into(),
            topics: vec![topic.into()],
            data: String::new(),
            event_type: event_type.map(Into::into),
            retry: None,
            private: false,
        };
        assert!(check_draft08(&event("*", "1", None)).is_err());
        assert!(check_draft08(&event("a\u{200B}b", "1", None)).is_err());
        assert!(check_draft08(&event("a", "1\u{85}", None)).is_err());
        assert!(check_draft08(&event("a", "1", Some("t\u{7F}"))).is_err());
        assert!(check_draft08(&event("https://e.com/ü", "urn:uuid:1", Some("t"))).is_ok());
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
