//! `ssehub token`: signs a Mercure JWT with the given key: a draft-07 token (the `mercure`
//! claim), or with `--iss` a draft-08 access token (`typ: at+jwt`, RFC 9068, with RFC 9396
//! `authorization_details`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;

use crate::auth::details::MERCURE_DETAIL_TYPE;
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
    /// Topic selectors the holder may publish to (repeatable); with `--iss`, exact matchers.
    #[arg(long)]
    pub publish: Vec<String>,
    /// Topic selectors whose private updates the holder may receive (repeatable); with
    /// `--iss`, exact matchers.
    #[arg(long)]
    pub subscribe: Vec<String>,
    /// With `--iss`: URL patterns the holder may publish to (repeatable).
    #[arg(long, requires = "iss")]
    pub publish_urlpattern: Vec<String>,
    /// With `--iss`: URL patterns whose private updates the holder may receive (repeatable).
    #[arg(long, requires = "iss")]
    pub subscribe_urlpattern: Vec<String>,
    /// Lifetime of the token (e.g. 1h); omitted means no expiry (with `--iss`: 1h, since
    /// draft-08 tokens must expire).
    #[arg(long, value_parser = parse_duration)]
    pub exp: Option<Duration>,
    /// Audiences (`aud`; repeatable), for a hub started with `--jwt-audience`; with `--iss`,
    /// the hub's resource identifier (`--resource-identifier`).
    #[arg(long)]
    pub aud: Vec<String>,
    /// Mint a draft-08 access token of this issuer (an `[[issuer]]` of the hub, whose key is
    /// `--jwt-key`): `typ: at+jwt`, `iss`, `aud` (required), `exp`, `iat`, `jti`, `sub`, and
    /// the grants as `authorization_details` instead of the `mercure` claim.
    #[arg(long, requires = "aud")]
    pub iss: Option<String>,
    /// With `--iss`: the `sub` claim (the subject the token is for).
    #[arg(long, requires = "iss", default_value = "ssehub-token")]
    pub sub: String,
}

/// Prints the token.
///
/// # Errors
/// A key that cannot sign.
pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    let signer = JwtSigner::new(args.jwt_algorithm, &args.jwt_key).context("--jwt-key")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    if let Some(iss) = &args.iss {
        let claims = access_token_claims(&args, iss, now);
        let token = signer.sign_access_token(&claims).context("signing")?;
        println!("{token}");
        return Ok(());
    }
    let exp = args.exp.map(|lifetime| (now + lifetime).as_secs());
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

/// The claims of a draft-08 access token (draft-08 §Token Validation, §Authorization Details).
fn access_token_claims(args: &TokenArgs, iss: &str, now: Duration) -> serde_json::Value {
    let matchers = |exact: &[String], patterns: &[String]| -> Vec<serde_json::Value> {
        exact
            .iter()
            .map(|m| serde_json::json!({ "match": m }))
            .chain(
                patterns
                    .iter()
                    .map(|m| serde_json::json!({ "match": m, "match_type": "urlpattern" })),
            )
            .collect()
    };
    let mut details = Vec::new();
    for (action, topics) in [
        ("publish", matchers(&args.publish, &args.publish_urlpattern)),
        (
            "subscribe",
            matchers(&args.subscribe, &args.subscribe_urlpattern),
        ),
    ] {
        if !topics.is_empty() {
            details.push(serde_json::json!({
                "type": MERCURE_DETAIL_TYPE, "actions": [action], "topics": topics,
            }));
        }
    }
    let lifetime = args.exp.unwrap_or(Duration::from_secs(3600));
    let aud: serde_json::Value = match args.aud.as_slice() {
        [one] => one.clone().into(),
        many => many.to_vec().into(),
    };
    serde_json::json!({
        "iss": iss,
        "aud": aud,
        "sub": args.sub,
        "iat": now.as_secs(),
        "exp": (now + lifetime).as_secs(),
        "jti": uuid::Uuid::now_v7().to_string(),
        "authorization_details": details,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        token: TokenArgs,
    }

    #[test]
    fn an_access_token_carries_its_grants_as_authorization_details() {
        let cli = Cli::parse_from([
            "token",
            "--jwt-key",
            "k",
            "--iss",
            "https://localhost",
            "--aud",
            "https://localhost/.well-known/mercure",
            "--subscribe",
            "https://example.com/a",
            "--subscribe-urlpattern",
            "https://example.com/b/:id",
        ]);
        let claims = access_token_claims(&cli.token, "https://localhost", Duration::from_secs(100));
        assert_eq!(claims["aud"], "https://localhost/.well-known/mercure");
        assert_eq!(claims["exp"], 3700);
        assert_eq!(
            claims["authorization_details"],
            serde_json::json!([{
                "type": MERCURE_DETAIL_TYPE,
                "actions": ["subscribe"],
                "topics": [
                    {"match": "https://example.com/a"},
                    {"match": "https://example.com/b/:id", "match_type": "urlpattern"},
                ],
            }])
        );
        // --iss needs the resource identifier.
        assert!(Cli::try_parse_from(["token", "--jwt-key", "k", "--iss", "https://x"]).is_err());
    }
}
