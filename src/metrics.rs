//! Prometheus metrics: every name in one place, each handle registered once and cloned into the
//! paths that update it (no lookup per event).
//!
//! Each [`Hub`](crate::Hub) owns its own [`Metrics`] (no process-global registry), so two hubs
//! in one process, or in one test binary, keep separate figures. Gauges that mirror state
//! (open streams, history size and bytes, readiness) are read when scraped, so they cannot drift.

use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::telemetry::lag::LagHistogram;

/// The `reason` label of counters split by cause.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// A short, stable name (`slow_consumer`, `unauthorized`, …).
    pub reason: &'static str,
}

/// Connection figures, updated by the server's accept loop ([`crate::server::serve`]).
#[derive(Debug, Clone, Default)]
pub struct ConnectionMetrics {
    /// Client connections open now.
    pub open: Gauge<i64, AtomicI64>,
    /// Connections closed at once because a connection limit was reached, by limit (`total`,
    /// `per_address`).
    pub rejected: Family<Reason, Counter<u64, AtomicU64>>,
}

/// Webhook figures, updated by the notification queue and the delivery task
/// ([`crate::webhook`]); they stay at 0 without a webhook.
#[derive(Debug, Clone, Default)]
pub struct WebhookMetrics {
    /// Notifications waiting to be delivered.
    pub queued: Gauge<i64, AtomicI64>,
    /// Notifications dropped, oldest first, because the queue was full (the receiver was down
    /// or slow for too long).
    pub dropped: Counter<u64, AtomicU64>,
    /// Notifications delivered (a 2xx answer to the batch that carried them).
    pub delivered: Counter<u64, AtomicU64>,
    /// Full lists of the active subscriptions delivered.
    pub full_lists: Counter<u64, AtomicU64>,
    /// Requests that failed (no answer, a timeout, or a status other than 2xx); each is retried.
    pub failed_attempts: Counter<u64, AtomicU64>,
}

