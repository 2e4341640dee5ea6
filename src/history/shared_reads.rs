//! Replay reads shared between streams: one store read serves every stream that asks for the
//! same page at about the same time.
//!
//! After a deploy or a network blip, thousands of clients reconnect at once, most of them with
//! the same `Last-Event-ID` (they all saw the same last event). Each stream then reads the same
//! pages: without sharing, a durable store decodes every page once per client and a Redis log
//! answers one `XRANGE` per client. [`SharedReads`] keeps the pages recently read, keyed by
//! where they start, and a read still in flight is joined rather than repeated.
//!
//! Why a cached page may answer a later request: the log is append-only, so the events after
//! sequence number `a` up to `t` never change once written. A page read for `(a, t]` (the first
//! `n` events of it) therefore answers any request `(a, t']` with `t' <= t` and the same `n`:
//! it is the same page, cut at `t'`. A request reaching further than any cached read (events
//! were published since) reads the store again and replaces the entry. Retention may since have
//! dropped some of a cached page's events: the stream then receives them anyway, which is more
//! than a fresh read would give, never less. Failed reads are not kept.
//!
//! Memory is bounded: at most [`MAX_PAGES`] pages and [`MAX_BYTES`] of their frames stay
//! cached, least recently used first out, and a page nobody asked for during [`IDLE_EXPIRY`]
//! is dropped ([`SharedReads::expire_idle`], called every second by the hub), so a quiet hub
//! holds no cached pages. The lock is held for a map lookup only, never across a store read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use prometheus_client::metrics::counter::Counter;

use super::{History, HistoryError, HistoryFuture, Page};

/// Most pages kept.
pub const MAX_PAGES: usize = 256;
/// Most frame bytes kept across the cached pages (a page being read counts once it is read).
pub const MAX_BYTES: usize = 8 * 1024 * 1024;
/// A cached page not asked for during this long is dropped.
pub const IDLE_EXPIRY: Duration = Duration::from_secs(5);

type PageRead = Shared<BoxFuture<'static, Result<Arc<Page>, HistoryError>>>;

/// A page read, finished or in flight.
struct Entry {
    /// The read covered events up to this sequence number.
    through_seq: u64,
    read: PageRead,
    /// Frame bytes of the page once read (0 while in flight).
    bytes: usize,
    /// When it was last asked for (least recently used goes first; idle ones expire).
    last_used_at: Instant,
    /// Tells this read apart from a later one under the same key (a tick of [`Pages::clock`]).
    generation: u64,
}

#[derive(Default)]
struct Pages {
    /// By (after_seq, max_events).
    entries: HashMap<(u64, usize), Entry>,
    bytes: usize,
    clock: u64,
}

impl Pages {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Drops least recently used entries until the bounds hold.
    fn evict(&mut self) {
        while self.entries.len() > MAX_PAGES || self.bytes > MAX_BYTES {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.last_used_at)
                .map(|(key, _)| *key)
            else {
                break;
            };
            if let Some(entry) = self.entries.remove(&oldest) {
                self.bytes -= entry.bytes;
            }
        }
    }
}

/// Page reads of a [`History`], shared between the streams that replay the same range.
pub struct SharedReads {
    history: Arc<dyn History>,
    pages: Mutex<Pages>,
    /// Reads that went to the store.
    store_reads: Counter,
    /// Pages handed to streams (from the store or shared).
    pages_served: Counter,
}

impl SharedReads {
    /// Shares the page reads of `history`; the counters count reads that went to the store and
    /// pages handed out.
    pub fn new(history: Arc<dyn History>, store_reads: Counter, pages_served: Counter) -> Self {
        Self {
            history,
            pages: Mutex::new(Pages::default()),
            store_reads,
            pages_served,
        }
    }

    /// The store whose reads are shared.
    pub fn history(&self) -> &Arc<dyn History> {
        &self.history
    }

    /// Up to `max_events` events with `after_seq < seq <= through_seq`, oldest first: the same
    /// answer as [`History::read_page`], from a read that another stream started if there is one.
    pub fn read_page(
        self: &Arc<Self>,
        after_seq: u64,
        through_seq: u64,
        max_events: usize,
    ) -> HistoryFuture<Page> {
        let key = (after_seq, max_events);
        let read = {
            let mut pages = self.pages.lock().unwrap_or_else(PoisonError::into_inner);
            match pages.entries.get_mut(&key) {
                Some(entry) if entry.through_seq >= through_seq => {
                    entry.last_used_at = Instant::now();
                    entry.read.clone()
                }
                _ => {
                    self.store_reads.inc();
                    let generation = pages.tick();
                    // Settled once, by the read itself, not by each stream that shares it. Weak:
                    // the entry holds this future, and must not keep the cache alive.
                    let this = Arc::downgrade(self);
                    let read = self
                        .history
                        .clone()
                        .read_page(after_seq, through_seq, max_events)
                        .map(move |page| {
                            let page = page.map(Arc::new);
                            if let Some(this) = this.upgrade() {
                                this.settle(key, generation, &page);
                            }
                            page
                        })
                        .boxed()
                        .shared();
                    let entry = Entry {
                        through_seq,
                        read: read.clone(),
                        bytes: 0,
                        last_used_at: Instant::now(),
                        generation,
                    };
                    if let Some(replaced) = pages.entries.insert(key, entry) {
                        pages.bytes -= replaced.bytes;
                    }
                    pages.evict();
                    read
                }
            }
        };
        let pages_served = self.pages_served.clone();
        Box::pin(async move {
            let result = read.await;
            pages_served.inc();
            let page = result?;
            let events = page
                .events
                .iter()
                .take_while(|event| event.seq <= through_seq)
                .cloned()
                .collect();
            Ok(Page {
                events,
                truncated: page.truncated,
            })
        })
    }

