//! What the hub measures of one event on its way from the publisher to each subscriber's socket.
//!
//! Every publish is *stamped* when the hub accepts it ([`Stamp`]): the wall-clock time, and the
//! identity of its publish span when tracing is on. The stamp travels beside the stored event
//! (never inside history; a shared log (Redis) writes it into the entry so that every instance
//! gets it) through the writer, the dispatcher and each subscriber's queue, and the stream
//! that writes the frame observes the delivery lag (`ssehub_delivery_lag_seconds`,
//! [`lag::LagHistogram`]) once the bytes were written.
//!
//! Traces ([`Tracing`], the `otel` cargo feature) are off unless an OTLP endpoint is
//! configured ([`otlp`]): then a publish continues the W3C `traceparent` it was sent with, and
//! the hub adds spans for the store (with its batch), the dispatch, and a sample of the
//! deliveries, all in the publish's trace. Off, a [`Tracing`] is `None` inside: no span is made,
//! and nothing is allocated for one (a stamp is two words, a queued frame's trace `None`).

pub mod lag;
#[cfg(feature = "otel")]
pub mod otlp;
mod trace;

use std::sync::Arc;

pub use trace::{PublishSpan, TraceIds, Tracing};

/// Microseconds since the Unix epoch, now.
pub(crate) fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        })
}

/// When the hub accepted a publish, and the trace it belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stamp {
    /// Microseconds since the Unix epoch when the hub accepted the publish (validated, before
    /// the store); 0 when unknown (an entry written by an older instance).
    pub accepted_us: u64,
    /// The publish span, when the publish was traced.
    pub trace: Option<Arc<TraceIds>>,
}

impl Stamp {
    /// Accepted now, in `trace` if any.
    pub fn now(trace: Option<TraceIds>) -> Self {
        Self {
            accepted_us: now_us(),
            trace: trace.map(Arc::new),
        }
    }
}

/// A stored event on its way to the dispatcher, with its stamp.
#[derive(Debug, Clone)]
pub struct LiveEvent {
    /// The event as stored.
    pub event: Arc<crate::history::StoredEvent>,
    /// When it was accepted, and its trace.
    pub stamp: Stamp,
}

impl LiveEvent {
    /// `event`, stamped `stamp`.
    pub fn new(event: Arc<crate::history::StoredEvent>, stamp: Stamp) -> Self {
        Self { event, stamp }
    }
}
