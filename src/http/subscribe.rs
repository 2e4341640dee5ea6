//! `GET /.well-known/mercure`: the subscribe endpoint (draft-dunglas-mercure-07 and -08
//! §Subscription, §Reconciliation).
//!
//! Reads the query once: draft-07's `topic` (repeatable), `lastEventID` and `authorization`;
//! draft-08's `match`/`match_exact`/`match_urlpattern` (repeatable) and `last_event_id`. The
//! request's dialect comes from what it carries ([`super::dialect`]); then it authorizes the
//! subscriber, opens a [`Subscription`](crate::hub::Subscription) (the same hub for both
//! dialects) and answers with its stream as a `text/event-stream` body: a resumed draft-07
//! stream says where in `Last-Event-ID`, a draft-08 one in `Mercure-Last-Event-ID`. The response headers go out at once, before any event exists, so
//! `EventSource.onopen` fires immediately. The response carries the [`EventStream`] extension:
//! that, not its content type, is how [`crate::server`] knows to write it as a stream.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use bytes::Bytes;
use futures_util::{Future, Stream};
use http::{header, HeaderValue, StatusCode};
use http_body::Frame;

use tokio_util::sync::WaitForCancellationFutureOwned;

use super::dialect::{self, Markers};
use super::error::ApiError;
use super::form;
use super::token_recheck::{StreamRegistration, TokenCheck};
use super::{bearer, HttpConfig, LiveHttpConfig};
use crate::auth::{SubscriberGrant, TokenSource};
use crate::dialect::Dialect;
use crate::hub::{Hub, SubscribeError, SubscribeRequest, SubscriptionStream};
use crate::topic::{MatcherType, TopicMatcher};

/// The `Last-Event-ID` header name.
pub const LAST_EVENT_ID: &str = "last-event-id";

/// What Mercure's reference hub sends, so that no proxy or browser caches a stream.
const CACHE_CONTROL: &str = "private, no-cache, no-store, must-revalidate, max-age=0";

/// The mark of a response that is an open event stream, in its extensions: set by
/// [`subscribe`] on every stream it opens, and read by the server's direct HTTP/1.1 writer,
/// which writes a marked response as a stream (chunk by chunk, for as long as it lasts) and
/// any other one whole, whatever its `Content-Type` says. An application's own handler that
/// returns an endless body on the subscribe path can set it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventStream;

