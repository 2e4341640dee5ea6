//! The config file of `ssehub serve`, merged with figment under the environment and the flags:
//! defaults < file < `SSEHUB_*` variables < flags.
//!
//! clap parses the flags and the environment as usual (so `--help` lists both, and a bad value
//! there is reported by clap, naming the flag). [`merge_config_file`] then asks clap where each
//! setting came from ([`ArgMatches::value_source`]) and stacks four layers: the defaults, the
//! TOML file, the settings clap read from the environment, those it read from the command line.
//! The argument list is never rewritten, and only `serve` reads the file, so `ssehub publish
//! --topic serve` with `SSEHUB_CONFIG` set is just a publish.
//!
//! A bad value in the file is reported with the file's path and the setting's name.

use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::args::ServeArgs;
use super::ConfigError;

/// The settings of `args` with the config file (`--config` or `SSEHUB_CONFIG`) merged under the
/// values clap read from the environment and the command line. Without a file, `args` as it is.
///
/// `matches` are the matches `args` was parsed from (the `serve` subcommand's).
///
/// # Errors
/// An unreadable file, a TOML syntax error, an unknown setting, or a bad value in the file, each
/// naming the file (and the setting).
pub fn merge_config_file(args: ServeArgs, matches: &ArgMatches) -> Result<ServeArgs, ConfigError> {
    let Some(path) = args.config.clone() else {
        return Ok(args);
    };
    let file_error = |reason: String| ConfigError::File {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| file_error(e.to_string()))?;
    check_known_settings(&text).map_err(file_error)?;

    let all = Value::serialize(&args)
        .ok()
        .and_then(Value::into_dict)
        .ok_or_else(|| file_error("the settings could not be layered (a bug)".into()))?;
    // Settings of the file alone (no flag): clap knows nothing of them, and asking it would
    // panic; they count as defaults, which the file then overrides.
    let source = |key: &str| {
        (!FILE_ONLY.contains(&key))
            .then(|| matches.value_source(key))
            .flatten()
    };
    let layer = |name: &'static str, keep: fn(Option<ValueSource>) -> bool| Layer {
        metadata: Metadata::named(name),
        dict: all
            .iter()
            .filter(|(key, _)| keep(source(key)))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect(),
    };
    let merged: ServeArgs = Figment::new()
        .merge(layer("the defaults", |source| {
            !matches!(
                source,
                Some(ValueSource::EnvVariable | ValueSource::CommandLine)
            )
        }))
        .merge(file_layer(&path)?)
        .merge(layer("the environment", |source| {
            source == Some(ValueSource::EnvVariable)
        }))
        .merge(layer("the command line", |source| {
            source == Some(ValueSource::CommandLine)
        }))
        .extract()
        .map_err(|error| describe(&error, &path))?;
    Ok(ServeArgs {
        config: Some(path),
        ..merged
    })
}

/// Settings that only the file has (tables), with no flag or variable: `[[retention]]` rules and
/// draft-08's `[[issuer]]` tables.
const FILE_ONLY: &[&str] = &["retention", "issuer"];

/// The settings of the file, with Mercure's `write_timeout` read as `max_lifetime` (the same
/// setting); errors in its values name the file.
fn file_layer(path: &Path) -> Result<Layer, ConfigError> {
    let error = |reason: String| ConfigError::File {
        path: path.display().to_string(),
        reason,
    };
    let mut dict = Toml::file_exact(path)
        .data()
        .map_err(|e| error(e.kind.to_string()))?
        .remove(&Profile::Default)
        .unwrap_or_default();
    if let Some(value) = dict.remove("write_timeout") {
        if dict.contains_key("max_lifetime") {
            return Err(error(
                "`write_timeout` is Mercure's name of `max_lifetime`: give one of them".into(),
            ));
        }
        dict.insert("max_lifetime".into(), value);
    }
    Ok(Layer {
        metadata: Metadata::from("the config file", figment::Source::File(path.to_path_buf())),
        dict,
    })
}

/// Every key of the file names a setting of `ssehub serve` (`config` itself excepted).
fn check_known_settings(text: &str) -> Result<(), String> {
    let data = Toml::string(text)
        .data()
        .map_err(|error| error.kind.to_string())?;
    let command = ServeArgs::augment_args(clap::Command::new("serve"));
    for key in data.values().flat_map(|dict| dict.keys()) {
        let known = key != "config"
            && (key == "write_timeout"
                || FILE_ONLY.contains(&key.as_str())
                || command
                    .get_arguments()
                    .any(|arg| arg.get_id() == key.as_str()));
        if !known {
            return Err(format!(
                "unknown setting `{key}` (see `ssehub serve --help`)"
            ));
        }
    }
    Ok(())
}