/// The hub's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Open streams (set when scraped).
    pub subscribers_connected: Gauge<i64, AtomicI64>,
    /// Topic selectors of the open streams (set when scraped).
    pub subscriptions: Gauge<i64, AtomicI64>,
    /// Events stored and acknowledged.
    pub events_published: Counter<u64, AtomicU64>,
    /// Publishes recognised as retries of a stored update (by `Idempotency-Key` or by id and
    /// content): answered with the original id, not stored or delivered again.
    pub publish_retries: Counter<u64, AtomicU64>,
    /// Frames queued to subscribers by the fan-out (one per subscriber per event).
    pub events_delivered: Counter<u64, AtomicU64>,
    /// Bytes the fan-out queued for streams not yet woken to write them, each subscriber's
    /// copy counted: at `max_queued_bytes` the hub paces publishers.
    pub fanout_pending_bytes: Gauge<i64, AtomicI64>,
    /// Times the fan-out stopped taking events because [`Self::fanout_pending_bytes`]
    /// reached `max_queued_bytes` (publishers were paced).
    pub fanout_paced: Counter<u64, AtomicU64>,
    /// Events sent from history to reconnecting subscribers.
    pub events_replayed: Counter<u64, AtomicU64>,
    /// Replay pages read from the history store.
    pub history_page_reads: Counter<u64, AtomicU64>,
    /// Replay pages handed to streams: more than [`Self::history_page_reads`] when streams
    /// replaying the same range shared a read.
    pub replay_pages: Counter<u64, AtomicU64>,
    /// Subscribers closed because they read too slowly.
    pub slow_subscribers_disconnected: Counter<u64, AtomicU64>,
    /// Streams ended, by reason.
    pub streams_closed: Family<Reason, Counter<u64, AtomicU64>>,
    /// Requests answered with an error, by reason.
    pub requests_rejected: Family<Reason, Counter<u64, AtomicU64>>,
    /// Time from a publish call to its acknowledgement.
    pub publish_duration_seconds: Histogram,
    /// Time from a publish accepted to its bytes written to a subscriber's socket, one
    /// observation per live delivery (replays are not counted).
    pub delivery_lag: LagHistogram,
    /// Events held by the history (set when scraped).
    pub history_events: Gauge<i64, AtomicI64>,
    /// Publishes waiting in the spool for Redis to come back (set when scraped; 0 without a
    /// spool).
    pub spool_events: Gauge<i64, AtomicI64>,
    /// How long the oldest spooled publish has waited, in seconds (set when scraped).
    pub spool_oldest_age_seconds: Gauge<f64, AtomicU64>,
    /// Bytes of records held by a history that counts them (the durable one), set when
    /// scraped; 0 for the others.
    pub history_bytes: Gauge<i64, AtomicI64>,
    /// The byte cap retention keeps the history under (`--history-max-bytes`), set when
    /// scraped; 0 when there is none. At the cap, the oldest events are being dropped by size.
    pub history_max_bytes: Gauge<i64, AtomicI64>,
    /// 1 when the history (and the Redis transport, if any) can take publishes (set when scraped).
    pub ready: Gauge<i64, AtomicI64>,
    /// Client connections; give these to [`crate::server::ServerOptions::metrics`].
    pub connections: ConnectionMetrics,
    /// Webhook deliveries.
    pub webhook: WebhookMetrics,
    /// Outbox rows published and removed from their table (`serve --outbox`).
    pub outbox_relayed: Counter<u64, AtomicU64>,
    /// Outbox rows that can never be published (a bad topic, too large): marked `failed_at`
    /// in their table and skipped.
    pub outbox_failed: Counter<u64, AtomicU64>,
    /// 1 while the outbox relay is connected to its database (0 without an outbox).
    pub outbox_connected: Gauge<i64, AtomicI64>,
    /// 1 while this instance's relay leads its table (0: a standby, or no outbox).
    pub outbox_leader: Gauge<i64, AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric under the `ssehub` prefix.
    pub fn new() -> Self {
        let mut metrics = Self {
            registry: Registry::with_prefix("ssehub"),
            subscribers_connected: Gauge::default(),
            subscriptions: Gauge::default(),
            events_published: Counter::default(),
            publish_retries: Counter::default(),
            events_delivered: Counter::default(),
            fanout_pending_bytes: Gauge::default(),
            fanout_paced: Counter::default(),
            events_replayed: Counter::default(),
            history_page_reads: Counter::default(),
            replay_pages: Counter::default(),
            slow_subscribers_disconnected: Counter::default(),
            streams_closed: Family::default(),
            requests_rejected: Family::default(),
            // 50 µs to about 3 s.
            publish_duration_seconds: Histogram::new(exponential_buckets(0.000_05, 3.0, 11)),
            delivery_lag: LagHistogram::default(),
            history_events: Gauge::default(),
            spool_events: Gauge::default(),
            spool_oldest_age_seconds: Gauge::default(),
            history_bytes: Gauge::default(),
            history_max_bytes: Gauge::default(),
            ready: Gauge::default(),
            connections: ConnectionMetrics::default(),
            webhook: WebhookMetrics::default(),
            outbox_relayed: Counter::default(),
            outbox_failed: Counter::default(),
            outbox_connected: Gauge::default(),
            outbox_leader: Gauge::default(),
        };
        metrics.registry.register(
            "subscribers_connected",
            "Open SSE streams",
            metrics.subscribers_connected.clone(),
        );
        metrics.registry.register(
            "subscriptions",
            "Topic selectors of the open streams",
            metrics.subscriptions.clone(),
        );
        // Counters get their `_total` suffix from the encoder.
        metrics.registry.register(
            "events_published",
            "Events stored and acknowledged",
            metrics.events_published.clone(),
        );
        metrics.registry.register(
            "publish_retries",
            "Publishes recognised as retries of a stored update, answered and not stored again",
            metrics.publish_retries.clone(),
        );
        metrics.registry.register(
            "events_delivered",
            "Frames queued to subscribers by the fan-out",
            metrics.events_delivered.clone(),
        );
        metrics.registry.register(
            "fanout_pending_bytes",
            "Bytes queued by the fan-out for streams not yet woken, each subscriber's copy counted",
            metrics.fanout_pending_bytes.clone(),
        );
        metrics.registry.register(
            "fanout_paced",
            "Times the fan-out stopped taking events at max_queued_bytes (publishers paced)",
            metrics.fanout_paced.clone(),
        );
        metrics.registry.register(
            "events_replayed",
            "Events sent from history on reconnection",
            metrics.events_replayed.clone(),
        );
        metrics.registry.register(
            "history_page_reads",
            "Replay pages read from the history store",
            metrics.history_page_reads.clone(),
        );
        metrics.registry.register(
            "replay_pages",
            "Replay pages sent to streams (several streams may share one read)",
            metrics.replay_pages.clone(),
        );
        metrics.registry.register(
            "slow_subscribers_disconnected",
            "Subscribers closed because they read too slowly",
            metrics.slow_subscribers_disconnected.clone(),
        );
        metrics.registry.register(
            "streams_closed",
            "Streams ended, by reason",
            metrics.streams_closed.clone(),
        );
        metrics.registry.register(
            "requests_rejected",
            "Requests answered with an error, by reason",
            metrics.requests_rejected.clone(),
        );
        metrics.registry.register(
            "publish_duration_seconds",
            "Time from a publish to its acknowledgement",
            metrics.publish_duration_seconds.clone(),
        );
        metrics.registry.register(
            "delivery_lag_seconds",
            "Time from a publish accepted to its bytes written to a subscriber's socket (live deliveries)",
            metrics.delivery_lag.clone(),
        );
        metrics.registry.register(
            "history_events",
            "Events held by the history",
            metrics.history_events.clone(),
        );
        metrics.registry.register(
            "spool_events",
            "Publishes spooled while Redis is away, waiting to be forwarded",
            metrics.spool_events.clone(),
        );
        metrics.registry.register(
            "spool_oldest_age_seconds",
            "How long the oldest spooled publish has waited",
            metrics.spool_oldest_age_seconds.clone(),
        );
        metrics.registry.register(
            "history_bytes",
            "Bytes of events held by the history (durable history; 0 for the others)",
            metrics.history_bytes.clone(),
        );
        metrics.registry.register(
            "history_max_bytes",
            "Byte cap of the history's retention (0: none, or not a durable history)",
            metrics.history_max_bytes.clone(),
        );
        metrics.registry.register(
            "connections_open",
            "Client connections open",
            metrics.connections.open.clone(),
        );
        metrics.registry.register(
            "connections_rejected",
            "Connections closed at once by a connection limit, by limit",
            metrics.connections.rejected.clone(),
        );
        metrics.registry.register(
            "webhook_queued",
            "Webhook notifications waiting to be delivered",
            metrics.webhook.queued.clone(),
        );
        metrics.registry.register(
            "webhook_dropped",
            "Webhook notifications dropped, oldest first, because the queue was full",
            metrics.webhook.dropped.clone(),
        );
        metrics.registry.register(
            "webhook_delivered",
            "Webhook notifications delivered (a 2xx answer to their batch)",
            metrics.webhook.delivered.clone(),
        );
        metrics.registry.register(
            "webhook_full_lists",
            "Webhook full lists of the active subscriptions delivered",
            metrics.webhook.full_lists.clone(),
        );
        metrics.registry.register(
            "webhook_failed_attempts",
            "Webhook requests that failed (no answer, timeout, non-2xx) and will be retried",
            metrics.webhook.failed_attempts.clone(),
        );
        metrics.registry.register(
            "ready",
            "1 when the history and transport can take publishes",
            metrics.ready.clone(),
        );
        metrics.registry.register(
            "outbox_relayed",
            "Outbox rows published and removed from their table",
            metrics.outbox_relayed.clone(),
        );
        metrics.registry.register(
            "outbox_failed",
            "Outbox rows that cannot be published, marked failed and skipped",
            metrics.outbox_failed.clone(),
        );
        metrics.registry.register(
            "outbox_connected",
            "1 while the outbox relay is connected to its database",
            metrics.outbox_connected.clone(),
        );
        metrics.registry.register(
            "outbox_leader",
            "1 while this instance's outbox relay leads its table",
            metrics.outbox_leader.clone(),
        );
        metrics
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
