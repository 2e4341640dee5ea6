//! The hub: the registry of subscribers, the publish path and the emitter lifecycle.
//!
//! The path of one event: [`Hub::publish`] validates it and hands it to the single **writer**
//! task, which appends batches to [`History`] (one append, and later one fsync, per batch) and
//! acknowledges each publisher once its event is stored; the writer passes stored events, in
//! log order, to the **dispatcher** task, which pushes the event's one encoded frame into the
//! bounded queue of every subscriber that wants it ([`registry`]). Fan-out runs behind the
//! acknowledgement, so under load events queue up and reach each socket in one write.
//!
//! The path of one subscriber: [`Hub::subscribe`] registers it *first*, then reads the history
//! after its `Last-Event-ID`, and its [`SubscriptionStream`] drops live events the replay already
//! covered (by sequence number): no gap, no duplicate. Dropping the stream unregisters it.

mod builder;
mod config;
mod dispatcher;
mod error;
mod feed;
pub mod registry;
pub mod stream;
mod subscribe;
pub mod subscriber;
pub mod subscription_events;
mod writer;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::auth::SubscriberGrant;
use crate::event::Event;
use crate::history::{Append, History, KeyClaim, SharedReads, SpoolStatus, StoredEvent};
use crate::idempotency::IdempotencyKey;
use crate::metrics::{Metrics, Reason};
use crate::telemetry::{Stamp, TraceIds, Tracing};
use crate::topic::SelectorCache;
use builder::Hooks;
pub use builder::{CloseHook, HubBuilder, OpenHook};
pub use config::HubConfig;
pub use error::{NotReady, PublishError, SubscribeError};
use registry::Registry;
pub use stream::SubscriptionStream;
use subscriber::Subscriber;
pub use subscriber::{CloseKind, CloseReason, Selection, SubscriberId, SubscriberInfo};
use writer::PublishRequest;

/// What the dispatcher and every stream share: enough to unregister a subscriber, and the
/// metrics they update.
pub(crate) struct Shared {
    registry: Registry,
    hooks: Hooks,
    pub(crate) metrics: Metrics,
    /// Where subscription events go, when `subscriptions` is on (a task publishes them).
    subscription_events: Option<mpsc::UnboundedSender<Event>>,
    /// Where webhook notifications go, when a webhook is configured (its delivery task posts
    /// them).
    #[cfg(feature = "webhook")]
    webhook: Option<Arc<crate::webhook::NotificationQueue>>,
    /// The newest event dispatched: the subscriptions API's `lastEventID`, and where a stream
    /// opened without a `Last-Event-ID` starts ([`Shared::dispatch_cursor`]).
    last_dispatched: Mutex<Option<Arc<StoredEvent>>>,
    /// Spans of traced events (off by default).
    pub(crate) tracing: Tracing,
    /// The outbox relay's database, as [`Hub::set_outbox_reachable`] last said: 0 no relay,
    /// 1 reachable, 2 unreachable.
    pub(crate) outbox: std::sync::atomic::AtomicU8,
}

impl Shared {
    /// The sequence number and id of the newest event dispatched (`0` and `earliest` before
    /// any). The dispatcher sets it after queueing the event to the registered subscribers, so
    /// a subscriber registered before this call has been queued every later event, and maybe
    /// this one too: it skips live events up to this number.
    pub(crate) fn dispatch_cursor(&self) -> (u64, String) {
        self.last_dispatched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or_else(
                || (0, crate::event::EARLIEST.to_owned()),
                |event| (event.seq, event.id.clone()),
            )
    }

    /// Every registered subscriber's description.
    pub(crate) fn subscriber_infos(&self) -> Vec<SubscriberInfo> {
        self.registry
            .snapshot()
            .iter()
            .map(|s| s.info.clone())
            .collect()
    }

