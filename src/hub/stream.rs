//! The body of one subscription: replayed frames, then live frames, heartbeats, and the end.
//!
//! [`SubscriptionStream`] is a `Stream` of `Bytes`, each item ready to be written to the socket.
//! The replay is read from history one page at a time, when the client has taken the previous
//! one: nothing of the store (lock, transaction) is held in between, and a replay of a large
//! history costs one page of memory. Live events queue meanwhile and follow the replay. Pages
//! come through [`SharedReads`]: streams replaying the same range (a reconnect storm) share one
//! store read per page.
//! It owns the subscriber's registration: when the stream is dropped (the HTTP layer drops the
//! response body when the client disconnects or a write fails) the subscriber leaves the
//! registry at once. One timer serves both the heartbeat and the end of the stream (maximum
//! lifetime or token expiry), so an idle stream costs one queue, one timer and this struct.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use super::subscriber::{CloseReason, Drained, Queued, Subscriber, SubscriberId, SubscriberInfo};
use super::Shared;
use crate::history::{HistoryError, HistoryFuture, Page, SharedReads, Sources};
use crate::telemetry::lag::{InFlight, PendingLag};
use crate::telemetry::TraceIds;
use crate::wire::HEARTBEAT;

/// Most bytes joined into one item when several frames are ready: enough to turn a burst into one
/// socket write, small enough to keep per-stream buffers bounded.
const MAX_COALESCED_BYTES: usize = 64 * 1024;

/// Most frames a stream's buffers keep room for once they are empty again (the spare drain
/// buffer, the backlog): a larger one, left by a burst or a replay page, is dropped, so that a
/// stream idle after a burst is back to a few KB. With 64, 10,000 streams kept about 68 MiB
/// after a fast run (the spare and the queue's buffer, each up to 64 frames of 56 bytes).
const SPARE_CAPACITY: usize = 16;
/// Events read from history at a time.
const REPLAY_PAGE_EVENTS: usize = 256;
/// Pages read in one poll before yielding, when they hold nothing for this subscriber.
const REPLAY_PAGES_PER_POLL: usize = 8;

/// Where a replay stands.
pub(crate) struct ReplayCursor {
    history: Arc<SharedReads>,
    /// The next page starts after this sequence number...
    after_seq: u64,
    /// ...and the replay ends with this one.
    through_seq: u64,
    /// The page being read.
    pending: Option<HistoryFuture<Page>>,
    /// The client asked for `earliest` and nothing was replayed yet: events that retention
    /// dropped since the start was located are not a gap for it (it asked for whatever is
    /// oldest), so a truncated first page is served as it is.
    from_earliest: bool,
}

impl ReplayCursor {
    pub(crate) fn new(
        history: Arc<SharedReads>,
        after_seq: u64,
        through_seq: u64,
        from_earliest: bool,
    ) -> Self {
        Self {
            history,
            after_seq,
            through_seq,
            pending: None,
            from_earliest,
        }
    }

    fn is_done(&self) -> bool {
        self.after_seq >= self.through_seq
    }

    /// The next page (at once for an in-memory store).
    fn poll_page(&mut self, cx: &mut Context<'_>) -> Poll<Result<Page, HistoryError>> {
        let (history, after, through) = (&self.history, self.after_seq, self.through_seq);
        let pending = self
            .pending
            .get_or_insert_with(|| history.read_page(after, through, REPLAY_PAGE_EVENTS));
        let page = std::task::ready!(pending.as_mut().poll(cx));
        self.pending = None;
        Poll::Ready(page)
    }
}

/// A frame ready to send.
struct Ready {
    frame: Bytes,
    /// When a live event was accepted (µs since the epoch); 0 for a replayed one or the hub's
    /// own frames, whose lag is not observed.
    accepted_us: u64,
    /// Set for a delivery sampled for a span.
    trace: Option<Arc<TraceIds>>,
}

impl Ready {
    fn unstamped(frame: Bytes) -> Self {
        Self {
            frame,
            accepted_us: 0,
            trace: None,
        }
    }
}

/// The live part of a subscription. Dropping it unsubscribes.
pub struct SubscriptionStream {
    shared: Arc<Shared>,
    subscriber: Arc<Subscriber>,
    /// The rest of the replay, until it is done.
    replay: Option<ReplayCursor>,
    /// Frames ready to send: replayed or live, not yet sent.
    backlog: VecDeque<Ready>,
    /// The live frames of the item last handed to the writer, observed once it asks for more.
    lag: PendingLag,
    /// The buffer the subscriber's queue gets back at the next drain (empty).
    spare: VecDeque<Queued>,
    /// Live events up to this sequence number were covered by the replay.
    skip_through_seq: u64,
    /// Idle time before a heartbeat comment; `None` disables heartbeats.
    heartbeat: Option<Duration>,
    heartbeat_due: Option<Instant>,
    /// When the stream must end, and why (maximum lifetime or token expiry).
    ends_at: Option<(Instant, CloseReason)>,
    timer: Pin<Box<Sleep>>,
    /// Set once the stream ended by itself; `None` at drop means the client went away.
    close_reason: Option<CloseReason>,
}

