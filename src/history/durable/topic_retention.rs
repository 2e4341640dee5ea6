//! Retention per topic on the durable history ([`crate::history::retention_rules`] says what
//! the rules mean): which events the rules let go, applied from the writer's periodic trim.
//!
//! The index lives in memory ([`TopicIndex`]): for each topic under a rule with limits, the
//! events of that topic it still keeps, oldest first; for each event whose topics are all under
//! such rules, how many of them still keep it. An event leaves when the last one lets it go.
//! Each trim (about every second, from the writer, so never concurrently with an append):
//! 1. forgets what the global limits dropped since (everything below the store's `first_seq`);
//! 2. reads the events appended since the last trim, at most [`SCAN_BUDGET`] (one read
//!    transaction), and adds them: a topic over its `max_events` lets its oldest go at once;
//! 3. lets go what is older than its rule's `max_age` (one queue per rule, in store order);
//! 4. removes what was let go from the file, at most `TRIM_BUDGET` per write transaction
//!    (`retention::drop_ruled`), with the ids, so that a client resuming from one is told.
//!
//! Costs: memory for each kept event of a ruled topic (its sequence number and store time, per
//! ruled topic) and work proportional to the events appended and dropped, never to the number of
//! topics. After a restart the index is rebuilt by reading the file from its oldest event,
//! [`SCAN_BUDGET`] events per trim: until it caught up, older events of ruled topics wait for
//! their rule a little longer (the global limits apply throughout).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, MutexGuard};

use redb::ReadableDatabase;

use super::file::{save_state, State, EVENTS};
use super::retention::{drop_ruled, now_ms, TRIM_BUDGET};
use super::DurableHistory;
use crate::history::record::decode_topics;
use crate::history::{HistoryError, RetentionRules, Sources};

/// Most events one trim reads into the index.
const SCAN_BUDGET: usize = 8192;

/// The events of one ruled topic that it still keeps.
#[derive(Debug)]
struct Kept {
    /// Index of the topic's rule.
    rule: usize,
    /// `(seq, stored_at_ms)`, oldest first.
    events: VecDeque<(u64, u64)>,
}

/// What retention per topic knows of the file (see the module doc).
#[derive(Debug)]
pub(super) struct TopicIndex {
    rules: RetentionRules,
    /// Events up to this sequence number are indexed.
    indexed_through: u64,
    /// Ruled topic → the events it keeps.
    topics: HashMap<Arc<str>, Kept>,
    /// Event → how many of its ruled topics still keep it. An event with a topic under no rule
    /// is not here: the rules never drop it.
    holders: HashMap<u64, u32>,
    /// Every `(seq, topic)` of `topics`, in store order, to forget those the global limits
    /// dropped without looking at every topic.
    order: VecDeque<(u64, Arc<str>)>,
    /// Per rule (by index): `(expires_at_ms, seq, topic)` in store order, for rules with a
    /// `max_age`.
    expiry: Vec<VecDeque<(u64, u64, Arc<str>)>>,
    /// Let go, not yet removed from the file.
    pending: BTreeSet<u64>,
}

/// One fewer topic keeps `seq`; the last one lets it go.
fn release(holders: &mut HashMap<u64, u32>, pending: &mut BTreeSet<u64>, seq: u64) {
    if let Some(count) = holders.get_mut(&seq) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            holders.remove(&seq);
            pending.insert(seq);
        }
    }
}

impl TopicIndex {
    pub(super) fn new(rules: RetentionRules) -> Self {
        let expiry = rules.rules().iter().map(|_| VecDeque::new()).collect();
        Self {
            rules,
            indexed_through: 0,
            topics: HashMap::new(),
            holders: HashMap::new(),
            order: VecDeque::new(),
            expiry,
            pending: BTreeSet::new(),
        }
    }

