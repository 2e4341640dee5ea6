//! draft-dunglas-mercure-08 beside draft-07 on the same endpoint, written from the draft's text
//! (`spec/mercure.md`, "Changes from Pre-Standardization Deployments", §Subscription, §Matcher
//! Types, §Publication, §Reconciliation, §Cookie): each row of the table that ssehub implements,
//! in both dialects; an update crossing dialects; mixed and turned-off dialects; URL patterns and
//! their limits.
//!
//! Draft-08 tokens here are `at+jwt` (RFC 9068) carrying the `mercure` claim: draft-08 requests
//! are authorized like draft-07 ones until `authorization_details` grants land.

use std::time::Duration;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use ssehub::dialect::{Dialect, Dialects};
use ssehub::HttpConfig;

use crate::support::{
    config, http_config, publish_with, publisher_token, subscriber_token, SseClient, TestHub,
    SECRET,
};

/// A token signed with the test secret, with `typ` `at+jwt` and these `mercure` claim members.
fn at_jwt(mercure: serde_json::Value) -> String {
    let header = Header {
        typ: Some("at+jwt".into()),
        ..Header::new(Algorithm::HS256)
    };
    let claims = serde_json::json!({
        "iss": "https://localhost",
        "aud": "https://localhost/.well-known/mercure",
        "sub": "test",
        "mercure": mercure,
    });
    encode(
        &header,
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()).expect("key"),
    )
    .expect("sign")
}

fn publisher_at_jwt() -> String {
    at_jwt(serde_json::json!({ "publish": ["*"] }))
}

/// `GET url?query` with `headers`, answered with an error: its status and body.
async fn refused(url: &str, query: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .get(format!("{url}?{query}"))
        .header("accept", "text/event-stream");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = tokio::time::timeout(Duration::from_secs(5), request.send())
        .await
        .expect("an answer within 5 s")
        .expect("connect");
    let status = response.status().as_u16();
    // An error answer ends; a stream that opened instead fails here rather than hanging.
    let body = tokio::time::timeout(Duration::from_secs(2), response.text())
        .await
        .unwrap_or_else(|_| panic!("status {status} and a body that does not end: a stream opened"))
        .expect("body");
    (status, body)
}

fn assert_400(answer: &(u16, String), says: &str) {
    assert_eq!(answer.0, 400, "{}", answer.1);
    assert!(
        answer.1.contains(says),
        "the body should say {says:?}: {}",
        answer.1
    );
}

// Row "Topic matching": `topic` selectors (draft-07) versus `match` / `match_urlpattern`.

#[tokio::test]
async fn topic_matching_draft07_reads_templates_draft08_match_is_byte_wise() {
    let hub = TestHub::start(config()).await;
    // draft-07: `topic` is a URI template when it has expressions.
    let mut template = hub
        .subscribe("topic=https://example.com/books/%7Bid%7D")
        .await;
    // draft-08 §Exact Matching: byte-for-byte, never a template.
    let mut literal = hub
        .subscribe("match=https://example.com/books/%7Bid%7D")
        .await;
    let mut exact = hub.subscribe("match=https://example.com/books/1").await;
    let mut explicit = hub
        .subscribe("match_exact=https://example.com/books/1")
        .await;
    let mut pattern = hub
        .subscribe("match_urlpattern=https://example.com/books/:id")
        .await;
    for sub in [&template, &literal, &exact, &explicit, &pattern] {
        assert_eq!(sub.status, 200);
    }
    let (status, id) = hub
        .publish(&[("topic", "https://example.com/books/1"), ("data", "one")])
        .await;
    assert_eq!(status, 200);
    for sub in [&mut template, &mut exact, &mut explicit, &mut pattern] {
        let event = sub.next_event().await;
        assert_eq!(
            (event.id.as_str(), event.data.as_str()),
            (id.as_str(), "one")
        );
    }
    literal.assert_no_event(Duration::from_millis(200)).await;
    let (_, braces) = hub
        .publish(&[
            ("topic", "https://example.com/books/{id}"),
            ("data", "braces"),
        ])
        .await;
    assert_eq!(literal.next_event().await.id, braces);
}