/// Handles a subscription.
///
/// # Errors
/// `400` without topics, with a blank one or with too many, for a request that mixes the
/// dialects or speaks one that is off, for an unknown `match*` name or a bad draft-08 value
/// (not UTF-8, a control or format character, too long, a URL pattern that does not compile),
/// for `last_event_id` given twice; `401` for a missing (when anonymous
/// subscribers are off) or invalid token. A refusal that will pass (the hub is full, history
/// cannot be read for a moment, shutdown) is `503` with `Retry-After`, except for a client that
/// accepts `text/event-stream`: it gets a `200` stream that sets `retry:` and ends.
pub async fn subscribe(
    State(hub): State<Hub>,
    State(live): State<Arc<LiveHttpConfig>>,
    request: Request,
) -> Result<Response, ApiError> {
    // One generation of the settings for the whole request (see `LiveHttpConfig`).
    let config = live.current();
    let max_exact_bytes = hub.config().event_limits.max_field_bytes;
    let (parts, body) = request.into_parts();
    let query_text = parts.uri.query().unwrap_or("");
    let query = if parts.method.as_str() == QUERY {
        // The body of a `QUERY` subscription: a form, at most `--max-publish-bytes`, and
        // it must say so in its `Content-Type`.
        let form = form::read_form(
            &config,
            &parts.headers,
            body,
            "a QUERY subscription's body",
            form::Untyped::Refused,
        )
        .await?;
        let form = std::str::from_utf8(&form).map_err(|_| {
            ApiError::bad_request("the body is not UTF-8 (application/x-www-form-urlencoded)")
        })?;
        SubscribeQuery::parse_union(query_text, form, max_exact_bytes)
    } else {
        SubscribeQuery::parse(query_text, max_exact_bytes)
    };
    let headers = &parts.headers;
    // An access token in the URL is draft-08's `invalid_request` (RFC 6750), which says more
    // than "mixes the dialects".
    bearer::draft08_token(
        &config,
        query
            .token
            .as_deref()
            .map(|token| (token, crate::auth::TokenSource::Query)),
    )?;
    let resolved = dialect::resolve(
        config.dialects,
        query.markers,
        headers,
        query.token.as_deref(),
    )?;
    // A bad draft-08 value is reported once the request is known to be draft-08 (a mixed or
    // turned-off request is told that first).
    if let Some(error) = query.invalid {
        return Err(error);
    }
    let token = resolved.token;
    let selectors: Vec<String> = query
        .topics
        .iter()
        .cloned()
        .chain(query.matchers.iter().map(|m| m.value.clone()))
        .collect();
    let grant = authorize_subscription(
        &config,
        &hub,
        resolved.dialect,
        token.as_ref().map(|(t, s)| (t.as_ref(), *s)),
        &selectors,
    )
    .await?;
    // Mercure §Reconciliation (both drafts): the header takes precedence over the query
    // parameter. Browsers send it as UTF-8 (WHATWG), so non-ASCII ids resume too; an empty
    // value counts as absent.
    let last_event_id = match headers.get(LAST_EVENT_ID) {
        Some(value) if !value.is_empty() => Some(
            std::str::from_utf8(value.as_bytes())
                .map_err(|_| ApiError::bad_request("the Last-Event-ID header is not valid UTF-8"))?
                .to_owned(),
        ),
        _ => query.last_event_id.filter(|id| !id.is_empty()),
    };
    let remote_addr = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);

    let wants_event_stream = accepts_event_stream(headers);
    let subscription = match hub
        .subscribe(SubscribeRequest {
            topics: query.topics,
            matchers: query.matchers,
            last_event_id,
            grant,
            remote_addr,
        })
        .await
    {
        Ok(subscription) => subscription,
        Err(error) if wants_event_stream && error.is_transient() => {
            return Ok(come_back_later(&error));
        }
        Err(error) => return Err(error.into()),
    };

    // A stream authorized by a token is re-verified when the settings are replaced; one
    // opened while they were being replaced is checked against the new ones here.
    let registration = match token {
        Some((token, source)) => {
            let registration = StreamRegistration::new(
                &live,
                TokenCheck {
                    token: token.into_owned(),
                    source,
                    dialect: resolved.dialect,
                    selectors,
                    remote_addr,
                },
            );
            registration.verified_under(&config, &hub).await?;
            Some(registration)
        }
        None => None,
    };
    let body = SseBody {
        events: subscription.stream,
        end: registration
            .as_ref()
            .map(|r| Box::pin(r.end.clone().cancelled_owned())),
        _registration: registration,
    };
    let mut response = Response::new(Body::new(body));
    *response.status_mut() = StatusCode::OK;
    response.extensions_mut().insert(EventStream);
    let headers = response.headers_mut();
    insert_stream_headers(headers);
    if let Some(resumed_after) = subscription.resumed_after {
        // Ids are validated to contain no CR, LF or NUL, so any id is a valid header value
        // (UTF-8 bytes as obs-text); should that ever fail, `earliest` tells the client it may
        // have missed events rather than nothing.
        let value = HeaderValue::from_bytes(resumed_after.as_bytes())
            .unwrap_or_else(|_| HeaderValue::from_static(crate::event::EARLIEST));
        // draft-07 answers with `Last-Event-ID`; draft-08 registers a response field of its
        // own, `Mercure-Last-Event-ID` (§Reconciliation).
        let name = match resolved.dialect {
            Dialect::Draft07 => LAST_EVENT_ID,
            Dialect::Draft08 => dialect::MERCURE_LAST_EVENT_ID,
        };
        headers.insert(name, value);
    }
    Ok(response)
}

/// The subscribe query, read once: draft-07 selectors and draft-08 matchers, the cursor, a
/// token in the URL, the dialect markers seen, and the first draft-08 value refused.
#[derive(Debug, Default)]
struct SubscribeQuery {
    topics: Vec<String>,
    matchers: Vec<TopicMatcher>,
    last_event_id: Option<String>,
    token: Option<String>,
    markers: Markers,
    invalid: Option<ApiError>,
}

impl SubscribeQuery {
    /// Reads `query` (draft-08 §Subscription: `application/x-www-form-urlencoded`). draft-07
    /// names decode lossily, as before; draft-08 values must be UTF-8 without controls or
    /// format characters, and exact matchers at most `max_exact_bytes` long (a longer one
    /// could never match a publishable topic).
    fn parse(query: &str, max_exact_bytes: usize) -> Self {
        Self::parse_pairs(
            dialect::form_pairs(query).map(|(name, value)| (Component::Query, name, value)),
            max_exact_bytes,
        )
    }

