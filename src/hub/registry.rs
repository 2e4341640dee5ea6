//! The registry of live subscribers, and the fan-out over it.
//!
//! Sharded by subscriber id: subscribing or leaving write-locks one shard, briefly; a fan-out
//! read-locks one shard at a time and never waits on anything while holding it (pushing into a
//! subscriber queue never blocks). There is no lock shared by every publish: publishers and
//! subscribers meet only on a shard, for the time of a few pointer pushes.
//!
//! Within a shard, subscribers whose selectors are all exact topics are indexed by topic, so an
//! event only visits the subscribers of its own topics plus those with `*`, URI templates or URL patterns.
//! With `shared_feeds`, those with one exact topic share its feed (`feed.rs`): the event is appended there once, and
//! only the streams waiting for it are visited, to schedule their wake.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::feed::Feed;
use super::subscriber::{PushOutcome, Queued, Subscriber, SubscriberId};
use crate::telemetry::{LiveEvent, Tracing};
use crate::topic::selector::EventTopics;

/// Why a subscriber could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RegisterError {
    /// The configured maximum number of subscribers is reached.
    Full,
    /// The hub is shutting down.
    ShuttingDown,
}

#[derive(Debug, Default)]
struct Shard {
    by_id: HashMap<SubscriberId, Arc<Subscriber>>,
    /// Exact-only subscribers of several topics, under each of their topics.
    by_topic: HashMap<Box<str>, Vec<Arc<Subscriber>>>,
    /// Subscribers of one exact topic, with the feed they share.
    feeds: HashMap<Box<str>, FeedGroup>,
    /// Subscribers with at least one `*`, template or URL-pattern selector: checked against
    /// every event.
    by_pattern: Vec<Arc<Subscriber>>,
}

/// A topic's feed and its subscribers (in this shard).
#[derive(Debug)]
struct FeedGroup {
    feed: Arc<Feed>,
    members: Vec<Arc<Subscriber>>,
}

/// Counts of one fan-out, for metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FanOut {
    pub(crate) delivered: usize,
    pub(crate) overflowed: usize,
    /// Bytes queued for streams scheduled and not yet woken (see `SubscriberQueue::push`).
    pub(crate) counted_bytes: u64,
}

impl FanOut {
    fn add(&mut self, other: FanOut) {
        self.delivered += other.delivered;
        self.overflowed += other.overflowed;
        self.counted_bytes += other.counted_bytes;
    }
}

#[derive(Debug)]
pub(crate) struct Registry {
    shards: Box<[RwLock<Shard>]>,
    len: AtomicUsize,
    /// Topic selectors of the registered subscribers, for metrics.
    subscriptions: AtomicUsize,
    /// [`super::HubConfig::max_subscribers`], changeable while the hub runs
    /// ([`super::Hub::set_max_subscribers`]): lowering it refuses new subscribers only, and
    /// never ends an open stream.
    max_subscribers: AtomicUsize,
    /// [`super::HubConfig::shared_feeds`]: subscribers of one exact topic share its feed.
    shared_feeds: bool,
    closed: AtomicBool,
}

impl Registry {
    pub(crate) fn new(shard_count: usize, max_subscribers: usize, shared_feeds: bool) -> Self {
        Self {
            shards: (0..shard_count.max(1)).map(|_| RwLock::default()).collect(),
            len: AtomicUsize::new(0),
            subscriptions: AtomicUsize::new(0),
            max_subscribers: AtomicUsize::new(max_subscribers),
            shared_feeds,
            closed: AtomicBool::new(false),
        }
    }

    fn shard(&self, id: SubscriberId) -> &RwLock<Shard> {
        // The modulo keeps the index in range; the slice is never empty (`max(1)` above).
        &self.shards[(id % self.shards.len() as u64) as usize]
    }

    // Only HashMap and Vec operations run under these locks, so a poisoned lock still guards
    // consistent data.
    fn read(lock: &RwLock<Shard>) -> RwLockReadGuard<'_, Shard> {
        lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(lock: &RwLock<Shard>) -> RwLockWriteGuard<'_, Shard> {
        lock.write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub(crate) fn max_subscribers(&self) -> usize {
        self.max_subscribers.load(Ordering::Relaxed)
    }

    pub(crate) fn set_max_subscribers(&self, max: usize) {
        self.max_subscribers.store(max, Ordering::Relaxed);
    }

    pub(crate) fn subscriptions(&self) -> usize {
        self.subscriptions.load(Ordering::Relaxed)
    }

