//! RFC 9396 `authorization_details` of the Mercure type, read into topic selectors
//! (draft-dunglas-mercure-08 §Authorization Details, §Topic Matcher List).
//!
//! Owns: the shape and the limits. A Mercure detail has `type`
//! `https://mercure.rocks/authorization-detail` (compared byte by byte), a non-empty `actions`
//! array of strings (`publish`, `subscribe`; unknown actions grant nothing and are no error),
//! a non-empty `topics` array of matcher objects `{"match": …, "match_type"?: …}` and an
//! optional `payload`. Entries of other types are ignored. Any Mercure detail that does not
//! parse, or that exceeds a limit, rejects the whole token: "partial acceptance is
//! forbidden". `match` `*` matches every topic whatever the `match_type`; `exact` (the
//! default) compares byte by byte; `urlpattern` is compiled by the function the hub was given
//! ([`UrlPatternCompiler`]), and without one it is an unsupported type, which the draft says
//! must reject the token.

use std::sync::Arc;

use serde_json::Value;

use crate::topic::TopicSelector;

/// The Mercure authorization detail type.
pub const MERCURE_DETAIL_TYPE: &str = "https://mercure.rocks/authorization-detail";

/// Compiles a `urlpattern` matcher into a selector, or says why it is not a valid pattern.
pub type UrlPatternCompiler = Arc<dyn Fn(&str) -> Result<TopicSelector, String> + Send + Sync>;

/// Bounds on what one token may carry (draft-08: "implementation-defined maximums"; a token
/// over any of them is an invalid token). `Default` gives the values documented on each field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetailLimits {
    /// Most Mercure authorization details in one token (default 32).
    pub max_details: usize,
    /// Most matchers in one detail's `topics` (default 64).
    pub max_topics: usize,
    /// Longest `match` value, in bytes (default 2048).
    pub max_match_bytes: usize,
}

impl Default for DetailLimits {
    fn default() -> Self {
        Self {
            max_details: 32,
            max_topics: 64,
            max_match_bytes: 2048,
        }
    }
}

/// One Mercure authorization detail, read.
#[derive(Debug, Clone)]
pub(crate) struct Detail {
    pub publish: bool,
    pub subscribe: bool,
    pub topics: Vec<TopicSelector>,
    pub payload: Option<Value>,
}

/// What a token's `authorization_details` grant.
#[derive(Debug, Clone, Default)]
pub(crate) struct Grants {
    pub details: Vec<Detail>,
}

impl Grants {
    /// Selectors of every detail granting `publish`.
    pub fn publish_selectors(&self) -> Vec<TopicSelector> {
        self.details
            .iter()
            .filter(|d| d.publish)
            .flat_map(|d| d.topics.iter().cloned())
            .collect()
    }

    /// Selectors of every detail granting `subscribe`.
    pub fn subscribe_selectors(&self) -> Vec<TopicSelector> {
        self.details
            .iter()
            .filter(|d| d.subscribe)
            .flat_map(|d| d.topics.iter().cloned())
            .collect()
    }

    /// §Payloads: the payload of the first `subscribe` detail whose topics match one of the
    /// subscription's own matcher strings (read as topics); `None` when that detail has none.
    pub fn payload_for(&self, subscription_matchers: &[String]) -> Option<Value> {
        self.details
            .iter()
            .filter(|d| d.subscribe)
            .find(|d| {
                subscription_matchers
                    .iter()
                    .any(|m| d.topics.iter().any(|t| t.matches(m)))
            })
            .and_then(|d| d.payload.clone())
    }
}

/// Reads the `authorization_details` claim (absent: no grants).
///
/// # Errors
/// Why the claim is refused, without quoting its values.
pub(crate) fn parse(
    claim: Option<&Value>,
    limits: &DetailLimits,
    urlpattern: Option<&UrlPatternCompiler>,
) -> Result<Grants, String> {
    let Some(claim) = claim else {
        return Ok(Grants::default());
    };
    let entries = claim
        .as_array()
        .ok_or("authorization_details is not an array")?;
    let mut details = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let object = entry
            .as_object()
            .ok_or_else(|| format!("authorization_details[{index}] is not an object"))?;
        // RFC 9396 §2: every detail has a string `type`; other types belong to other APIs.
        match object.get("type") {
            Some(Value::String(kind)) if kind == MERCURE_DETAIL_TYPE => {}
            Some(Value::String(_)) => continue,
            _ => return Err(format!("authorization_details[{index}] has no string type")),
        }
        if details.len() == limits.max_details {
            return Err(format!(
                "more than {} Mercure authorization details",
                limits.max_details
            ));
        }
        details.push(parse_detail(index, object, limits, urlpattern)?);
    }
    Ok(Grants { details })
}

