//! Which Mercure dialect a request speaks, told from what it carries, and the token it
//! presents in that dialect.
//!
//! Owns the markers of each dialect (below), the refusals of a request that mixes them or
//! speaks one the hub has turned off ([`HttpConfig::dialects`](super::HttpConfig)), reading
//! the query with strict UTF-8 for draft-08's values, and finding the token where the dialect
//! puts it. Verifying the token is [`crate::auth`]'s job; `authorize_subscriber` and
//! `authorize_publisher` are where the dialect reaches it.
//!
//! | marker | draft-07 | draft-08 |
//! | --- | --- | --- |
//! | query parameter | `topic`, `lastEventID`, `authorization` (a token in the URL) | any `match*` name, `last_event_id` |
//! | token | a JWT whose `typ` is not `at+jwt` | `typ: at+jwt` (RFC 9068) |
//! | cookie (ambient: decides only when nothing else does) | `mercureAuthorization` | `__Secure-mercure_access_token` |
//!
//! Cookies are ambient (the browser sends every cookie it has for the hub), so a cookie of the
//! other dialect beside a request's markers is ignored, as draft-08 §Presenting the Access
//! Token ignores a cookie beside an `Authorization` header; only the token actually used
//! counts. Detection reads the query pairs the handler decodes anyway and one header; the
//! token's JOSE header is decoded once per request, never per event.

use std::borrow::Cow;

use http::{header, HeaderMap};

use super::error::ApiError;
use super::HttpConfig;
use crate::auth::{self, AuthError, PublisherGrant, SubscriberGrant, TokenSource};
use crate::dialect::{Dialect, Dialects};
use crate::topic::SelectorCache;

/// The cookie draft-08 §Cookie recommends for browser tokens.
pub const DRAFT08_COOKIE: &str = "__Secure-mercure_access_token";

/// The response header of a draft-08 stream that resumed (draft-08 §Reconciliation).
pub const MERCURE_LAST_EVENT_ID: &str = "mercure-last-event-id";

/// The first sign of each dialect a request showed, named for the error message.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Markers {
    draft07: Option<&'static str>,
    draft08: Option<&'static str>,
}

impl Markers {
    /// Notes that the request shows `what` of `dialect` (the first one of each is kept).
    pub(crate) fn note(&mut self, dialect: Dialect, what: &'static str) {
        let slot = match dialect {
            Dialect::Draft07 => &mut self.draft07,
            Dialect::Draft08 => &mut self.draft08,
        };
        slot.get_or_insert(what);
    }

    /// Notes a query parameter name, if it is a marker.
    pub(crate) fn note_param(&mut self, name: &str) {
        match name {
            "topic" => self.note(Dialect::Draft07, "the `topic` parameter"),
            "lastEventID" => self.note(Dialect::Draft07, "the `lastEventID` parameter"),
            "authorization" => self.note(
                Dialect::Draft07,
                "a token in the URL (`authorization` parameter)",
            ),
            "last_event_id" => self.note(Dialect::Draft08, "the `last_event_id` parameter"),
            _ if in_match_namespace(name) => self.note(Dialect::Draft08, "a `match*` parameter"),
            _ => {}
        }
    }

    /// The dialect the markers show, or `None` when they show none.
    ///
    /// # Errors
    /// A `400` naming one marker of each when they show both.
    fn decided(&self) -> Result<Option<Dialect>, ApiError> {
        match (self.draft07, self.draft08) {
            (Some(old), Some(new)) => Err(ApiError::bad_request(format!(
                "this request mixes two Mercure dialects: {old} is draft-07 \
                 (draft-dunglas-mercure-07), {new} is draft-08 (draft-dunglas-mercure-08); \
                 use one of them throughout"
            ))),
            (Some(_), None) => Ok(Some(Dialect::Draft07)),
            (None, Some(_)) => Ok(Some(Dialect::Draft08)),
            (None, None) => Ok(None),
        }
    }

    fn first(&self, dialect: Dialect) -> Option<&'static str> {
        match dialect {
            Dialect::Draft07 => self.draft07,
            Dialect::Draft08 => self.draft08,
        }
    }
}

/// Whether `name` is in draft-08's reserved `match` namespace: `match`, or a name beginning
/// with `match` under ASCII case-insensitive comparison (draft-08 §Subscription).
pub(crate) fn in_match_namespace(name: &str) -> bool {
    name.as_bytes()
        .get(..5)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(b"match"))
}

/// A request's dialect and the token it presents in that dialect.
#[derive(Debug)]
pub(crate) struct Resolved<'a> {
    /// The dialect the request speaks (one the hub accepts).
    pub(crate) dialect: Dialect,
    /// The token, and where it was found (a cookie publish needs a CSRF check).
    pub(crate) token: Option<(Cow<'a, str>, TokenSource)>,
}

