//! Reloading `ssehub serve` without a restart: on SIGHUP the command line it was started
//! with is read again, with the environment and the config file, through the same path as at
//! start-up ([`Cli::parse_with_config_file`], [`ServeArgs::resolve`]).
//!
//! What a reload applies ([`RELOADABLE`]): the keys (`jwt_key`, `publisher_jwt_key`,
//! `subscriber_jwt_key`, `jwt_algorithm`, `jwt_audience`, the draft-08 `[[issuer]]` tables
//! and their JWKS timings), `anonymous`, `cors_origins`, `publish_origins`, `dialects`,
//! `max_publish_bytes`, `max_subscribers` and `log_level`. The HTTP ones take effect on the
//! next request ([`LiveHttpConfig`]); open streams stay open, except those whose token no
//! longer verifies under the new keys, which are ended (and logged with the reason).
//! `max_subscribers` is an atomic of the hub: lowering it refuses new subscriptions and ends
//! none. Every other setting (the address, TLS, the history store and its limits, heartbeat,
//! stream lifetime, queue sizes, connection limits, metrics, `--demo`...) shapes something built
//! once at start-up: a change to one is logged as a warning naming it, and is not applied.
//!
//! A configuration that does not parse or validate is refused as a whole, with an error
//! naming the problem; the one in effect stays, and the hub keeps serving. systemd hears
//! `RELOADING=1` and then `READY=1` either way.

use std::ffi::OsString;
use std::fmt;
use std::sync::Arc;

use anyhow::{bail, Context};
use serde_json::{Map, Value};
use tracing::{error, info, warn};

use super::systemd::Notifier;
use super::{Cli, Command};
use crate::config::ServeArgs;
use crate::http::LiveHttpConfig;
use crate::Hub;

/// The settings (their names in the file) that a reload applies; [`reloadable_of`] copies
/// exactly these.
pub const RELOADABLE: &[&str] = &[
    "jwt_key",
    "publisher_jwt_key",
    "subscriber_jwt_key",
    "jwt_algorithm",
    "jwt_audience",
    "issuer",
    "jwks_refresh",
    "jwks_min_refetch",
    "anonymous",
    "cors_origins",
    "publish_origins",
    "dialects",
    "max_publish_bytes",
    "max_subscribers",
    "log_level",
];

/// The settings in effect with the reloadable ones of `new`: what a reload puts in effect.
pub fn reloadable_of(in_effect: &ServeArgs, new: &ServeArgs) -> ServeArgs {
    let mut args = in_effect.clone();
    args.jwt_key.clone_from(&new.jwt_key);
    args.publisher_jwt_key.clone_from(&new.publisher_jwt_key);
    args.subscriber_jwt_key.clone_from(&new.subscriber_jwt_key);
    args.jwt_algorithm = new.jwt_algorithm;
    args.jwt_audience.clone_from(&new.jwt_audience);
    args.issuer.clone_from(&new.issuer);
    args.jwks_refresh = new.jwks_refresh;
    args.jwks_min_refetch = new.jwks_min_refetch;
    args.anonymous = new.anonymous;
    args.cors_origins.clone_from(&new.cors_origins);
    args.publish_origins.clone_from(&new.publish_origins);
    args.dialects.clone_from(&new.dialects);
    args.max_publish_bytes = new.max_publish_bytes;
    args.max_subscribers = new.max_subscribers;
    args.log_level.clone_from(&new.log_level);
    args
}

/// Sets the log filter for a `--log-level` (`None`: RUST_LOG, else `info`).
type SetLogFilter = dyn Fn(Option<&str>) -> Result<(), String> + Send + Sync;

/// Changes the log filter of the running process (its subscriber is set up in `main.rs`).
#[derive(Clone)]
pub struct LogFilterHandle(Arc<SetLogFilter>);

impl LogFilterHandle {
    /// A handle that calls `set` with the new `--log-level` (`None`: RUST_LOG, else `info`).
    pub fn new(set: impl Fn(Option<&str>) -> Result<(), String> + Send + Sync + 'static) -> Self {
        Self(Arc::new(set))
    }

    /// A handle that changes nothing (a test, an embedding without a reloadable filter).
    pub fn fixed() -> Self {
        Self::new(|_| Ok(()))
    }

    fn set(&self, level: Option<&str>) -> Result<(), String> {
        (self.0)(level)
    }
}

impl fmt::Debug for LogFilterHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LogFilterHandle")
    }
}

/// The log filter for `--log-level` (`None`: RUST_LOG, else `info`). A level that does not
/// parse falls back like `None`; [`ServeArgs::resolve`] has refused it already.
pub fn log_filter(level: Option<&str>) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    level
        .and_then(|level| EnvFilter::builder().parse(level).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"))
}

/// What `serve` needs to read its settings again.
#[derive(Debug)]
pub struct ReloadSource {
    /// The command line `serve` was started with (the program name first).
    pub argv: Vec<OsString>,
    /// The process's log filter.
    pub log_filter: LogFilterHandle,
}

/// Applies reloads to a running hub.
#[derive(Debug)]
pub struct Reloader {
    source: ReloadSource,
    hub: Hub,
    live: Arc<LiveHttpConfig>,
    systemd: Notifier,
    /// The settings in effect: those of start-up, with the reloadable ones of each reload.
    in_effect: ServeArgs,
}

