//! `ssehub serve` settings: a TOML file, `SSEHUB_*` environment variables and flags, validated
//! once.
//!
//! Every setting has one name everywhere: `heartbeat = "15s"` in the file, `SSEHUB_HEARTBEAT`
//! in the environment, `--heartbeat` on the command line; flags beat the environment, which
//! beats the file ([`apply_config_file`]), which beats the defaults. [`ServeArgs::resolve`]
//! turns them into the library's [`HubConfig`] and [`ServerOptions`], and a bad value stops
//! start-up with a message naming it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use thiserror::Error;

use crate::auth::{AuthConfig, JwtAlgorithm, JwtKeyError, JwtSigner, JwtVerifier};
use crate::history::{
    DurableHistory, History, HistoryError, MemoryHistory, RedisHistory, Retention, SyncPolicy,
};
use crate::hub::HubConfig;
use crate::server::{ServerOptions, TlsConfig};

/// Which history store to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HistoryKind {
    /// On disk in `--data-dir` (redb): survives restarts and crashes.
    Durable,
    /// In memory: forgotten at exit.
    Memory,
}

/// When a publish is acknowledged, with the durable history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SyncMode {
    /// After the fsync of the batch it arrived in (group commit).
    Batch,
    /// After its own fsync (one per event).
    Always,
}

/// The history store the settings describe.
#[derive(Debug, Clone)]
pub enum HistorySettings {
    /// [`MemoryHistory`] keeping this many events.
    Memory {
        /// Events kept.
        max_events: usize,
    },
    /// [`DurableHistory`] in `data_dir`.
    Durable {
        /// The data directory.
        data_dir: PathBuf,
        /// What to keep.
        retention: Retention,
        /// When an append counts as stored.
        sync: SyncPolicy,
    },
    /// [`RedisHistory`]: one log shared by every instance on the same Redis.
    Redis {
        /// `redis://host:port/db`.
        url: String,
        /// Prefix of the Redis keys.
        prefix: String,
        /// Most events kept in the stream (0: no limit).
        max_len: u64,
    },
}

impl HistorySettings {
    /// Opens the store.
    ///
    /// # Errors
    /// A durable store that cannot be opened or is damaged; a Redis that does not answer.
    pub async fn open(&self) -> Result<Arc<dyn History>, HistoryError> {
        Ok(match self {
            Self::Memory { max_events } => Arc::new(MemoryHistory::new(*max_events)),
            Self::Durable {
                data_dir,
                retention,
                sync,
            } => Arc::new(DurableHistory::open(data_dir, *retention, *sync)?),
            Self::Redis {
                url,
                prefix,
                max_len,
            } => Arc::new(RedisHistory::connect(url, prefix, *max_len).await?),
        })
    }
}

/// Everything `ssehub serve` needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The hub's settings.
    pub hub: HubConfig,
    /// Connection settings.
    pub server: ServerOptions,
    /// The history store.
    pub history: HistorySettings,
    /// A listener of its own for `/metrics`, if any.
    pub metrics_addr: Option<SocketAddr>,
    /// With `--demo`: the signer of the demo page's publisher tokens (the publisher key, which
    /// the hub itself only uses to verify).
    pub demo: Option<JwtSigner>,
}

/// A setting that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// A JWT key that does not parse.
    #[error("{setting}: {source}")]
    Key {
        /// The setting's flag name.
        setting: &'static str,
        /// Why.
        source: JwtKeyError,
    },
    /// Nothing could verify publisher tokens.
    #[error("--publisher-jwt-key (or --jwt-key) is required: without it nobody can publish")]
    NoPublisherKey,
    /// Any other invalid value.
    #[error("{setting}: {reason}")]
    Invalid {
        /// The setting's flag name.
        setting: &'static str,
        /// Why.
        reason: String,
    },
}

/// Parses `15s`, `10m`, `1h30m`; `0` disables where a setting allows it.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    if value.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(value).map_err(|e| format!("{e} (expected e.g. 15s, 10m, 1h)"))
}