    /// Takes a subscriber out of the registry, closes its queue and runs the close hooks; does
    /// nothing if it already left (so hooks run exactly once).
    pub(crate) fn release(&self, id: SubscriberId, reason: CloseReason) {
        let Some(subscriber) = self.registry.remove(id) else {
            return;
        };
        subscriber.queue.close(reason);
        self.closed(&subscriber, reason);
    }

    fn closed(&self, subscriber: &Subscriber, reason: CloseReason) {
        let lived = subscriber.info.connected_at.elapsed().unwrap_or_default();
        info!(
            subscriber = subscriber.info.id,
            remote = ?subscriber.info.remote_addr,
            reason = reason.as_str(),
            lived_ms = lived.as_millis() as u64,
            "stream closed"
        );
        self.metrics
            .streams_closed
            .get_or_create(&Reason {
                reason: reason.as_str(),
            })
            .inc();
        if reason == CloseReason::SlowConsumer {
            self.metrics.slow_subscribers_disconnected.inc();
        }
        subscriber.announcements.closed(
            reason,
            || self.run_open(subscriber),
            || self.run_close(subscriber, reason, lived),
        );
    }

    /// Runs the open hooks and announces the opening (subscription events, webhook), unless the
    /// subscriber was closed already (then its opening ran before its close); and then its
    /// close, if it came while they ran ([`subscriber::Announcements`]).
    fn opened(&self, subscriber: &Subscriber) {
        subscriber.announcements.opened(
            || self.run_open(subscriber),
            |reason| {
                let lived = subscriber.info.connected_at.elapsed().unwrap_or_default();
                self.run_close(subscriber, reason, lived);
            },
        );
    }

    fn run_open(&self, subscriber: &Subscriber) {
        for hook in &self.hooks.on_open {
            hook(&subscriber.info);
        }
        self.announce(&subscriber.info, None);
    }

    fn run_close(&self, subscriber: &Subscriber, reason: CloseReason, lived: Duration) {
        for hook in &self.hooks.on_close {
            hook(&subscriber.info, reason, lived);
        }
        self.announce(&subscriber.info, Some(reason));
    }

    /// Publishes the subscription events of `info` (Mercure §Subscription Events), if enabled,
    /// and queues its webhook notifications, if configured: opened (`closed` is `None`), or
    /// closed for that reason.
    fn announce(&self, info: &SubscriberInfo, closed: Option<CloseReason>) {
        if let Some(events) = &self.subscription_events {
            for event in subscription_events::subscription_updates(info, closed.is_none()) {
                // The receiver lives as long as the hub's tasks; after that nobody listens.
                let _ = events.send(event);
            }
        }
        #[cfg(feature = "webhook")]
        if let Some(webhook) = &self.webhook {
            webhook.push_change(info, closed);
        }
    }

    /// No more webhook notifications will come (the dispatcher closed every subscriber at
    /// shutdown): the delivery task sends what is queued and ends.
    fn end_announcements(&self) {
        #[cfg(feature = "webhook")]
        if let Some(webhook) = &self.webhook {
            webhook.close();
        }
    }
}

/// A request to subscribe, already authorized.
#[derive(Debug, Clone, Default)]
pub struct SubscribeRequest {
    /// draft-07 topic selectors (exact topics, `*`, or URI templates).
    pub topics: Vec<String>,
    /// draft-08 topic matchers (`match`: exact; `match_urlpattern`: URL patterns), beside or
    /// instead of `topics`: one subscription is made of both, counted together against
    /// [`HubConfig::max_topics_per_subscription`].
    pub matchers: Vec<crate::topic::TopicMatcher>,
    /// Resume after this event id (`earliest` for everything the history has).
    pub last_event_id: Option<String>,
    /// What the subscriber's token allows (private updates, expiry).
    pub grant: SubscriberGrant,
    /// The peer address, for logs and hooks.
    pub remote_addr: Option<SocketAddr>,
}