    pub(crate) fn insert(&self, subscriber: Arc<Subscriber>) -> Result<(), RegisterError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(RegisterError::ShuttingDown);
        }
        let previous = self.len.fetch_add(1, Ordering::AcqRel);
        if previous >= self.max_subscribers() {
            self.len.fetch_sub(1, Ordering::AcqRel);
            return Err(RegisterError::Full);
        }
        let mut shard = Self::write(self.shard(subscriber.info.id));
        if let Some(topic) = subscriber.reads_a_feed().filter(|_| self.shared_feeds) {
            let group = shard
                .feeds
                .entry(topic.into())
                .or_insert_with(|| FeedGroup {
                    feed: Arc::new(Feed::new(subscriber.queue.capacity())),
                    members: Vec::new(),
                });
            // Set once: a subscriber is inserted once.
            if subscriber.feed.set(group.feed.clone()).is_ok() {
                subscriber.queue.set_cursor(group.feed.join());
                group.members.push(subscriber.clone());
            }
        } else if subscriber.exact_only {
            for selector in &subscriber.selectors {
                if let Some(topic) = selector.as_exact() {
                    let list = shard.by_topic.entry(topic.into()).or_default();
                    // A subscriber listing the same topic twice is indexed once.
                    if !list.iter().any(|s| s.info.id == subscriber.info.id) {
                        list.push(subscriber.clone());
                    }
                }
            }
        } else {
            shard.by_pattern.push(subscriber.clone());
        }
        let id = subscriber.info.id;
        self.subscriptions
            .fetch_add(subscriber.selectors.len(), Ordering::Relaxed);
        shard.by_id.insert(id, subscriber);
        drop(shard);
        if self.closed.load(Ordering::Acquire) {
            // A shutdown began while we inserted, and its sweep may have run before our insert.
            self.remove(id);
            return Err(RegisterError::ShuttingDown);
        }
        Ok(())
    }

    /// Removes a subscriber; returns it when it was still registered (exactly one caller gets it).
    pub(crate) fn remove(&self, id: SubscriberId) -> Option<Arc<Subscriber>> {
        let mut shard = Self::write(self.shard(id));
        let subscriber = shard.by_id.remove(&id)?;
        if let Some(topic) = subscriber.feed.get().and(subscriber.reads_a_feed()) {
            if let Some(group) = shard.feeds.get_mut(topic) {
                group.members.retain(|s| s.info.id != id);
                subscriber.leave_feed();
                if group.members.is_empty() {
                    shard.feeds.remove(topic);
                }
            }
        } else if subscriber.exact_only {
            for selector in &subscriber.selectors {
                if let Some(topic) = selector.as_exact() {
                    if let Some(list) = shard.by_topic.get_mut(topic) {
                        list.retain(|s| s.info.id != id);
                        if list.is_empty() {
                            shard.by_topic.remove(topic);
                        }
                    }
                }
            }
        } else {
            shard.by_pattern.retain(|s| s.info.id != id);
        }
        drop(shard);
        self.len.fetch_sub(1, Ordering::AcqRel);
        self.subscriptions
            .fetch_sub(subscriber.selectors.len(), Ordering::Relaxed);
        Some(subscriber)
    }

    /// Pushes one event to every subscriber that wants it. Adds the ids whose queue overflowed
    /// to `overflowed` (the caller removes them: we hold a read lock while iterating) and the
    /// subscribers whose stream was waiting to `scheduled` (the caller wakes them, a slice at a
    /// time).
    pub(crate) fn dispatch(
        &self,
        live: &LiveEvent,
        tracing: &Tracing,
        overflowed: &mut Vec<SubscriberId>,
        scheduled: &mut Vec<Arc<Subscriber>>,
    ) -> FanOut {
        let mut fan_out = FanOut::default();
        let stored = &*live.event;
        let topics = &stored.topics;
        // Parsed (as URLs) at most once for this event, when a URL-pattern subscriber asks.
        let event_topics = EventTopics::new(topics);
        for lock in self.shards.iter() {
            let shard = Self::read(lock);
            if shard.by_id.is_empty() {
                continue;
            }
            let mut deliver = |subscriber: &Arc<Subscriber>| {
                // A traced event's deliveries are sampled here; the others carry no trace.
                let trace = match &live.stamp.trace {
                    Some(trace) if tracing.sample_delivery() => Some(trace.clone()),
                    _ => None,
                };
                let pushed = subscriber.queue.push(Queued {
                    seq: stored.seq,
                    frame: stored.frame.clone(),
                    accepted_us: live.stamp.accepted_us,
                    trace,
                });
                match pushed.outcome {
                    PushOutcome::Queued => fan_out.delivered += 1,
                    PushOutcome::Overflowed => {
                        fan_out.overflowed += 1;
                        overflowed.push(subscriber.info.id);
                    }
                    PushOutcome::Closed => {}
                }
                fan_out.counted_bytes += pushed.counted_bytes;
                if pushed.schedule {
                    scheduled.push(subscriber.clone());
                }
            };
            for (index, topic) in topics.iter().enumerate() {
                let Some(list) = shard.by_topic.get(topic.as_str()) else {
                    continue;
                };
                for subscriber in list {
                    // An exact subscriber of two of the event's topics gets it once: from the
                    // first topic it matches.
                    if index > 0
                        && topics[..index].iter().any(|earlier| {
                            subscriber
                                .selectors
                                .iter()
                                .any(|s| s.as_exact() == Some(earlier))
                        })
                    {
                        continue;
                    }
                    if stored.private && !subscriber.grant.allows_private(topics) {
                        continue;
                    }
                    deliver(subscriber);
                }
            }
            for subscriber in &shard.by_pattern {
                if subscriber.wants_in(stored, &event_topics) {
                    deliver(subscriber);
                }
            }
            for (index, topic) in topics.iter().enumerate() {
                // An event listing a topic twice is appended to its feed once.
                if topics[..index].contains(topic) {
                    continue;
                }
                if let Some(group) = shard.feeds.get(topic.as_str()) {
                    fan_out.add(Self::append(group, live, overflowed, scheduled));
                }
            }
        }
        fan_out
    }

    /// Appends `live` to a feed, and schedules the wake of its streams that waited for it.
    fn append(
        group: &FeedGroup,
        live: &LiveEvent,
        overflowed: &mut Vec<SubscriberId>,
        scheduled: &mut Vec<Arc<Subscriber>>,
    ) -> FanOut {
        let feed = &group.feed;
        let appended_before = feed.appended_bytes();
        let first_new = scheduled.len();
        let appended = feed.append(live, scheduled);
        // Keep only those still waiting (not closed, not run meanwhile).
        let mut kept = first_new;
        for n in first_new..scheduled.len() {
            if scheduled[n].queue.schedule_feed(appended_before) {
                feed.add_scheduled();
                scheduled.swap(kept, n);
                kept += 1;
            }
        }
        scheduled.truncate(kept);
        let stored = &*live.event;
        let delivered = if stored.private {
            group
                .members
                .iter()
                .filter(|s| s.grant.allows_private(&stored.topics))
                .count()
        } else {
            group.members.len()
        };
        let mut lost = 0;
        if let Some(first) = appended.lost {
            // Rare (a subscriber too slow): one pass over the feed's subscribers.
            for subscriber in &group.members {
                if subscriber.queue.cursor() < first {
                    overflowed.push(subscriber.info.id);
                    lost += 1;
                }
            }
        }
        FanOut {
            delivered,
            overflowed: lost,
            counted_bytes: stored.frame.len() as u64 * feed.scheduled(),
        }
    }

    /// Refuses new subscribers and takes every registered one out, for shutdown.
    pub(crate) fn close(&self) -> Vec<Arc<Subscriber>> {
        self.closed.store(true, Ordering::Release);
        let mut all = Vec::with_capacity(self.len());
        for lock in self.shards.iter() {
            let mut shard = Self::write(lock);
            shard.by_topic.clear();
            shard.by_pattern.clear();
            shard.feeds.clear();
            all.extend(shard.by_id.drain().map(|(_, s)| s));
        }
        self.len.fetch_sub(all.len(), Ordering::AcqRel);
        let selectors: usize = all.iter().map(|s| s.selectors.len()).sum();
        self.subscriptions.fetch_sub(selectors, Ordering::Relaxed);
        all
    }

    /// Every registered subscriber (one shard read-locked at a time).
    pub(crate) fn snapshot(&self) -> Vec<Arc<Subscriber>> {
        let mut all = Vec::with_capacity(self.len());
        for lock in self.shards.iter() {
            all.extend(Self::read(lock).by_id.values().cloned());
        }
        all
    }

    pub(crate) fn get(&self, id: SubscriberId) -> Option<Arc<Subscriber>> {
        Self::read(self.shard(id)).by_id.get(&id).cloned()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}
