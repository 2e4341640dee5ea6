//! `ssehub bench`: the end-to-end load generator.
//!
//! Owns one benchmark run against a running hub (ssehub, or any SSE server with an HTTP publish
//! endpoint): it opens N subscriptions, each on its own `TcpStream` with
//! `hyper::client::conn::http1::handshake` (no pool, so the connection count is exact), publishes
//! M timestamped events, parses every delivered event with [`crate::wire::Parser`], and reports
//! connection time, loss, throughput and latency percentiles, plus the server's memory and CPU
//! when given its PID (read from `/proc`). Running the hub is left to the caller; this file never
//! starts or stops a server.
//!
//! Safety rails: only loopback hosts are accepted unless `--allow-remote` is passed, the number
//! of subscribers is checked against the open-file limit, and every phase is bounded in count and
//! time (`--timeout`).
//!
//! Over `https://` (with `--ca-cert`, the only root trusted) subscriptions negotiate
//! `http/1.1` by ALPN and publishes go over HTTP/1.1 connections of their own (hyper on
//! tokio-rustls, one per publisher). `--http2 STREAMS` shares connections instead: each carries
//! STREAMS subscriptions as HTTP/2 streams (ALPN `h2`, or prior knowledge over `http://`).

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use clap::Args;
use http::header::{HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{OnceCell, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use super::DEFAULT_HUB_URL;
use crate::auth::{Claims, JwtAlgorithm, JwtSigner, MercureClaim};
use crate::wire::Parser;

/// Open files kept free for everything that is not a subscription (publishers, stdio, /proc).
const SPARE_FILES: u64 = 64;

/// Largest `--payload-bytes`: the hub's default `--max-publish-bytes` is 1 MiB.
const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// Time the server gets after the last subscription opened before its idle RSS is read (the same
/// pause as `bench/idle_memory.py`).
const IDLE_SETTLE: Duration = Duration::from_secs(2);

/// How often the progress bars and the stop conditions are checked.
const TICK: Duration = Duration::from_millis(100);

/// The placeholder of `--publish-body` replaced by each event's payload.
const PAYLOAD_PLACEHOLDER: &str = "{payload}";

const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

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

/// The validated arguments, with URLs resolved.
struct Plan {
    subscribe_url: Uri,
    subscribe: Endpoint,
    publish_url: String,
    /// The publish URL resolved, for `https://` (published with hyper); `None`: with reqwest.
    publish_tls: Option<Endpoint>,
    /// Client configurations trusting `--ca-cert`, offering `http/1.1` and `h2` by ALPN.
    tls_http1: Option<TlsConnector>,
    tls_h2: Option<TlsConnector>,
    /// `--http2`: subscriptions per shared HTTP/2 connection.
    http2: Option<usize>,
    /// The publish body around `{payload}`.
    body_prefix: String,
    body_suffix: String,
    /// Whether payloads are URL-encoded into the body.
    form_body: bool,
    publish_headers: HeaderMap,
    subscribers: usize,
    connect_concurrency: usize,
    events: u64,
    rate: f64,
    publish_concurrency: usize,
    payload_bytes: usize,
    timeout: Duration,
    server_pid: Option<u32>,
}

impl Plan {
    fn new(args: &BenchArgs) -> anyhow::Result<Self> {
        ensure!(args.subscribers > 0, "--subscribers must be at least 1");
        ensure!(args.events > 0, "--events must be at least 1");
        ensure!(
            args.connect_concurrency > 0,
            "--connect-concurrency must be at least 1"
        );
        ensure!(
            (1..=1024).contains(&args.publish_concurrency),
            "--publishers must be between 1 and 1024"
        );
        ensure!(
            args.rate.is_finite() && args.rate >= 0.0,
            "--rate must be 0 (as fast as possible) or a positive number of events per second"
        );
        ensure!(
            args.payload_bytes <= MAX_PAYLOAD_BYTES,
            "--payload-bytes must be at most {MAX_PAYLOAD_BYTES}"
        );
        ensure!(!args.timeout.is_zero(), "--timeout must be positive");
        ensure!(
            args.http2.is_none_or(|streams| streams > 0),
            "--http2 must be at least 1 stream per connection"
        );
        let connections = args.http2.map_or(args.subscribers, |streams| {
            args.subscribers.div_ceil(streams)
        });
        check_open_files(connections)?;

        let subscribe_url = match &args.subscribe_url {
            Some(url) => url.clone(),
            None => {
                let mut query = form_urlencoded::Serializer::new(String::new());
                for topic in &args.topic {
                    query.append_pair("topic", topic);
                }
                let separator = if args.url.contains('?') { '&' } else { '?' };
                format!("{}{separator}{}", args.url, query.finish())
            }
        };
        let subscribe_url: Uri = subscribe_url
            .parse()
            .with_context(|| format!("subscribe URL {subscribe_url}"))?;
        let publish_url = args.publish_url.clone().unwrap_or_else(|| args.url.clone());
        let publish_uri: Uri = publish_url
            .parse()
            .with_context(|| format!("publish URL {publish_url}"))?;
        for uri in [&subscribe_url, &publish_uri] {
            ensure!(
                matches!(uri.scheme_str(), Some("http" | "https")),
                "{uri}: bench speaks http:// and https:// only"
            );
            ensure!(
                uri.scheme_str() != Some("https") || args.ca_cert.is_some(),
                "{uri}: https:// needs --ca-cert (the only CA the bench trusts)"
            );
            let host = uri_host(uri)?;
            ensure!(
                args.allow_remote || is_loopback_host(host),
                "{uri}: {host} is not a loopback address (127.0.0.0/8, ::1, localhost); \
                 load on other machines needs --allow-remote"
            );
        }
        let subscribe = Endpoint::new(&subscribe_url, args.allow_remote)?;
        let publish_tls = if publish_uri.scheme_str() == Some("https") {
            Some(Endpoint::new(&publish_uri, args.allow_remote)?)
        } else {
            None
        };
        let (tls_http1, tls_h2) = match &args.ca_cert {
            Some(path) => {
                let roots = read_roots(path)?;
                (
                    Some(tls_connector(roots.clone(), b"http/1.1")?),
                    Some(tls_connector(roots, b"h2")?),
                )
            }
            None => (None, None),
        };

        let form_body = args
            .publish_content_type
            .trim_start()
            .to_ascii_lowercase()
            .starts_with(FORM_CONTENT_TYPE);
        let template = match &args.publish_body {
            Some(template) => template.clone(),
            None => {
                let topic = args
                    .topic
                    .first()
                    .context("--topic needs a value for the default --publish-body")?;
                let topic: String = form_urlencoded::byte_serialize(topic.as_bytes()).collect();
                format!("topic={topic}&data={PAYLOAD_PLACEHOLDER}")
            }
        };
        let Some((body_prefix, body_suffix)) = template.split_once(PAYLOAD_PLACEHOLDER) else {
            bail!(
                "--publish-body must contain {PAYLOAD_PLACEHOLDER}, or latency cannot be measured"
            );
        };

        let mut publish_headers = HeaderMap::new();
        publish_headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(&args.publish_content_type)
                .context("--publish-content-type is not a valid header value")?,
        );
        if let Some(key) = &args.jwt_key {
            let signer = JwtSigner::new(args.jwt_algorithm, key).context("--jwt-key")?;
            let claims = Claims {
                exp: None,
                mercure: Some(MercureClaim {
                    publish: Some(vec!["*".into()]),
                    subscribe: None,
                    payload: None,
                }),
            };
            let token = signer
                .sign(&claims)
                .context("signing the publisher token")?;
            publish_headers.insert(
                AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {token}"))
                    .context("the signed token is not a valid header value")?,
            );
        }
        for header in &args.headers {
            let (name, value) = header
                .split_once(':')
                .with_context(|| format!("--header {header}: expected NAME:VALUE"))?;
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .with_context(|| format!("--header {header}: bad header name"))?;
            let value = HeaderValue::from_str(value.trim())
                .with_context(|| format!("--header {header}: bad header value"))?;
            publish_headers.append(name, value);
        }

        if let Some(pid) = args.server_pid {
            read_rss_kib(pid).with_context(|| format!("--server-pid {pid}"))?;
        }
        Ok(Self {
            subscribe_url,
            subscribe,
            publish_url,
            publish_tls,
            tls_http1,
            tls_h2,
            http2: args.http2,
            body_prefix: body_prefix.to_owned(),
            body_suffix: body_suffix.to_owned(),
            form_body,
            publish_headers,
            subscribers: args.subscribers,
            connect_concurrency: args.connect_concurrency,
            events: args.events,
            rate: args.rate,
            publish_concurrency: args.publish_concurrency,
            payload_bytes: args.payload_bytes,
            timeout: args.timeout,
            server_pid: args.server_pid,
        })
    }
}

/// Where requests to one URL go: its address (resolved once), request target (`/path?query`),
/// `Host` header, and the TLS server name for `https://`.
#[derive(Debug, Clone)]
struct Endpoint {
    addr: SocketAddr,
    target: Uri,
    host: HeaderValue,
    tls_name: Option<ServerName<'static>>,
}

impl Endpoint {
    fn new(url: &Uri, allow_remote: bool) -> anyhow::Result<Self> {
        let addr = resolve(url, allow_remote)?;
        let target: Uri = url
            .path_and_query()
            .map_or("/", |target| target.as_str())
            .parse()
            .with_context(|| format!("URL {url}"))?;
        let host = url
            .authority()
            .map(|authority| HeaderValue::from_str(authority.as_str()))
            .with_context(|| format!("URL {url}: no host"))?
            .with_context(|| format!("URL {url}: bad host"))?;
        let tls_name = if url.scheme_str() == Some("https") {
            Some(
                ServerName::try_from(uri_host(url)?.to_owned())
                    .with_context(|| format!("URL {url}: not a TLS server name"))?,
            )
        } else {
            None
        };
        Ok(Self {
            addr,
            target,
            host,
            tls_name,
        })
    }
}

/// The certificates of the PEM file `path`, as the only trusted roots.
fn read_roots(path: &std::path::Path) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path)
        .with_context(|| format!("--ca-cert {}", path.display()))?
    {
        let cert = cert.with_context(|| format!("--ca-cert {}", path.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("--ca-cert {}: not a usable CA", path.display()))?;
    }
    ensure!(
        !roots.is_empty(),
        "--ca-cert {}: no certificate",
        path.display()
    );
    Ok(roots)
}