/// Settings of `ssehub serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// A TOML file of settings, named like the flags (`heartbeat = "15s"`,
    /// `cors_origins = ["https://example.com"]`); flags and SSEHUB_* variables override it.
    #[arg(long, env = "SSEHUB_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address to listen on; port 0 picks a free port (the bound address is logged).
    #[arg(long, env = "SSEHUB_ADDR", default_value = "127.0.0.1:3000")]
    pub addr: SocketAddr,

    /// Serve HTTPS (HTTP/2 and HTTP/1.1, by ALPN) with this PEM certificate chain (leaf first);
    /// needs --tls-key. Reloaded when the file changes. Without it: plain HTTP/1.1 (and HTTP/2
    /// with prior knowledge).
    #[arg(long, env = "SSEHUB_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "SSEHUB_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Key for both publisher and subscriber tokens, unless the specific keys below are set.
    #[arg(long, env = "SSEHUB_JWT_KEY", hide_env_values = true)]
    pub jwt_key: Option<String>,

    /// Key that verifies publisher tokens: an HMAC secret, or with --jwt-algorithm RS256/ES256 a
    /// PEM public key (the PEM text or a file path).
    #[arg(long, env = "SSEHUB_PUBLISHER_JWT_KEY", hide_env_values = true)]
    pub publisher_jwt_key: Option<String>,

    /// Key that verifies subscriber tokens (same forms as --publisher-jwt-key).
    #[arg(long, env = "SSEHUB_SUBSCRIBER_JWT_KEY", hide_env_values = true)]
    pub subscriber_jwt_key: Option<String>,

    /// Token signature algorithm: HS256, HS384, HS512, RS256, RS384, RS512, ES256, ES384.
    #[arg(long, env = "SSEHUB_JWT_ALGORITHM", default_value = "HS256")]
    pub jwt_algorithm: JwtAlgorithm,

    /// Audiences tokens must name in their `aud` claim (a string, or an array with one of them);
    /// repeat the flag or separate with commas. Unset: `aud` is not checked (as in Mercure).
    #[arg(long, env = "SSEHUB_JWT_AUDIENCE", value_delimiter = ',')]
    pub jwt_audience: Vec<String>,

    /// Accept subscribers without a token (they never receive private updates).
    #[arg(long, env = "SSEHUB_ANONYMOUS")]
    pub anonymous: bool,

    /// Browser origins allowed to subscribe and publish (comma-separated), or `*` for any
    /// origin without credentials.
    #[arg(long, env = "SSEHUB_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Origins allowed to publish with the `mercureAuthorization` cookie (comma-separated);
    /// empty: cookie-authorized publishing is refused (CSRF protection).
    #[arg(long, env = "SSEHUB_PUBLISH_ORIGINS", value_delimiter = ',')]
    pub publish_origins: Vec<String>,

    /// Publish subscription events and serve the subscriptions API
    /// (`/.well-known/mercure/subscriptions`).
    #[arg(long, env = "SSEHUB_SUBSCRIPTIONS")]
    pub subscriptions: bool,

    /// Serve a demo page at `/`, and `GET /demo/token`, which hands anyone a 10-minute token to
    /// publish under `https://example.com/demo`: NEVER in production. Needs an HMAC key (HS*).
    #[arg(long, env = "SSEHUB_DEMO")]
    pub demo: bool,

    /// Idle time before a heartbeat comment is sent on a stream (0 disables).
    #[arg(long, env = "SSEHUB_HEARTBEAT", default_value = "15s", value_parser = parse_duration)]
    pub heartbeat: Duration,

    /// Longest life of a stream; the hub then ends it and the client reconnects with
    /// Last-Event-ID (0 for no limit). Mercure calls it `write_timeout` (an accepted alias).
    #[arg(long, visible_alias = "write-timeout", env = "SSEHUB_MAX_LIFETIME", default_value = "1h", value_parser = parse_duration)]
    pub max_lifetime: Duration,

    /// Share one event log with other instances through Redis: `redis://HOST:PORT/DB`. Without
    /// it the hub runs alone on its own history (--history).
    #[arg(long, env = "SSEHUB_TRANSPORT")]
    pub transport: Option<String>,

    /// Prefix of the Redis keys, so several hubs can share one Redis.
    #[arg(long, env = "SSEHUB_REDIS_PREFIX", default_value = "ssehub")]
    pub redis_prefix: String,

    /// Where history is kept: `durable` (on disk in --data-dir) or `memory`.
    #[arg(long, env = "SSEHUB_HISTORY", default_value = "durable")]
    pub history: HistoryKind,

    /// Directory of the durable history (created if missing).
    #[arg(long, env = "SSEHUB_DATA_DIR", default_value = "./ssehub-data")]
    pub data_dir: PathBuf,

    /// When a publish is acknowledged with the durable history: `batch` (after the fsync of the
    /// batch it arrived in) or `always` (after its own fsync).
    #[arg(long, env = "SSEHUB_SYNC", default_value = "batch")]
    pub sync: SyncMode,

    /// Most events kept for Last-Event-ID replay (0: no limit, durable history only).
    #[arg(long, env = "SSEHUB_HISTORY_SIZE", default_value_t = 100_000)]
    pub history_size: usize,

    /// Oldest event kept by the durable history (0: no limit).
    #[arg(long, env = "SSEHUB_HISTORY_MAX_AGE", default_value = "0", value_parser = parse_duration)]
    pub history_max_age: Duration,

    /// Most bytes of events kept by the durable history (0: no limit).
    #[arg(long, env = "SSEHUB_HISTORY_MAX_BYTES", default_value_t = 1 << 30)]
    pub history_max_bytes: u64,

    /// Events queued for one subscriber before it is disconnected as too slow.
    #[arg(long, env = "SSEHUB_QUEUE_CAPACITY", default_value_t = 4096)]
    pub queue_capacity: usize,

    /// Bytes of events queued for streams not yet woken to write them, each subscriber's copy
    /// counted, beyond which the hub paces publishers (their answers wait) instead of letting
    /// every subscriber's delay grow.
    #[arg(long, env = "SSEHUB_MAX_QUEUED_BYTES", default_value_t = 16 << 20)]
    pub max_queued_bytes: usize,

    /// Most streams open at once; more get 503 with Retry-After.
    #[arg(long, env = "SSEHUB_MAX_SUBSCRIBERS", default_value_t = 100_000)]
    pub max_subscribers: usize,

    /// Most `topic` selectors in one subscription (and topics in one update).
    #[arg(long, env = "SSEHUB_MAX_TOPICS", default_value_t = 64)]
    pub max_topics: usize,

    /// Largest publish request body, in bytes.
    #[arg(long, env = "SSEHUB_MAX_PUBLISH_BYTES", default_value_t = 1024 * 1024)]
    pub max_publish_bytes: usize,

    /// Most client connections open at once; more are answered 503 and closed at once
    /// (0: the open-file limit less 64).
    #[arg(long, env = "SSEHUB_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,

    /// Most connections open at once from one client IP address; more are answered 429 and
    /// closed at once (0: no limit; behind a reverse proxy all clients share its address).
    #[arg(long, env = "SSEHUB_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: usize,

    /// Largest request head (request line, query string and headers), in bytes; larger ones
    /// get 431 (or 414 for the request line).
    #[arg(long, env = "SSEHUB_MAX_HEADER_BYTES", default_value_t = 64 * 1024)]
    pub max_header_bytes: usize,

    /// How long a client may take to send its request headers.
    #[arg(long, env = "SSEHUB_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// How long delivering to one client may stay blocked (its socket not taking data) before
    /// the connection is dropped (0 disables). Mercure's `dispatch_timeout`.
    #[arg(long, env = "SSEHUB_DISPATCH_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub dispatch_timeout: Duration,

    /// Where `/metrics` is served: `main` (the hub's own listener), `off`, or an address for a
    /// listener of its own (e.g. `127.0.0.1:9100`).
    #[arg(long, env = "SSEHUB_METRICS", default_value = "main")]
    pub metrics: String,

    /// How long shutdown waits for connections to close.
    #[arg(long, env = "SSEHUB_SHUTDOWN_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

