//! Re-verifying the tokens of open streams when the HTTP settings are replaced (SIGHUP).
//!
//! A subscription authorized by a token registers its verification inputs (the token, where
//! it came from, the dialect and the selectors it asked for) in [`TokenStreams`] for as long
//! as its stream is open. [`super::LiveHttpConfig::replace`] puts the new settings in effect
//! and then re-runs the subscribe endpoint's own authorization
//! ([`super::subscribe::authorize_subscription`]) for each registered stream; a stream whose
//! token no longer verifies (a rotated key, a new audience, an issuer removed) is ended, and
//! the reason is logged. Ending is the right answer for a browser: an `EventSource` whose `200`
//! stream ends reconnects by itself, and that new request is answered by the new settings
//! (`401` for the old token), whereas a non-`200` status would have been final.
//!
//! A stream that registers while a reload runs may have been verified under the old settings
//! after the sweep took its snapshot: the subscribe handler checks, once registered, whether
//! its settings are still current, and re-verifies under the new ones if not
//! ([`StreamRegistration::verified_under`]).
//!
//! A verification that fails for a cause that may pass (a JWK Set that cannot be fetched: a
//! `5xx`) keeps the stream, with a warning. Anonymous streams (no token) are not re-checked.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::error::ApiError;
use super::{HttpConfig, LiveHttpConfig};
use crate::auth::TokenSource;
use crate::dialect::Dialect;
use crate::hub::Hub;

/// What verified a stream's subscription, kept to verify it again.
#[derive(Debug)]
pub(crate) struct TokenCheck {
    /// The raw token.
    pub(crate) token: String,
    /// Where the request carried it (a draft-08 token is never accepted in the URL).
    pub(crate) source: TokenSource,
    /// The dialect of the request.
    pub(crate) dialect: Dialect,
    /// The subscription's selectors and matcher values, which draft-08 grants are checked
    /// against.
    pub(crate) selectors: Vec<String>,
    /// The subscriber's address, for the log line when its stream is ended.
    pub(crate) remote_addr: Option<SocketAddr>,
}

/// The open streams authorized by a token.
#[derive(Debug, Default)]
pub(crate) struct TokenStreams {
    next_id: AtomicU64,
    /// Only map operations run under the lock (never an `.await`), so a `std` mutex.
    open: Mutex<HashMap<u64, Entry>>,
}

#[derive(Debug)]
struct Entry {
    check: Arc<TokenCheck>,
    /// Cancelled to end the stream.
    end: CancellationToken,
}

/// How a re-check went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecheckReport {
    /// Streams whose token was verified again.
    pub checked: usize,
    /// Streams ended because their token no longer verifies.
    pub ended: usize,
}

impl TokenStreams {
    // A poisoned lock still guards a consistent map: only inserts and removes run under it.
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Re-verifies every registered stream under `config`; ends those that fail.
    pub(crate) async fn recheck(&self, hub: &Hub, config: &HttpConfig) -> RecheckReport {
        let snapshot: Vec<(Arc<TokenCheck>, CancellationToken)> = self
            .lock()
            .values()
            .filter(|entry| !entry.end.is_cancelled())
            .map(|entry| (Arc::clone(&entry.check), entry.end.clone()))
            .collect();
        let mut report = RecheckReport::default();
        for (check, end) in snapshot {
            report.checked += 1;
            match verify(config, hub, &check).await {
                Ok(()) => {}
                // Refused: the token no longer verifies.
                Err(error) if error.status.is_client_error() => {
                    report.ended += 1;
                    log_ended(&check, &error);
                    end.cancel();
                }
                // Not known either way (a key set that could not be fetched): a stream is not
                // ended for what may pass; its next request is verified anyway.
                Err(error) => warn!(
                    remote_addr = ?check.remote_addr,
                    reason = %error.message,
                    "stream kept: its token could not be verified again"
                ),
            }
        }
        report
    }
}

/// Verifies `check` under `config`, as the subscribe endpoint would.
async fn verify(config: &HttpConfig, hub: &Hub, check: &TokenCheck) -> Result<(), ApiError> {
    super::subscribe::authorize_subscription(
        config,
        hub,
        check.dialect,
        Some((&check.token, check.source)),
        &check.selectors,
    )
    .await
    .map(drop)
}

fn log_ended(check: &TokenCheck, error: &ApiError) {
    warn!(
        remote_addr = ?check.remote_addr,
        reason = %error.message,
        "stream ended: its token no longer verifies under the reloaded configuration"
    );
}

