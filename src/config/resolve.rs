//! [`ServeArgs::resolve`]: the merged flags become the library's [`HubConfig`], [`HttpConfig`],
//! [`ServerOptions`] and [`HistorySettings`], or a [`ConfigError`] naming the first bad setting.
//!
//! Each concern has its own step (keys, limits, origins, TLS, the history store), so a new
//! setting is checked next to the ones it depends on. Opening the store is not done here:
//! [`HistorySettings::open`] belongs to [`crate::history`].

use std::net::SocketAddr;

use tracing::warn;

use super::args::{HistoryKind, ServeArgs, SyncMode};
use super::{ConfigError, Settings};
use crate::auth::{AuthConfig, JwtSigner, JwtVerifier};
use crate::history::{
    HistorySettings, Retention, RetentionRule, RetentionRules, SpoolSettings, SyncPolicy,
};
use crate::http::HttpConfig;
use crate::hub::HubConfig;
use crate::server::{ServerOptions, TlsConfig};

/// The publisher and subscriber verifiers, and the demo's signer.
struct Keys {
    publisher: JwtVerifier,
    subscriber: Option<JwtVerifier>,
    demo: Option<JwtSigner>,
}

impl ServeArgs {
    /// Validates the settings and builds the library's configuration.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad setting.
    pub fn resolve(&self) -> Result<Settings, ConfigError> {
        let keys = self.keys()?;
        let event_limits = crate::event::EventLimits {
            max_topics: positive("--max-topics", self.max_topics)?,
            ..crate::event::EventLimits::default()
        };
        self.check_origins()?;
        let metrics_addr = self.metrics_addr()?;
        let hub = HubConfig {
            heartbeat: self.heartbeat,
            max_lifetime: (!self.max_lifetime.is_zero()).then_some(self.max_lifetime),
            history_size: self.history_size,
            queue_capacity: positive("--queue-capacity", self.queue_capacity)?,
            max_queued_bytes: positive("--max-queued-bytes", self.max_queued_bytes)?,
            shared_feeds: self.shared_feeds,
            max_subscribers: positive("--max-subscribers", self.max_subscribers)?,
            initial_cursor: self.initial_cursor,
            idempotency_window: positive_duration("--idempotency-window", self.idempotency_window)?,
            max_topics_per_subscription: self.max_topics,
            event_limits,
            subscriptions: self.subscriptions,
        };
        let http = HttpConfig {
            auth: AuthConfig {
                publisher: Some(keys.publisher),
                subscriber: keys.subscriber,
                anonymous: self.anonymous,
            },
            draft08: self.draft08()?,
            cors_origins: non_empty(&self.cors_origins),
            publish_origins: non_empty(&self.publish_origins),
            max_publish_bytes: positive("--max-publish-bytes", self.max_publish_bytes)?,
            metrics_on_router: self.metrics == "main",
            dialects: crate::dialect::Dialects::parse_list(
                self.dialects.iter().map(String::as_str),
            )
            .map_err(|reason| ConfigError::Invalid {
                setting: "--dialects",
                reason,
            })?,
        };
        let server = ServerOptions {
            tls: self.tls()?,
            header_read_timeout: self.header_read_timeout,
            dispatch_timeout: self.dispatch_timeout,
            shutdown_timeout: self.shutdown_timeout,
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            max_header_bytes: self.max_header_bytes,
            lingering_time: self.lingering_time,
            lingering_timeout: self.lingering_timeout,
            ..ServerOptions::default()
        };
        Ok(Settings {
            hub,
            http,
            server,
            history: self.history_settings()?,
            metrics_addr,
            otlp: self.otlp()?,
            log_level: self.log_level()?,
            outbox: self.outbox()?,
            demo: keys.demo,
            webhook: self.webhook()?,
        })
    }

