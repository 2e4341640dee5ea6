//! History: the ordered log of published events that `Last-Event-ID` replays from.
//!
//! The hub's single writer task is the only caller of [`History::append`], so log order is
//! dispatch order. A replay first [`History::locate`]s where to start (which also fixes the
//! `Last-Event-ID` response header), then the stream reads [`History::read_page`] by page as the
//! client takes them: a subscriber never holds a lock or a read transaction while it waits.
//! Three stores: [`MemoryHistory`] (bounded, forgets at exit), [`DurableHistory`] (redb, the
//! default of `ssehub serve`) and [`RedisHistory`] (a Redis stream shared by several hub
//! instances). Streams read pages through [`SharedReads`], so that many clients resuming from
//! the same place cost one store read per page. Who receives an event is [`crate::hub`]'s
//! business; who dispatches it is the history's [`HistoryRole`]: the hub's writer for a local
//! log, the [`SharedLog`]'s feed for a log shared by several instances. Failures are
//! [`HistoryError`]s, each with its source.

mod append;
pub mod durable;
mod error;
pub mod memory;
mod open;
mod record;
pub mod redis;
pub mod retention_rules;
pub mod shared_reads;
pub mod spool;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::event::{Event, EARLIEST};
use crate::telemetry::LiveEvent;
use crate::wire;

pub use self::redis::RedisHistory;
pub(crate) use append::{same_content, KeyRecord};
pub use append::{Append, Appended, KeyClaim};
pub use durable::{DurableHistory, Retention, SyncPolicy};
pub use error::{Damage, HistoryError, RedisSource, Sources};
pub use memory::MemoryHistory;
pub use open::{HistorySettings, SpoolSettings};
pub use record::RecordError;
pub use retention_rules::{RetentionRule, RetentionRules, RuleError};
pub use shared_reads::SharedReads;
pub use spool::{SpoolStatus, SpooledRedis};

/// An event as stored: its place in the log, what decides who gets it, and its encoded frame.
/// The payload lives only inside `frame`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Position in this hub's log, from 1, without gaps. Subscribers use it to drop live events
    /// that their replay already contained.
    pub seq: u64,
    /// The event id (what clients send back as `Last-Event-ID`).
    pub id: String,
    /// The canonical topic first, then the alternates.
    pub topics: Vec<String>,
    /// Whether only authorized subscribers may receive it.
    pub private: bool,
    /// The encoded SSE frame, shared by every subscriber and by replays.
    pub frame: Bytes,
}

impl StoredEvent {
    /// Encodes `event` (once) and gives it its sequence number.
    pub fn new(seq: u64, event: Event) -> Self {
        let frame = wire::encode(&event);
        Self {
            seq,
            id: event.id,
            topics: event.topics,
            private: event.private,
            frame,
        }
    }
}

/// Where a replay starts, as the client asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayFrom {
    /// Everything the history still holds (`Last-Event-ID: earliest`).
    Earliest,
    /// Everything after the event with this id.
    AfterId(String),
}

impl ReplayFrom {
    /// Reads a `Last-Event-ID` value, treating the reserved `earliest` specially.
    pub fn from_last_event_id(value: String) -> Self {
        if value == EARLIEST {
            Self::Earliest
        } else {
            Self::AfterId(value)
        }
    }
}

/// One page of a replay.
#[derive(Debug, Default)]
pub struct Page {
    /// Events after the requested sequence number, oldest first.
    pub events: Vec<Arc<StoredEvent>>,
    /// Retention dropped events after the requested sequence number before they could be read:
    /// the replay cannot be complete.
    pub truncated: bool,
}

impl Page {
    /// A page from a store whose sequence numbers have no gaps: anything missing between
    /// `after_seq` and the first event (or up to `through_seq`, when nothing is left) was dropped.
    pub(crate) fn contiguous(
        events: Vec<Arc<StoredEvent>>,
        after_seq: u64,
        through_seq: u64,
    ) -> Self {
        let truncated = match events.first() {
            Some(first) => first.seq != after_seq + 1,
            None => after_seq < through_seq,
        };
        Self { events, truncated }
    }

    /// A page from a store whose sequence numbers may have holes that retention per topic
    /// left (which are no loss), where every event below `frontier` was dropped by the global
    /// limits: only those make the replay incomplete.
    pub(crate) fn with_frontier(
        events: Vec<Arc<StoredEvent>>,
        after_seq: u64,
        frontier: u64,
    ) -> Self {
        Self {
            events,
            truncated: frontier > after_seq + 1,
        }
    }
}

