//! The figures of one run ([`Report`], printed as JSON with `--json`) and the human summary.

use serde::Serialize;

use super::histogram::Percentiles;

pub(super) fn round_to(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// What `--server-pid` adds to the report.
#[derive(Debug, Serialize)]
pub(super) struct ServerFigures {
    pub(super) pid: u32,
    /// RSS before the first subscription.
    pub(super) rss_before_kib: u64,
    /// RSS with every subscription open and idle (2 s after the last one opened).
    pub(super) rss_idle_kib: u64,
    /// RSS once the deliveries are over, subscriptions still open.
    pub(super) rss_end_kib: u64,
    /// (idle − before) / subscribers.
    pub(super) idle_bytes_per_connection: f64,
    /// The same in KB (1000 bytes), as in BENCHMARKS.md.
    pub(super) idle_kb_per_connection: f64,
    /// utime + stime from the first publish to the end of the deliveries.
    pub(super) publish_phase_cpu_seconds: f64,
    pub(super) clock_ticks_per_second: u64,
}

/// Every figure of one run; `--json` prints it as is.
#[derive(Debug, Serialize)]
pub(super) struct Report {
    pub(super) subscribers: usize,
    pub(super) events: u64,
    pub(super) payload_bytes: usize,
    /// Events per second asked for; 0 is as fast as possible.
    pub(super) rate: f64,
    pub(super) publish_concurrency: usize,
    pub(super) subscribe_url: String,
    pub(super) publish_url: String,
    /// `--http2`: subscriptions per HTTP/2 connection; `None`: one HTTP/1.1 connection each.
    pub(super) http2_streams_per_connection: Option<usize>,
    /// Subscription connections opened.
    pub(super) connections: usize,
    /// Time to open every subscription (all response heads received).
    pub(super) connect_seconds: f64,
    /// Publishes answered with a 2xx status.
    pub(super) published: u64,
    pub(super) publish_failed: u64,
    pub(super) first_publish_error: Option<String>,
    /// First publish to last publish answer.
    pub(super) publish_seconds: f64,
    /// Publish request round trips.
    pub(super) publish_latency_ms: Option<Percentiles>,
    /// subscribers × events.
    pub(super) expected: u64,
    /// Distinct (subscriber, event) deliveries.
    pub(super) delivered: u64,
    pub(super) lost: u64,
    pub(super) loss_percent: f64,
    pub(super) duplicates: u64,
    /// Events that were not bench payloads of this run.
    pub(super) foreign: u64,
    pub(super) streams_ended_early: usize,
    pub(super) first_stream_error: Option<String>,
    /// The run stopped `--timeout` after the last publish without every event.
    pub(super) timed_out: bool,
    /// First publish to the end of the run.
    pub(super) wait_seconds: f64,
    /// First publish to last delivery.
    pub(super) delivery_seconds: f64,
    /// delivered / delivery_seconds.
    pub(super) delivered_per_second: f64,
    /// Receive time − send time in the payload, per event and subscriber.
    pub(super) latency_ms: Option<Percentiles>,
    /// This process's CPU time over the same window as the server's.
    pub(super) bench_cpu_seconds: Option<f64>,
    pub(super) server: Option<ServerFigures>,
}

pub(super) fn print_summary(report: &Report) {
    let mode = if report.rate > 0.0 {
        format!("{} events/s", report.rate)
    } else {
        "as fast as possible".into()
    };
    let publishers = match report.publish_concurrency {
        1 => "1 publisher".to_owned(),
        n => format!("{n} publishers"),
    };
    println!(
        "ssehub bench: {} subscribers x {} events of {} bytes, {mode}, {publishers}",
        report.subscribers, report.events, report.payload_bytes
    );
    let protocol = match report.http2_streams_per_connection {
        Some(streams) => format!("HTTP/2, up to {streams} per connection"),
        None => "HTTP/1.1".into(),
    };
    println!(
        "  connect     {} streams on {} connections ({protocol}) in {:.2} s",
        report.subscribers, report.connections, report.connect_seconds
    );
    println!(
        "  publish     {} ok, {} failed in {:.2} s{}",
        report.published,
        report.publish_failed,
        report.publish_seconds,
        report
            .publish_latency_ms
            .as_ref()
            .map(|p| format!(
                " (round trip p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms)",
                p.p50, p.p99, p.max
            ))
            .unwrap_or_default()
    );
    if let Some(error) = &report.first_publish_error {
        println!("              first publish error: {error}");
    }
    println!(
        "  delivered   {} / {} (loss {:.3}%), {} duplicates, {} foreign{}",
        report.delivered,
        report.expected,
        report.loss_percent,
        report.duplicates,
        report.foreign,
        if report.timed_out { ", timed out" } else { "" }
    );
    if report.streams_ended_early > 0 {
        println!(
            "  ended early {} streams (first: {})",
            report.streams_ended_early,
            report.first_stream_error.as_deref().unwrap_or("?")
        );
    }
    println!(
        "  throughput  {:.0} events/s delivered (first publish to last delivery: {:.2} s)",
        report.delivered_per_second, report.delivery_seconds
    );
    match &report.latency_ms {
        Some(p) => println!(
            "  latency     p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            p.p50, p.p90, p.p99, p.p99_9, p.max
        ),
        None => println!("  latency     no event delivered"),
    }
    if let Some(server) = &report.server {
        let mib = |kib: u64| kib as f64 / 1024.0;
        println!(
            "  server RSS  {:.1} MiB before, {:.1} MiB idle ({:.1} KB per connection), {:.1} MiB at the end",
            mib(server.rss_before_kib),
            mib(server.rss_idle_kib),
            server.idle_kb_per_connection,
            mib(server.rss_end_kib)
        );
        let per_delivery_us = if report.delivered > 0 {
            server.publish_phase_cpu_seconds * 1e6 / report.delivered as f64
        } else {
            0.0
        };
        println!(
            "  server CPU  {:.2} s from the first publish to the end ({per_delivery_us:.2} µs per delivery)",
            server.publish_phase_cpu_seconds
        );
    }
    if let Some(cpu) = report.bench_cpu_seconds {
        println!("  bench CPU   {cpu:.2} s over the same window");
    }
}
