//! One topic selector, and a bounded cache of compiled selectors.
//!
//! A selector comes from one of two dialects: draft-07's `topic` (`*`, exact, or an RFC 6570
//! template, [`TopicSelector::parse_mercure07`]) or draft-08's matchers (`match` exact,
//! `match_urlpattern`, [`TopicSelector::parse_matcher`]). Once compiled they are one type, and
//! the registry, the stream and authorization only call [`TopicSelector::matches`] (or
//! [`any_matches_event`] with an event's topics parsed once).

use std::cell::OnceCell;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use super::template::UriTemplate;
use super::url_pattern::{resolve_topic, UrlPatternError, UrlPatternSelector};

/// The matcher type of a draft-08 matcher (draft-dunglas-mercure-08 §Matcher Types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatcherType {
    /// `exact` (`match`, `match_exact`): byte-for-byte comparison.
    Exact,
    /// `urlpattern` (`match_urlpattern`): WHATWG URL Pattern.
    UrlPattern,
}

impl MatcherType {
    /// The matcher type named by a subscribe query parameter: `match`, `match_exact`,
    /// `match_urlpattern`. Names are case-sensitive (draft-08 §Subscription).
    pub fn from_param(name: &str) -> Option<Self> {
        match name {
            "match" | "match_exact" => Some(Self::Exact),
            "match_urlpattern" => Some(Self::UrlPattern),
            _ => None,
        }
    }

    /// The matcher type of a registered name in its canonical case (`exact`, `urlpattern`),
    /// as the subscriptions API's `{match_type}` segment names it.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "exact" => Some(Self::Exact),
            "urlpattern" => Some(Self::UrlPattern),
            _ => None,
        }
    }

    /// The matcher type's registered name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::UrlPattern => "urlpattern",
        }
    }
}

/// A draft-08 topic matcher as a subscriber sent it: its type and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMatcher {
    /// How `value` is read.
    pub kind: MatcherType,
    /// The value, as sent.
    pub value: String,
}

/// A compiled topic selector.
///
/// Cloning is cheap: a template is shared behind an `Arc`.
#[derive(Debug, Clone)]
pub enum TopicSelector {
    /// `*`: every topic.
    Any,
    /// A string that is not a URI template with expressions: byte-for-byte comparison.
    Exact(Arc<str>),
    /// A URI template (RFC 6570) with at least one expression.
    Template(Arc<UriTemplate>),
    /// A WHATWG URL pattern (draft-08 `match_urlpattern`).
    UrlPattern(Arc<UrlPatternSelector>),
}

impl TopicSelector {
    /// Compiles a selector with the rules of draft-dunglas-mercure-07 §Topic Selectors:
    /// `*` matches everything; otherwise an identical string matches; otherwise, when the
    /// selector is a valid URI template, every string the template matches. A string that is
    /// not a valid template is still a valid selector, matched exactly.
    pub fn parse_mercure07(selector: &str) -> Self {
        if selector == "*" {
            return Self::Any;
        }
        if selector.contains('{') {
            if let Ok(template) = UriTemplate::parse(selector) {
                if template.has_expressions() {
                    return Self::Template(Arc::new(template));
                }
            }
        }
        Self::Exact(Arc::from(selector))
    }

    /// Compiles a draft-08 matcher (draft-dunglas-mercure-08 §Matcher Types): `*` matches
    /// every topic whatever the type; an `exact` value is compared byte for byte (no template
    /// reading: `/books/{id}` is that string); a `urlpattern` value is a URL pattern.
    ///
    /// # Errors
    /// [`UrlPatternError`] for a URL pattern that is too long, malformed or too costly.
    pub fn parse_matcher(kind: MatcherType, value: &str) -> Result<Self, UrlPatternError> {
        if value == "*" {
            return Ok(Self::Any);
        }
        Ok(match kind {
            MatcherType::Exact => Self::Exact(Arc::from(value)),
            MatcherType::UrlPattern => {
                Self::UrlPattern(Arc::new(UrlPatternSelector::parse(value)?))
            }
        })
    }

