//! The latency histogram (log-linear, lock-free, constant memory) and the percentiles the
//! report prints.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::report::round_to;

/// A log-linear histogram of microseconds, shared by all tasks: values below 256 are exact,
/// larger ones fall in one of 128 buckets per power of two (relative error below 0.8%), like
/// HdrHistogram with two significant digits. Constant memory whatever the number of events;
/// the maximum is kept exactly.
pub(super) struct Histogram {
    pub(super) buckets: Box<[AtomicU64]>,
    pub(super) count: AtomicU64,
    pub(super) max: AtomicU64,
}

/// Sub-buckets per power of two, as a power of two.
pub(super) const SUB_BUCKET_BITS: u32 = 7;
pub(super) const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;
/// Enough buckets for every `u64`.
pub(super) const BUCKETS: usize = ((64 - SUB_BUCKET_BITS as usize) + 1) << SUB_BUCKET_BITS;

impl Histogram {
    pub(super) fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }

    pub(super) fn index(value: u64) -> usize {
        if value < 2 * SUB_BUCKETS {
            return value as usize;
        }
        let top_bit = 63 - value.leading_zeros();
        let shift = top_bit - SUB_BUCKET_BITS;
        // In [SUB_BUCKETS, 2 * SUB_BUCKETS).
        let sub = value >> shift;
        (((shift as u64 + 1) << SUB_BUCKET_BITS) + (sub - SUB_BUCKETS)) as usize
    }

    /// The largest value of bucket `index`.
    pub(super) fn highest(index: usize) -> u64 {
        let index = index as u64;
        if index < 2 * SUB_BUCKETS {
            return index;
        }
        let shift = (index >> SUB_BUCKET_BITS) - 1;
        let sub = (index & (SUB_BUCKETS - 1)) + SUB_BUCKETS;
        // In u128: the last bucket's bound is 2^64 − 1.
        let bound = (u128::from(sub + 1) << shift) - 1;
        u64::try_from(bound).unwrap_or(u64::MAX)
    }

    pub(super) fn record(&self, value: u64) {
        if let Some(bucket) = self.buckets.get(Self::index(value)) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(value, Ordering::Relaxed);
    }

    /// Records the values of one received chunk: each in its bucket, then the count and the
    /// maximum once (the two atomics every task touches, so once per chunk rather than per
    /// event: the load generator shares the cores with the hub it measures).
    pub(super) fn record_all(&self, values: &[u64]) {
        let mut max = 0;
        for &value in values {
            if let Some(bucket) = self.buckets.get(Self::index(value)) {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
            max = max.max(value);
        }
        if !values.is_empty() {
            self.count.fetch_add(values.len() as u64, Ordering::Relaxed);
            self.max.fetch_max(max, Ordering::Relaxed);
        }
    }

    /// Nearest-rank percentile (`quantile` in 0..=1), capped by the exact maximum.
    pub(super) fn value_at(&self, quantile: f64) -> u64 {
        let count = self.count.load(Ordering::Relaxed);
        let max = self.max.load(Ordering::Relaxed);
        let rank = ((quantile * count as f64).ceil() as u64).clamp(1, count.max(1));
        let mut seen = 0;
        for (index, bucket) in self.buckets.iter().enumerate() {
            seen += bucket.load(Ordering::Relaxed);
            if seen >= rank {
                return Self::highest(index).min(max);
            }
        }
        max
    }

    pub(super) fn percentiles_ms(&self) -> Option<Percentiles> {
        if self.count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let ms = |us: u64| round_to(us as f64 / 1000.0, 3);
        Some(Percentiles {
            p50: ms(self.value_at(0.50)),
            p90: ms(self.value_at(0.90)),
            p99: ms(self.value_at(0.99)),
            p99_9: ms(self.value_at(0.999)),
            max: ms(self.max.load(Ordering::Relaxed)),
        })
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize)]
pub(super) struct Percentiles {
    pub(super) p50: f64,
    pub(super) p90: f64,
    pub(super) p99: f64,
    pub(super) p99_9: f64,
    pub(super) max: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_contiguous_and_tight() {
        let mut previous = None;
        for value in (0..100_000u64).chain([u64::MAX / 2, u64::MAX]) {
            let index = Histogram::index(value);
            assert!(index < BUCKETS);
            assert!(Histogram::highest(index) >= value);
            let low = if index == 0 {
                0
            } else {
                Histogram::highest(index - 1) + 1
            };
            assert!(low <= value, "{value} below bucket {index}");
            if value < 100_000 {
                // Relative error below 1%.
                assert!((Histogram::highest(index) - value) as f64 <= value as f64 / 100.0);
                if let Some(previous) = previous {
                    assert!(index == previous || index == previous + 1);
                }
                previous = Some(index);
            }
        }
    }

    #[test]
    fn values_recorded_a_chunk_at_a_time_count_as_recorded_one_by_one() {
        let (one_by_one, by_chunk) = (Histogram::new(), Histogram::new());
        let values: Vec<u64> = (0..5000u64).map(|n| (n * 7919) % 100_003).collect();
        for value in &values {
            one_by_one.record(*value);
        }
        for chunk in values.chunks(37) {
            by_chunk.record_all(chunk);
        }
        by_chunk.record_all(&[]);
        for quantile in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(one_by_one.value_at(quantile), by_chunk.value_at(quantile));
        }
        assert_eq!(by_chunk.count.load(Ordering::Relaxed), 5000);
        assert_eq!(
            by_chunk.max.load(Ordering::Relaxed),
            *values.iter().max().expect("values")
        );
    }

    #[test]
    fn histogram_percentiles_use_nearest_rank() {
        let histogram = Histogram::new();
        for value in 1..=1000 {
            histogram.record(value);
        }
        let p = histogram.percentiles_ms().expect("values");
        assert!((p.p50 - 0.5).abs() < 0.01, "{p:?}");
        assert!((p.p99 - 0.99).abs() < 0.01, "{p:?}");
        assert_eq!(p.max, 1.0);
        assert!(p.p50 <= p.p90 && p.p90 <= p.p99 && p.p99 <= p.p99_9 && p.p99_9 <= p.max);
    }
}
