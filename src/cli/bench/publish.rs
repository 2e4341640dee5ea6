//! The publisher side: `--publishers` closed loops taking the next sequence number, each
//! posting its timestamped payload with reqwest (`http://` and `https://`, trusting
//! `--ca-cert` or the system's roots) and recording the round trip.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use tokio_util::sync::CancellationToken;

use super::histogram::Histogram;
use super::payload::{payload, unix_micros};
use super::plan::Plan;

/// The publishing side: a shared sequence counter, the request template and the outcome counts.
pub(super) struct Publishing {
    /// One pool for every publisher: about one keep-alive connection each.
    pub(super) client: reqwest::Client,
    pub(super) url: String,
    pub(super) headers: HeaderMap,
    pub(super) body_prefix: String,
    pub(super) body_suffix: String,
    pub(super) form_body: bool,
    pub(super) payload_bytes: usize,
    pub(super) events: u64,
    pub(super) rate: f64,
    /// The next sequence number to publish.
    pub(super) next: AtomicU64,
    pub(super) ok: AtomicU64,
    pub(super) failed: AtomicU64,
    /// Publishers that have finished.
    pub(super) finished: AtomicUsize,
    /// The last publish answer, in microseconds after the first publish.
    pub(super) last_answer_us: AtomicU64,
    pub(super) latency: Histogram,
    pub(super) first_error: Mutex<Option<String>>,
}

impl Publishing {
    pub(super) fn new(plan: &Plan) -> anyhow::Result<Self> {
        // HTTP/1.1 only (ALPN), like the subscriptions: with HTTP/2 every publisher would share
        // one connection, and the round trips measured would be another benchmark's.
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(crate::cli::client::tls_config(
                plan.ca_cert.as_deref(),
                &[b"http/1.1"],
            )?)
            // Never route benchmark load through an HTTP proxy from the environment.
            .no_proxy()
            .timeout(plan.timeout)
            .pool_max_idle_per_host(plan.publish_concurrency)
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            client,
            url: plan.publish_url.clone(),
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
    pub(super) fn body(&self, seq: u64) -> String {
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

    /// Publishes event `seq` and reads the answer: its status and body.
    pub(super) async fn publish(&self, seq: u64) -> Result<(StatusCode, Bytes), String> {
        let response = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .body(self.body(seq))
            .send()
            .await
            .map_err(|e| format!("{:#}", anyhow::Error::new(e)))?;
        let status = response.status();
        // Read the (small) answer so the connection goes back to the pool.
        Ok((status, response.bytes().await.unwrap_or_default()))
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

/// Starts `count` publishers on a runtime and thread of their own. A real publisher is another
/// process than the browsers; in this one, the answers to the publishers would otherwise be
/// read behind the wakes of thousands of subscriber tasks, and the round trips measured would
/// be this load generator's delay as much as the server's.
pub(super) fn spawn_publishers(
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

/// One publisher: takes the next sequence number until all are taken (at most `--events`
/// requests in total, each bounded by `--timeout`), waiting for its slot when paced.
async fn run_publisher(publishing: Arc<Publishing>, started: Instant, cancel: CancellationToken) {
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
            outcome = publishing.publish(seq) => outcome,
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