    /// Forgets every event below `first_seq` (gone by the global limits).
    fn forget_below(&mut self, first_seq: u64) {
        while let Some((seq, topic)) = self.order.front().cloned() {
            if seq >= first_seq {
                break;
            }
            self.order.pop_front();
            if let Some(kept) = self.topics.get_mut(&topic) {
                while kept.events.front().is_some_and(|(s, _)| *s <= seq) {
                    kept.events.pop_front();
                }
                if kept.events.is_empty() {
                    self.topics.remove(&topic);
                }
            }
            self.holders.remove(&seq);
        }
        for queue in &mut self.expiry {
            while queue.front().is_some_and(|(_, seq, _)| *seq < first_seq) {
                queue.pop_front();
            }
        }
        self.pending = self.pending.split_off(&first_seq);
        self.indexed_through = self.indexed_through.max(first_seq.saturating_sub(1));
    }

    /// Adds the event `seq`, stored at `stored_at_ms` with `topics`.
    fn add(&mut self, seq: u64, stored_at_ms: u64, topics: &[String]) {
        let event = self.rules.classify(topics);
        if event.ruled.is_empty() {
            return;
        }
        if !event.pinned {
            self.holders
                .insert(seq, u32::try_from(event.ruled.len()).unwrap_or(u32::MAX));
        }
        for (topic, rule_index) in event.ruled {
            let rule = &self.rules.rules()[rule_index];
            let key: Arc<str> = match self.topics.get_key_value(topic.as_str()) {
                Some((key, _)) => key.clone(),
                None => Arc::from(topic),
            };
            let kept = self.topics.entry(key.clone()).or_insert_with(|| Kept {
                rule: rule_index,
                events: VecDeque::new(),
            });
            kept.rule = rule_index;
            kept.events.push_back((seq, stored_at_ms));
            self.order.push_back((seq, key.clone()));
            if let Some(age) = rule.max_age_ms() {
                self.expiry[rule_index].push_back((stored_at_ms.saturating_add(age), seq, key));
            }
            if let Some(max) = rule.max_events {
                while kept.events.len() as u64 > max {
                    if let Some((old, _)) = kept.events.pop_front() {
                        release(&mut self.holders, &mut self.pending, old);
                    }
                }
            }
        }
    }

    /// Lets go of what is older than its rule's `max_age` at `now_ms`.
    fn expire(&mut self, now_ms: u64) {
        for queue in &mut self.expiry {
            while let Some((expires_at, seq, topic)) = queue.front().cloned() {
                // Kept while its age is at most `max_age`.
                if expires_at >= now_ms {
                    break;
                }
                queue.pop_front();
                let Some(kept) = self.topics.get_mut(&topic) else {
                    continue;
                };
                // Already let go by `max_events` when its front is newer.
                while kept.events.front().is_some_and(|(s, _)| *s <= seq) {
                    if let Some((old, _)) = kept.events.pop_front() {
                        release(&mut self.holders, &mut self.pending, old);
                    }
                }
                if kept.events.is_empty() {
                    self.topics.remove(&topic);
                }
            }
        }
    }
}