#[tokio::test]
async fn url_patterns_match_per_the_urlpattern_standard() {
    let hub = TestHub::start(config()).await;
    let mut digits = hub
        .subscribe("match_urlpattern=https://example.com/books/:id(%5Cd%2B)")
        .await;
    let mut relative = hub.subscribe("match_urlpattern=/orders/*").await;
    let mut star = hub.subscribe("match_urlpattern=*").await;
    assert_eq!(digits.status, 200);

    let (_, word) = hub
        .publish(&[("topic", "https://example.com/books/abc")])
        .await;
    let (_, number) = hub
        .publish(&[("topic", "https://EXAMPLE.com/books/42")])
        .await;
    let (_, order) = hub.publish(&[("topic", "/orders/7/lines")]).await;
    // Hosts are case-insensitive (URL canonicalization); the path pattern is not.
    assert_eq!(digits.next_event().await.id, number);
    digits.assert_no_event(Duration::from_millis(100)).await;
    assert_eq!(relative.next_event().await.id, order);
    assert_eq!(star.next_ids(3).await, [word, number, order]);
}

#[tokio::test]
async fn url_pattern_limits_and_bad_matchers_are_400() {
    let hub = TestHub::start(config()).await;
    let long = format!("match_urlpattern=https://example.com/{}", "a".repeat(1100));
    let too_many: Vec<String> = (0..65).map(|i| format!("match=t{i}")).collect();
    for (query, says) in [
        (
            "match_urlpattern=https://example.com/:id(",
            "not a valid URL pattern",
        ),
        // A pattern whose automaton would be huge: refused at compile time (cost limit).
        (
            "match_urlpattern=https://example.com/:id(%5Cw%7B5000%7D)",
            "not a valid URL pattern",
        ),
        (long.as_str(), "at most 1024 allowed"),
        (&too_many.join("&"), "too many topics"),
        // The reserved `match` namespace: unknown types, and other cases, are refused.
        ("match_regex=.*", "unknown matcher parameter"),
        ("Match=a", "unknown matcher parameter"),
        ("matches=a", "unknown matcher parameter"),
        // Values: UTF-8 without control or format characters.
        ("match=%FF", "not valid UTF-8"),
        ("match=a%00b", "U+0000"),
        ("match=a%E2%80%8Bb", "U+200B"),
        ("match=%C2%85", "U+0085"),
        ("match=", "must not be empty"),
    ] {
        assert_400(&refused(&hub.url, query, &[]).await, says);
    }
    // draft-07 reads the same bytes as it always did.
    assert_eq!(hub.subscribe("topic=a%E2%80%8Bb").await.status, 200);
}

// Rows "Reconnection query parameter" and "Reconnection response field".

#[tokio::test]
async fn reconnection_last_event_id_parameter_and_response_field_in_each_dialect() {
    let hub = TestHub::start(config()).await;
    let (_, first) = hub.publish(&[("topic", "t"), ("data", "1")]).await;
    let (_, second) = hub.publish(&[("topic", "t"), ("data", "2")]).await;

    let mut old = hub.subscribe(&format!("topic=t&lastEventID={first}")).await;
    assert_eq!(old.next_event().await.id, second);
    assert_eq!(old.header("last-event-id"), Some(first.as_str()));
    assert_eq!(old.header("mercure-last-event-id"), None);

    let mut new = hub
        .subscribe(&format!("match=t&last_event_id={first}"))
        .await;
    assert_eq!(new.next_event().await.id, second);
    assert_eq!(new.header("mercure-last-event-id"), Some(first.as_str()));
    assert_eq!(new.header("last-event-id"), None);

    // An unknown id: replay of everything kept, and the field says `earliest`.
    let mut unknown = hub.subscribe("match=t&last_event_id=nope").await;
    assert_eq!(unknown.next_ids(2).await, [first.clone(), second.clone()]);
    assert_eq!(unknown.header("mercure-last-event-id"), Some("earliest"));
}

#[tokio::test]
async fn last_event_id_is_single_valued_and_the_header_wins() {
    let hub = TestHub::start(config()).await;
    let (_, first) = hub.publish(&[("topic", "t"), ("data", "1")]).await;
    let (_, second) = hub.publish(&[("topic", "t"), ("data", "2")]).await;
    assert_400(
        &refused(
            &hub.url,
            &format!("match=t&last_event_id={first}&last_event_id=x"),
            &[],
        )
        .await,
        "single-valued",
    );
    let mut sub = SseClient::open(
        &format!("{}?match=t&last_event_id=earliest", hub.url),
        &[("last-event-id", &first)],
    )
    .await;
    assert_eq!(sub.next_event().await.id, second, "the header wins");
    assert_eq!(sub.header("mercure-last-event-id"), Some(first.as_str()));
}

