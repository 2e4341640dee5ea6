//! The webhook's delivery task, one per hub: it posts batches of the oldest queued
//! notifications, one request at a time, so a receiver sees this instance's notifications in
//! the order they were made. A batch leaves the queue only after a 2xx answer
//! (at-least-once: a batch whose answer was lost is sent again, same `seq`s); any other
//! outcome is retried after a backoff. A full list is sent when it is due and nothing older is
//! waiting, its snapshot taken just before it is sent.
//!
//! At shutdown the hub closes every stream, queues their "closed", and closes the queue
//! ([`NotificationQueue::close`]); the task sends what is queued and ends, or gives up after
//! [`super::WebhookConfig::shutdown_timeout`] (logging how many notifications it lost).

use std::sync::Arc;

use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::backoff::Backoff;
use super::batch::{events_body, full_list_body};
use super::queue::NotificationQueue;
use super::signature::{sign, SIGNATURE_HEADER};
use super::{unix_ms, Webhook};
use crate::hub::SubscriberInfo;
use crate::metrics::WebhookMetrics;

/// The delivery task's state, before it runs.
pub(crate) struct Delivery {
    webhook: Webhook,
    queue: Arc<NotificationQueue>,
    metrics: WebhookMetrics,
}

/// Why an attempt failed (for the log).
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("the receiver answered {0}")]
    Status(http::StatusCode),
    #[error("the request failed: {0}")]
    Request(String),
}

impl Delivery {
    pub(super) fn new(
        webhook: Webhook,
        queue: Arc<NotificationQueue>,
        metrics: WebhookMetrics,
    ) -> Self {
        Self {
            webhook,
            queue,
            metrics,
        }
    }

    /// POSTs `body`, signed now; `Ok` on a 2xx answer.
    async fn post(&self, body: String) -> Result<(), AttemptError> {
        let signature = sign(
            self.webhook.config.secret.as_bytes(),
            unix_ms() / 1000,
            body.as_bytes(),
        );
        let response = self
            .webhook
            .client
            .post(self.webhook.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
            .map_err(|e| AttemptError::Request(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(AttemptError::Status(status))
        }
    }

    /// Runs until shutdown and the queue drained (or the shutdown timeout). `subscribers`
    /// lists the open subscriptions for the full lists.
    pub(crate) async fn run(
        self,
        subscribers: impl Fn() -> Vec<SubscriberInfo>,
        shutdown: CancellationToken,
    ) {
        let config = &self.webhook.config;
        let mut backoff = Backoff::new(config.initial_backoff, config.max_backoff);
        let mut full_list_due = Instant::now() + config.full_list_interval;
        // Set once shutdown begins: the end of the time left to deliver.
        let mut give_up_at: Option<Instant> = None;
        loop {
            if give_up_at.is_none() && shutdown.is_cancelled() {
                give_up_at = Some(Instant::now() + config.shutdown_timeout);
            }
            let queued = self.queue.len();
            if queued == 0 && self.queue.is_closed() {
                break;
            }
            if give_up_at.is_some_and(|at| Instant::now() >= at) {
                warn!(
                    lost = queued,
                    "shutdown: the webhook receiver did not take every notification in time"
                );
                break;
            }
            let attempt = if queued > 0 {
                let batch = self.queue.peek(config.max_batch);
                let Some(last) = batch.last().map(|n| n.seq) else {
                    continue;
                };
                let body = events_body(&config.instance, unix_ms(), &batch);
                self.post(body).await.map(|()| {
                    let delivered = self.queue.remove_through(last);
                    self.metrics.delivered.inc_by(delivered as u64);
                    debug!(delivered, through_seq = last, "webhook batch delivered");
                })
            } else if give_up_at.is_none() && Instant::now() >= full_list_due {
                let body = full_list_body(
                    &config.instance,
                    unix_ms(),
                    config.full_list_interval,
                    &subscribers(),
                );
                self.post(body).await.map(|()| {
                    self.metrics.full_lists.inc();
                    full_list_due = Instant::now() + config.full_list_interval;
                })
            } else {
                // Nothing to send yet.
                let stop_waiting = give_up_at.unwrap_or(full_list_due);
                tokio::select! {
                    // A notification was queued, or the queue closed.
                    () = self.queue.wait() => {}
                    // The next full list is due (or, at shutdown, the time is up).
                    () = sleep_until(stop_waiting) => {}
                    // Shutdown began: from now on the time is bounded.
                    () = shutdown.cancelled(), if give_up_at.is_none() => {}
                }
                continue;
            };
            match attempt {
                Ok(()) => backoff.reset(),
                Err(error) => {
                    self.metrics.failed_attempts.inc();
                    let delay = backoff.next_delay();
                    warn!(%error, retry_in_ms = delay.as_millis() as u64, queued, "webhook delivery failed");
                    let mut retry_at = Instant::now() + delay;
                    if let Some(at) = give_up_at {
                        retry_at = retry_at.min(at);
                    }
                    tokio::select! {
                        // The backoff ended.
                        () = sleep_until(retry_at) => {}
                        // Shutdown began: retry now, within the time shutdown allows.
                        () = shutdown.cancelled(), if give_up_at.is_none() => {}
                    }
                }
            }
        }
    }
}
