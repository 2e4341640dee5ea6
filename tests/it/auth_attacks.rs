//! Attacks on authorization (issue 9): forged, confused, stale and mis-addressed tokens, tokens
//! of the wrong shape, and private updates looking for a way out (replay, the subscriptions API,
//! error bodies and the hub's logs). Every refusal must be a clear 4xx that quotes nothing
//! secret; nothing here may get a 500.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use ssehub::auth::{AuthConfig, JwtAlgorithm, JwtVerifier};
use ssehub::{HttpConfig, HubConfig};

use crate::auth::openssl_key_pair;
use crate::support::binary::BinaryHub;
use crate::support::{config, http_config, publish_with, SseClient, TestHub, SECRET};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS of raw JSON `header` and `claims`, signed with `key` for `algorithm`.
fn sign_raw(algorithm: Algorithm, key: &EncodingKey, header: &str, claims: &str) -> String {
    let message = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, algorithm).expect("signs");
    format!("{message}.{signature}")
}

/// HS256 with the test hubs' secret, header and claims byte for byte.
fn hs256(header: &str, claims: &str) -> String {
    let key = EncodingKey::from_secret(SECRET.as_bytes()).expect("key");
    sign_raw(Algorithm::HS256, &key, header, claims)
}

/// HS256 with the usual header.
fn hs256_claims(claims: &Value) -> String {
    hs256(r#"{"alg":"HS256","typ":"JWT"}"#, &claims.to_string())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A claim that may publish and read everything.
fn all_powerful() -> Value {
    json!({"mercure": {"publish": ["*"], "subscribe": ["*"]}})
}

/// HTTP settings with HS256 keys and no anonymous subscribers.
fn no_anonymous() -> HttpConfig {
    let mut http = http_config();
    http.auth.anonymous = false;
    http
}

/// Opens a subscription with `headers`; answers the status and, for a refusal, the body (a
/// stream's body is never read).
async fn subscribe_status(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .get(url)
        .header("accept", "text/event-stream");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = tokio::time::timeout(Duration::from_secs(5), request.send())
        .await
        .expect("answer within 5 s")
        .expect("request");
    let status = response.status().as_u16();
    if status == 200 {
        return (200, String::new());
    }
    let www_authenticate = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ascii").to_owned());
    let body = response.text().await.expect("body");
    if status == 401 {
        assert_eq!(www_authenticate.as_deref(), Some("Bearer"), "{body}");
    }
    (status, body)
}

/// Subscribes to `topic=t` with a bearer token.
async fn subscribe_with(hub_url: &str, token: &str) -> (u16, String) {
    subscribe_status(
        &format!("{hub_url}?topic=t"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
}

/// Asserts a refusal: `status`, a body that says why (contains `reason`), and none of `secrets`.
fn assert_refused(
    what: &str,
    (status, body): &(u16, String),
    expected: u16,
    reason: &str,
    secrets: &[&str],
) {
    assert_eq!(*status, expected, "{what}: {body}");
    assert!(
        body.to_lowercase().contains(&reason.to_lowercase()),
        "{what}: the body should say {reason:?}: {body}"
    );
    for secret in secrets {
        assert!(
            !body.contains(secret),
            "{what}: the body quotes {secret:?}: {body}"
        );
    }
}

#[tokio::test]
async fn alg_none_is_refused_in_every_spelling_with_or_without_a_signature() {
    let hub = TestHub::start_http(config(), no_anonymous()).await;
    let claims = all_powerful().to_string();
    let hmac = EncodingKey::from_secret(SECRET.as_bytes()).expect("key");
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
        let unsigned = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
        // The same message with a genuine HS256 signature: a hub that believed the header and
        // skipped verification, or one that verified with its secret whatever the header said,
        // would take it.
        let hmac_signed = sign_raw(Algorithm::HS256, &hmac, &header, &claims);
        for token in [format!("{unsigned}."), unsigned.clone(), hmac_signed] {
            let secrets = [token.as_str(), SECRET, &unsigned[..20]];
            let publish =
                publish_with(&hub.url, &token, &[("topic", "t"), ("data", "forged")]).await;
            assert_refused(
                &format!("publish alg {alg}"),
                &publish,
                401,
                "token",
                &secrets,
            );
            let subscribe = subscribe_with(&hub.url, &token).await;
            assert_refused(
                &format!("subscribe alg {alg}"),
                &subscribe,
                401,
                "token",
                &secrets,
            );
        }
        // Three parts: the header is what fails, and the body says which algorithm is wanted.
        let publish = publish_with(&hub.url, &format!("{unsigned}."), &[("topic", "t")]).await;
        assert_refused("alg none", &publish, 401, "alg: none", &[]);
        assert!(publish.1.contains("HS256"), "{}", publish.1);
    }
    assert_eq!(hub.hub.history_len(), 0, "a forged publish was stored");
}

#[tokio::test]
async fn algorithm_confusion_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("rsa")).expect("dir");
    std::fs::create_dir_all(dir.path().join("ec")).expect("dir");
    let (rsa_private, rsa_public) = openssl_key_pair(
        &dir.path().join("rsa"),
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let (ec_private, ec_public) = openssl_key_pair(
        &dir.path().join("ec"),
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    assert!(
        rsa_public.ends_with('\n'),
        "openssl writes a trailing newline"
    );
    let rsa_key = EncodingKey::from_rsa_pem(rsa_private.as_bytes()).expect("rsa");
    let ec_key = EncodingKey::from_ec_pem(ec_private.as_bytes()).expect("ec");
    let claims = all_powerful().to_string();
    let header = |alg: &str| format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
    // The public key's PEM text, as a server that hands the configured key to HMAC would use it.
    let hmac_with = |public: &str, alg: Algorithm, name: &str| {
        sign_raw(
            alg,
            &EncodingKey::from_secret(public.as_bytes()).expect("hmac"),
            &header(name),
            &claims,
        )
    };

    for (algorithm, public, genuine, attacks) in [
        (
            JwtAlgorithm::RS256,
            &rsa_public,
            sign_raw(Algorithm::RS256, &rsa_key, &header("RS256"), &claims),
            vec![
                (
                    "HS256 keyed with the PEM",
                    hmac_with(&rsa_public, Algorithm::HS256, "HS256"),
                ),
                (
                    "HS256 keyed with the PEM without its newline",
                    hmac_with(rsa_public.trim_end(), Algorithm::HS256, "HS256"),
                ),
                (
                    "HS512 keyed with the PEM",
                    hmac_with(&rsa_public, Algorithm::HS512, "HS512"),
                ),
                (
                    "ES256 from another key",
                    sign_raw(Algorithm::ES256, &ec_key, &header("ES256"), &claims),
                ),
            ],
        ),
        (
            JwtAlgorithm::ES256,
            &ec_public,
            sign_raw(Algorithm::ES256, &ec_key, &header("ES256"), &claims),
            vec![
                (
                    "HS256 keyed with the PEM",
                    hmac_with(&ec_public, Algorithm::HS256, "HS256"),
                ),
                (
                    "HS256 keyed with the PEM without its newline",
                    hmac_with(ec_public.trim_end(), Algorithm::HS256, "HS256"),
                ),
                (
                    "RS256 from another key",
                    sign_raw(Algorithm::RS256, &rsa_key, &header("RS256"), &claims),
                ),
            ],
        ),
    ] {
        let verifier = JwtVerifier::new(algorithm, public).expect("public key");
        let hub = TestHub::start_http(
            config(),
            HttpConfig {
                auth: AuthConfig {
                    publisher: Some(verifier.clone()),
                    subscriber: Some(verifier),
                    anonymous: false,
                },
                ..HttpConfig::default()
            },
        )
        .await;
        // The genuine token works, so the refusals below are about the attack.
        let (status, body) = publish_with(&hub.url, &genuine, &[("topic", "t")]).await;
        assert_eq!(status, 200, "{algorithm} genuine: {body}");
        assert_eq!(subscribe_with(&hub.url, &genuine).await.0, 200);
        let secrets = ["BEGIN PUBLIC KEY", "PRIVATE"];
        for (attack, token) in attacks {
            let what = format!("{algorithm} hub, {attack}");
            let publish = publish_with(&hub.url, &token, &[("topic", "t")]).await;
            assert_refused(&what, &publish, 401, &algorithm.to_string(), &secrets);
            let subscribe = subscribe_with(&hub.url, &token).await;
            assert_refused(&what, &subscribe, 401, &algorithm.to_string(), &secrets);
        }
        assert_eq!(
            hub.hub.history_len(),
            1,
            "{algorithm}: only the genuine publish"
        );
    }
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_refused() {
    let hub = TestHub::start_http(config(), no_anonymous()).await;
    let at = |extra: Value| {
        let mut claims = all_powerful();
        for (name, value) in extra.as_object().expect("object") {
            claims[name] = value.clone();
        }
        hs256_claims(&claims)
    };
    let now = now();
    let refused = [
        ("exp an hour ago", at(json!({"exp": now - 3600})), "expired"),
        ("exp 1 s ago", at(json!({"exp": now - 1})), "expired"),
        // RFC 7519 §4.1.4: "the current date/time MUST be before" exp.
        ("exp this second", at(json!({"exp": now})), "expired"),
        (
            "exp 1.5 s ago",
            at(json!({"exp": now as f64 - 1.5})),
            "expired",
        ),
        (
            "nbf in a minute",
            at(json!({"nbf": now + 60, "exp": now + 3600})),
            "not valid yet",
        ),
        (
            "nbf in a year",
            at(json!({"nbf": now + 365 * 86_400})),
            "not valid yet",
        ),
        ("nbf not a number", at(json!({"nbf": "yesterday"})), "nbf"),
        ("exp not a number", at(json!({"exp": "tomorrow"})), "exp"),
    ];
    for (what, token, reason) in &refused {
        let publish = publish_with(&hub.url, token, &[("topic", "t")]).await;
        assert_refused(what, &publish, 401, reason, &[token.as_str(), SECRET]);
        let subscribe = subscribe_with(&hub.url, token).await;
        assert_refused(what, &subscribe, 401, reason, &[token.as_str(), SECRET]);
    }
    let accepted = [
        ("nbf a minute ago", at(json!({"nbf": now - 60}))),
        (
            "nbf now, exp in an hour",
            at(json!({"nbf": now, "exp": now + 3600})),
        ),
        (
            "nbf as a float in the past",
            at(json!({"nbf": now as f64 - 10.25})),
        ),
    ];
    for (what, token) in &accepted {
        let (status, body) = publish_with(&hub.url, token, &[("topic", "t")]).await;
        assert_eq!(status, 200, "{what}: {body}");
        assert_eq!(subscribe_with(&hub.url, token).await.0, 200, "{what}");
    }
    assert_eq!(hub.hub.history_len(), accepted.len());
}

fn audience_config(audiences: &[&str]) -> HttpConfig {
    let verifier = JwtVerifier::new(JwtAlgorithm::HS256, SECRET)
        .expect("key")
        .with_audience(audiences);
    HttpConfig {
        auth: AuthConfig {
            publisher: Some(verifier.clone()),
            subscriber: Some(verifier),
            anonymous: false,
        },
        ..HttpConfig::default()
    }
}

fn with_aud(aud: Option<Value>) -> String {
    let mut claims = all_powerful();
    if let Some(aud) = aud {
        claims["aud"] = aud;
    }
    hs256_claims(&claims)
}

#[tokio::test]
async fn a_configured_audience_is_required() {
    let hub = TestHub::start_http(
        config(),
        audience_config(&["https://hub.example.com", "ssehub"]),
    )
    .await;
    let refused = [
        ("no aud", with_aud(None), "no valid aud"),
        (
            "another audience",
            with_aud(Some(json!("https://other.example.com"))),
            "audience",
        ),
        (
            "other audiences",
            with_aud(Some(json!(["a", "b"]))),
            "audience",
        ),
        ("an empty list", with_aud(Some(json!([]))), "audience"),
        (
            "a prefix of ours",
            with_aud(Some(json!("https://hub.example"))),
            "audience",
        ),
        ("a number", with_aud(Some(json!(42))), "no valid aud"),
    ];
    for (what, token, reason) in &refused {
        let publish = publish_with(&hub.url, token, &[("topic", "t")]).await;
        assert_refused(what, &publish, 401, reason, &[token.as_str(), SECRET]);
        let subscribe = subscribe_with(&hub.url, token).await;
        assert_refused(what, &subscribe, 401, reason, &[token.as_str(), SECRET]);
    }
    for aud in [
        json!("https://hub.example.com"),
        json!("ssehub"),
        json!(["https://other.example.com", "ssehub"]),
    ] {
        let token = with_aud(Some(aud.clone()));
        let (status, body) = publish_with(&hub.url, &token, &[("topic", "t")]).await;
        assert_eq!(status, 200, "{aud}: {body}");
        assert_eq!(subscribe_with(&hub.url, &token).await.0, 200, "{aud}");
    }
}

#[tokio::test]
async fn without_an_audience_aud_is_ignored() {
    let hub = TestHub::start_http(config(), no_anonymous()).await;
    for aud in [
        None,
        Some(json!("anyone")),
        Some(json!(["a", "b"])),
        Some(json!(7)),
    ] {
        let token = with_aud(aud.clone());
        let (status, body) = publish_with(&hub.url, &token, &[("topic", "t")]).await;
        assert_eq!(status, 200, "{aud:?}: {body}");
        assert_eq!(subscribe_with(&hub.url, &token).await.0, 200, "{aud:?}");
    }
}

#[tokio::test]
async fn the_binary_takes_the_audience_from_its_config_file_and_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("ssehub.toml");
    std::fs::write(
        &file,
        format!("jwt_key = \"{SECRET}\"\nhistory = \"memory\"\njwt_audience = [\"https://a.example\", \"https://b.example\"]\n"),
    )
    .expect("config file");
    let from_file = BinaryHub::start(&["--config", file.to_str().expect("utf-8")], &[]);
    let from_env = BinaryHub::start(
        &["--jwt-key", SECRET, "--history", "memory"],
        &[("SSEHUB_JWT_AUDIENCE", "https://c.example,https://d.example")],
    );
    for (hub, ours, theirs) in [
        (&from_file, "https://b.example", "https://c.example"),
        (&from_env, "https://d.example", "https://a.example"),
    ] {
        let (status, body) =
            publish_with(&hub.url, &with_aud(Some(json!(ours))), &[("topic", "t")]).await;
        assert_eq!(status, 200, "{ours}: {body}");
        for token in [with_aud(Some(json!(theirs))), with_aud(None)] {
            let (status, body) = publish_with(&hub.url, &token, &[("topic", "t")]).await;
            assert_eq!(status, 401, "{theirs}: {body}");
            assert_eq!(subscribe_with(&hub.url, &token).await.0, 401);
        }
        assert_eq!(
            subscribe_with(&hub.url, &with_aud(Some(json!(ours))))
                .await
                .0,
            200
        );
    }
}

const PRIVATE_TOPIC: &str = "https://example.com/users/alice/inbox";

/// Publishes `p1 s1 p2 s2 p3` (s* private, to [`PRIVATE_TOPIC`]); returns the ids in order.
async fn publish_mixed(hub: &TestHub) -> Vec<String> {
    let mut ids = Vec::new();
    for (i, private) in [false, true, false, true, false].into_iter().enumerate() {
        let data = format!("{}-{i}", if private { "secret" } else { "public" });
        let mut form = vec![
            (
                "topic",
                if private {
                    PRIVATE_TOPIC
                } else {
                    "https://example.com/news"
                },
            ),
            ("data", data.as_str()),
        ];
        if private {
            form.push(("private", "on"));
        }
        let (status, id) = hub.publish(&form).await;
        assert_eq!(status, 200, "{id}");
        ids.push(id);
    }
    ids
}

#[tokio::test]
async fn replay_never_leaks_private_updates() {
    let hub = TestHub::start(config()).await;
    let ids = publish_mixed(&hub).await;
    let (p1, s1, p2, s2, p3) = (&ids[0], &ids[1], &ids[2], &ids[3], &ids[4]);
    let alice =
        hs256_claims(&json!({"mercure": {"subscribe": ["https://example.com/users/alice/{box}"]}}));
    let bob =
        hs256_claims(&json!({"mercure": {"subscribe": ["https://example.com/users/bob/{box}"]}}));
    let bearer = |token: &str| format!("Bearer {token}");
    let resume = |token: Option<&str>, after: &str| {
        let mut headers = vec![("last-event-id".to_owned(), after.to_owned())];
        if let Some(token) = token {
            headers.push(("authorization".to_owned(), bearer(token)));
        }
        let url = format!("{}?topic=*", hub.url);
        async move {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            SseClient::open(&url, &headers).await
        }
    };
    for (who, token) in [("anonymous", None), ("bob", Some(bob.as_str()))] {
        for (after, expected) in [
            ("earliest", vec![p1, p2, p3]),
            (p1.as_str(), vec![p2, p3]),
            // Resuming right after a private event it never saw: still nothing private.
            (s1.as_str(), vec![p2, p3]),
            (s2.as_str(), vec![p3]),
        ] {
            let mut sub = resume(token, after).await;
            assert_eq!(sub.status, 200);
            let got = sub.next_ids(expected.len()).await;
            assert_eq!(
                got,
                expected.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "{who} after {after}"
            );
            sub.assert_no_event(Duration::from_millis(200)).await;
            let raw = String::from_utf8_lossy(&sub.raw);
            assert!(
                !raw.contains("secret-") && !raw.contains(PRIVATE_TOPIC),
                "{who}: {raw}"
            );
        }
    }
    let mut everything = resume(Some(&alice), "earliest").await;
    assert_eq!(everything.next_ids(5).await, ids);
    let mut from_p1 = resume(Some(&alice), p1).await;
    assert_eq!(
        from_p1.next_ids(4).await,
        [s1, p2, s2, p3].map(String::clone)
    );
    let data: Vec<String> = {
        let mut again = resume(Some(&alice), "earliest").await;
        let mut data = Vec::new();
        for _ in 0..5 {
            data.push(again.next_event().await.data);
        }
        data
    };
    assert_eq!(
        data,
        ["public-0", "secret-1", "public-2", "secret-3", "public-4"]
    );

    // Live after replay, the same rule.
    let mut anonymous = resume(None, p3).await;
    let (_, live_private) = hub
        .publish(&[
            ("topic", PRIVATE_TOPIC),
            ("data", "secret-live"),
            ("private", "on"),
        ])
        .await;
    let (_, live_public) = hub.publish(&[("topic", "https://example.com/news")]).await;
    assert_eq!(
        everything.next_ids(2).await,
        [live_private, live_public.clone()]
    );
    assert_eq!(anonymous.next_event().await.id, live_public);
}

const SUBSCRIPTIONS: &str = "/.well-known/mercure/subscriptions";

fn encode_component(value: &str) -> String {
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

#[tokio::test]
async fn the_subscriptions_api_shows_only_what_the_token_allows() {
    let hub = TestHub::start(HubConfig {
        subscriptions: true,
        ..config()
    })
    .await;
    let api = format!("http://{}{SUBSCRIPTIONS}", hub.addr);
    let (topic_a, topic_b) = ("https://example.com/a", "https://example.com/b");
    let alice_selector = "https://example.com/users/alice-only/{box}";
    let alice = hs256_claims(&json!({"mercure": {
        "subscribe": [alice_selector],
        "payload": {"user": "alice"},
    }}));
    // A watcher of topic A's subscription events only.
    let a_only = format!(
        "{SUBSCRIPTIONS}/{}{{/subscriber}}",
        encode_component(topic_a)
    );
    let watcher_token = hs256_claims(&json!({"mercure": {"subscribe": [a_only]}}));
    let mut watcher = SseClient::open(
        &format!(
            "{}?topic={}",
            hub.url,
            encode_component(&format!("{SUBSCRIPTIONS}{{/topic}}{{/subscriber}}"))
        ),
        &[("authorization", &format!("Bearer {watcher_token}"))],
    )
    .await;
    assert_eq!(watcher.status, 200);
    let _alice = SseClient::open(
        &format!(
            "{}?topic={}&topic={}",
            hub.url,
            encode_component(topic_a),
            encode_component(topic_b)
        ),
        &[("authorization", &format!("Bearer {alice}"))],
    )
    .await;
    // The watcher hears of alice's subscription to A, never of the one to B.
    let event: Value = serde_json::from_str(&watcher.next_event().await.data).expect("json");
    assert_eq!(event["topic"], topic_a);
    let subscriber = event["subscriber"].as_str().expect("subscriber").to_owned();
    watcher.assert_no_event(Duration::from_millis(300)).await;

    let get = |path: String, token: Option<String>| {
        let request = reqwest::Client::new().get(format!("{api}{path}"));
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        async move {
            let response = request.send().await.expect("get");
            let status = response.status().as_u16();
            (status, response.text().await.expect("body"))
        }
    };
    let by_topic = |topic: &str| format!("/{}", encode_component(topic));
    let one = |topic: &str| {
        format!(
            "/{}/{}",
            encode_component(topic),
            encode_component(&subscriber)
        )
    };
    let leaks = ["alice", subscriber.as_str(), alice_selector, alice.as_str()];

    // No token or a bad one: 401, whatever the path.
    for path in [String::new(), by_topic(topic_a), one(topic_a)] {
        for token in [
            None,
            Some("garbage".to_owned()),
            Some(hs256_claims(
                &json!({"mercure": {"subscribe": [a_only]}, "exp": 1}),
            )),
        ] {
            let refused = get(path.clone(), token).await;
            assert_refused(&path, &refused, 401, "token", &leaks);
        }
    }
    // alice's own token allows private updates of her topics, not the API.
    let refused = get(one(topic_a), Some(alice.clone())).await;
    assert_refused(
        "alice's token",
        &refused,
        403,
        "mercure.subscribe",
        &["payload", "user"],
    );
    // The A-only token: A's list and A's subscription, nothing else.
    let scoped = Some(hs256_claims(&json!({"mercure": {"subscribe": [a_only]}})));
    for path in [String::new(), by_topic(topic_b), one(topic_b)] {
        let refused = get(path.clone(), scoped.clone()).await;
        assert_refused(&path, &refused, 403, "mercure.subscribe", &leaks);
    }
    let (status, body) = get(by_topic(topic_a), scoped.clone()).await;
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).expect("json");
    let subscriptions = list["subscriptions"].as_array().expect("array");
    assert_eq!(subscriptions.len(), 1, "{body}");
    assert!(!body.contains(topic_b), "{body}");
    let (status, body) = get(one(topic_a), scoped).await;
    assert_eq!(status, 200, "{body}");
    // The document carries what the spec lists (the payload included), never the subscriber's
    // token or its mercure.subscribe selectors.
    let document: Value = serde_json::from_str(&body).expect("json");
    let mut keys: Vec<&str> = document
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "@context",
            "active",
            "id",
            "lastEventID",
            "payload",
            "subscriber",
            "topic",
            "type"
        ]
    );
    assert_eq!(document["payload"], json!({"user": "alice"}));
    for secret in [alice_selector, alice.as_str(), SECRET] {
        assert!(!body.contains(secret), "{body}");
    }
}

#[tokio::test]
async fn refusals_and_logs_never_quote_secrets_or_private_data() {
    const CANARY: &str = "claim-canary-7f3e";
    const PRIVATE_DATA: &str = "private-data-5c1a";
    const HIDDEN_TOPIC: &str = "https://example.com/hidden-topic-9b2d";
    let hub = BinaryHub::start(
        &[
            "--jwt-key",
            SECRET,
            "--anonymous",
            "--history",
            "memory",
            "--max-publish-bytes",
            "2048",
        ],
        &[("RUST_LOG", "debug")],
    );
    let publisher = crate::support::publisher_token(&["*"]);
    let (status, _) = publish_with(
        &hub.url,
        &publisher,
        &[
            ("topic", HIDDEN_TOPIC),
            ("data", PRIVATE_DATA),
            ("private", "on"),
        ],
    )
    .await;
    assert_eq!(status, 200);

    let wrong_key = sign_raw(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"not-the-secret-not-the-secret-!!").expect("key"),
        r#"{"alg":"HS256"}"#,
        &json!({"mercure": {"publish": [CANARY]}}).to_string(),
    );
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none"}"#),
        b64(json!({"mercure": {"publish": [CANARY]}})
            .to_string()
            .as_bytes())
    );
    let wrong_types = [
        json!({"mercure": {"publish": CANARY}}),
        json!({"mercure": {"subscribe": CANARY}}),
        json!({"mercure": CANARY}),
        json!({"exp": CANARY}),
        json!({"mercure": {"publish": [CANARY, 7]}}),
    ]
    .map(|claims| hs256_claims(&claims));
    let expired =
        hs256_claims(&json!({"exp": 1, "mercure": {"publish": [CANARY], "subscribe": [CANARY]}}));
    let narrow = crate::support::publisher_token(&["https://example.com/mine"]);
    let mut tokens = vec![wrong_key, none, expired];
    tokens.extend(wrong_types);

    // Any part of a token would show as its signature's tail; the rest is what may not leak.
    let mut forbidden = vec![SECRET, CANARY, PRIVATE_DATA, HIDDEN_TOPIC];
    forbidden.extend(
        tokens
            .iter()
            .chain([&publisher, &narrow])
            .map(|t| &t[t.len() - 20..]),
    );
    let mut answers = Vec::new();
    for token in &tokens {
        answers.push(publish_with(&hub.url, token, &[("topic", "t")]).await);
        answers.push(subscribe_with(&hub.url, token).await);
        answers.push(
            subscribe_status(&format!("{}?topic=t&authorization={token}", hub.url), &[]).await,
        );
    }
    // A valid token, refused for a topic it may not publish, and for a body too large.
    answers.push(publish_with(&hub.url, &narrow, &[("topic", "https://example.com/other")]).await);
    let big = "x".repeat(4096);
    answers.push(publish_with(&hub.url, &publisher, &[("topic", "t"), ("data", &big)]).await);
    for (i, (status, body)) in answers.iter().enumerate() {
        assert!((400..500).contains(status), "answer {i}: {status} {body}");
        assert!(!body.trim().is_empty(), "answer {i}: no reason given");
        for secret in &forbidden {
            assert!(
                !body.contains(secret),
                "answer {i} quotes {secret:?}: {body}"
            );
        }
    }
    // The anonymous replay of everything: the private update stays hidden.
    let mut replay =
        SseClient::open(&format!("{}?topic=*&lastEventID=earliest", hub.url), &[]).await;
    replay.assert_no_event(Duration::from_millis(300)).await;
    drop(replay);

    // A request the hub logs after all of these: once its line is in, the earlier ones are too.
    let (status, _) = publish_with(
        &hub.url,
        &publisher,
        &[("topic", "https://example.com/last")],
    )
    .await;
    assert_eq!(status, 200);
    let mut logs = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        match hub.logs.recv_timeout(Duration::from_millis(300)) {
            Ok(line) => logs.push(line),
            Err(_) if logs.iter().any(|l| l.contains("stream closed")) => break,
            Err(_) => {}
        }
    }
    assert!(
        logs.iter().any(|l| l.contains("stream opened")),
        "debug logs were read: {logs:#?}"
    );
    for line in &logs {
        for secret in &forbidden {
            assert!(
                !line.contains(secret),
                "a log line quotes {secret:?}: {line}"
            );
        }
    }
}

