//! Mercure "active subscriptions": the private update published when a subscription starts or
//! ends, and the documents that both these updates and the subscriptions API
//! (`crate::http::subscriptions`) carry.
//!
//! Each subscription is described in the dialect it was made in, whoever reads it, so that one
//! update (one id, one encoding) serves the watchers of both dialects:
//!
//! | | a draft-07 `topic` subscription (draft-07 §Active Subscriptions) | a draft-08 matcher (draft-08 §Subscription Events) |
//! | --- | --- | --- |
//! | topic | `/.well-known/mercure/subscriptions/{topic}/{subscriber}` | `/.well-known/mercure/subscriptions/{match_type}/{match}/{subscriber}` |
//! | document | JSON-LD: `@context`, `type` `Subscription`, `topic` | JSON: `type` `subscription`, `match_type`, `match` |
//! | SSE `event` | none (`message`) | the reserved `mercure` |
//!
//! Both carry `id` (the topic), `subscriber`, `active` and the token's `payload`.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Value};

use super::subscriber::{Selection, SubscriberInfo};
use crate::event::Event;
use crate::topic::MatcherType;

/// The path under which subscriptions are published and served.
pub const SUBSCRIPTIONS_PATH: &str = "/.well-known/mercure/subscriptions";

/// The SSE `event` of draft-08 subscription events (draft-08 §Subscription Events), which
/// publishers cannot use.
pub const RESERVED_EVENT_TYPE: &str = "mercure";

/// What RFC 6570 simple expansion leaves as it is: the unreserved characters.
const RESERVED_AND_OTHERS: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// RFC 6570 simple expansion of one variable: everything but unreserved characters is
/// percent-encoded, once (the specs: `:`, `/`, `{`, `}` and `%` are encoded).
pub fn expand_variable(value: &str) -> String {
    utf8_percent_encode(value, RESERVED_AND_OTHERS).to_string()
}

/// `/.well-known/mercure/subscriptions/{match_type}/{match}`, expanded: the collection of one
/// draft-08 matcher's subscriptions.
pub fn matcher_collection_path(kind: MatcherType, value: &str) -> String {
    format!(
        "{SUBSCRIPTIONS_PATH}/{}/{}",
        kind.as_str(),
        expand_variable(value)
    )
}

/// The topic of one subscription's events, which is also its `id` and its URL in the API:
/// `/.well-known/mercure/subscriptions/{topic}/{subscriber}` (draft-07) or
/// `/.well-known/mercure/subscriptions/{match_type}/{match}/{subscriber}` (draft-08), expanded.
pub fn subscription_topic(selection: Selection<'_>, subscriber: &str) -> String {
    let subscriber = expand_variable(subscriber);
    match selection {
        Selection::Topic(topic) => {
            format!(
                "{SUBSCRIPTIONS_PATH}/{}/{subscriber}",
                expand_variable(topic)
            )
        }
        Selection::Matcher(kind, value) => {
            format!("{}/{subscriber}", matcher_collection_path(kind, value))
        }
    }
}

/// The document of one subscription as the API lists it: a draft-07 one without `@context`
/// (its collection carries it), a draft-08 one exactly as its event carries it.
pub fn subscription_document(
    info: &SubscriberInfo,
    selection: Selection<'_>,
    active: bool,
) -> Value {
    let id = subscription_topic(selection, &info.uri);
    let mut document = match selection {
        Selection::Topic(topic) => json!({
            "id": id,
            "type": "Subscription",
            "topic": topic,
            "subscriber": info.uri,
            "active": active,
        }),
        Selection::Matcher(kind, value) => json!({
            "id": id,
            "type": "subscription",
            "match_type": kind.as_str(),
            "match": value,
            "subscriber": info.uri,
            "active": active,
        }),
    };
    if let (Some(payload), Some(object)) = (&info.payload, document.as_object_mut()) {
        object.insert("payload".into(), payload.clone());
    }
    document
}

