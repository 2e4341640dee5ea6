//! One subscriber: what it asked for, what it may receive, and its bounded queue.
//!
//! The queue is written by hand rather than with `tokio::sync::mpsc` for two reasons: an idle
//! subscriber should cost no allocation (a `VecDeque` allocates on first push, an mpsc channel
//! allocates a block of slots up front), and the stream drains *everything* queued in one go so
//! that several events reach the socket in one write. Pushing never blocks: a full queue closes
//! the subscriber (it is too slow; it reconnects and replays from history).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::SystemTime;

use bytes::Bytes;

use super::feed::{Feed, Read};
use crate::auth::SubscriberGrant;
use crate::history::StoredEvent;
use crate::telemetry::{TraceIds, Tracing};
use crate::topic::selector::{EventTopics, MatcherType};
use crate::topic::TopicSelector;

/// A subscriber's id, unique within one hub.
pub type SubscriberId = u64;

/// Why a stream ended. Hooks receive it; the emitter lifecycle of the seed (timeout, completion,
/// error) maps onto it: [`CloseReason::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client went away (connection closed or reset, or a write to it failed).
    ClientDisconnected,
    /// The stream reached the configured maximum lifetime; the client reconnects with
    /// `Last-Event-ID`.
    Timeout,
    /// The subscriber's token expired (Mercure §Subscribers: the hub MUST close the connection).
    TokenExpired,
    /// The subscriber read too slowly: its queue filled up, or history retention dropped
    /// events before its replay reached them.
    SlowConsumer,
    /// History could not be read during the replay.
    HistoryUnavailable,
    /// The application closed it ([`crate::Hub::close_subscriber`]).
    Closed,
    /// The hub is shutting down.
    Shutdown,
}

/// The three outcomes of an emitter's life, as servlet-style `SseEmitter` callbacks know them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseKind {
    /// The stream ran out of time (maximum lifetime, token expiry).
    Timeout,
    /// The server completed it (application close, shutdown).
    Completion,
    /// Something went wrong (client gone, too slow, history unreadable).
    Error,
}

impl CloseReason {
    /// Which of timeout, completion or error this is.
    pub fn kind(self) -> CloseKind {
        match self {
            Self::Timeout | Self::TokenExpired => CloseKind::Timeout,
            Self::Closed | Self::Shutdown => CloseKind::Completion,
            Self::ClientDisconnected | Self::SlowConsumer | Self::HistoryUnavailable => {
                CloseKind::Error
            }
        }
    }

    /// A short, stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientDisconnected => "client_disconnected",
            Self::Timeout => "timeout",
            Self::TokenExpired => "token_expired",
            Self::SlowConsumer => "slow_consumer",
            Self::HistoryUnavailable => "history_unavailable",
            Self::Closed => "closed",
            Self::Shutdown => "shutdown",
        }
    }
}

/// What hooks and the application may know about a subscriber.
#[derive(Debug, Clone)]
pub struct SubscriberInfo {
    /// Unique within this hub.
    pub id: SubscriberId,
    /// A globally unique IRI (`urn:uuid:…`), as the subscriptions API names subscribers.
    pub uri: String,
    /// The topic selectors it subscribed with, as written: draft-07 `topic`s, then draft-08
    /// matcher values ([`SubscriberInfo::selections`] tells which is which).
    pub topics: Vec<String>,
    /// The matcher types of the draft-08 matchers, which are the last
    /// `matcher_types.len()` entries of `topics`; empty for a draft-07 subscription.
    pub matcher_types: Vec<MatcherType>,
    /// The peer address, when the subscription came over the network.
    pub remote_addr: Option<SocketAddr>,
    /// `mercure.payload` of its token.
    pub payload: Option<serde_json::Value>,
    /// When it subscribed.
    pub connected_at: SystemTime,
}

impl SubscriberInfo {
    /// Its subscriptions, each in the dialect it was made in: draft-07 `topic` selectors,
    /// then draft-08 matchers with their types.
    pub fn selections(&self) -> impl Iterator<Item = Selection<'_>> {
        let first_matcher = self.topics.len().saturating_sub(self.matcher_types.len());
        self.topics.iter().enumerate().map(move |(n, text)| {
            match n
                .checked_sub(first_matcher)
                .and_then(|m| self.matcher_types.get(m))
            {
                Some(kind) => Selection::Matcher(*kind, text),
                None => Selection::Topic(text),
            }
        })
    }
}

