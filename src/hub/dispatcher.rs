//! The dispatcher task: fans stored events out to subscribers, in log order, and wakes their
//! streams a slice at a time.
//!
//! Why slices: pushing one event into 10,000 queues takes well under a millisecond, but waking
//! 10,000 stream tasks at once puts 10,000 tasks in the runtime's queues (they overflow the
//! workers' local queues into the global one), and everything woken after them — the writer, a
//! publisher's connection waiting for its answer — waits until every one of them has written to
//! its socket: tens of milliseconds on two cores. So a push never wakes a stream: it
//! *schedules* one that waits on its queue ([`SubscriberQueue::push`]), and this task wakes at
//! most [`WAKE_SLICE`] scheduled streams, then yields until most of them ran, so that whatever
//! else is ready runs before the next slice. Between two slices it takes the next stored event,
//! if there is one: a stream not yet woken gets it queued behind the ones it already has, and
//! writes them all at once when its turn comes (one write for many events: under load the
//! per-delivery cost falls to about a microsecond). A stream is woken once per pass, whatever
//! it has queued, so the lag of the slowest stream stays about one pass over the subscribers.
//!
//! Pacing: the dispatcher takes a new event only while the bytes queued for the streams it has
//! not woken yet (each subscriber's copy counted) stay under
//! [`HubConfig::max_queued_bytes`](super::HubConfig). That count falls slice by slice as
//! streams are woken, so new events are taken at the pace the streams write them. Beyond it,
//! stored events wait in the small channel from the writer, then the writer waits, and
//! publishers get their answers later: a fast publisher is slowed down instead of every
//! subscriber's delay growing (or its queue, until it is dropped as too slow). Streams that are
//! not waiting on their queue (one blocked on a full socket) are not counted: a client that
//! stops reading never holds the publishers back; its own queue fills and it alone is dropped.
//!
//! [`SubscriberQueue::push`]: super::subscriber::SubscriberQueue

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::mpsc::{self, error::TryRecvError};
use tracing::debug;

use super::subscriber::Subscriber;
use super::{CloseReason, Shared};
use crate::telemetry::{now_us, LiveEvent};

/// Yields the dispatcher waits at most for a slice to have run (a woken stream whose task is
/// gone never runs): with the runtime's 61-poll rounds, a few milliseconds.
const MAX_SLICE_YIELDS: usize = 16;

/// Streams woken before the dispatcher lets other tasks run. Small enough that a task woken
/// after a slice (a publisher's answer) waits for about a millisecond of socket writes at most;
/// large enough that the yields cost nothing next to the writes.
pub(super) const WAKE_SLICE: usize = 128;

/// The dispatcher's state between two slices: the streams to wake, and the budget.
struct Slices {
    /// Subscribers whose stream has frames queued and was not woken yet, oldest first.
    ready: VecDeque<Arc<Subscriber>>,
    /// Bytes queued for the streams in `ready`, each subscriber's copy counted (exact: each
    /// queue counts what was pushed while it was scheduled, and hands the count over when it
    /// is woken).
    pending_bytes: u64,
    /// Take no new event while `pending_bytes` is at or above this.
    max_queued_bytes: u64,
    /// The streams of the last slice woken, until most of them ran.
    last_slice: Vec<Arc<Subscriber>>,
    /// Scratch space of one dispatch: streams it scheduled, subscribers whose queue overflowed.
    scheduled: Vec<Arc<Subscriber>>,
    overflowed: Vec<u64>,
}

impl Slices {
    fn new(max_queued_bytes: usize) -> Self {
        Self {
            ready: VecDeque::new(),
            pending_bytes: 0,
            max_queued_bytes: max_queued_bytes as u64,
            last_slice: Vec::new(),
            scheduled: Vec::new(),
            overflowed: Vec::new(),
        }
    }

    /// Whether the fan-out may take another event now.
    fn has_room(&self) -> bool {
        self.pending_bytes < self.max_queued_bytes
    }

    /// Queues `live` for every subscriber that wants it; closes the ones too slow for it.
    fn dispatch(&mut self, shared: &Shared, live: LiveEvent) {
        // Only a traced event reads the clock for its span.
        let started_us = live.stamp.trace.as_ref().map(|_| now_us());
        let counts = shared.registry.dispatch(
            &live,
            &shared.tracing,
            &mut self.overflowed,
            &mut self.scheduled,
        );
        self.ready.extend(self.scheduled.drain(..));
        self.pending_bytes += counts.counted_bytes;
        if let (Some(trace), Some(started_us)) = (&live.stamp.trace, started_us) {
            let (id, matched) = (&live.event.id, counts.delivered as u64);
            shared.tracing.dispatched(trace, id, matched, started_us);
        }
        *shared
            .last_dispatched
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(live.event);
        shared
            .metrics
            .events_delivered
            .inc_by(counts.delivered as u64);
        for id in self.overflowed.drain(..) {
            debug!(subscriber = id, "queue full: disconnecting slow subscriber");
            shared.release(id, CloseReason::SlowConsumer);
        }
    }

