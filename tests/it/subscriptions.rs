//! Active subscriptions (Mercure §Active Subscriptions): subscription events and the API, in
//! draft-07 and in draft-08 (§Subscription Events, §Subscription API), each subscription
//! described in the dialect it was made in, collections in the dialect of the request.

use std::time::Duration;

use ssehub::auth::{Claims, MercureClaim};
use ssehub::HubConfig;

use crate::support::draft08::{self, claims, draft08_http, grant, hs256, ISS};
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

/// An at+jwt token granting `subscribe` on `topics`.
fn draft08_token(topics: &[&str]) -> String {
    hs256(&claims(ISS, vec![grant("subscribe", topics)]))
}

#[tokio::test]
async fn a_draft08_subscription_is_announced_in_the_draft08_shape_to_watchers_of_both_dialects() {
    let hub = TestHub::start_http(enabled(), draft08_http(true)).await;
    // A draft-08 watcher of the whole namespace (a relative pattern, resolved against the hub's
    // URL), and a draft-07 one.
    let watcher08_token = bearer(&draft08_token(&["*"]));
    let mut watcher08 = SseClient::open(
        &format!(
            "{}?match_urlpattern={}",
            hub.url,
            urlencode("/.well-known/mercure/subscriptions/*")
        ),
        &[("authorization", &watcher08_token)],
    )
    .await;
    assert_eq!(watcher08.status, 200);
    let own = watcher08.next_signal().await;
    let own: serde_json::Value = serde_json::from_str(&own.data).expect("json");
    assert_eq!(own["match_type"], "urlpattern");
    assert_eq!(own["match"], "/.well-known/mercure/subscriptions/*");
    let watcher07_token = bearer(&token(&["*"], None));
    let mut watcher07 = SseClient::open(
        &format!("{}?topic=*", hub.url),
        &[("authorization", &watcher07_token)],
    )
    .await;
    assert_eq!(watcher07.status, 200);
    // The draft-07 watcher's own event is draft-07-shaped, of the default type.
    let own07 = watcher07.next_event().await;
    let own07: serde_json::Value = serde_json::from_str(&own07.data).expect("json");
    assert_eq!(own07["topic"], "*");
    // The draft-08 watcher's pattern covers its topic: it gets the same draft-07 document.
    let seen: serde_json::Value =
        serde_json::from_str(&watcher08.next_event().await.data).expect("json");
    assert_eq!(seen, own07);

    let reader = SseClient::open(
        &format!("{}?match=https://example.com/books/1", hub.url),
        &[(
            "authorization",
            &bearer(&hs256(&claims(
                ISS,
                vec![serde_json::json!({
                    "type": draft08::DETAIL, "actions": ["subscribe"],
                    "topics": [{"match": "https://example.com/books/1"}],
                    "payload": {"user": "alice"}
                })],
            ))),
        )],
    )
    .await;
    assert_eq!(reader.status, 200);
    let event = watcher08.next_signal().await;
    assert_eq!(event.event_type, "mercure");
    let document: serde_json::Value = serde_json::from_str(&event.data).expect("json");
    let subscriber = document["subscriber"]
        .as_str()
        .expect("subscriber")
        .to_owned();
    assert!(subscriber.starts_with("urn:uuid:"), "{document}");
    let topic = format!(
        "/.well-known/mercure/subscriptions/exact/https%3A%2F%2Fexample.com%2Fbooks%2F1/{}",
        urlencode(&subscriber)
    );
    assert_eq!(
        document,
        serde_json::json!({
            "id": topic,
            "type": "subscription",
            "match_type": "exact",
            "match": "https://example.com/books/1",
            "subscriber": subscriber,
            "active": true,
            "payload": {"user": "alice"},
        })
    );
    // The draft-07 watcher gets the same update: same id, same document, same type.
    let crossed = watcher07.next_signal().await;
    assert_eq!(
        (crossed.id.as_str(), crossed.data.as_str()),
        (event.id.as_str(), event.data.as_str())
    );

    drop(reader);
    let closed = watcher08.next_signal().await;
    let closed: serde_json::Value = serde_json::from_str(&closed.data).expect("json");
    assert_eq!(
        (closed["id"].as_str(), closed["active"].as_bool()),
        (Some(topic.as_str()), Some(false))
    );
    hub.stop().await;
}

