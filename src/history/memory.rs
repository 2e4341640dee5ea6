//! The in-memory history: a bounded ring of the newest events plus an id index.
//!
//! It forgets everything when the process exits (`--history memory`); the durable store is
//! [`super::DurableHistory`]. One `RwLock` guards the ring: the writer holds it to push a batch,
//! a page read holds it to clone a few `Arc`s, and neither waits on anything while holding it.
//! `Idempotency-Key`s are remembered for their window, at most [`MAX_KEYS`] of them (the oldest
//! forgotten first).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{
    same_content, Append, Appended, HistoryError, KeyRecord, LocalHistory, Page, ReplayFrom,
    ReplayStart, StoredEvent,
};
use crate::idempotency::{Fingerprint, IdempotencyKey};

/// The most `Idempotency-Key`s the in-memory history remembers.
pub const MAX_KEYS: usize = 100_000;

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
    /// Event id → its occurrences (publishers may reuse ids).
    by_id: HashMap<String, Occurrences>,
    /// Remembered `Idempotency-Key`s with their expiry (ms since the epoch)...
    keys: HashMap<IdempotencyKey, (KeyRecord, u64)>,
    /// ...oldest first.
    key_order: VecDeque<(u64, IdempotencyKey)>,
    /// The sequence number the next event gets.
    next_seq: u64,
    /// The id of the newest event already dropped, reported as the replay start when a client
    /// asks for something older than what is left.
    last_dropped_id: Option<String>,
}

/// Where an id occurs in the log.
#[derive(Debug, Clone, Copy)]
struct Occurrences {
    /// The earliest occurrence still kept: where a `Last-Event-ID` naming it resumes.
    first: u64,
    /// The newest: what a retry with this id is compared with.
    last: u64,
}

impl Log {
    fn first_seq(&self) -> u64 {
        self.events.front().map_or(self.next_seq, |e| e.seq)
    }

    fn event_at(&self, seq: u64) -> Option<&Arc<StoredEvent>> {
        let index = usize::try_from(seq.checked_sub(self.first_seq())?).ok()?;
        self.events.get(index)
    }

    /// The key's record, unless it expired.
    fn key(&self, key: &IdempotencyKey, now: u64) -> Option<&KeyRecord> {
        self.keys
            .get(key)
            .filter(|(_, expires)| *expires > now)
            .map(|(record, _)| record)
    }

    fn remember_key(&mut self, key: IdempotencyKey, record: KeyRecord, expires: u64) {
        self.keys.insert(key.clone(), (record, expires));
        self.key_order.push_back((expires, key));
    }

    /// Forgets expired keys, and the oldest beyond [`MAX_KEYS`].
    fn forget_keys(&mut self, now: u64) {
        while let Some((expires, _)) = self.key_order.front() {
            if *expires > now && self.key_order.len() <= MAX_KEYS {
                break;
            }
            if let Some((expires, key)) = self.key_order.pop_front() {
                // A key remembered again since has a later expiry: keep that one.
                if self.keys.get(&key).is_some_and(|(_, e)| *e == expires) {
                    self.keys.remove(&key);
                }
            }
        }
    }

    /// Drops the oldest event.
    fn drop_oldest(&mut self) {
        let Some(dropped) = self.events.pop_front() else {
            return;
        };
        if let Some(occurrences) = self.by_id.get_mut(&dropped.id) {
            if occurrences.last == dropped.seq {
                self.by_id.remove(&dropped.id);
            } else if occurrences.first == dropped.seq {
                // The earliest kept occurrence is now unknown without a scan: the newest one
                // stands for it.
                occurrences.first = occurrences.last;
            }
        }
        self.last_dropped_id = Some(dropped.id.clone());
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
                keys: HashMap::new(),
                key_order: VecDeque::new(),
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

    /// [`LocalHistory::append_at`].
    fn append_locked(&self, batch: Vec<Append>, now: u64) -> Vec<Appended> {
        let mut log = self.write();
        log.forget_keys(now);
        // Encoding happens under the write lock, but the lock only excludes page reads, which
        // are as short; subscribers never wait on it while idle.
        let mut out = Vec::with_capacity(batch.len());
        for Append { event, key, .. } in batch {
            let candidate = StoredEvent::new(log.next_seq, event);
            let fingerprint = key.as_ref().map(|_| Fingerprint::of(&candidate));
            if let (Some(claim), Some(fingerprint)) = (&key, fingerprint) {
                if let Some(record) = log.key(&claim.key, now) {
                    out.push(record.answer(fingerprint));
                    continue;
                }
            }
            let same = log
                .by_id
                .get(&candidate.id)
                .and_then(|o| log.event_at(o.last))
                .filter(|held| same_content(held, &candidate))
                .cloned();
            let (original, answer) = match same {
                Some(held) => {
                    let answer = Appended::Retry {
                        id: held.id.clone(),
                        seq: held.seq,
                    };
                    (held, answer)
                }
                None => {
                    let stored = Arc::new(candidate);
                    log.next_seq += 1;
                    if self.capacity == 0 {
                        log.last_dropped_id = Some(stored.id.clone());
                    } else {
                        let seq = stored.seq;
                        log.by_id
                            .entry(stored.id.clone())
                            .and_modify(|o| o.last = seq)
                            .or_insert(Occurrences {
                                first: seq,
                                last: seq,
                            });
                        log.events.push_back(stored.clone());
                    }
                    (stored.clone(), Appended::Stored(stored))
                }
            };
            if let (Some(claim), Some(fingerprint)) = (key, fingerprint) {
                let expires = now.saturating_add(claim.window.as_millis() as u64);
                let record = KeyRecord {
                    seq: original.seq,
                    id: original.id.clone(),
                    fingerprint,
                };
                log.remember_key(claim.key, record, expires);
            }
            out.push(answer);
            while log.events.len() > self.capacity {
                log.drop_oldest();
            }
        }
        out
    }
}

impl LocalHistory for MemoryHistory {
    const BLOCKING: bool = false;