/// One subscription of a subscriber, as it was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection<'a> {
    /// A draft-07 `topic` selector (`*`, an exact topic or a URI template).
    Topic(&'a str),
    /// A draft-08 matcher: its type and its value.
    Matcher(MatcherType, &'a str),
}

/// A registered subscriber.
#[derive(Debug)]
pub(crate) struct Subscriber {
    pub(crate) info: SubscriberInfo,
    /// Compiled `topic` selectors.
    pub(crate) selectors: Vec<TopicSelector>,
    /// Whether every selector is exact, so the registry can index it by topic.
    pub(crate) exact_only: bool,
    /// What its token allows (private updates).
    pub(crate) grant: SubscriberGrant,
    pub(crate) queue: SubscriberQueue,
    /// The feed of its topic, when it has one exact selector (set when it is registered): its
    /// live events come from there, and its queue only holds its waker, close and cursor.
    pub(crate) feed: OnceLock<Arc<Feed>>,
    /// Which of its subscription announcements went out, so "closed" never precedes "opened".
    pub(crate) announcements: Announcements,
}

/// The order of a subscriber's lifecycle: the open hooks and announcements (Mercure
/// subscription events, webhook notifications) are run by the task that subscribed, after
/// registering, and the close ones by whichever task removed it (the dispatcher at shutdown can
/// do that first, and an open hook may close the subscriber itself). This state makes the close
/// always follow the open, each once:
/// - a close that finds nothing opened runs the opening itself, then the close, and the opener
///   then has nothing left to do;
/// - a close that comes while the opening runs is left to the opener, which runs it when the
///   opening is done.
///
/// The lock is held only to change the state, never while a hook runs: a hook may call back
/// into the hub (close its own subscriber) without deadlocking.
#[derive(Debug, Default)]
pub(crate) struct Announcements(Mutex<Announced>);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Announced {
    #[default]
    Nothing,
    /// The opener is running the opening.
    Opening,
    /// The opener is running the opening and a close came meanwhile, for this reason.
    CloseDeferred(CloseReason),
    Opened,
    Closed,
}

impl Announcements {
    fn state(&self) -> std::sync::MutexGuard<'_, Announced> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The subscribing task: runs `open`, unless the subscriber was closed (and its opening run)
    /// already; then `close` with the reason of a close that came while `open` ran, if one did.
    pub(crate) fn opened(&self, open: impl FnOnce(), close: impl FnOnce(CloseReason)) {
        {
            let mut state = self.state();
            if *state != Announced::Nothing {
                return;
            }
            *state = Announced::Opening;
        }
        // A panicking open hook still leaves the state open, so that the close (deferred, or
        // the unregistering that follows the panic) runs; then the panic goes on.
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(open)).err();
        let deferred = {
            let mut state = self.state();
            match *state {
                Announced::CloseDeferred(reason) => {
                    *state = Announced::Closed;
                    Some(reason)
                }
                _ => {
                    *state = Announced::Opened;
                    None
                }
            }
        };
        if let Some(reason) = deferred {
            close(reason);
        }
        if let Some(panic) = panicked {
            std::panic::resume_unwind(panic);
        }
    }

    /// The task that removed the subscriber: runs `close`, after `open` if nobody ran the
    /// opening yet, or leaves `close` to the opener if the opening is running; once only.
    pub(crate) fn closed(&self, reason: CloseReason, open: impl FnOnce(), close: impl FnOnce()) {
        let opens_too = {
            let mut state = self.state();
            let opens_too = match *state {
                Announced::Nothing => true,
                Announced::Opened => false,
                Announced::Opening => {
                    *state = Announced::CloseDeferred(reason);
                    return;
                }
                Announced::CloseDeferred(_) | Announced::Closed => return,
            };
            *state = Announced::Closed;
            opens_too
        };
        if opens_too {
            open();
        }
        close();
    }
}

impl Subscriber {
    /// Mercure §Subscription: an update goes to a subscriber when one of its topics matches one
    /// of the subscriber's selectors and, if private, one of its topics matches the token's
    /// `mercure.subscribe` selectors.
    pub(crate) fn wants(&self, stored: &StoredEvent) -> bool {
        self.wants_in(stored, &EventTopics::new(&stored.topics))
    }

