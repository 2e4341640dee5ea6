//! The command line: `ssehub serve | publish | subscribe | token`.
//!
//! Each subcommand lives in its own file and is a thin layer over the library; `anyhow` is used
//! here (and in `main.rs`) only, for errors with context.

pub mod bench;
pub mod publish;
pub mod serve;
pub mod subscribe;
pub mod token;

use clap::{Parser, Subcommand, ValueEnum};

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

/// Runs the parsed command.
///
/// # Errors
/// Whatever the subcommand reports, with context.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Publish(args) => publish::run(args).await,
        Command::Subscribe(args) => subscribe::run(args).await,
        Command::Token(args) => token::run(args),
        Command::Bench(args) => bench::run(args).await,
    }
}

/// The default hub URL of the client subcommands.
pub(crate) const DEFAULT_HUB_URL: &str = "http://127.0.0.1:3000/.well-known/mercure";
