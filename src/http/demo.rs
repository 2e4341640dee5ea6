//! `ssehub serve --demo`: a page at `/` to try the hub in a browser, and the endpoints it needs.
//!
//! **Never enable `--demo` in production**: `GET /demo/token` hands a publisher token to anyone
//! who asks. The token is short-lived and limited to [`DEMO_SELECTORS`], but whoever can reach
//! the hub can publish there.
//!
//! - `GET /`: the page ([`PAGE`], `src/http/demo.html`, no external resources). It subscribes with
//!   the browser's own `EventSource` (which reconnects by itself and sends `Last-Event-ID`),
//!   publishes through the Mercure endpoint with the token below, and runs short polling, long
//!   polling and SSE side by side on one topic, measuring requests, bytes and delays in the
//!   browser.
//! - `GET /demo/token`: a JWT valid for [`TOKEN_LIFETIME`] that may publish on
//!   [`DEMO_SELECTORS`], signed with the hub's publisher key (so only an HMAC key will do; see
//!   [`crate::config::ServeArgs::resolve`]).
//! - `GET /demo/poll?topic=T&after=ID`: short polling, the events after `ID` at once.
//! - `GET /demo/longpoll?topic=T&after=ID`: long polling, waits up to [`LONG_POLL_WAIT`] for the
//!   next events after `ID`.
//!
//! Both polling endpoints are built on [`Hub::subscribe`], with the same authorization as the
//! Mercure subscribe endpoint (a token from the header, `authorization` query parameter or
//! cookie; none needs `--anonymous`), and answer JSON:
//! `{"events": [{"id", "type", "data"}], "last_id": ID}`, where `last_id` is the cursor for the
//! next request.
//!
//! The library has no "read history after this id" call, so a short poll opens a subscription
//! with `Last-Event-ID: ID` and takes what its replay yields until the stream goes quiet
//! ([`REPLAY_FIRST_WAIT`], [`REPLAY_QUIET`]). An event the replay had not reached by then is not
//! lost: the cursor stops before it and the next poll returns it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::StreamExt;
use http::{header, HeaderMap, StatusCode};
use serde::Serialize;
use tokio::time::Instant;

use super::error::ApiError;
use super::HttpConfig;
use crate::auth::{self, Claims, JwtSigner, MercureClaim};
use crate::event::EARLIEST;
use crate::hub::{Hub, SubscribeRequest, Subscription};
use crate::wire::Parser;

/// The page, served at `/`.
pub const PAGE: &str = include_str!("demo.html");

/// The topic the page starts on.
pub const DEMO_TOPIC: &str = "https://example.com/demo";

/// What a demo token may publish on: the demo topic and every topic below it.
pub const DEMO_SELECTORS: [&str; 2] = [DEMO_TOPIC, "https://example.com/demo/{+path}"];

/// How long a demo token is valid.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// How long a long poll waits for an event before answering with none (below the usual 30 s
/// proxy and browser idle limits).
pub const LONG_POLL_WAIT: Duration = Duration::from_secs(25);

/// How long a short poll waits for the replay's first frame: a durable history reads its pages
/// on the blocking pool, so even an immediate answer is not ready at the first poll.
pub const REPLAY_FIRST_WAIT: Duration = Duration::from_millis(100);

/// After a frame, a short poll takes this long without another as the end of the replay.
pub const REPLAY_QUIET: Duration = Duration::from_millis(20);

/// The most a short poll spends reading, so a huge history cannot hold a request for long.
const POLL_READ_LIMIT: Duration = Duration::from_secs(2);

/// The most events one poll returns; the client continues from `last_id`.
const MAX_POLL_EVENTS: usize = 1000;

/// The demo routes, to merge beside [`super::router`], with the same `config` (its `auth`
/// authorizes the polls). `signer` signs the tokens of `/demo/token` and must match the
/// publisher key.
pub fn router(hub: Hub, config: HttpConfig, signer: JwtSigner) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/demo/token", get(token))
        .route("/demo/poll", get(poll))
        .route("/demo/longpoll", get(long_poll))
        .with_state(DemoState {
            hub,
            config: Arc::new(config),
            signer,
        })
}

