//! What the writer hands a history to append, and what each publish became: a new event, or a
//! retry of one the history already holds ([`crate::idempotency`]).

use std::sync::Arc;
use std::time::Duration;

use super::StoredEvent;
use crate::event::Event;
use crate::idempotency::{Fingerprint, IdempotencyKey};
use crate::telemetry::Stamp;

/// One publish to append.
#[derive(Debug, Clone)]
pub struct Append {
    /// The update.
    pub event: Event,
    /// The publisher's `Idempotency-Key`, and how long the history remembers it.
    pub key: Option<KeyClaim>,
    /// When the hub accepted it, and its trace ([`crate::telemetry`]): not part of the event;
    /// only a shared log keeps it (in the entry, for the other instances' telemetry).
    pub stamp: Stamp,
}

impl From<Event> for Append {
    fn from(event: Event) -> Self {
        Self {
            event,
            key: None,
            stamp: Stamp::default(),
        }
    }
}

/// An `Idempotency-Key` and how long the history remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyClaim {
    /// The key.
    pub key: IdempotencyKey,
    /// How long a retry with it is recognised.
    pub window: Duration,
}

/// What one publish became.
#[derive(Debug, Clone)]
pub enum Appended {
    /// A new event, stored: the writer dispatches it.
    Stored(Arc<StoredEvent>),
    /// Written to this instance's spool while the shared log is away (fsynced): acknowledged,
    /// and forwarded to the log, in order, when it is back; dispatched by the log's feed then.
    Spooled {
        /// The event's id.
        id: String,
    },
    /// A retry of an update the history holds (same key, or same id and content): nothing was
    /// stored or is delivered; the publisher is answered with the original id.
    Retry {
        /// The original event's id.
        id: String,
        /// Its sequence number (0 when only its key is remembered, no longer the event).
        seq: u64,
    },
    /// The key was used before for different content: refused, nothing stored.
    KeyReused {
        /// The id of the update the key was first used for.
        id: String,
    },
}

impl Appended {
    /// The stored event, for a new one.
    pub fn stored(&self) -> Option<&Arc<StoredEvent>> {
        match self {
            Self::Stored(event) => Some(event),
            _ => None,
        }
    }
}

/// What a store remembers of a key: the event it was first used for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyRecord {
    pub(crate) seq: u64,
    pub(crate) id: String,
    pub(crate) fingerprint: Fingerprint,
}

impl KeyRecord {
    /// What a publish with this key and `fingerprint` becomes.
    pub(crate) fn answer(&self, fingerprint: Fingerprint) -> Appended {
        if self.fingerprint == fingerprint {
            Appended::Retry {
                id: self.id.clone(),
                seq: self.seq,
            }
        } else {
            Appended::KeyReused {
                id: self.id.clone(),
            }
        }
    }

    /// `[expires_ms u64][seq u64][fingerprint 16][id]`, for the durable store.
    pub(crate) fn encode(&self, expires_ms: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.id.len());
        out.extend_from_slice(&expires_ms.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.fingerprint.0);
        out.extend_from_slice(self.id.as_bytes());
        out
    }

    /// The record and its expiry, or `None` for bytes that are not one.
    pub(crate) fn decode(bytes: &[u8]) -> Option<(Self, u64)> {
        if bytes.len() < 32 {
            return None;
        }
        let (expires, rest) = bytes.split_at(8);
        let (seq, rest) = rest.split_at(8);
        let (fingerprint, id) = rest.split_at(16);
        let record = Self {
            seq: u64::from_be_bytes(seq.try_into().ok()?),
            id: std::str::from_utf8(id).ok()?.to_owned(),
            fingerprint: Fingerprint(fingerprint.try_into().ok()?),
        };
        Some((record, u64::from_be_bytes(expires.try_into().ok()?)))
    }
}

/// Whether `candidate` (not stored yet) has the content of `stored`: the same update.
pub(crate) fn same_content(stored: &StoredEvent, candidate: &StoredEvent) -> bool {
    stored.id == candidate.id
        && stored.private == candidate.private
        && stored.topics == candidate.topics
        && stored.frame == candidate.frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_records_round_trip() {
        let event = Event::new("t", "x");
        let record = KeyRecord {
            seq: 42,
            id: event.id.clone(),
            fingerprint: Fingerprint::of(&StoredEvent::new(42, event.clone())),
        };
        let bytes = record.encode(1234);
        assert_eq!(KeyRecord::decode(&bytes), Some((record, 1234)));
        assert_eq!(KeyRecord::decode(&bytes[..20]), None);
    }
}
