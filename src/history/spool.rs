//! The Redis history with a local spool: publishes survive a Redis outage.
//!
//! While Redis answers, a publish goes to the shared log as with [`RedisHistory`] alone. When an
//! append fails for a cause that passes (Redis unreachable, a timeout), or readiness finds Redis
//! away, the instance is *spooling*: the batch, and every publish after it, is written to the
//! instance's own spool file (`spool.redb` in the data directory, fsynced, one commit per batch
//! as for the durable history) and acknowledged. The forwarder, which runs beside the feed,
//! puts the spool's publishes into the shared log in spool order, oldest first, and removes them
//! once Redis acknowledged them; new publishes keep going to the spool until it is empty, so this
//! instance's publishes enter the log in the order they were acknowledged. Every instance's
//! feed then reads them back and delivers them in the log's one order.
//!
//! Nothing is lost: a publish is acknowledged only once it is in Redis or on disk in the spool,
//! and the spool survives a crash (it is forwarded after the restart). Nothing is doubled: an
//! append whose answer was lost may have reached Redis, and a forward interrupted after Redis
//! stored part of it is repeated, but the publish script recognises an id it already holds with
//! the same content as a retry and does not store it again (`crate::idempotency`). The spool is
//! bounded (`--spool-max-events`); a publish that does not fit is refused (`503`), as without a
//! spool. While spooling, `/readyz` answers `200` "degraded: spooling": the instance takes
//! publishes, and sending them elsewhere would not help (every instance meets the same outage).
//! Subscribers receive spooled publishes when Redis is back and the log holds them.

pub(crate) mod store;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use self::store::SpoolFile;
use super::on_blocking_pool;
use super::record::now_ms;
use super::{
    Append, Appended, History, HistoryError, HistoryFuture, HistoryRole, Page, RedisHistory,
    ReplayFrom, ReplayStart, SharedLog, Sources, StoredEvent,
};
use crate::telemetry::{LiveEvent, Stamp};

/// Spooled publishes forwarded per script call.
const FORWARD_BATCH: usize = 256;

/// What `/readyz` and the metrics say about a spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolStatus {
    /// Publishes waiting to be forwarded.
    pub events: usize,
    /// How long the oldest has waited.
    pub oldest_age: Option<Duration>,
    /// Whether the instance is spooling now (Redis away, or the spool not yet forwarded).
    pub spooling: bool,
}

/// [`RedisHistory`] with a spool for its outages.
pub struct SpooledRedis {
    redis: Arc<RedisHistory>,
    spool: Arc<SpoolFile>,
    max_events: usize,
    /// Redis failed an append or a readiness check: publishes go to the spool until the
    /// forwarder finds Redis back and the spool empty.
    away: AtomicBool,
    /// Wakes the forwarder when something was spooled.
    spooled: Notify,
}

impl std::fmt::Debug for SpooledRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpooledRedis")
            .field("redis", &self.redis)
            .field("spool", &self.spool)
            .field("max_events", &self.max_events)
            .finish_non_exhaustive()
    }
}

impl SpooledRedis {
    /// `redis`, spooling up to `max_events` publishes in `data_dir/spool.redb` while it is
    /// away. Publishes spooled before a restart are forwarded first.
    ///
    /// # Errors
    /// The spool file cannot be opened or created.
    pub fn open(
        redis: RedisHistory,
        data_dir: &Path,
        max_events: usize,
    ) -> Result<Self, HistoryError> {
        let spool = SpoolFile::open(data_dir)?;
        if spool.len() > 0 {
            info!(
                events = spool.len(),
                "publishes spooled before the restart will be forwarded to Redis"
            );
        }
        Ok(Self {
            redis: Arc::new(redis),
            spool: Arc::new(spool),
            max_events,
            away: AtomicBool::new(false),
            spooled: Notify::new(),
        })
    }

    /// Whether new publishes go to the spool.
    fn spooling(&self) -> bool {
        self.away.load(Ordering::Acquire) || self.spool.len() > 0
    }

    /// The spool's state now.
    pub fn status(&self) -> SpoolStatus {
        let now = now_ms();
        SpoolStatus {
            events: self.spool.len(),
            oldest_age: self
                .spool
                .oldest_ms()
                .map(|oldest| Duration::from_millis(now.saturating_sub(oldest))),
            spooling: self.spooling(),
        }
    }

