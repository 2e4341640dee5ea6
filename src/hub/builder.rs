//! Building a [`Hub`]: its store, its shutdown token, the lifecycle hooks, and the tasks it
//! starts (writer, dispatcher, feed of a shared log, subscription events, webhook delivery,
//! replay-page expiry).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info_span, Instrument};

use super::dispatcher::run_dispatcher;
use super::registry::Registry;
use super::writer::{run_subscription_events, run_writer, AfterAppend};
use super::{CloseReason, Hub, HubConfig, HubInner, Shared, SubscriberInfo};
use crate::history::{
    History, HistoryError, HistoryRole, MemoryHistory, ReplayFrom, SharedReads, StoredEvent,
};
use crate::metrics::Metrics;
use crate::telemetry::Tracing;
use crate::topic::SelectorCache;

/// Stored events waiting between the writer (or a shared log's feed) and the dispatcher.
const DISPATCH_QUEUE_EVENTS: usize = 2;

/// A hook called when a stream opens.
pub type OpenHook = Arc<dyn Fn(&SubscriberInfo) + Send + Sync>;
/// A hook called once when a stream ends, with why and how long it lived.
pub type CloseHook = Arc<dyn Fn(&SubscriberInfo, CloseReason, Duration) + Send + Sync>;

/// Emitter lifecycle callbacks. They run on the hub's own paths (the dispatcher, or the task
/// that dropped the stream), so they must be quick and must not block.
#[derive(Clone, Default)]
pub(super) struct Hooks {
    pub(super) on_open: Vec<OpenHook>,
    pub(super) on_close: Vec<CloseHook>,
}

/// Builds a [`Hub`].
pub struct HubBuilder {
    pub(super) config: HubConfig,
    pub(super) history: Option<Arc<dyn History>>,
    pub(super) shutdown: Option<CancellationToken>,
    pub(super) hooks: Hooks,
    pub(super) tracing: Tracing,
    #[cfg(feature = "webhook")]
    pub(super) webhook: Option<crate::webhook::Webhook>,
}

impl HubBuilder {
    /// Makes spans of each publish with `tracing` ([`crate::telemetry`]; off by default).
    pub fn tracing(mut self, tracing: Tracing) -> Self {
        self.tracing = tracing;
        self
    }

    /// Posts subscription notifications (opened, closed) and periodic full lists of the open
    /// subscriptions to `webhook`'s URL, signed ([`crate::webhook`], docs/WEBHOOKS.md).
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// use ssehub::webhook::{Webhook, WebhookConfig};
    /// use ssehub::{Hub, HubConfig};
    ///
    /// let config = WebhookConfig::new("https://app.example/hooks/ssehub", "a shared secret");
    /// let hub = Hub::builder(HubConfig::default())
    ///     .webhook(Webhook::new(config)?)
    ///     .build()
    ///     .await?;
    /// # hub.shutdown().await; Ok(()) }
    /// ```
    #[cfg(feature = "webhook")]
    pub fn webhook(mut self, webhook: crate::webhook::Webhook) -> Self {
        self.webhook = Some(webhook);
        self
    }

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

