//! The HTTP API: routes, CORS, and errors as responses.
//!
//! [`router`] returns an axum `Router` with the Mercure endpoint at `/.well-known/mercure`
//! (`GET` subscribes, `POST` publishes); an application can `merge` it beside its own routes.
//! Serving it (listener, timeouts, graceful shutdown) is [`crate::server`]'s job.

pub mod error;
pub mod publish;
pub mod subscribe;

use axum::routing::get;
use axum::Router;
use http::{header, HeaderName, HeaderValue, Method, StatusCode};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::hub::Hub;
pub use error::ApiError;

/// The well-known path of a Mercure hub.
pub const MERCURE_PATH: &str = "/.well-known/mercure";

/// The hub's routes, with CORS for the configured origins.
pub fn router(hub: Hub) -> Router {
    let cors = cors_layer(&hub.config().cors_origins);
    let router = Router::new()
        .route(
            MERCURE_PATH,
            get(subscribe::subscribe).post(publish::publish),
        )
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not found: the hub lives at /.well-known/mercure",
            )
        })
        .with_state(hub);
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// CORS for browsers on other origins. A list of origins is answered with exactly the
/// requesting origin and `Access-Control-Allow-Credentials: true` (so `withCredentials` and the
/// `mercureAuthorization` cookie work); `*` allows any origin, but never with credentials.
fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::CACHE_CONTROL,
            HeaderName::from_static(subscribe::LAST_EVENT_ID),
        ])
        .expose_headers([HeaderName::from_static(subscribe::LAST_EVENT_ID)])
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
