//! Soak: the real binary (durable history, `--anonymous`, an HMAC key) under a bounded run of
//! steady churn, sampled every second, then checked for leaks.
//!
//! The load, all on loopback and bounded in count and time:
//! - publishers, one task per topic, each waiting for its `200` before the next publish, about
//!   [`EVENTS_PER_SECOND`] in all over [`PUBLIC_TOPICS`] public and [`PRIVATE_TOPICS`] private
//!   topics, [`LANES`] publishers per topic. A publisher's events carry the ids `p3.0-1`,
//!   `p3.0-2`, … (topic `p3`, lane 0) in publish order, so a client can tell a gap, a duplicate
//!   or a reordering from the ids alone. Before the load, the publishers fill the history to its
//!   bound as fast as it takes them, so it is full at the baseline;
//! - a steady population of streams ([`DEFAULT_STREAMS`]), each slot opening a new stream as soon
//!   as its previous one ends: most clients leave on their own after 2–20 s, some are ended by
//!   the hub at `--max-lifetime`, some by the expiry of a short token; some hold a token for a
//!   private topic, some are anonymous and subscribe to a private topic they must never see;
//!   some resume with `Last-Event-ID` from a recent id, some from `earliest`;
//! - slow clients that subscribe to everything from `earliest` and stop reading, which the hub
//!   must drop (full queue or blocked write).
//!
//! Every normal client checks each event it gets (right topic, right data, the next id of its
//! topic), that the first live event is not later than the first one published after it
//! subscribed, and, before it leaves, that every event acknowledged to the publisher by then
//! has arrived. A first round of the same load warms the hub up (the allocator keeps pools);
//! after it and a quiet spell the baseline is taken. After the main round the open file
//! descriptors and the registry must return exactly to the baseline within
//! [`SETTLE_LIMIT`], and the resident memory to within [`RSS_TOLERANCE_KIB`] of it.
//!
//! `SSEHUB_SOAK_SECS` sets the whole run (default 120 s, for CI), `SSEHUB_SOAK_STREAMS` the
//! population, `SSEHUB_SOAK_CSV` where the samples go (default `target/soak/soak.csv`);
//! `scripts/soak SECONDS` runs it and plots the CSV with `bench/plot_soak.py`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use ssehub::auth::{Claims, MercureClaim};
use ssehub::wire::{ParsedEvent, Parser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::support::binary::BinaryHub;
use crate::support::observe::{process_figures, scrape_metrics, MetricValues, ProcessFigures};
use crate::support::{heavy, publisher_token, sign, SECRET};

const PUBLIC_TOPICS: usize = 12;
const PRIVATE_TOPICS: usize = 4;
const TOPICS: usize = PUBLIC_TOPICS + PRIVATE_TOPICS;
/// Publisher tasks per topic, each with its own sequence: a publisher waits for each `200`, so
/// two of them keep a topic's rate when acknowledgements are slow on a busy machine.
const LANES: usize = 2;
/// A topic and lane: one publisher task and one sequence of ids.
const SOURCES: usize = TOPICS * LANES;
/// Publishes per second over all topics.
const EVENTS_PER_SECOND: u64 = 240;
/// Normal streams open at once.
const DEFAULT_STREAMS: usize = 1000;
/// Slow clients open at once.
const SLOW_CLIENTS: usize = 4;
/// How long a slow client stops reading; the hub must have dropped it by then.
const SLOW_STALL: Duration = Duration::from_secs(12);
/// `--max-lifetime`: longer than any client stays on its own (20 s plus its tail check).
const MAX_LIFETIME: Duration = Duration::from_secs(30);
/// `--history-size`: small, so that the warm-up round fills it and the main round keeps it full.
const HISTORY_SIZE: u64 = 5000;
/// `--queue-capacity`: 2 s of everything at [`EVENTS_PER_SECOND`] for a slow client of `*`, about
/// 15 s for a normal client of two topics.
const QUEUE_CAPACITY: u64 = 512;
/// How long after the load stops open descriptors and registry must be back at the baseline.
const SETTLE_LIMIT: Duration = Duration::from_secs(15);
/// How far above the baseline the resident memory may end. The baseline is taken after a warm-up
/// round of the same load, so the allocator already holds the pools this load needs; what stays
/// above it is memory glibc malloc keeps in its per-thread arenas (freed, not returned) and
/// redb's page cache, neither of which grows with the length of the run. A leak of one
/// allocation per stream or per event would pass this bound within minutes at this churn
/// (tens of thousands of streams and events per minute).
const RSS_TOLERANCE_KIB: u64 = 16 * 1024;

fn topic_name(topic: usize) -> String {
    format!("soak/{}", topic_tag(topic))
}

/// `p0`…`p11` for public topics, `q0`…`q3` for private ones.
fn topic_tag(topic: usize) -> String {
    if topic < PUBLIC_TOPICS {
        format!("p{topic}")
    } else {
        format!("q{}", topic - PUBLIC_TOPICS)
    }
}

fn topic_of(source: usize) -> usize {
    source / LANES
}

/// The sources (publisher lanes) of `topic`.
fn sources_of(topic: usize) -> std::ops::Range<usize> {
    topic * LANES..(topic + 1) * LANES
}

fn event_id(source: usize, seq: u64) -> String {
    format!("{}.{}-{seq}", topic_tag(topic_of(source)), source % LANES)
}

/// The source and sequence number of an id made by [`event_id`].
fn parse_event_id(id: &str) -> Option<(usize, u64)> {
    let (tag, seq) = id.split_once('-')?;
    let (tag, lane) = tag.split_once('.')?;
    let (number, lane): (usize, usize) = (tag.get(1..)?.parse().ok()?, lane.parse().ok()?);
    let topic = match tag.as_bytes().first()? {
        b'p' if number < PUBLIC_TOPICS => number,
        b'q' if number < PRIVATE_TOPICS => PUBLIC_TOPICS + number,
        _ => return None,
    };
    (lane < LANES).then_some((topic * LANES + lane, seq.parse().ok()?))
}

/// The data of event `seq` of `source`: its number and 20 to 319 bytes of padding.
fn event_data(source: usize, seq: u64) -> String {
    let padding = 20 + (seq as usize * 7 + source * 13) % 300;
    format!("{seq} {}", "x".repeat(padding))
}

/// splitmix64: each client slot draws its own choices from its own seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `low..high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low)
    }
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
}

