//! `ssehub serve` settings: a TOML file, `SSEHUB_*` environment variables and flags, validated
//! once.
//!
//! Every setting has one name everywhere: `heartbeat = "15s"` in the file, `SSEHUB_HEARTBEAT`
//! in the environment, `--heartbeat` on the command line; flags beat the environment, which
//! beats the file, which beats the defaults. One file per step:
//! - `args`: the flags ([`ServeArgs`]), which clap reads from the command line and the
//!   environment;
//! - [`file`]: the config file, layered under them with figment ([`merge_config_file`]);
//! - `resolve`: [`ServeArgs::resolve`] turns them into the library's [`HubConfig`],
//!   [`HttpConfig`], [`ServerOptions`] and [`HistorySettings`], and a bad value stops start-up
//!   with a message naming it.
//!
//! Opening the history store is [`HistorySettings::open`], in [`crate::history`].
//!
//! `--max-lifetime` is also accepted as `--write-timeout` (and `write_timeout` in the file):
//! that is Mercure's name for the longest life of a response, which for a stream is its
//! lifetime. The socket stall timeout is `--dispatch-timeout` (Mercure's `dispatch_timeout`),
//! and [`ServerOptions::dispatch_timeout`] in the server.

mod args;
mod file;
mod issuer;
mod resolve;

use std::net::SocketAddr;

use thiserror::Error;

pub use self::args::{parse_duration, HistoryKind, RetentionRuleArgs, ServeArgs, SyncMode};
pub use self::file::merge_config_file;
pub use self::issuer::{IssuerSettings, RoleName};
use crate::auth::{JwtKeyError, JwtSigner};
pub use crate::history::HistorySettings;
use crate::http::HttpConfig;
use crate::hub::HubConfig;
use crate::server::ServerOptions;

