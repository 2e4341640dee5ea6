//! `ssehub_delivery_lag_seconds`: from a publish accepted to its bytes written to one
//! subscriber's socket, one observation per live delivery.
//!
//! Written by hand rather than with `prometheus_client`'s `Histogram`: that one takes a mutex
//! per observation, and this histogram is observed once per delivered frame by every stream at
//! once (10,000 streams, hundreds of thousands of deliveries a second). Here an observation is
//! a bucket search over 14 bounds and two relaxed atomic additions to the counts of the
//! observing thread's own shard (no cache line is written by two threads); nothing is locked. The
//! figures are read (and made cumulative) only when scraped.
//!
//! A stream knows its bytes were written when the writer asks it for the next item (the
//! direct HTTP/1.1 writer asks only once the previous chunk is in the socket; hyper, once it
//! took it): `PendingLag` holds the stamps of the item in flight until then.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::TraceIds;

/// Bucket upper bounds, in microseconds: 0.5 ms to 10 s.
const BOUNDS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// A Prometheus histogram of delivery lags, observed without a lock.
#[derive(Debug, Clone, Default)]
pub struct LagHistogram {
    inner: Arc<[Shard; SHARDS]>,
}

/// Shards of the counts: each thread adds to one of its own (threads take them in turn), so
/// the streams of two worker threads never write the same cache line; a scrape adds them up.
const SHARDS: usize = 8;

/// The counts of one shard, on cache lines of its own (two 64-byte lines: 15 buckets and the
/// sum are 128 bytes).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

/// The shard of the current thread.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|shard| *shard)
}

impl LagHistogram {
    /// Records one delivery that took `lag_us` microseconds.
    pub fn observe_us(&self, lag_us: u64) {
        let bucket = BOUNDS_US
            .iter()
            .position(|&bound| lag_us <= bound)
            .unwrap_or(BOUNDS_US.len());
        let shard = &self.inner[shard_index()];
        shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        shard.sum_us.fetch_add(lag_us, Ordering::Relaxed);
    }

    /// Observations per bucket (not cumulative), summed over the shards.
    fn buckets(&self) -> [u64; BOUNDS_US.len() + 1] {
        let mut totals = [0; BOUNDS_US.len() + 1];
        for shard in self.inner.iter() {
            for (total, count) in totals.iter_mut().zip(&shard.buckets) {
                *total += count.load(Ordering::Relaxed);
            }
        }
        totals
    }

    /// Deliveries observed so far.
    pub fn count(&self) -> u64 {
        self.buckets().iter().sum()
    }

    /// The sum of the observed lags, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        let sum_us: u64 = self
            .inner
            .iter()
            .map(|shard| shard.sum_us.load(Ordering::Relaxed))
            .sum();
        sum_us as f64 / 1e6
    }
}

impl EncodeMetric for LagHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets: Vec<(f64, u64)> = BOUNDS_US
            .iter()
            .map(|&bound| bound as f64 / 1e6)
            .chain(std::iter::once(f64::MAX))
            .zip(self.buckets())
            .collect();
        // The count is the buckets' total, so the scrape is consistent even while streams
        // observe meanwhile.
        let count = buckets.iter().map(|(_, n)| n).sum();
        if let Some(last) = buckets.last_mut() {
            last.0 = f64::INFINITY;
        }
        encoder.encode_histogram::<NoLabelSet>(self.sum_seconds(), count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// One frame written to a stream's socket and not observed yet.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub(crate) accepted_us: u64,
    /// Set for a delivery sampled for tracing.
    pub(crate) trace: Option<Arc<TraceIds>>,
    /// The frame, kept only for a traced delivery (its id goes on the span).
    pub(crate) frame: Option<bytes::Bytes>,
}

/// Most frames `PendingLag` keeps room for between two items.
const KEPT_FRAMES: usize = 16;

/// The live frames of the item a stream handed to its writer, until the writer asks for the
/// next one (the bytes are written by then).
#[derive(Debug, Default)]
pub(crate) struct PendingLag {
    frames: Vec<InFlight>,
    /// When the item left the stream, in microseconds since the epoch (a traced delivery's
    /// span starts there).
    handed_us: u64,
}

impl PendingLag {
    /// Room kept for frames (tests: a stream idle after a burst keeps little).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.frames.capacity()
    }

    /// Makes room for `frames` more frames.
    pub(crate) fn reserve(&mut self, frames: usize) {
        self.frames.reserve(frames);
    }

    /// Notes a frame of the item being handed over.
    pub(crate) fn push(&mut self, frame: InFlight) {
        self.frames.push(frame);
    }

    /// The item holding the pushed frames is being handed to the writer now (the time is
    /// read only for a traced delivery: its span starts here).
    pub(crate) fn handed(&mut self) {
        if self.frames.iter().any(|frame| frame.frame.is_some()) {
            self.handed_us = super::now_us();
        }
    }

    /// The writer asked for more, so the item was written: observes each of its frames.
    pub(crate) fn written(
        &mut self,
        histogram: &LagHistogram,
        tracing: &super::Tracing,
        subscriber: u64,
    ) {
        if self.frames.is_empty() {
            return;
        }
        let now = super::now_us();
        for frame in self.frames.drain(..) {
            if frame.accepted_us != 0 {
                histogram.observe_us(now.saturating_sub(frame.accepted_us));
            }
            if let (Some(trace), Some(bytes)) = (frame.trace, frame.frame) {
                tracing.delivered(
                    &trace,
                    &bytes,
                    subscriber,
                    frame.accepted_us,
                    self.handed_us,
                    now,
                );
            }
        }
        // A burst's buffer is not kept by a stream that is idle afterwards.
        if self.frames.capacity() > KEPT_FRAMES {
            self.frames = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket_and_scrape_cumulatively() {
        let histogram = LagHistogram::default();
        histogram.observe_us(400); // ≤ 0.5 ms
        histogram.observe_us(1_000); // ≤ 1 ms (bounds are inclusive)
        histogram.observe_us(30_000); // ≤ 50 ms
        histogram.observe_us(60_000_000); // +Inf
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("lag_seconds", "lag", histogram.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        for line in [
            "lag_seconds_bucket{le=\"0.0005\"} 1",
            "lag_seconds_bucket{le=\"0.001\"} 2",
            "lag_seconds_bucket{le=\"0.025\"} 2",
            "lag_seconds_bucket{le=\"0.05\"} 3",
            "lag_seconds_bucket{le=\"10.0\"} 3",
            "lag_seconds_bucket{le=\"+Inf\"} 4",
            "lag_seconds_count 4",
            "lag_seconds_sum 60.0314",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }
}