impl std::fmt::Debug for SubscriptionStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionStream")
            .field("subscriber", &self.subscriber.info.id)
            .field("backlog", &self.backlog.len())
            .finish_non_exhaustive()
    }
}

impl SubscriptionStream {
    pub(crate) fn new(
        shared: Arc<Shared>,
        subscriber: Arc<Subscriber>,
        replay: Option<ReplayCursor>,
        skip_through_seq: u64,
        heartbeat: Duration,
        ends_at: Option<(Instant, CloseReason)>,
        first_frame: Option<Bytes>,
    ) -> Self {
        let now = Instant::now();
        let heartbeat = (!heartbeat.is_zero()).then_some(heartbeat);
        let heartbeat_due = heartbeat.map(|period| now + period);
        let first_wake = earliest(heartbeat_due, ends_at.map(|(at, _)| at)).unwrap_or(now);
        Self {
            shared,
            subscriber,
            replay: replay.filter(|cursor| !cursor.is_done()),
            backlog: first_frame.into_iter().map(Ready::unstamped).collect(),
            lag: PendingLag::default(),
            spare: VecDeque::new(),
            skip_through_seq,
            heartbeat,
            heartbeat_due,
            ends_at,
            timer: Box::pin(tokio::time::sleep_until(first_wake)),
            close_reason: None,
        }
    }

    /// The subscriber's id.
    pub fn subscriber_id(&self) -> SubscriberId {
        self.subscriber.info.id
    }

    /// The subscriber's description.
    pub fn info(&self) -> &SubscriberInfo {
        &self.subscriber.info
    }

    fn sent_frame(&mut self) {
        if let Some(period) = self.heartbeat {
            self.heartbeat_due = Some(Instant::now() + period);
        }
    }

    /// Joins backlog frames into one buffer, up to [`MAX_COALESCED_BYTES`], noting the live
    /// ones for the delivery lag.
    fn take_backlog(&mut self) -> Option<Bytes> {
        let first = self.backlog.pop_front()?;
        let first_len = first.frame.len();
        if first.accepted_us != 0 {
            // Live frames: room for each this item can take (most take the whole backlog).
            self.lag.reserve(self.backlog.len() + 1);
        }
        let first = self.lag_of(first);
        if self.backlog.is_empty() || first_len >= MAX_COALESCED_BYTES {
            self.lag.handed();
            self.shrink_backlog();
            return Some(first);
        }
        let mut joined = BytesMut::with_capacity(
            self.backlog
                .iter()
                .map(|ready| ready.frame.len())
                .fold(first_len, |total, len| total.saturating_add(len))
                .min(MAX_COALESCED_BYTES),
        );
        joined.extend_from_slice(&first);
        while let Some(next) = self.backlog.front() {
            if joined.len() + next.frame.len() > MAX_COALESCED_BYTES {
                break;
            }
            if let Some(next) = self.backlog.pop_front() {
                let frame = self.lag_of(next);
                joined.extend_from_slice(&frame);
            }
        }
        self.lag.handed();
        self.shrink_backlog();
        Some(joined.freeze())
    }

    /// Drops the backlog's buffer once it is empty and larger than a stream at rest needs.
    fn shrink_backlog(&mut self) {
        if self.backlog.is_empty() && self.backlog.capacity() > SPARE_CAPACITY {
            self.backlog = VecDeque::new();
        }
    }

    /// `ready`'s frame, noted for the delivery lag if it is live.
    fn lag_of(&mut self, ready: Ready) -> Bytes {
        if ready.accepted_us != 0 || ready.trace.is_some() {
            self.lag.push(InFlight {
                accepted_us: ready.accepted_us,
                frame: ready.trace.as_ref().map(|_| ready.frame.clone()),
                trace: ready.trace,
            });
        }
        ready.frame
    }
}