#[tokio::test]
async fn key_reference_headers_are_ignored_and_crit_is_refused() {
    let hub = TestHub::start_http(config(), no_anonymous()).await;
    // Where a hub that followed jku/x5u would go: nothing may connect here.
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let trap_url = format!("http://{}/keys", trap.local_addr().expect("addr"));
    let attacker =
        EncodingKey::from_secret(b"attacker-chosen-secret-attacker-chosen").expect("key");
    let claims = all_powerful().to_string();
    let headers = [
        json!({"alg": "HS256", "kid": "../../../../dev/null"}),
        json!({"alg": "HS256", "kid": "attacker"}),
        json!({"alg": "HS256", "jku": trap_url}),
        json!({"alg": "HS256", "x5u": trap_url}),
        json!({"alg": "HS256", "kid": "1", "jku": trap_url, "x5u": trap_url, "typ": "JWT"}),
    ];
    for header in &headers {
        let header = header.to_string();
        let forged = sign_raw(Algorithm::HS256, &attacker, &header, &claims);
        let publish = publish_with(&hub.url, &forged, &[("topic", "t")]).await;
        assert_refused(&header, &publish, 401, "bad signature", &[SECRET]);
        assert_eq!(subscribe_with(&hub.url, &forged).await.0, 401, "{header}");
        // Signed with the hub's key, the same headers change nothing: they are ignored.
        let genuine = hs256(&header, &claims);
        let (status, body) = publish_with(&hub.url, &genuine, &[("topic", "t")]).await;
        assert_eq!(status, 200, "{header}: {body}");
    }
    // RFC 7515 §4.1.11: a `crit` extension the hub does not understand must be refused.
    for header in [
        json!({"alg": "HS256", "crit": ["exp"]}),
        json!({"alg": "HS256", "crit": ["x-policy"], "x-policy": "skip-checks"}),
        json!({"alg": "HS256", "crit": []}),
        json!({"alg": "HS256", "b64": false, "crit": ["b64"]}),
    ] {
        let token = hs256(&header.to_string(), &claims);
        let publish = publish_with(&hub.url, &token, &[("topic", "t")]).await;
        assert_refused(&header.to_string(), &publish, 401, "crit", &[SECRET]);
        assert_eq!(subscribe_with(&hub.url, &token).await.0, 401, "{header}");
    }
    let nobody_called = tokio::time::timeout(Duration::from_millis(200), trap.accept()).await;
    assert!(
        nobody_called.is_err(),
        "the hub fetched a key from the token's header"
    );
}

