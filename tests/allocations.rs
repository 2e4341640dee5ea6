//! Heap allocations on the event path, counted by a global allocator of this test binary
//! (`stats_alloc`; its own binary, so that the count sees no other test).
//!
//! One publisher in a closed loop publishes to a hub (in-memory history) with subscribers
//! whose streams are drained after each publish, all on one current-thread runtime. The
//! allocations of one publish and its deliveries are then a fixed number, which this test
//! prints and checks: with tracing off, fanning one event out allocates nothing per
//! subscriber (the frame is encoded once and shared; a queued item and its stamp live in
//! the subscriber's queue), and a subscriber more costs no allocation per event.
//!
//! `bench/allocations.sh` runs it in two builds, with the `otel` feature (tracing compiled in,
//! off at run time) and without it, and checks that both count the same: tracing that is off
//! allocates nothing on the event path.

use std::alloc::System;

use futures_util::StreamExt;
use ssehub::{Event, Hub, HubConfig, SubscribeRequest};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Allocations per event, with `subscribers` streams drained after each publish (the median of
/// five rounds of 200 events, after a warm-up).
async fn allocations_per_event(subscribers: usize) -> u64 {
    let hub = Hub::builder(HubConfig {
        initial_cursor: false,
        ..HubConfig::default()
    })
    .build()
    .await
    .expect("hub");
    let mut streams = Vec::new();
    for _ in 0..subscribers {
        let subscription = hub
            .subscribe(SubscribeRequest {
                topics: vec!["t".into()],
                matchers: Vec::new(),
                last_event_id: None,
                grant: Default::default(),
                remote_addr: None,
            })
            .await
            .expect("subscribe");
        streams.push(subscription.stream);
    }
    let mut round = async |events: u64| {
        let region = Region::new(GLOBAL);
        for i in 0..events {
            let event = Event::new("t", "an update of a typical size, about fifty bytes long");
            let receipt = hub.publish(event).await.expect("publish");
            for stream in &mut streams {
                let frame = stream.next().await.expect("a frame");
                assert!(
                    frame
                        .windows(receipt.id.len())
                        .any(|w| w == receipt.id.as_bytes()),
                    "event {i}: the frame of the published event"
                );
            }
            drop(receipt);
        }
        let change = region.change();
        ((change.allocations + change.reallocations) as u64) / events
    };
    round(500).await;
    let mut rounds = Vec::new();
    for _ in 0..5 {
        rounds.push(round(200).await);
    }
    rounds.sort_unstable();
    hub.shutdown().await;
    rounds[2]
}

#[test]
fn fanning_out_one_event_allocates_nothing_per_subscriber() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let one = runtime.block_on(allocations_per_event(1));
    let ten = runtime.block_on(allocations_per_event(10));
    println!("allocations per event: 1 subscriber {one}, 10 subscribers {ten}");
    assert_eq!(
        one, ten,
        "nine subscribers more cost allocations per event (1: {one}, 10: {ten})"
    );
}
