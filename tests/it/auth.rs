//! Authorization (Mercure §Authorization). The token-expiry tests run on paused time, through
//! the router in this process (no socket), so a stream's deadline is exact and costs no time.

use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;
use ssehub::auth::{AuthConfig, Claims, JwtAlgorithm, JwtSigner, JwtVerifier, MercureClaim};
use ssehub::{HttpConfig, HubConfig};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::support::{
    config, http_config, hub_without_server, publish_with, publisher_token, reasons,
    subscriber_token, SseClient, TestHub,
};

fn no_anonymous() -> HttpConfig {
    let mut http = http_config();
    http.auth.anonymous = false;
    http
}

#[tokio::test]
async fn anonymous_subscribers_are_refused_unless_enabled() {
    let hub = TestHub::start_http(config(), no_anonymous()).await;
    let sub = hub.subscribe("topic=t").await;
    assert_eq!(sub.status, 401);
    assert_eq!(sub.header("www-authenticate"), Some("Bearer"));
    let token = subscriber_token(&[], None);
    let sub = SseClient::open(
        &format!("{}?topic=t", hub.url),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(sub.status, 200);
}

#[tokio::test]
async fn wrong_expired_or_malformed_tokens_get_401() {
    let hub = TestHub::start_http(config(), no_anonymous()).await;
    let wrong_key = JwtSigner::new(JwtAlgorithm::HS256, "not-the-hub-secret-not-the-hub-secret")
        .expect("key")
        .sign(&Claims::default())
        .expect("sign");
    let expired = crate::support::sign(&Claims {
        exp: Some(1_000_000_000),
        mercure: None,
    });
    for token in [wrong_key.as_str(), expired.as_str(), "garbage", "a.b.c"] {
        let sub = SseClient::open(
            &format!("{}?topic=t", hub.url),
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_eq!(sub.status, 401, "token {token}");
        let (status, body) = publish_with(&hub.url, token, &[("topic", "t")]).await;
        assert_eq!(status, 401, "{body}");
    }
    let sub = SseClient::open(
        &format!("{}?topic=t", hub.url),
        &[("authorization", "Basic Zm9vOmJhcg==")],
    )
    .await;
    assert_eq!(sub.status, 401);
}

#[tokio::test]
async fn publisher_must_be_allowed_every_topic() {
    let hub = TestHub::start(config()).await;
    let mut sub = hub.subscribe("topic=*").await;
    let token = publisher_token(&["https://example.com/books/{id}"]);
    let (status, body) = publish_with(
        &hub.url,
        &token,
        &[
            ("topic", "https://example.com/books/1"),
            ("topic", "https://example.com/secret"),
            ("data", "x"),
        ],
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("https://example.com/secret"), "{body}");
    let (status, _) = publish_with(
        &hub.url,
        &token,
        &[("topic", "https://example.com/books/1")],
    )
    .await;
    assert_eq!(status, 200);
    // The refused update was never delivered: the first event is the allowed one.
    assert_eq!(sub.next_event().await.data, "");
    let no_claim = subscriber_token(&["*"], None);
    let (status, _) = publish_with(&hub.url, &no_claim, &[("topic", "t")]).await;
    assert_eq!(status, 403);
    assert_eq!(hub.hub.history_len(), 1);
}

#[tokio::test]
async fn private_updates_reach_only_authorized_subscribers() {
    let hub = TestHub::start(config()).await;
    let mut anonymous = hub
        .subscribe("topic=https://example.com/books/%7Bid%7D")
        .await;
    let alice = subscriber_token(&["https://example.com/users/alice/{?topic}"], None);
    let mut allowed = SseClient::open(
        &format!("{}?topic=https://example.com/books/%7Bid%7D", hub.url),
        &[("authorization", &format!("Bearer {alice}"))],
    )
    .await;
    let bob = subscriber_token(&["https://example.com/users/bob/{?topic}"], None);
    let mut other_user = SseClient::open(
        &format!("{}?topic=https://example.com/books/%7Bid%7D", hub.url),
        &[("authorization", &format!("Bearer {bob}"))],
    )
    .await;
    // The spec's example: canonical topic plus an alternate topic naming the user.
    let (_, private_id) = hub
        .publish(&[
            ("topic", "https://example.com/books/1"),
            (
                "topic",
                "https://example.com/users/alice/?topic=https%3A%2F%2Fexample.com%2Fbooks%2F1",
            ),
            ("private", "on"),
            ("data", "for alice"),
        ])
        .await;
    let (_, public_id) = hub
        .publish(&[
            ("topic", "https://example.com/books/2"),
            ("data", "for all"),
        ])
        .await;
    assert_eq!(
        allowed.next_ids(2).await,
        [private_id.clone(), public_id.clone()]
    );
    assert_eq!(anonymous.next_event().await.id, public_id);
    assert_eq!(other_user.next_event().await.id, public_id);

    // Private updates do not leak through history replay either.
    let mut replay = hub.subscribe("topic=*&lastEventID=earliest").await;
    assert_eq!(replay.next_event().await.id, public_id);
    let mut replay_alice = SseClient::open(
        &format!("{}?topic=*&lastEventID=earliest", hub.url),
        &[("authorization", &format!("Bearer {alice}"))],
    )
    .await;
    assert_eq!(replay_alice.next_ids(2).await, [private_id, public_id]);
}

#[tokio::test]
async fn token_from_cookie_or_query_parameter() {
    let hub = TestHub::start_http(config(), no_anonymous()).await;
    let token = subscriber_token(&["*"], None);
    let by_cookie = SseClient::open(
        &format!("{}?topic=t", hub.url),
        &[(
            "cookie",
            &format!("theme=dark; mercureAuthorization={token}"),
        )],
    )
    .await;
    assert_eq!(by_cookie.status, 200);
    let by_query = hub
        .subscribe(&format!("topic=t&authorization={token}"))
        .await;
    assert_eq!(by_query.status, 200);
    // The header wins over the query parameter: a bad header is not rescued by a good query.
    let header_wins = SseClient::open(
        &format!("{}?topic=t&authorization={token}", hub.url),
        &[("authorization", "Bearer garbage")],
    )
    .await;
    assert_eq!(header_wins.status, 401);
}

#[tokio::test]
async fn publishing_by_cookie_needs_an_allowed_origin() {
    let mut http = http_config();
    http.publish_origins = vec!["https://app.example.com".into()];
    let hub = TestHub::start_http(config(), http).await;
    let token = publisher_token(&["*"]);
    let post = |origin: &'static str| {
        let request = reqwest::Client::new()
            .post(&hub.url)
            .header("cookie", format!("mercureAuthorization={token}"))
            .form(&[("topic", "t")]);
        async move {
            let request = if origin.is_empty() {
                request
            } else {
                request.header("origin", origin)
            };
            request.send().await.expect("post").status().as_u16()
        }
    };
    assert_eq!(post("https://evil.example.net").await, 403);
    assert_eq!(post("").await, 403);
    assert_eq!(post("https://app.example.com").await, 200);
}

/// Opens `/.well-known/mercure?QUERY` on the router of `hub` in this process (no socket), with
/// `token` as a bearer token; returns the status and the response body.
async fn subscribe_in_process(hub: &ssehub::Hub, query: &str, token: &str) -> (u16, Body) {
    let request = http::Request::get(format!("/.well-known/mercure?{query}"))
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .expect("request");
    let response = ssehub::http::router(hub.clone(), http_config())
        .oneshot(request)
        .await
        .expect("the router is infallible");
    (response.status().as_u16(), response.into_body())
}

/// The token's `exp` is in whole seconds: a token made to last `lifetime` has between
/// `lifetime - 1 s` and `lifetime` left when the hub reads it.
fn assert_ended_at_expiry(lived: Duration, lifetime: Duration) {
    assert!(
        lived + Duration::from_secs(1) >= lifetime && lived <= lifetime,
        "the stream lived {lived:?} with a token for {lifetime:?}"
    );
}

/// Paused time, through the router (token parsing included): an idle stream ends, cleanly (the
/// body finishes rather than failing), when its token expires, with the `TokenExpired` reason.
#[tokio::test(start_paused = true)]
async fn stream_ends_when_the_token_expires() {
    const LIFETIME: Duration = Duration::from_secs(120);
    let (hub, closes) = hub_without_server(HubConfig {
        max_lifetime: None,
        ..config()
    })
    .await;
    let token = subscriber_token(&["*"], Some(LIFETIME));
    let (status, mut body) = subscribe_in_process(&hub, "topic=t", &token).await;
    assert_eq!(status, 200);
    let opened = Instant::now();
    let ended = tokio::time::timeout(LIFETIME * 2, async {
        let mut frames = 0;
        loop {
            match body.frame().await {
                None => break,
                Some(Ok(frame)) => {
                    let data = frame.into_data().expect("a data frame");
                    frames += 1;
                    if frames == 1 {
                        // The cursor naming where the stream starts (nothing published yet).
                        assert_eq!(&data[..], b"id: earliest\n\n");
                    } else {
                        assert_eq!(&data[..], b":\n\n", "only heartbeats on an idle stream");
                    }
                }
                Some(Err(error)) => panic!("the body failed instead of ending: {error}"),
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its token twice over");
    assert_ended_at_expiry(opened.elapsed(), LIFETIME);
    // The close is recorded when the body (which owns the registration) goes.
    drop(body);
    assert_eq!(reasons(&closes), [ssehub::CloseReason::TokenExpired]);
    assert_eq!(hub.subscriber_count(), 0);
    hub.shutdown().await;
}
/// Generates a key pair with the openssl command line; returns (private PEM, public PEM).
pub(crate) fn openssl_key_pair(dir: &std::path::Path, algorithm: &[&str]) -> (String, String) {
    let private = dir.join("private.pem");
    let public = dir.join("public.pem");
    let status = std::process::Command::new("openssl")
        .arg("genpkey")
        .args(algorithm)
        .arg("-out")
        .arg(&private)
        .status()
        .expect("openssl is installed by scripts/test");
    assert!(status.success());
    let status = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .status()
        .expect("openssl");
    assert!(status.success());
    (
        std::fs::read_to_string(private).expect("private key"),
        std::fs::read_to_string(public).expect("public key"),
    )
}

#[tokio::test]
async fn rs256_and_es256_public_keys_verify_tokens() {
    let dir = std::env::temp_dir().join(format!("ssehub-keys-{}", std::process::id()));
    for (algorithm, args) in [
        (
            JwtAlgorithm::RS256,
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"][..],
        ),
        (
            JwtAlgorithm::ES256,
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"][..],
        ),
    ] {
        let dir = dir.join(algorithm.to_string());
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (private, public) = openssl_key_pair(&dir, args);
        let hub = TestHub::start_http(
            config(),
            HttpConfig {
                auth: AuthConfig {
                    publisher: Some(JwtVerifier::new(algorithm, &public).expect("public key")),
                    subscriber: None,
                    anonymous: true,
                },
                ..HttpConfig::default()
            },
        )
        .await;
        let claims = Claims {
            exp: None,
            mercure: Some(MercureClaim {
                publish: Some(vec!["*".into()]),
                ..MercureClaim::default()
            }),
        };
        let token = JwtSigner::new(algorithm, &private)
            .expect("private key")
            .sign(&claims)
            .expect("sign");
        let (status, body) = publish_with(&hub.url, &token, &[("topic", "t")]).await;
        assert_eq!(status, 200, "{algorithm}: {body}");
        // Algorithm confusion: an HS256 token whose secret is the public key is refused.
        let confused = JwtSigner::new(JwtAlgorithm::HS256, &public)
            .expect("hmac")
            .sign(&claims)
            .expect("sign");
        let (status, _) = publish_with(&hub.url, &confused, &[("topic", "t")]).await;
        assert_eq!(status, 401, "{algorithm}");
        let hmac = crate::support::publisher_token(&["*"]);
        let (status, _) = publish_with(&hub.url, &hmac, &[("topic", "t")]).await;
        assert_eq!(status, 401, "{algorithm}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Paused time, through the router: events every second do not keep a stream open past its
/// token's expiry (Mercure §Subscribers: close the connection when the token expires).
#[tokio::test(start_paused = true)]
async fn token_expiry_ends_even_a_busy_stream() {
    const LIFETIME: Duration = Duration::from_secs(60);
    let (hub, closes) = hub_without_server(HubConfig {
        max_lifetime: None,
        ..config()
    })
    .await;
    let token = subscriber_token(&["*"], Some(LIFETIME));
    let (status, mut body) = subscribe_in_process(&hub, "topic=t", &token).await;
    assert_eq!(status, 200);
    let opened = Instant::now();
    let publisher = {
        let hub = hub.clone();
        tokio::spawn(async move {
            for i in 0.. {
                hub.publish(ssehub::Event::new("t", format!("busy {i}")))
                    .await
                    .expect("publish");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let mut events = 0;
    let mut last_event_at = Duration::ZERO;
    let ended = tokio::time::timeout(LIFETIME * 2, async {
        while let Some(frame) = body.frame().await {
            let data = frame
                .expect("the body ends rather than failing")
                .into_data()
                .expect("a data frame");
            if data.ends_with(b"\n\n") && data.windows(5).any(|w| w == b"data:") {
                events += 1;
                last_event_at = opened.elapsed();
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the stream outlived its token twice over ({events} events)"
    );
    let lived = opened.elapsed();
    drop(body);
    publisher.abort();
    assert_ended_at_expiry(lived, LIFETIME);
    assert!(
        events >= 58 && last_event_at + Duration::from_secs(2) >= lived,
        "events flowed until the end: {events} events, the last at {last_event_at:?}, end at \
         {lived:?}"
    );
    assert_eq!(reasons(&closes), [ssehub::CloseReason::TokenExpired]);
    hub.shutdown().await;
}

#[tokio::test]
async fn a_float_exp_is_accepted() {
    let hub = TestHub::start_http(config(), no_anonymous()).await;
    // As PHP's lcobucci/jwt (Symfony's Mercure bundle) writes it.
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
        + 3600.5;
    let header = r#"{"alg":"HS256","typ":"JWT"}"#;
    let claims = format!(r#"{{"exp":{exp},"mercure":{{"subscribe":["*"]}}}}"#);
    let token = hs256_raw(header, &claims);
    let sub = SseClient::open(
        &format!("{}?topic=t", hub.url),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(sub.status, 200);
}

/// Signs raw JSON header and claims with the test secret (HS256), byte for byte.
fn hs256_raw(header: &str, claims: &str) -> String {
    use jsonwebtoken::crypto::sign;
    use jsonwebtoken::{Algorithm, EncodingKey};
    let b64 = |bytes: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    };
    let message = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let key = EncodingKey::from_secret(crate::support::SECRET.as_bytes()).expect("key");
    let signature = sign(message.as_bytes(), &key, Algorithm::HS256).expect("sign");
    format!("{message}.{signature}")
}
