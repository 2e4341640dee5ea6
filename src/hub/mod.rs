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

pub mod registry;
pub mod stream;
pub mod subscriber;
pub mod subscription_events;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, Instrument};

use crate::auth::{AuthConfig, SubscriberGrant};
use crate::event::{Event, EventError, EventLimits};
use crate::history::{
    History, HistoryError, MemoryHistory, ReplayFrom, ReplayStart, SharedReads, StoredEvent,
};
use crate::metrics::{Metrics, Reason};
use crate::topic::SelectorCache;
use registry::{RegisterError, Registry};
use stream::ReplayCursor;
pub use stream::SubscriptionStream;
pub use subscriber::{CloseKind, CloseReason, SubscriberId, SubscriberInfo};
use subscriber::{Subscriber, SubscriberQueue};

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
    /// Open streams allowed at once; more are refused with `503` (default 100,000).
    pub max_subscribers: usize,
    /// `topic` selectors allowed in one subscription (default 64).
    pub max_topics_per_subscription: usize,
    /// Limits on published events.
    pub event_limits: EventLimits,
    /// Largest publish request body in bytes (default 1 MiB); larger ones get `413`.
    pub max_publish_bytes: usize,
    /// Keys and the anonymous-subscriber policy.
    pub auth: AuthConfig,
    /// Origins allowed to subscribe and publish from a browser (CORS). `*` allows any origin
    /// but then without credentials (cookies).
    pub cors_origins: Vec<String>,
    /// Origins allowed to publish with the `mercureAuthorization` cookie (CSRF protection);
    /// empty refuses cookie-authorized publishes.
    pub publish_origins: Vec<String>,
    /// Whether subscription events are published and the subscriptions API is served.
    pub subscriptions: bool,
    /// Whether [`crate::http::router`] serves `/metrics` (off when metrics have a listener of
    /// their own, or are disabled).
    pub metrics_on_router: bool,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(15),
            max_lifetime: Some(Duration::from_secs(3600)),
            history_size: 100_000,
            queue_capacity: 4096,
            max_subscribers: 100_000,
            max_topics_per_subscription: 64,
            event_limits: EventLimits::default(),
            max_publish_bytes: 1024 * 1024,
            auth: AuthConfig::default(),
            cors_origins: Vec::new(),
            publish_origins: Vec::new(),
            subscriptions: false,
            metrics_on_router: true,
        }
    }
}

/// A hook called when a stream opens.
pub type OpenHook = Arc<dyn Fn(&SubscriberInfo) + Send + Sync>;
/// A hook called once when a stream ends, with why and how long it lived.
pub type CloseHook = Arc<dyn Fn(&SubscriberInfo, CloseReason, Duration) + Send + Sync>;

/// Emitter lifecycle callbacks. They run on the hub's own paths (the dispatcher, or the task
/// that dropped the stream), so they must be quick and must not block.
#[derive(Clone, Default)]
struct Hooks {
    on_open: Vec<OpenHook>,
    on_close: Vec<CloseHook>,
}

/// What the dispatcher and every stream share: enough to unregister a subscriber, and the
/// metrics they update.
pub(crate) struct Shared {
    registry: Registry,
    hooks: Hooks,
    pub(crate) metrics: Metrics,
    /// Where subscription events go, when `subscriptions` is on (a task publishes them).
    subscription_events: Option<mpsc::UnboundedSender<Event>>,
    /// The newest event dispatched, for the subscriptions API's `lastEventID`.
    last_dispatched: Mutex<Option<Arc<StoredEvent>>>,
}

impl Shared {
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
        for hook in &self.hooks.on_close {
            hook(&subscriber.info, reason, lived);
        }
        self.announce(&subscriber.info, false);
    }

    /// Publishes the subscription events of `info` (Mercure §Subscription Events), if enabled.
    fn announce(&self, info: &SubscriberInfo, active: bool) {
        if let Some(events) = &self.subscription_events {
            for event in subscription_events::subscription_updates(info, active) {
                // The receiver lives as long as the hub's tasks; after that nobody listens.
                let _ = events.send(event);
            }
        }
    }
}

