//! The in-memory history: a bounded ring of the newest events plus an id index.
//!
//! It forgets everything when the process exits (`--history memory`); the durable store is
//! [`super::DurableHistory`]. One `RwLock` guards the ring: the writer holds it to push a batch,
//! a page read holds it to clone a few `Arc`s, and neither waits on anything while holding it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{HistoryError, LocalHistory, Page, ReplayFrom, ReplayStart, StoredEvent};
use crate::event::Event;

/// A bounded in-memory event log.
#[derive(Debug)]
pub struct MemoryHistory {
    /// The most events kept; older ones are dropped as new ones arrive.
    capacity: usize,
    log: RwLock<Log>,
}

#[derive(Debug)]
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

impl Log {
    fn first_seq(&self) -> u64 {
        self.events.front().map_or(self.next_seq, |e| e.seq)
    }
}

impl MemoryHistory {
    /// A history keeping the newest `capacity` events (0 keeps none).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            log: RwLock::new(Log {
                events: VecDeque::new(),
                by_id: HashMap::new(),
                next_seq: 1,
                last_dropped_id: None,
            }),
        }
    }

    // Only VecDeque/HashMap operations run under the lock, so a poisoned lock still guards a
    // consistent log.
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

impl LocalHistory for MemoryHistory {
    const BLOCKING: bool = false;

    fn append_now(&self, events: Vec<Event>) -> Result<Vec<Arc<StoredEvent>>, HistoryError> {
        let mut log = self.write();
        let first = log.next_seq;
        // Encoding happens under the write lock, but the lock only excludes page reads, which
        // are as short; subscribers never wait on it while idle.
        let stored: Vec<_> = events
            .into_iter()
            .zip(first..)
            .map(|(event, seq)| Arc::new(StoredEvent::new(seq, event)))
            .collect();
        log.next_seq = first + stored.len() as u64;
        for entry in &stored {
            if self.capacity == 0 {
                log.last_dropped_id = Some(entry.id.clone());
                continue;
            }
            log.by_id.insert(entry.id.clone(), entry.seq);
            log.events.push_back(entry.clone());
        }
        while log.events.len() > self.capacity {
            if let Some(dropped) = log.events.pop_front() {
                if log.by_id.get(&dropped.id) == Some(&dropped.seq) {
                    log.by_id.remove(&dropped.id);
                }
                log.last_dropped_id = Some(dropped.id.clone());
            }
        }
        Ok(stored)
    }

    fn locate_now(&self, from: &ReplayFrom) -> Result<ReplayStart, HistoryError> {
        let log = self.read();
        let through_seq = log.next_seq - 1;
        if let ReplayFrom::AfterId(id) = from {
            if let Some(&seq) = log.by_id.get(id) {
                return Ok(ReplayStart {
                    after_seq: seq,
                    through_seq,
                    resumed_after: id.clone(),
                });
            }
        }
        Ok(ReplayStart::from_oldest(
            log.first_seq(),
            through_seq,
            log.last_dropped_id.as_deref(),
        ))
    }

    fn read_page_now(
        &self,
        after_seq: u64,
        through_seq: u64,
        max_events: usize,
    ) -> Result<Page, HistoryError> {
        let log = self.read();
        let first_seq = log.first_seq();
        // Sequence numbers are contiguous, so the position of `after_seq + 1` is arithmetic.
        let skip = (after_seq + 1).saturating_sub(first_seq);
        let events = log
            .events
            .iter()
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
            .take_while(|event| event.seq <= through_seq)
            .take(max_events)
            .cloned()
            .collect();
        Ok(Page::contiguous(events, after_seq, through_seq))
    }

    fn len_now(&self) -> usize {
        self.read().events.len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn event(id: &str) -> Event {
        Event {
            id: id.into(),
            ..Event::new("t", id)
        }
    }

    fn append_ids(history: &impl LocalHistory, ids: &[&str]) {
        history
            .append_now(ids.iter().map(|id| event(id)).collect())
            .expect("append");
    }

    /// Every event a replay from `from` yields, with its start.
    pub(crate) fn replay(
        history: &impl LocalHistory,
        from: ReplayFrom,
    ) -> (Vec<String>, ReplayStart) {
        let start = history.locate_now(&from).expect("locate");
        let mut ids = Vec::new();
        let mut after = start.after_seq;
        loop {
            let page = history
                .read_page_now(after, start.through_seq, 2)
                .expect("page");
            assert!(!page.truncated);
            let Some(last) = page.events.last() else {
                break;
            };
            after = last.seq;
            ids.extend(page.events.iter().map(|e| e.id.clone()));
        }
        (ids, start)
    }

    /// The behaviour every store must share.
    pub(crate) fn conformance(history: &impl LocalHistory, capacity_two: &impl LocalHistory) {
        append_ids(history, &["a", "b", "c"]);
        let (ids, start) = replay(history, ReplayFrom::AfterId("a".into()));
        assert_eq!(ids, ["b", "c"]);
        assert_eq!(start.resumed_after, "a");
        assert_eq!(start.through_seq, 3);

        let (ids, start) = replay(history, ReplayFrom::AfterId("never-seen".into()));
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(start.resumed_after, "earliest");

        let (ids, start) = replay(history, ReplayFrom::Earliest);
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(start.resumed_after, "earliest");

        append_ids(history, &["a", "d"]);
        let (ids, _) = replay(history, ReplayFrom::AfterId("a".into()));
        assert_eq!(
            ids,
            ["d"],
            "a reused id resumes after its newest occurrence"
        );
        assert_eq!(history.len_now(), 5);

        append_ids(capacity_two, &["a", "b", "c", "d"]);
        assert_eq!(capacity_two.len_now(), 2);
        let (ids, start) = replay(capacity_two, ReplayFrom::AfterId("a".into()));
        assert_eq!(ids, ["c", "d"]);
        assert_eq!(
            start.resumed_after, "b",
            "replay resumes after the newest dropped event"
        );
        let page = capacity_two.read_page_now(0, 4, 10).expect("page");
        assert_eq!(page.events.first().map(|e| e.seq), Some(3));
        assert!(page.truncated, "the page says retention dropped events");
        let page = capacity_two.read_page_now(2, 4, 10).expect("page");
        assert!(!page.truncated);
    }

    #[test]
    fn memory_history_conforms() {
        conformance(&MemoryHistory::new(10), &MemoryHistory::new(2));
    }

    #[test]
    fn zero_capacity_keeps_nothing_but_counts() {
        let history = MemoryHistory::new(0);
        append_ids(&history, &["a", "b"]);
        let (ids, start) = replay(&history, ReplayFrom::AfterId("a".into()));
        assert!(ids.is_empty());
        assert_eq!(start.through_seq, 2);
        assert_eq!(start.resumed_after, "b");
    }

    #[test]
    fn page_stops_at_through_seq() {
        let history = MemoryHistory::new(10);
        append_ids(&history, &["a", "b", "c", "d"]);
        let page = history.read_page_now(1, 3, 10).expect("page");
        assert_eq!(
            page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [2, 3]
        );
    }
}