/// What history calls return: a boxed future, so that stores can do I/O (a blocking file, a
/// network server) and a stream can hold a pending page read without borrowing the store.
pub type HistoryFuture<T> = BoxFuture<'static, Result<T, HistoryError>>;

/// Where a replay starts, as the history found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayStart {
    /// Replay the events after this sequence number...
    pub after_seq: u64,
    /// ...up to and including this one: the newest event stored when the replay was located.
    /// Live events up to it are covered by the replay (or precede the requested id) and must be
    /// dropped from the live stream.
    pub through_seq: u64,
    /// The id of the event just before the first one the replay can include: the requested id
    /// when it was found, else the newest event the history already dropped, else `earliest`.
    /// This is the `Last-Event-ID` response header (Mercure §Reconciliation), which lets a client
    /// tell whether it missed events.
    pub resumed_after: String,
}

impl ReplayStart {
    /// The start when the id was not found: everything still kept.
    pub(crate) fn from_oldest(
        first_seq: u64,
        through_seq: u64,
        last_dropped_id: Option<&str>,
    ) -> Self {
        Self {
            after_seq: first_seq.saturating_sub(1),
            through_seq,
            resumed_after: last_dropped_id.unwrap_or(EARLIEST).to_owned(),
        }
    }
}

/// An event log.
///
/// Methods take `self: Arc<Self>` and return `'static` futures, so that a caller can keep a
/// call in flight (a stream waiting for its next page) without holding a borrow.
pub trait History: Send + Sync + 'static {
    /// Appends publishes in order and assigns the new events their sequence numbers: one
    /// [`Appended`] per publish, in order. A publish that is a retry of an update the history
    /// holds (the same `Idempotency-Key` within its window, or the same id with the same
    /// content; [`crate::idempotency`]) is answered, not stored: the check and the append are
    /// one step (one transaction, one Lua script), so racing retries store one event. An event
    /// is acknowledged to its publisher only once this resolved: with a durable store, once it
    /// is on disk; with a shared log, once the log server accepted it.
    fn append(self: Arc<Self>, batch: Vec<Append>) -> HistoryFuture<Vec<Appended>>;

    /// Finds where a replay starts.
    fn locate(self: Arc<Self>, from: ReplayFrom) -> HistoryFuture<ReplayStart>;

    /// Up to `max_events` events with `after_seq < seq <= through_seq`, oldest first.
    fn read_page(
        self: Arc<Self>,
        after_seq: u64,
        through_seq: u64,
        max_events: usize,
    ) -> HistoryFuture<Page>;

    /// Applies time-based retention; the writer calls it every second or so.
    fn trim(self: Arc<Self>) -> HistoryFuture<()> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// Whether the store can take publishes now (for `/readyz`); a store that failed may try
    /// to recover here.
    fn check(self: Arc<Self>) -> HistoryFuture<()> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// How many events the history holds now (for a shared log: as last seen).
    fn len(&self) -> usize;

    /// The bytes of records held and the byte cap retention keeps them under, for a store
    /// that counts them (the durable one); `None` for the others.
    fn stored_bytes(&self) -> Option<StoredBytes> {
        None
    }

    /// Whether the history holds no events.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether this log is this instance's alone or shared by several instances, which decides
    /// who dispatches what the writer appends.
    fn role(self: Arc<Self>) -> HistoryRole {
        HistoryRole::Local
    }

    /// The spool's state, for a log that spools publishes while its server is away
    /// ([`SpooledRedis`]).
    fn spool_status(&self) -> Option<SpoolStatus> {
        None
    }
}

/// What a history is to the hub that writes to it.
pub enum HistoryRole {
    /// A log of this instance alone: the writer dispatches what it appended.
    Local,
    /// A log shared by several instances: its feed reads back every event any instance
    /// appended, this one's included, and dispatches them; the writer dispatches nothing, so
    /// every instance delivers in the log's one order.
    SharedLog(Arc<dyn SharedLog>),
}

impl std::fmt::Debug for HistoryRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Local => "Local",
            Self::SharedLog(_) => "SharedLog",
        })
    }
}

/// A log shared by several hub instances ([`RedisHistory`]).
pub trait SharedLog: Send + Sync + 'static {
    /// A task that reads every event appended by any instance, in log order, and sends it to
    /// `dispatch`, until `shutdown` (or until `dispatch` is closed). It rides out outages of
    /// the log's server by itself, resuming where it stopped.
    fn feed(
        self: Arc<Self>,
        dispatch: mpsc::Sender<LiveEvent>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, ()>;
}