/// What the demo handlers share.
#[derive(Clone)]
struct DemoState {
    hub: Hub,
    /// The HTTP settings: the polls authorize like the Mercure subscribe endpoint.
    config: Arc<HttpConfig>,
    /// The publisher signing key (the HMAC secret the hub verifies publishers with).
    signer: JwtSigner,
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

/// The answer of `/demo/token`.
#[derive(Debug, Serialize)]
struct DemoToken {
    /// The JWT, for `Authorization: Bearer`.
    token: String,
    /// Its `exp` claim (seconds since the epoch).
    expires_at: u64,
    /// The selectors it may publish on.
    publish: [&'static str; 2],
}

/// `GET /demo/token`: a publisher token for [`DEMO_SELECTORS`], valid for [`TOKEN_LIFETIME`].
async fn token(State(state): State<DemoState>) -> Result<Response, ApiError> {
    let internal = |message: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| internal("the system clock is before 1970".into()))?;
    let expires_at = (now + TOKEN_LIFETIME).as_secs();
    let claims = Claims {
        exp: Some(expires_at),
        mercure: Some(MercureClaim {
            publish: Some(DEMO_SELECTORS.iter().map(|s| (*s).to_owned()).collect()),
            ..MercureClaim::default()
        }),
    };
    let token = state
        .signer
        .sign(&claims)
        .map_err(|e| internal(format!("signing the demo token: {e}")))?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(DemoToken {
            token,
            expires_at,
            publish: DEMO_SELECTORS,
        }),
    )
        .into_response())
}

/// One event in a poll answer.
#[derive(Debug, Serialize)]
struct PolledEvent {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    data: String,
}

/// The answer of both polling endpoints.
#[derive(Debug, Serialize)]
struct PollAnswer {
    events: Vec<PolledEvent>,
    /// The `after` of the next request: the last event's id, else the request's own `after`.
    last_id: Option<String>,
}

impl IntoResponse for PollAnswer {
    fn into_response(self) -> Response {
        ([(header::CACHE_CONTROL, "no-store")], Json(self)).into_response()
    }
}

/// The query of a poll: `topic` (repeatable), `after`, and optionally `authorization`.
struct PollQuery {
    topics: Vec<String>,
    after: Option<String>,
    authorization: Option<String>,
}

impl PollQuery {
    fn parse(query: Option<&str>) -> Self {
        let mut parsed = Self {
            topics: Vec::new(),
            after: None,
            authorization: None,
        };
        for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match name.as_ref() {
                "topic" => parsed.topics.push(value.into_owned()),
                "after" if !value.is_empty() => {
                    parsed.after.get_or_insert_with(|| value.into_owned());
                }
                "authorization" => {
                    parsed
                        .authorization
                        .get_or_insert_with(|| value.into_owned());
                }
                _ => {}
            }
        }
        parsed
    }
}

/// Authorizes like the Mercure subscribe endpoint, then subscribes after `last_event_id`.
async fn open(
    hub: &Hub,
    config: &HttpConfig,
    headers: &HeaderMap,
    query: &PollQuery,
    last_event_id: Option<String>,
) -> Result<Subscription, ApiError> {
    let token =
        auth::extract_token(headers, query.authorization.as_deref())?.map(|(token, _)| token);
    let grant = config
        .auth
        .authorize_subscriber(token.as_deref(), hub.selector_cache())?;
    Ok(hub
        .subscribe(SubscribeRequest {
            topics: query.topics.clone(),
            matchers: Vec::new(),
            last_event_id,
            grant,
            remote_addr: None,
        })
        .await?)
}

/// Parses frames into events; a frame may hold several, or only a heartbeat comment.
fn parse_frame(parser: &mut Parser, frame: &[u8]) -> Result<Vec<PolledEvent>, ApiError> {
    let events = parser.push(frame).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading the hub's own stream: {e}"),
        )
    })?;
    Ok(events
        .into_iter()
        .map(|event| PolledEvent {
            id: event.id,
            event_type: event.event_type,
            data: event.data,
        })
        .collect())
}