    /// Whether `topic` matches this selector.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(exact) => &**exact == topic,
            // Step 2 of the spec's algorithm: identical strings match, which lets a token's
            // template authorize a subscription to the same template.
            Self::Template(template) => template.as_str() == topic || template.matches(topic),
            Self::UrlPattern(pattern) => pattern.matches(topic),
        }
    }

    /// Whether topic `index` of `topics` matches; a URL pattern reads the topic's URL, parsed
    /// once per event however many patterns look at it.
    fn matches_in(&self, topics: &EventTopics<'_>, index: usize) -> bool {
        match self {
            Self::UrlPattern(pattern) => topics
                .url(index)
                .is_some_and(|url| pattern.matches_url(url)),
            _ => self.matches(&topics.topics[index]),
        }
    }

    /// The exact topic, when this selector matches exactly one string.
    pub fn as_exact(&self) -> Option<&str> {
        match self {
            Self::Exact(exact) => Some(exact),
            _ => None,
        }
    }

    /// The selector as written.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Any => "*",
            Self::Exact(exact) => exact,
            Self::Template(template) => template.as_str(),
            Self::UrlPattern(pattern) => pattern.as_str(),
        }
    }
}

/// An event's topics as selectors read them: the strings, and their URLs resolved against the
/// hub's URL, parsed on first need and then kept for every other URL-pattern subscriber of the
/// same event (one parse per event and topic, not per delivery).
#[derive(Debug)]
pub struct EventTopics<'a> {
    topics: &'a [String],
    urls: OnceCell<Box<[Option<url::Url>]>>,
}

impl<'a> EventTopics<'a> {
    /// The topics of one event; nothing is parsed yet.
    pub fn new(topics: &'a [String]) -> Self {
        Self {
            topics,
            urls: OnceCell::new(),
        }
    }

    fn url(&self, index: usize) -> Option<&url::Url> {
        self.urls
            .get_or_init(|| self.topics.iter().map(|t| resolve_topic(t)).collect())
            .get(index)?
            .as_ref()
    }
}

/// Whether any of the event's topics matches any selector.
pub fn any_matches_event(selectors: &[TopicSelector], topics: &EventTopics<'_>) -> bool {
    (0..topics.topics.len()).any(|index| {
        selectors
            .iter()
            .any(|selector| selector.matches_in(topics, index))
    })
}

/// Whether any topic matches any selector.
pub fn any_matches(selectors: &[TopicSelector], topics: &[String]) -> bool {
    topics
        .iter()
        .any(|topic| selectors.iter().any(|selector| selector.matches(topic)))
}

/// A bounded LRU of compiled selectors, keyed by their text.
///
/// Compiling a URI template builds a regex (tens of microseconds); a reconnect storm of
/// thousands of clients with the same selectors would otherwise compile each one thousands of
/// times. Bounded, so hostile clients sending endless distinct selectors cannot grow it.
#[derive(Debug)]
pub struct SelectorCache {
    entries: Mutex<lru::LruCache<Box<str>, TopicSelector>>,
    /// Compiled URL patterns, apart: the same text is a template or an exact topic in
    /// draft-07 and a pattern in draft-08.
    url_patterns: Mutex<lru::LruCache<Box<str>, TopicSelector>>,
}

