//! The subscriptions API, served with `--subscriptions`, in both dialects:
//!
//! | path under `/.well-known/mercure/subscriptions` | lists |
//! | --- | --- |
//! | (none) | every subscription |
//! | `/{topic}` | the draft-07 subscriptions of one `topic` selector (draft-07 §Subscription API) |
//! | `/{match_type}/{match}` | the draft-08 subscriptions of one matcher (draft-08 §Subscription API) |
//! | `/{topic}/{subscriber}` | one draft-07 subscription |
//! | `/{match_type}/{match}/{subscriber}` | one draft-08 subscription |
//!
//! Two segments are a matcher's collection when the first is a matcher type's name (`exact`,
//! `urlpattern`), as in Mercure's reference hub with its compatibility mode on; otherwise one
//! draft-07 subscription. A draft-07 selector spelled `exact` or `urlpattern` is then listed by
//! the collections but has no URL of its own.
//!
//! Every subscription document is the one its subscription event carries
//! ([`crate::hub::subscription_events`]: each in the dialect it was made in). A collection's
//! envelope and headers are those of the request's dialect, told as for a subscription
//! ([`super::dialect`]): draft-07, JSON-LD (`application/ld+json`, `@context`, `lastEventID`);
//! draft-08, JSON (`application/json`) with the reconciliation cursor on the `rel="mercure"`
//! `Link` (`last-event-id`, `type`, `content-type`) and as the `ETag`. One subscription is
//! answered in its own dialect's way.
//!
//! The client needs a subscriber token whose grant (draft-07 `mercure.subscribe`, draft-08 a
//! `subscribe` authorization detail) matches the requested path; a draft-08 refusal carries
//! its RFC 6750 challenge.

use std::sync::Arc;

use axum::extract::{FromRef, Path};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde_json::{json, Value};

use super::dialect::{self, Markers};
use super::error::ApiError;
use super::subscribe::authorize_subscription;
use super::{bearer, HttpConfig, MERCURE_PATH};
use crate::auth::{AuthError, TokenError, TokenSource};
use crate::dialect::Dialect;
use crate::hub::subscription_events::{
    expand_variable, matcher_collection_path, subscription_document, subscription_event_document,
    subscription_topic, RESERVED_EVENT_TYPE, SUBSCRIPTIONS_PATH,
};
use crate::hub::{Hub, Selection, SubscriberInfo};
use crate::topic::MatcherType;

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
            &format!("{SUBSCRIPTIONS_PATH}/{{first}}/{{second}}"),
            get(two_segments),
        )
        .route(
            &format!("{SUBSCRIPTIONS_PATH}/{{match_type}}/{{match}}/{{subscriber}}"),
            get(one_of_a_matcher),
        )
}

/// What every handler extracts.
struct Request {
    hub: Hub,
    config: Arc<HttpConfig>,
    query: Option<String>,
    headers: HeaderMap,
}

impl Request {
    /// Authorizes the request for `path` and tells its dialect.
    ///
    /// # Errors
    /// `400` for a request mixing the dialects (or a draft-08 token in the URL), `401` without
    /// a valid token, `403` when its grant does not match `path`.
    async fn authorize(&self, path: &str) -> Result<Dialect, ApiError> {
        let config = &self.config;
        let mut markers = Markers::default();
        let mut query_token = None;
        for (name, value) in dialect::form_pairs(self.query.as_deref().unwrap_or("")) {
            let name = String::from_utf8_lossy(&name);
            markers.note_param(&name);
            if name == "authorization" && query_token.is_none() {
                query_token = Some(String::from_utf8_lossy(&value).into_owned());
            }
        }
        bearer::draft08_token(
            config,
            query_token
                .as_deref()
                .map(|token| (token, TokenSource::Query)),
        )?;
        let resolved = dialect::resolve(
            config.dialects,
            markers,
            &self.headers,
            query_token.as_deref(),
        )?;
        let Some((token, source)) = resolved.token else {
            return Err(match (&config.draft08, resolved.dialect) {
                (Some(auth), Dialect::Draft08) => bearer::token_error(auth, TokenError::Missing),
                _ => bearer::auth_error(config, AuthError::MissingToken),
            });
        };
        let token = Some((token.as_ref(), source));
        let grant = authorize_subscription(config, &self.hub, resolved.dialect, token, &[]).await?;
        if grant.private_selectors.iter().any(|s| s.matches(path)) {
            return Ok(resolved.dialect);
        }
        Err(match bearer::draft08_token(config, token)? {
            Some(auth) => bearer::token_error(
                auth,
                TokenError::InsufficientScope(format!(
                    "no authorization detail of the token grants `subscribe` on {path}"
                )),
            ),
            None => AuthError::Forbidden(format!(
                "the token's mercure.subscribe claim does not allow {path}"
            ))
            .into(),
        })
    }
}

impl<S> axum::extract::FromRequestParts<S> for Request
where
    S: Send + Sync,
    Hub: FromRef<S>,
    Arc<HttpConfig>: FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self {
            hub: Hub::from_ref(state),
            config: Arc::<HttpConfig>::from_ref(state),
            query: parts.uri.query().map(str::to_owned),
            headers: parts.headers.clone(),
        })
    }
}

