//! `ssehub bench`: the end-to-end load generator.
//!
//! Owns one benchmark run against a running hub (ssehub, or any SSE server with an HTTP publish
//! endpoint): it opens N subscriptions, each on its own `TcpStream` (no pool, so the connection
//! count is exact; over plain `http://` read straight from the socket by `plain`, over TLS
//! with `hyper::client::conn::http1::handshake`), publishes
//! M timestamped events, parses every delivered event with [`crate::wire::Parser`], and reports
//! connection time, loss, throughput and latency percentiles, plus the server's memory and CPU
//! when given its PID (read from `/proc`). Running the hub is left to the caller; this file never
//! starts or stops a server.
//!
//! Safety rails: only loopback hosts are accepted unless `--allow-remote` is passed, the number
//! of subscribers is checked against the open-file limit, and every phase is bounded in count and
//! time (`--timeout`).
//!
//! Over `https://` (trusting `--ca-cert` alone, or else the system's roots) subscriptions
//! negotiate `http/1.1` by ALPN on connections of their own (hyper on tokio-rustls), and
//! publishes go through reqwest over HTTP/1.1 (about one keep-alive connection per publisher). `--http2 STREAMS` shares connections instead: each carries
//! STREAMS subscriptions as HTTP/2 streams (ALPN `h2`, or prior knowledge over `http://`).
//!
//! One file per step: `plan` (the checked arguments), `connect` (TCP and TLS),
//! `subscribe` (the streams, counted and timed), `plain` (plain HTTP/1.1 streams without
//! hyper), `publish` (the publishers, with reqwest), `payload` (the timestamped payloads),
//! `histogram`, `procfs` (the server's RSS and CPU) and `report`; this file holds the arguments
//! and runs the phases in order.

mod connect;
mod histogram;
mod payload;
mod plain;
mod plan;
mod procfs;
mod publish;
mod report;
mod subscribe;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;

use self::plan::{Plan, FORM_CONTENT_TYPE};
use self::procfs::{clock_ticks_per_second, read_cpu_ticks, read_rss_kib};
use self::publish::{spawn_publishers, Publishing};
use self::report::{print_summary, round_to, Report, ServerFigures};
use self::subscribe::{run_subscriber, H2Group, Shared};
use super::DEFAULT_HUB_URL;
use crate::auth::JwtAlgorithm;

/// Time the server gets after the last subscription opened before its idle RSS is read (the same
/// pause as `bench/idle_memory.py`).
const IDLE_SETTLE: Duration = Duration::from_secs(2);

/// How often the progress bars and the stop conditions are checked.
const TICK: Duration = Duration::from_millis(100);

