//! The in-memory history: a bounded ring of the newest events plus an id index.
//!
//! It forgets everything when the process exits; the durable store is a separate backend.
//! One `RwLock` guards the ring: the writer holds it to push a batch, a replay holds it to clone
//! the `Bytes` of matching frames, and neither waits on anything else while holding it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{History, HistoryError, Replay, ReplayFrom, StoredEvent};
use crate::event::{Event, EARLIEST};
use crate::wire;

/// A bounded in-memory event log.
#[derive(Debug)]
pub struct MemoryHistory {
    /// The most events kept; older ones are dropped as new ones arrive.
    capacity: usize,
    log: RwLock<Log>,
}

#[derive(Debug, Default)]
struct Log {
    /// Oldest first; sequence numbers are contiguous.
    events: VecDeque<Arc<StoredEvent>>,
    /// Event id → sequence number of its newest occurrence (publishers may reuse ids).
    by_id: HashMap<String, u64>,
    /// The sequence number the next event gets.
    next_seq: u64,
    /// The id of the newest event already dropped, reported as the replay start when a client
    /// asks for something older than what is left.
    last_dropped_id: Option<String>,
}

impl MemoryHistory {
    /// A history keeping the newest `capacity` events (0 keeps none).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            log: RwLock::new(Log {
                next_seq: 1,
                ..Log::default()
            }),
        }
    }

    // The lock is never held across a panic-prone call (only VecDeque/HashMap operations), so a
    // poisoned lock still guards a consistent log.
    fn read(&self) -> RwLockReadGuard<'_, Log> {
        self.log
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Log> {
        self.log
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl History for MemoryHistory {
    fn append(&self, events: Vec<Event>) -> Result<Vec<Arc<StoredEvent>>, HistoryError> {
        // Encode before taking the lock: readers never wait for the encoder.
        let encoded: Vec<_> = events
            .into_iter()
            .map(|event| {
                let frame = wire::encode(&event);
                (event, frame)
            })
            .collect();
        let mut log = self.write();
        let mut stored = Vec::with_capacity(encoded.len());
        for (event, frame) in encoded {
            let seq = log.next_seq;
            log.next_seq += 1;
            let entry = Arc::new(StoredEvent { seq, event, frame });
            if self.capacity > 0 {
                log.by_id.insert(entry.event.id.clone(), seq);
                log.events.push_back(entry.clone());
            } else {
                log.last_dropped_id = Some(entry.event.id.clone());
            }
            stored.push(entry);
        }
        while log.events.len() > self.capacity {
            if let Some(dropped) = log.events.pop_front() {
                if log.by_id.get(&dropped.event.id) == Some(&dropped.seq) {
                    log.by_id.remove(&dropped.event.id);
                }
                log.last_dropped_id = Some(dropped.event.id.clone());
            }
        }
        Ok(stored)
    }

    fn replay(
        &self,
        from: ReplayFrom<'_>,
        wants: &dyn Fn(&StoredEvent) -> bool,
    ) -> Result<Replay, HistoryError> {
        let log = self.read();
        let through_seq = log.next_seq - 1;
        let first_seq = log.events.front().map_or(log.next_seq, |e| e.seq);
        let found = match from {
            ReplayFrom::AfterId(id) => log.by_id.get(id).copied(),
            ReplayFrom::Earliest => None,
        };
        let (start_index, resumed_after) = match (found, from) {
            (Some(seq), ReplayFrom::AfterId(id)) => ((seq + 1 - first_seq) as usize, id.to_owned()),
            _ => (
                0,
                log.last_dropped_id
                    .clone()
                    .unwrap_or_else(|| EARLIEST.to_owned()),
            ),
        };
        let frames = log
            .events
            .iter()
            .skip(start_index)
            .filter(|event| wants(event))
            .map(|event| event.frame.clone())
            .collect();
        Ok(Replay {
            frames,
            through_seq,
            resumed_after,
        })
    }

    fn len(&self) -> usize {
        self.read().events.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> Event {
        Event {
            id: id.into(),
            ..Event::new("t", id)
        }
    }

    fn append_ids(history: &MemoryHistory, ids: &[&str]) {
        history
            .append(ids.iter().map(|id| event(id)).collect())
            .expect("memory append never fails");
    }

    fn replayed_ids(replay: &Replay) -> Vec<String> {
        replay
            .frames
            .iter()
            .map(|frame| {
                let text = std::str::from_utf8(frame).expect("utf-8");
                text.lines()
                    .next()
                    .unwrap_or("")
                    .trim_start_matches("id: ")
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn replays_after_a_known_id() {
        let history = MemoryHistory::new(10);
        append_ids(&history, &["a", "b", "c"]);
        let replay = history
            .replay(ReplayFrom::AfterId("a"), &|_| true)
            .expect("replay");
        assert_eq!(replayed_ids(&replay), ["b", "c"]);
        assert_eq!(replay.resumed_after, "a");
        assert_eq!(replay.through_seq, 3);
        assert!(replay.is_exact_resume("a"));
    }

    #[test]
    fn unknown_id_replays_everything_and_says_earliest() {
        let history = MemoryHistory::new(10);
        append_ids(&history, &["a", "b"]);
        let replay = history
            .replay(ReplayFrom::AfterId("zzz"), &|_| true)
            .expect("replay");
        assert_eq!(replayed_ids(&replay), ["a", "b"]);
        assert_eq!(replay.resumed_after, "earliest");
        assert!(!replay.is_exact_resume("zzz"));
    }

    #[test]
    fn dropped_id_reports_where_replay_really_starts() {
        let history = MemoryHistory::new(2);
        append_ids(&history, &["a", "b", "c", "d"]);
        assert_eq!(history.len(), 2);
        let replay = history
            .replay(ReplayFrom::AfterId("a"), &|_| true)
            .expect("replay");
        assert_eq!(replayed_ids(&replay), ["c", "d"]);
        assert_eq!(replay.resumed_after, "b");
        let earliest = history
            .replay(ReplayFrom::Earliest, &|_| true)
            .expect("replay");
        assert_eq!(replayed_ids(&earliest), ["c", "d"]);
        assert_eq!(earliest.resumed_after, "b");
    }

    #[test]
    fn reused_id_resumes_after_its_newest_occurrence() {
        let history = MemoryHistory::new(10);
        append_ids(&history, &["x", "a", "x", "b"]);
        let replay = history
            .replay(ReplayFrom::AfterId("x"), &|_| true)
            .expect("replay");
        assert_eq!(replayed_ids(&replay), ["b"]);
    }

    #[test]
    fn zero_capacity_keeps_nothing_but_counts() {
        let history = MemoryHistory::new(0);
        append_ids(&history, &["a", "b"]);
        let replay = history
            .replay(ReplayFrom::AfterId("a"), &|_| true)
            .expect("replay");
        assert!(replay.frames.is_empty());
        assert_eq!(replay.through_seq, 2);
        assert_eq!(replay.resumed_after, "b");
    }

    #[test]
    fn filter_selects_frames() {
        let history = MemoryHistory::new(10);
        append_ids(&history, &["a", "b", "c"]);
        let replay = history
            .replay(ReplayFrom::Earliest, &|e| e.event.id != "b")
            .expect("replay");
        assert_eq!(replayed_ids(&replay), ["a", "c"]);
    }
}
