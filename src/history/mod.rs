//! History: the ordered log of published events that `Last-Event-ID` replays from.
//!
//! The hub's single writer task is the only caller of [`History::append`], so the log order is the
//! dispatch order. Readers ([`History::replay`]) copy what they need (shared `Bytes`, no payload
//! copy) and release the store before the stream starts waiting: a subscriber never holds a lock
//! or a read transaction while it is idle. Where an event goes on the wire lives in [`crate::wire`];
//! who receives it lives in [`crate::hub`].

pub mod memory;

use std::sync::Arc;

use bytes::Bytes;
use thiserror::Error;

use crate::event::{Event, EARLIEST};

pub use memory::MemoryHistory;

/// An event as stored: its place in the log and its encoded frame.
#[derive(Debug)]
pub struct StoredEvent {
    /// Position in this hub's log, from 1, without gaps. Subscribers use it to drop live events
    /// that their replay already contained.
    pub seq: u64,
    /// The event itself (topics and `private` decide who receives it).
    pub event: Event,
    /// The encoded SSE frame, shared by every subscriber and by replays.
    pub frame: Bytes,
}

/// Where a replay starts.
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

/// The result of a replay.
#[derive(Debug, Default)]
pub struct Replay {
    /// The matching frames, oldest first.
    pub frames: Vec<Bytes>,
    /// The last sequence number the log held when it was read: live events up to it are
    /// already covered by this replay (or precede the requested id) and must be dropped.
    pub through_seq: u64,
    /// The id of the event just before the first one the replay could include: the requested
    /// id when it was found, else the newest event the history already dropped, else
    /// `earliest`. This is the `Last-Event-ID` response header (Mercure §Reconciliation), which
    /// lets a client tell whether it missed events.
    pub resumed_after: String,
}

impl Replay {
    /// Whether replay starts right after the id the client asked for (no loss).
    pub fn is_exact_resume(&self, requested: &str) -> bool {
        self.resumed_after == requested && requested != EARLIEST
    }
}

/// Errors of a history store.
#[derive(Debug, Error)]
pub enum HistoryError {
    /// The store cannot take writes now (disk full, closed); the publish fails with 503.
    #[error("history store unavailable: {0}")]
    Unavailable(String),
}

/// An event log.
pub trait History: Send + Sync + 'static {
    /// Appends events in order and assigns their sequence numbers. An event is acknowledged
    /// to its publisher only once this returned.
    ///
    /// # Errors
    /// [`HistoryError::Unavailable`] when nothing was stored.
    fn append(&self, events: Vec<Event>) -> Result<Vec<Arc<StoredEvent>>, HistoryError>;

    /// Collects the frames after `from` that `wants` accepts.
    ///
    /// # Errors
    /// [`HistoryError::Unavailable`] when the store cannot be read.
    fn replay(
        &self,
        from: ReplayFrom<'_>,
        wants: &dyn Fn(&StoredEvent) -> bool,
    ) -> Result<Replay, HistoryError>;

    /// How many events the history holds now.
    fn len(&self) -> usize;

    /// Whether the history holds no events.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