/// `GET /demo/poll?topic=T&after=ID`: short polling. With `after`, the events after it; without,
/// no events and the id of the newest one (`earliest` when there is none yet), the cursor from
/// which the next poll starts.
async fn poll(
    State(state): State<DemoState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<PollAnswer, ApiError> {
    let query = PollQuery::parse(query.as_deref());
    let cursor_only = query.after.is_none();
    let from = query.after.clone().unwrap_or_else(|| EARLIEST.to_owned());
    let mut subscription = open(&state.hub, &state.config, &headers, &query, Some(from)).await?;
    let mut parser = Parser::new();
    let mut events = Vec::new();
    let mut last_id = query.after.clone();
    let read_until = Instant::now() + POLL_READ_LIMIT;
    let mut quiet_until = Instant::now() + REPLAY_FIRST_WAIT;
    while events.len() < MAX_POLL_EVENTS {
        let wait_until = quiet_until.min(read_until);
        let frame = match tokio::time::timeout_at(wait_until, subscription.stream.next()).await {
            Ok(Some(frame)) => frame,
            // The stream ended (shutdown, lifetime), or the replay went quiet: what we have is
            // the answer.
            Ok(None) | Err(_) => break,
        };
        quiet_until = Instant::now() + REPLAY_QUIET;
        for event in parse_frame(&mut parser, &frame)? {
            last_id = Some(event.id.clone());
            if !cursor_only {
                events.push(event);
            }
        }
    }
    Ok(PollAnswer {
        events,
        last_id: last_id.or_else(|| Some(EARLIEST.to_owned())),
    })
}

/// `GET /demo/longpoll?topic=T&after=ID`: long polling. Answers with the first events after `ID`
/// (or, without `after`, the next event published), or with none after [`LONG_POLL_WAIT`].
async fn long_poll(
    State(state): State<DemoState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<PollAnswer, ApiError> {
    let query = PollQuery::parse(query.as_deref());
    let mut subscription = open(
        &state.hub,
        &state.config,
        &headers,
        &query,
        query.after.clone(),
    )
    .await?;
    let mut parser = Parser::new();
    let deadline = Instant::now() + LONG_POLL_WAIT;
    loop {
        let frame = match tokio::time::timeout_at(deadline, subscription.stream.next()).await {
            Ok(Some(frame)) => frame,
            // The stream ended (shutdown, lifetime) or nothing came in time: no events; the
            // client asks again from the same cursor.
            Ok(None) | Err(_) => {
                return Ok(PollAnswer {
                    events: Vec::new(),
                    last_id: query.after,
                })
            }
        };
        // A frame without events is a heartbeat comment: keep waiting.
        let events = parse_frame(&mut parser, &frame)?;
        if let Some(last) = events.last() {
            return Ok(PollAnswer {
                last_id: Some(last.id.clone()),
                events,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_query_reads_topics_after_and_token() {
        let query = PollQuery::parse(Some(
            "topic=https%3A%2F%2Fexample.com%2Fdemo&topic=%2Fa&after=urn%3Auuid%3A1&after=2&authorization=t",
        ));
        assert_eq!(query.topics, [DEMO_TOPIC, "/a"]);
        assert_eq!(query.after.as_deref(), Some("urn:uuid:1"));
        assert_eq!(query.authorization.as_deref(), Some("t"));
        let empty = PollQuery::parse(Some("after="));
        assert!(empty.topics.is_empty() && empty.after.is_none());
    }

    #[test]
    fn page_is_self_contained() {
        assert!(PAGE.contains("new EventSource("));
        for external in ["http://", "https://cdn", "<script src", "<link"] {
            let uses = PAGE.matches(external).count();
            assert_eq!(uses, 0, "the page must not load {external} resources");
        }
    }
}