/// Why a publish failed.
#[derive(Debug, Error)]
pub enum PublishError {
    /// The event breaks a rule (400).
    #[error(transparent)]
    Invalid(#[from] EventError),
    /// The history store refused it (503); nothing was delivered.
    #[error(transparent)]
    Unavailable(#[from] HistoryError),
    /// The hub is shutting down (503).
    #[error("the hub is shutting down")]
    ShuttingDown,
}

/// Why a subscription was refused.
#[derive(Debug, Error)]
pub enum SubscribeError {
    /// No `topic` selector (400).
    #[error("missing topic: subscribe with at least one `topic` query parameter")]
    NoTopics,
    /// More selectors than allowed (400).
    #[error("too many topics: {count} given, at most {max} allowed")]
    TooManyTopics {
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The maximum number of open streams is reached (503, retry later).
    #[error("too many open streams: the hub allows {max}")]
    Full {
        /// The limit.
        max: usize,
    },
    /// The hub is shutting down (503).
    #[error("the hub is shutting down")]
    ShuttingDown,
    /// History could not be read (503).
    #[error(transparent)]
    History(#[from] HistoryError),
}

/// A request to subscribe, already authorized.
#[derive(Debug, Clone, Default)]
pub struct SubscribeRequest {
    /// Topic selectors (exact topics, `*`, or URI templates).
    pub topics: Vec<String>,
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
    /// The event's id (generated when the publisher gave none).
    pub id: String,
    /// Its position in this hub's log.
    pub seq: u64,
}

/// Unregisters a subscriber that never got its stream (and runs its close hooks).
struct Registration<'a> {
    shared: &'a Shared,
    id: SubscriberId,
    armed: bool,
    /// The close reason if it never gets a stream: the caller gave up, unless set otherwise.
    reason: CloseReason,
}

impl Registration<'_> {
    /// The stream owns the registration from now on.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.release(self.id, self.reason);
        }
    }
}

struct PublishRequest {
    event: Event,
    ack: oneshot::Sender<Result<u64, PublishError>>,
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

/// Builds a [`Hub`].
pub struct HubBuilder {
    config: HubConfig,
    history: Option<Arc<dyn History>>,
    shutdown: Option<CancellationToken>,
    hooks: Hooks,
}

impl HubBuilder {
    /// Uses this history store instead of the default in-memory one of `history_size` events.
    pub fn history(mut self, history: Arc<dyn History>) -> Self {
        self.history = Some(history);
        self
    }

    /// Ends every stream and stops the hub when `token` is cancelled.
    pub fn shutdown(mut self, token: CancellationToken) -> Self {
        self.shutdown = Some(token);
        self
    }

    /// Calls `hook` when a stream opens.
    pub fn on_open(mut self, hook: impl Fn(&SubscriberInfo) + Send + Sync + 'static) -> Self {
        self.hooks.on_open.push(Arc::new(hook));
        self
    }

    /// Calls `hook` once when a stream ends: timeout ([`CloseReason::Timeout`],
    /// [`CloseReason::TokenExpired`]), completion ([`CloseReason::Closed`],
    /// [`CloseReason::Shutdown`]) or error ([`CloseReason::ClientDisconnected`],
    /// [`CloseReason::SlowConsumer`]).
    pub fn on_close(
        mut self,
        hook: impl Fn(&SubscriberInfo, CloseReason, Duration) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.on_close.push(Arc::new(hook));
        self
    }

