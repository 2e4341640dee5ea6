//! ssehub: a Server-Sent Events hub speaking the Mercure protocol (draft-dunglas-mercure-07).
//!
//! Publishers `POST` updates; browsers subscribe with `EventSource` and receive them in real
//! time, resuming with `Last-Event-ID` after a disconnect. The same hub is a library: build a
//! [`Hub`], mount [`http::router`] beside your own routes, or call [`Hub::publish`] and
//! [`Hub::subscribe`] directly.
//!
//! Module map (one concern each):
//! - [`event`]: the event model and its validation.
//! - [`wire`]: the SSE encoder (once per event) and a WHATWG parser (clients, tests).
//! - [`topic`]: topic selectors (`*`, exact, URI templates) and matching.
//! - [`hub`]: the registry of subscribers, the fan-out, the emitter lifecycle and its hooks.
//! - [`history`]: the event log used for `Last-Event-ID` replay.
//! - [`auth`]: JWTs for publishers and subscribers.
//! - [`http`]: the Mercure routes, CORS and error responses.
//! - [`server`]: the accept loop, connection timeouts and graceful shutdown.
//! - [`metrics`]: Prometheus metrics, one registry per hub.
//! - [`config`] and [`cli`]: settings and the `ssehub` command line.
//!
//! Embedding, with lifecycle hooks:
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use ssehub::{http, server, Hub, HubConfig};
//! use tokio_util::sync::CancellationToken;
//!
//! let token = CancellationToken::new();
//! let hub = Hub::builder(HubConfig::default())
//!     .shutdown(token.child_token()) // ends every stream on cancel
//!     .on_open(|info| println!("subscriber {} opened", info.id))
//!     .on_close(|info, reason, lived| println!("{} closed: {reason:?} after {lived:?}", info.id))
//!     .build()
//!     .await?;
//! let app = axum::Router::new()
//!     .route("/hello", axum::routing::get(|| async { "hi" }))
//!     .merge(http::router(hub.clone()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! server::serve(listener, app, server::ServerOptions::default(), token.clone().cancelled_owned()).await?;
//! hub.shutdown().await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod auth;
pub mod cli;
pub mod config;
pub mod event;
pub mod history;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod server;
pub mod topic;
pub mod wire;

pub use event::Event;
pub use hub::{
    CloseKind, CloseReason, Hub, HubBuilder, HubConfig, PublishError, PublishReceipt,
    SubscribeError, SubscribeRequest, SubscriberInfo, Subscription,
};
