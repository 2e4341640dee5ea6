//! History: the ordered log of published events that `Last-Event-ID` replays from.
//!
//! The hub's single writer task is the only caller of [`History::append`], so log order is
//! dispatch order. A replay first [`History::locate`]s where to start (which also fixes the
//! `Last-Event-ID` response header), then the stream reads [`History::read_page`] by page as the
//! client takes them: a subscriber never holds a lock or a read transaction while it waits.
//! Two stores: [`MemoryHistory`] (bounded, forgets at exit) and [`DurableHistory`] (redb, the
//! default of `ssehub serve`). Who receives an event is [`crate::hub`]'s business.

pub mod durable;
pub mod memory;

use std::sync::Arc;

use bytes::Bytes;
use thiserror::Error;

use crate::event::{Event, EARLIEST};
use crate::wire;

pub use durable::{DurableHistory, Retention, SyncPolicy};
pub use memory::MemoryHistory;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayFrom<'a> {
    /// Everything the history still holds (`Last-Event-ID: earliest`).
    Earliest,
    /// Everything after the event with this id.
    AfterId(&'a str),
}

impl<'a> ReplayFrom<'a> {
    /// Reads a `Last-Event-ID` value, treating the reserved `earliest` specially.
    pub fn from_last_event_id(value: &'a str) -> Self {
        if value == EARLIEST {
            Self::Earliest
        } else {
            Self::AfterId(value)
        }
    }
}

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
#[derive(Debug, Error)]
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
pub trait History: Send + Sync + 'static {
    /// Appends events in order and assigns their sequence numbers. An event is acknowledged to
    /// its publisher only once this returned: with a durable store, once it is on disk.
    ///
    /// # Errors
    /// [`HistoryError::Unavailable`] when nothing was stored.
    fn append(&self, events: Vec<Event>) -> Result<Vec<Arc<StoredEvent>>, HistoryError>;

    /// Finds where a replay starts.
    ///
    /// # Errors
    /// [`HistoryError::Unavailable`] when the store cannot be read.
    fn locate(&self, from: ReplayFrom<'_>) -> Result<ReplayStart, HistoryError>;

    /// Up to `max_events` events with `after_seq < seq <= through_seq`, oldest first. A first
    /// event after `after_seq + 1` means the ones in between were dropped by retention meanwhile.
    ///
    /// # Errors
    /// [`HistoryError::Unavailable`] when the store cannot be read.
    fn read_page(
        &self,
        after_seq: u64,
        through_seq: u64,
        max_events: usize,
    ) -> Result<Vec<Arc<StoredEvent>>, HistoryError>;

    /// Applies time-based retention; the writer calls it when idle.
    ///
    /// # Errors
    /// [`HistoryError::Unavailable`] when the store cannot be written.
    fn trim(&self) -> Result<(), HistoryError> {
        Ok(())
    }

    /// How many events the history holds now.
    fn len(&self) -> usize;

    /// Whether the history holds no events.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether calls may block on I/O (then the hub runs them on the blocking thread pool).
    fn is_blocking(&self) -> bool {
        false
    }
}
