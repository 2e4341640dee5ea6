//! `ssehub publish`: sends one update to a hub with a form `POST`, prints its id.
//!
//! Over `http://` or `https://` ([`super::client`]: the system's roots, or `--ca-cert`).

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use super::client::{http_client, trust_hint};
use super::DEFAULT_HUB_URL;

/// Arguments of `ssehub publish`.
#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    /// The hub URL.
    #[arg(long, env = "SSEHUB_URL", default_value = DEFAULT_HUB_URL)]
    pub url: String,
    /// Topic (repeatable; the first is canonical).
    #[arg(long, required = true)]
    pub topic: Vec<String>,
    /// The payload.
    #[arg(long, default_value = "")]
    pub data: String,
    /// Send only to subscribers authorized for one of the topics.
    #[arg(long)]
    pub private: bool,
    /// Event id (the hub generates one when omitted).
    #[arg(long)]
    pub id: Option<String>,
    /// Event type (the SSE `event` field).
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// Reconnection delay to tell clients, in milliseconds.
    #[arg(long)]
    pub retry: Option<u64>,
    /// Publisher JWT.
    #[arg(long, env = "SSEHUB_TOKEN", hide_env_values = true)]
    pub token: String,
    /// PEM certificates of the CA to trust for an `https://` hub, instead of the system's roots.
    #[arg(long, value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
}

/// Publishes and prints the event id.
///
/// # Errors
/// A hub that cannot be reached or refuses the update (its message is shown).
pub async fn run(args: PublishArgs) -> anyhow::Result<()> {
    let mut form: Vec<(&str, String)> = args.topic.iter().map(|t| ("topic", t.clone())).collect();
    form.push(("data", args.data));
    if args.private {
        form.push(("private", "on".into()));
    }
    if let Some(id) = args.id {
        form.push(("id", id));
    }
    if let Some(event_type) = args.event_type {
        form.push(("type", event_type));
    }
    if let Some(retry) = args.retry {
        form.push(("retry", retry.to_string()));
    }
    let response = http_client(args.ca_cert.as_deref())?
        .post(&args.url)
        .bearer_auth(&args.token)
        .form(&form)
        .send()
        .await
        .with_context(|| {
            format!(
                "posting to {}{}",
                args.url,
                trust_hint(&args.url, args.ca_cert.as_deref())
            )
        })?;
    let status = response.status();
    let body = response.text().await.context("reading the response")?;
    if !status.is_success() {
        bail!("the hub answered {status}: {}", body.trim());
    }
    println!("{}", body.trim());
    Ok(())
}
