//! draft-dunglas-mercure-08 access tokens through the real router: `at+jwt` tokens of trusted
//! issuers, RFC 6750 challenges, the RFC 9728 metadata document, and issuers whose keys come
//! from a JWK Set served by a real local key server that rotates its keys and goes down.
//!
//! The hub is served at `127.0.0.1:<port>` while its resource identifier is
//! `https://localhost/.well-known/mercure`, as when Mercure's own draft-08 cases (HS256 with the
//! documented default secret, `iss` `https://localhost`) run against a hub at another origin.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use ssehub::auth::{Draft08Auth, Issuer, JwksKeys, JwksSettings, Role};
use ssehub::HttpConfig;

use crate::support::draft08::{
    claims, draft08_http, grant, hs256, sign, DETAIL, ISS, METADATA_URL, RESOURCE, SECRET,
};
use crate::support::{
    config, eventually, http_config, publish_with, publisher_token, SseClient, TestHub,
};

async fn post(url: &str, token: &str, form: &[(&str, &str)]) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .form(form)
        .send()
        .await
        .expect("publish request")
}

fn challenge(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tokio::test]
async fn an_at_jwt_publisher_reaches_subscribers_and_private_updates_need_a_subscribe_grant() {
    let hub = TestHub::start_http(config(), draft08_http(true)).await;
    let anonymous = hub.subscribe("match=https://example.com/books/1").await;
    let bearer = format!(
        "Bearer {}",
        hs256(&claims(
            ISS,
            vec![grant("subscribe", &["https://example.com/books/1"])]
        ))
    );
    let mut reader = SseClient::open(
        &format!("{}?match=https://example.com/books/1", hub.url),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(reader.status, 200);
    let mut anonymous = anonymous;
    assert_eq!(anonymous.status, 200);

    let publisher = hs256(&claims(ISS, vec![grant("publish", &["*"])]));
    let (status, id) = publish_with(
        &hub.url,
        &publisher,
        &[
            ("topic", "https://example.com/books/1"),
            ("data", "secret"),
            ("private", "on"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{id}");
    let (status, public_id) = publish_with(
        &hub.url,
        &publisher,
        &[("topic", "https://example.com/books/1"), ("data", "public")],
    )
    .await;
    assert_eq!(status, 200, "{public_id}");

    let first = reader.next_event().await;
    assert_eq!(
        (first.id.as_str(), first.data.as_str()),
        (id.as_str(), "secret")
    );
    assert_eq!(reader.next_event().await.data, "public");
    // The anonymous subscriber sees the public update only.
    let only = anonymous.next_event().await;
    assert_eq!(
        (only.id.as_str(), only.data.as_str()),
        (public_id.as_str(), "public")
    );

    // The same hub still takes draft-07 tokens.
    let (status, _) = publish_with(&hub.url, &publisher_token(&["*"]), &[("topic", "t")]).await;
    assert_eq!(status, 200);
    hub.stop().await;
}

#[tokio::test]
async fn refusals_carry_rfc_6750_codes_and_the_metadata_url() {
    let hub = TestHub::start_http(config(), draft08_http(false)).await;
    let topic = [("topic", "https://example.com/a")];

    // invalid_token: a token minted for another hub (aud), or by another issuer.
    let mut wrong_aud = claims(ISS, vec![grant("publish", &["*"])]);
    wrong_aud["aud"] = json!("https://other.example/.well-known/mercure");
    let mut untrusted = claims("https://evil.example", vec![grant("publish", &["*"])]);
    untrusted["aud"] = json!(RESOURCE);
    for token in [hs256(&wrong_aud), hs256(&untrusted)] {
        let response = post(&hub.url, &token, &topic).await;
        assert_eq!(response.status(), 401);
        assert_eq!(
            challenge(&response).as_deref(),
            Some(
                format!("Bearer error=\"invalid_token\", resource_metadata=\"{METADATA_URL}\"")
                    .as_str()
            )
        );
        assert!(response
            .text()
            .await
            .expect("body")
            .starts_with("invalid token: the token's"));
    }

    // insufficient_scope: valid, but not for every topic of the update.
    let narrow = hs256(&claims(
        ISS,
        vec![grant("publish", &["https://example.com/a"])],
    ));
    let response = post(
        &hub.url,
        &narrow,
        &[
            ("topic", "https://example.com/a"),
            ("topic", "https://example.com/b"),
        ],
    )
    .await;
    assert_eq!(response.status(), 403);
    assert!(
        challenge(&response).is_some_and(|c| c.starts_with("Bearer error=\"insufficient_scope\""))
    );
    assert!(post(&hub.url, &narrow, &topic).await.status().is_success());

    // invalid_request: an access token in the URL, to publish or to subscribe.
    let response = reqwest::Client::new()
        .post(format!("{}?authorization={narrow}", hub.url))
        .form(&topic)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 400);
    assert!(challenge(&response).is_some_and(|c| c.starts_with("Bearer error=\"invalid_request\"")));
    let reader = hs256(&claims(ISS, vec![grant("subscribe", &["*"])]));
    let sub = SseClient::open(&format!("{}?match=a&authorization={reader}", hub.url), &[]).await;
    assert_eq!(sub.status, 400);
    assert!(sub
        .header("www-authenticate")
        .is_some_and(|c| c.contains("invalid_request")));

    // No token at all: a bare challenge with the metadata URL and no error code.
    let sub = SseClient::open(&format!("{}?match=a", hub.url), &[]).await;
    assert_eq!(sub.status, 401);
    assert_eq!(
        sub.header("www-authenticate"),
        Some(format!("Bearer resource_metadata=\"{METADATA_URL}\"").as_str())
    );
    let expired = {
        let mut c = claims(ISS, vec![grant("subscribe", &["*"])]);
        c["exp"] = json!(1);
        hs256(&c)
    };
    let sub = SseClient::open(
        &format!("{}?match=a", hub.url),
        &[("authorization", &format!("Bearer {expired}"))],
    )
    .await;
    assert_eq!(sub.status, 401);
    assert!(sub
        .header("www-authenticate")
        .is_some_and(|c| c.contains("invalid_token")));
    hub.stop().await;
}

#[tokio::test]
async fn the_protected_resource_metadata_is_served_at_the_rfc_9728_path() {
    let hub = TestHub::start_http(config(), draft08_http(true)).await;
    let url = format!(
        "http://{}/.well-known/oauth-protected-resource/.well-known/mercure",
        hub.addr
    );
    let response = reqwest::get(&url).await.expect("metadata");
    assert_eq!(response.status(), 200);
    assert!(response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json")));
    let document: Value =
        serde_json::from_str(&response.text().await.expect("body")).expect("json");
    assert_eq!(document["resource"], RESOURCE);
    assert_eq!(document["bearer_methods_supported"], json!(["header"]));
    assert_eq!(
        document["authorization_details_types_supported"],
        json!([DETAIL])
    );
    // Without draft-08 there is no such document.
    let plain = TestHub::start(config()).await;
    let url = format!(
        "http://{}/.well-known/oauth-protected-resource/.well-known/mercure",
        plain.addr
    );
    assert_eq!(reqwest::get(&url).await.expect("request").status(), 404);
    plain.stop().await;
    hub.stop().await;
}

/// A key server: serves `keys` at `/jwks` (or 503 while `down`), counting requests.
#[derive(Default)]
struct KeyServerState {
    keys: Vec<Jwk>,
    down: bool,
    hits: usize,
}

struct KeyServer {
    state: Arc<Mutex<KeyServerState>>,
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl KeyServer {
    async fn start(keys: Vec<Jwk>) -> Self {
        let state = Arc::new(Mutex::new(KeyServerState {
            keys,
            ..Default::default()
        }));
        async fn serve(
            State(state): State<Arc<Mutex<KeyServerState>>>,
        ) -> axum::response::Response {
            let mut state = state.lock().expect("lock");
            state.hits += 1;
            if state.down {
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
            axum::Json(JwkSet {
                keys: state.keys.clone(),
            })
            .into_response()
        }
        let app = axum::Router::new()
            .route("/jwks", axum::routing::get(serve))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("key server");
        });
        Self {
            state,
            url: format!("http://{addr}/jwks"),
            task,
        }
    }

    fn hits(&self) -> usize {
        self.state.lock().expect("lock").hits
    }

    fn set(&self, keys: Vec<Jwk>, down: bool) {
        let mut state = self.state.lock().expect("lock");
        state.keys = keys;
        state.down = down;
    }
}

impl Drop for KeyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A fresh ES256 key pair: its signing key and its public JWK named `kid`.
fn es256_key(kid: &str) -> (EncodingKey, Jwk) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key pair");
    let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("pem");
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).expect("jwk");
    jwk.common.key_id = Some(kid.to_owned());
    (key, jwk)
}

fn jwks_http(server: &KeyServer, settings: JwksSettings) -> HttpConfig {
    let keys = JwksKeys::new(&server.url, settings).expect("jwks");
    let issuer = Issuer::with_jwks("https://auth.example", keys, &[Algorithm::ES256])
        .expect("issuer")
        .for_roles(&[Role::Publisher]);
    let mut http = http_config();
    http.draft08 = Some(Draft08Auth::new(RESOURCE, vec![issuer]).expect("draft-08"));
    http
}

fn publisher(key: &EncodingKey, kid: &str) -> String {
    sign(
        key,
        Algorithm::ES256,
        Some(kid),
        &claims("https://auth.example", vec![grant("publish", &["*"])]),
    )
}

/// Publishes to `hub.url` with the hub's own client (building one costs more than a publish).
async fn publish_status(hub: &(TestHub, reqwest::Client), token: &str) -> u16 {
    let (hub, client) = hub;
    client
        .post(&hub.url)
        .bearer_auth(token)
        .form(&[("topic", "t")])
        .send()
        .await
        .expect("publish request")
        .status()
        .as_u16()
}

#[tokio::test]
async fn jwks_keys_rotate_without_a_restart_and_unknown_kids_refetch_at_a_bounded_rate() {
    let (key1, jwk1) = es256_key("k1");
    let (key2, jwk2) = es256_key("k2");
    let server = KeyServer::start(vec![jwk1.clone()]).await;
    let min_refetch = Duration::from_millis(1500);
    let settings = JwksSettings {
        refresh: Duration::ZERO,
        min_refetch,
        ..JwksSettings::default()
    };
    let hub = (
        TestHub::start_http(config(), jwks_http(&server, settings)).await,
        reqwest::Client::new(),
    );
    // At most one fetch per `min_refetch` since the first one (at `first`), plus that one.
    let bound = |first: tokio::time::Instant| {
        1 + (first.elapsed().as_millis() / min_refetch.as_millis()) as usize
    };

    assert_eq!(server.hits(), 0, "fetched on first use, not before");
    let first = tokio::time::Instant::now();
    assert_eq!(publish_status(&hub, &publisher(&key1, "k1")).await, 200);
    assert_eq!(server.hits(), 1);
    assert_eq!(publish_status(&hub, &publisher(&key1, "k1")).await, 200);
    assert_eq!(server.hits(), 1, "a known kid is served from the cache");

    // The issuer rotates: k2 appears, k1 goes. Tokens naming a kid the cache does not hold
    // refetch the set, but not more than once per `min_refetch`: a flood of made-up kids costs
    // the key server (almost) nothing.
    server.set(vec![jwk2.clone()], false);
    for n in 0..10 {
        let status = publish_status(&hub, &publisher(&key2, &format!("made-up-{n}"))).await;
        assert_eq!(status, 401);
    }
    let hits = server.hits();
    assert!(
        hits <= bound(first),
        "{hits} fetches in {:?}",
        first.elapsed()
    );
    tokio::time::sleep(min_refetch).await;
    assert_eq!(
        publish_status(&hub, &publisher(&key2, "k2")).await,
        200,
        "rotated in"
    );
    assert!(server.hits() <= bound(first), "{} fetches", server.hits());
    assert_eq!(
        publish_status(&hub, &publisher(&key1, "k1")).await,
        401,
        "rotated out"
    );
    // k2 named, but signed by another key: a bad signature, not a refetch.
    let hits = server.hits();
    assert_eq!(publish_status(&hub, &publisher(&key1, "k2")).await, 401);
    assert_eq!(server.hits(), hits, "a known kid never refetches");
    hub.0.stop().await;
}

#[tokio::test]
async fn periodic_refresh_picks_up_a_rotation_and_an_outage_keeps_the_cached_keys() {
    let (key1, jwk1) = es256_key("k1");
    let (key2, jwk2) = es256_key("k2");
    let server = KeyServer::start(vec![jwk1.clone()]).await;
    // Only the schedule fetches here: unknown kids would wait an hour.
    let settings = JwksSettings {
        refresh: Duration::from_millis(200),
        min_refetch: Duration::from_secs(3600),
        ..JwksSettings::default()
    };
    let hub = (
        TestHub::start_http(config(), jwks_http(&server, settings)).await,
        reqwest::Client::new(),
    );
    assert_eq!(publish_status(&hub, &publisher(&key1, "k1")).await, 200);

    // The key server fails: scheduled fetches fail, the cached k1 still verifies.
    server.set(vec![], true);
    let before = server.hits();
    eventually(
        Duration::from_secs(5),
        "two failed scheduled fetches",
        || server.hits() >= before + 2,
    )
    .await;
    assert_eq!(
        publish_status(&hub, &publisher(&key1, "k1")).await,
        200,
        "outage keeps the keys"
    );

    // Back, rotated: the schedule brings k2 in and k1 out, with no restart.
    server.set(vec![jwk1, jwk2], false);
    let mut ok = false;
    for _ in 0..100 {
        if publish_status(&hub, &publisher(&key2, "k2")).await == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "the rotated key verifies after a scheduled refresh");
    server.set(vec![es256_key("k3").1], false);
    let mut gone = false;
    for _ in 0..100 {
        if publish_status(&hub, &publisher(&key1, "k1")).await == 401 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "a key the set no longer holds stops verifying");
    hub.0.stop().await;
}

#[tokio::test]
async fn a_key_set_never_fetched_while_its_server_is_down_is_a_503() {
    let (key1, jwk1) = es256_key("k1");
    let server = KeyServer::start(vec![jwk1]).await;
    server.set(vec![], true);
    let settings = JwksSettings {
        refresh: Duration::ZERO,
        min_refetch: Duration::ZERO,
        ..JwksSettings::default()
    };
    let hub = (
        TestHub::start_http(config(), jwks_http(&server, settings)).await,
        reqwest::Client::new(),
    );
    let response = post(&hub.0.url, &publisher(&key1, "k1"), &[("topic", "t")]).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("retry-after").is_some());
    let body = response.text().await.expect("body");
    assert!(body.contains("key set"), "{body}");
    hub.0.stop().await;
}

#[tokio::test]
async fn the_binary_reads_issuers_from_its_config_file_and_the_resource_identifier_from_the_environment(
) {
    use crate::support::binary::BinaryHub;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("ssehub.toml");
    std::fs::write(
        &file,
        format!(
            "jwt_key = \"draft-07-secret\"\nhistory = \"memory\"\n\
             resource_identifier = \"{RESOURCE}\"\n\n[[issuer]]\niss = \"{ISS}\"\nkey = \"{SECRET}\"\n"
        ),
    )
    .expect("write config");
    let file = file.to_str().expect("utf-8 path");
    let token = hs256(&claims(ISS, vec![grant("publish", &["*"])]));

    let hub = BinaryHub::start(&["--config", file], &[]);
    let (status, body) = publish_with(&hub.url, &token, &[("topic", "t")]).await;
    assert_eq!(status, 200, "{body}");
    let url = format!(
        "http://{}/.well-known/oauth-protected-resource/.well-known/mercure",
        hub.addr
    );
    let document: Value = serde_json::from_str(
        &reqwest::get(&url)
            .await
            .expect("metadata")
            .text()
            .await
            .expect("body"),
    )
    .expect("json");
    assert_eq!(document["resource"], RESOURCE);
    drop(hub);

    // SSEHUB_RESOURCE_IDENTIFIER beats the file: the same token now names another hub.
    let other = "https://hub.example/.well-known/mercure";
    let hub = BinaryHub::start(
        &["--config", file],
        &[("SSEHUB_RESOURCE_IDENTIFIER", other)],
    );
    let response = post(&hub.url, &token, &[("topic", "t")]).await;
    assert_eq!(response.status(), 401);
    assert!(challenge(&response)
        .is_some_and(|c| c.contains("hub.example/.well-known/oauth-protected-resource")));
}

/// Paused time, through the router in this process: a draft-08 subscriber's stream ends when
/// its token's `exp` comes (§Subscribers: "no later than the token's exp").
#[tokio::test(start_paused = true)]
async fn a_draft08_subscribers_stream_ends_at_its_tokens_exp() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    const LIFETIME: u64 = 90;
    let (hub, closes) = crate::support::hub_without_server(ssehub::HubConfig {
        max_lifetime: None,
        ..config()
    })
    .await;
    let mut c = claims(ISS, vec![grant("subscribe", &["*"])]);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    c["exp"] = json!(now + LIFETIME);
    let request = http::Request::get("/.well-known/mercure?match=t")
        .header("authorization", format!("Bearer {}", hs256(&c)))
        .body(axum::body::Body::empty())
        .expect("request");
    let response = ssehub::http::router(hub.clone(), draft08_http(false))
        .oneshot(request)
        .await
        .expect("the router is infallible");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let opened = tokio::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(LIFETIME * 2), async {
        while let Some(frame) = body.frame().await {
            frame.expect("the body ends rather than failing");
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its token twice over");
    let lived = opened.elapsed();
    assert!(
        lived + Duration::from_secs(1) >= Duration::from_secs(LIFETIME)
            && lived <= Duration::from_secs(LIFETIME),
        "the stream lived {lived:?} with a token for {LIFETIME} s"
    );
    drop(body);
    assert_eq!(
        crate::support::reasons(&closes),
        [ssehub::CloseReason::TokenExpired]
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn ssehub_token_mints_access_tokens_the_hub_accepts() {
    let mint = |grants: &[&str]| {
        let output = crate::support::binary::ssehub_command()
            .args([
                "token",
                "--jwt-key",
                SECRET,
                "--iss",
                ISS,
                "--aud",
                RESOURCE,
            ])
            .args(grants)
            .output()
            .expect("ssehub token");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    let publisher = mint(&["--publish", "https://example.com/books/1"]);
    let subscriber = mint(&["--subscribe", "https://example.com/books/1"]);
    let header = jsonwebtoken::decode_header(&publisher).expect("a JWT");
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));

    let hub = TestHub::start_http(config(), draft08_http(false)).await;
    let mut reader = SseClient::open(
        &format!("{}?match=https://example.com/books/1", hub.url),
        &[("authorization", &format!("Bearer {subscriber}"))],
    )
    .await;
    assert_eq!(reader.status, 200);
    let (status, id) = publish_with(
        &hub.url,
        &publisher,
        &[
            ("topic", "https://example.com/books/1"),
            ("data", "minted"),
            ("private", "on"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{id}");
    let event = reader.next_event().await;
    assert_eq!(
        (event.id.as_str(), event.data.as_str()),
        (id.as_str(), "minted")
    );
    // Its grant is only that topic.
    let (status, body) = publish_with(
        &hub.url,
        &publisher,
        &[("topic", "https://example.com/other")],
    )
    .await;
    assert_eq!(status, 403, "{body}");
    hub.stop().await;
}