/// Arguments of `ssehub bench`.
///
/// Every host must be a loopback address (127.0.0.0/8, ::1, localhost) unless `--allow-remote`
/// is given. With more `--subscribers` than the open-file limit allows (the hard limit minus 64),
/// the run stops with an error before connecting; it never runs with fewer subscribers than asked.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Hosts must be loopback (127.0.0.0/8, ::1, localhost) unless --allow-remote \
is given. More --subscribers than the open-file hard limit minus 64 is an error: the run is never \
made smaller than asked."
)]
pub struct BenchArgs {
    /// The hub URL; subscriptions add `?topic=` for each `--topic`, publishes are posted to it.
    #[arg(long, env = "SSEHUB_URL", default_value = DEFAULT_HUB_URL)]
    pub url: String,
    /// Topic each subscriber subscribes to (repeatable); the first is also the published topic
    /// of the default `--publish-body`.
    #[arg(long, default_values_t = [String::from("bench")])]
    pub topic: Vec<String>,
    /// The full subscribe URL, replacing `--url` and `--topic` (e.g. Nchan's
    /// `http://127.0.0.1:8080/sub/bench`).
    #[arg(long)]
    pub subscribe_url: Option<String>,
    /// The publish URL (default: `--url`).
    #[arg(long)]
    pub publish_url: Option<String>,
    /// Publish body template; `{payload}` is replaced by each event's payload (URL-encoded when
    /// the content type is a form). Default: `topic=<first --topic>&data={payload}`.
    #[arg(long)]
    pub publish_body: Option<String>,
    /// Content type of the publish requests.
    #[arg(long, default_value = FORM_CONTENT_TYPE)]
    pub publish_content_type: String,
    /// Extra header of the publish requests, `NAME:VALUE` (repeatable).
    #[arg(long = "header", value_name = "NAME:VALUE")]
    pub headers: Vec<String>,
    /// Sign a publisher token (`mercure.publish: ["*"]`) with this key and send it as
    /// `Authorization: Bearer` on publish requests.
    #[arg(long, env = "SSEHUB_JWT_KEY", hide_env_values = true)]
    pub jwt_key: Option<String>,
    /// Algorithm of the token signed with `--jwt-key`.
    #[arg(long, default_value = "HS256")]
    pub jwt_algorithm: JwtAlgorithm,
    /// Number of subscriptions (one TCP connection each, or one per `--http2` streams). The
    /// open-file limit is raised to the hard limit first; needing more connections than it minus
    /// 64 is an error (the run is never silently made smaller).
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Subscriptions being opened at once.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// Number of events to publish.
    #[arg(long, default_value_t = 200)]
    pub events: u64,
    /// Events per second in total; 0 publishes as fast as the publishers can. When the achieved
    /// rate falls short, raise `--publishers`.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Concurrent publishers, each in a closed loop: it waits for its previous publish to be
    /// answered before it sends the next. The default, one, is how most applications publish.
    #[arg(
        long = "publishers",
        visible_alias = "publish-concurrency",
        default_value_t = 1
    )]
    pub publish_concurrency: usize,
    /// Size of each payload in bytes (at least the ~45 bytes of its sequence number and
    /// timestamp; at most 1 MiB).
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Bound of each phase: opening all subscriptions, each publish request, and waiting for
    /// deliveries after the last publish (e.g. 60s).
    #[arg(long, default_value = "60s", value_parser = crate::config::parse_duration)]
    pub timeout: Duration,
    /// PID of the server process, to report its RSS and CPU time (Linux `/proc`).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Print one JSON object with every figure instead of the human summary.
    #[arg(long)]
    pub json: bool,
    /// Allow hosts other than loopback. Never use this against machines you do not own.
    #[arg(long)]
    pub allow_remote: bool,
    /// PEM certificates of the CA trusted for `https://` URLs (required with them; no other
    /// root is trusted).
    #[arg(long, value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
    /// Share connections: each carries this many subscriptions as HTTP/2 streams (ALPN `h2`
    /// over `https://`, prior knowledge over `http://`). Without it: one HTTP/1.1 connection
    /// per subscription.
    #[arg(long, value_name = "STREAMS_PER_CONNECTION")]
    pub http2: Option<usize>,
}