/// The documents of the subscriptions `wanted` keeps, across this instance's subscribers.
fn documents(hub: &Hub, wanted: impl Fn(Selection<'_>) -> bool) -> Vec<Value> {
    let wanted = &wanted;
    hub.subscribers()
        .iter()
        .flat_map(|info| {
            info.selections()
                .filter(move |selection| wanted(*selection))
                .map(move |selection| subscription_document(info, selection, true))
        })
        .collect()
}

/// A collection in the request's dialect.
fn collection(hub: &Hub, dialect: Dialect, id: &str, list: Vec<Value>) -> Response {
    match dialect {
        Dialect::Draft07 => json_ld(
            hub,
            json!({"id": id, "type": "Subscriptions", "subscriptions": list}),
        ),
        Dialect::Draft08 => draft08_json(
            hub,
            &json!({"id": id, "type": "subscriptions", "subscriptions": list}),
        ),
    }
}

/// One subscription, answered the way its own dialect answers it.
fn single(hub: &Hub, info: &SubscriberInfo, selection: Selection<'_>) -> Response {
    match selection {
        Selection::Topic(_) => json_ld(hub, subscription_document(info, selection, true)),
        Selection::Matcher(..) => {
            draft08_json(hub, &subscription_event_document(info, selection, true))
        }
    }
}

/// The subscription `selection` of the subscriber named `uri`, or `404`.
fn find(hub: &Hub, id: &str, uri: &str, selection: Selection<'_>) -> Result<Response, ApiError> {
    hub.subscribers()
        .iter()
        .find(|info| info.uri == uri && info.selections().any(|s| s == selection))
        .map(|info| single(hub, info, selection))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no active subscription {id} on this hub"),
            )
        })
}

/// draft-07: JSON-LD, with `@context` and `lastEventID` in the document.
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

/// draft-08: JSON as is; the cursor on the `Link` and as the `ETag`.
fn draft08_json(hub: &Hub, document: &Value) -> Response {
    let cursor = hub.last_event_id();
    let mut response = (
        [(header::CONTENT_TYPE, "application/json")],
        document.to_string(),
    )
        .into_response();
    let headers = response.headers_mut();
    let link = format!(
        "<{MERCURE_PATH}>; rel=\"mercure\"; last-event-id=\"{}\"; type=\"{RESERVED_EVENT_TYPE}\"; \
         content-type=\"application/json\"",
        link_quoted(&cursor)
    );
    // Ids hold no control character (publish refuses them), so both values are valid field
    // values; should one not be, the header is left out rather than the answer failed.
    if let Ok(value) = HeaderValue::from_bytes(link.as_bytes()) {
        headers.insert(header::LINK, value);
    }
    if let Ok(value) = HeaderValue::from_str(&format!("\"{}\"", entity_tag(&cursor))) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("must-revalidate"),
    );
    response
}

/// `value` for an RFC 8288 quoted-string: `"` and `\` escaped.
fn link_quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `value` as the content of an RFC 9110 entity-tag: every byte that is not `etagc` (and `%`,
/// the escape itself) percent-encoded, so that distinct ids give distinct tags.
fn entity_tag(value: &str) -> String {
    const NOT_ETAGC: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');
    utf8_percent_encode(value, NOT_ETAGC).to_string()
}

async fn all(request: Request) -> Result<Response, ApiError> {
    let dialect = request.authorize(SUBSCRIPTIONS_PATH).await?;
    let list = documents(&request.hub, |_| true);
    Ok(collection(&request.hub, dialect, SUBSCRIPTIONS_PATH, list))
}

async fn by_topic(request: Request, Path(topic): Path<String>) -> Result<Response, ApiError> {
    let id = format!("{SUBSCRIPTIONS_PATH}/{}", expand_variable(&topic));
    let dialect = request.authorize(&id).await?;
    let list = documents(&request.hub, |s| s == Selection::Topic(&topic));
    Ok(collection(&request.hub, dialect, &id, list))
}

/// `/{match_type}/{match}` (a matcher type's name first) or `/{topic}/{subscriber}`.
async fn two_segments(
    request: Request,
    Path((first, second)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    match MatcherType::from_name(&first) {
        Some(kind) => {
            let id = matcher_collection_path(kind, &second);
            let dialect = request.authorize(&id).await?;
            let list = documents(&request.hub, |s| s == Selection::Matcher(kind, &second));
            Ok(collection(&request.hub, dialect, &id, list))
        }
        None => {
            let selection = Selection::Topic(&first);
            let id = subscription_topic(selection, &second);
            request.authorize(&id).await?;
            find(&request.hub, &id, &second, selection)
        }
    }
}

async fn one_of_a_matcher(
    request: Request,
    Path((match_type, value, subscriber)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let kind = MatcherType::from_name(&match_type).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{match_type:?} is not a matcher type: expected `exact` or `urlpattern` \
             (/.well-known/mercure/subscriptions/{{match_type}}/{{match}}/{{subscriber}})"
        ))
    })?;
    let selection = Selection::Matcher(kind, &value);
    let id = subscription_topic(selection, &subscriber);
    request.authorize(&id).await?;
    find(&request.hub, &id, &subscriber, selection)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_quoted_and_tagged_injectively() {
        assert_eq!(link_quoted(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(entity_tag("urn:uuid:5e94"), "urn:uuid:5e94");
        assert_eq!(entity_tag("a b\"%é"), "a%20b%22%25%C3%A9");
    }
}