    /// The webhook of `--webhook` (clap requires `--webhook-secret` with it), checked.
    fn webhook(&self) -> Result<Option<crate::webhook::Webhook>, ConfigError> {
        let (Some(url), Some(secret)) = (&self.webhook, &self.webhook_secret) else {
            return Ok(None);
        };
        let config = crate::webhook::WebhookConfig {
            queue_capacity: positive("--webhook-queue", self.webhook_queue)?,
            timeout: positive_duration("--webhook-timeout", self.webhook_timeout)?,
            max_backoff: positive_duration("--webhook-max-backoff", self.webhook_max_backoff)?,
            full_list_interval: positive_duration(
                "--webhook-full-list-interval",
                self.webhook_full_list_interval,
            )?,
            ..crate::webhook::WebhookConfig::new(url.clone(), secret.clone())
        };
        crate::webhook::Webhook::new(config)
            .map(Some)
            .map_err(|error| ConfigError::Invalid {
                setting: "--webhook",
                reason: error.to_string(),
            })
    }

    /// With `--outbox`: the database URL and the table, checked (nothing is connected yet).
    fn outbox(&self) -> Result<Option<crate::outbox::OutboxSettings>, ConfigError> {
        let Some(url) = &self.outbox else {
            return Ok(None);
        };
        crate::outbox::OutboxSettings::new(url, &self.outbox_table)
            .map(Some)
            .map_err(|error| ConfigError::Invalid {
                setting: match error {
                    crate::outbox::OutboxError::TableName(_) => "--outbox-table",
                    _ => "--outbox",
                },
                reason: error.to_string(),
            })
    }

