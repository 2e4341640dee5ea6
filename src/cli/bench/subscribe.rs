//! The subscriber side: [`Shared`] counters, one task per subscription ([`run_subscriber`]) that
//! opens its stream (plain HTTP/1.1 read by [`super::plain`]; over TLS, or as a stream of a
//! shared HTTP/2 connection, with hyper), then parses every event and records its latency and
//! sequence number ([`Tally`], once per read).

use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, HOST};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioExecutor;
use tokio::sync::{OnceCell, Semaphore};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use super::connect::{connect, Io};
use super::histogram::Histogram;
use super::payload::{read_payload, unix_micros};
use super::plain::{open_plain_stream, read_plain_body, BodySink};
use super::plan::{Endpoint, Plan};
use crate::wire::Parser;

/// State shared by the subscriber tasks and the main loop; counters are updated once per
/// received chunk, not per event.
pub(super) struct Shared {
    /// Where every subscription goes.
    pub(super) endpoint: Endpoint,
    /// TLS clients offering `http/1.1` and `h2` (with `https://`).
    pub(super) tls_http1: Option<TlsConnector>,
    pub(super) tls_h2: Option<TlsConnector>,
    pub(super) events: u64,
    pub(super) timeout: Duration,
    /// Limits the subscriptions being opened at once (`--connect-concurrency`). Never closed.
    pub(super) connect_slots: Semaphore,
    pub(super) connected: AtomicUsize,
    pub(super) connect_failed: AtomicUsize,
    /// The start of the connect phase, and when the latest subscription got its response head
    /// (microseconds after it): the connect time, exact rather than rounded to a tick.
    pub(super) connect_started: Instant,
    pub(super) last_connected_us: AtomicU64,
    /// Streams still reading.
    pub(super) open_streams: AtomicUsize,
    pub(super) ended_early: AtomicUsize,
    /// Unique bench events delivered, over all streams.
    pub(super) delivered: AtomicU64,
    pub(super) duplicates: AtomicU64,
    /// Events whose data is not a bench payload of this run.
    pub(super) foreign: AtomicU64,
    /// The first publish (`None` while connecting): the base of `last_delivery_us`.
    pub(super) publish_started: Mutex<Option<Instant>>,
    /// The latest delivery, in microseconds after the first publish.
    pub(super) last_delivery_us: AtomicU64,
    pub(super) latency: Histogram,
    pub(super) first_error: Mutex<Option<String>>,
    pub(super) cancel: CancellationToken,
}

impl Shared {
    pub(super) fn new(plan: &Plan) -> Self {
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

    pub(super) fn publish_started_at(&self, at: Instant) {
        if let Ok(mut started) = self.publish_started.lock() {
            *started = Some(at);
        }
    }

    pub(super) fn record_error(&self, error: String) {
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert(error);
        }
    }

    pub(super) fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|first| first.clone())
    }
}