    /// [`Self::wants`], with the event's topics as the fan-out prepared them once for every
    /// subscriber (URL patterns read the topics' URLs, parsed once per event).
    pub(crate) fn wants_in(&self, stored: &StoredEvent, topics: &EventTopics<'_>) -> bool {
        crate::topic::selector::any_matches_event(&self.selectors, topics)
            && (!stored.private || self.grant.allows_private(&stored.topics))
    }

    /// Whether the registry gives it a feed: one selector, an exact topic.
    pub(crate) fn reads_a_feed(&self) -> Option<&str> {
        match self.selectors.as_slice() {
            [only] => only.as_exact(),
            _ => None,
        }
    }

    /// Takes every live frame queued for it (from its feed or its own queue), or reports the
    /// close, or registers the waker: [`SubscriberQueue::poll_drain`].
    pub(crate) fn poll_drain(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        spare: &mut VecDeque<Queued>,
        tracing: &Tracing,
    ) -> Poll<Drained> {
        match self.feed.get() {
            Some(feed) => self.queue.poll_feed(self, feed, cx, spare, tracing),
            None => self.queue.poll_drain(cx, spare),
        }
    }

    /// For the dispatcher, when this stream's turn to be woken comes: takes its waker (if it
    /// is still waiting) and the bytes counted since it was scheduled.
    pub(crate) fn take_schedule(&self) -> (Option<Waker>, u64) {
        match self.feed.get() {
            Some(feed) => {
                let (waker, from) = self.queue.take_feed_schedule();
                feed.remove_scheduled();
                (waker, feed.appended_bytes().saturating_sub(from))
            }
            None => self.queue.take_schedule(),
        }
    }

    /// For the registry, when it takes the subscriber out: leaves its feed.
    pub(crate) fn leave_feed(&self) {
        if let Some(feed) = self.feed.get() {
            self.queue.leave(feed, self.info.id);
        }
    }
}

/// A bounded queue of encoded frames, tagged with their sequence numbers.
#[derive(Debug)]
pub(crate) struct SubscriberQueue {
    capacity: usize,
    state: Mutex<QueueState>,
    /// For a feed's subscriber: whether it is in the feed's waiting list (read and written
    /// under the feed's lock only).
    listed: AtomicBool,
}

#[derive(Debug, Default)]
struct QueueState {
    frames: VecDeque<Queued>,
    closed: Option<CloseReason>,
    waker: Option<Waker>,
    /// Whether the dispatcher has this stream in its list of streams to wake: set by the push
    /// that found the stream waiting, cleared when the dispatcher wakes it.
    scheduled: bool,
    /// Bytes pushed while `scheduled`: what the dispatcher counts as not yet handed to the
    /// stream, and forgets when it wakes it.
    scheduled_bytes: u64,
    /// Woken by the dispatcher and not polled since: the dispatcher waits for most of a slice
    /// to have run before it wakes the next one.
    woken: bool,
    /// For a feed's subscriber: the position of the next event it reads in the feed...
    cursor: u64,
    /// ...and the feed's appended bytes when it was scheduled (the pacing count).
    scheduled_from: u64,
    /// It left its feed (the registry took it out): it reads nothing more from there.
    left_feed: bool,
}

/// The result of [`SubscriberQueue::push`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PushOutcome {
    Queued,
    /// The queue was full: it is now closed with [`CloseReason::SlowConsumer`].
    Overflowed,
    /// Already closed; nothing was queued.
    Closed,
}

/// The result of [`SubscriberQueue::push`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Pushed {
    pub(crate) outcome: PushOutcome,
    /// The stream was waiting: the dispatcher must add it to the streams it will wake.
    pub(crate) schedule: bool,
    /// Bytes now queued for a stream that is scheduled and not yet woken.
    pub(crate) counted_bytes: u64,
}

/// One frame queued for a stream.
#[derive(Debug)]
pub(crate) struct Queued {
    /// The event's sequence number (the stream drops those its replay covered).
    pub(crate) seq: u64,
    /// The event's encoded frame, shared with every subscriber.
    pub(crate) frame: Bytes,
    /// When the hub accepted it, in µs since the epoch (0: unknown), for the delivery lag.
    pub(crate) accepted_us: u64,
    /// Its trace, when this delivery was sampled for a span.
    pub(crate) trace: Option<Arc<TraceIds>>,
}