#[tokio::test]
async fn the_api_answers_draft08_clients_in_json_with_the_cursor_on_the_link() {
    let hub = TestHub::start_http(enabled(), draft08_http(true)).await;
    let api = format!("http://{}/.well-known/mercure/subscriptions", hub.addr);
    let _draft08 = hub
        .subscribe("match=https://example.com/b&match_urlpattern=https://example.com/:x")
        .await;
    let _draft07 = hub.subscribe("topic=https://example.com/a").await;
    let (status, _) = hub
        .publish(&[("topic", "https://example.com/a"), ("id", "last \"one\"")])
        .await;
    assert_eq!(status, 200);
    let client = reqwest::Client::new();
    let get = |url: String, token: Option<String>| {
        let mut request = client.get(url);
        if let Some(token) = token {
            request = request.header("authorization", bearer(&token));
        }
        request.send()
    };

    // Refusals are RFC 6750's for a draft-08 token.
    let narrow = get(api.clone(), Some(draft08_token(&["https://example.com/b"])))
        .await
        .expect("get");
    assert_eq!(narrow.status(), 403);
    assert!(narrow.headers()["www-authenticate"]
        .to_str()
        .expect("ascii")
        .contains("error=\"insufficient_scope\""));
    let allowed = Some(draft08_token(&["*"]));

    // The cursor moves once the update is dispatched, which may follow its acknowledgement.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let response = loop {
        let response = get(api.clone(), allowed.clone()).await.expect("get");
        let link = response.headers().get("link").cloned();
        if link
            .as_ref()
            .is_some_and(|l| l.to_str().is_ok_and(|l| l.contains("last \\\"one")))
        {
            break response;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cursor never reached the last update: {link:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(
        response.headers()["link"],
        "</.well-known/mercure>; rel=\"mercure\"; last-event-id=\"last \\\"one\\\"\"; \
         type=\"mercure\"; content-type=\"application/json\""
    );
    assert_eq!(response.headers()["etag"], "\"last%20%22one%22\"");
    assert_eq!(response.headers()["cache-control"], "must-revalidate");
    let all = json(response).await;
    assert_eq!(all["type"], "subscriptions");
    assert_eq!(all["id"], "/.well-known/mercure/subscriptions");
    assert!(all.get("@context").is_none() && all.get("lastEventID").is_none());
    let list = all["subscriptions"].as_array().expect("array");
    assert_eq!(list.len(), 3, "{all}");
    // Each subscription in its own dialect's shape.
    let draft07: Vec<_> = list
        .iter()
        .filter(|s| s["type"] == "Subscription")
        .collect();
    assert_eq!(draft07.len(), 1);
    assert_eq!(draft07[0]["topic"], "https://example.com/a");
    let pattern = list
        .iter()
        .find(|s| s["match_type"] == "urlpattern")
        .expect("the URL pattern's subscription");
    assert_eq!(pattern["type"], "subscription");
    let subscriber = pattern["subscriber"].as_str().expect("subscriber");

    let by_matcher = get(
        format!("{api}/exact/https%3A%2F%2Fexample.com%2Fb"),
        allowed.clone(),
    )
    .await
    .expect("get");
    assert_eq!(by_matcher.status(), 200);
    let by_matcher = json(by_matcher).await;
    assert_eq!(
        by_matcher["id"],
        "/.well-known/mercure/subscriptions/exact/https%3A%2F%2Fexample.com%2Fb"
    );
    let only = by_matcher["subscriptions"].as_array().expect("array");
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["match"], "https://example.com/b");
    assert_eq!(only[0]["subscriber"], subscriber);

    // One subscription: the very document of its event, at the URL that is its id.
    let one_url = format!("http://{}{}", hub.addr, pattern["id"].as_str().expect("id"));
    let one = get(one_url, allowed.clone()).await.expect("get");
    assert_eq!(one.status(), 200);
    assert_eq!(one.headers()["content-type"], "application/json");
    assert!(one.headers()["link"]
        .to_str()
        .expect("ascii")
        .contains("last-event-id="));
    assert_eq!(&json(one).await, pattern);

    let missing = get(
        format!("{api}/exact/https%3A%2F%2Fexample.com%2Fb/urn%3Auuid%3Anope"),
        allowed.clone(),
    )
    .await
    .expect("get");
    assert_eq!(missing.status(), 404);
    let unknown_type = get(format!("{api}/regex/x/y"), allowed.clone())
        .await
        .expect("get");
    assert_eq!(unknown_type.status(), 400);
    assert!(unknown_type
        .text()
        .await
        .expect("body")
        .contains("matcher type"));

    // A draft-07 client gets the JSON-LD collection, with the same subscription documents.
    let legacy = get(api.clone(), Some(token(&[SELECTOR], None)))
        .await
        .expect("get");
    assert_eq!(legacy.headers()["content-type"], "application/ld+json");
    let legacy = json(legacy).await;
    assert_eq!(legacy["type"], "Subscriptions");
    assert_eq!(legacy["lastEventID"], "last \"one\"");
    assert!(legacy["subscriptions"]
        .as_array()
        .expect("array")
        .contains(pattern));

    // The metadata document says the hub has the feature.
    let metadata: serde_json::Value = json(
        reqwest::get(format!(
            "http://{}/.well-known/oauth-protected-resource/.well-known/mercure",
            hub.addr
        ))
        .await
        .expect("get"),
    )
    .await;
    assert_eq!(metadata["mercure_subscriptions"], true);
    hub.stop().await;
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
