//! The draft-08 trusted issuers of `ssehub serve`: `[[issuer]]` tables in the config file, and
//! turning them (with `--resource-identifier`, `--jwks-refresh`, `--jwks-min-refetch`) into a
//! [`Draft08Auth`].
//!
//! ```toml
//! resource_identifier = "https://hub.example.com/.well-known/mercure"
//!
//! [[issuer]]                      # a self-issuing publisher with a shared secret
//! iss = "https://example.com"
//! key = "!ChangeThisMercureHubJWTSecretKey!"   # HS256 unless `algorithms` says otherwise
//!
//! [[issuer]]                      # an authorization server, subscriber tokens only
//! iss = "https://auth.example.com"
//! jwks_url = "https://auth.example.com/jwks"
//! algorithms = ["RS256", "ES256"]  # default: every asymmetric algorithm
//! roles = ["subscriber"]           # default: publisher and subscriber
//! authorization_server = true      # listed in the protected resource metadata
//! ```
//!
//! A `key` is an HMAC secret for `HS*` algorithms, else a PEM public key (the text, or a file
//! path) and then `algorithms` is required. Exactly one of `key` and `jwks_url`. The same `iss`
//! may appear in several tables (separate publisher and subscriber keys, a key rotation).
//! Issuers are read from the file only: a list of tables has no sensible flag form.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::args::ServeArgs;
use super::ConfigError;
use crate::auth::issuers::parse_algorithm;
use crate::auth::{Draft08Auth, Issuer, JwksKeys, JwksSettings, Role};

/// One `[[issuer]]` table.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSettings {
    /// The issuer identifier tokens carry in `iss`, compared exactly.
    pub iss: String,
    /// An HMAC secret, or a PEM public key (text or file path) for asymmetric algorithms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A JWK Set URL to take the issuer's keys from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// The algorithms accepted (default: `HS256` for a secret, every asymmetric one for a key
    /// set; required for a PEM key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub algorithms: Vec<String>,
    /// `publisher`, `subscriber` (default both): which tokens these keys verify.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<RoleName>,
    /// A `kid` for a static key, which tokens may name to pick it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// List the issuer in the protected resource metadata's `authorization_servers`.
    #[serde(default)]
    pub authorization_server: bool,
}

impl fmt::Debug for IssuerSettings {
    // The key may be a secret: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuerSettings")
            .field("iss", &self.iss)
            .field("key", &self.key.as_ref().map(|_| "…"))
            .field("jwks_url", &self.jwks_url)
            .field("algorithms", &self.algorithms)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

/// A role as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleName {
    /// Tokens presented to publish.
    Publisher,
    /// Tokens presented to subscribe.
    Subscriber,
}

impl ServeArgs {
    /// The draft-08 verifier of `[[issuer]]` and `--resource-identifier`, if any issuer is
    /// configured. One without the other is refused: neither does anything alone.
    pub(super) fn draft08(&self) -> Result<Option<Draft08Auth>, ConfigError> {
        let resource = self
            .resource_identifier
            .as_deref()
            .filter(|r| !r.is_empty());
        let Some(resource) = resource else {
            if self.issuer.is_empty() {
                return Ok(None);
            }
            return Err(ConfigError::Conflict {
                settings: "[[issuer]] and --resource-identifier",
                reason: "draft-08 tokens must name the hub in `aud`: set resource_identifier (e.g. \"https://hub.example.com/.well-known/mercure\")".into(),
            });
        };
        if self.issuer.is_empty() {
            return Err(ConfigError::Conflict {
                settings: "--resource-identifier and [[issuer]]",
                reason: "a resource identifier without a trusted issuer verifies nothing: add an [[issuer]] table to the config file".into(),
            });
        }
        let jwks = JwksSettings {
            refresh: self.jwks_refresh,
            min_refetch: self.jwks_min_refetch,
            ..JwksSettings::default()
        };
        let issuers = self
            .issuer
            .iter()
            .map(|settings| build(settings, jwks))
            .collect::<Result<Vec<_>, _>>()?;
        Draft08Auth::new(resource, issuers)
            .map(|auth| {
                // Tokens' `urlpattern` matchers compile as subscriptions' `match_urlpattern` do.
                let compile: crate::auth::details::UrlPatternCompiler =
                    std::sync::Arc::new(|pattern| {
                        crate::topic::TopicSelector::parse_matcher(
                            crate::topic::MatcherType::UrlPattern,
                            pattern,
                        )
                        .map_err(|e| e.to_string())
                    });
                Some(auth.with_urlpattern(compile))
            })
            .map_err(|e| ConfigError::Invalid {
                setting: "--resource-identifier",
                reason: e.to_string(),
            })
    }
}

fn build(settings: &IssuerSettings, jwks: JwksSettings) -> Result<Issuer, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        setting: "[[issuer]]",
        reason: format!("iss {:?}: {reason}", settings.iss),
    };
    let algorithms = settings
        .algorithms
        .iter()
        .map(|name| parse_algorithm(name))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(e.to_string()))?;
    let issuer = match (&settings.key, &settings.jwks_url) {
        (Some(key), None) if algorithms.is_empty() => {
            Issuer::with_secret(&settings.iss, key, &[jsonwebtoken::Algorithm::HS256])
        }
        (Some(key), None)
            if algorithms
                .iter()
                .all(|a| a.family() == jsonwebtoken::AlgorithmFamily::Hmac) =>
        {
            Issuer::with_secret(&settings.iss, key, &algorithms)
        }
        (Some(key), None) => Issuer::with_public_key(&settings.iss, key, &algorithms),
        (None, Some(url)) => {
            let keys = JwksKeys::new(url, jwks).map_err(|e| invalid(e.to_string()))?;
            Issuer::with_jwks(&settings.iss, keys, &algorithms)
        }
        _ => return Err(invalid("give exactly one of `key` and `jwks_url`".into())),
    }
    .map_err(|e| invalid(e.to_string()))?;
    let issuer = match &settings.kid {
        Some(kid) => issuer.with_kid(kid),
        None => issuer,
    };
    let issuer = if settings.roles.is_empty() {
        issuer
    } else {
        let roles: Vec<Role> = settings
            .roles
            .iter()
            .map(|role| match role {
                RoleName::Publisher => Role::Publisher,
                RoleName::Subscriber => Role::Subscriber,
            })
            .collect();
        issuer.for_roles(&roles)
    };
    Ok(if settings.authorization_server {
        issuer.advertised()
    } else {
        issuer
    })
}