// Rows "Authorization cookie", "Token type" and "Token in the URL".

#[tokio::test]
async fn each_dialect_reads_its_own_cookie() {
    let hub = TestHub::start(config()).await;
    let old_cookie = format!(
        "mercureAuthorization={}",
        subscriber_token(&["private"], None)
    );
    let new_cookie = format!(
        "__Secure-mercure_access_token={}",
        at_jwt(serde_json::json!({ "subscribe": ["private"] }))
    );
    // A browser sends every cookie it holds for the hub: the one of the other dialect is
    // ignored (cookies are ambient), the request's own is used.
    let both = format!("{old_cookie}; {new_cookie}");
    let mut old =
        SseClient::open(&format!("{}?topic=private", hub.url), &[("cookie", &both)]).await;
    let mut new =
        SseClient::open(&format!("{}?match=private", hub.url), &[("cookie", &both)]).await;
    let mut new_only = SseClient::open(
        &format!("{}?match=private", hub.url),
        &[("cookie", &new_cookie)],
    )
    .await;
    // The draft-07 cookie does not authorize a draft-08 request: it gets public updates only.
    let mut wrong_cookie = SseClient::open(
        &format!("{}?match=private", hub.url),
        &[("cookie", &old_cookie)],
    )
    .await;
    for sub in [&old, &new, &new_only, &wrong_cookie] {
        assert_eq!(sub.status, 200);
    }
    let (_, id) = hub
        .publish(&[("topic", "private"), ("private", "on"), ("data", "secret")])
        .await;
    for sub in [&mut old, &mut new, &mut new_only] {
        assert_eq!(sub.next_event().await.id, id);
    }
    wrong_cookie
        .assert_no_event(Duration::from_millis(200))
        .await;
}

#[tokio::test]
async fn token_type_and_token_in_the_url_tell_the_dialect() {
    let hub = TestHub::start(config()).await;
    let new_token = at_jwt(serde_json::json!({ "subscribe": ["p"] }));
    let old_token = subscriber_token(&["p"], None);
    let bearer_new = format!("Bearer {new_token}");
    let bearer_old = format!("Bearer {old_token}");
    let mut new = SseClient::open(
        &format!("{}?match=p", hub.url),
        &[("authorization", &bearer_new)],
    )
    .await;
    let mut old = SseClient::open(
        &format!("{}?topic=p&authorization={old_token}", hub.url),
        &[],
    )
    .await;
    assert_eq!((new.status, old.status), (200, 200));
    let (_, id) = hub.publish(&[("topic", "p"), ("private", "on")]).await;
    assert_eq!(new.next_event().await.id, id);
    assert_eq!(old.next_event().await.id, id);

    // draft-08 takes no token in the URL; an `at+jwt` token is not draft-07's; a draft-07 token
    // is not draft-08's.
    for (query, headers) in [
        (format!("match=p&authorization={new_token}"), vec![]),
        (
            "topic=p".to_owned(),
            vec![("authorization", bearer_new.as_str())],
        ),
        (
            "match=p".to_owned(),
            vec![("authorization", bearer_old.as_str())],
        ),
    ] {
        assert_400(
            &refused(&hub.url, &query, &headers).await,
            "mixes two Mercure dialects",
        );
    }
}

// One hub below both dialects.

