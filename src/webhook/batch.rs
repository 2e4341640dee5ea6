//! The bodies the webhook posts (docs/WEBHOOKS.md has the full description):
//!
//! ```json
//! {"instance": "urn:uuid:…", "kind": "events", "sent_at": 1764680000123,
//!  "events": [{"seq": 1, "type": "opened", "at": 1764680000100, "subscription": {…}},
//!             {"seq": 2, "type": "closed", "reason": "client_disconnected", "at": …,
//!              "subscription": {…}}]}
//! {"instance": "urn:uuid:…", "kind": "full_list", "sent_at": …, "interval_seconds": 60,
//!  "subscriptions": [{…}, …]}
//! ```
//!
//! Each `subscription` is the JSON-LD document of the Mercure subscription event
//! ([`crate::hub::subscription_events::subscription_event_document`]); the notifications were
//! serialized when they were queued, and are joined here as they are.

use std::time::Duration;

use serde_json::{json, Value};

use super::queue::Notification;
use crate::hub::subscription_events::subscription_event_document;
use crate::hub::SubscriberInfo;

/// A batch of notifications, oldest first.
pub(crate) fn events_body(
    instance: &str,
    sent_at_ms: u64,
    notifications: &[Notification],
) -> String {
    let length: usize = notifications.iter().map(|n| n.json.len() + 1).sum();
    let mut body = String::with_capacity(length + 128);
    body.push_str(r#"{"instance":"#);
    body.push_str(&json!(instance).to_string());
    body.push_str(r#","kind":"events","sent_at":"#);
    body.push_str(&sent_at_ms.to_string());
    body.push_str(r#","events":["#);
    for (n, notification) in notifications.iter().enumerate() {
        if n > 0 {
            body.push(',');
        }
        body.push_str(&notification.json);
    }
    body.push_str("]}");
    body
}

/// The full list of the instance's active subscriptions (one document per subscriber and
/// topic selector), with the interval after which the next one is due.
pub(crate) fn full_list_body(
    instance: &str,
    sent_at_ms: u64,
    interval: Duration,
    subscribers: &[SubscriberInfo],
) -> String {
    let subscriptions: Vec<Value> = subscribers
        .iter()
        .flat_map(|info| {
            info.selections()
                .map(move |selection| subscription_event_document(info, selection, true))
        })
        .collect();
    json!({
        "instance": instance,
        "kind": "full_list",
        "sent_at": sent_at_ms,
        "interval_seconds": interval.as_secs_f64(),
        "subscriptions": subscriptions,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn an_events_body_is_json_with_the_notifications_in_order() {
        let notifications = [1, 2].map(|seq| Notification {
            seq,
            json: Arc::from(format!(r#"{{"seq":{seq},"type":"opened"}}"#)),
        });
        let body = events_body("urn:uuid:\"x\"", 7, &notifications);
        let value: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(value["instance"], "urn:uuid:\"x\"");
        assert_eq!(value["kind"], "events");
        assert_eq!(value["sent_at"], 7);
        assert_eq!(value["events"][0]["seq"], 1);
        assert_eq!(value["events"][1]["seq"], 2);
        let empty: Value = serde_json::from_str(&events_body("i", 1, &[])).expect("JSON");
        assert_eq!(empty["events"], json!([]));
    }
}