/// The error of the first bad value, naming where it came from and its setting.
fn describe(error: &figment::Error, path: &Path) -> ConfigError {
    let origin = match error.metadata.as_ref() {
        Some(Metadata {
            source: Some(figment::Source::File(file)),
            ..
        }) => file.display().to_string(),
        Some(metadata) => metadata.name.to_string(),
        None => path.display().to_string(),
    };
    let key = error.path.join(".");
    ConfigError::File {
        path: origin,
        reason: if key.is_empty() {
            error.kind.to_string()
        } else if let Some(rule) = error
            .path
            .first()
            .filter(|k| FILE_ONLY.contains(&k.as_str()))
        {
            // `retention.1.max_age`: the second `[[retention]]` table (or `[[issuer]]`).
            let place = match error.path.get(1).and_then(|n| n.parse::<usize>().ok()) {
                Some(n) => format!("`[[{rule}]]` rule {} ", n + 1),
                None => format!("`{rule}` "),
            };
            format!("{place}(`{key}`): {}", error.kind)
        } else {
            format!("`{key}` (--{}): {}", key.replace('_', "-"), error.kind)
        },
    }
}

/// Settings taken from one source, under that source's name (for error messages).
struct Layer {
    metadata: Metadata,
    dict: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::{CommandFactory, FromArgMatches, Parser};

    use super::*;

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

