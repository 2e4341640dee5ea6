//! A topic's feed: one queue of live events shared by the subscribers of one exact topic (within
//! a registry shard), each reading it at its own cursor.
//!
//! Why: with a queue per subscriber, fanning one event out to 10,000 subscribers of a topic
//! touches 10,000 queues (a lock, a slot, a reference count each: cache misses, about a fifth
//! of the hub's CPU in the one-publisher fast run). Most subscribers watch one exact topic, and
//! those of a topic all want the same events, so they share this queue instead: the dispatcher
//! appends an event once per feed, and touches a subscriber only to schedule the wake of a stream
//! that waits for the next event (once per pass, not once per event). The stream copies the
//! frames it has not read yet when it runs.
//!
//! Bounded like the per-subscriber queue: the feed keeps at most `capacity` events. Each event
//! counts the subscribers whose next event to read it is, and the subscribers that read
//! everything are counted apart, so an event nobody has left to read is dropped at once (an idle
//! feed holds nothing). An event dropped while some subscriber had not read it makes that
//! subscriber too slow: the dispatcher closes it ([`Appended::lost`]), as a full queue does, and
//! it replays from history when it reconnects. Private events are in the feed for everyone;
//! each subscriber's read keeps those its token allows.
//!
//! Locks: a stream's read holds its queue's lock, then the feed's; the dispatcher and the
//! registry never take a queue's lock while holding a feed's.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::subscriber::{Queued, Subscriber};
use crate::auth::SubscriberGrant;
use crate::telemetry::{LiveEvent, Tracing};

/// The events of one exact topic not yet read by all of its subscribers.
#[derive(Debug)]
pub(crate) struct Feed {
    capacity: usize,
    state: Mutex<FeedState>,
    /// Bytes of every frame appended so far (the dispatcher's pacing count).
    appended_bytes: AtomicU64,
    /// Subscribers scheduled for a wake and not woken yet (the dispatcher's pacing count).
    scheduled: AtomicU64,
}

#[derive(Debug, Default)]
struct FeedState {
    entries: VecDeque<Entry>,
    /// The position of `entries[0]`; positions count every event ever appended.
    first: u64,
    /// Subscribers that read everything: their cursor is the end, `first + entries.len()`.
    caught_up: u64,
    /// Subscribers whose stream waits for the next event (the dispatcher schedules them).
    waiting: Vec<Arc<Subscriber>>,
}

#[derive(Debug)]
struct Entry {
    live: LiveEvent,
    /// Subscribers whose next event to read is this one.
    readers: u64,
}

/// What [`Feed::append`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Appended {
    /// An event some subscriber had not read was dropped to keep the bound: the subscribers
    /// whose cursor is below this position lost it.
    pub(crate) lost: Option<u64>,
}

/// What [`Feed::read`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Read {
    /// This many frames were queued for the subscriber (and its cursor moved to the end).
    Frames(usize),
    /// Nothing for it yet: it is listed among the waiting subscribers.
    Waiting,
    /// Events it had not read were dropped: it is too slow.
    Lost,
}

