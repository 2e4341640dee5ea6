//! The Redis history's feed: each instance reads the shared stream back with `XREAD BLOCK` on a
//! connection of its own (a blocking read would stall the commands queued behind it on a shared
//! one), from the last entry id it delivered, and hands every event, its own included, to the
//! dispatcher. After an outage it reconnects with backoff and resumes at its cursor: no gap and
//! no duplicate; if Redis lost its data meanwhile (a new `epoch`), it reads the new stream from
//! its start. The rest of the Redis history (append, locate, pages) is `redis.rs`'s.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamRangeReply, StreamReadReply};
use redis::AsyncConnectionConfig;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{decode_entry, entry_stamp, RedisHistory};
use crate::history::{HistoryError, SharedLog, Sources};
use crate::telemetry::LiveEvent;

/// Entries the feed reads per `XREAD`.
const FEED_BATCH: usize = 512;
/// How long one `XREAD` blocks before the feed checks for shutdown.
const FEED_BLOCK_MS: usize = 1000;

impl RedisHistory {
    /// After a reconnection: whether Redis still holds the data it held (same epoch). An
    /// instance that started while Redis was away learns the epoch here, the first time.
    async fn check_epoch(&self) -> Result<bool, HistoryError> {
        let known = self.lock_epoch().clone();
        let current = self.ensure_epoch().await?;
        let kept = current == known || known.is_empty();
        *self.lock_epoch() = current;
        Ok(kept)
    }

    /// A connection of its own for blocking reads (no response timeout).
    async fn feed_connection(&self) -> Result<MultiplexedConnection, HistoryError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(None);
        Ok(self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }

    /// The newest entry id now, where a starting instance begins reading.
    async fn newest_entry(&self) -> Result<String, HistoryError> {
        let mut connection = self.commands.clone();
        let newest: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(&self.keys.stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut connection)
            .await?;
        Ok(newest
            .ids
            .first()
            .map_or_else(|| "0-0".to_owned(), |e| e.id.clone()))
    }

    /// Where the feed starts: after the newest entry now; for an instance that started while
    /// Redis could not be reached, after the older of that and the instance's start (by entry
    /// id, Redis's clock), so that events other instances appended meanwhile (forwarding their
    /// spools) reach this instance's subscribers too.
    async fn first_cursor(&self) -> Result<String, HistoryError> {
        let newest = self.newest_entry().await?;
        let Some(started_ms) = self.started_unreachable_ms else {
            return Ok(newest);
        };
        let start = format!("{}-0", started_ms.saturating_sub(1));
        Ok(match (super::seq_of(&newest), super::seq_of(&start)) {
            (Some(newest_seq), Some(start_seq)) if start_seq < newest_seq => start,
            _ => newest,
        })
    }

    /// Whether the feed has found where it starts ([`Self::first_cursor`]).
    pub(crate) fn feed_positioned(&self) -> bool {
        self.feed_positioned.load(Ordering::Acquire)
    }

    /// Reads the stream from where this instance starts, forever, and dispatches each event.
    async fn run_feed(
        self: Arc<Self>,
        dispatch: mpsc::Sender<LiveEvent>,
        shutdown: CancellationToken,
    ) {
        let mut cursor: Option<String> = None;
        let mut backoff = Duration::from_millis(100);
        'connect: while !shutdown.is_cancelled() {
            let connected = async {
                let connection = self.feed_connection().await?;
                if !self.check_epoch().await? && cursor.is_some() {
                    error!(
                        stream = %self.keys.stream,
                        "Redis lost its data (restarted without persistence?): events stored \
                         before are gone; clients resuming from them are told `earliest`"
                    );
                    // The new stream's ids may be lower than our cursor: read it from the start.
                    cursor = Some("0-0".to_owned());
                }
                if cursor.is_none() {
                    cursor = Some(self.first_cursor().await?);
                    self.feed_positioned.store(true, Ordering::Release);
                }
                Ok::<_, HistoryError>(connection)
            };
            let mut connection = tokio::select! {
                () = shutdown.cancelled() => break,
                connected = connected => match connected {
                    Ok(connection) => connection,
                    Err(error) => {
                        warn!(
                            error = %Sources::of(&error),
                            retry_ms = backoff.as_millis() as u64,
                            "feed cannot reach Redis"
                        );
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                },
            };
            info!(stream = %self.keys.stream, after = cursor.as_deref().unwrap_or("-"), "feed reading");
            self.feed_reading.store(true, Ordering::Relaxed);
            backoff = Duration::from_millis(100);
            loop {
                let after = cursor.clone().unwrap_or_else(|| "0-0".to_owned());
                let mut command = redis::cmd("XREAD");
                command
                    .arg("COUNT")
                    .arg(FEED_BATCH)
                    .arg("BLOCK")
                    .arg(FEED_BLOCK_MS)
                    .arg("STREAMS")
                    .arg(&self.keys.stream)
                    .arg(&after);
                let read = command.query_async::<Option<StreamReadReply>>(&mut connection);
                let reply = tokio::select! {
                    () = shutdown.cancelled() => break 'connect,
                    reply = read => reply,
                };
                let reply = match reply {
                    Ok(reply) => reply,
                    Err(error) => {
                        self.feed_reading.store(false, Ordering::Relaxed);
                        warn!(error = %Sources::of(&error), "feed lost Redis; reconnecting");
                        continue 'connect;
                    }
                };
                for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                    match decode_entry(&entry) {
                        Ok(event) => {
                            let live = LiveEvent::new(Arc::new(event), entry_stamp(&entry));
                            if dispatch.send(live).await.is_err() {
                                break 'connect;
                            }
                        }
                        Err(damage) => error!(
                            error = %Sources::of(&damage),
                            "skipping an undecodable stream entry"
                        ),
                    }
                    cursor = Some(entry.id);
                }
            }
        }
    }
}

impl SharedLog for RedisHistory {
    fn feed(
        self: Arc<Self>,
        dispatch: mpsc::Sender<LiveEvent>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, ()> {
        Box::pin(self.run_feed(dispatch, shutdown))
    }
}