/// Decides the dialect of a request from its query `markers` and its headers, and finds its
/// token: the `Authorization` header in both dialects (any cookie is then ignored); else, for
/// draft-07, the `authorization` query parameter, then `mercureAuthorization`; for draft-08,
/// `__Secure-mercure_access_token`.
///
/// # Errors
/// `400` for a request that mixes the dialects or speaks one that is turned off; `401` for a
/// malformed `Authorization` header.
pub(crate) fn resolve<'a>(
    enabled: Dialects,
    mut markers: Markers,
    headers: &'a HeaderMap,
    query_token: Option<&'a str>,
) -> Result<Resolved<'a>, ApiError> {
    let header_token = if headers.contains_key(header::AUTHORIZATION) {
        // With a header present, `extract_token` returns the header's token (or refuses it).
        auth::extract_token(headers, None)?
    } else {
        None
    };
    if let Some((token, _)) = &header_token {
        note_token(&mut markers, token);
    }
    let dialect = match markers.decided()? {
        Some(dialect) => dialect,
        None if header_token.is_some() => enabled.fallback(),
        None => match (
            cookie(headers, auth::COOKIE_NAME),
            cookie(headers, DRAFT08_COOKIE),
        ) {
            (Some(_), None) => {
                markers.note(Dialect::Draft07, "the `mercureAuthorization` cookie");
                Dialect::Draft07
            }
            (None, Some(_)) => {
                markers.note(
                    Dialect::Draft08,
                    "the `__Secure-mercure_access_token` cookie",
                );
                Dialect::Draft08
            }
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "this request carries both the `mercureAuthorization` cookie (draft-07) \
                     and the `__Secure-mercure_access_token` cookie (draft-08) and nothing else \
                     that tells its dialect: send the token in the Authorization header, or \
                     keep one cookie",
                ))
            }
            (None, None) => enabled.fallback(),
        },
    };
    let token = match header_token {
        Some(found) => Some(found),
        None => {
            let found = match dialect {
                Dialect::Draft07 => match query_token.filter(|t| !t.is_empty()) {
                    Some(token) => Some((Cow::Borrowed(token), TokenSource::Query)),
                    None => cookie(headers, auth::COOKIE_NAME)
                        .map(|token| (Cow::Borrowed(token), TokenSource::Cookie)),
                },
                Dialect::Draft08 => cookie(headers, DRAFT08_COOKIE)
                    .map(|token| (Cow::Borrowed(token), TokenSource::Cookie)),
            };
            if let Some((token, _)) = &found {
                note_token(&mut markers, token);
                markers.decided()?;
            }
            found
        }
    };
    if !enabled.allows(dialect) {
        let shown = markers
            .first(dialect)
            .map(|marker| format!(" (this request uses {marker})"))
            .unwrap_or_default();
        return Err(ApiError::bad_request(format!(
            "{dialect} requests are turned off on this hub{shown}; it speaks {enabled} only \
             (the --dialects setting)"
        )));
    }
    Ok(Resolved { dialect, token })
}

/// Notes the dialect a token's JOSE header shows: `typ` `at+jwt` (RFC 9068 §2.1, also
/// `application/at+jwt`) is draft-08, any other signed JWT draft-07. A token whose header does
/// not decode shows nothing; verification refuses it (401).
fn note_token(markers: &mut Markers, token: &str) {
    let Ok(jose) = jsonwebtoken::decode_header(token) else {
        return;
    };
    let at_jwt = jose.typ.as_deref().is_some_and(|typ| {
        typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt")
    });
    if at_jwt {
        markers.note(Dialect::Draft08, "an `at+jwt` token");
    } else {
        markers.note(Dialect::Draft07, "a token whose `typ` is not `at+jwt`");
    }
}

/// The value of cookie `name`, if the request has it (and it is not empty).
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, value)| *key == name && !value.is_empty())
        .map(|(_, value)| value.trim_matches('"'))
}

/// Verifies a subscriber's token for `dialect`. Today both dialects read the `mercure` claim;
/// draft-08's `authorization_details` grants plug in here.
///
/// # Errors
/// As [`auth::AuthConfig::authorize_subscriber`].
pub(crate) fn authorize_subscriber(
    config: &HttpConfig,
    _dialect: Dialect,
    token: Option<&str>,
    cache: &SelectorCache,
) -> Result<SubscriberGrant, AuthError> {
    config.auth.authorize_subscriber(token, cache)
}

/// Verifies a publisher's token for `dialect` (see [`authorize_subscriber`]).
///
/// # Errors
/// As [`auth::AuthConfig::authorize_publisher`].
pub(crate) fn authorize_publisher(
    config: &HttpConfig,
    _dialect: Dialect,
    token: Option<&str>,
    cache: &SelectorCache,
) -> Result<PublisherGrant, AuthError> {
    config.auth.authorize_publisher(token, cache)
}

/// The name/value pairs of an `application/x-www-form-urlencoded` string (WHATWG URL
/// §application/x-www-form-urlencoded parsing: split on `&`, the first `=`, `+` is a space,
/// percent-decoding), as bytes: a caller decodes UTF-8 strictly (draft-08 values) or lossily.
pub(crate) fn form_pairs(input: &str) -> impl Iterator<Item = (Cow<'_, [u8]>, Cow<'_, [u8]>)> {
    input
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_component(name), decode_component(value))
        })
}

