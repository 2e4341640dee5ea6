//! The hub's settings: what a [`crate::Hub`] is built with, and their defaults.
//!
//! Only what the hub itself uses lives here (streams, queues, history, limits on events and
//! subscriptions). The HTTP layer's settings (keys, CORS, publish origins, the body limit, the
//! `/metrics` route) are [`crate::http::HttpConfig`]; the command line fills both in `config`.

use std::time::Duration;

use crate::event::EventLimits;

/// Settings of a hub. `Default` gives the values documented on each field.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Idle time after which a stream gets a heartbeat comment (default 15 s; zero disables).
    pub heartbeat: Duration,
    /// The longest a stream stays open before the hub ends it cleanly and the client
    /// reconnects with `Last-Event-ID` (default 1 h; `None` for no limit).
    pub max_lifetime: Option<Duration>,
    /// Events kept by the default in-memory history, when the builder is given no other store
    /// (default 100,000).
    pub history_size: usize,
    /// Events queued for one subscriber before it counts as too slow and is disconnected
    /// (default 4,096).
    pub queue_capacity: usize,
    /// Bytes of events the fan-out queues for streams that have not been woken to write them
    /// yet, each subscriber's copy counted (default 32 MiB). Beyond it the hub takes no new
    /// event into the fan-out until streams caught up: publishers wait for their answers
    /// instead of every subscriber's delay growing. The frames themselves are shared, so this
    /// bounds delay, not memory.
    pub max_queued_bytes: usize,
    /// Whether the subscribers of one exact topic share one queue of live events (default on:
    /// `hub::feed`); off, every subscriber has a queue of its own.
    pub shared_feeds: bool,
    /// Whether a stream opened without a `Last-Event-ID` starts with an id-only frame naming
    /// the newest event (default on). WHATWG: a frame with an `id` and no `data` sets the
    /// `EventSource`'s last event id and fires nothing, so a client cut off before its first
    /// event resumes from where it started instead of missing what was published meanwhile.
    /// The response's `Last-Event-ID` header names the same id.
    pub initial_cursor: bool,
    /// How long a publish's `Idempotency-Key` is remembered: a retry with it within this
    /// window is answered with the original event's id and not stored again (default 24 h).
    pub idempotency_window: Duration,
    /// Open streams allowed at once; more are refused with `503` (default 100,000).
    pub max_subscribers: usize,
    /// `topic` selectors allowed in one subscription (default 64).
    pub max_topics_per_subscription: usize,
    /// Limits on published events.
    pub event_limits: EventLimits,
    /// Whether subscription events are published and the subscriptions API is served.
    pub subscriptions: bool,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(15),
            max_lifetime: Some(Duration::from_secs(3600)),
            history_size: 100_000,
            queue_capacity: 4096,
            max_queued_bytes: 32 * 1024 * 1024,
            shared_feeds: true,
            initial_cursor: true,
            idempotency_window: Duration::from_secs(24 * 3600),
            max_subscribers: 100_000,
            max_topics_per_subscription: 64,
            event_limits: EventLimits::default(),
            subscriptions: false,
        }
    }
}
