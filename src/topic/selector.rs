//! One topic selector, and a bounded cache of compiled selectors.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use super::template::UriTemplate;

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

    /// Whether `topic` matches this selector.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(exact) => &**exact == topic,
            // Step 2 of the spec's algorithm: identical strings match, which lets a token's
            // template authorize a subscription to the same template.
            Self::Template(template) => template.as_str() == topic || template.matches(topic),
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
        }
    }
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
}

impl SelectorCache {
    /// A cache holding at most `capacity` selectors (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Self {
            entries: Mutex::new(lru::LruCache::new(capacity)),
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

    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<Box<str>, TopicSelector>> {
        // A panic while holding this lock cannot leave the LRU half-updated in a way that
        // matters (entries are independent), so recover from poisoning.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
}
