//! [`LiveHttpConfig`]: the HTTP settings that a running router reads per request, and that
//! `ssehub serve` replaces on SIGHUP without a restart.
//!
//! Each request loads the current generation once (an [`ArcSwap`], no lock): its handler sees
//! one consistent [`HttpConfig`] (keys, origins, the publish body limit, the dialects) from
//! start to end, and CORS is answered with that generation's layer. [`LiveHttpConfig::replace`]
//! swaps in a new generation and then has [`super::token_recheck`] re-verify the token of every
//! open authorized stream under it. What the router was *built* with (whether `/metrics` and
//! the subscriptions API are routed, the draft-08 metadata path) is fixed for its life: a
//! change there needs a new router (the CLI says it needs a restart).

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tower::{Layer, ServiceExt};
use tower_http::cors::CorsLayer;

use super::token_recheck::{RecheckReport, TokenStreams};
use super::HttpConfig;
use crate::hub::Hub;

/// The HTTP settings in effect, replaceable while the router serves.
#[derive(Debug)]
pub struct LiveHttpConfig {
    /// The current generation: its settings and the CORS layer built from them.
    current: ArcSwap<Generation>,
    /// The open streams whose subscription was authorized by a token, re-verified on
    /// [`Self::replace`].
    pub(crate) streams: TokenStreams,
}

/// One generation of settings.
#[derive(Debug)]
struct Generation {
    config: Arc<HttpConfig>,
    /// `None` without CORS origins: no CORS headers at all.
    cors: Option<CorsLayer>,
}

impl Generation {
    fn new(config: HttpConfig) -> Self {
        Self {
            cors: super::cors_layer(&config.cors_origins),
            config: Arc::new(config),
        }
    }
}

impl LiveHttpConfig {
    /// The settings a router starts with.
    pub fn new(config: HttpConfig) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::from_pointee(Generation::new(config)),
            streams: TokenStreams::default(),
        })
    }

    /// The settings in effect now.
    pub fn current(&self) -> Arc<HttpConfig> {
        Arc::clone(&self.current.load().config)
    }

    /// Whether `config` is still the generation in effect (it was not replaced since it was
    /// loaded).
    pub(crate) fn is_current(&self, config: &Arc<HttpConfig>) -> bool {
        Arc::ptr_eq(&self.current.load().config, config)
    }

    /// Puts `config` in effect for every request from now on, then re-verifies the token of
    /// each open authorized stream under it and ends the streams whose token no longer
    /// verifies (each logged with the reason). Streams opened during the re-check are checked
    /// by their own request against the new settings.
    pub async fn replace(&self, hub: &Hub, config: HttpConfig) -> RecheckReport {
        self.current.store(Arc::new(Generation::new(config)));
        let config = self.current();
        self.streams.recheck(hub, &config).await
    }

    /// Streams currently registered for a re-check (authorized by a token).
    pub fn token_streams(&self) -> usize {
        self.streams.len()
    }
}

/// CORS with the layer of the generation in effect (none when it has no origins).
pub(super) async fn cors(
    State(live): State<Arc<LiveHttpConfig>>,
    request: Request,
    next: Next,
) -> Response {
    let cors = live.current.load().cors.clone();
    match cors {
        // `Next` never fails (its error is `Infallible`), and neither does the CORS service
        // around it.
        Some(cors) => match cors.layer(next).oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
        None => next.run(request).await,
    }
}