/// Runs the benchmark and prints its report.
///
/// # Errors
/// Invalid arguments, a non-loopback host without `--allow-remote`, too few open files, a
/// server PID without `/proc` entries, or subscriptions that could not all be opened.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let plan = Plan::new(&args)?;
    let clock_ticks = clock_ticks_per_second();
    let rss_before_kib = match plan.server_pid {
        Some(pid) => Some(read_rss_kib(pid)?),
        None => None,
    };
    let progress_target = || {
        if std::io::stdout().is_terminal() {
            ProgressDrawTarget::stdout()
        } else {
            ProgressDrawTarget::hidden()
        }
    };

    // Phase 1: open every subscription.
    let shared = Arc::new(Shared::new(&plan));
    let (streams, connect_seconds) = open_all(&shared, &plan, progress_target()).await?;

    let rss_idle_kib = match plan.server_pid {
        Some(pid) => {
            tokio::time::sleep(IDLE_SETTLE).await;
            Some(read_rss_kib(pid)?)
        }
        None => None,
    };

    // Phase 2: publish, and wait for the deliveries.
    let server_cpu_before = plan.server_pid.map(read_cpu_ticks).transpose()?;
    let own_cpu_before = read_cpu_ticks(std::process::id()).ok();
    let publishing = Arc::new(Publishing::new(&plan)?);
    let publish_started = Instant::now();
    shared.publish_started_at(publish_started);
    let publishers = spawn_publishers(
        Arc::clone(&publishing),
        plan.publish_concurrency,
        publish_started,
        shared.cancel.clone(),
    )?;
    let expected = plan.subscribers as u64 * plan.events;
    let timed_out = wait_for_deliveries(&shared, &publishing, &plan, progress_target()).await?;
    let run_end = Instant::now();
    let server_cpu_after = plan.server_pid.map(read_cpu_ticks).transpose()?;
    let own_cpu_after = read_cpu_ticks(std::process::id()).ok();
    let rss_end_kib = match plan.server_pid {
        Some(pid) => Some(read_rss_kib(pid)?),
        None => None,
    };

    // Phase 3: close everything, then report.
    shared.cancel.cancel();
    for stream in streams {
        // A task that panicked has nothing left to report; its events are simply not counted.
        let _ = stream.await;
    }
    // The publishers end once cancelled; a thread that panicked has nothing left to report.
    let _ = tokio::task::spawn_blocking(move || publishers.join()).await;
    let publish_seconds = publishing.last_answer_us.load(Ordering::Relaxed).max(1) as f64 / 1e6;

    let delivered = shared.delivered.load(Ordering::Relaxed);
    let last_delivery_us = shared.last_delivery_us.load(Ordering::Relaxed);
    let delivery_seconds = if delivered > 0 {
        last_delivery_us.max(1) as f64 / 1e6
    } else {
        0.0
    };
    let ticks = clock_ticks as f64;
    let server = match (plan.server_pid, rss_before_kib, rss_idle_kib, rss_end_kib) {
        (Some(pid), Some(before), Some(idle), Some(end)) => {
            let idle_bytes = idle.saturating_sub(before) as f64 * 1024.0 / plan.subscribers as f64;
            Some(ServerFigures {
                pid,
                rss_before_kib: before,
                rss_idle_kib: idle,
                rss_end_kib: end,
                idle_bytes_per_connection: idle_bytes.round(),
                idle_kb_per_connection: round_to(idle_bytes / 1000.0, 1),
                publish_phase_cpu_seconds: match (server_cpu_before, server_cpu_after) {
                    (Some(b), Some(a)) => round_to(a.saturating_sub(b) as f64 / ticks, 2),
                    _ => 0.0,
                },
                clock_ticks_per_second: clock_ticks,
            })
        }
        _ => None,
    };
    let bench_cpu_seconds = match (own_cpu_before, own_cpu_after) {
        (Some(b), Some(a)) => Some(round_to(a.saturating_sub(b) as f64 / ticks, 2)),
        _ => None,
    };
    let lost = expected.saturating_sub(delivered);
    let report = Report {
        subscribers: plan.subscribers,
        events: plan.events,
        payload_bytes: plan.payload_bytes,
        rate: plan.rate,
        publish_concurrency: plan.publish_concurrency,
        subscribe_url: plan.subscribe_url.to_string(),
        publish_url: plan.publish_url.clone(),
        http2_streams_per_connection: plan.http2,
        connections: plan.http2.map_or(plan.subscribers, |streams| {
            plan.subscribers.div_ceil(streams)
        }),
        connect_seconds: round_to(connect_seconds, 3),
        published: publishing.ok.load(Ordering::Relaxed),
        publish_failed: publishing.failed.load(Ordering::Relaxed),
        first_publish_error: publishing.first_error(),
        publish_seconds: round_to(publish_seconds, 3),
        publish_latency_ms: publishing.latency.percentiles_ms(),
        expected,
        delivered,
        lost,
        loss_percent: round_to(lost as f64 * 100.0 / expected as f64, 3),
        duplicates: shared.duplicates.load(Ordering::Relaxed),
        foreign: shared.foreign.load(Ordering::Relaxed),
        streams_ended_early: shared.ended_early.load(Ordering::Relaxed),
        first_stream_error: shared.first_error(),
        timed_out,
        wait_seconds: round_to((run_end - publish_started).as_secs_f64(), 3),
        delivery_seconds: round_to(delivery_seconds, 3),
        delivered_per_second: if delivery_seconds > 0.0 {
            (delivered as f64 / delivery_seconds).round()
        } else {
            0.0
        },
        latency_ms: shared.latency.percentiles_ms(),
        bench_cpu_seconds,
        server,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).context("encoding the report")?
        );
    } else {
        print_summary(&report);
    }
    Ok(())
}

