//! The `ssehub` binary: parse the command line, set up logging, run the command.

use std::io::IsTerminal;

use ssehub::cli::reload::{log_filter, LogFilterHandle};
use ssehub::cli::{self, Cli, Command, LogFormat, ParseError};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // clap reads the flags and the environment; for `serve`, the config file is merged under
    // them (`config::merge_config_file`).
    let cli = match Cli::parse_with_config_file(std::env::args_os()) {
        Ok(cli) => cli,
        Err(ParseError::Flags { error, note }) => {
            // --help and --version end here too, on stdout with status 0.
            let _ = error.print();
            if let Some(note) = note {
                eprintln!("note: {note}");
            }
            return std::process::ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
        Err(error) => {
            eprintln!("error: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // `serve --log-level` beats RUST_LOG; a SIGHUP may change it (`cli::reload`).
    let level = match &cli.command {
        Command::Serve(args) => args.log_level.clone(),
        _ => None,
    };
    let filter = log_filter(level.as_deref());
    // A log line that cannot be written (stderr closed: the log collector went away) is dropped.
    // tracing-subscriber would otherwise report it with `eprintln!`, which panics on a closed
    // stderr, inside whatever task was logging: a stream handler, or the shutdown signal.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    let filter_handle = match cli.log_format {
        LogFormat::Json => {
            let logs = logs.json().with_filter_reloading();
            let handle = logs.reload_handle();
            logs.init();
            LogFilterHandle::new(move |level| {
                handle.reload(log_filter(level)).map_err(|e| e.to_string())
            })
        }
        LogFormat::Text => {
            let logs = logs
                .with_ansi(std::io::stderr().is_terminal())
                .with_filter_reloading();
            let handle = logs.reload_handle();
            logs.init();
            LogFilterHandle::new(move |level| {
                handle.reload(log_filter(level)).map_err(|e| e.to_string())
            })
        }
    };
    // Every stream is a socket: take as many open files as the hard limit allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(error) => tracing::warn!(%error, "could not raise the open-file limit"),
    }
    match cli::run(cli, filter_handle).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