    fn append_at(&self, batch: Vec<Append>, now: u64) -> Result<Vec<Appended>, HistoryError> {
        Ok(self.append_locked(batch, now))
    }

    fn locate_now(&self, from: &ReplayFrom) -> Result<ReplayStart, HistoryError> {
        let log = self.read();
        let through_seq = log.next_seq - 1;
        if let ReplayFrom::AfterId(id) = from {
            if let Some(occurrences) = log.by_id.get(id) {
                return Ok(ReplayStart {
                    after_seq: occurrences.first,
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
    use crate::event::Event;
    use crate::history::KeyClaim;

    fn event(id: &str) -> Append {
        Event {
            id: id.into(),
            ..Event::new("t", id)
        }
        .into()
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

        // A retry: the same id with the same content is answered with it, not stored.
        let appended = history.append_now(vec![event("b")]).expect("append");
        assert!(
            matches!(&appended[..], [Appended::Retry { id, seq: 2 }] if id == "b"),
            "{appended:?}"
        );
        assert_eq!(history.len_now(), 3);

        // A reused id with other content is a new update; a Last-Event-ID naming it resumes
        // after its earliest occurrence (draft-dunglas-mercure-08).
        let other_a = || {
            Append::from(Event {
                id: "a".into(),
                ..Event::new("t", "other content")
            })
        };
        let appended = history
            .append_now(vec![other_a(), event("d")])
            .expect("append");
        assert!(
            appended.iter().all(|a| a.stored().is_some()),
            "{appended:?}"
        );
        let (ids, _) = replay(history, ReplayFrom::AfterId("a".into()));
        assert_eq!(
            ids,
            ["b", "c", "a", "d"],
            "a reused id resumes after its earliest occurrence"
        );
        assert_eq!(history.len_now(), 5);
        // A retry of the newest occurrence is recognised too.
        let appended = history.append_now(vec![other_a()]).expect("append");
        assert!(
            matches!(&appended[..], [Appended::Retry { seq: 4, .. }]),
            "{appended:?}"
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

    /// A publish with `key`, its data `data`, and an id of its own (generated).
    pub(crate) fn keyed(key: &str, data: &str) -> Append {
        Append {
            event: Event::new("t", data),
            key: Some(KeyClaim {
                key: IdempotencyKey::parse(key.as_bytes()).expect("a valid key"),
                window: std::time::Duration::from_secs(60),
            }),
            stamp: crate::telemetry::Stamp::default(),
        }
    }

    /// How every store treats `Idempotency-Key`s: a retry within the window is answered with
    /// the original id (even in the same batch, even with another generated id), other
    /// content with the key is refused, and after the window the key is new again.
    pub(crate) fn key_conformance(history: &impl LocalHistory) {
        let t0 = 1_000_000;
        let first = history
            .append_at(
                vec![keyed("k1", "x"), keyed("k2", "y"), keyed("k2", "y")],
                t0,
            )
            .expect("append");
        let (Appended::Stored(x), Appended::Stored(y)) = (&first[0], &first[1]) else {
            panic!("new keys store their events: {first:?}");
        };
        assert!(
            matches!(&first[2], Appended::Retry { id, seq } if id == &y.id && *seq == y.seq),
            "a retry in the same batch is recognised: {first:?}"
        );
        assert_eq!(history.len_now(), 2);
        let again = history
            .append_at(vec![keyed("k1", "x"), keyed("k1", "changed")], t0 + 59_000)
            .expect("append");
        assert!(
            matches!(&again[0], Appended::Retry { id, .. } if id == &x.id),
            "a retry with a fresh generated id is the same update: {again:?}"
        );
        assert!(
            matches!(&again[1], Appended::KeyReused { id } if id == &x.id),
            "{again:?}"
        );
        assert_eq!(history.len_now(), 2, "nothing stored");
        let later = history
            .append_at(vec![keyed("k1", "x")], t0 + 61_000)
            .expect("append");
        assert!(
            later[0].stored().is_some(),
            "after the window the key is new: {later:?}"
        );
        assert_eq!(history.len_now(), 3);
    }

    #[test]
    fn memory_history_conforms() {
        conformance(&MemoryHistory::new(10), &MemoryHistory::new(2));
        key_conformance(&MemoryHistory::new(10));
    }

    #[test]
    fn the_memory_history_forgets_the_oldest_keys_beyond_its_cap() {
        let history = MemoryHistory::new(10);
        let batch = (0..=MAX_KEYS)
            .map(|i| keyed(&format!("k{i}"), "x"))
            .collect();
        history.append_at(batch, 1).expect("append");
        let retried = history
            .append_at(
                vec![keyed("k0", "x"), keyed(&format!("k{MAX_KEYS}"), "x")],
                2,
            )
            .expect("append");
        assert!(
            retried[0].stored().is_some(),
            "the oldest key was forgotten"
        );
        assert!(matches!(retried[1], Appended::Retry { .. }), "{retried:?}");
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
