//! Topic selectors and matching (draft-dunglas-mercure-07 §Topic Selectors,
//! draft-dunglas-mercure-08 §Matcher Types).
//!
//! A subscriber names what it wants with selectors (`topic` query parameters); a token names
//! what its holder may publish or read privately with selectors too (`mercure.publish`,
//! `mercure.subscribe`). [`TopicSelector`] is one selector, compiled once; [`SelectorCache`]
//! shares compiled selectors between subscribers, so a thousand browsers subscribing to the
//! same URI template compile it once. URI template parsing and matching live in [`template`],
//! URL patterns (draft-08 `match_urlpattern`) in [`url_pattern`], and what a draft-08 topic
//! or matcher value may contain in [`value`].
//!
//! draft-08's matchers are a second constructor, [`TopicSelector::parse_matcher`], beside
//! [`TopicSelector::parse_mercure07`]; the registry and the authorization code only call
//! [`TopicSelector::matches`] (or [`selector::any_matches_event`], which parses an event's
//! topics as URLs once for every URL pattern that looks at them).

pub mod selector;
pub mod template;
pub mod url_pattern;
pub mod value;

pub use selector::{MatcherType, SelectorCache, TopicMatcher, TopicSelector};
pub use template::UriTemplate;
pub use url_pattern::UrlPatternSelector;
