//! Choosing and opening a store: [`HistorySettings`] describes one of the three
//! ([`MemoryHistory`], [`DurableHistory`], [`RedisHistory`]) and [`HistorySettings::open`] opens
//! it. `ssehub serve` gets the description from its settings (`config::resolve`); an embedding
//! application can build one itself or open a store directly.

use std::path::PathBuf;
use std::sync::Arc;

use super::{
    DurableHistory, History, HistoryError, MemoryHistory, RedisHistory, Retention, RetentionRules,
    SpooledRedis, SyncPolicy,
};

/// The history store to open.
#[derive(Debug, Clone)]
pub enum HistorySettings {
    /// [`MemoryHistory`] keeping this many events.
    Memory {
        /// Events kept.
        max_events: usize,
    },
    /// [`DurableHistory`] in `data_dir`.
    Durable {
        /// The data directory.
        data_dir: PathBuf,
        /// What to keep.
        retention: Retention,
        /// When an append counts as stored.
        sync: SyncPolicy,
        /// Retention per topic, within `retention`.
        rules: RetentionRules,
    },
    /// [`RedisHistory`]: one log shared by every instance on the same Redis.
    Redis {
        /// `redis://host:port/db`.
        url: String,
        /// Prefix of the Redis keys.
        prefix: String,
        /// Most events kept in the stream (0: no limit).
        max_len: u64,
        /// Retention per topic, within `max_len`.
        rules: RetentionRules,
        /// Where publishes taken while Redis is away are spooled ([`SpooledRedis`]), and how
        /// many at most; `None`: no spool, such publishes are refused (`503`).
        spool: Option<SpoolSettings>,
    },
}

/// The spool of a Redis history.
#[derive(Debug, Clone)]
pub struct SpoolSettings {
    /// The directory of `spool.redb` (the data directory).
    pub dir: PathBuf,
    /// Most publishes spooled at once (at least 1).
    pub max_events: usize,
}

impl HistorySettings {
    /// Opens the store.
    ///
    /// # Errors
    /// A durable store that cannot be opened or is damaged; a Redis that answers and refuses
    /// (one that cannot be reached is waited for: [`RedisHistory::connect`]).
    pub async fn open(&self) -> Result<Arc<dyn History>, HistoryError> {
        Ok(match self {
            Self::Memory { max_events } => Arc::new(MemoryHistory::new(*max_events)),
            Self::Durable {
                data_dir,
                retention,
                sync,
                rules,
            } => Arc::new(
                DurableHistory::open(data_dir, *retention, *sync)?.with_rules(rules.clone()),
            ),
            Self::Redis {
                url,
                prefix,
                max_len,
                rules,
                spool,
            } => {
                let redis = RedisHistory::connect(url, prefix, *max_len)
                    .await?
                    .with_rules(rules.clone());
                match spool {
                    Some(spool) => {
                        Arc::new(SpooledRedis::open(redis, &spool.dir, spool.max_events)?)
                    }
                    None => Arc::new(redis),
                }
            }
        })
    }
}
