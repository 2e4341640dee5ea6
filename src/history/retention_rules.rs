//! Retention per topic: rules keyed by a topic selector, each with a most-events and a
//! longest-age limit (a chat room keeps 1,000 events for a day, a stock ticker 10 for a minute).
//!
//! This module owns the rules and which rule a topic falls under; the stores apply them in
//! their periodic trim (the writer calls [`super::History::trim`] every second): the durable
//! store in `durable/topic_retention.rs`, Redis in `redis/topic_retention.rs`. The global limits
//! (`--history-size`, `--history-max-age`, `--history-max-bytes`) still bound the whole store
//! and are applied as before; rules can only drop events earlier, never keep one longer.
//!
//! What a rule means:
//! - **First match wins.** A topic falls under the first rule, in the order of the file, whose
//!   selector matches it (`*`, an exact IRI, or an RFC 6570 template, matched as subscriptions
//!   match them). A topic that no rule matches falls under the global limits only.
//! - **Limits count per topic, not per rule.** `topics = "https://example.com/rooms/{id}"` with
//!   `max_events = 1000` keeps the newest 1,000 events of *each* room; `max_age` drops the
//!   events of each room older than that. Either limit may be left out (no limit of that kind);
//!   a rule with neither exempts its topics from the rules after it.
//! - **An event with several topics** (its canonical topic and alternates) is kept while ANY of
//!   its topics keeps it: an event on a room and on a ticker lives as long as the room keeps it;
//!   an event with one topic under no rule is kept until the global limits drop it. Each of its
//!   topics still counts it among its own `max_events`.
//! - **Replay**: a replay skips the events the rules dropped. A client resuming from an event
//!   that a rule dropped is told as for the global limits (the loss signal; replay resumes after
//!   the newest event the global limits dropped, else `earliest`). The holes rules leave between
//!   kept events are not a loss for the others: a replay in progress is never ended because a
//!   rule dropped an event it had not reached (only the global limits do that), and a subscriber
//!   of other topics sees no signal at all. Streams resuming together share recently read pages
//!   ([`super::SharedReads`], idle for at most 5 s), which may still hold an event a rule just
//!   dropped: a little more than a fresh read, never less.
//! - **Stores**: the durable store and Redis apply rules; the memory store does not, and
//!   `ssehub serve` refuses rules with `--history memory` rather than ignore them. On Redis,
//!   every instance sharing one Redis and prefix should have the same rules.

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::topic::template::{TemplateError, UriTemplate};
use crate::topic::TopicSelector;

/// One rule: which topics, and how many of their events and for how long each keeps.
#[derive(Debug, Clone)]
pub struct RetentionRule {
    /// The selector as written (for logs, errors and the rules' fingerprint).
    topics: String,
    /// The compiled selector.
    selector: TopicSelector,
    /// Most events each matching topic keeps (`None`: no limit).
    pub max_events: Option<u64>,
    /// Oldest event each matching topic keeps (`None`: no limit).
    pub max_age: Option<Duration>,
}

/// Why a rule cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RuleError {
    /// The selector holds `{` but is not a valid RFC 6570 template: a rule would silently match
    /// nothing, so it is refused.
    #[error("{topics:?} is not a valid URI template: {source}")]
    InvalidTemplate {
        /// The selector.
        topics: String,
        /// Why.
        source: TemplateError,
    },
    /// An empty selector matches no topic.
    #[error("`topics` is empty (a URI template, an exact topic, or `*`)")]
    EmptySelector,
    /// `max_events = 0` would keep nothing.
    #[error("`max_events` must be at least 1 (leave it out for no limit)")]
    ZeroMaxEvents,
    /// `max_age = "0"` would keep nothing.
    #[error("`max_age` must be longer than 0 (leave it out for no limit)")]
    ZeroMaxAge,
}

impl RetentionRule {
    /// A rule for the topics `topics` selects (`*`, an exact topic, or a URI template).
    ///
    /// # Errors
    /// [`RuleError`]: a selector with `{` that is not a valid template, an empty selector, or a
    /// limit of zero.
    pub fn new(
        topics: &str,
        max_events: Option<u64>,
        max_age: Option<Duration>,
    ) -> Result<Self, RuleError> {
        if topics.is_empty() {
            return Err(RuleError::EmptySelector);
        }
        if max_events == Some(0) {
            return Err(RuleError::ZeroMaxEvents);
        }
        if max_age.is_some_and(|age| age.is_zero()) {
            return Err(RuleError::ZeroMaxAge);
        }
        // Subscriptions treat a broken template as an exact topic; a rule must not.
        if topics != "*" && topics.contains('{') {
            UriTemplate::parse(topics).map_err(|source| RuleError::InvalidTemplate {
                topics: topics.to_owned(),
                source,
            })?;
        }
        Ok(Self {
            topics: topics.to_owned(),
            selector: TopicSelector::parse_mercure07(topics),
            max_events,
            max_age,
        })
    }

    /// The selector as written.
    pub fn topics(&self) -> &str {
        &self.topics
    }

    /// Whether the rule limits anything (a rule without limits only exempts its topics).
    pub fn limits(&self) -> bool {
        self.max_events.is_some() || self.max_age.is_some()
    }

    /// `max_age` in milliseconds, if any.
    pub(crate) fn max_age_ms(&self) -> Option<u64> {
        self.max_age
            .map(|age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX))
    }
}

/// The rules of a store, in the order of the config file. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct RetentionRules {
    rules: Arc<[RetentionRule]>,
}