/// An open subscription.
#[derive(Debug)]
pub struct Subscription {
    /// The value of the `Last-Event-ID` response header, when the request carried one: the
    /// id replay resumed after, or `earliest`.
    pub resumed_after: Option<String>,
    /// The frames to write, replay first. Dropping it unsubscribes.
    pub stream: SubscriptionStream,
}

/// The acknowledgement of a stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishReceipt {
    /// The event's id (generated when the publisher gave none); for a retry, the original's.
    pub id: String,
    /// Its position in this hub's log (0 for a retry recognised by a key whose event retention
    /// has dropped since).
    pub seq: u64,
    /// Whether the publish was a retry of an update already stored (its `Idempotency-Key` seen
    /// within the window, or its id held with the same content): nothing was stored or
    /// delivered again ([`crate::idempotency`]).
    pub retry: bool,
}

struct HubInner {
    config: HubConfig,
    shared: Arc<Shared>,
    history: Arc<dyn History>,
    /// Replay page reads, shared by the streams replaying the same range.
    replay_reads: Arc<SharedReads>,
    writer: mpsc::Sender<PublishRequest>,
    selectors: SelectorCache,
    next_subscriber_id: AtomicU64,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Drop for HubInner {
    /// The last handle gone: stop the hub's tasks (they hold no handle, so nothing else would).
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A running hub. Cheap to clone; every clone is the same hub.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use futures_util::StreamExt;
/// use ssehub::{Event, Hub, HubConfig, SubscribeRequest};
///
/// let hub = Hub::builder(HubConfig::default()).build().await?;
/// let mut subscription = hub
///     .subscribe(SubscribeRequest { topics: vec!["/orders/{id}".into()], ..Default::default() })
///     .await?;
/// hub.publish(Event::new("/orders/42", "shipped")).await?;
/// // First the stream's cursor (nothing was published before it opened), then the event.
/// let cursor = subscription.stream.next().await.expect("a frame");
/// assert_eq!(&cursor[..], b"id: earliest\n\n");
/// let frame = subscription.stream.next().await.expect("a frame");
/// assert!(std::str::from_utf8(&frame)?.ends_with("data: shipped\n\n"));
/// hub.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("subscribers", &self.subscriber_count())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// Starts building a hub with `config`.
    pub fn builder(config: HubConfig) -> HubBuilder {
        HubBuilder {
            config,
            history: None,
            shutdown: None,
            hooks: Hooks::default(),
            tracing: Tracing::off(),
            #[cfg(feature = "webhook")]
            webhook: None,
        }
    }

    /// The hub's settings, as built. [`HubConfig::max_subscribers`] may since have been
    /// changed by [`Self::set_max_subscribers`]: [`Self::max_subscribers`] says what is in
    /// effect.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// The most subscribers the hub takes now.
    pub fn max_subscribers(&self) -> usize {
        self.inner.shared.registry.max_subscribers()
    }

    /// Changes [`HubConfig::max_subscribers`] while the hub runs (a reload): a lower limit
    /// refuses new subscriptions until enough streams have ended, and ends none.
    pub fn set_max_subscribers(&self, max: usize) {
        self.inner.shared.registry.set_max_subscribers(max.max(1));
    }

    /// The compiled-selector cache shared by subscriptions and token checks.
    pub fn selector_cache(&self) -> &SelectorCache {
        &self.inner.selectors
    }

    /// Validates `event`, stores it in history, and returns once it is stored; delivery to
    /// subscribers follows. A publish whose id is already in history with the same content is a
    /// retry: it is answered with [`PublishReceipt::retry`] set, and not stored or delivered
    /// again.
    ///
    /// # Errors
    /// [`PublishError::Invalid`] for a bad event (nothing is stored),
    /// [`PublishError::History`] when history did not store it, [`PublishError::ShuttingDown`].
    pub async fn publish(&self, event: Event) -> Result<PublishReceipt, PublishError> {
        self.publish_with_key(event, None).await
    }

    /// [`Self::publish`] with the publisher's `Idempotency-Key`: a publish with a key seen
    /// within [`HubConfig::idempotency_window`] is a retry of the update it was first used for,
    /// answered with that update's id ([`crate::idempotency`]).
    ///
    /// # Errors
    /// As [`Self::publish`], and [`PublishError::KeyReused`] when the key was used for an
    /// update with other content.
    pub async fn publish_with_key(
        &self,
        event: Event,
        key: Option<IdempotencyKey>,
    ) -> Result<PublishReceipt, PublishError> {
        self.publish_traced(event, key, None).await
    }

    /// [`Self::publish_with_key`] as part of the trace `trace` (the publish span, from
    /// [`crate::telemetry::Tracing::publish`]): the store, the dispatch and sampled
    /// deliveries get spans in it.
    ///
    /// # Errors
    /// As [`Self::publish_with_key`].
    pub async fn publish_traced(
        &self,
        event: Event,
        key: Option<IdempotencyKey>,
        trace: Option<TraceIds>,
    ) -> Result<PublishReceipt, PublishError> {
        let started = std::time::Instant::now();
        let stored = self.enqueue(event, key, trace).await?;
        self.receive(stored, started).await
    }

    /// Publishes `updates` (each with its optional `Idempotency-Key`) in their order: all are
    /// handed to the writer before the first acknowledgement is awaited, so they are stored in
    /// one or few batches and delivered in this order. Returns one result per update, in order;
    /// an update that failed does not stop the ones after it (a caller that needs "all or
    /// nothing after the first failure" stops at the first `Err`).
    ///
    /// # Errors
    /// Each element: as [`Self::publish_with_key`].
    pub async fn publish_all(
        &self,
        updates: Vec<(Event, Option<IdempotencyKey>)>,
    ) -> Vec<Result<PublishReceipt, PublishError>> {
        let started = std::time::Instant::now();
        let mut pending = Vec::with_capacity(updates.len());
        for (event, key) in updates {
            pending.push(self.enqueue(event, key, None).await);
        }
        let mut receipts = Vec::with_capacity(pending.len());
        for stored in pending {
            receipts.push(match stored {
                Ok(stored) => self.receive(stored, started).await,
                Err(error) => Err(error),
            });
        }
        receipts
    }

    /// Validates `event` and hands it to the writer; the receiver gets its receipt.
    async fn enqueue(
        &self,
        event: Event,
        key: Option<IdempotencyKey>,
        trace: Option<TraceIds>,
    ) -> Result<oneshot::Receiver<Result<PublishReceipt, PublishError>>, PublishError> {
        event.validate(&self.inner.config.event_limits)?;
        if self.inner.shutdown.is_cancelled() {
            return Err(PublishError::ShuttingDown);
        }
        let (ack, stored) = oneshot::channel();
        let window = self.inner.config.idempotency_window;
        let append = Append {
            event,
            key: key.map(|key| KeyClaim { key, window }),
            stamp: Stamp::now(trace),
        };
        self.inner
            .writer
            .send(PublishRequest { append, ack })
            .await
            .map_err(|_| PublishError::ShuttingDown)?;
        Ok(stored)
    }

    /// Awaits the writer's answer for one enqueued publish and counts it.
    async fn receive(
        &self,
        stored: oneshot::Receiver<Result<PublishReceipt, PublishError>>,
        started: std::time::Instant,
    ) -> Result<PublishReceipt, PublishError> {
        let receipt = stored.await.map_err(|_| PublishError::ShuttingDown)??;
        let metrics = &self.inner.shared.metrics;
        if receipt.retry {
            metrics.publish_retries.inc();
        } else {
            metrics.events_published.inc();
        }
        metrics
            .publish_duration_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(receipt)
    }

    /// The hub's tracer (off unless the builder was given one).
    pub fn tracing(&self) -> &Tracing {
        &self.inner.shared.tracing
    }

    /// Says whether the database of an outbox relay feeding this hub is reachable, for
    /// `/readyz` ("degraded" while it is not: the hub serves, the rows wait in their table).
    pub fn set_outbox_reachable(&self, reachable: bool) {
        let state = if reachable { 1 } else { 2 };
        self.inner
            .shared
            .outbox
            .store(state, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the outbox relay's database is reachable; `None` without a relay.
    pub fn outbox_reachable(&self) -> Option<bool> {
        match self
            .inner
            .shared
            .outbox
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            0 => None,
            state => Some(state == 1),
        }
    }

    /// The hub's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.shared.metrics
    }

    /// Whether the hub can take publishes: not shutting down, and its history (and transport)
    /// answers.
    ///
    /// # Errors
    /// Why not, for `/readyz`: [`NotReady`].
    pub async fn check_ready(&self) -> Result<(), NotReady> {
        if self.is_shutting_down() {
            return Err(NotReady::ShuttingDown);
        }
        Ok(self.inner.history.clone().check().await?)
    }

    /// Updates the scrape-time gauges and encodes every metric (OpenMetrics text).
    pub async fn render_metrics(&self) -> String {
        let metrics = &self.inner.shared.metrics;
        let registry = &self.inner.shared.registry;
        metrics.subscribers_connected.set(registry.len() as i64);
        metrics.subscriptions.set(registry.subscriptions() as i64);
        metrics.history_events.set(self.inner.history.len() as i64);
        let spool = self.spool_status();
        metrics
            .spool_events
            .set(spool.map_or(0, |s| s.events as i64));
        metrics.spool_oldest_age_seconds.set(
            spool
                .and_then(|s| s.oldest_age)
                .map_or(0.0, |age| age.as_secs_f64()),
        );
        let bytes = self.inner.history.stored_bytes();
        let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        metrics
            .history_bytes
            .set(bytes.map_or(0, |bytes| gauge(bytes.held)));
        metrics
            .history_max_bytes
            .set(bytes.and_then(|bytes| bytes.max).map_or(0, gauge));
        metrics
            .ready
            .set(i64::from(self.check_ready().await.is_ok()));
        metrics.encode()
    }

    /// The spool's state, when the history spools publishes while Redis is away.
    pub fn spool_status(&self) -> Option<SpoolStatus> {
        self.inner.history.spool_status()
    }

    /// Every open stream's description.
    pub fn subscribers(&self) -> Vec<SubscriberInfo> {
        self.inner.shared.subscriber_infos()
    }

    /// The id of the newest event dispatched, or `earliest` when there was none.
    pub fn last_event_id(&self) -> String {
        self.inner.shared.dispatch_cursor().1
    }

    /// How many streams are open.
    pub fn subscriber_count(&self) -> usize {
        self.inner.shared.registry.len()
    }

    /// Ends one stream ([`CloseReason::Closed`]). Returns whether it was open.
    pub fn close_subscriber(&self, id: SubscriberId) -> bool {
        let open = self.inner.shared.registry.get(id).is_some();
        self.inner.shared.release(id, CloseReason::Closed);
        open
    }

    /// How many events the history holds.
    pub fn history_len(&self) -> usize {
        self.inner.history.len()
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutdown.is_cancelled() || self.inner.shared.registry.is_closed()
    }

    /// Stops taking publishes, ends every stream ([`CloseReason::Shutdown`]) and waits for the
    /// hub's tasks to finish.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tasks.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hub_that_is_shutting_down_is_not_ready() {
        let hub = Hub::builder(HubConfig::default())
            .build()
            .await
            .expect("hub");
        assert!(hub.check_ready().await.is_ok());
        hub.shutdown().await;
        assert!(matches!(
            hub.check_ready().await,
            Err(NotReady::ShuttingDown)
        ));
    }
}
