//! The JWT claims ssehub reads: the standard `exp` and Mercure's `mercure` claim.

use serde::{Deserialize, Serialize};

/// The claims of a Mercure token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// Expiry (seconds since the epoch). Optional in Mercure; checked when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// The `mercure` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mercure: Option<MercureClaim>,
}

/// `mercure`: topic selectors for publishing and for private updates, and a free payload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MercureClaim {
    /// Selectors of the topics the holder may publish to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<Vec<String>>,
    /// Selectors of the topics whose private updates the holder may receive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<Vec<String>>,
    /// User data attached to the subscription (Mercure §Payload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
}
