//! draft-08 `urlpattern` matchers (draft-dunglas-mercure-08 §URL Pattern): WHATWG URL Pattern,
//! through the `urlpattern` crate (denoland, the implementation Deno ships).
//!
//! Owns compiling one pattern (with its limits) and matching a topic against it. Caching
//! compiled patterns is [`super::SelectorCache`]'s job; choosing the matcher type from a
//! query parameter is the HTTP layer's.
//!
//! - Linear time: the crate compiles each component to a `regex` (finite automata, no
//!   backtracking), and this module builds those regexes itself ([`BoundedRegex`]) with a size
//!   limit, so a pattern whose automaton would be large (`:id(\d{5000})`) is refused at compile
//!   time instead of costing memory and time on every event. Patterns are also capped in length
//!   ([`MAX_PATTERN_BYTES`]).
//! - `ignoreCase` is never enabled (the spec forbids it); hosts stay case-insensitive because
//!   URL parsing lowercases them.
//! - Relative patterns and relative topics resolve against the hub's URL ([`HUB_URL`]); a topic
//!   that does not parse as a URL reference matches no pattern.

use std::sync::LazyLock;

use thiserror::Error;
use url::Url;
use urlpattern::{RegexSyntax, UrlPattern, UrlPatternInit, UrlPatternOptions};

/// The longest `match_urlpattern` value, in bytes.
pub const MAX_PATTERN_BYTES: usize = 1024;

/// The largest compiled regex of one pattern component (bytes of the `regex` crate's program).
/// A path of a dozen named groups stays far below it; repetition counts in custom groups do not.
pub const MAX_COMPILED_BYTES: usize = 256 * 1024;

/// The base that relative patterns and relative topics resolve against (draft-08 §URL Pattern:
/// "the hub's URL"). Only the scheme, host and path of the base matter to a relative topic; a
/// relative pattern such as `/.well-known/mercure/subscriptions/:topic/:subscriber` and the
/// relative topics the hub generates resolve against the same base, so they match whatever
/// origin the hub is served at.
// A later change can take this from the hub's resource identifier (the `aud` setting).
pub const HUB_URL: &str = "https://localhost/.well-known/mercure";

static HUB_BASE: LazyLock<Option<Url>> = LazyLock::new(|| Url::parse(HUB_URL).ok());

/// Why a `match_urlpattern` value was refused (400).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UrlPatternError {
    /// Longer than [`MAX_PATTERN_BYTES`].
    #[error("the URL pattern is {len} bytes long, at most {max} allowed")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a well-formed URL Pattern, or one whose regexes are over the size limit.
    #[error("not a valid URL pattern: {0}")]
    Invalid(String),
}

/// A compiled URL pattern, and the text it was compiled from.
#[derive(Debug)]
pub struct UrlPatternSelector {
    text: Box<str>,
    pattern: UrlPattern<BoundedRegex>,
}