    async fn append_batch(
        self: Arc<Self>,
        batch: Vec<Append>,
    ) -> Result<Vec<Appended>, HistoryError> {
        let batch: Vec<_> = batch
            .into_iter()
            .map(|Append { event, key, stamp }| (StoredEvent::new(0, event), key, stamp))
            .collect();
        if !self.spooling() {
            match self.redis.append_stored(batch.clone()).await {
                Ok(appended) => return Ok(appended),
                Err(error) if error.will_pass() => {
                    warn!(
                        error = %Sources::of(&error),
                        "Redis did not take a publish: spooling until it is back"
                    );
                    self.away.store(true, Ordering::Release);
                }
                Err(error) => return Err(error),
            }
        }
        let spool = self.spool.clone();
        let max = self.max_events;
        // The spool keeps no stamp: a forwarded event's delivery lag counts from when it was
        // spooled (its record's time), and its trace ends at the store.
        let batch = batch
            .into_iter()
            .map(|(event, key, _)| (event, key))
            .collect();
        let appended = on_blocking_pool(move || spool.append(batch, max, now_ms())).await?;
        self.spooled.notify_one();
        Ok(appended)
    }

    /// Forwards the spool to Redis, oldest first, until shutdown; between outages it waits
    /// for something to be spooled.
    async fn forward(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            // Forwarded events must come after the feed's cursor, or this instance's own
            // subscribers would not get them live: wait until the feed knows where it starts.
            if !self.redis.feed_positioned() {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
                continue;
            }
            match self.forward_once().await {
                Ok(true) => {
                    backoff = Duration::from_millis(100);
                    continue;
                }
                Ok(false) => {
                    // Nothing waits; the next publish wakes us, or readiness marks Redis away.
                    backoff = Duration::from_millis(100);
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = self.spooled.notified() => {}
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
                Err(error) => {
                    tracing::debug!(error = %Sources::of(&error), "forwarding the spool: Redis still away");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// One step of the forwarder: whether it forwarded something.
    async fn forward_once(&self) -> Result<bool, HistoryError> {
        let spool = self.spool.clone();
        let oldest = on_blocking_pool(move || spool.oldest(FORWARD_BATCH)).await?;
        if oldest.is_empty() {
            if self.away.load(Ordering::Acquire) {
                self.redis.ping().await?;
                self.away.store(false, Ordering::Release);
                info!("Redis is back: publishes go to it again");
            }
            return Ok(false);
        }
        let batch = oldest
            .iter()
            .map(|s| {
                let stamp = Stamp {
                    accepted_us: s.spooled_at_ms.saturating_mul(1_000),
                    trace: None,
                };
                (s.event.clone(), s.key.clone(), stamp)
            })
            .collect();
        self.redis.append_stored(batch).await?;
        let count = oldest.len();
        let spool = self.spool.clone();
        on_blocking_pool(move || spool.remove_forwarded(&oldest)).await?;
        info!(
            forwarded = count,
            left = self.spool.len(),
            "spooled publishes forwarded to Redis"
        );
        Ok(true)
    }
}

impl History for SpooledRedis {
    fn append(self: Arc<Self>, batch: Vec<Append>) -> HistoryFuture<Vec<Appended>> {
        Box::pin(self.append_batch(batch))
    }

    fn locate(self: Arc<Self>, from: ReplayFrom) -> HistoryFuture<ReplayStart> {
        self.redis.clone().locate(from)
    }

    fn read_page(
        self: Arc<Self>,
        after_seq: u64,
        through_seq: u64,
        max_events: usize,
    ) -> HistoryFuture<Page> {
        self.redis
            .clone()
            .read_page(after_seq, through_seq, max_events)
    }

    /// Retention per topic runs on Redis; not while it is away (nothing to trim then, and
    /// the outage is reported once, by `check`).
    fn trim(self: Arc<Self>) -> HistoryFuture<()> {
        if self.away.load(Ordering::Acquire) {
            return Box::pin(std::future::ready(Ok(())));
        }
        self.redis.clone().trim()
    }

    /// Ready while Redis answers, or while it is away and the spool has room: publishes are
    /// taken either way.
    fn check(self: Arc<Self>) -> HistoryFuture<()> {
        Box::pin(async move {
            match self.redis.check_now().await {
                Ok(()) => Ok(()),
                Err(error) if error.will_pass() => {
                    if !self.away.swap(true, Ordering::AcqRel) {
                        warn!(
                            error = %Sources::of(&error),
                            "Redis is away: publishes are spooled until it is back"
                        );
                    }
                    if self.spool.len() >= self.max_events {
                        return Err(HistoryError::SpoolFull {
                            max: self.max_events,
                        });
                    }
                    Ok(())
                }
                Err(error) => Err(error),
            }
        })
    }

    fn len(&self) -> usize {
        self.redis.len()
    }

    fn role(self: Arc<Self>) -> HistoryRole {
        HistoryRole::SharedLog(self)
    }

    fn spool_status(&self) -> Option<SpoolStatus> {
        Some(self.status())
    }
}

impl SharedLog for SpooledRedis {
    fn feed(
        self: Arc<Self>,
        dispatch: mpsc::Sender<LiveEvent>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, ()> {
        let feed = self.redis.clone().feed(dispatch, shutdown.clone());
        let forward = self.forward(shutdown);
        Box::pin(async move {
            futures_util::future::join(feed, forward).await;
        })
    }
}