/// The document of one subscription as its subscription event carries it: a draft-07 one
/// with `@context`. The webhook's notifications ([`crate::webhook`]) carry the same documents.
pub fn subscription_event_document(
    info: &SubscriberInfo,
    selection: Selection<'_>,
    active: bool,
) -> Value {
    let mut document = subscription_document(info, selection, active);
    if let (Selection::Topic(_), Some(object)) = (selection, document.as_object_mut()) {
        object.insert("@context".into(), json!("https://mercure.rocks/"));
    }
    document
}

/// The private updates announcing that `info`'s subscriptions started (`active`) or ended;
/// those of draft-08 matchers are of the reserved `mercure` type.
pub fn subscription_updates(info: &SubscriberInfo, active: bool) -> Vec<Event> {
    info.selections()
        .map(|selection| {
            let document = subscription_event_document(info, selection, active);
            let mut event = Event::new(
                subscription_topic(selection, &info.uri),
                document.to_string(),
            );
            event.private = true;
            if let Selection::Matcher(..) = selection {
                event.event_type = Some(RESERVED_EVENT_TYPE.to_owned());
            }
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
            subscription_topic(
                Selection::Topic("https://example.com/{selector}"),
                "urn:uuid:bb3de268"
            ),
            "/.well-known/mercure/subscriptions/https%3A%2F%2Fexample.com%2F%7Bselector%7D/urn%3Auuid%3Abb3de268"
        );
        assert_eq!(expand_variable("a-b.c_d~é"), "a-b.c_d~%C3%A9");
    }

    fn info(topics: &[&str], matcher_types: Vec<MatcherType>) -> SubscriberInfo {
        SubscriberInfo {
            id: 1,
            uri: "urn:uuid:bb3de268-05b0-4c65-b44e-8f9acefc29d6".into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            matcher_types,
            remote_addr: None,
            payload: Some(json!({"foo": "bar"})),
            connected_at: std::time::SystemTime::now(),
        }
    }

    #[test]
    fn a_draft08_subscription_has_the_draft08_topic_document_and_type() {
        // draft-08 §Subscription Events, its example.
        let info = info(
            &["https://example.com/a", "https://example.com/:selector"],
            vec![MatcherType::UrlPattern],
        );
        let updates = subscription_updates(&info, true);
        assert_eq!(updates.len(), 2);
        let draft08 = &updates[1];
        assert_eq!(
            draft08.topics,
            ["/.well-known/mercure/subscriptions/urlpattern/https%3A%2F%2Fexample.com%2F%3Aselector/urn%3Auuid%3Abb3de268-05b0-4c65-b44e-8f9acefc29d6"]
        );
        assert_eq!(draft08.event_type.as_deref(), Some("mercure"));
        assert!(draft08.private);
        let document: Value = serde_json::from_str(&draft08.data).expect("json");
        assert_eq!(
            document,
            json!({
                "id": draft08.topics[0],
                "type": "subscription",
                "match_type": "urlpattern",
                "match": "https://example.com/:selector",
                "subscriber": "urn:uuid:bb3de268-05b0-4c65-b44e-8f9acefc29d6",
                "active": true,
                "payload": {"foo": "bar"}
            })
        );
        // The draft-07 one keeps its shape and the default event type.
        let draft07 = &updates[0];
        assert_eq!(draft07.event_type, None);
        let document: Value = serde_json::from_str(&draft07.data).expect("json");
        assert_eq!(document["@context"], "https://mercure.rocks/");
        assert_eq!(document["type"], "Subscription");
        assert_eq!(document["topic"], "https://example.com/a");
        assert!(document.get("match").is_none());
    }

    #[test]
    fn a_percent_in_a_matcher_is_encoded_once() {
        assert_eq!(
            matcher_collection_path(MatcherType::Exact, "https://example.com/a%20b"),
            "/.well-known/mercure/subscriptions/exact/https%3A%2F%2Fexample.com%2Fa%2520b"
        );
    }
}