/// Counts kept by the load, for the assertions and the report.
#[derive(Default)]
struct Tally {
    /// Events received and checked by normal clients.
    received: AtomicU64,
    /// Streams opened by normal clients.
    sessions: AtomicU64,
    /// Streams their client closed after checking that nothing acknowledged was missing.
    left_complete: AtomicU64,
    /// Streams the hub ended at `--max-lifetime`.
    ended_at_lifetime: AtomicU64,
    /// Streams the hub ended at the expiry of their token.
    ended_at_token_expiry: AtomicU64,
    /// Streams resumed from a recent id that got exactly the next event of their topic.
    resumed: AtomicU64,
    /// Streams from `earliest` that got events published before they connected.
    replayed_from_earliest: AtomicU64,
    /// Streams from `earliest` the hub ended before their first event. Retention dropping the
    /// oldest events between locating the start and reading the first page once did this to a
    /// fifth of them; an `earliest` replay now takes what is left, so this must stay 0.
    earliest_overtaken: AtomicU64,
    /// Events of private topics received by clients holding a token for them.
    private_received: AtomicU64,
    /// Anonymous streams subscribed to a private topic (they must never get its events).
    snooping: AtomicU64,
    /// Slow clients that got their `200` and stopped reading.
    slow_stalled: AtomicU64,
    /// Slow clients the hub had dropped by the end of their stall.
    slow_dropped: AtomicU64,
    /// Publishes answered `200`.
    published: AtomicU64,
    /// Publishes answered otherwise, or not at all.
    publish_failures: AtomicU64,
    failure_count: AtomicU64,
    /// The first failures, described.
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failure_count.fetch_add(1, Ordering::Relaxed);
        let mut failures = self.failures.lock().expect("lock");
        if failures.len() < 20 {
            failures.push(what);
        }
    }
}

/// What every load task shares.
struct Load {
    addr: SocketAddr,
    url: String,
    /// One client for every stream, without a connection pool: a stream's connection closes
    /// with it, as a browser's `EventSource` does.
    subscribers: reqwest::Client,
    /// Per source: the sequence number of the last publish begun (set before it is sent).
    started: [AtomicU64; SOURCES],
    /// Per source: the sequence number of the last publish acknowledged with `200`.
    acknowledged: [AtomicU64; SOURCES],
    tally: Tally,
}

/// How a normal stream is meant to end.
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// The client closes it after this long, once it has every acknowledged event.
    Leave(Duration),
    /// The hub ends it at `--max-lifetime`.
    UntilMaxLifetime,
    /// The hub ends it when the token expires (Unix time, seconds).
    UntilTokenExpiry(u64),
}

/// Where a normal stream starts.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Start {
    Live,
    /// `Last-Event-ID` of this event of this source, of the stream's only topic.
    After(usize, u64),
    Earliest,
}

/// A stream's view of one source (a topic's publisher lane).
struct SourceCheck {
    source: usize,
    /// The next sequence number due; `None` before the first event.
    next: Option<u64>,
    /// `started[source]` when the response arrived: every later publish must arrive.
    started_at_open: u64,
    /// `acknowledged[source]` when the response arrived.
    acknowledged_at_open: u64,
}