/// A TLS client (ring) trusting `roots` only and offering the one ALPN protocol `alpn`.
fn tls_connector(roots: rustls::RootCertStore, alpn: &[u8]) -> anyhow::Result<TlsConnector> {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A byte stream to the server: TCP, or TLS over TCP.
trait Socket: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Socket for T {}
type Io = TokioIo<Box<dyn Socket>>;

/// Opens a connection to `endpoint`, with a TLS handshake for `https://`.
async fn connect(endpoint: &Endpoint, tls: Option<&TlsConnector>) -> Result<Io, String> {
    let stream = TcpStream::connect(endpoint.addr)
        .await
        .map_err(|e| format!("connecting to {}: {e}", endpoint.addr))?;
    // Small writes (the request) go out at once; the server's frames are what we measure.
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    match (&endpoint.tls_name, tls) {
        (Some(name), Some(connector)) => {
            let stream = connector
                .connect(name.clone(), stream)
                .await
                .map_err(|e| format!("TLS handshake with {}: {e}", endpoint.addr))?;
            Ok(TokioIo::new(Box::new(stream)))
        }
        (Some(_), None) => Err("https:// without --ca-cert".into()),
        (None, _) => Ok(TokioIo::new(Box::new(stream))),
    }
}

/// Raises the open-file limit to the hard limit and checks that `subscribers` sockets fit.
fn check_open_files(subscribers: usize) -> anyhow::Result<()> {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(error) => {
            let (soft, _hard) = rlimit::Resource::NOFILE
                .get()
                .context("reading the open-file limit")?;
            tracing::warn!(%error, soft, "could not raise the open-file limit");
            soft
        }
    };
    let needed = subscribers as u64 + SPARE_FILES;
    ensure!(
        needed <= limit,
        "--subscribers {subscribers} needs {needed} open files (one socket each, plus \
         {SPARE_FILES}) but this process may open only {limit}; use at most {} subscribers or \
         raise the hard limit (ulimit -Hn)",
        limit.saturating_sub(SPARE_FILES)
    );
    Ok(())
}

