//! `ssehub subscribe`: prints updates as they arrive and reconnects like a browser's
//! `EventSource` (WHATWG HTML §9.2.3): after the stream ends or fails it waits the
//! reconnection time (the server's `retry`, else 3 s) and sends `Last-Event-ID`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use futures_util::StreamExt;
use tracing::warn;

use super::client::{certificate_rejected, http_client, trust_hint};
use super::DEFAULT_HUB_URL;
use crate::wire::{ParsedEvent, Parser};

/// Arguments of `ssehub subscribe`.
#[derive(Debug, Clone, Args)]
pub struct SubscribeArgs {
    /// The hub URL.
    #[arg(long, env = "SSEHUB_URL", default_value = DEFAULT_HUB_URL)]
    pub url: String,
    /// Topic selector (repeatable).
    #[arg(long, required = true)]
    pub topic: Vec<String>,
    /// Resume after this event id (`earliest` for all the history).
    #[arg(long)]
    pub last_event_id: Option<String>,
    /// Subscriber JWT (for private updates, or when anonymous subscribers are off).
    #[arg(long, env = "SSEHUB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Exit after this many events.
    #[arg(long)]
    pub count: Option<u64>,
    /// Output format.
    #[arg(long, default_value = "text")]
    pub format: OutputFormat,
    /// Do not reconnect when the stream ends (nor retry a connection that failed).
    #[arg(long)]
    pub no_reconnect: bool,
    /// PEM certificates of the CA to trust for an `https://` hub, instead of the system's roots.
    #[arg(long, value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
}

/// How events are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// `id:`, `event:` and `data:` lines, then a blank line.
    Text,
    /// One JSON object per line.
    Json,
}

const DEFAULT_RECONNECT: Duration = Duration::from_secs(3);

/// Subscribes until `--count` events arrived (or forever).
///
/// # Errors
/// A refusal from the hub (4xx), or a stream that cannot be parsed.
pub async fn run(args: SubscribeArgs) -> anyhow::Result<()> {
    let client = http_client(args.ca_cert.as_deref())?;
    let mut last_event_id = args.last_event_id.clone();
    let mut reconnect_after = DEFAULT_RECONNECT;
    let mut received = 0u64;
    loop {
        let mut request = client
            .get(&args.url)
            .header("accept", "text/event-stream")
            .query(&args.topic.iter().map(|t| ("topic", t)).collect::<Vec<_>>());
        if let Some(id) = &last_event_id {
            request = request.header("last-event-id", id);
        }
        if let Some(token) = &args.token {
            request = request.bearer_auth(token);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => {
                let mut parser = Parser::new();
                let mut body = response.bytes_stream();
                while let Some(chunk) = body.next().await {
                    let Ok(chunk) = chunk else { break };
                    for event in parser.push(&chunk).context("reading the event stream")? {
                        print_event(&event, args.format);
                        received += 1;
                        if args.count.is_some_and(|count| received >= count) {
                            return Ok(());
                        }
                    }
                    if let Some(ms) = parser.reconnection_time_ms() {
                        reconnect_after = Duration::from_millis(ms);
                    }
                }
                if !parser.last_event_id().is_empty() {
                    last_event_id = Some(parser.last_event_id().to_owned());
                }
            }
            Ok(response) => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                // EventSource gives up on any status but 200; 503 is worth another try.
                if status != reqwest::StatusCode::SERVICE_UNAVAILABLE {
                    bail!("the hub answered {status}: {}", body.trim());
                }
                warn!(%status, "hub unavailable");
            }
            Err(error) => {
                let hint = trust_hint(&args.url, args.ca_cert.as_deref());
                // Without reconnecting, a connection that never opened is the command's failure;
                // so is a certificate we do not trust, which no retry would change.
                if args.no_reconnect || certificate_rejected(&error) {
                    return Err(anyhow::Error::new(error))
                        .with_context(|| format!("connecting to {}{hint}", args.url));
                }
                warn!(error = %format!("{:#}", anyhow::Error::new(error)), url = %args.url, hint, "connection failed");
            }
        }
        if args.no_reconnect {
            return Ok(());
        }
        tokio::time::sleep(reconnect_after).await;
    }
}

fn print_event(event: &ParsedEvent, format: OutputFormat) {
    match format {
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({"id": event.id, "type": event.event_type, "data": event.data})
        ),
        OutputFormat::Text => {
            println!("id: {}", event.id);
            if event.event_type != "message" {
                println!("event: {}", event.event_type);
            }
            for line in event.data.split('\n') {
                println!("data: {line}");
            }
            println!();
        }
    }
}