impl DurableHistory {
    fn lock_topic_index(&self) -> Option<MutexGuard<'_, TopicIndex>> {
        // The index is only changed by whole steps of a trim; a poisoned one is still usable.
        self.topic_index
            .as_ref()
            .map(|index| index.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// One trim of retention per topic (see the module doc); nothing without rules.
    ///
    /// # Errors
    /// [`HistoryError::Store`] when the file cannot be read or written,
    /// [`HistoryError::Damaged`] when a record to drop does not decode.
    pub(super) fn trim_topics(&self) -> Result<(), HistoryError> {
        self.trim_topics_at(now_ms())
    }

    /// [`Self::trim_topics`] as if the time were `now_ms` (tests move the clock).
    pub(super) fn trim_topics_at(&self, now_ms: u64) -> Result<(), HistoryError> {
        // Only the writer trims, so the index is never contended: holding it during the file's
        // I/O blocks nobody.
        let Some(mut index) = self.lock_topic_index() else {
            return Ok(());
        };
        let db = self.database()?;
        let state = self.lock_state().clone();
        index.forget_below(state.first_seq);
        let through = state.next_seq - 1;
        if index.indexed_through < through {
            let mut scan = || -> Result<(), HistoryError> {
                let txn = db.begin_read()?;
                let table = txn.open_table(EVENTS)?;
                let mut read = 0;
                for entry in table.range(index.indexed_through + 1..=through)? {
                    let (key, value) = entry?;
                    let seq = key.value();
                    match decode_topics(value.value()) {
                        Ok((stored_at_ms, topics)) => index.add(seq, stored_at_ms, &topics),
                        // Replay reports it; retention goes on with the others.
                        Err(error) => tracing::warn!(seq, %error, "undecodable history record"),
                    }
                    index.indexed_through = seq;
                    read += 1;
                    if read == SCAN_BUDGET {
                        return Ok(());
                    }
                }
                index.indexed_through = through;
                Ok(())
            };
            let scanned = scan();
            scanned.map_err(|e| self.failed(e))?;
        }
        index.expire(now_ms);
        if index.pending.is_empty() {
            return Ok(());
        }
        let batch: Vec<u64> = index.pending.iter().take(TRIM_BUDGET).copied().collect();
        let mut state = self.lock_state().clone();
        let commit = |state: &mut State| -> Result<Vec<(u64, String)>, HistoryError> {
            let txn = db.begin_write()?;
            let removed = drop_ruled(&txn, state, &batch)?;
            save_state(&txn, state)?;
            txn.commit()?;
            Ok(removed)
        };
        let removed = commit(&mut state).map_err(|e| {
            let e = self.failed(e);
            tracing::debug!(error = %Sources::of(&e), "retention per topic will retry");
            e
        })?;
        *self.lock_state() = state;
        for seq in &batch {
            index.pending.remove(seq);
        }
        let mut recent = self.lock_recent();
        for (seq, id) in &removed {
            recent.forget(*seq, id);
        }
        tracing::trace!(dropped = removed.len(), "retention per topic");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use super::*;
    use crate::event::Event;
    use crate::history::memory::tests::replay;
    use crate::history::{
        LocalHistory, ReplayFrom, Retention, RetentionRule, RetentionRules, SyncPolicy,
    };

    const ROOMS: &str = "https://example.com/rooms/{id}";
    const TICKER: &str = "https://example.com/ticker/{symbol}";

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ssehub-rules-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// A room keeps 2 events, a ticker its events for a minute.
    fn two_rules() -> RetentionRules {
        RetentionRules::new(vec![
            RetentionRule::new(ROOMS, Some(2), None).expect("rooms"),
            RetentionRule::new(TICKER, None, Some(Duration::from_secs(60))).expect("ticker"),
        ])
    }

    fn open(dir: &Path, max_events: u64) -> DurableHistory {
        let retention = Retention {
            max_events,
            max_age: None,
            max_bytes: None,
        };
        DurableHistory::open(dir, retention, SyncPolicy::Batch)
            .expect("open")
            .with_rules(two_rules())
    }

    fn event(id: &str, topics: &[&str]) -> Event {
        let mut event = Event::new(format!("https://example.com/{}", topics[0]), id);
        event.id = id.into();
        event.topics = topics
            .iter()
            .map(|t| format!("https://example.com/{t}"))
            .collect();
        event
    }

    /// Rooms 1, 2 and 9, ticker A, and a topic under no rule; `both` is on ticker A and room 9.
    fn publish_mix(history: &DurableHistory) {
        let events = [
            ("r1a", &["rooms/1"][..]),
            ("t1", &["ticker/A"]),
            ("o1", &["other"]),
            ("r1b", &["rooms/1"]),
            ("r2a", &["rooms/2"]),
            ("both", &["ticker/A", "rooms/9"]),
            ("r1c", &["rooms/1"]),
            ("t2", &["ticker/A"]),
            ("r1d", &["rooms/1"]),
        ];
        history
            .append_now(events.iter().map(|(id, t)| event(id, t).into()).collect())
            .expect("append");
    }

    #[test]
    fn two_rules_keep_per_topic_and_replay_from_earliest_skips_what_they_dropped() {
        let dir = temp_dir("two");
        let history = open(&dir, 0);
        publish_mix(&history);
        let now = now_ms();
        history.trim_topics_at(now).expect("trim");
        let (ids, _) = replay(&history, ReplayFrom::Earliest);
        assert_eq!(
            ids,
            ["t1", "o1", "r2a", "both", "r1c", "t2", "r1d"],
            "each room keeps its 2 newest events"
        );
        // A minute and more later, the ticker's events are gone, except the one room 9 keeps.
        history.trim_topics_at(now + 61_000).expect("trim");
        let (ids, start) = replay(&history, ReplayFrom::Earliest);
        assert_eq!(ids, ["o1", "r2a", "both", "r1c", "r1d"]);
        assert_eq!(start.resumed_after, "earliest");
        assert_eq!(history.len_now(), 5);
        // A kept event: replay after it, no page truncated (the helper checks), no gap.
        let (ids, start) = replay(&history, ReplayFrom::AfterId("o1".into()));
        assert_eq!(ids, ["r2a", "both", "r1c", "r1d"]);
        assert_eq!(start.resumed_after, "o1");
        // A page that starts in a hole the rules left is no loss.
        let page = history.read_page_now(0, 9, 10).expect("page");
        assert!(!page.truncated);
        // An event a rule dropped: not found, so replay resumes from the oldest kept, told so.
        for dropped in ["r1a", "t2"] {
            let from = ReplayFrom::AfterId(dropped.into());
            assert_eq!(history.locate_in_memory(&from), None, "not in memory");
            assert_eq!(
                history.locate_now(&from).expect("locate"),
                crate::history::ReplayStart {
                    after_seq: 0,
                    through_seq: 9,
                    resumed_after: "earliest".into()
                },
                "{dropped} is forgotten"
            );
            let (ids, start) = replay(&history, ReplayFrom::AfterId(dropped.into()));
            assert_eq!(ids.len(), 5);
            assert_eq!(start.resumed_after, "earliest");
        }
        drop(history);

        // Reopened: the holes are known, the index is rebuilt, nothing else goes.
        let history = open(&dir, 0);
        assert_eq!(history.len_now(), 5);
        history.trim_topics_at(now + 62_000).expect("trim");
        let (ids, _) = replay(&history, ReplayFrom::Earliest);
        assert_eq!(ids, ["o1", "r2a", "both", "r1c", "r1d"]);
        history
            .append_now(vec![event("r1e", &["rooms/1"]).into()])
            .expect("append");
        history.trim_topics_at(now + 62_000).expect("trim");
        let (ids, _) = replay(&history, ReplayFrom::Earliest);
        assert_eq!(ids, ["o1", "r2a", "both", "r1d", "r1e"]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_global_limits_still_bound_the_store_and_count_only_kept_events() {
        let dir = temp_dir("global");
        let history = open(&dir, 6);
        publish_mix(&history); // the global limit drops r1a, t1 and o1 at once
        history.trim_topics_at(now_ms()).expect("trim"); // room 1 keeps r1c, r1d: r1b goes
        assert_eq!(history.len_now(), 5);
        // Six kept with this one: the holes do not count, so nothing more is dropped.
        history
            .append_now(vec![event("o2", &["other"]).into()])
            .expect("append");
        let (ids, start) = replay(&history, ReplayFrom::Earliest);
        assert_eq!(ids, ["r2a", "both", "r1c", "t2", "r1d", "o2"]);
        assert_eq!(
            start.resumed_after, "o1",
            "the newest event the global limit dropped"
        );
        // A seventh: the global limit drops the oldest kept event.
        history
            .append_now(vec![event("o3", &["other"]).into()])
            .expect("append");
        let (ids, _) = replay(&history, ReplayFrom::Earliest);
        assert_eq!(ids, ["both", "r1c", "t2", "r1d", "o2", "o3"]);
        // A replay from before the global drop is still told that it lost events.
        let page = history.read_page_now(0, 11, 10).expect("page");
        assert!(page.truncated);
        let _ = std::fs::remove_dir_all(dir);
    }
}