#[tokio::test]
async fn an_embedded_jwk_is_not_trusted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (hub_dir, attacker_dir) = (dir.path().join("hub"), dir.path().join("attacker"));
    let rsa = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"];
    std::fs::create_dir_all(&hub_dir).expect("dir");
    std::fs::create_dir_all(&attacker_dir).expect("dir");
    let (_, hub_public) = openssl_key_pair(&hub_dir, &rsa);
    let (attacker_private, _) = openssl_key_pair(&attacker_dir, &rsa);
    let verifier = JwtVerifier::new(JwtAlgorithm::RS256, &hub_public).expect("key");
    let hub = TestHub::start_http(
        config(),
        HttpConfig {
            auth: AuthConfig {
                publisher: Some(verifier.clone()),
                subscriber: Some(verifier),
                anonymous: false,
            },
            ..HttpConfig::default()
        },
    )
    .await;
    let attacker = EncodingKey::from_rsa_pem(attacker_private.as_bytes()).expect("key");
    let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&attacker, Algorithm::RS256).expect("jwk");
    let header = json!({"alg": "RS256", "jwk": jwk}).to_string();
    assert!(
        jsonwebtoken::decode_header(hs256(&header, "{}")).is_ok(),
        "a well-formed jwk header"
    );
    let token = sign_raw(
        Algorithm::RS256,
        &attacker,
        &header,
        &all_powerful().to_string(),
    );
    let publish = publish_with(&hub.url, &token, &[("topic", "t")]).await;
    assert_refused("embedded jwk", &publish, 401, "bad signature", &[]);
    assert_eq!(subscribe_with(&hub.url, &token).await.0, 401);
}