/// What the rules say about one event's topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventRules {
    /// Each distinct topic under a rule with limits, with that rule's index.
    pub(crate) ruled: Vec<(String, usize)>,
    /// Whether a topic is under no rule (or a rule without limits): the event is then never
    /// dropped by the rules, only by the global limits.
    pub(crate) pinned: bool,
}

impl RetentionRules {
    /// The rules, first match first.
    pub fn new(rules: Vec<RetentionRule>) -> Self {
        Self {
            rules: rules.into(),
        }
    }

    /// Whether there is no rule (the stores then do no per-topic work at all).
    pub fn is_empty(&self) -> bool {
        self.rules.iter().all(|rule| !rule.limits())
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[RetentionRule] {
        &self.rules
    }

    /// The rule `topic` falls under: the first that matches, with its index.
    pub fn rule_for(&self, topic: &str) -> Option<(usize, &RetentionRule)> {
        self.rules
            .iter()
            .enumerate()
            .find(|(_, rule)| rule.selector.matches(topic))
    }

    /// What the rules say about an event with `topics`.
    pub(crate) fn classify(&self, topics: &[String]) -> EventRules {
        let mut ruled: Vec<(String, usize)> = Vec::new();
        let mut pinned = false;
        for topic in topics {
            match self.rule_for(topic) {
                Some((index, rule)) if rule.limits() => {
                    // A topic repeated among the alternates counts once.
                    if !ruled.iter().any(|(t, _)| t == topic) {
                        ruled.push((topic.clone(), index));
                    }
                }
                _ => pinned = true,
            }
        }
        EventRules { ruled, pinned }
    }

    /// A short text that changes when the rules do (kept next to a store's index, so that
    /// instances sharing one Redis can tell that their rules differ).
    pub fn fingerprint(&self) -> String {
        self.rules
            .iter()
            .map(|rule| {
                format!(
                    "{}|{}|{}",
                    rule.topics,
                    rule.max_events.map_or_else(String::new, |n| n.to_string()),
                    rule.max_age_ms()
                        .map_or_else(String::new, |n| n.to_string())
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(list: &[&str]) -> Vec<String> {
        list.iter().map(|t| (*t).to_owned()).collect()
    }

    fn chat_and_ticker() -> RetentionRules {
        RetentionRules::new(vec![
            RetentionRule::new("https://example.com/rooms/{id}", Some(1000), None).expect("room"),
            RetentionRule::new("https://example.com/rooms/{+rest}", Some(1), None)
                .expect("partly shadowed"),
            RetentionRule::new(
                "https://example.com/ticker/{symbol}",
                Some(10),
                Some(Duration::from_secs(60)),
            )
            .expect("ticker"),
        ])
    }

    #[test]
    fn the_first_matching_rule_wins_and_unmatched_topics_are_pinned() {
        let rules = chat_and_ticker();
        assert_eq!(
            rules.rule_for("https://example.com/rooms/7").map(|r| r.0),
            Some(0),
            "both room rules match: the first wins"
        );
        assert_eq!(
            rules.rule_for("https://example.com/rooms/7/a").map(|r| r.0),
            Some(1)
        );
        assert_eq!(
            rules
                .rule_for("https://example.com/ticker/ACME")
                .map(|r| r.0),
            Some(2)
        );
        assert!(rules.rule_for("https://example.com/other").is_none());
        let event = rules.classify(&topics(&[
            "https://example.com/rooms/7",
            "https://example.com/ticker/ACME",
            "https://example.com/rooms/7",
        ]));
        assert_eq!(
            event.ruled,
            [
                ("https://example.com/rooms/7".to_owned(), 0),
                ("https://example.com/ticker/ACME".to_owned(), 2)
            ]
        );
        assert!(!event.pinned);
        let event = rules.classify(&topics(&[
            "https://example.com/rooms/7",
            "https://example.com/other",
        ]));
        assert!(event.pinned, "a topic under no rule keeps the event");
    }

    #[test]
    fn a_rule_without_limits_exempts_its_topics_from_later_rules() {
        let rules = RetentionRules::new(vec![
            RetentionRule::new("https://example.com/audit", None, None).expect("exempt"),
            RetentionRule::new("*", Some(5), None).expect("star"),
        ]);
        assert!(!rules.is_empty());
        assert!(
            rules
                .classify(&topics(&["https://example.com/audit"]))
                .pinned
        );
        let other = rules.classify(&topics(&["https://example.com/x"]));
        assert_eq!(other.ruled, [("https://example.com/x".to_owned(), 1)]);
        assert!(
            RetentionRules::new(vec![RetentionRule::new("*", None, None).expect("no limits")])
                .is_empty()
        );
    }

    #[test]
    fn bad_rules_are_refused_with_the_reason() {
        match RetentionRule::new("https://example.com/rooms/{id", Some(1), None) {
            Err(error @ RuleError::InvalidTemplate { .. }) => {
                assert!(error.to_string().contains("rooms/{id"), "{error}")
            }
            other => panic!("expected an invalid template, got {other:?}"),
        }
        assert_eq!(
            RetentionRule::new("*", Some(0), None).err(),
            Some(RuleError::ZeroMaxEvents)
        );
        assert_eq!(
            RetentionRule::new("*", None, Some(Duration::ZERO)).err(),
            Some(RuleError::ZeroMaxAge)
        );
        assert_eq!(
            RetentionRule::new("", Some(1), None).err(),
            Some(RuleError::EmptySelector)
        );
    }
}
