//! Encoder micro-benchmark: `wire::encode` of one event by payload size, with data on one line
//! and with data broken into 64-byte lines (each line becomes its own `data:` field).
//!
//! Run: `cargo bench --bench wire` (add `-- --quick` for a shorter run).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use ssehub::Event;

/// Payload sizes in bytes: 10 B, 100 B, 1 KiB, 16 KiB.
const SIZES: [usize; 4] = [10, 100, 1024, 16 * 1024];

/// `len` bytes of JSON-like text; with `line_breaks`, an LF every 64 bytes.
fn payload(len: usize, line_breaks: bool) -> String {
    let pattern = b"{\"title\":\"Dune\",\"year\":1965}";
    (0..len)
        .map(|i| {
            if line_breaks && i % 64 == 63 {
                '\n'
            } else {
                pattern[i % pattern.len()] as char
            }
        })
        .collect()
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for (label, line_breaks) in [("one line", false), ("LF every 64 B", true)] {
        for size in SIZES {
            let mut event = Event::new("https://example.com/books/1", payload(size, line_breaks));
            event.id = "urn:uuid:019b2c6e-8a1f-7cde-9a3b-4c5d6e7f8091".to_owned();
            event.event_type = Some("book".to_owned());
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_with_input(BenchmarkId::new(label, size), &event, |b, event| {
                b.iter(|| ssehub::wire::encode(black_box(event)))
            });
        }
    }
    group.finish();
}

fn main() {
    // `cargo test --all-targets` runs bench targets too, without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("wire benchmark: run it with `cargo bench --bench wire`");
        return;
    }
    let mut criterion = Criterion::default().configure_from_args();
    encode(&mut criterion);
    criterion.final_summary();
}