/// Everything `ssehub serve` needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The hub's settings.
    pub hub: HubConfig,
    /// The HTTP routes' settings (keys, origins, the publish body limit, `/metrics`).
    pub http: HttpConfig,
    /// Connection settings.
    pub server: ServerOptions,
    /// The history store.
    pub history: HistorySettings,
    /// A listener of its own for `/metrics`, if any.
    pub metrics_addr: Option<SocketAddr>,
    /// Where traces go (`--otlp-endpoint`, `--trace-deliveries`, and the `OTEL_*` variables).
    pub otlp: crate::telemetry::otlp::OtlpSettings,
    /// `--log-level`, checked (tracing directives); `None`: RUST_LOG, else `info`.
    pub log_level: Option<String>,
    /// With `--outbox`: the outbox relay's settings.
    pub outbox: Option<crate::outbox::OutboxSettings>,
    /// With `--demo`: the signer of the demo page's publisher tokens (the publisher key, which
    /// the hub itself only uses to verify).
    pub demo: Option<JwtSigner>,
    /// With `--webhook`: the checked webhook for [`crate::HubBuilder::webhook`].
    pub webhook: Option<crate::webhook::Webhook>,
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
    /// Settings that contradict each other (such as `--history memory` with `--redis-url`).
    #[error("{settings}: {reason}")]
    Conflict {
        /// The flags involved.
        settings: &'static str,
        /// Why they cannot be used together, and what to do instead.
        reason: String,
    },
    /// The config file, or a bad value in it.
    #[error("config file {path}: {reason}")]
    File {
        /// The file (or, for a value from elsewhere, its source).
        path: String,
        /// What is wrong, naming the setting.
        reason: String,
    },
    /// Any other invalid value.
    #[error("{setting}: {reason}")]
    Invalid {
        /// The setting's flag name.
        setting: &'static str,
        /// Why.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
    fn dialects_default_to_both_and_refuse_unknown_names() {
        use crate::dialect::{Dialect, Dialects};
        let settings = |args: &[&str]| parse(args).expect("parses").serve.resolve();
        let both = settings(&["--jwt-key", "k"]).expect("valid");
        assert_eq!(both.http.dialects, Dialects::BOTH);
        let one = settings(&["--jwt-key", "k", "--dialects", "draft-08"]).expect("valid");
        assert_eq!(one.http.dialects, Dialects::only(Dialect::Draft08));
        for bad in ["draft-09", ""] {
            assert!(
                matches!(
                    settings(&["--jwt-key", "k", "--dialects", bad]),
                    Err(ConfigError::Invalid {
                        setting: "--dialects",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn jwt_key_is_the_fallback_for_both() {
        let args = parse(&["--jwt-key", "secret"]).expect("parses");
        let settings = args.serve.resolve().expect("valid");
        assert!(settings.http.auth.publisher.is_some() && settings.http.auth.subscriber.is_some());
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
        let publisher = format!("{:?}", settings.http.auth.publisher);
        assert!(publisher.contains("https://b.example"), "{publisher}");
        let subscriber = format!("{:?}", settings.http.auth.subscriber);
        assert!(subscriber.contains("https://b.example"), "{subscriber}");
        let args = parse(&["--jwt-key", "k"]).expect("parses");
        assert!(args.serve.jwt_audience.is_empty());
    }

    #[test]
    fn outbox_takes_a_postgres_url_and_a_checked_table_name() {
        let args = parse(&["--jwt-key", "k"]).expect("parses");
        assert!(args.serve.resolve().expect("valid").outbox.is_none());
        let url = "postgres://app@127.0.0.1:5432/app";
        let args = parse(&[
            "--jwt-key",
            "k",
            "--outbox",
            url,
            "--outbox-table",
            "app.outbox",
        ])
        .expect("parses");
        let outbox = args.serve.resolve().expect("valid").outbox.expect("outbox");
        assert_eq!(outbox.table.name(), "app.outbox");
        let args = parse(&[
            "--jwt-key",
            "k",
            "--outbox",
            url,
            "--outbox-table",
            "x;drop",
        ])
        .expect("parses");
        assert!(matches!(
            args.serve.resolve(),
            Err(ConfigError::Invalid {
                setting: "--outbox-table",
                ..
            })
        ));
        let args =
            parse(&["--jwt-key", "k", "--outbox", "postgres://h:notaport/db"]).expect("parses");
        assert!(matches!(
            args.serve.resolve(),
            Err(ConfigError::Invalid {
                setting: "--outbox",
                ..
            })
        ));
    }

    #[test]
    fn redis_history_is_history_redis_with_redis_url() {
        let args = parse(&[
            "--jwt-key",
            "k",
            "--history",
            "redis",
            "--redis-url",
            "redis://127.0.0.1:6379/0",
        ])
        .expect("parses");
        let settings = args.serve.resolve().expect("valid");
        assert!(
            matches!(&settings.history, HistorySettings::Redis { url, .. } if url == "redis://127.0.0.1:6379/0"),
            "{:?}",
            settings.history
        );
        // The deprecated spelling, alone or with a --history that agrees, means the same.
        for flags in [
            &["--transport", "redis://127.0.0.1:6379/0"][..],
            &[
                "--transport",
                "redis://127.0.0.1:6379/0",
                "--history",
                "redis",
            ],
        ] {
            let args = parse(&[&["--jwt-key", "k"][..], flags].concat()).expect("parses");
            let settings = args.serve.resolve().expect("valid");
            assert!(matches!(settings.history, HistorySettings::Redis { .. }));
        }
        let args = parse(&["--jwt-key", "k", "--history", "memory"]).expect("parses");
        let settings = args.serve.resolve().expect("valid");
        assert!(matches!(settings.history, HistorySettings::Memory { .. }));
    }

    #[test]
    fn contradictory_history_flags_are_refused_naming_them() {
        let url = "redis://127.0.0.1:6379/0";
        for (flags, named) in [
            (
                &["--transport", url, "--history", "durable"][..],
                ["--transport", "--history"],
            ),
            (
                &["--transport", url, "--history", "memory"],
                ["--transport", "--history"],
            ),
            (
                &["--transport", url, "--redis-url", url],
                ["--transport", "--redis-url"],
            ),
            (&["--history", "redis"], ["--history redis", "--redis-url"]),
            (
                &["--redis-url", url, "--history", "memory"],
                ["--redis-url", "--history"],
            ),
            (
                &["--redis-url", url, "--history", "durable"],
                ["--redis-url", "--history"],
            ),
            (&["--redis-url", url], ["--redis-url", "--history redis"]),
        ] {
            let args = parse(&[&["--jwt-key", "k"][..], flags].concat()).expect("parses");
            let error = args
                .serve
                .resolve()
                .expect_err(&format!("{flags:?} is contradictory"))
                .to_string();
            assert!(
                named.iter().all(|flag| error.contains(flag)),
                "{flags:?}: {error}"
            );
        }
        let args = parse(&[
            "--jwt-key",
            "k",
            "--history",
            "redis",
            "--redis-url",
            "http://x",
        ])
        .expect("parses");
        let error = args.serve.resolve().expect_err("not redis").to_string();
        assert!(error.starts_with("--redis-url"), "{error}");
    }

    #[test]
    fn dispatch_timeout_is_the_socket_stall_and_write_timeout_the_lifetime() {
        let args = parse(&[
            "--jwt-key",
            "k",
            "--dispatch-timeout",
            "7s",
            "--write-timeout",
            "2m",
        ])
        .expect("parses");
        let settings = args.serve.resolve().expect("valid");
        assert_eq!(settings.server.dispatch_timeout, Duration::from_secs(7));
        assert_eq!(settings.hub.max_lifetime, Some(Duration::from_secs(120)));
    }

    #[test]
    fn lingering_settings_reach_the_server_options_with_nginx_defaults() {
        let args = parse(&["--jwt-key", "k"]).expect("parses");
        let settings = args.serve.resolve().expect("valid");
        assert_eq!(settings.server.lingering_time, Duration::from_secs(30));
        assert_eq!(settings.server.lingering_timeout, Duration::from_secs(5));
        let args = parse(&[
            "--jwt-key",
            "k",
            "--lingering-time",
            "2s",
            "--lingering-timeout",
            "250ms",
        ])
        .expect("parses");
        let settings = args.serve.resolve().expect("valid");
        assert_eq!(settings.server.lingering_time, Duration::from_secs(2));
        assert_eq!(
            settings.server.lingering_timeout,
            Duration::from_millis(250)
        );
    }

    #[test]
    fn webhook_settings_reach_the_webhook_and_bad_ones_are_named() {
        let args = parse(&[
            "--jwt-key",
            "k",
            "--webhook",
            "http://127.0.0.1:9/hook",
            "--webhook-secret",
            "s",
            "--webhook-queue",
            "3",
            "--webhook-max-backoff",
            "2s",
            "--webhook-full-list-interval",
            "10s",
            "--webhook-timeout",
            "1s",
        ])
        .expect("parses");
        let settings = args.serve.resolve().expect("valid");
        let webhook = settings.webhook.expect("a webhook");
        let config = webhook.config();
        assert_eq!(config.url, "http://127.0.0.1:9/hook");
        assert_eq!(config.queue_capacity, 3);
        assert_eq!(config.max_backoff, Duration::from_secs(2));
        assert_eq!(config.full_list_interval, Duration::from_secs(10));
        assert_eq!(config.timeout, Duration::from_secs(1));
        assert!(
            !format!("{config:?}").contains("\"s\""),
            "the secret is redacted"
        );
        assert!(parse(&["--jwt-key", "k", "--webhook", "http://x/"]).is_err());
        assert!(parse(&["--jwt-key", "k", "--webhook-secret", "s"]).is_err());
        let args = parse(&[
            "--jwt-key",
            "k",
            "--webhook",
            "ftp://x/",
            "--webhook-secret",
            "s",
        ])
        .expect("parses");
        let error = args.serve.resolve().expect_err("not http").to_string();
        assert!(
            error.starts_with("--webhook") && error.contains("ftp://x/"),
            "{error}"
        );
        assert!(parse(&["--jwt-key", "k"])
            .expect("parses")
            .serve
            .resolve()
            .expect("valid")
            .webhook
            .is_none());
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
