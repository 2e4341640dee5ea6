//! ssehub: a Server-Sent Events hub speaking the Mercure protocol: draft-dunglas-mercure-07 and
//! draft-dunglas-mercure-08 on the same endpoint, chosen per request.
//!
//! Publishers `POST` updates; browsers subscribe with `EventSource` and receive them in real
//! time, resuming with `Last-Event-ID` after a disconnect. The same hub is a library: build a
//! [`Hub`] with a [`HubConfig`], mount [`http::router`] (with an [`HttpConfig`]) beside your own
//! routes or nested under a prefix, or call [`Hub::publish`] and [`Hub::subscribe`] directly.
//!
//! Module map (one concern each):
//! - [`event`]: the event model and its validation.
//! - [`wire`]: the SSE encoder (once per event) and a WHATWG parser (clients, tests).
//! - [`dialect`]: the two protocols (draft-07, draft-08) and which of them a hub accepts.
//! - [`topic`]: topic selectors (`*`, exact, URI templates, URL patterns) and matching.
//! - [`hub`]: the registry of subscribers, the writer (batches, acknowledgements), the
//!   dispatcher (fan-out in slices of woken streams, publishers paced by a budget), each
//!   subscriber's queue and stream, the emitter lifecycle and its hooks.
//! - [`history`]: the event log used for `Last-Event-ID` replay.
//! - [`auth`]: JWTs for publishers and subscribers.
//! - [`http`]: the Mercure routes and their settings ([`HttpConfig`]: keys, CORS, publish
//!   origins, the body limit), CORS and error responses; a stream's response is marked
//!   [`http::EventStream`].
//! - [`server`]: the accept loop, connection limits and timeouts, HTTP/2 and TLS, graceful
//!   shutdown, and the direct writer for plain HTTP/1.1 streams (the `GET`s of
//!   [`server::ServerOptions::subscribe_path`] whose answer is marked as an event stream).
//! - [`metrics`]: Prometheus metrics, one registry per hub.
//! - `webhook`: subscription opened/closed notifications and periodic full lists POSTed,
//!   signed, to a URL (cargo feature `webhook`, part of `cli`; docs/WEBHOOKS.md).
//! - `outbox`: relays a PostgreSQL outbox table to the hub in commit order (cargo feature
//!   `outbox`, part of `cli`).
//! - `config` and `cli`: settings and the `ssehub` command line (cargo feature `cli`, on by
//!   default; an application embedding the hub can leave it out with `default-features = false`,
//!   and with it clap, reqwest, figment and the load generator).
//!
//! Embedding, with lifecycle hooks:
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use ssehub::auth::AuthConfig;
//! use ssehub::{http, server, HttpConfig, Hub, HubConfig};
//! use tokio_util::sync::CancellationToken;
//!
//! let token = CancellationToken::new();
//! // Keys, CORS and the publish body limit: here anonymous subscribers, and publishing only
//! // through `Hub::publish` (no publisher key).
//! let http_config = HttpConfig {
//!     auth: AuthConfig { anonymous: true, ..AuthConfig::default() },
//!     ..HttpConfig::default()
//! };
//! let hub = Hub::builder(HubConfig::default())
//!     .shutdown(token.child_token()) // ends every stream on cancel
//!     .on_open(|info| println!("subscriber {} opened", info.id))
//!     .on_close(|info, reason, lived| println!("{} closed: {reason:?} after {lived:?}", info.id))
//!     .build()
//!     .await?;
//! let app = axum::Router::new()
//!     .route("/hello", axum::routing::get(|| async { "hi" }))
//!     .merge(http::router(hub.clone(), http_config));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! server::serve(listener, app, server::ServerOptions::default(), token.clone().cancelled_owned()).await?;
//! hub.shutdown().await;
//! # Ok(()) }
//! ```
//! `examples/orders.rs` does the same with a PostgreSQL connection pool of its own. Nested under
//! a prefix (`Router::new().nest("/events", http::router(..))`), the streams work as they are;
//! set [`server::ServerOptions::subscribe_path`] to `/events/.well-known/mercure` so that they
//! also keep the server's small writer (about 3.7 KB per idle stream instead of 12).
//!
//! # Emitter lifecycle and why there is no global lock
//!
//! An application follows each stream with two hooks, as with the callbacks of a servlet
//! `SseEmitter`: [`HubBuilder::on_open`] receives the [`SubscriberInfo`] when a stream opens, and
//! [`HubBuilder::on_close`] receives `(info, reason, lived)` once when it ends.
//! [`CloseReason::kind`] sorts the reason into the three outcomes:
//! - [`CloseKind::Timeout`]: the stream reached its maximum lifetime, or its token expired;
//! - [`CloseKind::Completion`]: the application ([`Hub::close_subscriber`]) or a shutdown ended it;
//! - [`CloseKind::Error`]: the client went away or a write to it failed, it read too slowly, or
//!   its replay could not read the history.
//!
//! Hooks run on the hub's own paths (the dispatcher, or the task that drops the stream): keep them
//! short, and never block in them.
//!
//! No lock is shared by every publish and every stream. The registry of subscribers is split into
//! 64 shards by subscriber id, each behind its own `RwLock`, and within a shard the subscribers
//! whose selectors are all exact topics are indexed by topic, so an event visits only the
//! subscribers of its own topics plus those with `*` or URI-template selectors. Subscribing or
//! leaving write-locks one shard for a few map updates. The fan-out, one dispatcher task in log
//! order, read-locks one shard at a time and never awaits or waits on I/O while holding it: it
//! pushes the event's one encoded frame into each subscriber's bounded queue, a push that never
//! blocks (a full queue closes that subscriber as too slow, and it is removed after the fan-out).
//! A waiting stream holds no lock, only its queue and one timer. The stream owns its registration,
//! so it leaves the registry when it is dropped: the client went away, a write failed, or the
//! stream ended itself at its timeout.

#![warn(missing_docs)]

pub mod auth;
#[cfg(feature = "cli")]
pub mod cli;
#[cfg(any(feature = "jwks", feature = "webhook"))]
mod client_tls;
#[cfg(feature = "cli")]
pub mod config;
pub mod dialect;
pub mod event;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod history;
pub mod http;
pub mod hub;
pub mod idempotency;
pub mod metrics;
#[cfg(feature = "outbox")]
pub mod outbox;
pub mod server;
pub mod telemetry;
pub mod topic;
#[cfg(feature = "webhook")]
pub mod webhook;
pub mod wire;

pub use event::Event;
pub use http::HttpConfig;
pub use hub::{
    CloseKind, CloseReason, Hub, HubBuilder, HubConfig, NotReady, PublishError, PublishReceipt,
    SubscribeError, SubscribeRequest, SubscriberInfo, Subscription,
};