    /// Records the size of a finished read, or forgets a failed one so that the next request
    /// tries the store again.
    fn settle(&self, key: (u64, usize), generation: u64, result: &Result<Arc<Page>, HistoryError>) {
        let mut pages = self.pages.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = pages.entries.get_mut(&key) else {
            return;
        };
        if entry.generation != generation {
            return;
        }
        match result {
            Ok(page) => {
                let bytes = page
                    .events
                    .iter()
                    .map(|event| event.frame.len())
                    .sum::<usize>()
                    .max(1);
                entry.bytes = bytes;
                pages.bytes += bytes;
                pages.evict();
            }
            Err(_) => {
                pages.entries.remove(&key);
            }
        }
    }

    /// Drops the pages nobody asked for during `idle`.
    pub fn expire_idle(&self, idle: Duration) {
        let mut pages = self.pages.lock().unwrap_or_else(PoisonError::into_inner);
        let mut freed = 0;
        pages.entries.retain(|_, entry| {
            let keep = entry.last_used_at.elapsed() < idle;
            if !keep {
                freed += entry.bytes;
            }
            keep
        });
        pages.bytes -= freed;
    }

    /// Pages cached now (read or in flight).
    pub fn cached_pages(&self) -> usize {
        self.pages
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::history::MemoryHistory;

    async fn history_with(n: usize) -> Arc<dyn History> {
        let history: Arc<dyn History> = Arc::new(MemoryHistory::new(10_000));
        let events = (0..n)
            .map(|i| Event::new("https://example.com/t", format!("e{i}")).into())
            .collect();
        history.clone().append(events).await.expect("append");
        history
    }

    fn shared(history: Arc<dyn History>) -> (Arc<SharedReads>, Counter, Counter) {
        let (reads, served) = (Counter::default(), Counter::default());
        let shared = Arc::new(SharedReads::new(history, reads.clone(), served.clone()));
        (shared, reads, served)
    }

    fn seqs(page: &Page) -> Vec<u64> {
        page.events.iter().map(|e| e.seq).collect()
    }

    #[tokio::test]
    async fn same_page_is_read_from_the_store_once() {
        let (reads, store_reads, served) = shared(history_with(100).await);
        let pending: Vec<_> = (0..50).map(|_| reads.read_page(10, 100, 20)).collect();
        for page in futures_util::future::join_all(pending).await {
            assert_eq!(seqs(&page.expect("page")), (11..=30).collect::<Vec<_>>());
        }
        assert_eq!(store_reads.get(), 1);
        assert_eq!(served.get(), 50);
    }

    #[tokio::test]
    async fn a_cached_page_is_cut_at_the_requested_end() {
        let (reads, store_reads, _) = shared(history_with(100).await);
        let full = reads.read_page(0, 100, 50).await.expect("page");
        assert_eq!(seqs(&full), (1..=50).collect::<Vec<_>>());
        let cut = reads.read_page(0, 7, 50).await.expect("page");
        assert_eq!(seqs(&cut), (1..=7).collect::<Vec<_>>());
        assert_eq!(store_reads.get(), 1);
    }

    #[tokio::test]
    async fn a_request_reaching_further_reads_the_store_again() {
        let history = history_with(10).await;
        let (reads, store_reads, _) = shared(history.clone());
        let first = reads.read_page(0, 10, 256).await.expect("page");
        assert_eq!(first.events.len(), 10);
        history
            .clone()
            .append(vec![Event::new("https://example.com/t", "new").into()])
            .await
            .expect("append");
        let second = reads.read_page(0, 11, 256).await.expect("page");
        assert_eq!(seqs(&second), (1..=11).collect::<Vec<_>>());
        assert_eq!(store_reads.get(), 2);
        // The newer read replaced the older one and serves both ends.
        let third = reads.read_page(0, 10, 256).await.expect("page");
        assert_eq!(third.events.len(), 10);
        assert_eq!(store_reads.get(), 2);
    }

    #[tokio::test]
    async fn idle_pages_expire() {
        let (reads, store_reads, _) = shared(history_with(10).await);
        reads.read_page(0, 10, 256).await.expect("page");
        reads.expire_idle(Duration::from_secs(60));
        assert_eq!(reads.cached_pages(), 1);
        reads.expire_idle(Duration::ZERO);
        assert_eq!(reads.cached_pages(), 0);
        reads.read_page(0, 10, 256).await.expect("page");
        assert_eq!(store_reads.get(), 2, "an expired page is read again");
    }

    #[tokio::test]
    async fn the_cache_stays_bounded() {
        let (reads, _, _) = shared(history_with(1_000).await);
        for after in 0..(MAX_PAGES as u64 + 100) {
            reads.read_page(after, 1_000, 1).await.expect("page");
        }
        assert_eq!(reads.cached_pages(), MAX_PAGES);
    }
}
