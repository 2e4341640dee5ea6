//! The HTTP API: routes, CORS, and errors as responses.
//!
//! [`router`] returns an axum `Router` with the Mercure endpoint at `/.well-known/mercure`
//! (`GET` subscribes, `POST` publishes); an application can `merge` it beside its own routes,
//! or `nest` it under a prefix. Its settings are an [`HttpConfig`], apart from the hub's own
//! [`crate::HubConfig`]; handlers reach both through the router's state. Serving it (listener,
//! timeouts, graceful shutdown, the direct writer for event streams) is [`crate::server`]'s
//! job: a subscription's response carries the [`EventStream`] extension so that the server
//! knows it is a stream without reading its headers.

mod bearer;
pub mod config;
pub mod demo;
pub mod dialect;
pub mod error;
mod form;
mod live;
pub mod publish;
pub mod subscribe;
pub mod subscriptions;
mod token_recheck;

use std::sync::Arc;

use axum::extract::{FromRef, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::{header, HeaderName, HeaderValue, Method, StatusCode};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::hub::Hub;
pub use config::HttpConfig;
pub use error::ApiError;
pub use live::LiveHttpConfig;
pub use subscribe::EventStream;
pub use token_recheck::RecheckReport;

/// The well-known path of a Mercure hub.
pub const MERCURE_PATH: &str = "/.well-known/mercure";

/// What the handlers of [`router`] share: the hub, and the HTTP settings. Handlers take the
/// part they need (`State<Hub>`, `State<Arc<HttpConfig>>`) through [`FromRef`].
#[derive(Clone)]
struct Api {
    hub: Hub,
    /// Shared by every request; each request reads the generation in effect when it starts.
    live: Arc<LiveHttpConfig>,
}

impl FromRef<Api> for Hub {
    fn from_ref(api: &Api) -> Self {
        api.hub.clone()
    }
}

impl FromRef<Api> for Arc<HttpConfig> {
    fn from_ref(api: &Api) -> Self {
        api.live.current()
    }
}

impl FromRef<Api> for Arc<LiveHttpConfig> {
    fn from_ref(api: &Api) -> Self {
        Arc::clone(&api.live)
    }
}

/// The hub's routes: the Mercure endpoint, `/healthz`, `/readyz`, and `/metrics` unless
/// [`HttpConfig::metrics_on_router`] is off; the subscriptions API when
/// [`HubConfig::subscriptions`](crate::HubConfig::subscriptions) is on; CORS for
/// [`HttpConfig::cors_origins`]; every error response counted by reason.
///
/// An application may `merge` it beside its own routes or `nest` it under a prefix; when
/// nested, tell the server where subscriptions are
/// ([`ServerOptions::subscribe_path`](crate::server::ServerOptions::subscribe_path)), so that
/// their streams still get the small writer.
pub fn router(hub: Hub, config: HttpConfig) -> Router {
    live_router(hub, LiveHttpConfig::new(config))
}

/// [`router`] on settings that can be replaced while it serves ([`LiveHttpConfig::replace`]):
/// keys, origins (CORS included), the publish body limit and the dialects are read per request.
/// What decides the routes themselves (`/metrics`, the subscriptions API, the draft-08
/// metadata path) is read once, here.
pub fn live_router(hub: Hub, live: Arc<LiveHttpConfig>) -> Router {
    let config = live.current();
    let mut router = Router::new()
        .route(
            MERCURE_PATH,
            get(subscribe::subscribe)
                .post(publish::publish)
                .fallback(subscribe::other_method),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready));
    if config.metrics_on_router {
        router = router.route("/metrics", get(metrics));
    }
    if hub.config().subscriptions {
        router = router.merge(subscriptions::routes());
    }
    if let Some(auth) = &config.draft08 {
        // RFC 9728 §3: the resource identifier's path under the well-known prefix.
        router = router.route(&auth.metadata_path(), get(bearer::metadata));
    }
    let router = router
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not found: the hub lives at /.well-known/mercure",
            )
        })
        .layer(middleware::from_fn_with_state(
            hub.clone(),
            count_rejections,
        ))
        .with_state(Api {
            hub,
            live: Arc::clone(&live),
        });
    router.layer(middleware::from_fn_with_state(live, live::cors))
}

/// `/metrics` alone, for a listener of its own (`--metrics ADDR`).
pub fn metrics_router(hub: Hub) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(hub)
}

/// `/readyz`: 200 when publishes can be taken (Kubernetes readiness), 503 with the reason.
/// While Redis is away and publishes are spooled, `200` "degraded: spooling": they are taken.
/// While an outbox relay's database is unreachable, `200` "degraded: outbox…": the hub serves
/// and takes publishes; the rows wait in their table until the relay reconnects.
async fn ready(State(hub): State<Hub>) -> Result<String, ApiError> {
    hub.check_ready().await.map_err(ApiError::from)?;
    Ok(match (hub.spool_status(), hub.outbox_reachable()) {
        (Some(spool), _) if spool.spooling => format!(
            "degraded: spooling ({} publishes wait for Redis, the oldest for {} s)\n",
            spool.events,
            spool.oldest_age.map_or(0, |age| age.as_secs())
        ),
        (_, Some(false)) => "degraded: the outbox database is unreachable (its rows wait in \
             their table; the relay reconnects by itself)\n"
            .to_owned(),
        _ => "ready\n".to_owned(),
    })
}

async fn metrics(State(hub): State<Hub>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        hub.render_metrics().await,
    )
}

/// Counts every error response under a reason named after its status.
async fn count_rejections(State(hub): State<Hub>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if response
        .extensions()
        .get::<subscribe::RefusedForNow>()
        .is_some()
    {
        hub.metrics()
            .requests_rejected
            .get_or_create(&crate::metrics::Reason {
                reason: "unavailable",
            })
            .inc();
    } else if status.is_client_error() || status.is_server_error() {
        let reason = match status {
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            _ if status.is_client_error() => "other_client_error",
            _ => "server_error",
        };
        hub.metrics()
            .requests_rejected
            .get_or_create(&crate::metrics::Reason { reason })
            .inc();
    }
    response
}

/// CORS for browsers on other origins. A list of origins is answered with exactly the
/// requesting origin and `Access-Control-Allow-Credentials: true` (so `withCredentials` and the
/// `mercureAuthorization` cookie work); `*` allows any origin, but never with credentials.
fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let layer = CorsLayer::new()
        // `QUERY`: draft-08 subscriptions whose matchers are in the body (a fetch-based client).
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::from_bytes(subscribe::QUERY.as_bytes()).unwrap_or(Method::GET),
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::CACHE_CONTROL,
            HeaderName::from_static(subscribe::LAST_EVENT_ID),
        ])
        // `Link` carries the subscriptions API's cursor (draft-08 §Subscription API).
        .expose_headers([
            HeaderName::from_static(subscribe::LAST_EVENT_ID),
            HeaderName::from_static(dialect::MERCURE_LAST_EVENT_ID),
            header::LINK,
        ])
        .max_age(std::time::Duration::from_secs(3600));
    if origins.iter().any(|origin| origin == "*") {
        return Some(layer.allow_origin(AllowOrigin::any()));
    }
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    Some(
        layer
            .allow_origin(AllowOrigin::list(list))
            .allow_credentials(true),
    )
}

/// The first value of `name` in a query string.
pub(crate) fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}
