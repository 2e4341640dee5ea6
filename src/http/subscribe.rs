//! `GET /.well-known/mercure`: the subscribe endpoint (draft-dunglas-mercure-07 §Subscription,
//! §Reconciliation).
//!
//! Reads `topic` (repeatable), `lastEventID` and `authorization` from the query, authorizes the
//! subscriber, opens a [`Subscription`](crate::hub::Subscription) and answers with its stream as
//! a `text/event-stream` body. The response headers go out at once, before any event exists, so
//! `EventSource.onopen` fires immediately. The response carries the [`EventStream`] extension:
//! that, not its content type, is how [`crate::server`] knows to write it as a stream.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use bytes::Bytes;
use futures_util::Stream;
use http::{header, HeaderValue, StatusCode};
use http_body::Frame;

use super::error::ApiError;
use super::{bearer, HttpConfig};
use crate::auth;
use crate::hub::{Hub, SubscribeError, SubscribeRequest, SubscriptionStream};

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
/// `400` without topics, with a blank one or with too many, `401` for a missing (when anonymous
/// subscribers are off) or invalid token. A refusal that will pass (the hub is full, history
/// cannot be read for a moment, shutdown) is `503` with `Retry-After`, except for a client that
/// accepts `text/event-stream`: it gets a `200` stream that sets `retry:` and ends.
pub async fn subscribe(
    State(hub): State<Hub>,
    State(config): State<Arc<HttpConfig>>,
    request: Request,
) -> Result<Response, ApiError> {
    let mut topics = Vec::new();
    let (mut query_last_event_id, mut query_token) = (None, None);
    if let Some(query) = request.uri().query() {
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match name.as_ref() {
                "topic" => topics.push(value.into_owned()),
                "lastEventID" => {
                    query_last_event_id.get_or_insert_with(|| value.into_owned());
                }
                "authorization" => {
                    query_token.get_or_insert_with(|| value.into_owned());
                }
                _ => {}
            }
        }
    }
    let headers = request.headers();
    let token = auth::extract_token(headers, query_token.as_deref())?;
    // A draft-08 access token (header `typ: at+jwt`) is verified by the draft-08 issuers;
    // the payload is chosen by the subscription's own selectors (draft-08 §Payloads).
    let draft08 = bearer::draft08_token(&config, token.as_ref().map(|(t, s)| (t.as_ref(), *s)))?;
    let token = token.map(|(token, _)| token);
    let grant = match (draft08, token.as_deref()) {
        (Some(auth), Some(token)) => auth
            .verify_subscriber(token, &topics)
            .await
            .map_err(|e| bearer::token_error(auth, e))?,
        _ => config
            .auth
            .authorize_subscriber(token.as_deref(), hub.selector_cache())
            .map_err(|e| bearer::auth_error(&config, e))?,
    };
    // Mercure §Reconciliation: the header takes precedence over the query parameter. Browsers
    // send it as UTF-8 (WHATWG), so non-ASCII ids resume too; an empty value counts as absent.
    let last_event_id = match headers.get(LAST_EVENT_ID) {
        Some(value) if !value.is_empty() => Some(
            std::str::from_utf8(value.as_bytes())
                .map_err(|_| ApiError::bad_request("the Last-Event-ID header is not valid UTF-8"))?
                .to_owned(),
        ),
        _ => query_last_event_id.filter(|id| !id.is_empty()),
    };
    let remote_addr = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);

    let wants_event_stream = accepts_event_stream(headers);
    let subscription = match hub
        .subscribe(SubscribeRequest {
            topics,
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

    let mut response = Response::new(Body::new(SseBody(subscription.stream)));
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
        headers.insert(LAST_EVENT_ID, value);
    }
    Ok(response)
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

/// Adapts a [`SubscriptionStream`] to an HTTP body: each item is one data frame.
struct SseBody(SubscriptionStream);

impl http_body::Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.get_mut().0)
            .poll_next(cx)
            .map(|item| item.map(|bytes| Ok(Frame::data(bytes))))
    }
}