#[tokio::test]
async fn an_update_crosses_dialects_with_the_same_id() {
    let hub = TestHub::start(config()).await;
    let mut old = hub
        .subscribe("topic=https://example.com/books/%7Bid%7D")
        .await;
    let mut new = hub
        .subscribe("match_urlpattern=https://example.com/books/:id")
        .await;
    // draft-07 publisher (a plain JWT) → both.
    let (status, from_old) = publish_with(
        &hub.url,
        &publisher_token(&["*"]),
        &[
            ("topic", "https://example.com/books/1"),
            ("data", "from draft-07"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{from_old}");
    // draft-08 publisher (an `at+jwt` token) → both.
    let (status, from_new) = publish_with(
        &hub.url,
        &publisher_at_jwt(),
        &[
            ("topic", "https://example.com/books/2"),
            ("data", "from draft-08"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{from_new}");
    for sub in [&mut old, &mut new] {
        let a = sub.next_event().await;
        let b = sub.next_event().await;
        assert_eq!(
            (a.id.as_str(), a.data.as_str()),
            (from_old.as_str(), "from draft-07")
        );
        assert_eq!(
            (b.id.as_str(), b.data.as_str()),
            (from_new.as_str(), "from draft-08")
        );
    }
    // History is shared: a draft-08 subscriber resumes after a draft-07 publish's id.
    let mut resumed = hub
        .subscribe(&format!(
            "match_urlpattern=https://example.com/books/:id&last_event_id={from_old}"
        ))
        .await;
    assert_eq!(resumed.next_event().await.id, from_new);
}

#[tokio::test]
async fn a_request_mixing_the_dialects_is_400() {
    let hub = TestHub::start(config()).await;
    for query in [
        "topic=a&match=a",
        "match=a&lastEventID=x",
        "topic=a&last_event_id=x",
    ] {
        assert_400(
            &refused(&hub.url, query, &[]).await,
            "mixes two Mercure dialects",
        );
    }
    let (status, body) = publish_with(
        &format!("{}?authorization={}", hub.url, publisher_at_jwt()),
        &publisher_at_jwt(),
        &[("topic", "a")],
    )
    .await;
    // The header's `at+jwt` token (draft-08) beside a token in the URL (draft-07).
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("mixes two Mercure dialects"), "{body}");
}

#[tokio::test]
async fn a_turned_off_dialect_is_400() {
    let only = |dialect| HttpConfig {
        dialects: Dialects::only(dialect),
        ..http_config()
    };
    let old_only = TestHub::start_http(config(), only(Dialect::Draft07)).await;
    assert_400(
        &refused(&old_only.url, "match=a", &[]).await,
        "draft-08 requests are turned off",
    );
    assert_eq!(old_only.subscribe("topic=a").await.status, 200);
    let (status, body) = publish_with(&old_only.url, &publisher_at_jwt(), &[("topic", "a")]).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("draft-08 requests are turned off"), "{body}");

    let new_only = TestHub::start_http(config(), only(Dialect::Draft08)).await;
    assert_400(
        &refused(&new_only.url, "topic=a", &[]).await,
        "draft-07 requests are turned off",
    );
    assert_eq!(new_only.subscribe("match=a").await.status, 200);
    let (status, _) = publish_with(&new_only.url, &publisher_at_jwt(), &[("topic", "a")]).await;
    assert_eq!(status, 200);
}

// §Publication and §Reserved Hub Namespace.

#[tokio::test]
async fn publishers_cannot_use_the_reserved_namespace_or_type_in_either_dialect() {
    let hub = TestHub::start(config()).await;
    for token in [publisher_token(&["*"]), publisher_at_jwt()] {
        for topic in [
            "/.well-known/mercure/subscriptions/a/b",
            "https://hub.example.com/.well-known/mercure/subscriptions/x",
            "/.well-known/%6Dercure/x",
        ] {
            let (status, body) = publish_with(&hub.url, &token, &[("topic", topic)]).await;
            assert_eq!(status, 400, "{topic}: {body}");
            assert!(body.contains("reserved namespace"), "{body}");
        }
        let (status, body) =
            publish_with(&hub.url, &token, &[("topic", "a"), ("type", "mercure")]).await;
        assert_eq!(status, 400, "{body}");
    }
    // draft-08's own publish rules, for draft-08 publishers.
    for form in [
        vec![("topic", "*")],
        vec![("topic", "a\u{200B}b")],
        vec![("topic", "a"), ("id", "x\u{202E}y")],
    ] {
        let (status, body) = publish_with(&hub.url, &publisher_at_jwt(), &form).await;
        assert_eq!(status, 400, "{form:?}: {body}");
    }
    let (status, _) = publish_with(
        &hub.url,
        &publisher_token(&["*"]),
        &[("topic", "a\u{200B}b")],
    )
    .await;
    assert_eq!(status, 200, "draft-07 publishes keep their rules");
}

// The setting, through the real binary: `dialects` in the file, `SSEHUB_DIALECTS` over it.

#[tokio::test]
async fn the_dialects_setting_reads_the_file_and_the_environment() {
    use crate::support::binary::BinaryHub;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ssehub.toml");
    std::fs::write(
        &path,
        format!(
            "jwt_key = \"{SECRET}\"\nanonymous = true\nhistory = \"memory\"\ndialects = [\"draft-08\"]\n"
        ),
    )
    .expect("write config");
    let path = path.to_str().expect("utf-8 path");

    let hub = BinaryHub::start(&["--config", path], &[]);
    assert_400(
        &refused(&hub.url, "topic=a", &[]).await,
        "draft-07 requests are turned off",
    );
    assert_eq!(
        SseClient::open(&format!("{}?match=a", hub.url), &[])
            .await
            .status,
        200
    );
    drop(hub);

    let hub = BinaryHub::start(&["--config", path], &[("SSEHUB_DIALECTS", "draft-07")]);
    assert_400(
        &refused(&hub.url, "match=a", &[]).await,
        "draft-08 requests are turned off",
    );
    assert_eq!(
        SseClient::open(&format!("{}?topic=a", hub.url), &[])
            .await
            .status,
        200
    );
}

// A browser's own `EventSource` on draft-08 (headless Chromium, on the hub's origin).

#[tokio::test]
async fn a_browser_event_source_speaks_draft08_and_resumes_with_its_header() {
    use crate::support::chromium::{event_source_page, start_event_source, EVENT_SOURCE_STATE};
    use crate::support::eventually;
    crate::support::chromium::require_chromium();
    let hub = TestHub::start(config()).await;
    let (_, a) = hub
        .publish(&[("topic", "https://example.com/books/1"), ("data", "a")])
        .await;
    hub.publish(&[("topic", "https://example.com/books/2"), ("data", "b")])
        .await;
    let (_browser, mut page) = event_source_page(
        &format!("http://{}", hub.addr),
        &format!("match_urlpattern=https://example.com/books/:id&last_event_id={a}"),
    )
    .await;
    page.wait_until(
        "t.data.length >= 1",
        Duration::from_secs(20),
        EVENT_SOURCE_STATE,
    )
    .await;
    // A draft-07 publisher's update reaches the draft-08 page.
    hub.publish(&[("topic", "https://example.com/books/3"), ("data", "c")])
        .await;
    page.wait_until(
        "t.data.length >= 2",
        Duration::from_secs(10),
        EVENT_SOURCE_STATE,
    )
    .await;
    // Cut the stream; the browser comes back with its Last-Event-ID header (and the same
    // draft-08 query) and gets what it missed, once.
    let id = *hub
        .opens
        .lock()
        .expect("lock")
        .last()
        .expect("an open stream");
    assert!(hub.hub.close_subscriber(id));
    eventually(Duration::from_secs(2), "the stream is gone", || {
        hub.hub.subscriber_count() == 0
    })
    .await;
    hub.publish(&[("topic", "https://example.com/books/4"), ("data", "d")])
        .await;
    page.wait_until(
        "t.data.length >= 3 && es.readyState === 1",
        Duration::from_secs(15),
        EVENT_SOURCE_STATE,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let state: serde_json::Value =
        serde_json::from_str(page.eval(EVENT_SOURCE_STATE).await.as_str().expect("state"))
            .expect("JSON");
    assert_eq!(state["data"], serde_json::json!(["b", "c", "d"]), "{state}");
    assert_eq!(state["opened"], 2, "{state}");

    // A mixed request is a 400: the browser's EventSource fails for good (CLOSED), never opens.
    start_event_source(&mut page, "topic=a&match=a").await;
    page.wait_until(
        "es.readyState === 2 && t.errors === 1 && t.opened === 0",
        Duration::from_secs(10),
        EVENT_SOURCE_STATE,
    )
    .await;
}

// Beyond the table, draft-08 §Subscription: `QUERY` with the matchers in a form body.

/// A `QUERY` subscription to `url?query` with `body` (form-encoded unless `content_type`).
fn query_request(
    url: &str,
    query: &str,
    body: &str,
    content_type: &str,
) -> reqwest::RequestBuilder {
    let method = reqwest::Method::from_bytes(b"QUERY").expect("method");
    reqwest::Client::new()
        .request(method, format!("{url}?{query}"))
        .header("accept", "text/event-stream")
        .header("content-type", content_type)
        .body(body.to_owned())
}

const FORM: &str = "application/x-www-form-urlencoded";

#[tokio::test]
async fn a_query_subscription_takes_the_union_of_its_query_and_its_body() {
    let hub = TestHub::start(config()).await;
    for (topic, id) in [("a", "old-a"), ("b", "old-b")] {
        hub.publish(&[("topic", topic), ("id", id)]).await;
    }
    // Matchers in both components; `last_event_id` in both: the query component's wins.
    let mut sub = SseClient::send(query_request(
        &hub.url,
        "match=c&last_event_id=old-a",
        "match=a&match=b&last_event_id=nonexistent",
        FORM,
    ))
    .await;
    assert_eq!(sub.status, 200);
    assert_eq!(sub.header("mercure-last-event-id"), Some("old-a"));
    assert_eq!(sub.next_event().await.id, "old-b", "replay after old-a");
    for topic in ["a", "d", "b", "c"] {
        hub.publish(&[("topic", topic), ("id", &format!("new-{topic}"))])
            .await;
    }
    assert_eq!(
        sub.next_ids(3).await,
        ["new-a", "new-b", "new-c"],
        "a and b from the body, c from the query; never d"
    );

    // The body's values follow the same rules as the query's.
    let refusals = [
        (
            query_request(&hub.url, "", "match_bogus=x", FORM),
            400,
            "reserved",
        ),
        (
            query_request(
                &hub.url,
                "",
                "match=a&last_event_id=x&last_event_id=y",
                FORM,
            ),
            400,
            "single-valued",
        ),
        (
            query_request(&hub.url, "", "match=a%07", FORM),
            400,
            "control",
        ),
        (
            query_request(&hub.url, "", "match=a", "text/plain"),
            415,
            "x-www-form-urlencoded",
        ),
        (
            query_request(
                &hub.url,
                "",
                &format!("match={}", "a".repeat(2 << 20)),
                FORM,
            ),
            413,
            "limit",
        ),
        (query_request(&hub.url, "", "", FORM), 400, "topic"),
    ];
    for (request, status, says) in refusals {
        let response = request.send().await.expect("answer");
        assert_eq!(response.status().as_u16(), status);
        let body = tokio::time::timeout(Duration::from_secs(2), response.text())
            .await
            .expect("an error answer ends")
            .expect("body");
        assert!(body.contains(says), "{status} should say {says:?}: {body}");
    }

    // Other methods are told which ones the endpoint takes.
    let response = reqwest::Client::new()
        .put(&hub.url)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, HEAD, POST, QUERY");
    assert!(response.text().await.expect("body").contains("QUERY"));
}

// Beyond the table, draft-08 §Reconciliation: a replayed private update is checked against the current token.

#[tokio::test]
async fn replayed_private_updates_are_authorized_by_the_current_token() {
    let hub = TestHub::start(config()).await;
    let (_, private) = hub
        .publish(&[("topic", "p"), ("private", "on"), ("data", "secret")])
        .await;
    let (_, public) = hub.publish(&[("topic", "p"), ("data", "public")]).await;
    let resume = |token: String| {
        let url = format!("{}?match=p&last_event_id=earliest", hub.url);
        async move { SseClient::open(&url, &[("authorization", &format!("Bearer {token}"))]).await }
    };
    let mut allowed = resume(at_jwt(serde_json::json!({ "subscribe": ["p"] }))).await;
    assert_eq!(allowed.next_ids(2).await, [private.clone(), public.clone()]);
    // A token for other topics replays the public update, and not the private one before it.
    let mut other = resume(at_jwt(serde_json::json!({ "subscribe": ["q"] }))).await;
    assert_eq!(other.status, 200);
    assert_eq!(other.next_event().await.id, public);
    assert!(!String::from_utf8_lossy(&other.raw).contains("secret"));
}

// Beyond the table, draft-08 §Publication: a draft-08 publish over the hub's limits is 413 (draft-07 keeps its 400).

#[tokio::test]
async fn a_draft08_publish_over_the_limits_is_413_and_a_draft07_one_400() {
    let hub = TestHub::start(config()).await;
    let many: Vec<(&str, String)> = (0..65).map(|i| ("topic", format!("t{i}"))).collect();
    let long_id = "x".repeat(5000);
    let forms: [Vec<(&str, String)>; 2] = [many, vec![("topic", "t".into()), ("id", long_id)]];
    for form in forms {
        for (token, status) in [(publisher_at_jwt(), 413), (publisher_token(&["*"]), 400)] {
            let response = reqwest::Client::new()
                .post(&hub.url)
                .bearer_auth(&token)
                .form(&form)
                .send()
                .await
                .expect("answer");
            assert_eq!(response.status().as_u16(), status);
            let body = response.text().await.expect("body");
            assert!(body.contains("too"), "{body}");
        }
    }
    assert_eq!(hub.hub.history_len(), 0, "nothing stored");
}
