//! Fan-out micro-benchmark: one published event to 1, 1,000 and 10,000 in-process subscribers
//! through the library (`Hub::publish`, then every `subscription.stream` drained with
//! `StreamExt::next`, one task per subscriber as a server has one per connection). One
//! iteration is the time from the publish call until the last subscriber has the frame.
//!
//! Run: `cargo bench --bench fanout` (add `-- --quick` for a shorter run).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use futures_util::StreamExt;
use ssehub::{Event, Hub, HubConfig, SubscribeRequest};
use tokio::sync::Notify;

const TOPIC: &str = "https://example.com/books/1";

/// Subscribers that count down `remaining` for each frame they receive; the one that reaches
/// zero wakes the publisher.
struct Subscribers {
    remaining: Arc<AtomicUsize>,
    all_received: Arc<Notify>,
    count: usize,
}

async fn subscribe(hub: &Hub, count: usize) -> Subscribers {
    let remaining = Arc::new(AtomicUsize::new(0));
    let all_received = Arc::new(Notify::new());
    for _ in 0..count {
        let subscription = hub
            .subscribe(SubscribeRequest {
                topics: vec![TOPIC.to_owned()],
                ..SubscribeRequest::default()
            })
            .await
            .expect("subscribe");
        let (remaining, all_received) = (remaining.clone(), all_received.clone());
        tokio::spawn(async move {
            let mut stream = subscription.stream;
            while let Some(frame) = stream.next().await {
                std::hint::black_box(frame);
                if remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    all_received.notify_one();
                }
            }
        });
    }
    Subscribers {
        remaining,
        all_received,
        count,
    }
}

/// Publishes `iters` events one after another, each once the previous one reached everyone.
async fn publish_and_wait(hub: &Hub, subscribers: &Subscribers, iters: u64) -> Duration {
    let payload = "x".repeat(100);
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let event = Event::new(TOPIC, payload.clone());
        subscribers
            .remaining
            .store(subscribers.count, Ordering::Release);
        let started = Instant::now();
        hub.publish(event).await.expect("publish");
        subscribers.all_received.notified().await;
        total += started.elapsed();
    }
    total
}

fn fanout(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("fanout");
    for count in [1, 1_000, 10_000] {
        let config = HubConfig {
            heartbeat: Duration::ZERO,
            max_lifetime: None,
            ..HubConfig::default()
        };
        let hub = runtime.block_on(Hub::builder(config).build()).expect("hub");
        let subscribers = runtime.block_on(subscribe(&hub, count));
        group.throughput(Throughput::Elements(count as u64));
        if count >= 10_000 {
            group.sample_size(20);
        }
        group.bench_function(BenchmarkId::new("subscribers", count), |b| {
            b.iter_custom(|iters| runtime.block_on(publish_and_wait(&hub, &subscribers, iters)))
        });
        runtime.block_on(hub.shutdown());
    }
    group.finish();
}

fn main() {
    // `cargo test --all-targets` runs bench targets too, without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("fanout benchmark: run it with `cargo bench --bench fanout`");
        return;
    }
    let mut criterion = Criterion::default().configure_from_args();
    fanout(&mut criterion);
    criterion.final_summary();
}