impl Feed {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            state: Mutex::default(),
            appended_bytes: AtomicU64::new(0),
            scheduled: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FeedState> {
        // Only VecDeque and counter operations happen under this lock: a poisoned state is
        // still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A subscriber joins: it reads the events appended from now on. Returns its cursor.
    pub(crate) fn join(&self) -> u64 {
        let mut state = self.lock();
        state.caught_up += 1;
        state.end()
    }

    /// A subscriber at `cursor` leaves (`id` is taken out of the waiting list, if it is there).
    pub(crate) fn leave(&self, cursor: u64, id: u64, listed: bool) {
        let mut state = self.lock();
        if listed {
            state.waiting.retain(|subscriber| subscriber.info.id != id);
        }
        state.move_off(cursor);
        state.trim();
    }

    /// Appends an event; moves the subscribers that were waiting for it into `waiting`.
    pub(crate) fn append(&self, live: &LiveEvent, waiting: &mut Vec<Arc<Subscriber>>) -> Appended {
        let mut state = self.lock();
        let readers = std::mem::take(&mut state.caught_up);
        state.entries.push_back(Entry {
            live: live.clone(),
            readers,
        });
        let mut appended = Appended::default();
        while state.entries.len() > self.capacity {
            if let Some(dropped) = state.entries.pop_front() {
                state.first += 1;
                if dropped.readers > 0 {
                    appended.lost = Some(state.first);
                }
            }
        }
        state.trim();
        for subscriber in &state.waiting {
            subscriber.queue.unlist();
        }
        waiting.append(&mut state.waiting);
        drop(state);
        self.appended_bytes
            .fetch_add(live.event.frame.len() as u64, Ordering::Relaxed);
        appended
    }

    /// Queues into `out` the frames after `cursor` that `grant` allows, and moves the cursor to
    /// the end. With nothing for it, lists `me` among the waiting subscribers (unless `listed`
    /// says it is there already), under the same lock: an append cannot come in between.
    pub(crate) fn read(
        &self,
        cursor: &mut u64,
        me: &Arc<Subscriber>,
        grant: &SubscriberGrant,
        tracing: &Tracing,
        out: &mut VecDeque<Queued>,
    ) -> Read {
        let mut state = self.lock();
        if *cursor < state.first {
            return Read::Lost;
        }
        let start = (*cursor - state.first) as usize;
        let mut frames = 0;
        if start < state.entries.len() {
            for entry in state.entries.range(start..) {
                let event = &entry.live.event;
                if event.private && !grant.allows_private(&event.topics) {
                    continue;
                }
                let trace = match &entry.live.stamp.trace {
                    Some(trace) if tracing.sample_delivery() => Some(trace.clone()),
                    _ => None,
                };
                out.push_back(Queued {
                    seq: event.seq,
                    frame: event.frame.clone(),
                    accepted_us: entry.live.stamp.accepted_us,
                    trace,
                });
                frames += 1;
            }
            state.move_off(*cursor);
            state.caught_up += 1;
            *cursor = state.end();
            state.trim();
        }
        if frames > 0 {
            return Read::Frames(frames);
        }
        if !me.queue.listed() {
            me.queue.list();
            state.waiting.push(me.clone());
        }
        Read::Waiting
    }

    /// The pacing count: bytes appended so far.
    pub(crate) fn appended_bytes(&self) -> u64 {
        self.appended_bytes.load(Ordering::Relaxed)
    }

    /// The pacing count: subscribers scheduled and not woken yet.
    pub(crate) fn scheduled(&self) -> u64 {
        self.scheduled.load(Ordering::Relaxed)
    }

    pub(crate) fn add_scheduled(&self) {
        self.scheduled.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn remove_scheduled(&self) {
        self.scheduled.fetch_sub(1, Ordering::Relaxed);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

impl FeedState {
    fn end(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    /// A subscriber's cursor leaves `cursor` (it read on, or left).
    fn move_off(&mut self, cursor: u64) {
        if cursor < self.first {
            // What it had not read was dropped already, and its count with it.
            return;
        }
        match self.entries.get_mut((cursor - self.first) as usize) {
            Some(entry) => entry.readers = entry.readers.saturating_sub(1),
            None => self.caught_up = self.caught_up.saturating_sub(1),
        }
    }

    /// Drops the oldest events that nobody has left to read.
    fn trim(&mut self) {
        while self.entries.front().is_some_and(|entry| entry.readers == 0) {
            self.entries.pop_front();
            self.first += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::event::Event;
    use crate::history::StoredEvent;
    use crate::hub::subscriber::{SubscriberInfo, SubscriberQueue};
    use crate::topic::TopicSelector;

    fn subscriber(id: u64, private: &[&str]) -> Arc<Subscriber> {
        Arc::new(Subscriber {
            info: SubscriberInfo {
                id,
                uri: format!("urn:test:{id}"),
                topics: vec!["t".into()],
                matcher_types: Vec::new(),
                remote_addr: None,
                payload: None,
                connected_at: SystemTime::now(),
            },
            selectors: vec![TopicSelector::parse_mercure07("t")],
            exact_only: true,
            grant: SubscriberGrant {
                private_selectors: private
                    .iter()
                    .map(|s| TopicSelector::parse_mercure07(s))
                    .collect(),
                ..Default::default()
            },
            announcements: Default::default(),
            queue: SubscriberQueue::new(8),
            feed: Default::default(),
        })
    }

    fn live(seq: u64, private: bool) -> LiveEvent {
        let mut event = Event::new("t", format!("event {seq}"));
        event.private = private;
        LiveEvent::new(Arc::new(StoredEvent::new(seq, event)), Default::default())
    }

    /// One read by `me` from `cursor`: the sequence numbers it got, or how it ended.
    fn read(feed: &Feed, me: &Arc<Subscriber>, cursor: &mut u64) -> Result<Vec<u64>, Read> {
        let mut out = VecDeque::new();
        match feed.read(cursor, me, &me.grant, &Tracing::default(), &mut out) {
            Read::Frames(n) => {
                assert_eq!(n, out.len());
                Ok(out.iter().map(|queued| queued.seq).collect())
            }
            other => Err(other),
        }
    }

    #[test]
    fn each_subscriber_reads_every_event_once_and_a_read_event_is_dropped_at_once() {
        let feed = Feed::new(8);
        let (a, b) = (subscriber(1, &[]), subscriber(2, &[]));
        let (mut at_a, mut at_b) = (feed.join(), feed.join());
        let mut woken = Vec::new();
        feed.append(&live(1, false), &mut woken);
        feed.append(&live(2, false), &mut woken);
        assert_eq!(read(&feed, &a, &mut at_a), Ok(vec![1, 2]));
        assert_eq!(feed.len(), 2, "b has not read them");
        feed.append(&live(3, false), &mut woken);
        assert_eq!(read(&feed, &b, &mut at_b), Ok(vec![1, 2, 3]));
        assert_eq!(feed.len(), 1, "only a has 3 left to read");
        assert_eq!(read(&feed, &a, &mut at_a), Ok(vec![3]));
        assert_eq!(feed.len(), 0, "an idle feed holds nothing");
        assert_eq!(read(&feed, &a, &mut at_a), Err(Read::Waiting));
        assert!(woken.is_empty(), "nobody was waiting");
    }

    #[test]
    fn a_subscriber_that_joins_later_reads_from_then_on_and_one_that_leaves_frees_its_events() {
        let feed = Feed::new(8);
        let (a, b) = (subscriber(1, &[]), subscriber(2, &[]));
        let at_a = feed.join();
        let mut woken = Vec::new();
        feed.append(&live(1, false), &mut woken);
        let mut at_b = feed.join();
        feed.append(&live(2, false), &mut woken);
        assert_eq!(read(&feed, &b, &mut at_b), Ok(vec![2]));
        assert_eq!(feed.len(), 2, "a has both to read");
        feed.leave(at_a, a.info.id, a.queue.listed());
        assert_eq!(feed.len(), 0);
    }

    #[test]
    fn a_waiting_subscriber_is_handed_to_the_next_append_once() {
        let feed = Feed::new(8);
        let a = subscriber(1, &[]);
        let mut at_a = feed.join();
        assert_eq!(read(&feed, &a, &mut at_a), Err(Read::Waiting));
        assert_eq!(read(&feed, &a, &mut at_a), Err(Read::Waiting));
        let mut woken = Vec::new();
        feed.append(&live(1, false), &mut woken);
        assert_eq!(woken.len(), 1, "listed once");
        assert!(!a.queue.listed());
        woken.clear();
        feed.append(&live(2, false), &mut woken);
        assert!(woken.is_empty(), "it did not wait again");
        assert_eq!(read(&feed, &a, &mut at_a), Ok(vec![1, 2]));
    }

    #[test]
    fn a_subscriber_past_the_bound_lost_events_and_the_others_did_not() {
        let feed = Feed::new(2);
        let (slow, fast) = (subscriber(1, &[]), subscriber(2, &[]));
        let (mut at_slow, mut at_fast) = (feed.join(), feed.join());
        let mut woken = Vec::new();
        for seq in 1..=2 {
            assert_eq!(feed.append(&live(seq, false), &mut woken).lost, None);
            assert_eq!(read(&feed, &fast, &mut at_fast), Ok(vec![seq]));
        }
        let appended = feed.append(&live(3, false), &mut woken);
        let first = appended.lost.expect("slow had not read event 1");
        assert!(at_slow < first && at_fast >= first);
        assert_eq!(read(&feed, &fast, &mut at_fast), Ok(vec![3]));
        assert_eq!(read(&feed, &slow, &mut at_slow), Err(Read::Lost));
    }

    #[test]
    fn a_private_event_is_read_only_by_subscribers_its_topics_allow() {
        let feed = Feed::new(8);
        let (allowed, other) = (subscriber(1, &["t"]), subscriber(2, &["u"]));
        let (mut at_allowed, mut at_other) = (feed.join(), feed.join());
        let mut woken = Vec::new();
        feed.append(&live(1, true), &mut woken);
        assert_eq!(read(&feed, &other, &mut at_other), Err(Read::Waiting));
        feed.append(&live(2, false), &mut woken);
        assert_eq!(woken.len(), 1, "other waited for a frame it may read");
        assert_eq!(read(&feed, &other, &mut at_other), Ok(vec![2]));
        assert_eq!(read(&feed, &allowed, &mut at_allowed), Ok(vec![1, 2]));
        assert_eq!(feed.len(), 0);
    }
}