#[tokio::test]
async fn claims_of_the_wrong_shape_are_clear_401s() {
    let hub = TestHub::start_http(config(), no_anonymous()).await;
    let typed = [
        json!({"mercure": {"publish": "*", "subscribe": "*"}}),
        json!({"mercure": {"publish": [["*"]], "subscribe": [{"topic": "*"}]}}),
        json!({"mercure": "*"}),
        json!({"mercure": ["*"]}),
        json!({"mercure": {"publish": [null], "subscribe": [1]}}),
        json!({"exp": "never", "mercure": {"publish": ["*"], "subscribe": ["*"]}}),
        json!({"exp": -1, "mercure": {"publish": ["*"], "subscribe": ["*"]}}),
        json!({"exp": null, "nbf": {"at": 1}, "mercure": {"publish": ["*"], "subscribe": ["*"]}}),
    ]
    .map(|claims| claims.to_string());
    let raw = [
        // Duplicated keys: parsers disagree on which wins, so neither may.
        r#"{"mercure":{"publish":[]},"mercure":{"publish":["*"],"subscribe":["*"]}}"#,
        r#"{"mercure":{"publish":["x"],"publish":["*"],"subscribe":["y"],"subscribe":["*"]}}"#,
        r#"{"exp":1,"exp":99999999999,"mercure":{"publish":["*"],"subscribe":["*"]}}"#,
        r#"[]"#,
        r#"null"#,
        r#""*""#,
        r#"{"mercure":{"publish":["*"]"#,
        "\u{0}",
    ]
    .map(str::to_owned);
    for claims in typed.iter().chain(raw.iter()) {
        let token = hs256(r#"{"alg":"HS256"}"#, claims);
        let publish = publish_with(&hub.url, &token, &[("topic", "t")]).await;
        assert_refused(
            claims,
            &publish,
            401,
            "token",
            &[&token[..30], SECRET, "\"*\""],
        );
        let subscribe = subscribe_with(&hub.url, &token).await;
        assert_refused(claims, &subscribe, 401, "token", &[&token[..30], SECRET]);
    }
    // Broken encodings and headers.
    let claims = b64(all_powerful().to_string().as_bytes());
    for token in [
        format!("{}.{claims}.sig", b64(b"not json")),
        format!("{}.{claims}.sig", b64(b"[\"HS256\"]")),
        format!("{}.{claims}.sig", b64(br#"{"typ":"JWT"}"#)),
        format!("{}.{claims}.sig", b64(br#"{"alg":["HS256"]}"#)),
        format!("e30.{claims}.%%%"),
        format!("!!.{claims}.sig"),
        format!("{}.{claims}", b64(br#"{"alg":"HS256"}"#)),
        format!("{}.{claims}.a.b", b64(br#"{"alg":"HS256"}"#)),
        "....".to_owned(),
        "e30.e30.e30.".to_owned(),
    ] {
        let publish = publish_with(&hub.url, &token, &[("topic", "t")]).await;
        assert_refused(&token, &publish, 401, "token", &[SECRET]);
        assert_eq!(subscribe_with(&hub.url, &token).await.0, 401, "{token}");
    }
    // `payload` is free-form: any JSON is accepted there.
    let token = hs256_claims(&json!({"mercure": {"subscribe": ["*"], "payload": "just a string"}}));
    assert_eq!(subscribe_with(&hub.url, &token).await.0, 200);
    assert_eq!(hub.hub.history_len(), 0);
}

#[tokio::test]
async fn huge_tokens_get_a_4xx_and_the_hub_carries_on() {
    let hub = TestHub::start_http(config(), no_anonymous()).await;
    // Under the header limit (64 KiB): verified like any other.
    let padding = "p".repeat(30 * 1024);
    let big_valid = hs256_claims(
        &json!({"mercure": {"subscribe": ["*"], "publish": ["*"], "payload": padding}}),
    );
    assert_eq!(subscribe_with(&hub.url, &big_valid).await.0, 200);
    let big_forged = format!("{}x", &big_valid[..big_valid.len() - 1]);
    let (status, _) = subscribe_with(&hub.url, &big_forged).await;
    assert_eq!(status, 401);
    // Over it: refused by the HTTP layer, in a header, a query or a cookie. Raw requests,
    // as reqwest itself refuses a URL this long.
    let huge = "A".repeat(200 * 1024);
    for request in [
        format!("GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {huge}\r\n\r\n"),
        format!("GET /.well-known/mercure?topic=t&authorization={huge} HTTP/1.1\r\nHost: x\r\n\r\n"),
        format!("GET /.well-known/mercure?topic=t HTTP/1.1\r\nHost: x\r\nCookie: mercureAuthorization={huge}\r\n\r\n"),
    ] {
        let status = raw_status(hub.addr, &request).await;
        assert!((400..500).contains(&status), "{status} for {}", &request[..60]);
    }
    let (status, body) = publish_with(&hub.url, &huge, &[("topic", "t")]).await;
    assert!((400..500).contains(&status), "{status} {body}");
    // Still serving.
    let (status, body) = publish_with(&hub.url, &big_valid, &[("topic", "t")]).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn the_header_token_beats_the_cookie_and_query_both_ways() {
    let mut http = no_anonymous();
    http.publish_origins = vec!["https://app.example.com".into()];
    let hub = TestHub::start_http(config(), http).await;
    let good = hs256_claims(&all_powerful());
    let bad = hs256_claims(&json!({"exp": 1, "mercure": {"publish": ["*"], "subscribe": ["*"]}}));
    let url = format!("{}?topic=t", hub.url);
    let cookie = |token: &str| format!("mercureAuthorization={token}");
    let bearer = |token: &str| format!("Bearer {token}");
    // A bad header is not rescued by a good cookie or query token.
    let (status, _) = subscribe_status(
        &url,
        &[("authorization", &bearer(&bad)), ("cookie", &cookie(&good))],
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = subscribe_status(
        &format!("{url}&authorization={good}"),
        &[("authorization", &bearer(&bad))],
    )
    .await;
    assert_eq!(status, 401);
    // A good header is not spoiled by a bad cookie.
    let (status, _) = subscribe_status(
        &url,
        &[("authorization", &bearer(&good)), ("cookie", &cookie(&bad))],
    )
    .await;
    assert_eq!(status, 200);
    // A bad query token is not rescued by a good cookie.
    let (status, _) = subscribe_status(
        &format!("{url}&authorization={bad}"),
        &[("cookie", &cookie(&good))],
    )
    .await;
    assert_eq!(status, 401);
    // Publishing: the header decides, and a cookie alongside it does not bring in the CSRF rule.
    let post = |header: &str, cookie_token: &str| {
        reqwest::Client::new()
            .post(&hub.url)
            .header("authorization", bearer(header))
            .header("cookie", cookie(cookie_token))
            .form(&[("topic", "t")])
            .send()
    };
    assert_eq!(post(&bad, &good).await.expect("post").status(), 401);
    assert_eq!(post(&good, &bad).await.expect("post").status(), 200);
    // Two cookies of the same name: the first is used, and a bad first one is not skipped.
    let (status, _) = subscribe_status(
        &url,
        &[("cookie", &format!("{}; {}", cookie(&bad), cookie(&good)))],
    )
    .await;
    assert_eq!(status, 401);
    // Two tokens in one header are malformed; extra spaces do not smuggle a bad token past.
    for value in [format!("Bearer {good} {good}"), format!("Bearer  {bad}")] {
        let (status, body) = subscribe_status(&url, &[("authorization", &value)]).await;
        assert_eq!(status, 401, "{value}: {body}");
    }
}

/// Sends `request` over a fresh connection and answers the response's status code.
async fn raw_status(addr: std::net::SocketAddr, request: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The hub may answer and close before it has read everything: a failed write is fine.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .expect("an answer within 5 s")
            .expect("read");
        assert!(n > 0, "closed without an answer");
        head.extend_from_slice(&buffer[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {line}"))
}