    /// Parses `serve --config FILE FLAGS` with `command`, then merges the file.
    fn parse_command(
        command: clap::Command,
        toml: &str,
        flags: &[&str],
    ) -> Result<ServeArgs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("ssehub.toml");
        std::fs::write(&path, toml).map_err(|e| e.to_string())?;
        let mut args: Vec<std::ffi::OsString> = vec!["ssehub".into(), "serve".into()];
        args.push(format!("--config={}", path.display()).into());
        args.extend(flags.iter().map(Into::into));
        let matches = command
            .try_get_matches_from(args)
            .map_err(|e| e.to_string())?;
        let (_, serve) = matches.subcommand().ok_or("no serve")?;
        let parsed = ServeArgs::from_arg_matches(serve).map_err(|e| e.to_string())?;
        merge_config_file(parsed, serve).map_err(|e| e.to_string())
    }

    fn parse_with_file(toml: &str, flags: &[&str]) -> Result<ServeArgs, String> {
        parse_command(Cli::command(), toml, flags)
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
        assert_eq!(serve.max_lifetime, Duration::from_secs(3600), "a default");
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
        let serve = parse_with_file("jwt_audience = \"https://a.example,c\"\n", &[])
            .expect("a comma-separated string, as on the command line");
        assert_eq!(serve.jwt_audience, ["https://a.example", "c"]);
    }

    #[test]
    fn unknown_or_malformed_settings_name_the_file() {
        let error = parse_with_file("heartbeet = \"2s\"\n", &[]).expect_err("unknown");
        assert!(
            error.contains("unknown setting `heartbeet`") && error.contains("ssehub.toml"),
            "{error}"
        );
        let error = parse_with_file("heartbeat = [1, 2]\n", &[]).expect_err("bad shape");
        assert!(
            error.contains("heartbeat") && error.contains("ssehub.toml"),
            "{error}"
        );
        let error = parse_with_file("heartbeat = \"soon\"\n", &[]).expect_err("bad value");
        assert!(
            error.contains("--heartbeat") && error.contains("ssehub.toml"),
            "{error}"
        );
        let error = parse_with_file("not toml at all [", &[]).expect_err("syntax");
        assert!(error.contains("ssehub.toml"), "{error}");
        let error = parse_with_file("config = \"other.toml\"\n", &[]).expect_err("no nesting");
        assert!(error.contains("unknown setting `config`"), "{error}");
    }

    #[test]
    fn draft08_issuers_come_from_the_file() {
        let toml = r#"
jwt_key = "k"
resource_identifier = "https://localhost/.well-known/mercure"

[[issuer]]
iss = "https://localhost"
key = "!ChangeThisMercureHubJWTSecretKey!"

[[issuer]]
iss = "https://auth.example"
jwks_url = "https://auth.example/jwks"
algorithms = ["ES256", "EdDSA"]
roles = ["subscriber"]
authorization_server = true
"#;
        let serve = parse_with_file(toml, &["--jwks-min-refetch", "10s"]).expect("parses");
        assert_eq!(serve.issuer.len(), 2);
        assert_eq!(serve.issuer[1].roles, [crate::config::RoleName::Subscriber]);
        assert_eq!(serve.jwks_min_refetch, Duration::from_secs(10));
        assert_eq!(serve.jwks_refresh, Duration::from_secs(300), "a default");
        let settings = serve.resolve().expect("valid");
        let draft08 = settings.http.draft08.expect("draft-08 configured");
        assert_eq!(
            draft08.resource_identifier(),
            "https://localhost/.well-known/mercure"
        );
        assert_eq!(
            draft08.metadata(None)["authorization_servers"],
            serde_json::json!(["https://auth.example"])
        );
        let debug = format!("{:?}", serve_debug(toml));
        assert!(
            !debug.contains("ChangeThis"),
            "secrets are not printed: {debug}"
        );
        // The flag names the resource identifier over the file's.
        let serve = parse_with_file(toml, &["--resource-identifier", "https://hub.example/x"])
            .expect("parses");
        let draft08 = serve.resolve().expect("valid").http.draft08.expect("set");
        assert_eq!(draft08.resource_identifier(), "https://hub.example/x");
        // Without issuers, nothing draft-08 is set up.
        let serve = parse_with_file("jwt_key = \"k\"\n", &[]).expect("parses");
        assert!(serve.resolve().expect("valid").http.draft08.is_none());
    }

    fn serve_debug(toml: &str) -> Vec<crate::config::IssuerSettings> {
        parse_with_file(toml, &[])
            .map(|s| s.issuer)
            .unwrap_or_default()
    }

    #[test]
    fn bad_draft08_issuers_are_refused_naming_the_issuer() {
        let with = |tables: &str, flags: &[&str]| {
            parse_with_file(&format!("jwt_key = \"k\"\n{tables}"), flags)
                .and_then(|serve| serve.resolve().map(|_| ()).map_err(|e| e.to_string()))
                .expect_err(tables)
        };
        let iss = "[[issuer]]\niss = \"https://a\"\n";
        let id = "resource_identifier = \"https://hub/.well-known/mercure\"\n";
        for (toml, expected) in [
            (format!("{iss}key = \"s\"\n"), "resource_identifier"),
            (format!("{id}{iss}key = \"s\"\njwks_url = \"https://a/jwks\"\n"), "exactly one"),
            (format!("{id}{iss}"), "exactly one"),
            (format!("{id}{iss}key = \"-----BEGIN PUBLIC KEY-----\\nx\"\n"), "not an HMAC secret"),
            (format!("{id}{iss}key = \"s\"\nalgorithms = [\"none\"]\n"), "unknown JWT algorithm"),
            (format!("{id}{iss}jwks_url = \"https://a/jwks\"\nalgorithms = [\"HS256\"]\n"), "shared secret"),
            (format!("{id}{iss}jwks_url = \"file:///etc/jwks\"\n"), "not an http"),
            (format!("{id}{iss}key = \"s\"\nkee = 1\n"), "kee"),
            ("resource_identifier = \"not a url\"\n[[issuer]]\niss = \"https://a\"\nkey = \"s\"\n".to_owned(), "not an absolute"),
        ] {
            let error = with(&toml, &[]);
            assert!(error.contains(expected), "{toml}: {error}");
        }
        let error = with("", &["--resource-identifier", "https://hub/x"]);
        assert!(error.contains("[[issuer]]"), "{error}");
    }

    #[test]
    fn lingering_settings_are_read_from_the_file() {
        let serve = parse_with_file(
            "lingering_time = \"12s\"\nlingering_timeout = \"1s\"\n",
            &["--lingering-timeout", "2s"],
        )
        .expect("parses");
        assert_eq!(serve.lingering_time, Duration::from_secs(12));
        assert_eq!(
            serve.lingering_timeout,
            Duration::from_secs(2),
            "the flag wins"
        );
    }

    const TWO_RULES: &str = r#"
jwt_key = "k"

[[retention]]
topics = "https://example.com/rooms/{id}"
max_events = 1000
max_age = "1d"