/// Runs one normal stream from open to end, recording what went wrong in the tally.
async fn normal_stream(load: &Load, rng: &mut Rng, stop: &CancellationToken) {
    let public = rng.between(0, PUBLIC_TOPICS as u64) as usize;
    let private = PUBLIC_TOPICS + rng.between(0, PRIVATE_TOPICS as u64) as usize;
    let start = match rng.between(0, 100) {
        0..15 => {
            let source = public * LANES + rng.between(0, LANES as u64) as usize;
            let acknowledged = load.acknowledged[source].load(Ordering::Acquire);
            let back = rng.between(10, 100);
            if acknowledged > back {
                Start::After(source, acknowledged - back)
            } else {
                Start::Live
            }
        }
        15..20 => Start::Earliest,
        _ => Start::Live,
    };
    // (topics subscribed, topics whose events it must get, token expiry)
    let (subscribed, entitled, token_expiry) = if start != Start::Live {
        (vec![public], vec![public], None)
    } else {
        match rng.between(0, 100) {
            0..20 => {
                let lifetime = if rng.between(0, 2) == 0 {
                    rng.between(3, 11)
                } else {
                    300
                };
                let expiry = unix_now().as_secs() + lifetime;
                (vec![public, private], vec![public, private], Some(expiry))
            }
            20..25 => (vec![public, private], vec![public], None),
            25..45 => {
                let other = (public + 1 + rng.between(0, PUBLIC_TOPICS as u64 - 1) as usize)
                    % PUBLIC_TOPICS;
                (vec![public, other], vec![public, other], None)
            }
            _ => (vec![public], vec![public], None),
        }
    };
    let plan = match token_expiry {
        Some(expiry) if expiry < unix_now().as_secs() + 60 => Plan::UntilTokenExpiry(expiry),
        _ if rng.between(0, 100) < 10 => Plan::UntilMaxLifetime,
        _ => Plan::Leave(Duration::from_millis(rng.between(2_000, 20_000))),
    };

    let query: Vec<(&str, String)> = subscribed
        .iter()
        .map(|&topic| ("topic", topic_name(topic)))
        .collect();
    let mut request = load
        .subscribers
        .get(&load.url)
        .query(&query)
        .header("accept", "text/event-stream");
    if let Some(expiry) = token_expiry {
        request = request.bearer_auth(sign(&Claims {
            exp: Some(expiry),
            mercure: Some(MercureClaim {
                subscribe: Some(vec![topic_name(private)]),
                ..MercureClaim::default()
            }),
        }));
    }
    let resume_from = match start {
        Start::After(source, seq) => Some(event_id(source, seq)),
        Start::Earliest => Some("earliest".to_owned()),
        Start::Live => None,
    };
    if let Some(from) = &resume_from {
        request = request.header("last-event-id", from);
    }
    // The hub starts a stream's lifetime when it registers it, after this.
    let requested = tokio::time::Instant::now();
    let sent = tokio::select! {
        // The load stops: a request still on its way is abandoned.
        _ = stop.cancelled() => return,
        sent = tokio::time::timeout(Duration::from_secs(10), request.send()) => sent,
    };
    let response = match sent {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => return load.tally.fail(format!("subscribe: {error}")),
        Err(_) => return load.tally.fail("subscribe: no response within 10 s".into()),
    };
    let opened = tokio::time::Instant::now();
    load.tally.sessions.fetch_add(1, Ordering::Relaxed);
    if response.status() != 200 {
        return load
            .tally
            .fail(format!("subscribe {query:?}: status {}", response.status()));
    }
    let echoed = response
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match start {
        Start::After(..) if echoed != resume_from => {
            return load.tally.fail(format!(
                "resumed from {resume_from:?}, Last-Event-ID header {echoed:?}"
            ))
        }
        Start::Earliest if echoed.is_none() => {
            return load
                .tally
                .fail("resumed from earliest without a Last-Event-ID header".into())
        }
        _ => {}
    }
    let mut checks: Vec<SourceCheck> = entitled
        .iter()
        .flat_map(|&topic| sources_of(topic))
        .map(|source| SourceCheck {
            source,
            next: match start {
                Start::After(from, seq) if from == source => Some(seq + 1),
                _ => None,
            },
            started_at_open: load.started[source].load(Ordering::Acquire),
            acknowledged_at_open: load.acknowledged[source].load(Ordering::Acquire),
        })
        .collect();
    if token_expiry.is_none() && subscribed.len() > entitled.len() {
        load.tally.snooping.fetch_add(1, Ordering::Relaxed);
    }

    let mut body = response.bytes_stream();
    let mut parser = Parser::new();
    // When the client gives up on the hub ending the stream.
    let hub_end_limit = match plan {
        Plan::Leave(after) => opened + after,
        Plan::UntilMaxLifetime => opened + MAX_LIFETIME + Duration::from_secs(10),
        Plan::UntilTokenExpiry(expiry) => {
            opened
                + Duration::from_secs(expiry).saturating_sub(unix_now())
                + Duration::from_secs(10)
        }
    };
    // Reads until the planned end (or a failure), then, for `Leave`, on to the tail check.
    let mut tail: Option<(Vec<u64>, tokio::time::Instant)> = None;
    loop {
        let deadline = tail.as_ref().map_or(hub_end_limit, |(_, until)| *until);
        let chunk = tokio::select! {
            // The load stops: close the stream as a leaving client does.
            _ = stop.cancelled() => return,
            // The planned end, or the end of the tail check.
            _ = tokio::time::sleep_until(deadline) => {
                match (plan, &tail) {
                    (Plan::Leave(_), None) => {
                        // Everything acknowledged by now must arrive before the client leaves.
                        let targets = checks
                            .iter()
                            .map(|c| load.acknowledged[c.source].load(Ordering::Acquire))
                            .collect();
                        tail = Some((targets, tokio::time::Instant::now() + Duration::from_secs(5)));
                        if tail_complete(&checks, tail.as_ref().map(|(t, _)| t)) {
                            load.tally.left_complete.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        continue;
                    }
                    (Plan::Leave(_), Some((targets, _))) => {
                        let due: Vec<_> = checks.iter().map(|c| c.next).collect();
                        return load.tally.fail(format!(
                            "{subscribed:?} from {start:?}: acknowledged events up to {targets:?} \
                             not received 5 s later (next due {due:?})"
                        ));
                    }
                    _ => {
                        return load.tally.fail(format!(
                            "{subscribed:?}: the hub did not end the stream ({plan:?}) after {:?}",
                            opened.elapsed()
                        ));
                    }
                }
            }
            chunk = body.next() => chunk,
        };
        let bytes = match chunk {
            Some(Ok(bytes)) => bytes,
            end => {
                let clean = end.is_none();
                let nothing_yet = checks.iter().all(|c| c.next.is_none());
                if clean && start == Start::Earliest && nothing_yet {
                    load.tally
                        .earliest_overtaken
                        .fetch_add(1, Ordering::Relaxed);
                    return;
                }
                return hub_ended(load, plan, clean, requested.elapsed(), &subscribed, start);
            }
        };
        let events = match parser.push(&bytes) {
            Ok(events) => events,
            Err(error) => return load.tally.fail(format!("unparsable stream: {error}")),
        };
        for event in events {
            if let Err(what) = check_event(load, &mut checks, start, &event) {
                return load
                    .tally
                    .fail(format!("{subscribed:?} from {start:?}: {what}"));
            }
        }
        if let Some((targets, _)) = &tail {
            if tail_complete(&checks, Some(targets)) {
                load.tally.left_complete.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// Whether each topic's next due event is past its target (nothing acknowledged is missing).
fn tail_complete(checks: &[SourceCheck], targets: Option<&Vec<u64>>) -> bool {
    let Some(targets) = targets else {
        return false;
    };
    checks
        .iter()
        .zip(targets)
        .all(|(check, &target)| check.next.unwrap_or(check.started_at_open + 1) > target)
}

/// Checks one event against the stream's topics and advances them.
fn check_event(
    load: &Load,
    checks: &mut [SourceCheck],
    start: Start,
    event: &ParsedEvent,
) -> Result<(), String> {
    let (source, seq) =
        parse_event_id(&event.id).ok_or_else(|| format!("unknown event id {:?}", event.id))?;
    let first_of_stream = checks.iter().all(|c| c.next.is_none());
    let check = checks
        .iter_mut()
        .find(|c| c.source == source)
        .ok_or_else(|| format!("event {} of a topic it may not receive", event.id))?;
    if event.data != event_data(source, seq) {
        return Err(format!("event {}: wrong data", event.id));
    }
    match check.next {
        Some(next) if seq != next => {
            return Err(format!(
                "event {} where {} was due (a gap, a duplicate or out of order)",
                event.id,
                event_id(source, next)
            ))
        }
        Some(_) => {}
        None if start == Start::Earliest => {
            if check.acknowledged_at_open > 0 && seq > check.acknowledged_at_open {
                return Err(format!(
                    "from earliest, first event {} is newer than all {} acknowledged before",
                    event.id, check.acknowledged_at_open
                ));
            }
            if first_of_stream {
                load.tally
                    .replayed_from_earliest
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        None if seq > check.started_at_open + 1 => {
            return Err(format!(
                "first event {}, but {} was published after it subscribed",
                event.id,
                event_id(source, check.started_at_open + 1)
            ))
        }
        None => {}
    }
    if seq.checked_sub(1).map(|from| Start::After(source, from)) == Some(start) {
        load.tally.resumed.fetch_add(1, Ordering::Relaxed);
    }
    if topic_of(source) >= PUBLIC_TOPICS {
        load.tally.private_received.fetch_add(1, Ordering::Relaxed);
    }
    check.next = Some(seq + 1);
    load.tally.received.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Records the end of a stream by the hub: expected for lifetime and token plans, only then.
/// `lived` counts from the request, which the hub's own clock for the lifetime cannot precede.
fn hub_ended(
    load: &Load,
    plan: Plan,
    clean: bool,
    lived: Duration,
    subscribed: &[usize],
    start: Start,
) {
    let how = if clean { "ended" } else { "broke" };
    match plan {
        Plan::UntilMaxLifetime if clean && lived + Duration::from_millis(50) >= MAX_LIFETIME => {
            load.tally.ended_at_lifetime.fetch_add(1, Ordering::Relaxed);
        }
        Plan::UntilTokenExpiry(expiry)
            if clean && unix_now() + Duration::from_millis(500) >= Duration::from_secs(expiry) =>
        {
            load.tally
                .ended_at_token_expiry
                .fetch_add(1, Ordering::Relaxed);
        }
        _ => load.tally.fail(format!(
            "{subscribed:?} from {start:?}: the stream {how} after {lived:?}, planned {plan:?}"
        )),
    }
}

/// A client that subscribes to everything from `earliest` and stops reading. After
/// [`SLOW_STALL`] it reads what is left: the hub must have closed it. Its 4 KiB receive buffer
/// and 536-byte MSS keep the kernel buffers between hub and client small (on loopback Linux
/// sizes the sender's buffer from the MSS, 64 KiB there, into megabytes), so the hub's own
/// limits, queue and write timeout, are what it meets within seconds.
async fn slow_client(load: &Load, stop: &CancellationToken) {
    let connected = async {
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_recv_buffer_size(4096)?;
        socket.set_tcp_mss(536)?;
        socket.set_nonblocking(true)?;
        let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
        let mut stream = socket.connect(load.addr).await?;
        stream
            .write_all(
                b"GET /.well-known/mercure?topic=*&lastEventID=earliest HTTP/1.1\r\nHost: soak\r\n\r\n",
            )
            .await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>((stream, head))
    };
    let (mut stream, head) = tokio::select! {
        _ = stop.cancelled() => return,
        connected = tokio::time::timeout(Duration::from_secs(10), connected) => match connected {
            Ok(Ok(connected)) => connected,
            Ok(Err(error)) => return load.tally.fail(format!("slow client: {error}")),
            Err(_) => return load.tally.fail("slow client: no response within 10 s".into()),
        },
    };
    if &head != b"HTTP/1.1 200" {
        return load
            .tally
            .fail(format!("slow client: {:?}", String::from_utf8_lossy(&head)));
    }
    load.tally.slow_stalled.fetch_add(1, Ordering::Relaxed);
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = tokio::time::sleep(SLOW_STALL) => {}
    }
    // Dropped: what the hub had written is still buffered, then the end. Not dropped: the stream
    // goes on, as fast as it is now read.
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buffer = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = stream.read(&mut buffer).await {
            let _ = n;
        }
    });
    tokio::select! {
        _ = stop.cancelled() => {}
        drained = drained => match drained {
            Ok(()) => {
                load.tally.slow_dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => load
                .tally
                .fail(format!("a client that stopped reading for {SLOW_STALL:?} was not dropped")),
        },
    }
}

/// Publishes the events of `source` one after the other, paced to its share of the rate.
async fn publish_source(load: Arc<Load>, source: usize, stop: CancellationToken) {
    let client = reqwest::Client::new();
    let token = publisher_token(&["*"]);
    let mut ticker = tokio::time::interval(Duration::from_micros(
        1_000_000 * SOURCES as u64 / EVENTS_PER_SECOND,
    ));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        publish_next(&load, &client, &token, source).await;
    }
}

/// Publishes the next event of `source` and waits for its acknowledgement.
async fn publish_next(load: &Load, client: &reqwest::Client, token: &str, source: usize) {
    let seq = load.started[source].load(Ordering::Acquire) + 1;
    load.started[source].store(seq, Ordering::Release);
    let (id, data) = (event_id(source, seq), event_data(source, seq));
    let topic = topic_name(topic_of(source));
    let mut form = vec![
        ("topic", topic.as_str()),
        ("id", id.as_str()),
        ("data", data.as_str()),
    ];
    if topic_of(source) >= PUBLIC_TOPICS {
        form.push(("private", "on"));
    }
    let sent = client
        .post(&load.url)
        .bearer_auth(token)
        .form(&form)
        .send()
        .await;
    match sent {
        Ok(response) if response.status() == 200 => {
            load.acknowledged[source].store(seq, Ordering::Release);
            load.tally.published.fetch_add(1, Ordering::Relaxed);
        }
        Ok(response) => {
            load.tally.publish_failures.fetch_add(1, Ordering::Relaxed);
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            load.tally.fail(format!("publish {id}: {status} {body}"));
        }
        Err(error) => {
            load.tally.publish_failures.fetch_add(1, Ordering::Relaxed);
            load.tally.fail(format!("publish {id}: {error}"));
        }
    }
}

/// Fills the history to its bound as fast as it takes it: every source publishes its share,
/// one after the other, all sources at once. So the warm-up starts, as the main round does,
/// with resumable ids and a full history.
async fn fill_history(load: &Arc<Load>) {
    let per_source = HISTORY_SIZE.div_ceil(SOURCES as u64);
    let mut tasks = JoinSet::new();
    for source in 0..SOURCES {
        let load = load.clone();
        tasks.spawn(async move {
            let client = reqwest::Client::new();
            let token = publisher_token(&["*"]);
            for _ in 0..per_source {
                publish_next(&load, &client, &token, source).await;
            }
        });
    }
    while let Some(task) = tasks.join_next().await {
        task.expect("fill task");
    }
}

/// One round of the whole load for `length`; returns when every client has closed.
async fn run_load(load: &Arc<Load>, streams: usize, length: Duration, seed: u64) {
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    for source in 0..SOURCES {
        tasks.spawn(publish_source(load.clone(), source, stop.clone()));
    }
    for slot in 0..streams {
        let (load, stop) = (load.clone(), stop.clone());
        tasks.spawn(async move {
            // Spread the first connections over two seconds.
            tokio::time::sleep(Duration::from_millis(2000 * slot as u64 / streams as u64)).await;
            let mut rng = Rng(seed ^ (slot as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
            while !stop.is_cancelled() {
                normal_stream(&load, &mut rng, &stop).await;
            }
        });
    }
    for slot in 0..SLOW_CLIENTS {
        let (load, stop) = (load.clone(), stop.clone());
        tasks.spawn(async move {
            // Stagger them, so that some client is stalled at any moment.
            tokio::time::sleep(SLOW_STALL * slot as u32 / SLOW_CLIENTS as u32).await;
            while !stop.is_cancelled() {
                slow_client(&load, &stop).await;
            }
        });
    }
    tokio::time::sleep(length).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(task) = tasks.join_next().await {
            task.expect("load task");
        }
    })
    .await
    .expect("every client and publisher stops within 30 s");
}

/// One sample of the hub and the load.
#[derive(Debug, Clone)]
struct Sample {
    seconds: f64,
    phase: &'static str,
    process: ProcessFigures,
    metrics: MetricValues,
    received: u64,
    published: u64,
    slow_dropped: u64,
}

impl Sample {
    const CSV_HEADER: &'static str = "seconds,phase,rss_kib,threads,open_fds,\
        subscribers_connected,subscriptions,history_events,events_published_total,\
        events_delivered_total,events_replayed_total,slow_subscribers_disconnected_total,\
        streams_closed_total,client_events_received,client_publishes_acknowledged,\
        slow_clients_dropped";

    fn subscribers(&self) -> u64 {
        self.metrics.value("ssehub_subscribers_connected") as u64
    }

    fn subscriptions(&self) -> u64 {
        self.metrics.value("ssehub_subscriptions") as u64
    }

    fn history_events(&self) -> u64 {
        self.metrics.value("ssehub_history_events") as u64
    }

    fn streams_closed(&self) -> u64 {
        // Report only; no stream has closed before the first close.
        self.metrics
            .sum_of_family("ssehub_streams_closed_total")
            .unwrap_or(0.0) as u64
    }

    /// Streams closed for `reason`: 0 until the first one (the labelled family appears with its
    /// first sample). The assertions on it are increases over the baseline, which a renamed
    /// metric fails.
    fn closed_by(&self, reason: &str) -> u64 {
        self.metrics
            .get(&format!(
                "ssehub_streams_closed_total{{reason=\"{reason}\"}}"
            ))
            .unwrap_or(0.0) as u64
    }

    fn csv_line(&self) -> String {
        let m = |name: &str| self.metrics.value(name) as u64;
        format!(
            "{:.1},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            self.seconds,
            self.phase,
            self.process.rss_kib,
            self.process.threads,
            self.process.open_fds,
            self.subscribers(),
            self.subscriptions(),
            self.history_events(),
            m("ssehub_events_published_total"),
            m("ssehub_events_delivered_total"),
            m("ssehub_events_replayed_total"),
            m("ssehub_slow_subscribers_disconnected_total"),
            self.streams_closed(),
            self.received,
            self.published,
            self.slow_dropped,
        )
    }
}

/// Takes samples of the hub, one at a time, and writes each to the CSV.
struct Sampler {
    pid: u32,
    addr: SocketAddr,
    began: Instant,
    load: Arc<Load>,
    /// No pool: a scrape leaves no connection open, so it does not count in the next sample.
    scraper: reqwest::Client,
    csv: Mutex<std::fs::File>,
    samples: Mutex<Vec<Sample>>,
    phase: Mutex<&'static str>,
    /// Serializes samples and holds the end of the last scrape: the next count of descriptors
    /// waits 200 ms after it, so the hub has closed that scrape's connection.
    turn: tokio::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Sampler {
    /// Descriptors are counted before the scrape opens its connection.
    async fn sample(&self, phase: Option<&'static str>) -> Sample {
        let mut last_scrape = self.turn.lock().await;
        if let Some(at) = *last_scrape {
            tokio::time::sleep_until(at + Duration::from_millis(200)).await;
        }
        let process = process_figures(self.pid).expect("the hub is running");
        let metrics = scrape_metrics(&self.scraper, self.addr)
            .await
            .expect("scrape /metrics");
        *last_scrape = Some(tokio::time::Instant::now());
        let tally = &self.load.tally;
        let sample = Sample {
            seconds: self.began.elapsed().as_secs_f64(),
            phase: phase.unwrap_or_else(|| *self.phase.lock().expect("lock")),
            process,
            metrics,
            received: tally.received.load(Ordering::Relaxed),
            published: tally.published.load(Ordering::Relaxed),
            slow_dropped: tally.slow_dropped.load(Ordering::Relaxed),
        };
        writeln!(self.csv.lock().expect("lock"), "{}", sample.csv_line()).expect("write CSV");
        self.samples.lock().expect("lock").push(sample.clone());
        sample
    }

    fn set_phase(&self, phase: &'static str) {
        *self.phase.lock().expect("lock") = phase;
    }

    /// Samples every 250 ms until `settled` holds for the sample (returned) or `limit` passes.
    async fn sample_until(
        &self,
        limit: Duration,
        phase: &'static str,
        mut settled: impl FnMut(&Sample) -> bool,
    ) -> (Sample, bool) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let sample = self.sample(Some(phase)).await;
            if settled(&sample) {
                return (sample, true);
            }
            if tokio::time::Instant::now() >= deadline {
                return (sample, false);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
        Err(_) => default,
    }
}

/// The run described in the module doc. Lengths for the default 120 s: warm-up 20 s, quiet
/// about 5 s, main load about 85 s, settling a few seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_churn_returns_fds_registry_and_memory_to_baseline() {
    let _heavy = heavy().await;
    let total = Duration::from_secs(env_number("SSEHUB_SOAK_SECS", 120).max(60));
    let streams = env_number("SSEHUB_SOAK_STREAMS", DEFAULT_STREAMS as u64) as usize;
    let csv_path = std::env::var_os("SSEHUB_SOAK_CSV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/soak/soak.csv"));
    let warm_up = (total / 6).clamp(Duration::from_secs(15), Duration::from_secs(60));
    let main = total - warm_up - Duration::from_secs(20);
    let seed = unix_now().as_nanos() as u64;

    let hub = BinaryHub::start(
        &[
            "--jwt-key",
            SECRET,
            "--anonymous",
            "--history",
            "durable",
            "--history-size",
            &HISTORY_SIZE.to_string(),
            "--queue-capacity",
            &QUEUE_CAPACITY.to_string(),
            "--dispatch-timeout",
            "5s",
            "--max-lifetime",
            &format!("{}s", MAX_LIFETIME.as_secs()),
        ],
        // Two log lines per stream would fill the log pipe's reader; the address line stays.
        &[("RUST_LOG", "warn,ssehub::cli::serve=info")],
    );
    let load = Arc::new(Load {
        addr: hub.addr,
        url: hub.url.clone(),
        subscribers: reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client"),
        started: std::array::from_fn(|_| AtomicU64::new(0)),
        acknowledged: std::array::from_fn(|_| AtomicU64::new(0)),
        tally: Tally::default(),
    });
    if let Some(dir) = csv_path.parent() {
        std::fs::create_dir_all(dir).expect("CSV directory");
    }
    let mut csv = std::fs::File::create(&csv_path).expect("create the CSV");
    writeln!(csv, "{}", Sample::CSV_HEADER).expect("write CSV");
    let sampler = Arc::new(Sampler {
        pid: hub.child.id(),
        addr: hub.addr,
        began: Instant::now(),
        load: load.clone(),
        scraper: reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client"),
        csv: Mutex::new(csv),
        samples: Mutex::default(),
        phase: Mutex::new("start"),
        turn: tokio::sync::Mutex::new(None),
    });
    let ticking = CancellationToken::new();
    let ticker = tokio::spawn({
        let (sampler, ticking) = (sampler.clone(), ticking.clone());
        async move {
            let mut every_second = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = ticking.cancelled() => return,
                    _ = every_second.tick() => { sampler.sample(None).await; }
                }
            }
        }
    });
    eprintln!(
        "soak: {streams} streams + {SLOW_CLIENTS} slow clients, {EVENTS_PER_SECOND} events/s, \
         warm-up {warm_up:?}, main {main:?}; samples in {}",
        csv_path.display()
    );

    sampler.set_phase("fill");
    fill_history(&load).await;
    sampler.set_phase("warm-up");
    run_load(&load, streams, warm_up, seed).await;
    sampler.set_phase("quiet");
    // Quiet: every stream gone and the descriptors steady for 3 s; that is the baseline.
    let mut steady: Vec<u64> = Vec::new();
    let (baseline, settled) = sampler
        .sample_until(Duration::from_secs(20), "quiet", |s| {
            steady.push(s.process.open_fds);
            s.subscribers() == 0
                && steady.len() >= 12
                && steady[steady.len() - 12..]
                    .iter()
                    .all(|&n| n == s.process.open_fds)
        })
        .await;
    assert!(
        settled,
        "the hub did not settle after the warm-up: {baseline:?}"
    );
    let baseline = Sample {
        phase: "baseline",
        ..baseline
    };
    writeln!(sampler.csv.lock().expect("lock"), "{}", baseline.csv_line()).expect("write CSV");

    sampler.set_phase("load");
    run_load(&load, streams, main, seed.rotate_left(17)).await;
    let load_ended = Instant::now();
    ticking.cancel();
    ticker.await.expect("sampler");
    let (end, settled) = sampler
        .sample_until(SETTLE_LIMIT, "settle", |s| {
            s.process.open_fds == baseline.process.open_fds
                && s.subscribers() == baseline.subscribers()
                && s.subscriptions() == baseline.subscriptions()
        })
        .await;
    let settle_time = load_ended.elapsed();
    let registry_end = end;
    // Memory is compared once the runtime's blocking pool is back to its size at the baseline:
    // tokio ends a blocking thread after 10 s idle, and each holds a stack. Only `/proc` is read
    // meanwhile, as a scrape runs on that pool (the history's health check) and keeps it awake.
    let deadline = Instant::now() + Duration::from_secs(20);
    while process_figures(sampler.pid)
        .is_some_and(|p| p.threads > baseline.process.threads && Instant::now() < deadline)
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let end = sampler.sample(Some("end")).await;

    // The report: baseline, peak during the main round, end.
    let samples = sampler.samples.lock().expect("lock").clone();
    let under_load: Vec<&Sample> = samples.iter().filter(|s| s.phase == "load").collect();
    let peak = |f: &dyn Fn(&Sample) -> u64| under_load.iter().map(|s| f(s)).max().unwrap_or(0);
    let tally = &load.tally;
    let delta = |name: &str| end.metrics.value(name) - baseline.metrics.value(name);
    eprintln!(
        "\n| soak ({:?} main load, {streams} streams) | baseline | peak | end |\n|---|---|---|---|",
        main
    );
    eprintln!(
        "| hub RSS (MiB) | {:.1} | {:.1} | {:.1} |",
        baseline.process.rss_kib as f64 / 1024.0,
        peak(&|s| s.process.rss_kib) as f64 / 1024.0,
        end.process.rss_kib as f64 / 1024.0
    );
    eprintln!(
        "| hub open fds | {} | {} | {} |",
        baseline.process.open_fds,
        peak(&|s| s.process.open_fds),
        end.process.open_fds
    );
    eprintln!(
        "| registry: streams / selectors | {} / {} | {} / {} | {} / {} |",
        baseline.subscribers(),
        baseline.subscriptions(),
        peak(&|s| s.subscribers()),
        peak(&|s| s.subscriptions()),
        end.subscribers(),
        end.subscriptions()
    );
    eprintln!(
        "| hub threads | {} | {} | {} |",
        baseline.process.threads,
        peak(&|s| s.process.threads),
        end.process.threads
    );
    eprintln!(
        "| history events | {} | {} | {} |\n",
        baseline.history_events(),
        peak(&|s| s.history_events()),
        end.history_events()
    );
    eprintln!(
        "main round: {} events published, {} frames queued to subscribers, {} replayed; \
         {} streams closed ({} by clients, {} at max lifetime, {} at token expiry, {} slow); \
         mean publish time {:.1} ms; fds and registry back {settle_time:?} after the load \
         stopped, memory sampled {:?} after it",
        delta("ssehub_events_published_total"),
        delta("ssehub_events_delivered_total"),
        delta("ssehub_events_replayed_total"),
        end.streams_closed() - baseline.streams_closed(),
        end.closed_by("client_disconnected") - baseline.closed_by("client_disconnected"),
        end.closed_by("timeout") - baseline.closed_by("timeout"),
        end.closed_by("token_expired") - baseline.closed_by("token_expired"),
        end.closed_by("slow_consumer") - baseline.closed_by("slow_consumer"),
        1000.0 * delta("ssehub_publish_duration_seconds_sum")
            / delta("ssehub_publish_duration_seconds_count"),
        load_ended.elapsed(),
    );
    let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
    eprintln!(
        "both rounds, client side: {} streams ({} left with every acknowledged event, {} ended at \
         max lifetime, {} at token expiry; {} resumed from a recent id, {} replayed from \
         earliest, {} from earliest overtaken by retention, {} anonymous on a private topic), \
         {} events checked ({} private); {} slow \
         clients stalled, {} dropped; {} publishes acknowledged, {} failed; {} failures",
        count(&tally.sessions),
        count(&tally.left_complete),
        count(&tally.ended_at_lifetime),
        count(&tally.ended_at_token_expiry),
        count(&tally.resumed),
        count(&tally.replayed_from_earliest),
        count(&tally.earliest_overtaken),
        count(&tally.snooping),
        count(&tally.received),
        count(&tally.private_received),
        count(&tally.slow_stalled),
        count(&tally.slow_dropped),
        count(&tally.published),
        count(&tally.publish_failures),
        count(&tally.failure_count),
    );

    let failures = tally.failures.lock().expect("lock").clone();
    assert!(failures.is_empty(), "failures: {failures:#?}");
    assert!(
        settled,
        "not back at the baseline {SETTLE_LIMIT:?} after the load: fds {} (baseline {}), \
         streams {} (baseline {}), selectors {} (baseline {})",
        registry_end.process.open_fds,
        baseline.process.open_fds,
        registry_end.subscribers(),
        baseline.subscribers(),
        registry_end.subscriptions(),
        baseline.subscriptions()
    );
    assert_eq!(end.process.open_fds, baseline.process.open_fds);
    assert_eq!(end.subscribers(), baseline.subscribers());
    assert!(
        end.process.rss_kib <= baseline.process.rss_kib + RSS_TOLERANCE_KIB,
        "RSS {} KiB after the load, baseline {} KiB + {RSS_TOLERANCE_KIB} KiB",
        end.process.rss_kib,
        baseline.process.rss_kib
    );
    // The history was full at the baseline and stays at its bound.
    assert_eq!(baseline.history_events(), HISTORY_SIZE);
    assert_eq!(end.history_events(), HISTORY_SIZE);
    // The load was applied: every kind of churn happened in the main round.
    for reason in [
        "client_disconnected",
        "timeout",
        "token_expired",
        "slow_consumer",
    ] {
        assert!(
            end.closed_by(reason) > baseline.closed_by(reason),
            "no stream closed as {reason} in the main round"
        );
    }
    assert!(delta("ssehub_events_replayed_total") > 0.0);
    assert_eq!(
        count(&tally.earliest_overtaken),
        0,
        "streams from earliest ended before their first event"
    );
    assert!(count(&tally.resumed) > 0 && count(&tally.replayed_from_earliest) > 0);
    assert!(count(&tally.ended_at_lifetime) > 0 && count(&tally.ended_at_token_expiry) > 0);
    assert!(count(&tally.private_received) > 0 && count(&tally.snooping) > 0);
    assert!(count(&tally.slow_dropped) > 0);
    assert_eq!(count(&tally.publish_failures), 0);
    let published = delta("ssehub_events_published_total");
    assert!(
        published >= (EVENTS_PER_SECOND * main.as_secs() / 4) as f64,
        "only {published} events published in {main:?}: the load was not applied"
    );
}