impl SubscriptionStream {
    /// Ends the stream for `reason`: the last item, if any. A stream ended by a cause that passes
    /// by itself (the hub shutting down, history unreadable) says so and sets a jittered
    /// `retry:` of 1 to 2 s, so that the clients of a restarting hub do not all come back in
    /// the same millisecond (browsers otherwise wait a fixed delay of their own, about 3 s).
    fn end(&mut self, reason: CloseReason) -> Option<Bytes> {
        self.close_reason = Some(reason);
        let why = match reason {
            CloseReason::Shutdown => "the hub is shutting down",
            CloseReason::HistoryUnavailable => "history cannot be read for now",
            _ => return None,
        };
        let delay_ms = fastrand::u64(1_000..=2_000);
        Some(crate::wire::encode_retry(
            &format!("{why}; reconnect in {delay_ms} ms"),
            delay_ms,
        ))
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Stream for SubscriptionStream {
    type Item = Bytes;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = self.get_mut();
        // Asked for more: the item handed over before is written.
        let shared = &this.shared;
        let id = this.subscriber.info.id;
        this.lag
            .written(&shared.metrics.delivery_lag, &shared.tracing, id);
        if this.close_reason.is_some() {
            return Poll::Ready(None);
        }
        // The end (lifetime, token expiry) is enforced even while frames keep coming: Mercure
        // §Subscribers requires closing the connection when the token expires.
        if let Some((at, reason)) = this.ends_at {
            if Instant::now() >= at {
                return Poll::Ready(this.end(reason));
            }
        }
        let mut pages_read = 0;
        loop {
            if let Some(frame) = this.take_backlog() {
                this.sent_frame();
                return Poll::Ready(Some(frame));
            }
            if let Some(cursor) = &mut this.replay {
                // A close (shutdown, slow consumer) wins over finishing the replay.
                if let Some(reason) = this.subscriber.queue.closed() {
                    return Poll::Ready(this.end(reason));
                }
                if pages_read == REPLAY_PAGES_PER_POLL {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                let page = match cursor.poll_page(cx) {
                    Poll::Ready(Ok(page)) => page,
                    Poll::Ready(Err(error)) => {
                        tracing::warn!(
                            error = %Sources::of(&error),
                            subscriber = this.subscriber.info.id,
                            "replay failed"
                        );
                        return Poll::Ready(this.end(CloseReason::HistoryUnavailable));
                    }
                    Poll::Pending => return Poll::Pending,
                };
                pages_read += 1;
                // Retention dropped events this replay had not reached: end the stream, so the
                // client reconnects and learns from `Last-Event-ID` what it lost.
                if page.truncated && !cursor.from_earliest {
                    return Poll::Ready(this.end(CloseReason::SlowConsumer));
                }
                cursor.from_earliest = false;
                match page.events.last() {
                    None => this.replay = None,
                    Some(last) => {
                        cursor.after_seq = last.seq;
                        let subscriber = &this.subscriber;
                        let before = this.backlog.len();
                        this.backlog.extend(
                            page.events
                                .iter()
                                .filter(|event| subscriber.wants(event))
                                .map(|event| Ready::unstamped(event.frame.clone())),
                        );
                        this.shared
                            .metrics
                            .events_replayed
                            .inc_by((this.backlog.len() - before) as u64);
                        if cursor.is_done() {
                            this.replay = None;
                        }
                    }
                }
                continue;
            }
            // Live frames move into the backlog (dropping those the replay covered), so a close
            // that is already queued still wins over sending more.
            match this
                .subscriber
                .poll_drain(cx, &mut this.spare, &this.shared.tracing)
            {
                Poll::Ready(Drained::Closed(reason)) => {
                    return Poll::Ready(this.end(reason));
                }
                Poll::Ready(Drained::Frames(mut frames)) => {
                    let skip = this.skip_through_seq;
                    // At most this many: one allocation for the drain, not one per doubling.
                    this.backlog.reserve(frames.len());
                    this.backlog
                        .extend(frames.drain(..).filter(|queued| queued.seq > skip).map(
                            |queued| Ready {
                                frame: queued.frame,
                                accepted_us: queued.accepted_us,
                                trace: queued.trace,
                            },
                        ));
                    // Emptied, it is the queue's buffer at the next drain (a burst's capacity
                    // is not kept twice).
                    if frames.capacity() > SPARE_CAPACITY {
                        frames = VecDeque::new();
                    }
                    this.spare = frames;
                    continue;
                }
                Poll::Pending => {}
            }
            let now = Instant::now();
            if let Some((at, reason)) = this.ends_at {
                if now >= at {
                    return Poll::Ready(this.end(reason));
                }
            }
            if let (Some(due), Some(period)) = (this.heartbeat_due, this.heartbeat) {
                if now >= due {
                    this.heartbeat_due = Some(now + period);
                    return Poll::Ready(Some(HEARTBEAT));
                }
            }
            let Some(wake_at) = earliest(this.heartbeat_due, this.ends_at.map(|(at, _)| at)) else {
                // No timer at all: only the queue can wake us, and its waker is registered.
                return Poll::Pending;
            };
            if this.timer.deadline() != wake_at {
                this.timer.as_mut().reset(wake_at);
            }
            match this.timer.as_mut().poll(cx) {
                // The deadline passed while we were computing: go round again.
                Poll::Ready(()) => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for SubscriptionStream {
    fn drop(&mut self) {
        let reason = self.close_reason.unwrap_or(CloseReason::ClientDisconnected);
        self.shared.release(self.subscriber.info.id, reason);
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use crate::{Event, Hub, HubConfig, SubscribeRequest};

    /// A hub and one stream on `t`, without the initial cursor frame (tested in `subscribe`),
    /// so that the first item is what the test published.
    async fn hub_and_stream() -> (Hub, super::SubscriptionStream) {
        let hub = Hub::builder(HubConfig {
            initial_cursor: false,
            ..HubConfig::default()
        })
        .build()
        .await
        .expect("hub");
        let subscription = hub
            .subscribe(SubscribeRequest {
                topics: vec!["t".into()],
                ..Default::default()
            })
            .await
            .expect("subscribe");
        (hub, subscription.stream)
    }

    /// Publishes `data` and waits until the fan-out queued it (without polling the stream).
    async fn publish_queued(hub: &Hub, data: &str) {
        let before = hub.metrics().events_delivered.get();
        hub.publish(Event::new("t", data)).await.expect("publish");
        while hub.metrics().events_delivered.get() == before {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn frames_queued_meanwhile_leave_as_one_item_for_one_write() {
        let (hub, mut stream) = hub_and_stream().await;
        for data in ["one", "two", "three"] {
            publish_queued(&hub, data).await;
        }
        let item = stream.next().await.expect("an item");
        let text = std::str::from_utf8(&item).expect("utf-8");
        assert_eq!(text.matches("data: ").count(), 3, "{text}");
        assert!(text.ends_with("data: three\n\n"));
    }

    #[tokio::test]
    async fn a_stream_idle_after_a_burst_keeps_no_burst_sized_buffer() {
        let (hub, mut stream) = hub_and_stream().await;
        let burst = 4 * super::SPARE_CAPACITY;
        for n in 0..burst {
            publish_queued(&hub, &format!("e{n}")).await;
        }
        let item = stream.next().await.expect("an item");
        let text = std::str::from_utf8(&item).expect("utf-8");
        assert_eq!(
            text.matches("data: ").count(),
            burst,
            "one item for the burst"
        );
        // Asked for more: the item was written, and nothing else is queued.
        assert!(futures_util::poll!(stream.next()).is_pending());
        let kept = [
            ("backlog", stream.backlog.capacity()),
            ("spare", stream.spare.capacity()),
            ("lag", stream.lag.capacity()),
        ];
        for (buffer, capacity) in kept {
            assert!(
                capacity <= super::SPARE_CAPACITY,
                "{buffer} keeps room for {capacity} frames"
            );
        }
    }

    #[tokio::test]
    async fn a_stream_ended_by_shutdown_sets_a_jittered_retry_then_ends() {
        let mut delays = std::collections::BTreeSet::new();
        for _ in 0..4 {
            let (hub, mut stream) = hub_and_stream().await;
            hub.shutdown().await;
            let item = stream.next().await.expect("a last frame");
            let mut parser = crate::wire::Parser::new();
            assert_eq!(parser.push(&item).expect("parses"), vec![], "no event");
            let delay = parser.reconnection_time_ms().expect("a retry field");
            assert!((1_000..=2_000).contains(&delay), "{delay}");
            delays.insert(delay);
            assert!(stream.next().await.is_none(), "then the end");
        }
        assert!(delays.len() > 1, "jittered: {delays:?}");
    }

    #[tokio::test]
    async fn a_stream_closed_by_the_application_just_ends() {
        let (hub, mut stream) = hub_and_stream().await;
        assert!(hub.close_subscriber(stream.subscriber_id()));
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn one_item_holds_at_most_64_kib_of_frames() {
        let (hub, mut stream) = hub_and_stream().await;
        let big = "x".repeat(40 * 1024);
        for _ in 0..3 {
            publish_queued(&hub, &big).await;
        }
        for _ in 0..3 {
            let item = stream.next().await.expect("an item");
            assert!(
                item.len() <= super::MAX_COALESCED_BYTES,
                "{} bytes",
                item.len()
            );
            assert_eq!(
                std::str::from_utf8(&item)
                    .unwrap()
                    .matches("data: ")
                    .count(),
                1
            );
        }
    }
}