/// A log of this instance alone, with synchronous calls: instant ones (memory) or blocking ones
/// (a file). Every such store is a [`History`]; blocking calls run on the blocking thread pool.
pub trait LocalHistory: Send + Sync + 'static {
    /// Whether calls do blocking I/O.
    const BLOCKING: bool;

    /// See [`History::append`].
    ///
    /// # Errors
    /// Why nothing was stored: the store cannot be written ([`HistoryError::Store`]), or the
    /// oldest record, read by retention, does not decode ([`HistoryError::Damaged`]).
    fn append_now(&self, batch: Vec<Append>) -> Result<Vec<Appended>, HistoryError> {
        self.append_at(batch, record::now_ms())
    }

    /// [`Self::append_now`] as if the clock read `now_ms` (milliseconds since the Unix epoch):
    /// the time events are stamped with and keys expire by.
    ///
    /// # Errors
    /// As [`Self::append_now`].
    fn append_at(&self, batch: Vec<Append>, now_ms: u64) -> Result<Vec<Appended>, HistoryError>;

    /// See [`History::locate`].
    ///
    /// # Errors
    /// [`HistoryError::Store`] when the store cannot be read.
    fn locate_now(&self, from: &ReplayFrom) -> Result<ReplayStart, HistoryError>;

    /// [`Self::locate_now`] without blocking, when the answer is in memory: a blocking store
    /// answers this on the caller's thread, and goes to the blocking pool only for `None`.
    fn locate_in_memory(&self, from: &ReplayFrom) -> Option<ReplayStart> {
        let _ = from;
        None
    }

    /// See [`History::read_page`].
    ///
    /// # Errors
    /// [`HistoryError::Store`] when the store cannot be read, [`HistoryError::Damaged`] when a
    /// record does not decode.
    fn read_page_now(
        &self,
        after_seq: u64,
        through_seq: u64,
        max_events: usize,
    ) -> Result<Page, HistoryError>;

    /// See [`History::trim`].
    ///
    /// # Errors
    /// [`HistoryError::Store`] when the store cannot be written.
    fn trim_now(&self) -> Result<(), HistoryError> {
        Ok(())
    }

    /// See [`History::check`].
    ///
    /// # Errors
    /// Why the store cannot take publishes.
    fn check_now(&self) -> Result<(), HistoryError> {
        Ok(())
    }

    /// See [`History::len`].
    fn len_now(&self) -> usize;

    /// See [`History::stored_bytes`].
    fn stored_bytes_now(&self) -> Option<StoredBytes> {
        None
    }
}

/// How many bytes a history holds, against its cap ([`History::stored_bytes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredBytes {
    /// Bytes of the records held now.
    pub held: u64,
    /// The most bytes retention keeps (`None`: no byte limit).
    pub max: Option<u64>,
}

fn run_local<S: LocalHistory, T: Send + 'static>(
    store: Arc<S>,
    call: impl FnOnce(&S) -> Result<T, HistoryError> + Send + 'static,
) -> HistoryFuture<T> {
    if !S::BLOCKING {
        return Box::pin(std::future::ready(call(&store)));
    }
    Box::pin(on_blocking_pool(move || call(&store)))
}

/// Runs a blocking store call on the blocking thread pool; a panic there (or a runtime shutting
/// down under it) is [`HistoryError::Task`].
pub(crate) async fn on_blocking_pool<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, HistoryError> + Send + 'static,
) -> Result<T, HistoryError> {
    tokio::task::spawn_blocking(call).await.unwrap_or_else(|e| {
        Err(HistoryError::Task {
            panicked: e.is_panic(),
        })
    })
}

impl<S: LocalHistory> History for S {
    fn append(self: Arc<Self>, batch: Vec<Append>) -> HistoryFuture<Vec<Appended>> {
        run_local(self, move |s| s.append_now(batch))
    }

    fn locate(self: Arc<Self>, from: ReplayFrom) -> HistoryFuture<ReplayStart> {
        if let Some(start) = self.locate_in_memory(&from) {
            return Box::pin(std::future::ready(Ok(start)));
        }
        run_local(self, move |s| s.locate_now(&from))
    }

    fn read_page(
        self: Arc<Self>,
        after_seq: u64,
        through_seq: u64,
        max_events: usize,
    ) -> HistoryFuture<Page> {
        run_local(self, move |s| {
            s.read_page_now(after_seq, through_seq, max_events)
        })
    }

    fn trim(self: Arc<Self>) -> HistoryFuture<()> {
        run_local(self, |s| s.trim_now())
    }

    fn check(self: Arc<Self>) -> HistoryFuture<()> {
        run_local(self, |s| s.check_now())
    }

    fn len(&self) -> usize {
        self.len_now()
    }

    fn stored_bytes(&self) -> Option<StoredBytes> {
        self.stored_bytes_now()
    }
}