/// The host of `uri`, without the brackets of an IPv6 literal.
fn uri_host(uri: &Uri) -> anyhow::Result<&str> {
    let host = uri.host().with_context(|| format!("{uri}: no host"))?;
    Ok(host.trim_start_matches('[').trim_end_matches(']'))
}

/// Whether `host` is 127.0.0.0/8, ::1 or localhost.
fn is_loopback_host(host: &str) -> bool {
    match host.parse::<IpAddr>() {
        // `Ipv4Addr::is_loopback` is 127.0.0.0/8; `Ipv6Addr::is_loopback` is ::1 only.
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// Resolves the subscribe URL once; with a name, every address it resolves to must be loopback
/// too (a `localhost` entry pointing elsewhere is refused).
fn resolve(uri: &Uri, allow_remote: bool) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    let host = uri_host(uri)?;
    let default_port = if uri.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    let port = uri.port_u16().unwrap_or(default_port);
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .collect();
    ensure!(
        allow_remote || addrs.iter().all(|addr| addr.ip().is_loopback()),
        "{host} resolves to {addrs:?}, not only loopback addresses; pass --allow-remote to allow it"
    );
    addrs
        .first()
        .copied()
        .with_context(|| format!("{host} resolves to no address"))
}

/// State shared by the subscriber tasks and the main loop; counters are updated once per
/// received chunk, not per event.
struct Shared {
    /// Where every subscription goes.
    endpoint: Endpoint,
    /// TLS clients offering `http/1.1` and `h2` (with `https://`).
    tls_http1: Option<TlsConnector>,
    tls_h2: Option<TlsConnector>,
    events: u64,
    timeout: Duration,
    /// Limits the subscriptions being opened at once (`--connect-concurrency`). Never closed.
    connect_slots: Semaphore,
    connected: AtomicUsize,
    connect_failed: AtomicUsize,
    /// The start of the connect phase, and when the latest subscription got its response head
    /// (microseconds after it): the connect time, exact rather than rounded to a tick.
    connect_started: Instant,
    last_connected_us: AtomicU64,
    /// Streams still reading.
    open_streams: AtomicUsize,
    ended_early: AtomicUsize,
    /// Unique bench events delivered, over all streams.
    delivered: AtomicU64,
    duplicates: AtomicU64,
    /// Events whose data is not a bench payload of this run.
    foreign: AtomicU64,
    /// The first publish (`None` while connecting): the base of `last_delivery_us`.
    publish_started: Mutex<Option<Instant>>,
    /// The latest delivery, in microseconds after the first publish.
    last_delivery_us: AtomicU64,
    latency: Histogram,
    first_error: Mutex<Option<String>>,
    cancel: CancellationToken,
}

impl Shared {
    fn new(plan: &Plan) -> Self {
        Self {
            endpoint: plan.subscribe.clone(),
            tls_http1: plan.tls_http1.clone(),
            tls_h2: plan.tls_h2.clone(),
            events: plan.events,
            timeout: plan.timeout,
            connect_slots: Semaphore::new(plan.connect_concurrency),
            connected: AtomicUsize::new(0),
            connect_failed: AtomicUsize::new(0),
            connect_started: Instant::now(),
            last_connected_us: AtomicU64::new(0),
            open_streams: AtomicUsize::new(0),
            ended_early: AtomicUsize::new(0),
            delivered: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            publish_started: Mutex::new(None),
            last_delivery_us: AtomicU64::new(0),
            latency: Histogram::new(),
            first_error: Mutex::new(None),
            cancel: CancellationToken::new(),
        }
    }

    fn publish_started_at(&self, at: Instant) {
        if let Ok(mut started) = self.publish_started.lock() {
            *started = Some(at);
        }
    }

    fn record_error(&self, error: String) {
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert(error);
        }
    }

    fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|first| first.clone())
    }
}