/// A stream's place in [`TokenStreams`]; dropping it (the stream ended) unregisters.
#[derive(Debug)]
pub(crate) struct StreamRegistration {
    live: Arc<LiveHttpConfig>,
    id: u64,
    check: Arc<TokenCheck>,
    /// Cancelled when the stream must end.
    pub(crate) end: CancellationToken,
}

impl StreamRegistration {
    /// Registers a stream authorized by `check`.
    pub(crate) fn new(live: &Arc<LiveHttpConfig>, check: TokenCheck) -> Self {
        let id = live.streams.next_id.fetch_add(1, Ordering::Relaxed);
        let check = Arc::new(check);
        let end = CancellationToken::new();
        live.streams.lock().insert(
            id,
            Entry {
                check: Arc::clone(&check),
                end: end.clone(),
            },
        );
        Self {
            live: Arc::clone(live),
            id,
            check,
            end,
        }
    }

    /// Called once registered, with the settings the request was authorized under: when they
    /// were replaced meanwhile (a reload's sweep may have missed this stream), verifies again
    /// under the settings now in effect.
    ///
    /// # Errors
    /// The refusal of the new settings; the caller answers it instead of the stream.
    pub(crate) async fn verified_under(
        &self,
        verified: &Arc<HttpConfig>,
        hub: &Hub,
    ) -> Result<(), ApiError> {
        if self.live.is_current(verified) {
            return Ok(());
        }
        let current = self.live.current();
        verify(&current, hub, &self.check)
            .await
            .inspect_err(|error| {
                log_ended(&self.check, error);
            })
    }
}

impl Drop for StreamRegistration {
    fn drop(&mut self) {
        self.live.streams.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AuthConfig, Claims, JwtAlgorithm, JwtSigner, JwtVerifier, MercureClaim};
    use crate::HubConfig;

    const OLD: &str = "token-recheck-old-key-of-at-least-32-bytes";
    const NEW: &str = "token-recheck-new-key-of-at-least-32-bytes";

    fn http(key: &str) -> HttpConfig {
        let verifier = JwtVerifier::new(JwtAlgorithm::HS256, key).expect("key");
        HttpConfig {
            auth: AuthConfig {
                publisher: Some(verifier.clone()),
                subscriber: Some(verifier),
                anonymous: false,
            },
            ..HttpConfig::default()
        }
    }

    fn check(key: &str) -> TokenCheck {
        let token = JwtSigner::new(JwtAlgorithm::HS256, key)
            .expect("key")
            .sign(&Claims {
                exp: None,
                mercure: Some(MercureClaim {
                    subscribe: Some(vec!["*".into()]),
                    ..MercureClaim::default()
                }),
            })
            .expect("sign");
        TokenCheck {
            token,
            source: TokenSource::Header,
            dialect: Dialect::Draft07,
            selectors: vec!["https://example.com/1".into()],
            remote_addr: None,
        }
    }

    #[tokio::test]
    async fn a_reload_ends_old_key_streams_and_keeps_new_key_ones() {
        let hub = Hub::builder(HubConfig::default())
            .build()
            .await
            .expect("hub");
        let live = LiveHttpConfig::new(http(OLD));
        let old = StreamRegistration::new(&live, check(OLD));
        let report = live.replace(&hub, http(NEW)).await;
        assert_eq!(
            report,
            RecheckReport {
                checked: 1,
                ended: 1
            }
        );
        assert!(old.end.is_cancelled());
        let new = StreamRegistration::new(&live, check(NEW));
        let report = live.replace(&hub, http(NEW)).await;
        assert_eq!(
            report,
            RecheckReport {
                checked: 1,
                ended: 0
            }
        );
        assert!(!new.end.is_cancelled());
        drop((old, new));
        assert_eq!(live.token_streams(), 0, "dropping a stream unregisters it");
    }

    #[tokio::test]
    async fn a_stream_verified_before_a_reload_and_registered_after_its_sweep_is_checked_again() {
        let hub = Hub::builder(HubConfig::default())
            .build()
            .await
            .expect("hub");
        let live = LiveHttpConfig::new(http(OLD));
        // The request loaded the old settings and verified its token under them...
        let verified_under = live.current();
        // ...a reload swapped the keys and swept (nothing registered yet)...
        let report = live.replace(&hub, http(NEW)).await;
        assert_eq!(report.checked, 0);
        // ...then the stream registered: it must be refused under the new keys.
        let late = StreamRegistration::new(&live, check(OLD));
        assert!(late.verified_under(&verified_under, &hub).await.is_err());
        // Under settings still current, no second verification is needed.
        let current = live.current();
        let fresh = StreamRegistration::new(&live, check(NEW));
        assert!(fresh.verified_under(&current, &hub).await.is_ok());
    }
}
