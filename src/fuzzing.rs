//! The bodies of the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer), kept in the library so that
//! the fuzz targets and the regression test (`tests/it/fuzz_regressions.rs`, which replays every
//! file under `fuzz/seeds/` and `fuzz/regressions/`) run exactly the same code.
//!
//! Each target takes raw bytes and checks properties, not only the absence of panics: a broken
//! property is reported with `assert!`, which libFuzzer records as a crash. The structure of an
//! input (chunk sizes, several fields) is read with [`Input`], which splits on the byte `0xFF`:
//! that byte never occurs in UTF-8, so the fields of a structured input are exactly the strings
//! the fuzzer built, and libFuzzer's mutations of raw bytes need no extra crate.
//!
//! What stays with others: the fuzz targets themselves, their corpora, seeds, dictionaries and
//! limits (`fuzz/`, `scripts/fuzz`). Not part of the public API: it may change at any time.

mod http_server;

pub use http_server::http_server;

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};

use crate::auth::{extract_token, AuthConfig, Claims, JwtAlgorithm, JwtVerifier};
use crate::event::{Event, EventLimits};
use crate::http::error::ApiError;
use crate::topic::template::Value;
use crate::topic::{SelectorCache, TopicSelector, UriTemplate};
use crate::wire::{encode, encode_comment, ParsedEvent, Parser, HEARTBEAT};

/// The body of one fuzz target: it panics when a property does not hold.
pub type Target = fn(&[u8]);

/// Every target, by the name of its fuzz target (`fuzz/fuzz_targets/<name>.rs`) and of its
/// directories under `fuzz/seeds/` and `fuzz/regressions/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("sse_parser", sse_parser),
    ("sse_roundtrip", sse_roundtrip),
    ("publish_form", publish_form),
    ("topic_template", topic_template),
    ("jwt", jwt),
    ("http_server", http_server),
];

/// The byte that separates the fields of a structured input; it is never part of UTF-8.
pub const SEPARATOR: u8 = 0xFF;

/// Reads a fuzz input as a sequence of bytes and `0xFF`-separated fields. Reading past the end
/// gives zeros and empty fields, so every input is valid.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    /// Wraps one fuzz input.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next byte, or 0 at the end.
    pub fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&byte, rest)) => {
                self.rest = rest;
                byte
            }
            None => 0,
        }
    }

    /// The next `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        taken
    }

    /// The bytes up to the next separator (which is consumed), or all that is left.
    pub fn field(&mut self) -> &'a [u8] {
        match memchr::memchr(SEPARATOR, self.rest) {
            Some(at) => {
                let field = &self.rest[..at];
                self.rest = &self.rest[at + 1..];
                field
            }
            None => std::mem::take(&mut self.rest),
        }
    }

    /// The next field as a string (it is valid UTF-8 unless the fuzzer put invalid bytes in it,
    /// which become U+FFFD).
    pub fn string(&mut self) -> String {
        String::from_utf8_lossy(self.field()).into_owned()
    }

    /// Everything that is left.
    pub fn remaining(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }
}

// ---------------------------------------------------------------------------
// SSE parser
// ---------------------------------------------------------------------------

/// `sse_parser`: the WHATWG parser on arbitrary bytes.
///
/// Input: a flags byte (bit 0: a line limit of `flags >> 1` bytes, 0 to 127, instead of the
/// default), a count `n` (mod 16) of chunk sizes, `n` chunk-size bytes, then the stream.
///
/// Properties: the stream fed whole, in the given chunks and one byte at a time gives the same
/// events, the same `LineTooLong` outcome and the same parser state; no event has a line break in
/// its id or type, a CR in its data, or NUL in its id.
pub fn sse_parser(bytes: &[u8]) {
    let mut input = Input::new(bytes);
    let flags = input.byte();
    let max_line_bytes = if flags & 1 == 1 {
        usize::from(flags >> 1)
    } else {
        16 * 1024 * 1024
    };
    let count = usize::from(input.byte() % 16);
    let sizes: Vec<usize> = input.bytes(count).iter().map(|&b| usize::from(b)).collect();
    let stream = input.remaining();

    let mut whole = Parser::with_max_line_bytes(max_line_bytes);
    let whole_events = whole.push(stream);

    let mut chunked = Parser::with_max_line_bytes(max_line_bytes);
    let chunked_events = feed(&mut chunked, chunks(stream, &sizes));

    let mut bytewise = Parser::with_max_line_bytes(max_line_bytes);
    let bytewise_events = feed(&mut bytewise, stream.chunks(1));

    match (&whole_events, &chunked_events, &bytewise_events) {
        (Ok(whole_events), Ok(chunked_events), Ok(bytewise_events)) => {
            assert_eq!(whole_events, chunked_events, "whole vs chunked");
            assert_eq!(whole_events, bytewise_events, "whole vs byte by byte");
            for parser in [&chunked, &bytewise] {
                assert_eq!(whole.last_event_id(), parser.last_event_id());
                assert_eq!(whole.reconnection_time_ms(), parser.reconnection_time_ms());
                assert_eq!(whole.comments_seen(), parser.comments_seen());
            }
            for event in whole_events {
                check_parsed_event(event);
            }
        }
        (Err(_), Err(_), Err(_)) => {
            // Once failed, a parser keeps failing.
            assert!(whole.push(b"data: x\n\n").is_err());
        }
        _ => panic!(
            "the line limit was hit for some splits only: whole {:?}, chunked {:?}, bytewise {:?}",
            whole_events.is_ok(),
            chunked_events.is_ok(),
            bytewise_events.is_ok()
        ),
    }
}

