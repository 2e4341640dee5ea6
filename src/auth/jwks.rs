//! An issuer's keys from a JWK Set URL (RFC 7517), for draft-08 tokens.
//!
//! Owns: fetching the set, keeping the last good copy, and answering "which keys may verify a
//! token signed with `alg` and naming `kid`". Which issuer a token belongs to, and whether its
//! algorithm is allowed, is [`super::issuers`]'s job.
//!
//! - The set is fetched on first use, then every [`JwksSettings::refresh`] by a task that
//!   ends by itself once the last handle to the keys is dropped (it holds a `Weak`).
//! - A token naming a `kid` the cache does not hold triggers one refetch, at most once per
//!   [`JwksSettings::min_refetch`] (so a flood of made-up `kid`s costs the issuer one request
//!   per interval, not one per token); concurrent requests share that one fetch.
//! - A fetch that fails (the server is down, answers an error, or sends something that is not
//!   a key set) keeps the cached keys: an outage of the key server never locks out tokens that
//!   verified before it. Only a successful answer replaces them, so a rotated set takes effect
//!   without a restart.
//! - Keys for encryption (`use: enc`), symmetric keys (`kty: oct`: a shared secret has no
//!   place on a URL) and keys jsonwebtoken cannot read are skipped, one by one; the others
//!   are kept. A key's own `alg`, when it has one, must be the token's.
//!
//! Fetching needs the `jwks` cargo feature (reqwest on rustls with ring, the system's roots);
//! without it every fetch fails with [`JwksError::NoClient`].

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use thiserror::Error;
use tokio::time::Instant;

/// How an issuer's key set is kept fresh. `Default` gives the values documented on each field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksSettings {
    /// Time between two scheduled fetches of the set (default 5 minutes; zero: never again
    /// after the first, only on unknown `kid`s).
    pub refresh: Duration,
    /// Shortest time between two fetches caused by tokens naming a `kid` the cache does not
    /// hold (default 30 s).
    pub min_refetch: Duration,
    /// Longest time one fetch may take (default 5 s).
    pub timeout: Duration,
    /// Largest key set accepted, in bytes (default 256 KiB).
    pub max_bytes: usize,
}

impl Default for JwksSettings {
    fn default() -> Self {
        Self {
            refresh: Duration::from_secs(300),
            min_refetch: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            max_bytes: 256 * 1024,
        }
    }
}

/// Why the key set could not be fetched or used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JwksError {
    /// Not an `http://` or `https://` URL.
    #[error("{0:?} is not an http:// or https:// URL")]
    BadUrl(String),
    /// The build has no HTTP client for key sets (the `jwks` feature is off).
    #[error("this build of ssehub cannot fetch key sets (the `jwks` cargo feature is off)")]
    NoClient,
    /// The request failed, or the server answered an error status.
    #[error("fetching the key set failed: {0}")]
    Fetch(String),
    /// The answer is not a JWK Set.
    #[error("the answer is not a JWK Set: {0}")]
    Malformed(String),
    /// No key set has been fetched yet, and fetching failed.
    #[error("the issuer's key set is not available yet: {0}")]
    Unavailable(String),
}

/// One usable key of the set.
#[derive(Clone)]
struct SetKey {
    kid: Option<String>,
    /// The key's own `alg`, if it names one: then it verifies that algorithm only.
    alg: Option<Algorithm>,
    key: Arc<DecodingKey>,
}

#[derive(Default)]
struct State {
    keys: Arc<[SetKey]>,
    /// Whether a fetch has ever succeeded (an empty set that was fetched is a real answer).
    fetched: bool,
    /// When the last fetch started, successful or not (bounds refetches).
    last_attempt: Option<Instant>,
    /// Why the last fetch failed, when it did.
    last_error: Option<JwksError>,
}

struct Inner {
    url: String,
    settings: JwksSettings,
    /// Read on every verification, written after a fetch: a short critical section, never
    /// held across an `.await`.
    state: RwLock<State>,
    /// Serializes fetches, so that concurrent unknown `kid`s cause one request.
    fetching: tokio::sync::Mutex<()>,
    /// Whether the refresh task has been started (on first use, inside the runtime).
    refresher: std::sync::Once,
    #[cfg(feature = "jwks")]
    client: reqwest::Client,
}

/// The keys of one JWK Set URL: cheap to clone, shared by every clone.
#[derive(Clone)]
pub struct JwksKeys {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JwksKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksKeys")
            .field("url", &self.inner.url)
            .field("keys", &self.key_count())
            .finish_non_exhaustive()
    }
}

