//! `ssehub token`: signs a Mercure JWT with the given key.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;

use crate::auth::{Claims, JwtAlgorithm, JwtSigner, MercureClaim};
use crate::config::parse_duration;

/// Arguments of `ssehub token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// Signing key: the HMAC secret, or a PEM private key (text or file path) for RS*/ES*.
    #[arg(long, env = "SSEHUB_JWT_KEY", hide_env_values = true)]
    pub jwt_key: String,
    /// Signature algorithm.
    #[arg(long, env = "SSEHUB_JWT_ALGORITHM", default_value = "HS256")]
    pub jwt_algorithm: JwtAlgorithm,
    /// Topic selectors the holder may publish to (repeatable).
    #[arg(long)]
    pub publish: Vec<String>,
    /// Topic selectors whose private updates the holder may receive (repeatable).
    #[arg(long)]
    pub subscribe: Vec<String>,
    /// Lifetime of the token (e.g. 1h); omitted means no expiry.
    #[arg(long, value_parser = parse_duration)]
    pub exp: Option<Duration>,
    /// Audiences (`aud`; repeatable), for a hub started with `--jwt-audience`.
    #[arg(long)]
    pub aud: Vec<String>,
}

/// Prints the token.
///
/// # Errors
/// A key that cannot sign.
pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    let signer = JwtSigner::new(args.jwt_algorithm, &args.jwt_key).context("--jwt-key")?;
    let exp = args.exp.map(|lifetime| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        (now + lifetime).as_secs()
    });
    let claims = Claims {
        exp,
        mercure: Some(MercureClaim {
            publish: (!args.publish.is_empty()).then_some(args.publish),
            subscribe: (!args.subscribe.is_empty()).then_some(args.subscribe),
            payload: None,
        }),
    };
    let token = if args.aud.is_empty() {
        signer.sign(&claims)
    } else {
        let mut json = serde_json::to_value(&claims).context("claims")?;
        if let Some(object) = json.as_object_mut() {
            object.insert("aud".into(), args.aud.into());
        }
        signer.sign_json(&json)
    };
    println!("{}", token.context("signing")?);
    Ok(())
}