    /// A `QUERY` request's parameters: the union of the query component's and the body's
    /// (draft-08 §Subscription), as if they had all appeared in one; `last_event_id`, single-
    /// valued, is taken from the query component when both have it.
    fn parse_union(query: &str, body: &str, max_exact_bytes: usize) -> Self {
        let in_query =
            dialect::form_pairs(query).map(|(name, value)| (Component::Query, name, value));
        let in_body = dialect::form_pairs(body).map(|(name, value)| (Component::Body, name, value));
        Self::parse_pairs(in_query.chain(in_body), max_exact_bytes)
    }

    fn parse_pairs<'a>(
        pairs: impl Iterator<Item = (Component, Cow<'a, [u8]>, Cow<'a, [u8]>)>,
        max_exact_bytes: usize,
    ) -> Self {
        let mut parsed = Self::default();
        // `last_event_id`s seen in the query component and in the body.
        let mut last_event_ids = [0u32; 2];
        for (component, name, value) in pairs {
            let name = String::from_utf8_lossy(&name);
            parsed.markers.note_param(&name);
            match name.as_ref() {
                "topic" => parsed
                    .topics
                    .push(String::from_utf8_lossy(&value).into_owned()),
                "lastEventID" => {
                    parsed
                        .last_event_id
                        .get_or_insert_with(|| String::from_utf8_lossy(&value).into_owned());
                }
                "authorization" => {
                    parsed
                        .token
                        .get_or_insert_with(|| String::from_utf8_lossy(&value).into_owned());
                }
                "last_event_id" => {
                    // draft-08 §Subscription: single-valued within a component; the query
                    // component's wins over the body's.
                    let seen = &mut last_event_ids[component as usize];
                    *seen += 1;
                    if *seen > 1 {
                        parsed.refuse(ApiError::bad_request(
                            "`last_event_id` is single-valued: give it once (the Last-Event-ID header, when sent, wins over it)",
                        ));
                        continue;
                    }
                    match draft08_value("last_event_id", &value) {
                        Ok(id) if component == Component::Query || last_event_ids[0] == 0 => {
                            parsed.last_event_id = Some(id);
                        }
                        Ok(_) => {}
                        Err(error) => parsed.refuse(error),
                    }
                }
                name if dialect::in_match_namespace(name) => {
                    match Self::matcher(name, &value, max_exact_bytes) {
                        Ok(matcher) => parsed.matchers.push(matcher),
                        Err(error) => parsed.refuse(error),
                    }
                }
                _ => {}
            }
        }
        parsed
    }

    fn refuse(&mut self, error: ApiError) {
        self.invalid.get_or_insert(error);
    }

    /// One `match*` parameter (draft-08 §Subscription, §Matcher Types).
    fn matcher(name: &str, value: &[u8], max_exact_bytes: usize) -> Result<TopicMatcher, ApiError> {
        let kind = MatcherType::from_param(name).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown matcher parameter {name:?}: the `match` prefix is reserved; this hub \
                 supports `match` (or `match_exact`) and `match_urlpattern` (names are \
                 case-sensitive)"
            ))
        })?;
        let value = draft08_value(name, value)?;
        if kind == MatcherType::Exact && value.len() > max_exact_bytes {
            return Err(ApiError::bad_request(format!(
                "`{name}` is {} bytes long, at most {max_exact_bytes} allowed",
                value.len()
            )));
        }
        Ok(TopicMatcher { kind, value })
    }
}

/// Where a subscription parameter came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Component {
    /// The URL's query component.
    Query = 0,
    /// The body of a `QUERY` request.
    Body = 1,
}

/// The `QUERY` method (RFC 10008): a safe request whose body carries what a `GET` carries in
/// its query, for matcher lists too long for a URL (draft-08 §Subscription).
pub const QUERY: &str = "QUERY";

/// `/.well-known/mercure` with a method other than `GET` and `POST`: `QUERY` subscribes, any
/// other is `405` with the methods the endpoint takes.
pub async fn other_method(
    hub: State<Hub>,
    live: State<Arc<LiveHttpConfig>>,
    request: Request,
) -> Result<Response, ApiError> {
    if request.method().as_str() == QUERY {
        return subscribe(hub, live, request).await;
    }
    let mut response = axum::response::IntoResponse::into_response(ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} is not allowed here: GET (or QUERY) subscribes, POST publishes",
            request.method()
        ),
    ));
    response.headers_mut().insert(
        header::ALLOW,
        HeaderValue::from_static("GET, HEAD, POST, QUERY"),
    );
    Ok(response)
}

