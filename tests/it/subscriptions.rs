//! Active subscriptions (Mercure §Active Subscriptions): subscription events and the API.

use std::time::Duration;

use ssehub::auth::{Claims, MercureClaim};
use ssehub::HubConfig;

use crate::support::{config, sign, SseClient, TestHub};

const SELECTOR: &str = "/.well-known/mercure/subscriptions{/topic}{/subscriber}";

fn enabled() -> HubConfig {
    HubConfig {
        subscriptions: true,
        ..config()
    }
}

fn token(subscribe: &[&str], payload: Option<serde_json::Value>) -> String {
    sign(&Claims {
        exp: None,
        mercure: Some(MercureClaim {
            subscribe: Some(subscribe.iter().map(|s| s.to_string()).collect()),
            payload,
            ..MercureClaim::default()
        }),
    })
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn opening_and_closing_a_subscription_publishes_private_events() {
    let hub = TestHub::start(enabled()).await;
    let watcher_token = token(&[SELECTOR], None);
    let mut watcher = SseClient::open(
        &format!("{}?topic={}", hub.url, urlencode(SELECTOR)),
        &[("authorization", &bearer(&watcher_token))],
    )
    .await;
    let mut anonymous = hub.subscribe("topic=*").await;
    // The watcher's own subscription event comes first.
    let own: serde_json::Value =
        serde_json::from_str(&watcher.next_event().await.data).expect("json");
    assert_eq!(own["topic"], SELECTOR);

    let alice = token(&[], Some(serde_json::json!({"user": "alice"})));
    let client = SseClient::open(
        &format!("{}?topic=https://example.com/books/%7Bid%7D", hub.url),
        &[("authorization", &bearer(&alice))],
    )
    .await;
    // Skip the anonymous subscriber's own event, which may come first.
    let document = loop {
        let event = watcher.next_event().await;
        let document: serde_json::Value = serde_json::from_str(&event.data).expect("json");
        if document["topic"] != "*" {
            break document;
        }
    };
    assert_eq!(document["@context"], "https://mercure.rocks/");
    assert_eq!(document["type"], "Subscription");
    assert_eq!(document["topic"], "https://example.com/books/{id}");
    assert_eq!(document["active"], true);
    assert_eq!(document["payload"]["user"], "alice");
    let subscriber = document["subscriber"]
        .as_str()
        .expect("subscriber")
        .to_owned();
    assert!(subscriber.starts_with("urn:uuid:"));
    assert_eq!(
        document["id"],
        format!(
            "/.well-known/mercure/subscriptions/https%3A%2F%2Fexample.com%2Fbooks%2F%7Bid%7D/{}",
            subscriber.replace(':', "%3A")
        )
    );

    drop(client);
    let closed: serde_json::Value =
        serde_json::from_str(&watcher.next_event().await.data).expect("json");
    assert_eq!(closed["active"], false);
    assert_eq!(closed["subscriber"], subscriber);
    // Private: a subscriber to `*` without the claim never sees them.
    anonymous.assert_no_event(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn the_api_lists_active_subscriptions_to_authorized_clients() {
    let hub = TestHub::start(enabled()).await;
    let api = format!("http://{}/.well-known/mercure/subscriptions", hub.addr);
    let alice = token(&[], Some(serde_json::json!({"user": "alice"})));
    let _client = SseClient::open(
        &format!(
            "{}?topic=https://example.com/a&topic=https://example.com/b",
            hub.url
        ),
        &[("authorization", &bearer(&alice))],
    )
    .await;
    let (status, _) = hub
        .publish(&[("topic", "https://example.com/a"), ("id", "last-one")])
        .await;
    assert_eq!(status, 200);
    let client = reqwest::Client::new();

    let anonymous = client.get(&api).send().await.expect("get");
    assert_eq!(anonymous.status(), 401);
    let wrong_claim = client
        .get(&api)
        .header(
            "authorization",
            bearer(&token(&["https://example.com/a"], None)),
        )
        .send()
        .await
        .expect("get");
    assert_eq!(wrong_claim.status(), 403);

    let allowed = bearer(&token(&[SELECTOR], None));
    let response = client
        .get(&api)
        .header("authorization", &allowed)
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/ld+json");
    assert_eq!(
        response.headers()["link"],
        "</.well-known/mercure>; rel=\"mercure\""
    );
    let all = json(response).await;
    assert_eq!(all["type"], "Subscriptions");
    assert_eq!(all["id"], "/.well-known/mercure/subscriptions");
    assert_eq!(all["lastEventID"], "last-one");
    let list = all["subscriptions"].as_array().expect("array");
    assert_eq!(list.len(), 2);
    let subscriber = list[0]["subscriber"]
        .as_str()
        .expect("subscriber")
        .to_owned();

    let by_topic = json(
        client
            .get(format!("{api}/https%3A%2F%2Fexample.com%2Fb"))
            .header("authorization", &allowed)
            .send()
            .await
            .expect("get"),
    )
    .await;
    let list = by_topic["subscriptions"].as_array().expect("array");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["topic"], "https://example.com/b");

    let one = client
        .get(format!(
            "{api}/https%3A%2F%2Fexample.com%2Fb/{}",
            urlencode(&subscriber)
        ))
        .header("authorization", &allowed)
        .send()
        .await
        .expect("get");
    assert_eq!(one.status(), 200);
    let one = json(one).await;
    assert_eq!(one["type"], "Subscription");
    assert_eq!(one["payload"]["user"], "alice");

    let missing = client
        .get(format!(
            "{api}/https%3A%2F%2Fexample.com%2Fb/urn%3Auuid%3Anope"
        ))
        .header("authorization", &allowed)
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn without_the_setting_there_is_no_api() {
    let hub = TestHub::start(config()).await;
    let response = reqwest::get(format!(
        "http://{}/.well-known/mercure/subscriptions",
        hub.addr
    ))
    .await
    .expect("get");
    assert_eq!(response.status(), 404);
}

fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn json(response: reqwest::Response) -> serde_json::Value {
    serde_json::from_str(&response.text().await.expect("body")).expect("json")
}