/// What any dispatched event satisfies (WHATWG HTML §9.2.6).
fn check_parsed_event(event: &ParsedEvent) {
    assert!(!event.id.contains(['\r', '\n', '\0']), "id {:?}", event.id);
    assert!(!event.event_type.is_empty());
    assert!(!event.event_type.contains(['\r', '\n']));
    assert!(!event.data.contains('\r'), "data {:?}", event.data);
}

/// Splits `stream` into chunks of the given sizes, in a cycle (a size of 0 is an empty chunk).
fn chunks<'a>(stream: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    if sizes.iter().all(|&size| size == 0) {
        let mut out = vec![&stream[..0]; sizes.len()];
        out.push(stream);
        return out;
    }
    let mut out = Vec::new();
    let mut rest = stream;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        out.push(chunk);
        rest = tail;
    }
    out
}

/// Feeds every chunk, stopping at the first error.
fn feed<'a>(
    parser: &mut Parser,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<ParsedEvent>, crate::wire::parse::ParseError> {
    let mut events = Vec::new();
    for chunk in chunks {
        events.extend(parser.push(chunk)?);
    }
    Ok(events)
}

// ---------------------------------------------------------------------------
// Encoder → parser round trip
// ---------------------------------------------------------------------------

/// `sse_roundtrip`: up to 16 events (validated or not) and comments, encoded and concatenated,
/// parse back to exactly those events, whatever the chunking.
///
/// Input: a chunk size byte, then per item a kind byte and fields. Kind bit 0: a comment (one
/// field, its text) instead of an event; bit 1: a heartbeat after the item; bit 2: the event has
/// a type; bit 3: the event has a retry. An event's fields are its id, type, data and (8 bytes,
/// little-endian) retry.
///
/// Properties: comments and heartbeats never produce events; every event comes back once, with
/// its data (line breaks turned into LF), its retry, and its id and type (for an event that
/// [`Event::validate`] would refuse, a CR or LF in the id or type arrives as a space and an id
/// holding NUL is ignored, as WHATWG says: no field is ever injected). A valid event's frame on
/// its own parses to that event exactly.
pub fn sse_roundtrip(bytes: &[u8]) {
    let mut input = Input::new(bytes);
    let chunk_size = usize::from(input.byte()).max(1);
    let mut stream = Vec::new();
    let mut expected = Vec::new();
    let mut last_id = String::new();
    while !input.is_empty() && expected.len() < 16 {
        let kind = input.byte();
        if kind & 1 == 1 {
            stream.extend_from_slice(&encode_comment(&input.string()));
        } else {
            let event = Event {
                id: input.string(),
                topics: vec!["t".into()],
                event_type: Some(input.string()).filter(|_| kind & 4 == 4),
                data: input.string(),
                retry: (kind & 8 == 8).then(|| {
                    let mut le = [0u8; 8];
                    let field = input.field();
                    le[..field.len().min(8)].copy_from_slice(&field[..field.len().min(8)]);
                    u64::from_le_bytes(le)
                }),
                private: false,
            };
            let frame = encode(&event);
            if event.validate(&EventLimits::default()).is_ok() {
                let alone = Parser::new().push(&frame).expect("a frame parses");
                assert_eq!(alone, vec![expected_event(&event, &mut String::new())]);
            }
            stream.extend_from_slice(&frame);
            expected.push(expected_event(&event, &mut last_id));
        }
        if kind & 2 == 2 {
            stream.extend_from_slice(&HEARTBEAT);
        }
    }
    let mut parser = Parser::new();
    let parsed = feed(&mut parser, stream.chunks(chunk_size)).expect("lines are short");
    assert_eq!(parsed, expected);
    assert_eq!(parser.last_event_id(), last_id);
}

