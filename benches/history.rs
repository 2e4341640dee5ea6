//! History benchmark: publish and replay throughput of the durable store against the in-memory
//! one, through the library's own `Hub::publish` and `Hub::subscribe` (no HTTP, so the figures
//! are the store's and the hub's, not the network's).
//!
//! Run: `cargo bench --bench history` (optionally `-- --events 50000 --runs 5`).
//! Prints a Markdown table; every figure is the median of `--runs` runs made side by side.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use ssehub::history::{DurableHistory, History, MemoryHistory, Retention, SyncPolicy};
use ssehub::{Event, Hub, HubConfig, SubscribeRequest};

#[derive(Clone, Copy)]
enum Store {
    Memory,
    Durable(SyncPolicy),
}

impl Store {
    fn name(self) -> &'static str {
        match self {
            Store::Memory => "memory",
            Store::Durable(SyncPolicy::Batch) => "durable, sync=batch (default)",
            Store::Durable(SyncPolicy::Always) => "durable, sync=always",
        }
    }

    fn open(self, dir: &std::path::Path, events: usize) -> Arc<dyn History> {
        let retention = Retention {
            max_events: events as u64 * 2,
            max_age: None,
            max_bytes: None,
        };
        match self {
            Store::Memory => Arc::new(MemoryHistory::new(events * 2)),
            Store::Durable(sync) => {
                Arc::new(DurableHistory::open(dir, retention, sync).expect("open"))
            }
        }
    }
}

struct Figures {
    publish_per_sec: f64,
    publish_p50: Duration,
    publish_p99: Duration,
    replay_per_sec: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn run(store: Store, events: usize, publishers: usize) -> Figures {
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = Hub::builder(HubConfig::default())
        .history(store.open(dir.path(), events))
        .build()
        .await
        .expect("hub");
    let payload = "x".repeat(100);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let (hub, payload) = (hub.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(events / publishers);
            for i in 0..events / publishers {
                let mut event = Event::new("bench", payload.clone());
                event.id = format!("p{p}-{i}");
                let sent = Instant::now();
                hub.publish(event).await.expect("publish");
                latencies.push(sent.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(events);
    for task in tasks {
        latencies.extend(task.await.expect("publisher"));
    }
    let publish_elapsed = started.elapsed();
    latencies.sort();

    let started = Instant::now();
    let mut subscription = hub
        .subscribe(SubscribeRequest {
            topics: vec!["bench".into()],
            last_event_id: Some("earliest".into()),
            ..SubscribeRequest::default()
        })
        .await
        .expect("subscribe");
    let expected = latencies.len();
    let mut replayed = 0;
    while replayed < expected {
        let frame = subscription.stream.next().await.expect("frame");
        replayed += frame.windows(4).filter(|w| w == b"id: ").count();
    }
    let replay_elapsed = started.elapsed();
    drop(subscription);
    hub.shutdown().await;
    Figures {
        publish_per_sec: expected as f64 / publish_elapsed.as_secs_f64(),
        publish_p50: percentile(&latencies, 0.5),
        publish_p99: percentile(&latencies, 0.99),
        replay_per_sec: replayed as f64 / replay_elapsed.as_secs_f64(),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo test --all-targets` runs bench targets too, without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("history benchmark: run it with `cargo bench --bench history`");
        return;
    }
    let events = arg("--events", 20_000);
    let runs = arg("--runs", 3);
    let publishers = arg("--publishers", 64);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let stores = [
        Store::Memory,
        Store::Durable(SyncPolicy::Batch),
        Store::Durable(SyncPolicy::Always),
    ];
    let mut results: Vec<Vec<Figures>> = stores.iter().map(|_| Vec::new()).collect();
    // Interleave the stores run by run, so machine noise spreads over all of them alike.
    for _ in 0..runs {
        for (store, figures) in stores.iter().zip(results.iter_mut()) {
            // `sync=always` is one fsync per event: measure it on a tenth of the events.
            let n = if matches!(store, Store::Durable(SyncPolicy::Always)) {
                events / 10
            } else {
                events
            };
            figures.push(runtime.block_on(run(*store, n, publishers)));
        }
    }
    println!("{events} events of 100 bytes ({} for sync=always), {publishers} concurrent publishers, median of {runs} runs\n", events / 10);
    println!("| store | publish events/s | publish p50 | publish p99 | replay events/s |");
    println!("|---|---|---|---|---|");
    for (store, figures) in stores.iter().zip(results) {
        let p50 = median(
            figures
                .iter()
                .map(|f| f.publish_p50.as_secs_f64() * 1e3)
                .collect(),
        );
        let p99 = median(
            figures
                .iter()
                .map(|f| f.publish_p99.as_secs_f64() * 1e3)
                .collect(),
        );
        println!(
            "| {} | {:.0} | {:.2} ms | {:.2} ms | {:.0} |",
            store.name(),
            median(figures.iter().map(|f| f.publish_per_sec).collect()),
            p50,
            p99,
            median(figures.iter().map(|f| f.replay_per_sec).collect()),
        );
    }
}