    /// The token verifiers (`--jwt-key` is the fallback of both) and, with `--demo`, its signer.
    fn keys(&self) -> Result<Keys, ConfigError> {
        let algorithm = self.jwt_algorithm;
        let verifier = |setting: &'static str, key: &Option<String>| {
            key.as_deref()
                .or(self.jwt_key.as_deref())
                .map(|material| {
                    JwtVerifier::new(algorithm, material)
                        .map(|verifier| verifier.with_audience(&self.jwt_audience))
                        .map_err(|source| ConfigError::Key { setting, source })
                })
                .transpose()
        };
        let publisher = verifier("--publisher-jwt-key", &self.publisher_jwt_key)?
            .ok_or(ConfigError::NoPublisherKey)?;
        let subscriber = verifier("--subscriber-jwt-key", &self.subscriber_jwt_key)?;
        // The demo signs tokens with the publisher key: an HMAC secret verifies and signs alike,
        // but for RS*/ES* the hub holds only the public key.
        let demo = if self.demo {
            if !algorithm.is_hmac() {
                return Err(ConfigError::Invalid {
                    setting: "--demo",
                    reason: format!(
                        "the demo signs publisher tokens with the publisher key, which needs an HMAC algorithm (HS256, HS384, HS512); with {algorithm} the hub has only a public key"
                    ),
                });
            }
            let material = self
                .publisher_jwt_key
                .as_deref()
                .or(self.jwt_key.as_deref())
                .ok_or(ConfigError::NoPublisherKey)?;
            Some(
                JwtSigner::new(algorithm, material).map_err(|source| ConfigError::Key {
                    setting: "--publisher-jwt-key",
                    source,
                })?,
            )
        } else {
            None
        };
        Ok(Keys {
            publisher,
            subscriber,
            demo,
        })
    }

    /// Every CORS and publish origin is `scheme://host[:port]` or `*`.
    fn check_origins(&self) -> Result<(), ConfigError> {
        let origins = self
            .cors_origins
            .iter()
            .map(|o| ("--cors-origins", o))
            .chain(
                self.publish_origins
                    .iter()
                    .map(|o| ("--publish-origins", o)),
            );
        for (setting, origin) in origins {
            if origin != "*" && (!origin.contains("://") || origin.ends_with('/')) {
                return Err(ConfigError::Invalid {
                    setting,
                    reason: format!(
                        "{origin:?} is not an origin (expected scheme://host[:port] without a path, or *)"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Where traces go; the endpoint must be an http(s) URL, and the delivery share a ratio.
    fn otlp(&self) -> Result<crate::telemetry::otlp::OtlpSettings, ConfigError> {
        if !(0.0..=1.0).contains(&self.trace_deliveries) {
            return Err(ConfigError::Invalid {
                setting: "--trace-deliveries",
                reason: format!("{} is not a ratio from 0 to 1", self.trace_deliveries),
            });
        }
        let endpoint = self.otlp_endpoint.as_deref().map(str::trim);
        if let Some(endpoint) = endpoint {
            let url = reqwest::Url::parse(endpoint).map_err(|e| ConfigError::Invalid {
                setting: "--otlp-endpoint",
                reason: format!("{endpoint:?} is not a URL ({e})"),
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::Invalid {
                    setting: "--otlp-endpoint",
                    reason: format!("{endpoint:?}: expected an http:// or https:// URL"),
                });
            }
        }
        Ok(crate::telemetry::otlp::OtlpSettings {
            endpoint: endpoint.map(str::to_owned),
            delivery_ratio: self.trace_deliveries,
        })
    }

    /// `--log-level`, parsed once here so that a bad filter stops start-up (or a reload).
    fn log_level(&self) -> Result<Option<String>, ConfigError> {
        let Some(level) = self.log_level.as_deref().filter(|l| !l.trim().is_empty()) else {
            return Ok(None);
        };
        tracing_subscriber::EnvFilter::builder()
            .parse(level)
            .map_err(|error| ConfigError::Invalid {
                setting: "--log-level",
                reason: format!("{level:?} is not a level or tracing directives: {error}"),
            })?;
        Ok(Some(level.to_owned()))
    }

    /// The address of a listener of its own for `/metrics`, if `--metrics` names one.
    fn metrics_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        match self.metrics.as_str() {
            "main" | "off" => Ok(None),
            addr => addr
                .parse::<SocketAddr>()
                .map(Some)
                .map_err(|_| ConfigError::Invalid {
                    setting: "--metrics",
                    reason: format!(
                        "{addr:?} is not `main`, `off` or an address like 127.0.0.1:9100"
                    ),
                }),
        }
    }

    /// The certificate and key of `--tls-cert`/`--tls-key`, read now so a bad file stops
    /// start-up.
    fn tls(&self) -> Result<Option<TlsConfig>, ConfigError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                TlsConfig::from_pem_files(cert, key)
                    .map(Some)
                    .map_err(|error| ConfigError::Invalid {
                        setting: "--tls-cert/--tls-key",
                        reason: error.to_string(),
                    })
            }
            (None, None) => Ok(None),
            _ => Err(ConfigError::Invalid {
                setting: "--tls-cert/--tls-key",
                reason: "give both the certificate and its key, or neither".into(),
            }),
        }
    }

    /// The store that `--history` (default `durable`), `--redis-url` and the deprecated
    /// `--transport` select together; contradictory combinations are refused rather than one
    /// silently winning.
    fn history_settings(&self) -> Result<HistorySettings, ConfigError> {
        let kind = match (&self.transport, self.history, &self.redis_url) {
            (Some(_), _, Some(_)) => {
                return Err(ConfigError::Conflict {
                    settings: "--transport and --redis-url",
                    reason: "--transport is the deprecated spelling of `--history redis --redis-url URL`: give only --history redis --redis-url".into(),
                })
            }
            (Some(_), Some(other @ (HistoryKind::Durable | HistoryKind::Memory)), None) => {
                return Err(ConfigError::Conflict {
                    settings: "--transport and --history",
                    reason: format!(
                        "--transport (deprecated) selects the Redis history, and --history says {}: use `--history redis --redis-url URL`, or drop --transport",
                        other.as_str()
                    ),
                })
            }
            (Some(url), _, None) => {
                warn!(
                    "--transport (SSEHUB_TRANSPORT) is deprecated: use --history redis --redis-url {url}"
                );
                Some(("--transport", url))
            }
            (None, Some(HistoryKind::Redis), Some(url)) => Some(("--redis-url", url)),
            (None, Some(HistoryKind::Redis), None) => {
                return Err(ConfigError::Conflict {
                    settings: "--history redis and --redis-url",
                    reason: "--history redis needs --redis-url redis://HOST:PORT/DB".into(),
                })
            }
            (None, other, Some(_)) => {
                return Err(ConfigError::Conflict {
                    settings: "--redis-url and --history",
                    reason: format!(
                        "--redis-url is only used by --history redis, and --history is {}: add --history redis, or drop --redis-url",
                        other.unwrap_or(HistoryKind::Durable).as_str()
                    ),
                })
            }
            (None, _, None) => None,
        };
        let rules = self.retention_rules()?;
        if let Some((setting, url)) = kind {
            check_redis_url(setting, url)?;
            return Ok(HistorySettings::Redis {
                url: url.clone(),
                prefix: self.redis_prefix.clone(),
                max_len: self.history_size as u64,
                rules,
                spool: (self.spool_max_events > 0).then(|| SpoolSettings {
                    dir: self.data_dir.clone(),
                    max_events: self.spool_max_events,
                }),
            });
        }
        Ok(match self.history.unwrap_or(HistoryKind::Durable) {
            HistoryKind::Memory if !rules.is_empty() => {
                return Err(ConfigError::Conflict {
                    settings: "[[retention]] and --history memory",
                    reason: "retention per topic applies to the durable and the Redis history; the memory history keeps only the newest --history-size events: use --history durable, or remove the [[retention]] rules".into(),
                })
            }
            HistoryKind::Memory => HistorySettings::Memory {
                max_events: self.history_size,
            },
            // Redis was handled above, with its URL.
            HistoryKind::Durable | HistoryKind::Redis => HistorySettings::Durable {
                data_dir: self.data_dir.clone(),
                retention: Retention {
                    max_events: self.history_size as u64,
                    max_age: (!self.history_max_age.is_zero()).then_some(self.history_max_age),
                    max_bytes: (self.history_max_bytes > 0).then_some(self.history_max_bytes),
                },
                sync: match self.sync {
                    SyncMode::Batch => SyncPolicy::Batch,
                    SyncMode::Always => SyncPolicy::Always,
                },
                rules,
            },
        })
    }

    /// The `[[retention]]` rules of the file, each checked; a bad one stops start-up, named by
    /// its place in the file and its `topics`.
    fn retention_rules(&self) -> Result<RetentionRules, ConfigError> {
        let rules = self
            .retention
            .iter()
            .enumerate()
            .map(|(n, rule)| {
                RetentionRule::new(&rule.topics, rule.max_events, rule.max_age).map_err(|error| {
                    ConfigError::Invalid {
                        setting: "[[retention]]",
                        reason: format!("rule {} (topics = {:?}): {error}", n + 1, rule.topics),
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RetentionRules::new(rules))
    }
}

/// A Redis URL redis-rs accepts, of a scheme that names a Redis.
fn check_redis_url(setting: &'static str, url: &str) -> Result<(), ConfigError> {
    let scheme_ok = url.starts_with("redis://")
        || url.starts_with("rediss://")
        || url.starts_with("redis+unix://");
    if !scheme_ok || redis::Client::open(url).is_err() {
        return Err(ConfigError::Invalid {
            setting,
            reason: format!("{url:?} is not a Redis URL (expected redis://HOST:PORT/DB)"),
        });
    }
    Ok(())
}

fn positive(setting: &'static str, value: usize) -> Result<usize, ConfigError> {
    if value == 0 {
        Err(ConfigError::Invalid {
            setting,
            reason: "must be at least 1".into(),
        })
    } else {
        Ok(value)
    }
}

fn positive_duration(
    setting: &'static str,
    value: std::time::Duration,
) -> Result<std::time::Duration, ConfigError> {
    if value.as_millis() == 0 {
        Err(ConfigError::Invalid {
            setting,
            reason: "must be at least 1ms".into(),
        })
    } else {
        Ok(value)
    }
}

/// The list without its empty entries (`--cors-origins ""` means none).
fn non_empty(values: &[String]) -> Vec<String> {
    values.iter().filter(|v| !v.is_empty()).cloned().collect()
}