    /// Starts the hub's writer and dispatcher tasks. Must run inside a Tokio runtime.
    ///
    /// # Errors
    /// None with the in-memory history; stores that open files or connections report failures
    /// here.
    pub async fn build(self) -> Result<Hub, HistoryError> {
        let config = self.config;
        let history = self
            .history
            .unwrap_or_else(|| Arc::new(MemoryHistory::new(config.history_size)));
        let shutdown = self.shutdown.unwrap_or_default();
        let (subscription_tx, subscription_rx) = if config.subscriptions {
            let (tx, rx) = mpsc::unbounded_channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let shared = Arc::new(Shared {
            registry: Registry::new(64, config.max_subscribers),
            hooks: self.hooks,
            metrics: Metrics::new(),
            subscription_events: subscription_tx,
            last_dispatched: Mutex::new(newest_stored(&history).await),
        });
        let (writer_tx, writer_rx) = mpsc::channel(4096);
        let (dispatch_tx, dispatch_rx) = mpsc::channel(4096);
        let tasks = TaskTracker::new();
        // A shared log feeds this instance every event, its own included; otherwise the writer
        // passes on what it appended.
        let writer_dispatch = match history.clone().feed(dispatch_tx.clone(), shutdown.clone()) {
            Some(feed) => {
                tasks.spawn(feed.instrument(info_span!("hub_feed")));
                None
            }
            None => Some(dispatch_tx),
        };
        tasks.spawn(
            run_writer(
                writer_rx,
                history.clone(),
                writer_dispatch,
                shutdown.clone(),
            )
            .instrument(info_span!("hub_writer")),
        );
        if let Some(events) = subscription_rx {
            tasks.spawn(
                run_subscription_events(events, writer_tx.clone(), shutdown.clone())
                    .instrument(info_span!("hub_subscription_events")),
            );
        }
        tasks.spawn(
            run_dispatcher(dispatch_rx, shared.clone()).instrument(info_span!("hub_dispatcher")),
        );
        let replay_reads = Arc::new(SharedReads::new(
            history.clone(),
            shared.metrics.history_page_reads.clone(),
            shared.metrics.replay_pages.clone(),
        ));
        tasks.spawn(
            expire_replay_pages(replay_reads.clone(), shutdown.clone())
                .instrument(info_span!("hub_replay_pages")),
        );
        tasks.close();
        Ok(Hub {
            inner: Arc::new(HubInner {
                config,
                shared,
                history,
                replay_reads,
                writer: writer_tx,
                selectors: SelectorCache::new(1024),
                next_subscriber_id: AtomicU64::new(1),
                shutdown,
                tasks,
            }),
        })
    }
}

/// Drops cached replay pages nobody asked for lately, every second, until shutdown.
async fn expire_replay_pages(reads: Arc<SharedReads>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while shutdown.run_until_cancelled(tick.tick()).await.is_some() {
        reads.expire_idle(crate::history::shared_reads::IDLE_EXPIRY);
    }
}

/// Appends batches to the history in arrival order, acknowledges them, and passes them on to
/// the dispatcher. The only writer of the log, so log order is dispatch order.
async fn run_writer(
    mut requests: mpsc::Receiver<PublishRequest>,
    history: Arc<dyn History>,
    // `None` when the history has a feed: then every instance dispatches what it reads back
    // from the shared log, including its own events.
    dispatch: Option<mpsc::Sender<Arc<StoredEvent>>>,
    shutdown: CancellationToken,
) {
    const MAX_BATCH: usize = 256;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // Time-based retention runs when the writer is otherwise idle.
    let mut trim_tick = tokio::time::interval(Duration::from_secs(1));
    trim_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            // Shutdown: stop taking publishes; queued ones fail with `ShuttingDown` when their
            // acknowledgement sender is dropped.
            () = shutdown.cancelled() => break,
            // Wait for at least one publish, then take whatever else is already queued: one
            // append (and, for the durable store, one fsync) for all of them.
            received = requests.recv_many(&mut batch, MAX_BATCH) => {
                if received == 0 {
                    break; // every Hub handle is gone
                }
            }
            _ = trim_tick.tick() => {
                if let Err(error) = history.clone().trim().await {
                    tracing::warn!(%error, "history retention failed");
                }
                continue;
            }
        }
        let (events, acks): (Vec<_>, Vec<_>) = batch.drain(..).map(|r| (r.event, r.ack)).unzip();
        match history.clone().append(events).await {
            Ok(stored) => {
                for (event, ack) in stored.into_iter().zip(acks) {
                    // The publisher may have given up waiting; the event is stored regardless.
                    let _ = ack.send(Ok(event.seq));
                    if let Some(dispatch) = &dispatch {
                        if dispatch.send(event).await.is_err() {
                            return;
                        }
                    }
                }
            }
            Err(error) => {
                let message = error.to_string();
                for ack in acks {
                    let _ = ack.send(Err(PublishError::Unavailable(HistoryError::Unavailable(
                        message.clone(),
                    ))));
                }
            }
        }
    }
}

/// The newest event the history holds (after a restart, what `lastEventID` starts from).
async fn newest_stored(history: &Arc<dyn History>) -> Option<Arc<StoredEvent>> {
    let start = history.clone().locate(ReplayFrom::Earliest).await.ok()?;
    if start.through_seq == 0 {
        return None;
    }
    // Sequence numbers only grow, so the page just before `through_seq` holds that event alone.
    let page = history
        .clone()
        .read_page(start.through_seq - 1, start.through_seq, 1)
        .await
        .ok()?;
    page.events.last().cloned()
}

/// Publishes subscription events (they go through the writer like any other update, so they are
/// stored, replayable and, with Redis, seen by every instance).
async fn run_subscription_events(
    mut events: mpsc::UnboundedReceiver<Event>,
    writer: mpsc::Sender<PublishRequest>,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => break,
            event = events.recv() => match event {
                Some(event) => event,
                None => break,
            },
        };
        // Nobody waits for the acknowledgement.
        let (ack, _) = oneshot::channel();
        if writer.send(PublishRequest { event, ack }).await.is_err() {
            break;
        }
    }
}

