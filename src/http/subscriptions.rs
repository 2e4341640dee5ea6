//! The subscriptions API (draft-dunglas-mercure-07 §Subscription API), served with
//! `--subscriptions`:
//! `GET /.well-known/mercure/subscriptions[/{topic}[/{subscriber}]]` answers JSON-LD listing the
//! active subscriptions of this instance. The client needs a subscriber token whose
//! `mercure.subscribe` selectors match the requested URL.

use std::sync::Arc;

use axum::extract::{FromRef, Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde_json::{json, Value};

use super::error::ApiError;
use super::{query_param, HttpConfig};
use crate::auth::{self, AuthError};
use crate::hub::subscription_events::{subscription_document, SUBSCRIPTIONS_PATH};
use crate::hub::Hub;

/// The routes of the subscriptions API (merged into [`super::router`] when enabled), for any
/// router state that yields the hub and the HTTP settings (whose `auth` checks the tokens).
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Hub: FromRef<S>,
    Arc<HttpConfig>: FromRef<S>,
{
    Router::new()
        .route(SUBSCRIPTIONS_PATH, get(all))
        .route(&format!("{SUBSCRIPTIONS_PATH}/{{topic}}"), get(by_topic))
        .route(
            &format!("{SUBSCRIPTIONS_PATH}/{{topic}}/{{subscriber}}"),
            get(one),
        )
}

/// Mercure: the requested URL must match one of the token's `mercure.subscribe` selectors.
fn authorize(
    hub: &Hub,
    config: &HttpConfig,
    headers: &HeaderMap,
    query: Option<&str>,
    url: &str,
) -> Result<(), ApiError> {
    let query_token = query.and_then(|q| query_param(q, "authorization"));
    let token = auth::extract_token(headers, query_token.as_deref())?.map(|(token, _)| token);
    let Some(token) = token else {
        return Err(AuthError::MissingToken.into());
    };
    let grant = config
        .auth
        .authorize_subscriber(Some(&token), hub.selector_cache())?;
    if grant.private_selectors.iter().any(|s| s.matches(url)) {
        Ok(())
    } else {
        Err(AuthError::Forbidden(format!(
            "the token's mercure.subscribe claim does not allow {url}"
        ))
        .into())
    }
}

fn json_ld(hub: &Hub, mut document: Value) -> Response {
    if let Some(object) = document.as_object_mut() {
        object.insert("@context".into(), json!("https://mercure.rocks/"));
        object.insert("lastEventID".into(), json!(hub.last_event_id()));
    }
    let mut response = (
        [(header::CONTENT_TYPE, "application/ld+json")],
        document.to_string(),
    )
        .into_response();
    let headers = response.headers_mut();
    // The discovery link (Mercure §Discovery); the path is `super::MERCURE_PATH`.
    headers.insert(
        header::LINK,
        HeaderValue::from_static("</.well-known/mercure>; rel=\"mercure\""),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("must-revalidate"),
    );
    response
}

/// The subscriptions whose topic selector is `topic` (all when `None`), as JSON-LD documents.
fn subscriptions(hub: &Hub, topic: Option<&str>) -> Vec<Value> {
    hub.subscribers()
        .iter()
        .flat_map(|info| {
            info.topics
                .iter()
                .filter(move |t| topic.is_none_or(|wanted| wanted == t.as_str()))
                .map(move |t| subscription_document(info, t, true))
        })
        .collect()
}

async fn all(
    State(hub): State<Hub>,
    State(config): State<Arc<HttpConfig>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(
        &hub,
        &config,
        &headers,
        query.as_deref(),
        SUBSCRIPTIONS_PATH,
    )?;
    let list = subscriptions(&hub, None);
    Ok(json_ld(
        &hub,
        json!({"id": SUBSCRIPTIONS_PATH, "type": "Subscriptions", "subscriptions": list}),
    ))
}

async fn by_topic(
    State(hub): State<Hub>,
    State(config): State<Arc<HttpConfig>>,
    Path(topic): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = format!(
        "{SUBSCRIPTIONS_PATH}/{}",
        crate::hub::subscription_events::expand_variable(&topic)
    );
    authorize(&hub, &config, &headers, query.as_deref(), &id)?;
    let list = subscriptions(&hub, Some(&topic));
    Ok(json_ld(
        &hub,
        json!({"id": id, "type": "Subscriptions", "subscriptions": list}),
    ))
}

async fn one(
    State(hub): State<Hub>,
    State(config): State<Arc<HttpConfig>>,
    Path((topic, subscriber)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = crate::hub::subscription_events::subscription_topic(&topic, &subscriber);
    authorize(&hub, &config, &headers, query.as_deref(), &id)?;
    let found = hub
        .subscribers()
        .into_iter()
        .find(|info| info.uri == subscriber && info.topics.contains(&topic));
    match found {
        Some(info) => Ok(json_ld(&hub, subscription_document(&info, &topic, true))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no active subscription {id} on this hub"),
        )),
    }
}