fn parse_detail(
    index: usize,
    object: &serde_json::Map<String, Value>,
    limits: &DetailLimits,
    urlpattern: Option<&UrlPatternCompiler>,
) -> Result<Detail, String> {
    let at = |what: &str| format!("the Mercure authorization detail [{index}] {what}");
    let actions = object
        .get("actions")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| at("has no non-empty actions array"))?;
    let (mut publish, mut subscribe) = (false, false);
    for action in actions {
        match action.as_str() {
            Some("publish") => publish = true,
            Some("subscribe") => subscribe = true,
            // §Authorization Details: an unrecognized action grants nothing.
            Some(_) => {}
            None => return Err(at("has an action that is not a string")),
        }
    }
    let matchers = object
        .get("topics")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| at("has no non-empty topics array"))?;
    if matchers.len() > limits.max_topics {
        return Err(at(&format!("has more than {} topics", limits.max_topics)));
    }
    let topics = matchers
        .iter()
        .enumerate()
        .map(|(i, matcher)| {
            parse_matcher(matcher, limits, urlpattern)
                .map_err(|why| at(&format!("topics[{i}] {why}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Detail {
        publish,
        subscribe,
        topics,
        // Any JSON value is kept (Mercure's hub documents "any JSON value"; the draft says an
        // object): refusing a string payload would refuse tokens minted for Mercure.
        payload: object.get("payload").cloned(),
    })
}

fn parse_matcher(
    matcher: &Value,
    limits: &DetailLimits,
    urlpattern: Option<&UrlPatternCompiler>,
) -> Result<TopicSelector, String> {
    let object = matcher.as_object().ok_or("is not an object")?;
    let text = object
        .get("match")
        .and_then(Value::as_str)
        .ok_or("has no string match")?;
    if text.len() > limits.max_match_bytes {
        return Err(format!(
            "has a match longer than {} bytes",
            limits.max_match_bytes
        ));
    }
    let kind = match object.get("match_type") {
        None => "exact",
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => return Err("has a match_type that is not a string".into()),
    };
    // §Topic Matcher List: the reserved wildcard, whatever the type (a type the hub does not
    // support still rejects the token: the grant could not be evaluated).
    let known = matches!(kind, "exact") || (kind == "urlpattern" && urlpattern.is_some());
    if !known {
        return Err(format!(
            "has a match_type this hub does not support (supported: exact{})",
            if urlpattern.is_some() {
                ", urlpattern"
            } else {
                ""
            }
        ));
    }
    if text == "*" {
        return Ok(TopicSelector::Any);
    }
    match (kind, urlpattern) {
        ("urlpattern", Some(compile)) => {
            compile(text).map_err(|why| format!("is not a valid URL pattern: {why}"))
        }
        _ => Ok(TopicSelector::Exact(Arc::from(text))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn grants(claim: Value) -> Result<Grants, String> {
        parse(Some(&claim), &DetailLimits::default(), None)
    }

    fn detail(actions: Value, topics: Value) -> Value {
        json!({"type": MERCURE_DETAIL_TYPE, "actions": actions, "topics": topics})
    }

    #[test]
    fn actions_and_topics_become_selectors() {
        let g = grants(json!([
            detail(json!(["publish"]), json!([{"match": "https://a/1"}, {"match": "*", "match_type": "exact"}])),
            detail(json!(["subscribe", "future-action"]), json!([{"match": "https://a/2", "match_type": "exact"}])),
            {"type": "https://other.example/detail", "anything": true},
        ]))
        .expect("valid");
        let publish = g.publish_selectors();
        assert_eq!(publish.len(), 2);
        assert!(
            publish.iter().any(|s| s.matches("https://x")),
            "* matches all"
        );
        let subscribe = g.subscribe_selectors();
        assert!(subscribe.iter().any(|s| s.matches("https://a/2")));
        assert!(!subscribe.iter().any(|s| s.matches("https://a/1")));
        // Exact means exact: a template-looking string is not a template here.
        let g = grants(json!([detail(
            json!(["publish"]),
            json!([{"match": "https://a/{id}"}])
        )]))
        .expect("valid");
        assert!(!g.publish_selectors()[0].matches("https://a/1"));
        assert!(g.publish_selectors()[0].matches("https://a/{id}"));
    }

    #[test]
    fn unknown_actions_grant_nothing() {
        let g = grants(json!([detail(json!(["read"]), json!([{"match": "*"}]))])).expect("valid");
        assert!(g.publish_selectors().is_empty() && g.subscribe_selectors().is_empty());
        assert!(grants(json!([])).expect("valid").details.is_empty());
        assert!(parse(None, &DetailLimits::default(), None)
            .expect("absent")
            .details
            .is_empty());
    }

    #[test]
    fn any_malformed_mercure_detail_rejects_the_whole_token() {
        let good = detail(json!(["publish"]), json!([{"match": "*"}]));
        for bad in [
            json!({"type": MERCURE_DETAIL_TYPE, "topics": [{"match": "*"}]}),
            detail(json!([]), json!([{"match": "*"}])),
            detail(json!(["publish", 7]), json!([{"match": "*"}])),
            detail(json!("publish"), json!([{"match": "*"}])),
            detail(json!(["publish"]), json!([])),
            detail(json!(["publish"]), json!(["https://a/1"])),
            detail(json!(["publish"]), json!([{"match": 1}])),
            detail(
                json!(["publish"]),
                json!([{"match": "*", "match_type": "EXACT"}]),
            ),
            detail(
                json!(["publish"]),
                json!([{"match": "https://a/:id", "match_type": "urlpattern"}]),
            ),
            detail(
                json!(["publish"]),
                json!([{"match": "*", "match_type": "regex"}]),
            ),
            detail(json!(["publish"]), json!([{"match": "*", "match_type": 3}])),
            json!({"actions": ["publish"], "topics": [{"match": "*"}]}),
            json!("a string"),
        ] {
            let error = grants(json!([good.clone(), bad.clone()])).expect_err(&bad.to_string());
            assert!(!error.contains("https://a"), "no value quoted: {error}");
        }
        assert!(grants(json!({"not": "an array"})).is_err());
    }

    #[test]
    fn limits_reject_the_token() {
        let limits = DetailLimits {
            max_details: 2,
            max_topics: 2,
            max_match_bytes: 8,
        };
        let one = detail(json!(["publish"]), json!([{"match": "a"}]));
        let check = |claim: Value| parse(Some(&claim), &limits, None);
        assert!(check(json!([one.clone(), one.clone()])).is_ok());
        assert!(check(json!([one.clone(), one.clone(), one.clone()])).is_err());
        assert!(check(json!([detail(
            json!(["publish"]),
            json!([{"match": "a"}, {"match": "b"}, {"match": "c"}])
        )]))
        .is_err());
        assert!(check(json!([detail(
            json!(["publish"]),
            json!([{"match": "123456789"}])
        )]))
        .is_err());
        assert!(check(json!([detail(
            json!(["publish"]),
            json!([{"match": "12345678"}])
        )]))
        .is_ok());
    }

    #[test]
    fn urlpattern_matchers_use_the_compiler_the_hub_was_given() {
        let compiler: UrlPatternCompiler = Arc::new(|pattern: &str| {
            pattern
                .strip_suffix(":id")
                .map(|prefix| TopicSelector::parse_mercure07(&format!("{prefix}{{id}}")))
                .ok_or_else(|| "only …:id here".to_owned())
        });
        let claim = json!([detail(
            json!(["subscribe"]),
            json!([{"match": "https://a/:id", "match_type": "urlpattern"}])
        )]);
        let g = parse(Some(&claim), &DetailLimits::default(), Some(&compiler)).expect("valid");
        assert!(g.subscribe_selectors()[0].matches("https://a/7"));
        let claim = json!([detail(
            json!(["subscribe"]),
            json!([{"match": "https://a/x", "match_type": "urlpattern"}])
        )]);
        assert!(parse(Some(&claim), &DetailLimits::default(), Some(&compiler)).is_err());
    }

    #[test]
    fn the_payload_is_the_first_matching_subscribe_details() {
        let g = grants(json!([
            {"type": MERCURE_DETAIL_TYPE, "actions": ["publish"], "topics": [{"match": "*"}], "payload": "p"},
            {"type": MERCURE_DETAIL_TYPE, "actions": ["subscribe"], "topics": [{"match": "https://a/foo"}], "payload": {"n": 1}},
            {"type": MERCURE_DETAIL_TYPE, "actions": ["subscribe"], "topics": [{"match": "*"}], "payload": {"n": 3}},
        ]))
        .expect("valid");
        assert_eq!(
            g.payload_for(&["https://a/foo".into()]),
            Some(json!({"n": 1}))
        );
        assert_eq!(
            g.payload_for(&["https://a/bar".into()]),
            Some(json!({"n": 3}))
        );
    }
}
