//! Spans of one event: `publish` (continuing the publisher's W3C `traceparent`), `store` (with
//! the batch it joined), `dispatch`, and a sample of `deliver` spans, all in the publish's trace
//! and each carrying the event id.
//!
//! The spans are made with the OpenTelemetry API directly rather than through `tracing`:
//! `store` and `deliver` are recorded after the fact, with the start and end times the hub
//! measured (a batch's append, a frame's socket write), which `tracing` spans cannot take. The
//! hub's own log lines are not per event, so nothing is lost by not bridging them.
//!
//! Without the `otel` cargo feature, or without an OTLP endpoint, [`Tracing`] is off: every
//! method returns at once and nothing is allocated.

#[cfg(feature = "otel")]
use std::time::{Duration, SystemTime};

/// The identity of a span (W3C trace context), small enough to travel with each event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceIds {
    /// The trace (16 bytes, never all zero).
    pub trace_id: [u8; 16],
    /// The span (8 bytes, never all zero).
    pub span_id: [u8; 8],
    /// The W3C trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceIds {
    /// The W3C `traceparent` value (`00-<trace>-<span>-<flags>`), as a shared log stores it.
    pub fn to_traceparent(&self) -> String {
        use std::fmt::Write;
        let mut text = String::with_capacity(55);
        text.push_str("00-");
        for byte in self.trace_id {
            let _ = write!(text, "{byte:02x}");
        }
        text.push('-');
        for byte in self.span_id {
            let _ = write!(text, "{byte:02x}");
        }
        let _ = write!(text, "-{:02x}", self.flags);
        text
    }

    /// Reads a `traceparent` value of version `00` (W3C Trace Context §3.2); `None` when it is
    /// not one, or names the invalid all-zero trace or span.
    pub fn from_traceparent(text: &str) -> Option<Self> {
        let mut parts = text.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != "00" || parts.next().is_some() {
            return None;
        }
        let ids = Self {
            trace_id: hex_array(trace)?,
            span_id: hex_array(span)?,
            flags: hex_array::<1>(flags)?[0],
        };
        (ids.trace_id != [0; 16] && ids.span_id != [0; 8]).then_some(ids)
    }
}

/// `N` bytes from exactly `2N` lowercase hex digits.
fn hex_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let nibble = |digit: u8| match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    };
    let mut bytes = [0u8; N];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(bytes)
}

/// The hub's tracer: off (the default), or exporting spans.
#[derive(Clone, Default)]
pub struct Tracing {
    #[cfg(feature = "otel")]
    on: Option<std::sync::Arc<On>>,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing")
            .field("on", &self.is_on())
            .finish()
    }
}

#[cfg(feature = "otel")]
struct On {
    tracer: opentelemetry_sdk::trace::SdkTracer,
    /// Deliveries traced per million.
    deliveries_per_million: u32,
}

/// The span of one publish, from the request to its answer; ended when dropped.
#[derive(Default)]
pub struct PublishSpan {
    #[cfg(feature = "otel")]
    span: Option<opentelemetry_sdk::trace::Span>,
}

impl Tracing {
    /// No spans.
    pub fn off() -> Self {
        Self::default()
    }

    /// Spans made by `tracer`; `delivery_ratio` (0 to 1) of the deliveries get a span.
    #[cfg(feature = "otel")]
    pub fn new(tracer: opentelemetry_sdk::trace::SdkTracer, delivery_ratio: f64) -> Self {
        let ratio = if delivery_ratio.is_finite() {
            delivery_ratio.clamp(0.0, 1.0)
        } else {
            0.0
        };
        Self {
            on: Some(std::sync::Arc::new(On {
                tracer,
                deliveries_per_million: (ratio * 1e6).round() as u32,
            })),
        }
    }

    /// Whether spans are made.
    pub fn is_on(&self) -> bool {
        #[cfg(feature = "otel")]
        return self.on.is_some();
        #[cfg(not(feature = "otel"))]
        false
    }