/// A draft-08 parameter value: UTF-8, without C0/C1 controls, DEL or format characters
/// (draft-08 §Subscription).
fn draft08_value(name: &str, value: &[u8]) -> Result<String, ApiError> {
    let text = std::str::from_utf8(value)
        .map_err(|_| ApiError::bad_request(format!("`{name}` is not valid UTF-8")))?;
    if let Some(c) = crate::topic::value::forbidden_char(text) {
        return Err(ApiError::bad_request(format!(
            "`{name}` contains {}, a control or format character (not allowed in draft-08 values)",
            crate::topic::value::describe(c)
        )));
    }
    Ok(text.to_owned())
}

/// The headers of every event stream: its type, and what keeps proxies and browsers from
/// caching or buffering it.
fn insert_stream_headers(headers: &mut http::HeaderMap) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
}

/// Whether the client asked for an event stream (`Accept: text/event-stream`, as every
/// `EventSource` does): such a client is told to come back in the stream, not with a status.
fn accepts_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .any(|value| accept_names_event_stream(value.as_bytes()))
}

/// Whether one `Accept` header value names `text/event-stream` among its media ranges
/// (parameters and case aside). Also read by the server for connections it refuses before
/// routing (`server::limits`).
pub(crate) fn accept_names_event_stream(value: &[u8]) -> bool {
    String::from_utf8_lossy(value).split(',').any(|range| {
        let essence = range.split(';').next().unwrap_or("").trim();
        essence.eq_ignore_ascii_case("text/event-stream")
    })
}

/// Marks a `200` event stream that refused the subscription for now (counted as a rejection).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RefusedForNow;

/// The answer to an `EventSource` refused for a cause that will pass: `200 text/event-stream`
/// whose only frame sets `retry:` and says why in a comment, then the end of the stream. WHATWG
/// HTML §9.2: a browser fails an `EventSource` for good on any other status, but reconnects by
/// itself (with its `Last-Event-ID`) when a `200` stream ends. The delay is drawn between once
/// and twice the cause's [`SubscribeError::retry_after`], so that thousands of tabs refused in
/// the same millisecond do not all come back in the same millisecond.
fn come_back_later(error: &SubscribeError) -> Response {
    let base = u64::try_from(error.retry_after().as_millis()).unwrap_or(u64::MAX / 2);
    let delay_ms = fastrand::u64(base..=base.saturating_mul(2));
    tracing::debug!(%error, delay_ms, "subscription refused for now; the client is told to retry");
    let reason = format!("refused for now: {error}; retry in {delay_ms} ms");
    let mut response = Response::new(Body::from(crate::wire::encode_retry(&reason, delay_ms)));
    let headers = response.headers_mut();
    insert_stream_headers(headers);
    headers.insert(
        header::RETRY_AFTER,
        HeaderValue::from(delay_ms.div_ceil(1000)),
    );
    response.extensions_mut().insert(RefusedForNow);
    response
}

/// Verifies a subscriber's token (or its absence) under `config`: a draft-08 access token
/// (header `typ: at+jwt`) by the draft-08 issuers, against the subscription's `selectors`
/// (draft-08 §Payloads); any other by the draft-07 keys. Shared by the endpoint and the
/// re-check of open streams on reload ([`super::token_recheck`]).
///
/// # Errors
/// `400` for a draft-08 token in the URL; `401`/`403` for a missing or invalid token.
pub(crate) async fn authorize_subscription(
    config: &HttpConfig,
    hub: &Hub,
    dialect: Dialect,
    token: Option<(&str, TokenSource)>,
    selectors: &[String],
) -> Result<SubscriberGrant, ApiError> {
    match (bearer::draft08_token(config, token)?, token) {
        (Some(auth), Some((token, _))) => auth
            .verify_subscriber(token, selectors)
            .await
            .map_err(|e| bearer::token_error(auth, e)),
        _ => dialect::authorize_subscriber(
            config,
            dialect,
            token.map(|(token, _)| token),
            hub.selector_cache(),
        )
        .map_err(|e| bearer::auth_error(config, e)),
    }
}

/// Adapts a [`SubscriptionStream`] to an HTTP body: each item is one data frame. A stream
/// authorized by a token ends when its registration says so (the token no longer verifies
/// under reloaded settings).
struct SseBody {
    events: SubscriptionStream,
    /// Resolves when the stream must end; `None` for an anonymous stream.
    end: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    /// Keeps the stream registered for re-checks while it is open.
    _registration: Option<StreamRegistration>,
}

impl http_body::Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let body = self.get_mut();
        if let Some(end) = &mut body.end {
            if end.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
        }
        Pin::new(&mut body.events)
            .poll_next(cx)
            .map(|item| item.map(|bytes| Ok(Frame::data(bytes))))
    }
}