/// One subscription: open it (holding a connect slot), then count and time what it delivers
/// until the run is cancelled or the server ends the stream. With a `group`, the subscription
/// is an HTTP/2 stream on the group's shared connection.
async fn run_subscriber(shared: Arc<Shared>, group: Option<Arc<H2Group>>) {
    let outcome = match group {
        None => {
            let Some((_sender, connection, body)) = opened(&shared, open_stream(&shared)).await
            else {
                return;
            };
            read_stream(&shared, connection, body).await
        }
        Some(group) => {
            let Some(body) = opened(&shared, open_h2_stream(&shared, &group)).await else {
                return;
            };
            // The connection is driven by its own task (see `connect_h2`).
            read_stream(&shared, std::future::pending(), body).await
        }
    };
    shared.open_streams.fetch_sub(1, Ordering::Relaxed);
    if let Err(error) = outcome {
        shared.ended_early.fetch_add(1, Ordering::Relaxed);
        shared.record_error(error);
    }
}

/// Runs `opening` holding a connect slot and within `--timeout`, and counts the outcome: `None`
/// when it failed (recorded) or the run was abandoned.
async fn opened<T>(
    shared: &Shared,
    opening: impl std::future::Future<Output = Result<T, String>>,
) -> Option<T> {
    let opening = async {
        // The semaphore is never closed, so `acquire` cannot fail; treat it as an error anyway.
        let _slot = shared
            .connect_slots
            .acquire()
            .await
            .map_err(|e| e.to_string())?;
        tokio::time::timeout(shared.timeout, opening)
            .await
            .map_err(|_| format!("no response head within {:?}", shared.timeout))?
    };
    let opened = tokio::select! {
        // The run was abandoned (another subscription failed): stop waiting.
        () = shared.cancel.cancelled() => return None,
        opened = opening => opened,
    };
    match opened {
        Ok(parts) => {
            let connected_us =
                u64::try_from(shared.connect_started.elapsed().as_micros()).unwrap_or(u64::MAX);
            shared
                .last_connected_us
                .fetch_max(connected_us, Ordering::Relaxed);
            shared.open_streams.fetch_add(1, Ordering::Relaxed);
            shared.connected.fetch_add(1, Ordering::Relaxed);
            Some(parts)
        }
        Err(error) => {
            shared.record_error(error);
            shared.connect_failed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

type Connection = hyper::client::conn::http1::Connection<Io, Empty<Bytes>>;
type SendRequest = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;
type H2SendRequest = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;
/// The HTTP/2 connection shared by a group of subscriptions, once opened.
type H2Group = OnceCell<H2SendRequest>;

/// The `GET` of a subscription.
fn subscribe_request(shared: &Shared) -> Result<Request<Empty<Bytes>>, String> {
    Request::get(shared.endpoint.target.clone())
        .header(HOST, shared.endpoint.host.clone())
        .header(ACCEPT, HeaderValue::from_static("text/event-stream"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("building the request: {e}"))
}

/// Connects, sends the `GET` and waits for a `200` response head.
async fn open_stream(
    shared: &Shared,
) -> Result<(SendRequest, Connection, hyper::body::Incoming), String> {
    let io = connect(&shared.endpoint, shared.tls_http1.as_ref()).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    let request = subscribe_request(shared)?;
    let mut connection = connection;
    let response = {
        let mut sending = pin!(sender.send_request(request));
        tokio::select! {
            response = &mut sending => response.map_err(|e| format!("subscribing: {e}"))?,
            // The connection future does the I/O; it only ends here if the server closed.
            ended = &mut connection => {
                return Err(match ended {
                    Ok(()) => "the server closed the connection before answering".into(),
                    Err(e) => format!("subscribing: {e}"),
                });
            }
        }
    };
    if response.status() != StatusCode::OK {
        return Err(format!("the server answered {}", response.status()));
    }
    Ok((sender, connection, response.into_body()))
}

/// Opens an HTTP/2 connection (ALPN `h2` over TLS, prior knowledge over TCP) driven by a task
/// of its own until the run is over.
async fn connect_h2(shared: &Shared) -> Result<H2SendRequest, String> {
    let io = connect(&shared.endpoint, shared.tls_h2.as_ref()).await?;
    let (sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    let cancel = shared.cancel.clone();
    tokio::spawn(async move {
        tokio::select! {
            // The run is over: dropping the connection closes it.
            () = cancel.cancelled() => {}
            // The server closed it; the streams report their end through their bodies.
            _ = connection => {}
        }
    });
    Ok(sender)
}

/// Opens one subscription as a stream of the group's HTTP/2 connection (opening it first when
/// no other subscription of the group has) and waits for a `200` response head.
async fn open_h2_stream(shared: &Shared, group: &H2Group) -> Result<hyper::body::Incoming, String> {
    let mut sender = group.get_or_try_init(|| connect_h2(shared)).await?.clone();
    sender
        .ready()
        .await
        .map_err(|e| format!("HTTP/2 connection: {e}"))?;
    let response = sender
        .send_request(subscribe_request(shared)?)
        .await
        .map_err(|e| format!("subscribing: {e}"))?;
    if response.status() != StatusCode::OK {
        return Err(format!("the server answered {}", response.status()));
    }
    Ok(response.into_body())
}

/// Reads one stream until cancelled: parses each chunk, checks each event's sequence number
/// against what this stream already saw, and records its latency.
///
/// # Errors
/// A stream the server ended, or one that failed, before the run was over (described).
async fn read_stream(
    shared: &Shared,
    connection: impl std::future::Future<Output = Result<(), hyper::Error>>,
    mut body: hyper::body::Incoming,
) -> Result<(), String> {
    let mut connection = pin!(connection);
    let mut connection_done = false;
    let mut parser = Parser::new();
    // One bit per sequence number: catches duplicates without a per-event allocation.
    let words = usize::try_from(shared.events.div_ceil(64)).map_err(|e| e.to_string())?;
    let mut seen = vec![0u64; words];
    // The first publish, once known: deliveries are timed from it.
    let mut base: Option<Instant> = None;
    // Made once: a new `cancelled()` future per chunk would register with the token each time.
    let mut cancelled = pin!(shared.cancel.cancelled());
    loop {
        let frame = tokio::select! {
            biased;
            // The run is over.
            () = &mut cancelled => return Ok(()),
            // The next piece of the body (hyper's `Incoming` is cancel-safe).
            frame = body.frame() => frame,
            // Drives the socket; its end is reported through the body on the next turn.
            ended = &mut connection, if !connection_done => {
                connection_done = true;
                if let Err(e) = ended {
                    return Err(format!("connection error: {e}"));
                }
                continue;
            }
        };
        let chunk = match frame {
            None => return Err("the server ended the stream".into()),
            Some(Err(e)) => return Err(format!("reading the stream: {e}")),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(chunk) => chunk,
                // Trailers: nothing to count.
                Err(_) => continue,
            },
        };
        let received_us = unix_micros();
        let events = parser
            .push(&chunk)
            .map_err(|e| format!("parsing the stream: {e}"))?;
        if events.is_empty() {
            continue;
        }
        let mut fresh = 0u64;
        for event in &events {
            let Some((seq, sent_us)) =
                read_payload(&event.data).filter(|(s, _)| *s < shared.events)
            else {
                shared.foreign.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            // `seq < events`, so both casts stay within `seen`.
            let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
            if seen[word] & bit != 0 {
                shared.duplicates.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            seen[word] |= bit;
            fresh += 1;
            shared.latency.record(received_us.saturating_sub(sent_us));
        }
        if fresh > 0 {
            shared.delivered.fetch_add(fresh, Ordering::Relaxed);
            if base.is_none() {
                base = shared
                    .publish_started
                    .lock()
                    .ok()
                    .and_then(|started| *started);
            }
            if let Some(base) = base {
                let after_us = u64::try_from(base.elapsed().as_micros()).unwrap_or(u64::MAX);
                shared
                    .last_delivery_us
                    .fetch_max(after_us, Ordering::Relaxed);
            }
        }
    }
}

/// The publishing side: a shared sequence counter, the request template and the outcome counts.
struct Publishing {
    client: PublishClient,
    url: String,
    timeout: Duration,
    headers: HeaderMap,
    body_prefix: String,
    body_suffix: String,
    form_body: bool,
    payload_bytes: usize,
    events: u64,
    rate: f64,
    /// The next sequence number to publish.
    next: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    /// Publishers that have finished.
    finished: AtomicUsize,
    /// The last publish answer, in microseconds after the first publish.
    last_answer_us: AtomicU64,
    latency: Histogram,
    first_error: Mutex<Option<String>>,
}

impl Publishing {
    fn new(plan: &Plan) -> anyhow::Result<Self> {
        let client = match &plan.publish_tls {
            Some(endpoint) => PublishClient::Tls {
                endpoint: endpoint.clone(),
                connector: plan
                    .tls_http1
                    .clone()
                    .context("https:// publishing needs --ca-cert")?,
            },
            None => PublishClient::Reqwest(
                reqwest::Client::builder()
                    // Never route benchmark load through an HTTP proxy from the environment.
                    .no_proxy()
                    .timeout(plan.timeout)
                    .pool_max_idle_per_host(plan.publish_concurrency)
                    .build()
                    .context("building the HTTP client")?,
            ),
        };
        Ok(Self {
            client,
            url: plan.publish_url.clone(),
            timeout: plan.timeout,
            headers: plan.publish_headers.clone(),
            body_prefix: plan.body_prefix.clone(),
            body_suffix: plan.body_suffix.clone(),
            form_body: plan.form_body,
            payload_bytes: plan.payload_bytes,
            events: plan.events,
            rate: plan.rate,
            next: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            finished: AtomicUsize::new(0),
            last_answer_us: AtomicU64::new(0),
            latency: Histogram::new(),
            first_error: Mutex::new(None),
        })
    }

    /// The request body of event `seq`, stamped now.
    fn body(&self, seq: u64) -> String {
        let payload = payload(seq, unix_micros(), self.payload_bytes);
        let mut body = String::with_capacity(
            self.body_prefix.len() + self.body_suffix.len() + payload.len() * 3,
        );
        body.push_str(&self.body_prefix);
        if self.form_body {
            body.extend(form_urlencoded::byte_serialize(payload.as_bytes()));
        } else {
            body.push_str(&payload);
        }
        body.push_str(&self.body_suffix);
        body
    }

    /// Publishes event `seq` and reads the answer: its status and body. Over TLS, `connection`
    /// is this publisher's own connection, opened when missing and dropped after an error.
    async fn publish(
        &self,
        connection: &mut Option<PublishSender>,
        seq: u64,
    ) -> Result<(StatusCode, Bytes), String> {
        match &self.client {
            PublishClient::Reqwest(client) => {
                let response = client
                    .post(&self.url)
                    .headers(self.headers.clone())
                    .body(self.body(seq))
                    .send()
                    .await
                    .map_err(|e| format!("{e:#}"))?;
                let status = response.status();
                // Read the (small) answer so the connection goes back to the pool.
                Ok((status, response.bytes().await.unwrap_or_default()))
            }
            PublishClient::Tls {
                endpoint,
                connector,
            } => {
                let outcome = tokio::time::timeout(
                    self.timeout,
                    self.publish_tls(connection, endpoint, connector, seq),
                )
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {:?}", self.timeout)));
                if outcome.is_err() {
                    *connection = None;
                }
                outcome
            }
        }
    }

    async fn publish_tls(
        &self,
        connection: &mut Option<PublishSender>,
        endpoint: &Endpoint,
        connector: &TlsConnector,
        seq: u64,
    ) -> Result<(StatusCode, Bytes), String> {
        let sender = match connection {
            Some(sender) if !sender.is_closed() => sender,
            _ => {
                let io = connect(endpoint, Some(connector)).await?;
                let (sender, driver) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(|e| format!("HTTP handshake: {e}"))?;
                // Ends once the sender is dropped (the publisher is done, or after an error).
                tokio::spawn(driver);
                connection.insert(sender)
            }
        };
        sender
            .ready()
            .await
            .map_err(|e| format!("publish connection: {e}"))?;
        let mut request = Request::post(endpoint.target.clone())
            .header(HOST, endpoint.host.clone())
            .body(Full::new(Bytes::from(self.body(seq))))
            .map_err(|e| format!("building the request: {e}"))?;
        request.headers_mut().extend(self.headers.clone());
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("publishing: {e}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok((status, body))
    }

    fn record_error(&self, error: String) {
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert(error);
        }
    }

    fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|first| first.clone())
    }
}

/// How publishes are sent: reqwest for `http://`; for `https://`, hyper over tokio-rustls
/// (reqwest is built without TLS here).
enum PublishClient {
    Reqwest(reqwest::Client),
    Tls {
        endpoint: Endpoint,
        connector: TlsConnector,
    },
}

type PublishSender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// One publisher: takes the next sequence number until all are taken (at most `--events`
/// requests in total, each bounded by `--timeout`), waiting for its slot when paced.
/// Starts `count` publishers on a runtime and thread of their own. A real publisher is another
/// process than the browsers; in this one, the answers to the publishers would otherwise be
/// read behind the wakes of thousands of subscriber tasks, and the round trips measured would
/// be this load generator's delay as much as the server's.
fn spawn_publishers(
    publishing: Arc<Publishing>,
    count: usize,
    started: Instant,
    cancel: CancellationToken,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the publishers' runtime")?;
    std::thread::Builder::new()
        .name("bench-publishers".into())
        .spawn(move || {
            runtime.block_on(async move {
                let tasks: Vec<_> = (0..count)
                    .map(|_| {
                        tokio::spawn(run_publisher(
                            Arc::clone(&publishing),
                            started,
                            cancel.clone(),
                        ))
                    })
                    .collect();
                for task in tasks {
                    // A publisher that panicked has nothing left to report.
                    let _ = task.await;
                }
            });
        })
        .context("starting the publishers' thread")
}

async fn run_publisher(publishing: Arc<Publishing>, started: Instant, cancel: CancellationToken) {
    let mut connection = None;
    loop {
        let seq = publishing.next.fetch_add(1, Ordering::Relaxed);
        if seq >= publishing.events || cancel.is_cancelled() {
            break;
        }
        if publishing.rate > 0.0 {
            let due = started + Duration::from_secs_f64(seq as f64 / publishing.rate);
            tokio::select! {
                // The run is over.
                () = cancel.cancelled() => break,
                // This event's slot in the paced schedule.
                () = tokio::time::sleep_until(due.into()) => {}
            }
        }
        let sent = Instant::now();
        let outcome = tokio::select! {
            // The run is over.
            () = cancel.cancelled() => break,
            outcome = publishing.publish(&mut connection, seq) => outcome,
        };
        match outcome {
            Ok((status, _)) if status.is_success() => {
                publishing.ok.fetch_add(1, Ordering::Relaxed);
                publishing
                    .latency
                    .record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
            }
            Ok((status, body)) => {
                let text = String::from_utf8_lossy(&body);
                publishing.failed.fetch_add(1, Ordering::Relaxed);
                publishing.record_error(format!("{status}: {}", text.trim()));
            }
            Err(error) => {
                publishing.failed.fetch_add(1, Ordering::Relaxed);
                publishing.record_error(error);
            }
        }
        let after_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        publishing
            .last_answer_us
            .fetch_max(after_us, Ordering::Relaxed);
    }
    publishing.finished.fetch_add(1, Ordering::Relaxed);
}

/// The payload of event `seq` sent at `sent_us`: `{"seq":…,"sent_us":…,"pad":"xx…"}`, padded
/// to `bytes` (longer when `bytes` is below the unpadded size).
fn payload(seq: u64, sent_us: u64, bytes: usize) -> String {
    use std::fmt::Write;
    let mut text = String::with_capacity(bytes.max(64));
    // Writing to a String cannot fail.
    let _ = write!(text, "{{\"seq\":{seq},\"sent_us\":{sent_us},\"pad\":\"");
    let padding = bytes.saturating_sub(text.len() + 2);
    text.extend(std::iter::repeat_n('x', padding));
    text.push_str("\"}");
    text
}

/// The sequence number and send time of a bench payload, without allocating; `None` for other
/// data. The payload is usually the whole data (ssehub, Nchan), which is read from its start;
/// a server that wraps it in an envelope is searched.
fn read_payload(data: &str) -> Option<(u64, u64)> {
    const SEQ: &str = "\"seq\":";
    const SENT: &str = ",\"sent_us\":";
    let from_seq = match data
        .strip_prefix('{')
        .and_then(|rest| rest.strip_prefix(SEQ))
    {
        Some(rest) => rest,
        None => &data[data.find(SEQ)? + SEQ.len()..],
    };
    let (seq, rest) = leading_number(from_seq)?;
    let (sent_us, _) = leading_number(rest.strip_prefix(SENT)?)?;
    Some((seq, sent_us))
}

/// The decimal number at the start of `text`, and what follows it.
fn leading_number(text: &str) -> Option<(u64, &str)> {
    let end = text
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(text.len());
    Some((text[..end].parse().ok()?, &text[end..]))
}

fn unix_micros() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX)
}

/// A log-linear histogram of microseconds, shared by all tasks: values below 256 are exact,
/// larger ones fall in one of 128 buckets per power of two (relative error below 0.8%), like
/// HdrHistogram with two significant digits. Constant memory whatever the number of events;
/// the maximum is kept exactly.
struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    max: AtomicU64,
}

/// Sub-buckets per power of two, as a power of two.
const SUB_BUCKET_BITS: u32 = 7;
const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;
/// Enough buckets for every `u64`.
const BUCKETS: usize = ((64 - SUB_BUCKET_BITS as usize) + 1) << SUB_BUCKET_BITS;

impl Histogram {
    fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }

    fn index(value: u64) -> usize {
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
    fn highest(index: usize) -> u64 {
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

    fn record(&self, value: u64) {
        if let Some(bucket) = self.buckets.get(Self::index(value)) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(value, Ordering::Relaxed);
    }

    /// Nearest-rank percentile (`quantile` in 0..=1), capped by the exact maximum.
    fn value_at(&self, quantile: f64) -> u64 {
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

    fn percentiles_ms(&self) -> Option<Percentiles> {
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

/// The clock tick `/proc/PID/stat` counts CPU time in.
const DEFAULT_CLOCK_TICKS: u64 = 100;

/// `getconf CLK_TCK`, run once; 100 (the Linux value on every common architecture) when
/// `getconf` is missing.
fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|&ticks| ticks > 0)
        .unwrap_or(DEFAULT_CLOCK_TICKS)
}

/// `VmRSS` of `pid`, in KiB (`/proc/PID/status` says "kB" but means KiB).
fn read_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .with_context(|| format!("no VmRSS in {path}"))
}

/// utime + stime of `pid`, in clock ticks (`/proc/PID/stat` fields 14 and 15, proc(5)).
fn read_cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // Field 2 (the command name) is in parentheses and may contain spaces: count after it.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("unexpected {path}"))?;
    let mut fields = after_name.split_whitespace().skip(11); // field 3 is the first here
    let mut next = || -> anyhow::Result<u64> {
        fields
            .next()
            .and_then(|field| field.parse().ok())
            .with_context(|| format!("unexpected {path}"))
    };
    Ok(next()? + next()?)
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

fn round_to(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize)]
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
    p99_9: f64,
    max: f64,
}

