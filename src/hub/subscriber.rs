//! One subscriber: what it asked for, what it may receive, and its bounded queue.
//!
//! The queue is written by hand rather than with `tokio::sync::mpsc` for two reasons: an idle
//! subscriber should cost no allocation (a `VecDeque` allocates on first push, an mpsc channel
//! allocates a block of slots up front), and the stream drains *everything* queued in one go so
//! that several events reach the socket in one write. Pushing never blocks: a full queue closes
//! the subscriber (it is too slow; it reconnects and replays from history).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::SystemTime;

use bytes::Bytes;

use crate::auth::SubscriberGrant;
use crate::history::StoredEvent;
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
    /// The topic selectors it subscribed with.
    pub topics: Vec<String>,
    /// The peer address, when the subscription came over the network.
    pub remote_addr: Option<SocketAddr>,
    /// `mercure.payload` of its token.
    pub payload: Option<serde_json::Value>,
    /// When it subscribed.
    pub connected_at: SystemTime,
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
}

impl Subscriber {
    /// Mercure §Subscription: an update goes to a subscriber when one of its topics matches one
    /// of the subscriber's selectors and, if private, one of its topics matches the token's
    /// `mercure.subscribe` selectors.
    pub(crate) fn wants(&self, stored: &StoredEvent) -> bool {
        crate::topic::selector::any_matches(&self.selectors, &stored.topics)
            && (!stored.private || self.grant.allows_private(&stored.topics))
    }
}

/// A bounded queue of encoded frames, tagged with their sequence numbers.
#[derive(Debug)]
pub(crate) struct SubscriberQueue {
    capacity: usize,
    state: Mutex<QueueState>,
}

#[derive(Debug, Default)]
struct QueueState {
    frames: VecDeque<(u64, Bytes)>,
    closed: Option<CloseReason>,
    waker: Option<Waker>,
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

/// What the stream gets from [`SubscriberQueue::poll_drain`].
pub(crate) enum Drained {
    Frames(VecDeque<(u64, Bytes)>),
    Closed(CloseReason),
}

impl SubscriberQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            state: Mutex::new(QueueState::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // Only VecDeque operations happen under this lock; a poisoned state is still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a frame without blocking. The stream's waker, when it was waiting, is handed to
    /// `wakers` rather than woken here: the dispatcher wakes streams a slice at a time, so that
    /// the tasks it wakes never pile up in front of a publisher's answer.
    pub(crate) fn push(&self, seq: u64, frame: Bytes, wakers: &mut Vec<Waker>) -> PushOutcome {
        let mut state = self.lock();
        if state.closed.is_some() {
            return PushOutcome::Closed;
        }
        let outcome = if state.frames.len() >= self.capacity {
            state.closed = Some(CloseReason::SlowConsumer);
            state.frames = VecDeque::new();
            PushOutcome::Overflowed
        } else {
            state.frames.push_back((seq, frame));
            PushOutcome::Queued
        };
        // A stream that is not waiting (its waker already taken) drains this frame with the
        // ones before it: one wake, and one write, for all of them.
        if let Some(waker) = state.waker.take() {
            wakers.push(waker);
        }
        outcome
    }

    /// Closes the queue; the stream ends after it sees this. The first reason wins.
    pub(crate) fn close(&self, reason: CloseReason) {
        let waker = {
            let mut state = self.lock();
            if state.closed.is_none() {
                state.closed = Some(reason);
            }
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
    /// A closed queue ends the stream at once, even with frames left: the client is either too
    /// slow or being sent away, and replays what it missed when it reconnects.
    pub(crate) fn poll_drain(&self, cx: &mut Context<'_>) -> Poll<Drained> {
        let mut state = self.lock();
        if let Some(reason) = state.closed {
            return Poll::Ready(Drained::Closed(reason));
        }
        if !state.frames.is_empty() {
            return Poll::Ready(Drained::Frames(std::mem::take(&mut state.frames)));
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
    fn overflow_closes_and_drops_the_backlog() {
        let queue = SubscriberQueue::new(2);
        let mut wakers = Vec::new();
        let mut push =
            |seq, frame: &'static [u8]| queue.push(seq, Bytes::from_static(frame), &mut wakers);
        assert_eq!(push(1, b"a"), PushOutcome::Queued);
        assert_eq!(push(2, b"b"), PushOutcome::Queued);
        assert_eq!(push(3, b"c"), PushOutcome::Overflowed);
        assert_eq!(push(4, b"d"), PushOutcome::Closed);
        assert_eq!(queue.len(), 0);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(
            queue.poll_drain(&mut cx),
            Poll::Ready(Drained::Closed(CloseReason::SlowConsumer))
        ));
    }

    #[test]
    fn drain_takes_everything_in_order() {
        let queue = SubscriberQueue::new(8);
        let mut wakers = Vec::new();
        for seq in 1..=3 {
            queue.push(seq, Bytes::from(seq.to_string()), &mut wakers);
        }
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        match queue.poll_drain(&mut cx) {
            Poll::Ready(Drained::Frames(frames)) => {
                assert_eq!(
                    frames.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
                    [1, 2, 3]
                );
            }
            _ => panic!("expected frames"),
        }
        assert!(queue.poll_drain(&mut cx).is_pending());
    }
}