    /// Starts the span of a publish whose request carried `traceparent` (if any): its child, or
    /// a new trace. Off: an empty span.
    pub fn publish(&self, traceparent: Option<&str>) -> PublishSpan {
        #[cfg(feature = "otel")]
        if let Some(on) = &self.on {
            use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer};
            let parent = traceparent
                .and_then(TraceIds::from_traceparent)
                .map(|ids| {
                    opentelemetry::Context::new().with_remote_span_context(span_context(&ids))
                })
                .unwrap_or_default();
            let span = on
                .tracer
                .span_builder("publish")
                .with_kind(SpanKind::Server)
                .start_with_context(&on.tracer, &parent);
            return PublishSpan { span: Some(span) };
        }
        let _ = traceparent;
        PublishSpan::default()
    }

    /// Records the `store` span of each traced publish of a batch: the append of all
    /// `batch_size` publishes, from `started` to now.
    pub(crate) fn stored(
        &self,
        traces: &[Option<std::sync::Arc<TraceIds>>],
        ids: &[Option<&str>],
        started_us: u64,
    ) {
        #[cfg(feature = "otel")]
        if let Some(on) = &self.on {
            use opentelemetry::KeyValue;
            let ended = SystemTime::now();
            let batch = traces.len() as i64;
            for (trace, id) in traces.iter().zip(ids) {
                let Some(trace) = trace else { continue };
                let mut attributes = vec![KeyValue::new("ssehub.batch.size", batch)];
                if let Some(id) = id {
                    attributes.push(KeyValue::new("ssehub.event.id", (*id).to_owned()));
                }
                on.child(
                    "store",
                    trace,
                    attributes,
                    time_of(started_us),
                    ended,
                    false,
                );
            }
        }
        let _ = (traces, ids, started_us);
    }

    /// Records the `dispatch` span of a traced event: queued to `matched` subscribers, from
    /// `started` to now.
    pub(crate) fn dispatched(&self, trace: &TraceIds, id: &str, matched: u64, started_us: u64) {
        #[cfg(feature = "otel")]
        if let Some(on) = &self.on {
            use opentelemetry::KeyValue;
            let attributes = vec![
                KeyValue::new("ssehub.event.id", id.to_owned()),
                KeyValue::new("ssehub.subscribers.matched", matched as i64),
            ];
            let (start, end) = (time_of(started_us), SystemTime::now());
            on.child("dispatch", trace, attributes, start, end, false);
        }
        let _ = (trace, id, matched, started_us);
    }

    /// Whether this delivery gets a span (the sampling ratio; always false when off).
    pub(crate) fn sample_delivery(&self) -> bool {
        #[cfg(feature = "otel")]
        if let Some(on) = &self.on {
            return on.deliveries_per_million > 0
                && fastrand::u32(0..1_000_000) < on.deliveries_per_million;
        }
        false
    }

    /// Records the `deliver` span of a sampled delivery: `frame` handed to the subscriber's
    /// socket at `handed_us`, written by `written_us`.
    pub(crate) fn delivered(
        &self,
        trace: &TraceIds,
        frame: &[u8],
        subscriber: u64,
        accepted_us: u64,
        handed_us: u64,
        written_us: u64,
    ) {
        #[cfg(feature = "otel")]
        if let Some(on) = &self.on {
            use opentelemetry::KeyValue;
            let mut attributes = vec![
                KeyValue::new("ssehub.subscriber", subscriber as i64),
                KeyValue::new(
                    "ssehub.delivery.lag_ms",
                    written_us.saturating_sub(accepted_us) as f64 / 1e3,
                ),
            ];
            if let Some(id) = crate::wire::frame_id(frame) {
                attributes.push(KeyValue::new("ssehub.event.id", id.to_owned()));
            }
            let (start, end) = (time_of(handed_us), time_of(written_us));
            on.child("deliver", trace, attributes, start, end, true);
        }
        let _ = (trace, frame, subscriber, accepted_us, handed_us, written_us);
    }
}

#[cfg(feature = "otel")]
impl On {
    /// A finished span in `parent`'s trace, its child (and, for a delivery, linked to it too:
    /// backends that draw a trace per delivery still find the publish).
    fn child(
        &self,
        name: &'static str,
        parent: &TraceIds,
        attributes: Vec<opentelemetry::KeyValue>,
        start: SystemTime,
        end: SystemTime,
        link: bool,
    ) {
        use opentelemetry::trace::{Link, Span, SpanKind, TraceContextExt, Tracer};
        let parent_context = span_context(parent);
        let mut builder = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_start_time(start)
            .with_attributes(attributes);
        if link {
            builder = builder.with_links(vec![Link::with_context(parent_context.clone())]);
        }
        let context = opentelemetry::Context::new().with_remote_span_context(parent_context);
        let mut span = builder.start_with_context(&self.tracer, &context);
        span.end_with_timestamp(end.max(start));
    }
}

#[cfg(feature = "otel")]
fn span_context(ids: &TraceIds) -> opentelemetry::trace::SpanContext {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    SpanContext::new(
        TraceId::from_bytes(ids.trace_id),
        SpanId::from_bytes(ids.span_id),
        TraceFlags::new(ids.flags),
        true,
        TraceState::default(),
    )
}

#[cfg(feature = "otel")]
fn time_of(us: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_micros(us)
}

impl PublishSpan {
    /// The span's identity, to stamp the event with; `None` when not traced (or not sampled:
    /// its children would be dropped anyway).
    pub fn ids(&self) -> Option<TraceIds> {
        #[cfg(feature = "otel")]
        if let Some(span) = &self.span {
            use opentelemetry::trace::Span;
            let context = span.span_context();
            if context.is_sampled() {
                return Some(TraceIds {
                    trace_id: context.trace_id().to_bytes(),
                    span_id: context.span_id().to_bytes(),
                    flags: context.trace_flags().to_u8(),
                });
            }
        }
        None
    }

    /// Notes how the publish ended: the event id, or the error.
    pub fn finish(&mut self, outcome: Result<&str, &str>) {
        #[cfg(feature = "otel")]
        if let Some(span) = &mut self.span {
            use opentelemetry::trace::{Span, Status};
            use opentelemetry::KeyValue;
            match outcome {
                Ok(id) => span.set_attribute(KeyValue::new("ssehub.event.id", id.to_owned())),
                Err(error) => span.set_status(Status::error(error.to_owned())),
            }
        }
        let _ = outcome;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trip_and_refusals() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ids = TraceIds::from_traceparent(text).expect("parses");
        assert_eq!(
            ids.span_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!(ids.flags, 1);
        assert_eq!(ids.to_traceparent(), text);
        for bad in [
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "",
        ] {
            assert_eq!(TraceIds::from_traceparent(bad), None, "{bad}");
        }
    }

    #[test]
    fn off_makes_nothing() {
        let tracing = Tracing::off();
        assert!(!tracing.is_on());
        assert!(!tracing.sample_delivery());
        assert_eq!(
            tracing
                .publish(Some(
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                ))
                .ids(),
            None
        );
    }
}