/// What `--server-pid` adds to the report.
#[derive(Debug, Serialize)]
struct ServerFigures {
    pid: u32,
    /// RSS before the first subscription.
    rss_before_kib: u64,
    /// RSS with every subscription open and idle (2 s after the last one opened).
    rss_idle_kib: u64,
    /// RSS once the deliveries are over, subscriptions still open.
    rss_end_kib: u64,
    /// (idle − before) / subscribers.
    idle_bytes_per_connection: f64,
    /// The same in KB (1000 bytes), as in BENCHMARKS.md.
    idle_kb_per_connection: f64,
    /// utime + stime from the first publish to the end of the deliveries.
    publish_phase_cpu_seconds: f64,
    clock_ticks_per_second: u64,
}

/// Every figure of one run; `--json` prints it as is.
#[derive(Debug, Serialize)]
struct Report {
    subscribers: usize,
    events: u64,
    payload_bytes: usize,
    /// Events per second asked for; 0 is as fast as possible.
    rate: f64,
    publish_concurrency: usize,
    subscribe_url: String,
    publish_url: String,
    /// `--http2`: subscriptions per HTTP/2 connection; `None`: one HTTP/1.1 connection each.
    http2_streams_per_connection: Option<usize>,
    /// Subscription connections opened.
    connections: usize,
    /// Time to open every subscription (all response heads received).
    connect_seconds: f64,
    /// Publishes answered with a 2xx status.
    published: u64,
    publish_failed: u64,
    first_publish_error: Option<String>,
    /// First publish to last publish answer.
    publish_seconds: f64,
    /// Publish request round trips.
    publish_latency_ms: Option<Percentiles>,
    /// subscribers × events.
    expected: u64,
    /// Distinct (subscriber, event) deliveries.
    delivered: u64,
    lost: u64,
    loss_percent: f64,
    duplicates: u64,
    /// Events that were not bench payloads of this run.
    foreign: u64,
    streams_ended_early: usize,
    first_stream_error: Option<String>,
    /// The run stopped `--timeout` after the last publish without every event.
    timed_out: bool,
    /// First publish to the end of the run.
    wait_seconds: f64,
    /// First publish to last delivery.
    delivery_seconds: f64,
    /// delivered / delivery_seconds.
    delivered_per_second: f64,
    /// Receive time − send time in the payload, per event and subscriber.
    latency_ms: Option<Percentiles>,
    /// This process's CPU time over the same window as the server's.
    bench_cpu_seconds: Option<f64>,
    server: Option<ServerFigures>,
}