    /// Wakes the oldest [`WAKE_SLICE`] scheduled streams; returns whether more are waiting.
    fn wake_slice(&mut self) -> bool {
        let count = self.ready.len().min(WAKE_SLICE);
        self.last_slice.clear();
        for subscriber in self.ready.drain(..count) {
            let (waker, bytes) = subscriber.take_schedule();
            self.pending_bytes -= bytes;
            // None: the stream ran meanwhile (its timer) and drained its frames itself.
            if let Some(waker) = waker {
                waker.wake();
                self.last_slice.push(subscriber);
            }
        }
        !self.ready.is_empty()
    }

    /// Whether most of the last slice's streams have run since they were woken.
    fn last_slice_ran(&self) -> bool {
        let waiting = self
            .last_slice
            .iter()
            .filter(|subscriber| subscriber.queue.is_woken())
            .count();
        waiting <= WAKE_SLICE / 8
    }

    fn wake_all(&mut self) {
        while self.wake_slice() {}
    }
}

/// Fans stored events out to subscribers, in log order.
///
/// It ends when the writer does (shutdown, or every `Hub` handle dropped), after queueing
/// every event already acknowledged, and then closes every stream.
pub(super) async fn run_dispatcher(
    mut events: mpsc::Receiver<LiveEvent>,
    shared: Arc<Shared>,
    max_queued_bytes: usize,
) {
    let mut slices = Slices::new(max_queued_bytes);
    let metrics = &shared.metrics;
    // Whether the last round found the budget full (the pacing counter counts each start).
    let mut paced = false;
    loop {
        if slices.ready.is_empty() {
            // Every stream with something queued was woken: wait for the next event.
            match events.recv().await {
                Some(stored) => slices.dispatch(&shared, stored),
                None => break,
            }
        } else if slices.has_room() {
            paced = false;
            // Streams are still waiting for their turn: take one more event if it is there,
            // but never wait for one while they do. One per slice: more lets events pile into
            // the queues of streams that are running (uncounted), and delays grow.
            match events.try_recv() {
                Ok(stored) => slices.dispatch(&shared, stored),
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => break,
            }
        } else if !paced {
            paced = true;
            metrics.fanout_paced.inc();
        }
        let more = slices.wake_slice();
        metrics
            .fanout_pending_bytes
            .set(i64::try_from(slices.pending_bytes).unwrap_or(i64::MAX));
        if more {
            // Let the streams just woken, and anything else that is ready, run first: the
            // runtime comes back to this task after some 61 polls, so wait until most of the
            // slice ran, or the woken tasks would pile up again, a slice at a time.
            for _ in 0..MAX_SLICE_YIELDS {
                tokio::task::yield_now().await;
                if slices.last_slice_ran() {
                    break;
                }
            }
        }
    }
    slices.wake_all();
    for subscriber in shared.registry.close() {
        subscriber.queue.close(CloseReason::Shutdown);
        shared.closed(&subscriber, CloseReason::Shutdown);
    }
    // Every subscriber is closed and announced, and none can register any more.
    shared.end_announcements();
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::task::{Context, Wake, Waker};
    use std::time::SystemTime;

    use super::*;
    use crate::auth::SubscriberGrant;
    use crate::event::Event;
    use crate::history::StoredEvent;
    use crate::hub::registry::Registry;
    use crate::hub::subscriber::{Subscriber, SubscriberInfo, SubscriberQueue};
    use crate::metrics::Metrics;
    use crate::topic::TopicSelector;

    /// Counts its wakes.
    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn shared(subscribers: usize) -> (Arc<Shared>, Vec<Arc<Subscriber>>) {
        let shared = Arc::new(Shared {
            registry: Registry::new(8, usize::MAX, true),
            hooks: Default::default(),
            metrics: Metrics::new(),
            subscription_events: None,
            #[cfg(feature = "webhook")]
            webhook: None,
            last_dispatched: Mutex::new(None),
            tracing: Default::default(),
            outbox: Default::default(),
        });
        let subscribers = (0..subscribers as u64)
            .map(|id| {
                let subscriber = Arc::new(Subscriber {
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
                    grant: SubscriberGrant::default(),
                    announcements: Default::default(),
                    queue: SubscriberQueue::new(1024),
                    feed: Default::default(),
                });
                shared.registry.insert(subscriber.clone()).expect("room");
                subscriber
            })
            .collect();
        (shared, subscribers)
    }

    /// Every subscriber's stream waits on its queue with a waker of its own.
    fn wait_on_queues(subscribers: &[Arc<Subscriber>]) -> Vec<Arc<CountingWaker>> {
        subscribers
            .iter()
            .map(|subscriber| {
                let counter = Arc::new(CountingWaker::default());
                let waker = Waker::from(counter.clone());
                let mut cx = Context::from_waker(&waker);
                assert!(subscriber
                    .poll_drain(&mut cx, &mut Default::default(), &Default::default())
                    .is_pending());
                counter
            })
            .collect()
    }

    fn woken(counters: &[Arc<CountingWaker>]) -> usize {
        counters
            .iter()
            .map(|c| c.0.load(Ordering::SeqCst))
            .sum::<usize>()
    }

    fn stored(seq: u64) -> LiveEvent {
        let event = StoredEvent::new(seq, Event::new("t", "x".repeat(100)));
        LiveEvent::new(Arc::new(event), Default::default())
    }

    #[test]
    fn a_dispatch_wakes_no_stream_itself_and_each_slice_wakes_at_most_a_slice() {
        let (shared, subscribers) = shared(WAKE_SLICE * 2 + 10);
        let counters = wait_on_queues(&subscribers);
        let mut slices = Slices::new(usize::MAX);
        slices.dispatch(&shared, stored(1));
        assert_eq!(woken(&counters), 0, "the dispatch itself wakes nobody");
        assert!(slices.wake_slice());
        assert_eq!(woken(&counters), WAKE_SLICE);
        assert!(slices.wake_slice());
        assert_eq!(woken(&counters), WAKE_SLICE * 2);
        assert!(!slices.wake_slice(), "the last slice empties the list");
        assert_eq!(woken(&counters), subscribers.len());
        assert!(counters.iter().all(|c| c.0.load(Ordering::SeqCst) == 1));
    }

    #[test]
    fn a_stream_not_yet_woken_gets_the_next_event_without_a_second_wake() {
        let (shared, subscribers) = shared(WAKE_SLICE + 1);
        let counters = wait_on_queues(&subscribers);
        let mut slices = Slices::new(usize::MAX);
        slices.dispatch(&shared, stored(1));
        slices.dispatch(&shared, stored(2));
        while slices.wake_slice() {}
        assert!(counters.iter().all(|c| c.0.load(Ordering::SeqCst) == 1));
        // Each stream finds both events in its queue, for one write.
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        for subscriber in &subscribers {
            match subscriber.poll_drain(&mut cx, &mut Default::default(), &Default::default()) {
                std::task::Poll::Ready(crate::hub::subscriber::Drained::Frames(frames)) => {
                    assert_eq!(
                        frames.iter().map(|queued| queued.seq).collect::<Vec<_>>(),
                        [1, 2]
                    );
                }
                _ => panic!("both events are queued"),
            }
        }
    }

    #[test]
    fn the_budget_stops_new_events_until_streams_were_woken_and_frees_as_they_are() {
        let (shared, subscribers) = shared(WAKE_SLICE * 3);
        let counters = wait_on_queues(&subscribers);
        let frame_bytes = stored(1).event.frame.len() as u64;
        let per_stream = 2 * frame_bytes;
        // Room for two events' worth of copies, not three.
        let mut slices = Slices::new(subscribers.len() * per_stream as usize);
        assert!(slices.has_room());
        slices.dispatch(&shared, stored(1));
        assert!(slices.has_room());
        slices.dispatch(&shared, stored(2));
        assert!(!slices.has_room(), "two events' copies fill the budget");
        assert_eq!(slices.pending_bytes, subscribers.len() as u64 * per_stream);
        // Each slice woken hands its streams' bytes over: room again, in proportion.
        assert!(slices.wake_slice());
        assert!(slices.has_room());
        assert_eq!(slices.pending_bytes, 2 * WAKE_SLICE as u64 * per_stream);
        assert!(slices.wake_slice());
        assert!(!slices.wake_slice());
        assert_eq!(slices.pending_bytes, 0);
        assert_eq!(woken(&counters), subscribers.len());
    }

    #[test]
    fn the_next_slice_waits_until_most_of_the_last_one_ran() {
        let (shared, subscribers) = shared(WAKE_SLICE * 2);
        let _counters = wait_on_queues(&subscribers);
        let mut slices = Slices::new(usize::MAX);
        slices.dispatch(&shared, stored(1));
        assert!(slices.wake_slice());
        assert!(
            !slices.last_slice_ran(),
            "none of the woken streams ran yet"
        );
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        // All but one eighth and one of the slice run (drain their queue)...
        let slice: Vec<_> = slices.last_slice.clone();
        assert_eq!(slice.len(), WAKE_SLICE);
        let (ran, waiting) = slice.split_at(WAKE_SLICE - WAKE_SLICE / 8 - 1);
        for subscriber in ran {
            assert!(subscriber
                .poll_drain(&mut cx, &mut Default::default(), &Default::default())
                .is_ready());
        }
        assert!(!slices.last_slice_ran());
        // ...then one more: enough.
        assert!(waiting[0]
            .poll_drain(&mut cx, &mut Default::default(), &Default::default())
            .is_ready());
        assert!(slices.last_slice_ran());
    }

    #[test]
    fn streams_that_are_not_waiting_do_not_hold_the_budget() {
        // Nobody polls these streams (a client blocked on a full socket): they are never in the
        // ready list, so their queued frames are theirs to overflow, not the publishers' to wait
        // for.
        let (shared, _subscribers) = shared(WAKE_SLICE);
        let mut slices = Slices::new(1);
        slices.dispatch(&shared, stored(1));
        assert!(!slices.wake_slice());
        assert!(slices.has_room());
    }

    /// The whole hub on one thread: a publish is answered after at most about one slice of
    /// stream wakes, not after the whole fan-out of the event before it.
    #[tokio::test(flavor = "current_thread")]
    async fn a_publish_is_answered_before_the_fan_out_of_the_previous_event_ends() {
        answered_before_the_fan_out_ends(false).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn with_shared_feeds_a_publish_is_answered_before_the_fan_out_of_the_previous_event_ends()
    {
        answered_before_the_fan_out_ends(true).await;
    }

    /// With shared feeds, a subscriber that does not read is closed as too slow once its feed
    /// dropped an event it had not read, and one that reads gets every event, in order.
    #[tokio::test]
    async fn with_shared_feeds_a_slow_subscriber_is_closed_and_a_reading_one_gets_everything() {
        use futures_util::StreamExt;
        let hub = crate::Hub::builder(crate::HubConfig {
            initial_cursor: false,
            queue_capacity: 4,
            shared_feeds: true,
            ..crate::HubConfig::default()
        })
        .build()
        .await
        .expect("hub");
        let subscribe = || {
            hub.subscribe(crate::SubscribeRequest {
                topics: vec!["t".into()],
                ..Default::default()
            })
        };
        let mut reading = subscribe().await.expect("subscribe").stream;
        let mut slow = subscribe().await.expect("subscribe").stream;
        let mut got = Vec::new();
        for n in 0..12 {
            hub.publish(Event::new("t", format!("e{n}")))
                .await
                .expect("publish");
            let item = reading.next().await.expect("an item");
            got.push(String::from_utf8(item.to_vec()).expect("utf-8"));
        }
        let got = got.concat();
        let expected: Vec<String> = (0..12).map(|n| format!("data: e{n}\n")).collect();
        let found: Vec<&str> = got.lines().filter(|l| l.starts_with("data: ")).collect();
        assert_eq!(
            found,
            expected.iter().map(|e| e.trim_end()).collect::<Vec<_>>()
        );
        assert!(slow.next().await.is_none(), "the slow one is closed");
        assert_eq!(hub.subscriber_count(), 1, "and left the registry");
    }

    async fn answered_before_the_fan_out_ends(shared_feeds: bool) {
        use futures_util::StreamExt;
        let hub = crate::Hub::builder(crate::HubConfig {
            // The first item each stream gets must be the event, not its cursor frame.
            initial_cursor: false,
            shared_feeds,
            ..crate::HubConfig::default()
        })
        .build()
        .await
        .expect("hub");
        let streams = WAKE_SLICE * 8;
        let received = Arc::new(AtomicUsize::new(0));
        for _ in 0..streams {
            let mut subscription = hub
                .subscribe(crate::SubscribeRequest {
                    topics: vec!["t".into()],
                    ..Default::default()
                })
                .await
                .expect("subscribe");
            let received = received.clone();
            tokio::spawn(async move {
                if subscription.stream.next().await.is_some() {
                    received.fetch_add(1, Ordering::SeqCst);
                }
                // Keep the stream open until the test ends.
                std::future::pending::<()>().await;
            });
        }
        // Every stream task runs once and waits on its queue.
        tokio::task::yield_now().await;
        hub.publish(Event::new("t", "first")).await.expect("first");
        hub.publish(Event::new("t", "second"))
            .await
            .expect("second");
        let when_answered = received.load(Ordering::SeqCst);
        assert!(
            when_answered < streams / 2,
            "the second publish was answered after {when_answered} of {streams} streams got the first"
        );
        while received.load(Ordering::SeqCst) < streams {
            tokio::task::yield_now().await;
        }
    }
}