impl Reloader {
    /// A reloader for the hub started with `in_effect`.
    pub fn new(
        source: ReloadSource,
        in_effect: ServeArgs,
        hub: Hub,
        live: Arc<LiveHttpConfig>,
        systemd: Notifier,
    ) -> Self {
        Self {
            source,
            hub,
            live,
            systemd,
            in_effect,
        }
    }

    /// Reads the settings again and applies what can change; a bad configuration is logged
    /// and refused, and the one in effect stays.
    pub async fn reload(&mut self) {
        info!("reload signal received: reading the configuration again");
        self.systemd.reloading();
        if let Err(error) = self.apply().await {
            error!(
                error = %format!("{error:#}"),
                "reload refused: the configuration in effect is kept"
            );
        }
        self.systemd.ready();
    }

    async fn apply(&mut self) -> anyhow::Result<()> {
        let cli = Cli::parse_with_config_file(self.source.argv.iter().cloned())
            .context("reading the configuration")?;
        let Command::Serve(new) = cli.command else {
            bail!("the command line is no longer `ssehub serve`");
        };
        let next = reloadable_of(&self.in_effect, &new);
        let settings = next.resolve().context("invalid setting")?;
        let (changed, needs_restart) = changed_settings(&self.in_effect, &new)?;
        for setting in &needs_restart {
            warn!(
                setting = %setting,
                "setting changed, but it needs a restart: not applied"
            );
        }
        if changed.is_empty() {
            info!("configuration reloaded: no reloadable setting changed");
            return Ok(());
        }
        if changed.iter().any(|s| s == "log_level") {
            self.source
                .log_filter
                .set(settings.log_level.as_deref())
                .map_err(anyhow::Error::msg)
                .context("changing the log level")?;
        }
        self.hub.set_max_subscribers(settings.hub.max_subscribers);
        let http_changed = changed
            .iter()
            .any(|s| s != "log_level" && s != "max_subscribers");
        let report = if http_changed {
            self.live.replace(&self.hub, settings.http).await
        } else {
            crate::http::RecheckReport::default()
        };
        self.in_effect = next;
        info!(
            changed = %changed.join(","),
            streams_checked = report.checked,
            streams_ended = report.ended,
            "configuration reloaded"
        );
        Ok(())
    }
}

/// The settings (by their file names) that differ between `old` and `new`: those a reload
/// applies, and those that need a restart.
fn changed_settings(
    old: &ServeArgs,
    new: &ServeArgs,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let as_map = |args: &ServeArgs| -> anyhow::Result<Map<String, Value>> {
        match serde_json::to_value(args).context("comparing the settings")? {
            Value::Object(map) => Ok(map),
            _ => bail!("comparing the settings: not a table (a bug)"),
        }
    };
    let (old, new) = (as_map(old)?, as_map(new)?);
    let mut changed = Vec::new();
    let mut needs_restart = Vec::new();
    let keys = old
        .keys()
        .chain(new.keys().filter(|k| !old.contains_key(*k)));
    for key in keys {
        if old.get(key) != new.get(key) {
            if RELOADABLE.contains(&key.as_str()) {
                changed.push(key.clone());
            } else {
                needs_restart.push(key.clone());
            }
        }
    }
    Ok((changed, needs_restart))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn args(flags: &[&str]) -> ServeArgs {
        Wrapper::try_parse_from(std::iter::once("ssehub").chain(flags.iter().copied()))
            .expect("parses")
            .serve
    }

    #[test]
    fn a_reload_takes_the_reloadable_settings_and_keeps_the_others() {
        let old = args(&[
            "--jwt-key",
            "old",
            "--heartbeat",
            "15s",
            "--max-subscribers",
            "5",
        ]);
        let new = args(&[
            "--jwt-key",
            "new",
            "--heartbeat",
            "1s",
            "--max-subscribers",
            "7",
            "--cors-origins",
            "https://a.example",
            "--addr",
            "127.0.0.1:9999",
        ]);
        let (changed, needs_restart) = changed_settings(&old, &new).expect("compares");
        let (mut changed, mut needs_restart) = (changed, needs_restart);
        changed.sort();
        assert_eq!(changed, ["cors_origins", "jwt_key", "max_subscribers"]);
        needs_restart.sort();
        assert_eq!(needs_restart, ["addr", "heartbeat"]);
        let next = reloadable_of(&old, &new);
        assert_eq!(next.jwt_key.as_deref(), Some("new"));
        assert_eq!(next.max_subscribers, 7);
        assert_eq!(next.heartbeat, old.heartbeat);
        assert_eq!(next.addr, old.addr);
        // Every name in RELOADABLE is copied by `reloadable_of`, and nothing else is.
        let (after, _) = changed_settings(&next, &new).expect("compares");
        assert!(after.is_empty(), "{after:?}");
        let (_, restart_after) = changed_settings(&old, &next).expect("compares");
        assert!(restart_after.is_empty(), "{restart_after:?}");
    }

    #[test]
    fn every_reloadable_name_is_a_setting() {
        let map = serde_json::to_value(args(&["--log-level", "debug", "--jwt-key", "k"]))
            .expect("serializes");
        for name in RELOADABLE {
            // `issuer` is skipped when empty, like in the file.
            assert!(
                *name == "issuer" || map.get(*name).is_some(),
                "{name} is not a setting"
            );
        }
    }
}