impl ServeArgs {
    /// Validates the settings and builds the library's configuration.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad setting.
    pub fn resolve(&self) -> Result<Settings, ConfigError> {
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
        let positive = |setting: &'static str, value: usize| {
            if value == 0 {
                Err(ConfigError::Invalid {
                    setting,
                    reason: "must be at least 1".into(),
                })
            } else {
                Ok(value)
            }
        };
        let event_limits = crate::event::EventLimits {
            max_topics: positive("--max-topics", self.max_topics)?,
            ..crate::event::EventLimits::default()
        };
        for (setting, origin) in self
            .cors_origins
            .iter()
            .map(|o| ("--cors-origins", o))
            .chain(
                self.publish_origins
                    .iter()
                    .map(|o| ("--publish-origins", o)),
            )
        {
            if origin != "*" && (!origin.contains("://") || origin.ends_with('/')) {
                return Err(ConfigError::Invalid {
                    setting,
                    reason: format!(
                        "{origin:?} is not an origin (expected scheme://host[:port] without a path, or *)"
                    ),
                });
            }
        }
        let metrics_addr = match self.metrics.as_str() {
            "main" | "off" => None,
            addr => Some(
                addr.parse::<SocketAddr>()
                    .map_err(|_| ConfigError::Invalid {
                        setting: "--metrics",
                        reason: format!(
                            "{addr:?} is not `main`, `off` or an address like 127.0.0.1:9100"
                        ),
                    })?,
            ),
        };
        let hub = HubConfig {
            metrics_on_router: self.metrics == "main",
            heartbeat: self.heartbeat,
            max_lifetime: (!self.max_lifetime.is_zero()).then_some(self.max_lifetime),
            history_size: self.history_size,
            queue_capacity: positive("--queue-capacity", self.queue_capacity)?,
            max_queued_bytes: positive("--max-queued-bytes", self.max_queued_bytes)?,
            max_subscribers: positive("--max-subscribers", self.max_subscribers)?,
            max_topics_per_subscription: self.max_topics,
            event_limits,
            max_publish_bytes: positive("--max-publish-bytes", self.max_publish_bytes)?,
            auth: AuthConfig {
                publisher: Some(publisher),
                subscriber,
                anonymous: self.anonymous,
            },
            publish_origins: self
                .publish_origins
                .iter()
                .filter(|o| !o.is_empty())
                .cloned()
                .collect(),
            subscriptions: self.subscriptions,
            cors_origins: self
                .cors_origins
                .iter()
                .filter(|o| !o.is_empty())
                .cloned()
                .collect(),
        };
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                Some(TlsConfig::from_pem_files(cert, key).map_err(|error| {
                    ConfigError::Invalid {
                        setting: "--tls-cert/--tls-key",
                        reason: error.to_string(),
                    }
                })?)
            }
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid {
                    setting: "--tls-cert/--tls-key",
                    reason: "give both the certificate and its key, or neither".into(),
                })
            }
        };
        let server = ServerOptions {
            tls,
            header_read_timeout: self.header_read_timeout,
            write_timeout: self.dispatch_timeout,
            shutdown_timeout: self.shutdown_timeout,
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            max_header_bytes: self.max_header_bytes,
            ..ServerOptions::default()
        };
        let history = match (&self.transport, self.history) {
            (Some(url), _) => {
                let scheme_ok = url.starts_with("redis://")
                    || url.starts_with("rediss://")
                    || url.starts_with("redis+unix://");
                if !scheme_ok || redis::Client::open(url.as_str()).is_err() {
                    return Err(ConfigError::Invalid {
                        setting: "--transport",
                        reason: format!(
                            "{url:?} is not a Redis URL (expected redis://HOST:PORT/DB)"
                        ),
                    });
                }
                HistorySettings::Redis {
                    url: url.clone(),
                    prefix: self.redis_prefix.clone(),
                    max_len: self.history_size as u64,
                }
            }
            (None, HistoryKind::Memory) => HistorySettings::Memory {
                max_events: self.history_size,
            },
            (None, HistoryKind::Durable) => HistorySettings::Durable {
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
            },
        };
        Ok(Settings {
            hub,
            server,
            history,
            metrics_addr,
            demo,
        })
    }
}

