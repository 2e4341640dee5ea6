//! Topic selectors and matching (draft-dunglas-mercure-07 §Topic Selectors).
//!
//! A subscriber names what it wants with selectors (`topic` query parameters); a token names
//! what its holder may publish or read privately with selectors too (`mercure.publish`,
//! `mercure.subscribe`). [`TopicSelector`] is one selector, compiled once; [`SelectorCache`]
//! shares compiled selectors between subscribers, so a thousand browsers subscribing to the
//! same URI template compile it once. URI template parsing and matching live in [`template`].
//!
//! The 2026 draft's `match`/`matchURLPattern` matchers will be a second constructor beside
//! [`TopicSelector::parse_mercure07`] and a new variant of [`TopicSelector`]; the registry and
//! the authorization code only call [`TopicSelector::matches`].

pub mod selector;
pub mod template;

pub use selector::{SelectorCache, TopicSelector};
pub use template::UriTemplate;
