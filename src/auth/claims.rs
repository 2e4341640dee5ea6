//! The JWT claims ssehub reads: the standard `exp` and Mercure's `mercure` claim.

use serde::{Deserialize, Deserializer, Serialize};

/// The claims of a Mercure token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// Expiry (seconds since the epoch). Optional in Mercure; checked when present. RFC 7519
    /// allows fractional seconds (PHP's lcobucci/jwt, used by Symfony's Mercure bundle, writes
    /// them), so a float is accepted and rounded down.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "numeric_date"
    )]
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

/// An RFC 7519 NumericDate: an integer or a float; negative values count as 0 (long past), and
/// values beyond `u64` saturate.
pub(crate) fn numeric_date<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    let number: Option<serde_json::Number> = Option::deserialize(deserializer)?;
    Ok(number.map(|n| {
        n.as_u64().unwrap_or_else(|| {
            let seconds = n.as_f64().unwrap_or(0.0);
            if seconds <= 0.0 {
                0
            } else if seconds >= u64::MAX as f64 {
                u64::MAX
            } else {
                seconds as u64
            }
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_may_be_an_integer_or_a_float() {
        let parse = |json: &str| serde_json::from_str::<Claims>(json).map(|c| c.exp);
        assert_eq!(
            parse(r#"{"exp": 1700000000}"#).ok(),
            Some(Some(1_700_000_000))
        );
        assert_eq!(
            parse(r#"{"exp": 1700000000.75}"#).ok(),
            Some(Some(1_700_000_000))
        );
        assert_eq!(parse(r#"{"exp": -5}"#).ok(), Some(Some(0)));
        assert_eq!(parse(r#"{"exp": 1e300}"#).ok(), Some(Some(u64::MAX)));
        assert_eq!(parse(r#"{}"#).ok(), Some(None));
        assert!(parse(r#"{"exp": "soon"}"#).is_err());
    }
}
