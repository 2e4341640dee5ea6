//! The command line: `ssehub serve | publish | subscribe | token`.
//!
//! Each subcommand lives in its own file and is a thin layer over the library; `anyhow` is used
//! here (and in `main.rs`) only, for errors with context.

pub mod bench;
pub mod client;
pub mod publish;
pub mod reload;
pub mod serve;
pub mod subscribe;
pub mod systemd;
pub mod token;

use std::ffi::OsString;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::config::{self, ConfigError};

/// A Server-Sent Events hub speaking the Mercure protocol.
#[derive(Debug, Parser)]
#[command(
    name = "ssehub",
    version,
    about,
    propagate_version = true,
    args_override_self = true
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,

    /// Log format.
    #[arg(long, env = "SSEHUB_LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: LogFormat,

    /// The command line this was parsed from (the program name first), which `serve` reads
    /// again on SIGHUP ([`reload`]).
    #[arg(skip)]
    pub argv: Vec<OsString>,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the hub.
    Serve(Box<crate::config::ServeArgs>),
    /// Publish one update to a hub.
    Publish(publish::PublishArgs),
    /// Subscribe to a hub and print updates as they arrive (reconnecting like a browser).
    Subscribe(subscribe::SubscribeArgs),
    /// Sign a JWT for publishers or subscribers.
    Token(token::TokenArgs),
    /// Load-test a hub on this machine: N subscribers, M timestamped events; reports loss,
    /// throughput, latency percentiles and the server's memory and CPU.
    Bench(bench::BenchArgs),
}

/// Why the command line could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// clap's own error (or `--help` and `--version`, which clap prints and exits on).
    #[error("{error}{}", note.as_deref().map(|n| format!("\nnote: {n}")).unwrap_or_default())]
    Flags {
        /// What clap reports, naming the flag.
        error: clap::Error,
        /// For a bad value that came from an `SSEHUB_*` variable rather than a flag: which one.
        note: Option<String>,
    },
    /// The config file of `ssehub serve`, or a bad value in it.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl Cli {
    /// Parses `args` (the program name first), and for `serve` merges the config file
    /// (`--config` or `SSEHUB_CONFIG`) under the environment and the flags. No other
    /// subcommand reads the file.
    ///
    /// # Errors
    /// [`ParseError::Flags`] for what clap refuses, [`ParseError::Config`] for the file.
    pub fn parse_with_config_file<I, T>(args: I) -> Result<Self, ParseError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let command = Self::command();
        let flags_error = |error: clap::Error| ParseError::Flags {
            note: value_from_environment(&error, &args),
            error,
        };
        let matches = command
            .clone()
            .try_get_matches_from(&args)
            .map_err(flags_error)?;
        let mut cli = Self::from_arg_matches(&matches).map_err(flags_error)?;
        if let (Command::Serve(serve), Some(("serve", serve_matches))) =
            (&mut cli.command, matches.subcommand())
        {
            let merged = config::merge_config_file((**serve).clone(), serve_matches)?;
            **serve = merged;
        }
        cli.argv = args;
        Ok(cli)
    }
}

/// For a bad value that clap read from an `SSEHUB_*` variable (the flag itself was not given):
/// a note naming the variable, since clap's message names only the flag.
fn value_from_environment(error: &clap::Error, args: &[OsString]) -> Option<String> {
    if !matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = arg.strip_prefix("--")?.split([' ', '=']).next()?;
    let command = Cli::command();
    let found = command
        .get_subcommands()
        .chain(std::iter::once(&command))
        .flat_map(|c| c.get_arguments())
        .find(|a| a.get_long() == Some(long))?;
    let env = found.get_env()?;
    let names: Vec<String> = std::iter::once(long.to_owned())
        .chain(
            found
                .get_all_aliases()
                .unwrap_or_default()
                .into_iter()
                .map(str::to_owned),
        )
        .collect();
    let on_command_line = args.iter().any(|a| {
        let a = a.to_string_lossy();
        names.iter().any(|name| {
            a.strip_prefix("--")
                .is_some_and(|rest| rest == name || rest.starts_with(&format!("{name}=")))
        })
    });
    (!on_command_line && std::env::var_os(env).is_some()).then(|| {
        format!(
            "the value came from the environment variable {}",
            env.to_string_lossy()
        )
    })
}

/// Runs the parsed command; `serve` changes the process's log filter through `log_filter` on
/// a reload.
///
/// # Errors
/// Whatever the subcommand reports, with context.
pub async fn run(cli: Cli, log_filter: reload::LogFilterHandle) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let source = reload::ReloadSource {
                argv: cli.argv,
                log_filter,
            };
            serve::run(*args, source).await
        }
        Command::Publish(args) => publish::run(args).await,
        Command::Subscribe(args) => subscribe::run(args).await,
        Command::Token(args) => token::run(args),
        Command::Bench(args) => bench::run(args).await,
    }
}

/// The default hub URL of the client subcommands.
pub(crate) const DEFAULT_HUB_URL: &str = "http://127.0.0.1:3000/.well-known/mercure";