/// Fans stored events out to subscribers, in log order.
///
/// It ends when the writer does (shutdown, or every `Hub` handle dropped), after delivering
/// every event already acknowledged, and then closes every stream.
async fn run_dispatcher(mut events: mpsc::Receiver<Arc<StoredEvent>>, shared: Arc<Shared>) {
    let mut overflowed = Vec::new();
    while let Some(stored) = events.recv().await {
        let fan_out = shared.registry.dispatch(&stored, &mut overflowed);
        *shared
            .last_dispatched
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(stored.clone());
        shared
            .metrics
            .events_delivered
            .inc_by(fan_out.delivered as u64);
        for id in overflowed.drain(..) {
            debug!(subscriber = id, "queue full: disconnecting slow subscriber");
            shared.release(id, CloseReason::SlowConsumer);
        }
    }
    for subscriber in shared.registry.close() {
        subscriber.queue.close(CloseReason::Shutdown);
        shared.closed(&subscriber, CloseReason::Shutdown);
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
        }
    }

    /// The hub's settings.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// The compiled-selector cache shared by subscriptions and token checks.
    pub fn selector_cache(&self) -> &SelectorCache {
        &self.inner.selectors
    }

    /// Validates `event`, stores it in history, and returns once it is stored; delivery to
    /// subscribers follows.
    ///
    /// # Errors
    /// [`PublishError::Invalid`] for a bad event (nothing is stored),
    /// [`PublishError::Unavailable`] when history refused it, [`PublishError::ShuttingDown`].
    pub async fn publish(&self, event: Event) -> Result<PublishReceipt, PublishError> {
        event.validate(&self.inner.config.event_limits)?;
        if self.inner.shutdown.is_cancelled() {
            return Err(PublishError::ShuttingDown);
        }
        let started = std::time::Instant::now();
        let id = event.id.clone();
        let (ack, stored) = oneshot::channel();
        self.inner
            .writer
            .send(PublishRequest { event, ack })
            .await
            .map_err(|_| PublishError::ShuttingDown)?;
        let seq = stored.await.map_err(|_| PublishError::ShuttingDown)??;
        let metrics = &self.inner.shared.metrics;
        metrics.events_published.inc();
        metrics
            .publish_duration_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(PublishReceipt { id, seq })
    }

    /// Registers a subscriber, then replays history after its `Last-Event-ID`.
    ///
    /// # Errors
    /// See [`SubscribeError`]; nothing stays registered on error.
    pub async fn subscribe(
        &self,
        request: SubscribeRequest,
    ) -> Result<Subscription, SubscribeError> {
        let config = &self.inner.config;
        if request.topics.is_empty() {
            return Err(SubscribeError::NoTopics);
        }
        if request.topics.len() > config.max_topics_per_subscription {
            return Err(SubscribeError::TooManyTopics {
                count: request.topics.len(),
                max: config.max_topics_per_subscription,
            });
        }
        // Compiling URI templates costs up to milliseconds each: off the async workers.
        let (topics, selectors) = if request.topics.iter().any(|t| t.contains('{')) {
            let hub = self.clone();
            let topics = request.topics;
            tokio::task::spawn_blocking(move || {
                let selectors: Vec<_> = topics.iter().map(|t| hub.inner.selectors.get(t)).collect();
                (topics, selectors)
            })
            .await
            .map_err(|e| SubscribeError::History(HistoryError::Unavailable(e.to_string())))?
        } else {
            let selectors = request
                .topics
                .iter()
                .map(|t| self.inner.selectors.get(t))
                .collect();
            (request.topics, selectors)
        };
        let exact_only = selectors.iter().all(|s| s.as_exact().is_some());
        let id = self
            .inner
            .next_subscriber_id
            .fetch_add(1, Ordering::Relaxed);
        let ends_at = self.stream_deadline(&request.grant);
        let subscriber = Arc::new(Subscriber {
            info: SubscriberInfo {
                id,
                uri: format!("urn:uuid:{}", uuid::Uuid::now_v7()),
                topics,
                remote_addr: request.remote_addr,
                payload: request.grant.payload.clone(),
                connected_at: SystemTime::now(),
            },
            selectors,
            exact_only,
            grant: request.grant,
            queue: SubscriberQueue::new(config.queue_capacity),
        });
        // Register first: events published from now on are queued for this subscriber, so the
        // history read below cannot miss one.
        self.inner
            .shared
            .registry
            .insert(subscriber.clone())
            .map_err(|e| match e {
                RegisterError::Full => SubscribeError::Full {
                    max: config.max_subscribers,
                },
                RegisterError::ShuttingDown => SubscribeError::ShuttingDown,
            })?;
        // Until the stream owns the registration, this guard does: an error, a panicking hook or
        // the caller dropping this future (the client left during the history read) unregisters.
        let mut registration = Registration {
            shared: &self.inner.shared,
            id,
            armed: true,
            reason: CloseReason::ClientDisconnected,
        };
        // Open hooks run as soon as the subscriber is registered, so that any close (which can
        // come from the dispatcher from now on) follows its open.
        for hook in &self.inner.shared.hooks.on_open {
            hook(&subscriber.info);
        }
        self.inner.shared.announce(&subscriber.info, true);
        let from = request
            .last_event_id
            .clone()
            .map(ReplayFrom::from_last_event_id);
        let from_earliest = from == Some(ReplayFrom::Earliest);
        let start = match from {
            None => None,
            Some(from) => {
                let located = self.inner.history.clone().locate(from).await;
                match located {
                    Ok(start) => Some(start),
                    Err(error) => {
                        registration.reason = CloseReason::HistoryUnavailable;
                        return Err(error.into());
                    }
                }
            }
        };
        let skip_through_seq = start.as_ref().map_or(0, |s| s.through_seq);
        let (replay, resumed_after) = match start {
            None => (None, None),
            Some(ReplayStart {
                after_seq,
                through_seq,
                resumed_after,
            }) => (
                Some(ReplayCursor::new(
                    self.inner.replay_reads.clone(),
                    after_seq,
                    through_seq,
                    from_earliest,
                )),
                Some(resumed_after),
            ),
        };
        info!(
            subscriber = id,
            remote = ?subscriber.info.remote_addr,
            topics = subscriber.info.topics.len(),
            resumed_after = resumed_after.as_deref().unwrap_or("-"),
            "stream opened"
        );
        registration.disarm();
        let stream = SubscriptionStream::new(
            self.inner.shared.clone(),
            subscriber,
            replay,
            skip_through_seq,
            config.heartbeat,
            ends_at,
        );
        Ok(Subscription {
            resumed_after,
            stream,
        })
    }

    /// The earlier of the maximum lifetime and the token's expiry.
    fn stream_deadline(
        &self,
        grant: &SubscriberGrant,
    ) -> Option<(tokio::time::Instant, CloseReason)> {
        let now = tokio::time::Instant::now();
        let lifetime = self
            .inner
            .config
            .max_lifetime
            .filter(|d| !d.is_zero())
            .map(|d| (now + d, CloseReason::Timeout));
        let expiry = grant
            .time_left()
            .map(|d| (now + d, CloseReason::TokenExpired));
        match (lifetime, expiry) {
            (Some(l), Some(e)) => Some(if e.0 <= l.0 { e } else { l }),
            (l, e) => l.or(e),
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
    /// Why not, for `/readyz`.
    pub async fn check_ready(&self) -> Result<(), String> {
        if self.is_shutting_down() {
            return Err("shutting down".into());
        }
        self.inner
            .history
            .clone()
            .check()
            .await
            .map_err(|e| e.to_string())
    }

    /// Updates the scrape-time gauges and encodes every metric (OpenMetrics text).
    pub async fn render_metrics(&self) -> String {
        let metrics = &self.inner.shared.metrics;
        let registry = &self.inner.shared.registry;
        metrics.subscribers_connected.set(registry.len() as i64);
        metrics.subscriptions.set(registry.subscriptions() as i64);
        metrics.history_events.set(self.inner.history.len() as i64);
        metrics
            .ready
            .set(i64::from(self.check_ready().await.is_ok()));
        metrics.encode()
    }

    /// Every open stream's description.
    pub fn subscribers(&self) -> Vec<SubscriberInfo> {
        self.inner
            .shared
            .registry
            .snapshot()
            .iter()
            .map(|s| s.info.clone())
            .collect()
    }

    /// The id of the newest event dispatched, or `earliest` when there was none.
    pub fn last_event_id(&self) -> String {
        self.inner
            .shared
            .last_dispatched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or_else(|| crate::event::EARLIEST.to_owned(), |e| e.id.clone())
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
