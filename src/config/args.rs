//! The flags of `ssehub serve`: [`ServeArgs`], one field per setting.
//!
//! A field is parsed by clap from a flag or its `SSEHUB_*` variable, and by serde from the
//! config file ([`super::file`]), under the same name: `--max-lifetime`, `SSEHUB_MAX_LIFETIME`,
//! `max_lifetime`. Turning the fields into the library's settings is [`super::resolve`]'s job.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::auth::JwtAlgorithm;

/// Which history store to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HistoryKind {
    /// On disk in `--data-dir` (redb): survives restarts and crashes.
    Durable,
    /// In memory: forgotten at exit.
    Memory,
    /// A Redis stream at `--redis-url`: one log shared by every instance on it.
    Redis,
}

impl HistoryKind {
    /// The value as written on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Durable => "durable",
            Self::Memory => "memory",
            Self::Redis => "redis",
        }
    }
}

/// When a publish is acknowledged, with the durable history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// After the fsync of the batch it arrived in (group commit).
    Batch,
    /// After its own fsync (one per event).
    Always,
}

/// One `[[retention]]` table of the config file: retention per topic (see
/// [`crate::history::retention_rules`]). Only the file has these; checked by `resolve`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRuleArgs {
    /// The topics: a URI template, an exact topic, or `*`.
    pub topics: String,
    /// Most events each matching topic keeps (absent: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_events: Option<u64>,
    /// Oldest event each matching topic keeps, as `"1d"`, `"10m"` (absent: no limit).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "optional_duration"
    )]
    pub max_age: Option<Duration>,
}

/// Parses `15s`, `10m`, `1h30m`; `0` disables where a setting allows it.
///
/// # Errors
/// Text that is not a duration with a unit, as a message for clap or serde.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    if value.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(value).map_err(|e| format!("{e} (expected e.g. 15s, 10m, 1h)"))
}