impl UrlPatternSelector {
    /// Compiles `text` (absolute, or relative to [`HUB_URL`]).
    ///
    /// # Errors
    /// [`UrlPatternError`] for a value too long, malformed, or too costly to compile.
    pub fn parse(text: &str) -> Result<Self, UrlPatternError> {
        if text.len() > MAX_PATTERN_BYTES {
            return Err(UrlPatternError::TooLong {
                len: text.len(),
                max: MAX_PATTERN_BYTES,
            });
        }
        let invalid = |e: urlpattern::Error| UrlPatternError::Invalid(e.to_string());
        let init = match UrlPatternInit::parse_constructor_string::<BoundedRegex>(text, None) {
            Err(urlpattern::Error::BaseUrlRequired) => {
                UrlPatternInit::parse_constructor_string::<BoundedRegex>(text, HUB_BASE.clone())
                    .map_err(invalid)?
            }
            other => other.map_err(invalid)?,
        };
        let pattern = UrlPattern::<BoundedRegex>::parse(
            init,
            UrlPatternOptions {
                regex_syntax: RegexSyntax::Rust,
                // draft-08 §URL Pattern: hubs MUST NOT enable ignoreCase.
                ignore_case: false,
            },
        )
        .map_err(invalid)?;
        Ok(Self {
            text: text.into(),
            pattern,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `topic` (absolute, or relative to [`HUB_URL`]) matches. A topic that is not a
    /// URL reference matches nothing.
    pub fn matches(&self, topic: &str) -> bool {
        resolve_topic(topic).is_some_and(|url| self.matches_url(&url))
    }

    /// Whether an already resolved topic matches: each component of the URL against the
    /// pattern's component (URL Pattern §match, with the URL's own serialization of each).
    pub fn matches_url(&self, url: &Url) -> bool {
        let p = &self.pattern;
        p.protocol.matcher.matches(url.scheme()).is_some()
            && p.username.matcher.matches(url.username()).is_some()
            && p.password
                .matcher
                .matches(url.password().unwrap_or_default())
                .is_some()
            && p.hostname
                .matcher
                .matches(url.host_str().unwrap_or_default())
                .is_some()
            && p.port.matcher.matches(url::quirks::port(url)).is_some()
            && p.pathname
                .matcher
                .matches(url::quirks::pathname(url))
                .is_some()
            && p.search
                .matcher
                .matches(url.query().unwrap_or_default())
                .is_some()
            && p.hash
                .matcher
                .matches(url.fragment().unwrap_or_default())
                .is_some()
    }
}

/// `topic` parsed as a URL reference against [`HUB_URL`] (WHATWG URL parser), if it is one.
pub fn resolve_topic(topic: &str) -> Option<Url> {
    Url::options().base_url(HUB_BASE.as_ref()).parse(topic).ok()
}

/// A `regex::Regex` built with a size limit: the regexes of a URL pattern's components.
#[derive(Debug)]
pub struct BoundedRegex(regex::Regex);

impl urlpattern::regexp::RegExp for BoundedRegex {
    fn syntax() -> RegexSyntax {
        RegexSyntax::Rust
    }

    fn parse(pattern: &str, _flags: &str, _force_eval: bool) -> Result<Self, ()> {
        regex::RegexBuilder::new(pattern)
            .size_limit(MAX_COMPILED_BYTES)
            .dfa_size_limit(MAX_COMPILED_BYTES)
            .build()
            .map(Self)
            .map_err(|_| ())
    }

    fn matches<'a>(&self, text: &'a str) -> Option<Vec<Option<&'a str>>> {
        let captures = self.0.captures(text)?;
        Some(
            captures
                .iter()
                .skip(1)
                .map(|group| group.map(|m| m.as_str()))
                .collect(),
        )
    }

    fn pattern_string(&self) -> &str {
        self.0.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> UrlPatternSelector {
        UrlPatternSelector::parse(text).expect("a valid pattern")
    }

    #[test]
    fn named_groups_match_one_segment() {
        let books = pattern("https://example.com/books/:id");
        assert!(books.matches("https://example.com/books/1"));
        assert!(books.matches("https://example.com/books/abc"));
        assert!(!books.matches("https://example.com/books/1/reviews"));
        assert!(!books.matches("https://example.com/books/"));
        assert!(!books.matches("https://example.com/authors/1"));
        assert!(!books.matches("http://example.com/books/1"));
    }

    #[test]
    fn hosts_are_case_insensitive_paths_are_not() {
        let books = pattern("https://example.com/books/:id");
        assert!(books.matches("https://EXAMPLE.com/books/1"));
        assert!(!books.matches("https://example.com/BOOKS/1"));
    }

    #[test]
    fn wildcards_and_regex_groups() {
        assert!(pattern("https://example.com/*").matches("https://example.com/a/b?c#d"));
        let digits = pattern("https://example.com/books/:id(\\d+)");
        assert!(digits.matches("https://example.com/books/42"));
        assert!(!digits.matches("https://example.com/books/x42"));
    }

    #[test]
    fn relative_patterns_and_topics_resolve_against_the_hub_url() {
        let events = pattern("/.well-known/mercure/subscriptions/:topic/:subscriber");
        assert!(events.matches("/.well-known/mercure/subscriptions/a/b"));
        assert!(events.matches("https://localhost/.well-known/mercure/subscriptions/a/b"));
        assert!(!events.matches("https://elsewhere.example/.well-known/mercure/subscriptions/a/b"));
        let relative = pattern("/books/:id");
        assert!(relative.matches("/books/1"));
    }

    #[test]
    fn a_topic_that_is_not_a_url_matches_nothing() {
        assert!(!pattern("https://example.com/*").matches("http://[::1"));
        assert!(
            pattern("*").matches("plain-topic"),
            "relative to the hub URL"
        );
    }

    #[test]
    fn malformed_long_and_costly_patterns_are_refused() {
        for bad in ["https://example.com/:id(", "https://example.com/(a(?=b))"] {
            assert!(
                matches!(
                    UrlPatternSelector::parse(bad),
                    Err(UrlPatternError::Invalid(_))
                ),
                "{bad}"
            );
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_PATTERN_BYTES));
        assert!(matches!(
            UrlPatternSelector::parse(&long),
            Err(UrlPatternError::TooLong { .. })
        ));
        assert!(matches!(
            UrlPatternSelector::parse("https://example.com/:id(\\w{5000})"),
            Err(UrlPatternError::Invalid(_))
        ));
        // The same shape under the limit compiles.
        assert!(UrlPatternSelector::parse("https://example.com/:id(\\w{4})").is_ok());
    }
}