fn decode_component(raw: &str) -> Cow<'_, [u8]> {
    if !raw.contains(['+', '%']) {
        return Cow::Borrowed(raw.as_bytes());
    }
    let spaced = raw.replace('+', " ");
    Cow::Owned(percent_encoding::percent_decode(spaced.as_bytes()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("valid header"));
        }
        map
    }

    fn markers(names: &[&str]) -> Markers {
        let mut markers = Markers::default();
        for name in names {
            markers.note_param(name);
        }
        markers
    }

    /// A JWS compact token with this JOSE header (the signature is not checked here).
    fn token(typ: &str) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let jose = b64.encode(format!(r#"{{"alg":"HS256","typ":"{typ}"}}"#));
        format!("{jose}.{}.sig", b64.encode("{}"))
    }

    fn dialect_of(names: &[&str], h: &HeaderMap) -> Result<Dialect, u16> {
        resolve(Dialects::BOTH, markers(names), h, None)
            .map(|r| r.dialect)
            .map_err(|e| e.status.as_u16())
    }

    #[test]
    fn query_parameters_tell_the_dialect() {
        let none = HeaderMap::new();
        assert_eq!(dialect_of(&["topic"], &none), Ok(Dialect::Draft07));
        assert_eq!(dialect_of(&["lastEventID"], &none), Ok(Dialect::Draft07));
        assert_eq!(dialect_of(&["match"], &none), Ok(Dialect::Draft08));
        assert_eq!(
            dialect_of(&["match_urlpattern"], &none),
            Ok(Dialect::Draft08)
        );
        assert_eq!(dialect_of(&["MATCHX"], &none), Ok(Dialect::Draft08));
        assert_eq!(dialect_of(&["last_event_id"], &none), Ok(Dialect::Draft08));
        assert_eq!(dialect_of(&[], &none), Ok(Dialect::Draft07));
        assert_eq!(dialect_of(&["topic", "match"], &none), Err(400));
        assert_eq!(dialect_of(&["match", "lastEventID"], &none), Err(400));
    }

    #[test]
    fn the_token_type_tells_the_dialect_and_can_mix() {
        let at = headers(&[("authorization", &format!("Bearer {}", token("at+jwt")))]);
        let plain = headers(&[("authorization", &format!("Bearer {}", token("JWT")))]);
        assert_eq!(dialect_of(&[], &at), Ok(Dialect::Draft08));
        assert_eq!(dialect_of(&[], &plain), Ok(Dialect::Draft07));
        assert_eq!(dialect_of(&["topic"], &at), Err(400));
        assert_eq!(dialect_of(&["match"], &plain), Err(400));
        let cookie_at = headers(&[(
            "cookie",
            &format!("mercureAuthorization={}", token("at+jwt")),
        )]);
        assert_eq!(dialect_of(&["topic"], &cookie_at), Err(400));
    }

    #[test]
    fn cookies_are_ambient() {
        let both = headers(&[(
            "cookie",
            &format!(
                "mercureAuthorization={}; __Secure-mercure_access_token={}",
                token("JWT"),
                token("at+jwt")
            ),
        )]);
        let resolved = resolve(Dialects::BOTH, markers(&["match"]), &both, None).expect("ok");
        assert_eq!(resolved.dialect, Dialect::Draft08);
        assert_eq!(
            resolved.token.map(|(t, _)| t.into_owned()),
            Some(token("at+jwt"))
        );
        let resolved = resolve(Dialects::BOTH, markers(&["topic"]), &both, None).expect("ok");
        assert_eq!(
            resolved.token.map(|(t, _)| t.into_owned()),
            Some(token("JWT"))
        );
        assert_eq!(dialect_of(&[], &both), Err(400), "nothing else tells");
        let new = headers(&[("cookie", &format!("{DRAFT08_COOKIE}={}", token("at+jwt")))]);
        assert_eq!(dialect_of(&[], &new), Ok(Dialect::Draft08));
    }

    #[test]
    fn a_turned_off_dialect_is_refused() {
        let none = HeaderMap::new();
        let only07 = Dialects::only(Dialect::Draft07);
        let error = resolve(only07, markers(&["match"]), &none, None).expect_err("off");
        assert_eq!(error.status.as_u16(), 400);
        assert!(
            error.message.contains("draft-08 requests are turned off"),
            "{}",
            error.message
        );
        let only08 = Dialects::only(Dialect::Draft08);
        assert!(resolve(only08, markers(&["topic"]), &none, None).is_err());
        // Nothing shown: the one dialect that is on.
        let resolved = resolve(only08, markers(&[]), &none, None).expect("ok");
        assert_eq!(resolved.dialect, Dialect::Draft08);
    }

    #[test]
    fn form_pairs_decode_like_urlsearchparams() {
        let pairs: Vec<_> = form_pairs("a=1&b&c=x+y%2Bz&&d=%FF")
            .map(|(n, v)| (n.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(
            pairs,
            [
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"".to_vec()),
                (b"c".to_vec(), b"x y+z".to_vec()),
                (b"d".to_vec(), vec![0xFF]),
            ]
        );
    }
}