    /// Calls `hook` when a stream opens, before any close hook of that stream. A hook may end
    /// the stream it sees ([`Hub::close_subscriber`](super::Hub::close_subscriber)): the close
    /// hooks then run once every open hook has.
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
        let metrics = Metrics::new();
        #[cfg(feature = "webhook")]
        let webhook = self
            .webhook
            .map(|webhook| webhook.start(metrics.webhook.clone()));
        let shared = Arc::new(Shared {
            registry: Registry::new(64, config.max_subscribers, config.shared_feeds),
            hooks: self.hooks,
            metrics,
            subscription_events: subscription_tx,
            #[cfg(feature = "webhook")]
            webhook: webhook.as_ref().map(|(queue, _)| queue.clone()),
            last_dispatched: Mutex::new(newest_stored(&history).await),
            tracing: self.tracing,
            outbox: Default::default(),
        });
        let (writer_tx, writer_rx) = mpsc::channel(4096);
        // Stored events on their way to the fan-out. Few: when the fan-out lags, the writer
        // waits here rather than acknowledging publishes whose delivery would lag further.
        let (dispatch_tx, dispatch_rx) = mpsc::channel(DISPATCH_QUEUE_EVENTS);
        let tasks = TaskTracker::new();
        // A shared log feeds this instance every event, its own included; a local one leaves
        // it to the writer to pass on what it appended.
        let after_append = match history.clone().role() {
            HistoryRole::SharedLog(log) => {
                tasks.spawn(
                    log.feed(dispatch_tx, shutdown.clone())
                        .instrument(info_span!("hub_feed")),
                );
                AfterAppend::LeaveToFeed
            }
            HistoryRole::Local => AfterAppend::Dispatch(dispatch_tx),
        };
        tasks.spawn(
            run_writer(
                writer_rx,
                history.clone(),
                after_append,
                shared.tracing.clone(),
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
            run_dispatcher(dispatch_rx, shared.clone(), config.max_queued_bytes)
                .instrument(info_span!("hub_dispatcher")),
        );
        #[cfg(feature = "webhook")]
        if let Some((_, delivery)) = webhook {
            let subscriptions = shared.clone();
            tasks.spawn(
                delivery
                    .run(move || subscriptions.subscriber_infos(), shutdown.clone())
                    .instrument(info_span!("hub_webhook")),
            );
        }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::telemetry::LiveEvent;

    use bytes::Bytes;
    use futures_util::future::BoxFuture;
    use futures_util::StreamExt;

    use super::*;
    use crate::event::Event;
    use crate::history::{Append, Appended, HistoryFuture, Page, ReplayStart, SharedLog};
    use crate::SubscribeRequest;

    /// A shared log in memory: what is appended is stored, and read back by the feed with a
    /// frame of its own, as every instance reads a Redis stream back.
    struct LoopbackLog {
        store: Arc<MemoryHistory>,
        appended: mpsc::UnboundedSender<Arc<StoredEvent>>,
        read_back: Mutex<Option<mpsc::UnboundedReceiver<Arc<StoredEvent>>>>,
    }

    impl History for LoopbackLog {
        fn append(self: Arc<Self>, batch: Vec<Append>) -> HistoryFuture<Vec<Appended>> {
            Box::pin(async move {
                let appended = self.store.clone().append(batch).await?;
                for event in appended.iter().filter_map(Appended::stored) {
                    let _ = self.appended.send(event.clone());
                }
                Ok(appended)
            })
        }
        fn locate(self: Arc<Self>, from: ReplayFrom) -> HistoryFuture<ReplayStart> {
            self.store.clone().locate(from)
        }
        fn read_page(
            self: Arc<Self>,
            after_seq: u64,
            through_seq: u64,
            max_events: usize,
        ) -> HistoryFuture<Page> {
            self.store
                .clone()
                .read_page(after_seq, through_seq, max_events)
        }
        fn len(&self) -> usize {
            self.store.len()
        }
        fn role(self: Arc<Self>) -> HistoryRole {
            HistoryRole::SharedLog(self)
        }
    }

    impl SharedLog for LoopbackLog {
        fn feed(
            self: Arc<Self>,
            dispatch: mpsc::Sender<LiveEvent>,
            shutdown: CancellationToken,
        ) -> BoxFuture<'static, ()> {
            let read_back = self.read_back.lock().expect("lock").take();
            Box::pin(async move {
                let Some(mut read_back) = read_back else {
                    return;
                };
                while let Some(Some(event)) = shutdown.run_until_cancelled(read_back.recv()).await {
                    let frame = Bytes::from(format!("data: via the feed {}\n\n", event.id));
                    let event = StoredEvent {
                        frame,
                        ..(*event).clone()
                    };
                    let live = LiveEvent::new(Arc::new(event), Default::default());
                    if dispatch.send(live).await.is_err() {
                        return;
                    }
                }
            })
        }
    }

    #[tokio::test]
    async fn a_shared_log_is_dispatched_by_its_feed_and_not_by_the_writer() {
        let (appended, read_back) = mpsc::unbounded_channel();
        let log = Arc::new(LoopbackLog {
            store: Arc::new(MemoryHistory::new(100)),
            appended,
            read_back: Mutex::new(Some(read_back)),
        });
        let hub = Hub::builder(HubConfig::default())
            .history(log)
            .build()
            .await
            .expect("hub");
        let mut subscription = hub
            .subscribe(SubscribeRequest {
                topics: vec!["t".into()],
                ..SubscribeRequest::default()
            })
            .await
            .expect("subscribe");
        for id in ["a", "b", "c"] {
            hub.publish(Event {
                id: id.into(),
                ..Event::new("t", "from the writer")
            })
            .await
            .expect("publish");
        }
        let mut text = String::new();
        tokio::time::timeout(Duration::from_secs(5), async {
            while !text.contains("via the feed c") {
                let frame = subscription
                    .stream
                    .next()
                    .await
                    .expect("the stream goes on");
                text.push_str(std::str::from_utf8(&frame).expect("utf-8"));
            }
        })
        .await
        .expect("the feed's events arrive");
        assert!(
            !text.contains("from the writer"),
            "the writer dispatched: {text}"
        );
        assert_eq!(text.matches("via the feed").count(), 3, "{text}");
        hub.shutdown().await;
    }
}