#[cfg(test)]
impl Queued {
    /// A frame with no stamp.
    pub(crate) fn plain(seq: u64, frame: Bytes) -> Self {
        Self {
            seq,
            frame,
            accepted_us: 0,
            trace: None,
        }
    }
}

/// What the stream gets from [`SubscriberQueue::poll_drain`].
pub(crate) enum Drained {
    Frames(VecDeque<Queued>),
    Closed(CloseReason),
}

impl SubscriberQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            state: Mutex::new(QueueState::default()),
            listed: AtomicBool::new(false),
        }
    }

    /// The most frames it holds (a feed holds as many events).
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn listed(&self) -> bool {
        self.listed.load(Ordering::Relaxed)
    }

    pub(crate) fn list(&self) {
        self.listed.store(true, Ordering::Relaxed);
    }

    pub(crate) fn unlist(&self) {
        self.listed.store(false, Ordering::Relaxed);
    }

    /// A feed's subscriber: where it starts reading (the registry sets it as it joins).
    pub(crate) fn set_cursor(&self, cursor: u64) {
        self.lock().cursor = cursor;
    }

    pub(crate) fn cursor(&self) -> u64 {
        self.lock().cursor
    }

    /// Leaves `feed`, under this queue's lock: the stream cannot read (and move its cursor)
    /// meanwhile, nor after.
    fn leave(&self, feed: &Feed, id: SubscriberId) {
        let mut state = self.lock();
        if !state.left_feed {
            state.left_feed = true;
            feed.leave(state.cursor, id, self.listed());
        }
    }

    /// A feed's subscriber that was waiting, when an event was appended to its feed while its
    /// appended bytes were `appended_before`: schedules its wake, once. Returns whether the
    /// dispatcher must add it to the streams it will wake.
    pub(crate) fn schedule_feed(&self, appended_before: u64) -> bool {
        let mut state = self.lock();
        if state.closed.is_some() || state.scheduled || state.waker.is_none() {
            return false;
        }
        state.scheduled = true;
        state.scheduled_from = appended_before;
        true
    }

    /// [`Self::take_schedule`] for a feed's subscriber: its waker, and the feed's appended
    /// bytes when it was scheduled.
    fn take_feed_schedule(&self) -> (Option<Waker>, u64) {
        let mut state = self.lock();
        state.scheduled = false;
        let waker = state.waker.take();
        state.woken = waker.is_some();
        (waker, state.scheduled_from)
    }

    /// [`Self::poll_drain`] for a feed's subscriber: its frames come from `feed`.
    fn poll_feed(
        &self,
        me: &Arc<Subscriber>,
        feed: &Feed,
        cx: &mut Context<'_>,
        spare: &mut VecDeque<Queued>,
        tracing: &Tracing,
    ) -> Poll<Drained> {
        let mut state = self.lock();
        state.woken = false;
        if let Some(reason) = state.closed {
            state.waker = None;
            return Poll::Ready(Drained::Closed(reason));
        }
        if state.left_feed {
            // Taken out of the registry; the close that follows wakes it.
            state.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        spare.clear();
        match feed.read(&mut state.cursor, me, &me.grant, tracing, spare) {
            Read::Frames(_) => {
                state.waker = None;
                Poll::Ready(Drained::Frames(std::mem::take(spare)))
            }
            Read::Lost => {
                state.closed = Some(CloseReason::SlowConsumer);
                state.waker = None;
                Poll::Ready(Drained::Closed(CloseReason::SlowConsumer))
            }
            Read::Waiting => {
                match &state.waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => state.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // Only VecDeque operations happen under this lock; a poisoned state is still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a frame without blocking, and never wakes the stream itself: the dispatcher
    /// wakes streams a slice at a time ([`Self::take_schedule`]), so that the tasks it wakes
    /// never pile up in front of a publisher's answer.
    pub(crate) fn push(&self, queued: Queued) -> Pushed {
        let mut state = self.lock();
        if state.closed.is_some() {
            return Pushed {
                outcome: PushOutcome::Closed,
                schedule: false,
                counted_bytes: 0,
            };
        }
        let bytes = queued.frame.len() as u64;
        let outcome = if state.frames.len() >= self.capacity {
            state.closed = Some(CloseReason::SlowConsumer);
            state.frames = VecDeque::new();
            PushOutcome::Overflowed
        } else {
            state.frames.push_back(queued);
            PushOutcome::Queued
        };
        // A stream waiting for frames is scheduled for a wake, once; one already scheduled gets
        // this frame with the ones before it: one wake, and one write, for all of them. A
        // stream that is neither (running, or blocked on its socket) finds the frame when it
        // next drains, and it is not counted: nobody waits on it.
        let schedule = !state.scheduled && state.waker.is_some();
        if schedule {
            state.scheduled = true;
        }
        let counted_bytes = if state.scheduled && outcome == PushOutcome::Queued {
            state.scheduled_bytes += bytes;
            bytes
        } else {
            0
        };
        Pushed {
            outcome,
            schedule,
            counted_bytes,
        }
    }

    /// For the dispatcher, when this stream's turn to be woken comes: takes its waker (if it
    /// is still waiting) and the bytes counted since it was scheduled.
    pub(crate) fn take_schedule(&self) -> (Option<Waker>, u64) {
        let mut state = self.lock();
        state.scheduled = false;
        let bytes = std::mem::take(&mut state.scheduled_bytes);
        let waker = state.waker.take();
        state.woken = waker.is_some();
        (waker, bytes)
    }

    /// Whether the dispatcher woke this stream and it has not run since.
    pub(crate) fn is_woken(&self) -> bool {
        self.lock().woken
    }

    /// Closes the queue; the stream ends after it sees this. The first reason wins.
    pub(crate) fn close(&self, reason: CloseReason) {
        let waker = {
            let mut state = self.lock();
            if state.closed.is_none() {
                state.closed = Some(reason);
            }
            state.woken = false;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Whether the queue was closed, and why.
    pub(crate) fn closed(&self) -> Option<CloseReason> {
        self.lock().closed
    }

    /// Takes every queued frame, or reports the close, or registers the waker.
    ///
    /// The frames come in the queue's own buffer, and `spare` (the buffer of the drain before,
    /// emptied by the stream) takes its place: a stream in steady state allocates nothing to
    /// take its frames.
    ///
    /// A closed queue ends the stream at once, even with frames left: the client is either too
    /// slow or being sent away, and replays what it missed when it reconnects.
    ///
    /// The waker is kept only while the stream waits here: a stream busy writing (or blocked
    /// on its socket) is not waiting for frames, so a push must not schedule a wake for it.
    pub(crate) fn poll_drain(
        &self,
        cx: &mut Context<'_>,
        spare: &mut VecDeque<Queued>,
    ) -> Poll<Drained> {
        let mut state = self.lock();
        state.woken = false;
        if let Some(reason) = state.closed {
            state.waker = None;
            return Poll::Ready(Drained::Closed(reason));
        }
        if !state.frames.is_empty() {
            state.waker = None;
            spare.clear();
            let frames = std::mem::replace(&mut state.frames, std::mem::take(spare));
            return Poll::Ready(Drained::Frames(frames));
        }
        match &state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().frames.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_before_the_open_announces_both_in_order_and_once() {
        let said = std::cell::RefCell::new(Vec::new());
        let say = |what: &'static str| said.borrow_mut().push(what);
        let reason = CloseReason::Shutdown;
        // The usual order.
        let announcements = Announcements::default();
        announcements.opened(|| say("opened"), |_| say("closed by the opener"));
        announcements.closed(reason, || say("opened again"), || say("closed"));
        announcements.closed(reason, || say("opened again"), || say("closed again"));
        assert_eq!(*said.borrow(), ["opened", "closed"]);
        // The dispatcher closed it (shutdown) before the subscribing task opened it.
        said.borrow_mut().clear();
        let announcements = Announcements::default();
        announcements.closed(reason, || say("opened"), || say("closed"));
        announcements.opened(|| say("opened late"), |_| say("closed late"));
        assert_eq!(*said.borrow(), ["opened", "closed"]);
    }

    #[test]
    fn a_panicking_opening_still_lets_the_close_run_once() {
        let said = Mutex::new(Vec::new());
        let announcements = Announcements::default();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            announcements.opened(|| panic!("an open hook panics"), |_| {})
        }));
        assert!(panicked.is_err(), "the panic goes on to the caller");
        announcements.closed(
            CloseReason::ClientDisconnected,
            || said.lock().unwrap().push("opened again"),
            || said.lock().unwrap().push("closed"),
        );
        assert_eq!(*said.lock().unwrap(), ["closed"]);
    }

    #[test]
    fn a_close_while_the_opening_runs_is_run_by_the_opener_after_it() {
        let said = std::cell::RefCell::new(Vec::new());
        let announcements = Announcements::default();
        announcements.opened(
            || {
                said.borrow_mut().push("opening".to_owned());
                // An open hook closes its own subscriber (or the dispatcher does meanwhile).
                announcements.closed(
                    CloseReason::Closed,
                    || said.borrow_mut().push("opened by the closer".to_owned()),
                    || said.borrow_mut().push("closed by the closer".to_owned()),
                );
                said.borrow_mut().push("opened".to_owned());
            },
            |reason| {
                said.borrow_mut()
                    .push(format!("closed: {}", reason.as_str()))
            },
        );
        announcements.closed(
            CloseReason::Shutdown,
            || said.borrow_mut().push("opened again".to_owned()),
            || said.borrow_mut().push("closed again".to_owned()),
        );
        assert_eq!(*said.borrow(), ["opening", "opened", "closed: closed"]);
    }

    #[test]
    fn overflow_closes_and_drops_the_backlog() {
        let queue = SubscriberQueue::new(2);
        let push = |seq, frame: &'static [u8]| {
            queue
                .push(Queued::plain(seq, Bytes::from_static(frame)))
                .outcome
        };
        assert_eq!(push(1, b"a"), PushOutcome::Queued);
        assert_eq!(push(2, b"b"), PushOutcome::Queued);
        assert_eq!(push(3, b"c"), PushOutcome::Overflowed);
        assert_eq!(push(4, b"d"), PushOutcome::Closed);
        assert_eq!(queue.len(), 0);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(
            queue.poll_drain(&mut cx, &mut VecDeque::new()),
            Poll::Ready(Drained::Closed(CloseReason::SlowConsumer))
        ));
    }

    #[test]
    fn drain_takes_everything_in_order() {
        let queue = SubscriberQueue::new(8);
        for seq in 1..=3 {
            queue.push(Queued::plain(seq, Bytes::from(seq.to_string())));
        }
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        match queue.poll_drain(&mut cx, &mut VecDeque::new()) {
            Poll::Ready(Drained::Frames(frames)) => {
                assert_eq!(
                    frames.iter().map(|queued| queued.seq).collect::<Vec<_>>(),
                    [1, 2, 3]
                );
            }
            _ => panic!("expected frames"),
        }
        assert!(queue.poll_drain(&mut cx, &mut VecDeque::new()).is_pending());
    }

    #[test]
    fn a_waiting_stream_is_scheduled_once_and_counts_its_bytes_until_taken() {
        let queue = SubscriberQueue::new(8);
        let frame = || Bytes::from_static(b"0123456789");
        // Not waiting (never polled): nothing to schedule, nothing counted.
        assert_eq!(
            queue.push(Queued::plain(1, frame())),
            Pushed {
                outcome: PushOutcome::Queued,
                schedule: false,
                counted_bytes: 0
            }
        );
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(queue.poll_drain(&mut cx, &mut VecDeque::new()).is_ready());
        assert!(
            queue.poll_drain(&mut cx, &mut VecDeque::new()).is_pending(),
            "now waiting"
        );
        assert_eq!(
            queue.push(Queued::plain(2, frame())),
            Pushed {
                outcome: PushOutcome::Queued,
                schedule: true,
                counted_bytes: 10
            }
        );
        assert_eq!(
            queue.push(Queued::plain(3, frame())),
            Pushed {
                outcome: PushOutcome::Queued,
                schedule: false,
                counted_bytes: 10
            }
        );
        let (taken, bytes) = queue.take_schedule();
        assert!(taken.is_some());
        assert_eq!(bytes, 20);
        // Woken and not yet drained: a push neither schedules nor counts.
        assert_eq!(
            queue.push(Queued::plain(4, frame())),
            Pushed {
                outcome: PushOutcome::Queued,
                schedule: false,
                counted_bytes: 0
            }
        );
    }
}