/// Spawns one task per subscription and waits until every one has its `200` response head.
/// Returns the tasks and the connect time in seconds.
///
/// # Errors
/// Any subscription that fails, or not all of them open within `--timeout`; the tasks are then
/// cancelled.
async fn open_all(
    shared: &Arc<Shared>,
    plan: &Plan,
    target: ProgressDrawTarget,
) -> anyhow::Result<(Vec<JoinHandle<()>>, f64)> {
    let bar = progress_bar(plan.subscribers as u64, "connecting", target)?;
    // With --http2, subscriptions `i * streams ..` share the connection of group `i`, opened by
    // whichever of them comes first.
    let groups: Vec<Arc<H2Group>> = plan.http2.map_or_else(Vec::new, |streams| {
        (0..plan.subscribers.div_ceil(streams))
            .map(|_| Arc::new(H2Group::new()))
            .collect()
    });
    let streams: Vec<_> = (0..plan.subscribers)
        .map(|index| {
            let group = plan
                .http2
                .and_then(|streams| groups.get(index / streams))
                .map(Arc::clone);
            tokio::spawn(run_subscriber(Arc::clone(shared), group))
        })
        .collect();
    let deadline = shared.connect_started + plan.timeout;
    loop {
        tokio::time::sleep(TICK).await;
        let connected = shared.connected.load(Ordering::Relaxed);
        let failed = shared.connect_failed.load(Ordering::Relaxed);
        bar.set_position(connected as u64);
        if failed > 0 {
            bar.abandon();
            shared.cancel.cancel();
            bail!(
                "{failed} of {} subscriptions to {} failed (first error: {})",
                plan.subscribers,
                plan.subscribe_url,
                shared.first_error().unwrap_or_default()
            );
        }
        if connected == plan.subscribers {
            bar.finish_and_clear();
            let seconds = shared.last_connected_us.load(Ordering::Relaxed) as f64 / 1e6;
            return Ok((streams, seconds));
        }
        if Instant::now() >= deadline {
            bar.abandon();
            shared.cancel.cancel();
            bail!(
                "only {connected} of {} subscriptions opened within {:?}",
                plan.subscribers,
                plan.timeout
            );
        }
    }
}

/// Waits, checking every tick, until every expected event arrived, or every acknowledged one
/// did once publishing is over, or every stream ended, or `--timeout` passed after the last
/// publish. Returns whether it gave up on the timeout.
///
/// # Errors
/// Only a bad progress bar template.
async fn wait_for_deliveries(
    shared: &Shared,
    publishing: &Publishing,
    plan: &Plan,
    target: ProgressDrawTarget,
) -> anyhow::Result<bool> {
    let expected = plan.subscribers as u64 * plan.events;
    let bar = progress_bar(expected, "receiving", target)?;
    let mut publishing_done_at: Option<Instant> = None;
    let timed_out = loop {
        tokio::time::sleep(TICK).await;
        let delivered = shared.delivered.load(Ordering::Relaxed);
        bar.set_position(delivered);
        if delivered >= expected {
            break false;
        }
        if shared.open_streams.load(Ordering::Relaxed) == 0 {
            // Every stream ended: nothing more can arrive.
            break false;
        }
        if publishing_done_at.is_none()
            && publishing.finished.load(Ordering::Relaxed) == plan.publish_concurrency
        {
            publishing_done_at = Some(Instant::now());
        }
        if let Some(done_at) = publishing_done_at {
            let acknowledged = publishing.ok.load(Ordering::Relaxed);
            if delivered >= acknowledged * plan.subscribers as u64 {
                // Every acknowledged event arrived everywhere; failed publishes never will.
                break false;
            }
            if done_at.elapsed() >= plan.timeout {
                break true;
            }
        }
    };
    bar.finish_and_clear();
    Ok(timed_out)
}

fn progress_bar(
    len: u64,
    what: &'static str,
    target: ProgressDrawTarget,
) -> anyhow::Result<ProgressBar> {
    let style =
        ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos}/{len} ({per_sec}, {elapsed})")
            .context("progress bar template")?
            .progress_chars("=> ");
    let bar = ProgressBar::with_draw_target(Some(len), target).with_style(style);
    bar.set_prefix(what);
    Ok(bar)
}