fn print_summary(report: &Report) {
    let mode = if report.rate > 0.0 {
        format!("{} events/s", report.rate)
    } else {
        "as fast as possible".into()
    };
    println!(
        "ssehub bench: {} subscribers x {} events of {} bytes, {mode}, {} publishers",
        report.subscribers, report.events, report.payload_bytes, report.publish_concurrency
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_padded_and_reads_back() {
        let text = payload(42, 1_700_000_000_123_456, 100);
        assert_eq!(text.len(), 100);
        assert_eq!(read_payload(&text), Some((42, 1_700_000_000_123_456)));
        // Too small a size gives the unpadded payload.
        let text = payload(7, 1, 10);
        assert_eq!(read_payload(&text), Some((7, 1)));
        assert_eq!(read_payload("hello"), None);
        let wrapped = format!("{{\"message\":{}}}", payload(3, 9, 60));
        assert_eq!(read_payload(&wrapped), Some((3, 9)));
        assert_eq!(read_payload("{\"seq\":x,\"sent_us\":1}"), None);
    }

    #[test]
    fn only_loopback_hosts_pass() {
        for host in ["127.0.0.1", "127.1.2.3", "::1", "localhost", "LocalHost"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["10.0.0.1", "0.0.0.0", "::", "example.com", "128.0.0.1"] {
            assert!(!is_loopback_host(host), "{host}");
        }
        let uri: Uri = "http://[::1]:3000/x".parse().expect("uri");
        assert_eq!(uri_host(&uri).ok(), Some("::1"));
    }

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