impl SelectorCache {
    /// A cache holding at most `capacity` selectors (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Self {
            entries: Mutex::new(lru::LruCache::new(capacity)),
            url_patterns: Mutex::new(lru::LruCache::new(capacity)),
        }
    }

    /// The compiled selector for `text`, compiling and caching it on a miss.
    pub fn get(&self, text: &str) -> TopicSelector {
        if text == "*" || !text.contains('{') {
            // Cheaper to build than to look up.
            return TopicSelector::parse_mercure07(text);
        }
        if let Some(found) = self.lock().get(text) {
            return found.clone();
        }
        // Compile outside the lock: a slow template must not stall other subscribers.
        let compiled = TopicSelector::parse_mercure07(text);
        self.lock().put(text.into(), compiled.clone());
        compiled
    }

    /// The compiled draft-08 matcher, compiling and caching a URL pattern on a miss (an
    /// exact matcher is cheaper to build than to look up).
    ///
    /// # Errors
    /// [`UrlPatternError`] for a pattern that does not compile (not cached: the next request
    /// is refused the same way).
    pub fn get_matcher(
        &self,
        kind: MatcherType,
        value: &str,
    ) -> Result<TopicSelector, UrlPatternError> {
        if kind == MatcherType::Exact || value == "*" {
            return TopicSelector::parse_matcher(kind, value);
        }
        if let Some(found) = Self::locked(&self.url_patterns).get(value) {
            return Ok(found.clone());
        }
        let compiled = TopicSelector::parse_matcher(kind, value)?;
        Self::locked(&self.url_patterns).put(value.into(), compiled.clone());
        Ok(compiled)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<Box<str>, TopicSelector>> {
        Self::locked(&self.entries)
    }

    fn locked(
        lru: &Mutex<lru::LruCache<Box<str>, TopicSelector>>,
    ) -> std::sync::MutexGuard<'_, lru::LruCache<Box<str>, TopicSelector>> {
        // A panic while holding this lock cannot leave the LRU half-updated in a way that
        // matters (entries are independent), so recover from poisoning.
        lru.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_matches_everything() {
        let any = TopicSelector::parse_mercure07("*");
        assert!(any.matches("https://example.com/a"));
        assert!(any.matches(""));
    }

    #[test]
    fn exact_selector_is_byte_for_byte() {
        let exact = TopicSelector::parse_mercure07("https://example.com/books/1");
        assert!(exact.matches("https://example.com/books/1"));
        assert!(!exact.matches("https://example.com/books/10"));
        assert!(!exact.matches("https://EXAMPLE.com/books/1"));
    }

    #[test]
    fn template_matches_expansions_and_itself() {
        let template = TopicSelector::parse_mercure07("https://example.com/books/{id}");
        assert!(matches!(template, TopicSelector::Template(_)));
        assert!(template.matches("https://example.com/books/42"));
        assert!(template.matches("https://example.com/books/{id}"));
        assert!(!template.matches("https://example.com/authors/42"));
    }

    #[test]
    fn invalid_template_is_an_exact_selector() {
        let broken = TopicSelector::parse_mercure07("https://example.com/{unclosed");
        assert!(broken.matches("https://example.com/{unclosed"));
        assert!(!broken.matches("https://example.com/x"));
    }

    #[test]
    fn cache_returns_equivalent_selectors() {
        let cache = SelectorCache::new(2);
        let first = cache.get("/books/{id}");
        let second = cache.get("/books/{id}");
        match (first, second) {
            (TopicSelector::Template(a), TopicSelector::Template(b)) => {
                assert!(Arc::ptr_eq(&a, &b))
            }
            other => panic!("expected templates, got {other:?}"),
        }
        assert!(cache.get("/a/{x}").matches("/a/1"));
        assert!(cache.get("/b/{x}").matches("/b/1"));
        assert!(cache.get("/books/{id}").matches("/books/1"));
    }

    #[test]
    fn draft08_exact_is_byte_wise_and_never_a_template() {
        let exact = TopicSelector::parse_matcher(MatcherType::Exact, "/books/{id}").expect("ok");
        assert!(exact.matches("/books/{id}"));
        assert!(!exact.matches("/books/1"));
        let star = TopicSelector::parse_matcher(MatcherType::UrlPattern, "*").expect("ok");
        assert!(matches!(star, TopicSelector::Any));
    }

    #[test]
    fn the_cache_shares_url_patterns_apart_from_templates() {
        let cache = SelectorCache::new(4);
        let a = cache
            .get_matcher(MatcherType::UrlPattern, "https://e.com/:id")
            .expect("ok");
        let b = cache
            .get_matcher(MatcherType::UrlPattern, "https://e.com/:id")
            .expect("ok");
        match (&a, &b) {
            (TopicSelector::UrlPattern(a), TopicSelector::UrlPattern(b)) => {
                assert!(Arc::ptr_eq(a, b))
            }
            other => panic!("expected URL patterns, got {other:?}"),
        }
        // The same text read by draft-07 is an exact topic.
        assert!(matches!(
            cache.get("https://e.com/:id"),
            TopicSelector::Exact(_)
        ));
        assert!(cache
            .get_matcher(MatcherType::UrlPattern, "https://e.com/:id(")
            .is_err());
    }

    #[test]
    fn event_topics_match_url_patterns_and_the_rest() {
        let selectors = [
            TopicSelector::parse_matcher(MatcherType::UrlPattern, "https://e.com/books/:id")
                .expect("ok"),
            TopicSelector::parse_mercure07("plain"),
        ];
        let topics = [
            "https://e.com/authors/1".to_owned(),
            "https://e.com/books/1".into(),
        ];
        assert!(any_matches_event(&selectors, &EventTopics::new(&topics)));
        let other = ["https://e.com/authors/1".to_owned()];
        assert!(!any_matches_event(&selectors, &EventTopics::new(&other)));
        let plain = ["plain".to_owned()];
        assert!(any_matches_event(&selectors, &EventTopics::new(&plain)));
    }
}