impl JwksKeys {
    /// Keys from `url`, fetched on first use.
    ///
    /// # Errors
    /// [`JwksError::BadUrl`] for a URL that is not `http://` or `https://`;
    /// [`JwksError::Fetch`] when the HTTP client cannot be built.
    pub fn new(url: &str, settings: JwksSettings) -> Result<Self, JwksError> {
        let lower = url.to_ascii_lowercase();
        let host_and_path = lower
            .strip_prefix("https://")
            .or_else(|| lower.strip_prefix("http://"));
        if host_and_path.is_none_or(|rest| rest.is_empty() || rest.starts_with('/')) {
            return Err(JwksError::BadUrl(url.to_owned()));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                url: url.to_owned(),
                settings,
                state: RwLock::default(),
                fetching: tokio::sync::Mutex::new(()),
                refresher: std::sync::Once::new(),
                #[cfg(feature = "jwks")]
                client: client::build(settings.timeout)?,
            }),
        })
    }

    /// The URL of the set.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// How many usable keys the cache holds.
    pub fn key_count(&self) -> usize {
        read(&self.inner.state).keys.len()
    }

    /// The cached keys that may verify a token signed with `alg` and naming `kid`: the key
    /// with that `kid` when the token names one, else every key. A `kid` the cache does not
    /// know refetches the set first (at most once per [`JwksSettings::min_refetch`]).
    ///
    /// # Errors
    /// [`JwksError::Unavailable`] when no set was ever fetched and fetching fails now.
    pub async fn keys_for(
        &self,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<Vec<Arc<DecodingKey>>, JwksError> {
        self.start_refresher();
        let (found, known) = self.lookup(alg, kid);
        if known {
            return Ok(found);
        }
        let asked_at = Instant::now();
        self.inner.refetch_if_due(asked_at).await;
        let (found, _) = self.lookup(alg, kid);
        let state = read(&self.inner.state);
        if !state.fetched {
            let reason = state
                .last_error
                .as_ref()
                .map_or_else(|| "not fetched yet".to_owned(), ToString::to_string);
            return Err(JwksError::Unavailable(reason));
        }
        Ok(found)
    }

    /// Fetches the set now and replaces the cache with it; on failure the cache is kept.
    /// Returns the number of usable keys fetched.
    ///
    /// # Errors
    /// Why the fetch failed.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        let _one_at_a_time = self.inner.fetching.lock().await;
        self.inner.fetch_and_store().await
    }

    /// The keys for `alg` and `kid`, and whether the cache could answer (a set was fetched,
    /// and it holds the `kid` when the token names one).
    fn lookup(&self, alg: Algorithm, kid: Option<&str>) -> (Vec<Arc<DecodingKey>>, bool) {
        let state = read(&self.inner.state);
        let usable = |key: &&SetKey| key.alg.is_none_or(|own| own == alg);
        let found: Vec<_> = match kid {
            Some(kid) => state
                .keys
                .iter()
                .filter(|key| key.kid.as_deref() == Some(kid))
                .filter(usable)
                .map(|key| Arc::clone(&key.key))
                .collect(),
            None => state
                .keys
                .iter()
                .filter(usable)
                .map(|key| Arc::clone(&key.key))
                .collect(),
        };
        let known = state.fetched && (kid.is_none() || !found.is_empty());
        (found, known)
    }

    /// Starts the periodic refresh, once, from inside the runtime. The task holds a `Weak`:
    /// when the last `JwksKeys` is dropped (the router with it), the task ends at its next tick.
    fn start_refresher(&self) {
        let refresh = self.inner.settings.refresh;
        if refresh.is_zero() {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let url = self.inner.url.clone();
        self.inner.refresher.call_once(move || {
            let span = tracing::info_span!("jwks_refresh", %url);
            tokio::spawn(tracing::Instrument::instrument(
                async move {
                    loop {
                        tokio::time::sleep(refresh).await;
                        let Some(inner) = weak.upgrade() else { break };
                        let _one_at_a_time = inner.fetching.lock().await;
                        // Failures are logged by `fetch_and_store` and keep the cache.
                        let _ = inner.fetch_and_store().await;
                    }
                },
                span,
            ));
        });
    }
}

impl Inner {
    /// Refetches unless a fetch started less than `min_refetch` ago, or started after
    /// `asked_at` (a concurrent request already fetched what this one wanted).
    async fn refetch_if_due(&self, asked_at: Instant) {
        let due = |state: &State| match state.last_attempt {
            None => true,
            Some(last) => last < asked_at && last.elapsed() >= self.settings.min_refetch,
        };
        if !due(&read(&self.state)) {
            return;
        }
        let _one_at_a_time = self.fetching.lock().await;
        if !due(&read(&self.state)) {
            return;
        }
        let _ = self.fetch_and_store().await;
    }

    /// One fetch; the caller holds `fetching`. A success replaces the keys, a failure keeps
    /// them and is remembered.
    async fn fetch_and_store(&self) -> Result<usize, JwksError> {
        write(&self.state).last_attempt = Some(Instant::now());
        let result = self.fetch().await;
        let mut state = write(&self.state);
        match result {
            Ok(keys) => {
                let count = keys.len();
                tracing::debug!(url = %self.url, keys = count, "key set fetched");
                state.keys = keys.into();
                state.fetched = true;
                state.last_error = None;
                Ok(count)
            }
            Err(error) => {
                tracing::warn!(url = %self.url, %error, cached = state.keys.len(), "key set fetch failed; keeping the cached keys");
                state.last_error = Some(error.clone());
                Err(error)
            }
        }
    }