/// Inserts the settings of the `serve` config file (named by `--config PATH`, `--config=PATH` or
/// `SSEHUB_CONFIG`) into `args` as flags placed before the user's own, so that the user's flags
/// win (the serve command lets a later flag override an earlier one); a setting whose
/// `SSEHUB_*` variable is set is skipped, so the environment wins too.
///
/// # Errors
/// An unreadable file, a TOML syntax error, an unknown setting, or a value of the wrong shape,
/// each naming the file.
pub fn apply_config_file(
    args: Vec<std::ffi::OsString>,
    serve: &clap::Command,
) -> Result<Vec<std::ffi::OsString>, ConfigError> {
    let Some(serve_at) = args.iter().position(|a| a == "serve") else {
        return Ok(args);
    };
    let mut path = std::env::var_os("SSEHUB_CONFIG").map(PathBuf::from);
    let mut rest = args[serve_at + 1..].iter();
    while let Some(arg) = rest.next() {
        let arg = arg.to_string_lossy();
        if arg == "--config" {
            path = rest.next().map(PathBuf::from);
        } else if let Some(value) = arg.strip_prefix("--config=") {
            path = Some(PathBuf::from(value));
        }
    }
    let Some(path) = path else {
        return Ok(args);
    };
    let invalid = |reason: String| ConfigError::Invalid {
        setting: "--config",
        reason: format!("{}: {reason}", path.display()),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| invalid(e.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| invalid(e.to_string()))?;
    let mut flags = Vec::new();
    for (key, value) in table {
        let long = key.replace('_', "-");
        let arg = serve
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()) && long != "config")
            .ok_or_else(|| {
                invalid(format!(
                    "unknown setting `{key}` (see `ssehub serve --help`)"
                ))
            })?;
        if arg
            .get_env()
            .is_some_and(|env| std::env::var_os(env).is_some())
        {
            continue;
        }
        let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values());
        let text = match value {
            toml::Value::Boolean(on) if !takes_value => {
                if on {
                    flags.push(format!("--{long}").into());
                }
                continue;
            }
            toml::Value::String(s) => s,
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Float(n) => n.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    toml::Value::String(s) => Ok(s.clone()),
                    other => Err(invalid(format!(
                        "`{key}` must be a list of strings, not {other}"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            other => return Err(invalid(format!("`{key}` has an unsupported value {other}"))),
        };
        flags.push(format!("--{long}={text}").into());
    }
    let mut merged = args;
    merged.splice(serve_at + 1..serve_at + 1, flags);
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    #[command(args_override_self = true)]
    struct Wrapper {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> Result<Wrapper, clap::Error> {
        Wrapper::try_parse_from(std::iter::once("ssehub").chain(args.iter().copied()))
    }

    #[test]
    fn durations_accept_units() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn publisher_key_is_required() {
        let args = parse(&[]).expect("parses");
        assert!(matches!(
            args.serve.resolve(),
            Err(ConfigError::NoPublisherKey)
        ));
    }

    #[test]
    fn jwt_key_is_the_fallback_for_both() {
        let args = parse(&["--jwt-key", "secret"]).expect("parses");
        let settings = args.serve.resolve().expect("valid");
        assert!(settings.hub.auth.publisher.is_some() && settings.hub.auth.subscriber.is_some());
        assert!(matches!(settings.history, HistorySettings::Durable { .. }));
    }

    #[test]
    fn jwt_audience_may_be_repeated_or_comma_separated() {
        let args = parse(&[
            "--jwt-key",
            "k",
            "--jwt-audience",
            "https://a.example,https://b.example",
            "--jwt-audience",
            "c",
        ])
        .expect("parses");
        assert_eq!(
            args.serve.jwt_audience,
            ["https://a.example", "https://b.example", "c"]
        );
        let settings = args.serve.resolve().expect("valid");
        let publisher = format!("{:?}", settings.hub.auth.publisher);
        assert!(publisher.contains("https://b.example"), "{publisher}");
        let subscriber = format!("{:?}", settings.hub.auth.subscriber);
        assert!(subscriber.contains("https://b.example"), "{subscriber}");
        let args = parse(&["--jwt-key", "k"]).expect("parses");
        assert!(args.serve.jwt_audience.is_empty());
    }

    #[test]
    fn bad_values_name_their_setting() {
        let args = parse(&["--jwt-key", "k", "--cors-origins", "example.com"]).expect("parses");
        let error = args
            .serve
            .resolve()
            .expect_err("invalid origin")
            .to_string();
        assert!(error.starts_with("--cors-origins"), "{error}");
        assert!(parse(&["--heartbeat", "soon"]).is_err());
        let args =
            parse(&["--publisher-jwt-key", "k", "--jwt-algorithm", "RS256"]).expect("parses");
        let error = args.serve.resolve().expect_err("not a PEM").to_string();
        assert!(error.starts_with("--publisher-jwt-key"), "{error}");
        assert!(parse(&["--jwt-key", "k", "--tls-cert", "cert.pem"]).is_err());
        let args = parse(&[
            "--jwt-key",
            "k",
            "--tls-cert",
            "/nonexistent/cert.pem",
            "--tls-key",
            "/nonexistent/key.pem",
        ])
        .expect("parses");
        let error = args.serve.resolve().expect_err("no such file").to_string();
        assert!(
            error.starts_with("--tls-cert") && error.contains("/nonexistent/cert.pem"),
            "{error}"
        );
    }
}

#[cfg(test)]
mod file_tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    #[command(args_override_self = true)]
    struct Cli {
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(clap::Subcommand)]
    enum Sub {
        Serve(ServeArgs),
    }

    fn parse_with_file(toml: &str, flags: &[&str]) -> Result<ServeArgs, String> {
        let dir = std::env::temp_dir().join(format!(
            "ssehub-config-{}-{}",
            std::process::id(),
            toml.len()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let path = dir.join("ssehub.toml");
        std::fs::write(&path, toml).map_err(|e| e.to_string())?;
        let mut args: Vec<std::ffi::OsString> = vec!["ssehub".into(), "serve".into()];
        args.push(format!("--config={}", path.display()).into());
        args.extend(flags.iter().map(Into::into));
        let command = Cli::command();
        let serve = command.find_subcommand("serve").ok_or("no serve")?;
        let args = apply_config_file(args, serve).map_err(|e| e.to_string())?;
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        let Sub::Serve(serve) = cli.command;
        Ok(serve)
    }

    #[test]
    fn file_settings_apply_and_flags_override_them() {
        let serve = parse_with_file(
            "heartbeat = \"2s\"\nanonymous = true\nhistory_size = 7\ncors_origins = [\"https://a.example\", \"https://b.example\"]\n",
            &["--history-size", "9"],
        )
        .expect("parses");
        assert_eq!(serve.heartbeat, Duration::from_secs(2));
        assert!(serve.anonymous);
        assert_eq!(serve.history_size, 9, "the flag beats the file");
        assert_eq!(
            serve.cors_origins,
            ["https://a.example", "https://b.example"]
        );
    }

    #[test]
    fn jwt_audience_from_the_file() {
        let serve = parse_with_file(
            "jwt_key = \"k\"\njwt_audience = [\"https://a.example\", \"https://b.example\"]\n",
            &[],
        )
        .expect("parses");
        assert_eq!(
            serve.jwt_audience,
            ["https://a.example", "https://b.example"]
        );
    }

    #[test]
    fn unknown_or_malformed_settings_name_the_file() {
        let error = parse_with_file("heartbeet = \"2s\"\n", &[]).expect_err("unknown");
        assert!(
            error.contains("unknown setting `heartbeet`") && error.contains("ssehub.toml"),
            "{error}"
        );
        let error = parse_with_file("heartbeat = [1, 2]\n", &[]).expect_err("bad shape");
        assert!(error.contains("heartbeat"), "{error}");
        let error = parse_with_file("heartbeat = \"soon\"\n", &[]).expect_err("bad value");
        assert!(error.contains("--heartbeat"), "{error}");
        let error = parse_with_file("not toml at all [", &[]).expect_err("syntax");
        assert!(error.contains("ssehub.toml"), "{error}");
    }
}
