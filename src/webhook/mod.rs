//! Subscription webhooks: the hub POSTs a notification to a URL when a subscription opens or
//! closes (the same JSON-LD documents as Mercure's subscription events), and every
//! [`WebhookConfig::full_list_interval`] the full list of this instance's active subscriptions,
//! so that a receiver can forget those of an instance that crashed (its lists stop coming).
//! docs/WEBHOOKS.md is the receiver's guide: the bodies, the signature, what to do with them.
//!
//! - [`queue`]: the bounded queue (oldest dropped when full, counted) that the hub's paths push
//!   into without waiting; one per hub.
//! - `delivery`: one task per hub posting batches of the oldest notifications, in order; a
//!   batch leaves the queue only after a 2xx (at-least-once), failures are retried with
//!   exponential backoff and jitter (`backoff`); at shutdown it sends what is queued, for at
//!   most [`WebhookConfig::shutdown_timeout`].
//! - `batch`: the bodies; [`signature`]: the `Ssehub-Signature` header and its check.
//!
//! What the hub announces and in what order (never "closed" before "opened", even at shutdown)
//! is the hub's ([`crate::hub::Hub`]'s `Shared::announce`); the documents are
//! [`crate::hub::subscription_events`]'s.

mod backoff;
mod batch;
mod delivery;
pub mod queue;
pub mod signature;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;

pub use queue::NotificationQueue;
pub use signature::{sign, verify, SignatureError, SIGNATURE_HEADER};

use crate::metrics::WebhookMetrics;

/// Settings of a webhook. [`WebhookConfig::new`] gives the defaults documented on each field.
#[derive(Clone)]
pub struct WebhookConfig {
    /// Where the notifications are POSTed (`http://` or `https://`).
    pub url: String,
    /// The HMAC-SHA256 key of the `Ssehub-Signature` header, shared with the receiver.
    pub secret: String,
    /// Notifications held while the receiver is down or slow; beyond it the oldest are dropped
    /// and counted in `ssehub_webhook_dropped_total` (default 10,000).
    pub queue_capacity: usize,
    /// Most notifications in one request (default 100).
    pub max_batch: usize,
    /// The longest one request may take, answer included (default 5 s).
    pub timeout: Duration,
    /// The wait before the first retry (default 200 ms); it doubles per failure.
    pub initial_backoff: Duration,
    /// The longest wait between two attempts (default 30 s).
    pub max_backoff: Duration,
    /// Time between two full lists of the active subscriptions (default 60 s).
    pub full_list_interval: Duration,
    /// How long shutdown waits for the queued notifications (the "closed" of every stream it
    /// ends among them) to be delivered (default 5 s).
    pub shutdown_timeout: Duration,
    /// This instance's name in every body (default `urn:uuid:` and a UUID made at start-up, so
    /// a restarted instance is a new one and the receiver drops what the old one had).
    pub instance: String,
}

impl WebhookConfig {
    /// The defaults, posting to `url` signed with `secret`.
    pub fn new(url: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            secret: secret.into(),
            queue_capacity: 10_000,
            max_batch: 100,
            timeout: Duration::from_secs(5),
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            full_list_interval: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(5),
            instance: format!("urn:uuid:{}", uuid::Uuid::now_v7()),
        }
    }
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("queue_capacity", &self.queue_capacity)
            .field("max_batch", &self.max_batch)
            .field("timeout", &self.timeout)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("full_list_interval", &self.full_list_interval)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("instance", &self.instance)
            .finish()
    }
}

/// Why a webhook cannot be set up.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WebhookError {
    /// Not an `http://` or `https://` URL.
    #[error("{0:?} is not an http:// or https:// URL")]
    BadUrl(String),
    /// An empty secret would sign nothing anyone could trust.
    #[error("the webhook secret is empty")]
    NoSecret,
    /// A setting that must be positive is zero.
    #[error("{0} must be positive")]
    Zero(&'static str),
    /// The HTTP client could not be built.
    #[error("building the webhook's HTTP client: {0}")]
    Client(String),
}

/// A checked webhook with its HTTP client, for [`crate::HubBuilder::webhook`].
#[derive(Debug, Clone)]
pub struct Webhook {
    config: WebhookConfig,
    url: reqwest::Url,
    client: reqwest::Client,
}

impl Webhook {
    /// Checks `config` and builds its client (reqwest on rustls with ring, the system's roots;
    /// no redirects: the URL is configured exactly).
    ///
    /// # Errors
    /// [`WebhookError`] naming what is wrong.
    pub fn new(config: WebhookConfig) -> Result<Self, WebhookError> {
        let url = reqwest::Url::parse(&config.url)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https"))
            .ok_or_else(|| WebhookError::BadUrl(config.url.clone()))?;
        if config.secret.is_empty() {
            return Err(WebhookError::NoSecret);
        }
        for (name, zero) in [
            ("the queue capacity", config.queue_capacity == 0),
            ("the batch size", config.max_batch == 0),
            ("the timeout", config.timeout.is_zero()),
            ("the initial backoff", config.initial_backoff.is_zero()),
            (
                "the full list interval",
                config.full_list_interval.is_zero(),
            ),
        ] {
            if zero {
                return Err(WebhookError::Zero(name));
            }
        }
        let tls = crate::client_tls::platform_config("webhook URLs")
            .map_err(|e| WebhookError::Client(format!("TLS setup: {e}")))?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ssehub/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WebhookError::Client(e.to_string()))?;
        Ok(Self {
            config,
            url,
            client,
        })
    }

    /// The settings.
    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }

    /// The queue the hub pushes into, and the delivery task that drains it.
    pub(crate) fn start(
        self,
        metrics: WebhookMetrics,
    ) -> (std::sync::Arc<NotificationQueue>, delivery::Delivery) {
        let queue = std::sync::Arc::new(NotificationQueue::new(
            self.config.queue_capacity,
            metrics.clone(),
        ));
        let delivery = delivery::Delivery::new(self, queue.clone(), metrics);
        (queue, delivery)
    }
}

/// Now, in milliseconds since the Unix epoch (0 if the clock is before it).
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