/// One subscription: open it (holding a connect slot), then count and time what it delivers
/// until the run is cancelled or the server ends the stream. With a `group`, the subscription
/// is an HTTP/2 stream on the group's shared connection; without one, over plain `http://`, it
/// is read straight from its socket ([`super::plain`]), and over TLS through hyper.
pub(super) async fn run_subscriber(shared: Arc<Shared>, group: Option<Arc<H2Group>>) {
    let outcome = match group {
        None if shared.endpoint.tls_name.is_none() => {
            let Some(stream) = opened(&shared, open_plain_stream(&shared.endpoint)).await else {
                return;
            };
            match Tally::new(&shared) {
                Ok(mut tally) => {
                    read_plain_body(stream, shared.cancel.cancelled(), &mut tally).await
                }
                Err(error) => Err(error),
            }
        }
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
pub(super) async fn opened<T>(
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

pub(super) type Connection = hyper::client::conn::http1::Connection<Io, Empty<Bytes>>;
pub(super) type SendRequest = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;
pub(super) type H2SendRequest = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;
/// The HTTP/2 connection shared by a group of subscriptions, once opened.
pub(super) type H2Group = OnceCell<H2SendRequest>;

/// The `GET` of a subscription.
pub(super) fn subscribe_request(shared: &Shared) -> Result<Request<Empty<Bytes>>, String> {
    Request::get(shared.endpoint.target.clone())
        .header(HOST, shared.endpoint.host.clone())
        .header(ACCEPT, HeaderValue::from_static("text/event-stream"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("building the request: {e}"))
}

/// Connects, sends the `GET` and waits for a `200` response head.
pub(super) async fn open_stream(
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
pub(super) async fn connect_h2(shared: &Shared) -> Result<H2SendRequest, String> {
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
pub(super) async fn open_h2_stream(
    shared: &Shared,
    group: &H2Group,
) -> Result<hyper::body::Incoming, String> {
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
pub(super) async fn read_stream(
    shared: &Shared,
    connection: impl std::future::Future<Output = Result<(), hyper::Error>>,
    mut body: hyper::body::Incoming,
) -> Result<(), String> {
    let mut connection = pin!(connection);
    let mut connection_done = false;
    let mut tally = Tally::new(shared)?;
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
        tally.data(&chunk)?;
        tally.read_done();
    }
}

/// What one stream has received: its parser, the sequence numbers it saw, and the figures of the
/// read in progress, added to [`Shared`]'s once per read.
struct Tally<'a> {
    shared: &'a Shared,
    parser: Parser,
    /// One bit per sequence number: catches duplicates without a per-event allocation.
    seen: Vec<u64>,
    /// The first publish, once known: deliveries are timed from it.
    base: Option<Instant>,
    /// When the read in progress arrived (µs since the epoch; 0 before its first bytes).
    received_us: u64,
    /// The latencies of the read in progress (the buffer is kept from one read to the next).
    latencies: Vec<u64>,
    fresh: u64,
    foreign: u64,
    duplicates: u64,
}

impl<'a> Tally<'a> {
    fn new(shared: &'a Shared) -> Result<Self, String> {
        let words = usize::try_from(shared.events.div_ceil(64)).map_err(|e| e.to_string())?;
        Ok(Self {
            shared,
            parser: Parser::new(),
            seen: vec![0u64; words],
            base: None,
            received_us: 0,
            latencies: Vec::new(),
            fresh: 0,
            foreign: 0,
            duplicates: 0,
        })
    }
}

impl BodySink for Tally<'_> {
    /// Parses body bytes of the read in progress.
    fn data(&mut self, bytes: &[u8]) -> Result<(), String> {
        if self.received_us == 0 {
            self.received_us = unix_micros();
        }
        let Self {
            shared,
            parser,
            seen,
            received_us,
            latencies,
            fresh,
            foreign,
            duplicates,
            ..
        } = self;
        parser
            .push_each(bytes, |event| {
                let Some((seq, sent_us)) =
                    read_payload(event.data).filter(|(s, _)| *s < shared.events)
                else {
                    *foreign += 1;
                    return;
                };
                // `seq < events`, so both casts stay within `seen`.
                let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
                if seen[word] & bit != 0 {
                    *duplicates += 1;
                    return;
                }
                seen[word] |= bit;
                *fresh += 1;
                latencies.push(received_us.saturating_sub(sent_us));
            })
            .map_err(|e| format!("parsing the stream: {e}"))?;
        Ok(())
    }

    /// The read is over: adds its figures to `shared`'s.
    fn read_done(&mut self) {
        let shared = self.shared;
        self.received_us = 0;
        shared.latency.record_all(&self.latencies);
        self.latencies.clear();
        let (fresh, foreign, duplicates) = (
            std::mem::take(&mut self.fresh),
            std::mem::take(&mut self.foreign),
            std::mem::take(&mut self.duplicates),
        );
        if foreign > 0 {
            shared.foreign.fetch_add(foreign, Ordering::Relaxed);
        }
        if duplicates > 0 {
            shared.duplicates.fetch_add(duplicates, Ordering::Relaxed);
        }
        if fresh > 0 {
            shared.delivered.fetch_add(fresh, Ordering::Relaxed);
            if self.base.is_none() {
                self.base = shared
                    .publish_started
                    .lock()
                    .ok()
                    .and_then(|started| *started);
            }
            if let Some(base) = self.base {
                let after_us = u64::try_from(base.elapsed().as_micros()).unwrap_or(u64::MAX);
                shared
                    .last_delivery_us
                    .fetch_max(after_us, Ordering::Relaxed);
            }
        }
    }
}