[[retention]]
topics = "https://example.com/ticker/{symbol}"
max_events = 10
max_age = "1m"
"#;

    #[test]
    fn retention_rules_are_read_from_the_file_in_order() {
        let serve = parse_with_file(TWO_RULES, &[]).expect("parses");
        assert_eq!(serve.retention.len(), 2);
        assert_eq!(serve.retention[0].topics, "https://example.com/rooms/{id}");
        assert_eq!(serve.retention[0].max_events, Some(1000));
        assert_eq!(
            serve.retention[0].max_age,
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(serve.retention[1].max_age, Some(Duration::from_secs(60)));
        let settings = serve.resolve().expect("valid");
        match settings.history {
            crate::history::HistorySettings::Durable { rules, .. } => {
                let rule = rules
                    .rule_for("https://example.com/ticker/ACME")
                    .map(|r| r.0);
                assert_eq!(rule, Some(1));
            }
            other => panic!("expected the durable history, got {other:?}"),
        }
        let serve = parse_with_file("jwt_key = \"k\"\n", &[]).expect("parses");
        assert!(serve.retention.is_empty(), "no rules by default");
    }

    #[test]
    fn bad_retention_rules_name_the_rule() {
        let bad_template = TWO_RULES.replace("ticker/{symbol}", "ticker/{symbol");
        let error = parse_with_file(&bad_template, &[])
            .expect("parses")
            .resolve()
            .expect_err("a broken template")
            .to_string();
        assert!(
            error.contains("[[retention]]")
                && error.contains("rule 2")
                && error.contains("ticker/{symbol"),
            "{error}"
        );
        let typo = TWO_RULES.replace("max_events = 10\n", "max_event = 10\n");
        let error = parse_with_file(&typo, &[]).expect_err("an unknown key");
        assert!(
            error.contains("rule 2") && error.contains("max_event"),
            "{error}"
        );
        let bad_age = TWO_RULES.replace("\"1m\"", "\"soon\"");
        let error = parse_with_file(&bad_age, &[]).expect_err("a bad duration");
        assert!(
            error.contains("rule 2") && error.contains("max_age"),
            "{error}"
        );
        let error = parse_with_file(TWO_RULES, &["--history", "memory"])
            .expect("parses")
            .resolve()
            .expect_err("memory has no rules")
            .to_string();
        assert!(
            error.contains("[[retention]]") && error.contains("--history memory"),
            "{error}"
        );
    }

    #[test]
    fn mercure_write_timeout_in_the_file_is_the_max_lifetime() {
        let serve = parse_with_file("write_timeout = \"90s\"\n", &[]).expect("parses");
        assert_eq!(serve.max_lifetime, Duration::from_secs(90));
        assert_eq!(serve.dispatch_timeout, Duration::from_secs(30), "untouched");
    }

    /// defaults < file < environment < flags, with clap's real value sources. The variables
    /// are renamed for this test alone, so no other test (or the caller's shell) sees them.
    #[test]
    fn the_environment_beats_the_file_and_flags_beat_both() {
        // clap reads a variable when the argument is built: set them first.
        std::env::set_var("SSEHUB_UNIT_TEST_PRECEDENCE_HEARTBEAT", "3s");
        std::env::set_var("SSEHUB_UNIT_TEST_PRECEDENCE_HISTORY_SIZE", "30");
        let command = Cli::command().mut_subcommand("serve", |serve| {
            serve
                .mut_arg("heartbeat", |a| {
                    a.env("SSEHUB_UNIT_TEST_PRECEDENCE_HEARTBEAT")
                })
                .mut_arg("history_size", |a| {
                    a.env("SSEHUB_UNIT_TEST_PRECEDENCE_HISTORY_SIZE")
                })
                .mut_arg("queue_capacity", |a| {
                    a.env("SSEHUB_UNIT_TEST_PRECEDENCE_QUEUE_CAPACITY")
                })
        });
        let serve = parse_command(
            command,
            "heartbeat = \"2s\"\nhistory_size = 20\nmax_topics = 5\nqueue_capacity = 6\n",
            &["--history-size", "40"],
        )
        .expect("parses");
        assert_eq!(serve.max_topics, 5, "the file beats the default");
        assert_eq!(serve.queue_capacity, 6, "an unset variable leaves the file");
        assert_eq!(serve.heartbeat, Duration::from_secs(3), "env beats file");
        assert_eq!(serve.history_size, 40, "the flag beats env and file");
        assert_eq!(serve.max_subscribers, 100_000, "untouched: the default");
    }
}
