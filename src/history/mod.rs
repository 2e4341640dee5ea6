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
//! business.

pub mod durable;
pub mod memory;
mod open;
mod record;
pub mod redis;
pub mod shared_reads;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::event::{Event, EARLIEST};
use crate::wire;

pub use self::redis::RedisHistory;
pub use durable::{DurableHistory, Retention, SyncPolicy};
pub use memory::MemoryHistory;
pub use open::HistorySettings;
pub use shared_reads::SharedReads;

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

/// Errors of a history store.
#[derive(Debug, Clone, Error)]
pub enum HistoryError {
    /// The store cannot take writes or reads now (disk full, I/O error); publishes fail with
    /// 503 and the store retries on the next request.
    #[error("history store unavailable: {0}")]
    Unavailable(String),
    /// The store's file is damaged; start-up stops with this message.
    #[error("{0}")]
    Damaged(String),
}

/// An event log.
///
/// Methods take `self: Arc<Self>` and return `'static` futures, so that a caller can keep a
/// call in flight (a stream waiting for its next page) without holding a borrow.
pub trait History: Send + Sync + 'static {
    /// Appends events in order and assigns their sequence numbers. An event is acknowledged to
    /// its publisher only once this resolved: with a durable store, once it is on disk; with a
    /// shared log, once the log server accepted it.
    fn append(self: Arc<Self>, events: Vec<Event>) -> HistoryFuture<Vec<Arc<StoredEvent>>>;

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

    /// Whether the history holds no events.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// For a log shared by several hub instances: a task that reads every event appended by any
    /// instance, in log order, and sends it to `dispatch`, until `shutdown`. `None` for a log
    /// of this instance alone: then the hub dispatches what it appends itself.
    fn feed(
        self: Arc<Self>,
        dispatch: mpsc::Sender<Arc<StoredEvent>>,
        shutdown: CancellationToken,
    ) -> Option<BoxFuture<'static, ()>> {
        let _ = (dispatch, shutdown);
        None
    }
}

/// A log of this instance alone, with synchronous calls: instant ones (memory) or blocking ones
/// (a file). Every such store is a [`History`]; blocking calls run on the blocking thread pool.
pub trait LocalHistory: Send + Sync + 'static {
    /// Whether calls do blocking I/O.
    const BLOCKING: bool;

    /// See [`History::append`].
    ///
    /// # Errors
    /// [`HistoryError::Unavailable`] when nothing was stored.
    fn append_now(&self, events: Vec<Event>) -> Result<Vec<Arc<StoredEvent>>, HistoryError>;

    /// See [`History::locate`].
    ///
    /// # Errors
    /// [`HistoryError::Unavailable`] when the store cannot be read.
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
    /// [`HistoryError::Unavailable`] when the store cannot be read.
    fn read_page_now(
        &self,
        after_seq: u64,
        through_seq: u64,
        max_events: usize,
    ) -> Result<Page, HistoryError>;

    /// See [`History::trim`].
    ///
    /// # Errors
    /// [`HistoryError::Unavailable`] when the store cannot be written.
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
}

fn run_local<S: LocalHistory, T: Send + 'static>(
    store: Arc<S>,
    call: impl FnOnce(&S) -> Result<T, HistoryError> + Send + 'static,
) -> HistoryFuture<T> {
    if !S::BLOCKING {
        return Box::pin(std::future::ready(call(&store)));
    }
    Box::pin(async move {
        tokio::task::spawn_blocking(move || call(&store))
            .await
            .unwrap_or_else(|e| {
                Err(HistoryError::Unavailable(format!(
                    "history task failed: {e}"
                )))
            })
    })
}

impl<S: LocalHistory> History for S {
    fn append(self: Arc<Self>, events: Vec<Event>) -> HistoryFuture<Vec<Arc<StoredEvent>>> {
        run_local(self, move |s| s.append_now(events))
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
}