    #[cfg(feature = "jwks")]
    async fn fetch(&self) -> Result<Vec<SetKey>, JwksError> {
        let body = client::get(&self.client, &self.url, self.settings.max_bytes).await?;
        parse_set(&body)
    }

    #[cfg(not(feature = "jwks"))]
    async fn fetch(&self) -> Result<Vec<SetKey>, JwksError> {
        Err(JwksError::NoClient)
    }
}

/// The usable keys of a JWK Set document; keys that cannot be used are skipped one by one.
// Without the `jwks` feature nothing is fetched, so nothing is parsed (the unit tests still are).
#[cfg_attr(not(feature = "jwks"), allow(dead_code))]
fn parse_set(body: &[u8]) -> Result<Vec<SetKey>, JwksError> {
    #[derive(serde::Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let raw: RawSet = serde_json::from_slice(body)
        .map_err(|_| JwksError::Malformed("expected a JSON object with a `keys` array".into()))?;
    let mut keys = Vec::with_capacity(raw.keys.len());
    for value in raw.keys {
        match parse_key(value) {
            Ok(key) => keys.push(key),
            Err(reason) => tracing::debug!(reason, "key set entry skipped"),
        }
    }
    Ok(keys)
}

#[cfg_attr(not(feature = "jwks"), allow(dead_code))]
fn parse_key(value: serde_json::Value) -> Result<SetKey, &'static str> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|_| "not a JWK jsonwebtoken reads")?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("an encryption key");
    }
    if matches!(
        jwk.algorithm,
        AlgorithmParameters::OctetKey(_) | AlgorithmParameters::Other(_)
    ) {
        return Err("a symmetric or unknown key type");
    }
    let alg = match jwk.common.key_algorithm {
        None => None,
        // The key's `alg` as written, read as a signature algorithm: an encryption algorithm
        // (RSA-OAEP…) is not one, and the key is skipped.
        Some(key_algorithm) => Some(
            serde_json::to_value(key_algorithm)
                .ok()
                .and_then(|v| v.as_str().and_then(|s| s.parse::<Algorithm>().ok()))
                .filter(|alg| {
                    !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
                })
                .ok_or("its alg is not an asymmetric signature algorithm")?,
        ),
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| "its key parameters do not parse")?;
    Ok(SetKey {
        kid: jwk.common.key_id,
        alg,
        key: Arc::new(key),
    })
}

fn read(lock: &RwLock<State>) -> std::sync::RwLockReadGuard<'_, State> {
    // The state is replaced whole under the lock; a panic elsewhere cannot leave it torn.
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write(lock: &RwLock<State>) -> std::sync::RwLockWriteGuard<'_, State> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The HTTP client of key sets: reqwest on rustls with ring (the server's provider) and the
/// system's roots; no redirects (a key set URL is configured exactly).
#[cfg(feature = "jwks")]
mod client {
    use std::time::Duration;

    use super::JwksError;

    pub(super) fn build(timeout: Duration) -> Result<reqwest::Client, JwksError> {
        let tls = crate::client_tls::platform_config("key sets")
            .map_err(|e| JwksError::Fetch(format!("TLS setup: {e}")))?;
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| JwksError::Fetch(format!("building the HTTP client: {e}")))
    }

    /// The body of `url`, at most `max_bytes`, from a 2xx answer.
    pub(super) async fn get(
        client: &reqwest::Client,
        url: &str,
        max_bytes: usize,
    ) -> Result<Vec<u8>, JwksError> {
        let fetch = |e: reqwest::Error| JwksError::Fetch(e.without_url().to_string());
        let mut response = client
            .get(url)
            .header(
                http::header::ACCEPT,
                "application/jwk-set+json, application/json",
            )
            .send()
            .await
            .map_err(fetch)?;
        let status = response.status();
        if !status.is_success() {
            return Err(JwksError::Fetch(format!("the server answered {status}")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(fetch)? {
            if body.len() + chunk.len() > max_bytes {
                return Err(JwksError::Malformed(format!(
                    "larger than {max_bytes} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_entries_are_skipped_and_the_others_kept() {
        let body = serde_json::json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256", "kid": "sig", "alg": "ES256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256", "kid": "hs-alg", "alg": "HS256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "XYZ", "kid": "unknown"},
            "not an object"
        ]});
        let keys = parse_set(body.to_string().as_bytes()).expect("a set");
        let kids: Vec<_> = keys.iter().map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, [Some("sig")]);
        assert_eq!(keys[0].alg, Some(Algorithm::ES256));
        assert!(parse_set(b"[]").is_err());
        assert!(parse_set(b"{\"keys\": 5}").is_err());
        assert_eq!(parse_set(b"{\"keys\": []}").map(|k| k.len()), Ok(0));
    }

    #[test]
    fn only_http_urls_are_accepted() {
        for url in ["file:///etc/jwks.json", "ftp://x/jwks", "", "https://"] {
            assert!(
                matches!(
                    JwksKeys::new(url, JwksSettings::default()),
                    Err(JwksError::BadUrl(_))
                ),
                "{url}"
            );
        }
        assert!(JwksKeys::new("https://issuer.example/jwks", JwksSettings::default()).is_ok());
    }
}
