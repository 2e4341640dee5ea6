//! Mercure "active subscriptions" (draft-dunglas-mercure-07 §Active Subscriptions): the private
//! update published when a subscription starts or ends, and the JSON-LD document that both these
//! updates and the subscriptions API (`crate::http::subscriptions`) carry.

use serde_json::{json, Value};

use super::subscriber::SubscriberInfo;
use crate::event::Event;

/// The path under which subscriptions are published and served.
pub const SUBSCRIPTIONS_PATH: &str = "/.well-known/mercure/subscriptions";

/// RFC 6570 simple expansion of one variable: everything but unreserved characters is
/// percent-encoded (the spec: `:`, `/`, `{` and `}` MUST be encoded).
pub fn expand_variable(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `/.well-known/mercure/subscriptions/{topic}/{subscriber}`, expanded.
pub fn subscription_topic(topic: &str, subscriber: &str) -> String {
    format!(
        "{SUBSCRIPTIONS_PATH}/{}/{}",
        expand_variable(topic),
        expand_variable(subscriber)
    )
}

/// The JSON-LD document of one subscription (without `@context`).
pub fn subscription_document(info: &SubscriberInfo, topic: &str, active: bool) -> Value {
    let mut document = json!({
        "id": subscription_topic(topic, &info.uri),
        "type": "Subscription",
        "topic": topic,
        "subscriber": info.uri,
        "active": active,
    });
    if let (Some(payload), Some(object)) = (&info.payload, document.as_object_mut()) {
        object.insert("payload".into(), payload.clone());
    }
    document
}

/// The document of one subscription as its subscription event carries it: with
/// `@context`. The webhook's notifications ([`crate::webhook`]) carry the same documents.
pub fn subscription_event_document(info: &SubscriberInfo, topic: &str, active: bool) -> Value {
    let mut document = subscription_document(info, topic, active);
    if let Some(object) = document.as_object_mut() {
        object.insert("@context".into(), json!("https://mercure.rocks/"));
    }
    document
}

/// The private updates announcing that `info`'s subscriptions started (`active`) or ended.
pub fn subscription_updates(info: &SubscriberInfo, active: bool) -> Vec<Event> {
    info.topics
        .iter()
        .map(|topic| {
            let document = subscription_event_document(info, topic, active);
            let mut event = Event::new(subscription_topic(topic, &info.uri), document.to_string());
            event.private = true;
            event
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_encodes_reserved_characters() {
        assert_eq!(
            subscription_topic("https://example.com/{selector}", "urn:uuid:bb3de268"),
            "/.well-known/mercure/subscriptions/https%3A%2F%2Fexample.com%2F%7Bselector%7D/urn%3Auuid%3Abb3de268"
        );
        assert_eq!(expand_variable("a-b.c_d~é"), "a-b.c_d~%C3%A9");
    }
}