/// The event a client sees for `event`, given the last event id before it.
fn expected_event(event: &Event, last_id: &mut String) -> ParsedEvent {
    let one_line = |text: &str| text.replace(['\r', '\n'], " ");
    if !event.id.contains('\0') {
        *last_id = one_line(&event.id);
    }
    let event_type = event
        .event_type
        .as_deref()
        .map(one_line)
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "message".into());
    ParsedEvent {
        id: last_id.clone(),
        event_type,
        data: normalize_line_breaks(&event.data),
        retry: event.retry,
    }
}

/// CRLF and lone CR become LF, as a client reads them (WHATWG HTML §9.2.5).
fn normalize_line_breaks(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

// ---------------------------------------------------------------------------
// Publish form
// ---------------------------------------------------------------------------

/// `publish_form`: an arbitrary request body through the publish form parser and the event
/// validator (with the default limits and with small ones).
///
/// Properties: a body is either refused with a `400` and a message, or gives an event that either
/// fails validation with a message, or encodes to one frame that parses back to the same id,
/// type, retry and data (line breaks as LF).
pub fn publish_form(body: &[u8]) {
    let event = match crate::http::publish::parse_form(body) {
        Ok(event) => event,
        Err(error) => {
            assert_eq!(error.status, http::StatusCode::BAD_REQUEST);
            assert!(!error.message.is_empty());
            return;
        }
    };
    let small = EventLimits {
        max_topics: 2,
        max_field_bytes: 16,
    };
    for limits in [EventLimits::default(), small] {
        match event.validate(&limits) {
            Ok(()) => {
                assert!(!event.topics.is_empty() && event.topics.len() <= limits.max_topics);
                let parsed = Parser::new().push(&encode(&event)).expect("a frame parses");
                assert_eq!(parsed, vec![expected_event(&event, &mut String::new())]);
                assert_eq!(parsed[0].id, event.id);
            }
            Err(error) => {
                let api = ApiError::from(error);
                assert_eq!(api.status, http::StatusCode::BAD_REQUEST);
                assert!(!api.message.is_empty());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Topic selectors and URI templates
// ---------------------------------------------------------------------------

/// `topic_template`: a selector or URI template, a topic to match, and values for the template's
/// variables.
///
/// Input: fields: the template, the topic, then per variable (in the order they appear) a kind
/// byte and its value: 0 undefined, 1 a string, 2 a list and 3 an associative array (the last
/// two as `0xFE`-separated items).
///
/// Properties: nothing panics (and libFuzzer's `-timeout` bounds the time, so hostile templates
/// cannot match catastrophically); a selector matches its own text; the cache gives the same
/// answer as a fresh compile; a valid template with expressions becomes a template selector, and
/// anything else an exact one; every expansion of a valid template matches it, including the one
/// where every variable is undefined; a template without expressions matches its own text.
pub fn topic_template(bytes: &[u8]) {
    let mut input = Input::new(bytes);
    let text = input.string();
    let topic = input.string();

    let selector = TopicSelector::parse_mercure07(&text);
    assert_eq!(selector.as_str(), text);
    assert!(selector.matches(&text), "a selector matches its own text");
    let matched = selector.matches(&topic);
    let cache = SelectorCache::new(2);
    assert_eq!(cache.get(&text).matches(&topic), matched);
    assert_eq!(cache.get(&text).matches(&topic), matched, "cached");
    assert!(crate::topic::selector::any_matches(
        std::slice::from_ref(&selector),
        std::slice::from_ref(&text)
    ));

    let template = match UriTemplate::parse(&text) {
        Ok(template) => template,
        Err(error) => {
            assert!(!error.to_string().is_empty());
            if text != "*" {
                assert_eq!(selector.as_exact(), Some(text.as_str()));
            }
            return;
        }
    };
    let _ = template.matches(&topic);
    match &selector {
        TopicSelector::Template(_) => assert!(template.has_expressions()),
        TopicSelector::Any => assert_eq!(text, "*"),
        TopicSelector::Exact(_) => assert!(!template.has_expressions()),
        TopicSelector::UrlPattern(_) => unreachable!("draft-07 text never reads as a URL pattern"),
    }
    if !template.has_expressions() {
        assert!(template.matches(&text), "a literal template matches itself");
    }
    let undefined = template.expand(&HashMap::new());
    assert!(template.matches(&undefined), "expansion {undefined:?}");

    let mut vars = HashMap::new();
    for name in variable_names(&text) {
        let kind = input.byte() % 4;
        let field = input.field();
        let items = || {
            field
                .split(|&b| b == 0xFE)
                .map(|item| String::from_utf8_lossy(item).into_owned())
        };
        let value = match kind {
            0 => continue,
            1 => Value::String(String::from_utf8_lossy(field).into_owned()),
            2 => Value::List(items().collect()),
            _ => {
                let items: Vec<String> = items().collect();
                Value::Map(
                    items
                        .chunks(2)
                        .map(|pair| (pair[0].clone(), pair.get(1).cloned().unwrap_or_default()))
                        .collect(),
                )
            }
        };
        vars.entry(name).or_insert(value);
    }
    let expanded = template.expand(&vars);
    assert!(
        template.matches(&expanded),
        "expansion {expanded:?} with {vars:?}"
    );
}

/// The variable names of a template that [`UriTemplate::parse`] accepted, in order (RFC 6570
/// §2.2–2.4: an optional operator, then `name[:n|*]` joined by commas).
fn variable_names(template: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let body = &rest[open + 1..open + close];
        let list = body
            .strip_prefix(['+', '#', '.', '/', ';', '?', '&'])
            .unwrap_or(body);
        for spec in list.split(',') {
            let name = spec.split([':', '*']).next().unwrap_or_default();
            names.push(name.to_owned());
        }
        rest = &rest[open + close + 1..];
    }
    names
}

// ---------------------------------------------------------------------------
// JWT
// ---------------------------------------------------------------------------

/// The HS256 secret of the `jwt` target.
const JWT_SECRET: &str = "fuzzing-secret-fuzzing-secret-32";

/// `jwt`: tokens through verification and the authorization built on it.
///
/// Input: a mode byte. Mode bit 0 clear: the rest is a raw token. Set: fields give the header
/// (bits 1–3 pick a canned header with `alg` `HS256`, `none`, `HS384`, `HS512`, `RS256`, `ES256`
/// or `hs256`, or 7: the raw field is the header JSON), the claims JSON and (bits 4–5) a signature
/// made with the right secret by HS256, HS384 or HS512, or a raw field; the token is assembled
/// from them. Then fields for `extract_token`: an `Authorization` header, a `Cookie` header, an
/// `authorization` query parameter; and topics to check against the grants.
///
/// Properties: nothing panics; a token verifies only when its header names `HS256` and its
/// signature is the HS256 one made with the configured secret (so `alg: none` and every other
/// algorithm are refused, even with a correct HMAC); a verified `exp` has not passed; the claims
/// returned are those in the token; the grants built from verified claims answer for any topic.
pub fn jwt(bytes: &[u8]) {
    jwt_verified(bytes);
}

/// [`jwt`], telling whether the token verified (for the unit tests of the target itself).
fn jwt_verified(bytes: &[u8]) -> bool {
    let mut input = Input::new(bytes);
    let mode = input.byte();
    let verifier = JwtVerifier::new(JwtAlgorithm::HS256, JWT_SECRET).expect("a valid secret");

    let (token, signed_hs256) = if mode & 1 == 0 {
        (
            String::from_utf8_lossy(input.remaining()).into_owned(),
            None,
        )
    } else {
        let header = match (mode >> 1) & 7 {
            0 => br#"{"alg":"HS256","typ":"JWT"}"#.to_vec(),
            1 => br#"{"alg":"none","typ":"JWT"}"#.to_vec(),
            2 => br#"{"alg":"HS384"}"#.to_vec(),
            3 => br#"{"alg":"HS512"}"#.to_vec(),
            4 => br#"{"alg":"RS256"}"#.to_vec(),
            5 => br#"{"alg":"ES256"}"#.to_vec(),
            6 => br#"{"alg":"hs256"}"#.to_vec(),
            _ => input.field().to_vec(),
        };
        let claims = input.field();
        let message = format!("{}.{}", base64url(&header), base64url(claims));
        let algorithm = match (mode >> 4) & 3 {
            0 => Some(jsonwebtoken::Algorithm::HS256),
            1 => Some(jsonwebtoken::Algorithm::HS384),
            2 => Some(jsonwebtoken::Algorithm::HS512),
            _ => None,
        };
        let signature = match algorithm {
            Some(algorithm) => {
                let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes())
                    .expect("a valid secret");
                jsonwebtoken::crypto::sign(message.as_bytes(), &key, algorithm)
                    .expect("HMAC signing works")
            }
            None => input.string(),
        };
        let hs256 = algorithm == Some(jsonwebtoken::Algorithm::HS256);
        (format!("{message}.{signature}"), Some((header, hs256)))
    };

    let verified = verifier.verify(&token);
    match &verified {
        Ok(claims) => {
            if let Some((header, hs256)) = &signed_hs256 {
                let header: serde_json::Value =
                    serde_json::from_slice(header).expect("a verified header is JSON");
                assert_eq!(header["alg"], "HS256", "only HS256 is accepted");
                assert!(*hs256, "only the HS256 signature is accepted");
            }
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if let Some(exp) = claims.exp {
                // jsonwebtoken rounds a fractional exp, `Claims` rounds it down: one second apart.
                assert!(
                    exp.saturating_add(1) >= now,
                    "exp {exp} has passed (now {now})"
                );
            }
            let decoded: Claims = jsonwebtoken::dangerous::insecure_decode_claims(&token)
                .expect("verified claims decode");
            assert_eq!(&decoded, claims);
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }

    // The authorization path: the header, query and cookie, then the grants.
    let mut headers = HeaderMap::new();
    for name in [http::header::AUTHORIZATION, http::header::COOKIE] {
        if let Ok(value) = HeaderValue::from_bytes(input.field()) {
            headers.append(name, value);
        }
    }
    let query = input.string();
    let query = Some(query.as_str()).filter(|_| mode & 0x40 == 0x40);
    match extract_token(&headers, query) {
        Ok(Some((found, _source))) => assert!(!found.is_empty()),
        Ok(None) => assert!(query.is_none_or(str::is_empty)),
        Err(error) => assert!(!error.to_string().is_empty()),
    }
    let auth = AuthConfig {
        publisher: Some(verifier.clone()),
        subscriber: Some(verifier),
        anonymous: mode & 0x80 == 0x80,
    };
    let cache = SelectorCache::new(4);
    let topics: Vec<String> = std::iter::from_fn(|| (!input.is_empty()).then(|| input.string()))
        .take(8)
        .collect();
    match auth.authorize_publisher(Some(&token), &cache) {
        Ok(grant) => {
            assert!(verified.is_ok());
            let _ = grant.check_topics(&topics);
        }
        Err(error) => assert!(!ApiError::from(error).message.is_empty()),
    }
    match auth.authorize_subscriber(Some(&token), &cache) {
        Ok(grant) => {
            assert!(verified.is_ok());
            let _ = grant.allows_private(&topics);
            let _ = grant.time_left();
        }
        Err(error) => assert!(verified.is_err(), "{error}"),
    }
    verified.is_ok()
}

/// base64url without padding (RFC 7515 §2), as JWS compact serialization writes its parts.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=group.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_rfc_4648_vectors() {
        // RFC 4648 §10, without padding, in the URL-safe alphabet.
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64url(plain.as_bytes()), encoded);
        }
        assert_eq!(base64url(&[0xFB, 0xFF]), "-_8");
    }

    #[test]
    fn variable_names_follow_the_template() {
        assert_eq!(variable_names("/a/{x}{?y,z:3}{#w*}"), ["x", "y", "z", "w"]);
    }

    #[test]
    fn input_reads_bytes_and_fields() {
        let mut input = Input::new(b"\x01ab\xFFcd");
        assert_eq!(input.byte(), 1);
        assert_eq!(input.field(), b"ab");
        assert_eq!(input.string(), "cd");
        assert!(input.is_empty());
        assert_eq!(input.byte(), 0);
        assert_eq!(input.field(), b"");
    }

    #[test]
    fn the_jwt_target_reaches_verified_tokens_and_refuses_other_algorithms() {
        let claims = br#"{"mercure":{"publish":["*"]}}"#;
        // Mode bit 0: built token; bits 1-3: canned header; bits 4-5: signature algorithm.
        let built = |header: u8, signature: u8| {
            let mut input = vec![1 | (header << 1) | (signature << 4)];
            input.extend_from_slice(claims);
            input
        };
        assert!(jwt_verified(&built(0, 0)), "HS256 header, HS256 signature");
        assert!(!jwt_verified(&built(1, 0)), "alg none");
        assert!(!jwt_verified(&built(2, 1)), "HS384 header and signature");
        assert!(!jwt_verified(&built(6, 0)), "alg hs256 in lower case");
        assert!(
            !jwt_verified(&built(0, 2)),
            "HS512 signature under an HS256 header"
        );
        // The same token as a raw string.
        let message = format!(
            "{}.{}",
            base64url(br#"{"alg":"HS256","typ":"JWT"}"#),
            base64url(claims)
        );
        let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()).expect("key");
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
                .expect("sign");
        let raw = format!("\0{message}.{signature}");
        assert!(jwt_verified(raw.as_bytes()));
    }
}