/// Settings of `ssehub serve`.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// A TOML file of settings, named like the flags (`heartbeat = "15s"`,
    /// `cors_origins = ["https://example.com"]`); flags and SSEHUB_* variables override it.
    #[arg(long, env = "SSEHUB_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// What to log: a level (`error`, `warn`, `info`, `debug`, `trace`) or tracing directives
    /// (`info,ssehub::http=debug`). Unset: RUST_LOG, else `info`. Reloaded on SIGHUP.
    #[arg(long, env = "SSEHUB_LOG_LEVEL")]
    pub log_level: Option<String>,

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
    #[serde(with = "text")]
    pub jwt_algorithm: JwtAlgorithm,

    /// Audiences tokens must name in their `aud` claim (a string, or an array with one of them);
    /// repeat the flag or separate with commas. Unset: `aud` is not checked (as in Mercure).
    #[arg(long, env = "SSEHUB_JWT_AUDIENCE", value_delimiter = ',')]
    #[serde(default, with = "list")]
    pub jwt_audience: Vec<String>,

    /// draft-08: the hub's resource identifier, which access tokens must name in `aud`
    /// (e.g. `https://hub.example.com/.well-known/mercure`; it need not be the address the hub
    /// is served at). Needs at least one `[[issuer]]` in the config file.
    #[arg(long, env = "SSEHUB_RESOURCE_IDENTIFIER")]
    pub resource_identifier: Option<String>,

    /// draft-08: time between two scheduled fetches of an issuer's JWK Set (0: only on
    /// unknown `kid`s).
    #[arg(long, env = "SSEHUB_JWKS_REFRESH", default_value = "5m", value_parser = parse_duration)]
    #[serde(with = "duration")]
    pub jwks_refresh: Duration,

    /// draft-08: shortest time between two fetches of a JWK Set caused by tokens naming a
    /// `kid` the hub does not know (bounds what made-up `kid`s cost the key server).
    #[arg(long, env = "SSEHUB_JWKS_MIN_REFETCH", default_value = "30s", value_parser = parse_duration)]
    #[serde(with = "duration")]
    pub jwks_min_refetch: Duration,

    /// draft-08 trusted issuers: `[[issuer]]` tables of the config file only (see
    /// `config::IssuerSettings`).
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issuer: Vec<super::IssuerSettings>,

    /// Accept subscribers without a token (they never receive private updates).
    #[arg(long, env = "SSEHUB_ANONYMOUS")]
    pub anonymous: bool,

    /// Browser origins allowed to subscribe and publish (comma-separated), or `*` for any
    /// origin without credentials.
    #[arg(long, env = "SSEHUB_CORS_ORIGINS", value_delimiter = ',')]
    #[serde(default, with = "list")]
    pub cors_origins: Vec<String>,

    /// Origins allowed to publish with the `mercureAuthorization` cookie (comma-separated);
    /// empty: cookie-authorized publishing is refused (CSRF protection).
    #[arg(long, env = "SSEHUB_PUBLISH_ORIGINS", value_delimiter = ',')]
    #[serde(default, with = "list")]
    pub publish_origins: Vec<String>,

    /// Mercure dialects served on /.well-known/mercure, chosen per request from what it carries
    /// (comma-separated): `draft-07` (`topic`, `lastEventID`, `mercureAuthorization`),
    /// `draft-08` (`match`, `match_urlpattern`, `last_event_id`, `at+jwt`,
    /// `__Secure-mercure_access_token`). A request in a dialect that is off gets 400.
    #[arg(
        long,
        env = "SSEHUB_DIALECTS",
        value_delimiter = ',',
        default_value = "draft-07,draft-08"
    )]
    #[serde(with = "list")]
    pub dialects: Vec<String>,

    /// Publish subscription events and serve the subscriptions API
    /// (`/.well-known/mercure/subscriptions`).
    #[arg(long, env = "SSEHUB_SUBSCRIPTIONS")]
    pub subscriptions: bool,

    /// POST subscription notifications (opened, closed) and a periodic full list of this
    /// instance's active subscriptions to this URL, signed with --webhook-secret
    /// (docs/WEBHOOKS.md).
    #[arg(
        long,
        env = "SSEHUB_WEBHOOK",
        value_name = "URL",
        requires = "webhook_secret"
    )]
    pub webhook: Option<String>,

    /// The HMAC-SHA256 key of the webhook's `Ssehub-Signature` header, shared with the
    /// receiver.
    #[arg(
        long,
        env = "SSEHUB_WEBHOOK_SECRET",
        hide_env_values = true,
        requires = "webhook"
    )]
    pub webhook_secret: Option<String>,

    /// Webhook notifications held while the receiver is down or slow; beyond it the oldest are
    /// dropped (counted in ssehub_webhook_dropped_total).
    #[arg(long, env = "SSEHUB_WEBHOOK_QUEUE", default_value_t = 10_000)]
    pub webhook_queue: usize,

    /// The longest one webhook request may take, answer included.
    #[arg(long, env = "SSEHUB_WEBHOOK_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    #[serde(with = "duration")]
    pub webhook_timeout: Duration,

    /// The longest wait between two attempts to deliver to a webhook receiver that is down
    /// (the wait doubles from 200 ms per failure, with jitter).
    #[arg(long, env = "SSEHUB_WEBHOOK_MAX_BACKOFF", default_value = "30s", value_parser = parse_duration)]
    #[serde(with = "duration")]
    pub webhook_max_backoff: Duration,

    /// Time between two webhook full lists of this instance's active subscriptions.
    #[arg(long, env = "SSEHUB_WEBHOOK_FULL_LIST_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    #[serde(with = "duration")]
    pub webhook_full_list_interval: Duration,

    /// Serve a demo page at `/`, and `GET /demo/token`, which hands anyone a 10-minute token to
    /// publish under `https://example.com/demo`: NEVER in production. Needs an HMAC key (HS*).
    #[arg(long, env = "SSEHUB_DEMO")]
    pub demo: bool,

    /// Idle time before a heartbeat comment is sent on a stream (0 disables).
    #[arg(long, env = "SSEHUB_HEARTBEAT", default_value = "15s", value_parser = parse_duration)]
    #[serde(with = "duration")]
    pub heartbeat: Duration,

    /// Longest life of a stream; the hub then ends it and the client reconnects with
    /// Last-Event-ID (0 for no limit). Mercure calls it `write_timeout` (an accepted alias, in
    /// the file too): in Mercure that bounds the whole response, which for a stream is its life.
    #[arg(long, visible_alias = "write-timeout", env = "SSEHUB_MAX_LIFETIME", default_value = "1h", value_parser = parse_duration)]
    #[serde(with = "duration")]
    pub max_lifetime: Duration,

    /// Deprecated: `--history redis --redis-url URL`. Still accepted (with a warning) and mapped
    /// to them; refused together with another --history or with --redis-url.
    #[arg(long, env = "SSEHUB_TRANSPORT", value_name = "REDIS_URL")]
    pub transport: Option<String>,

    /// With `--history redis`: the Redis that holds the event log shared by every instance
    /// using it, `redis://HOST:PORT/DB` (also `rediss://`, `redis+unix://`).
    #[arg(long, env = "SSEHUB_REDIS_URL", value_name = "URL")]
    pub redis_url: Option<String>,

    /// With `--history redis`: most publishes this instance spools in --data-dir while Redis is
    /// unreachable (acknowledged once fsynced, forwarded in order when Redis is back); beyond
    /// it publishes get 503. 0: no spool, every publish during an outage gets 503.
    #[arg(long, env = "SSEHUB_SPOOL_MAX_EVENTS", default_value_t = 100_000)]
    pub spool_max_events: usize,

    /// Prefix of the Redis keys, so several hubs can share one Redis.
    #[arg(long, env = "SSEHUB_REDIS_PREFIX", default_value = "ssehub")]
    pub redis_prefix: String,

    /// A PostgreSQL outbox to relay, `postgres://USER@HOST:PORT/DB`: committed rows of
    /// --outbox-table are published in commit order, each once, then deleted (the table's DDL
    /// is deploy/postgres/outbox.sql).
    #[arg(long, env = "SSEHUB_OUTBOX", value_name = "POSTGRES_URL")]
    pub outbox: Option<String>,

    /// The outbox table (`table` or `schema.table`), with --outbox.
    #[arg(long, env = "SSEHUB_OUTBOX_TABLE", default_value = "ssehub_outbox")]
    pub outbox_table: String,

    /// Where history is kept: `durable` (on disk in --data-dir; the default), `memory`, or
    /// `redis` (a log shared with other instances, at --redis-url).
    #[arg(long, env = "SSEHUB_HISTORY", value_name = "durable|memory|redis")]
    pub history: Option<HistoryKind>,

    /// Directory of the durable history (created if missing; unused by the other stores).
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
    #[serde(with = "duration")]
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
    #[arg(long, env = "SSEHUB_MAX_QUEUED_BYTES", default_value_t = 32 << 20)]
    pub max_queued_bytes: usize,

    /// The subscribers of one exact topic share one queue of live events (`true` or `false`):
    /// the fan-out appends an event once per topic instead of once per subscriber (10-20 % less
    /// server CPU per delivery at 10,000 subscribers; BENCHMARKS.md). `false` gives every
    /// subscriber a queue of its own.
    #[arg(long, env = "SSEHUB_SHARED_FEEDS", default_value_t = true, action = clap::ArgAction::Set)]
    pub shared_feeds: bool,

    /// Start every stream opened without a Last-Event-ID with an id-only frame naming the
    /// newest event (`true` or `false`): a browser cut off before its first event then resumes
    /// where it started instead of missing what was published meanwhile.
    #[arg(long, env = "SSEHUB_INITIAL_CURSOR", default_value_t = true, action = clap::ArgAction::Set)]
    pub initial_cursor: bool,

    /// How long a publish's Idempotency-Key is remembered: a retry with the same key within it
    /// is answered with the original event's id and not stored or delivered again.
    #[arg(long, env = "SSEHUB_IDEMPOTENCY_WINDOW", default_value = "24h", value_parser = parse_duration)]
    #[serde(with = "duration")]
    pub idempotency_window: Duration,

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
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,

    /// How long delivering to one client may stay blocked (its socket not taking data) before
    /// the connection is dropped (0 disables). Mercure's `dispatch_timeout`; the server's
    /// `ServerOptions::dispatch_timeout`.
    #[arg(long, env = "SSEHUB_DISPATCH_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    #[serde(with = "duration")]
    pub dispatch_timeout: Duration,

    /// When the hub closes a connection whose client may still be sending (a request refused
    /// before its body was read: 413, 401), the longest time it keeps reading and discarding
    /// what comes, so the client reads the answer instead of a reset (0: close at once).
    /// nginx's `lingering_time`.
    #[arg(long, env = "SSEHUB_LINGERING_TIME", default_value = "30s", value_parser = parse_duration)]
    #[serde(with = "duration")]
    pub lingering_time: Duration,

    /// While lingering, the longest pause between two reads before the client is taken to have
    /// stopped. nginx's `lingering_timeout`.
    #[arg(long, env = "SSEHUB_LINGERING_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    #[serde(with = "duration")]
    pub lingering_timeout: Duration,

    /// Where `/metrics` is served: `main` (the hub's own listener), `off`, or an address for a
    /// listener of its own (e.g. `127.0.0.1:9100`).
    #[arg(long, env = "SSEHUB_METRICS", default_value = "main")]
    pub metrics: String,

    /// Export traces over OTLP (http/protobuf) to this collector base URL (e.g.
    /// `http://127.0.0.1:4318`; `/v1/traces` is appended). Without it, tracing is on only when
    /// the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set.
    #[arg(long, env = "SSEHUB_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// With tracing on, the share of deliveries (0 to 1) that get a `deliver` span of their
    /// own; publish, store and dispatch spans are made for every traced publish.
    #[arg(long, env = "SSEHUB_TRACE_DELIVERIES", default_value = "0.01")]
    pub trace_deliveries: f64,

    /// How long shutdown waits for connections to close.
    #[arg(long, env = "SSEHUB_SHUTDOWN_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,

    /// Retention per topic: `[[retention]]` tables of the config file only (no flag, no
    /// variable), first match first.
    #[arg(skip)]
    #[serde(default)]
    pub retention: Vec<RetentionRuleArgs>,
}

/// An optional duration as text, read with [`parse_duration`].
mod optional_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => super::duration::serialize(value, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_duration(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

/// Durations as text (`"15s"`), read with [`parse_duration`].
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// A value written as its `Display` text and read back with `FromStr`.
mod text {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Display, S: Serializer>(
        value: &T,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub fn deserialize<'de, T, D>(deserializer: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A list of strings: a TOML array, or one string separated by commas (as on the command line).
mod list {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Items {
        One(String),
        Many(Vec<String>),
    }

    pub fn serialize<S: Serializer>(value: &[String], serializer: S) -> Result<S::Ok, S::Error> {
        value.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<String>, D::Error> {
        Ok(
            match Items::deserialize(deserializer).map_err(|_| {
                serde::de::Error::custom(
                    "expected a list of strings, or one comma-separated string",
                )
            })? {
                Items::One(text) => text.split(',').map(str::to_owned).collect(),
                Items::Many(items) => items,
            },
        )
    }
}
