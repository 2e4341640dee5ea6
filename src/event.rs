//! The event model: what a publisher sends and what the hub stores and delivers.
//!
//! An [`Event`] is validated once, when it enters the hub ([`Event::validate`]); everything after
//! that (the wire encoder, history, fan-out) can rely on its invariants. The wire format lives in
//! [`crate::wire`]; matching topics against selectors lives in [`crate::topic`].

use thiserror::Error;

/// The reserved `Last-Event-ID` value meaning "everything the hub still has"
/// (draft-dunglas-mercure-07 §Reconciliation). It can never be an event's id.
pub const EARLIEST: &str = "earliest";

/// One update, as published (Mercure §Publication).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The SSE `id`. Clients send it back as `Last-Event-ID` to resume; the hub generates a
    /// `urn:uuid:` one when the publisher gives none.
    pub id: String,
    /// The topics of the update. The first is the canonical IRI, the others are alternates; the
    /// update goes to subscribers of any of them (Mercure §Publication).
    pub topics: Vec<String>,
    /// The payload, written as one `data:` line per line.
    pub data: String,
    /// The SSE `event` field (Mercure's `type`); `None` means the default `message` event.
    pub event_type: Option<String>,
    /// The SSE `retry` field: the client's reconnection delay in milliseconds.
    pub retry: Option<u64>,
    /// A private update reaches only subscribers whose token allows one of its topics.
    pub private: bool,
}

/// Limits that a published event must respect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLimits {
    /// The most topics (canonical plus alternates) one update may carry.
    pub max_topics: usize,
    /// The longest topic, id or type, in bytes.
    pub max_field_bytes: usize,
}

impl Default for EventLimits {
    fn default() -> Self {
        Self {
            max_topics: 64,
            max_field_bytes: 4096,
        }
    }
}

/// Why an event was refused. Each variant maps to `400 Bad Request`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EventError {
    /// Mercure: an update needs at least one `topic`.
    #[error("missing topic: an update needs at least one `topic` field")]
    MissingTopic,
    /// An empty or whitespace-only `topic`: no subscriber can mean it, so it is always a
    /// publisher's mistake (an unset variable, a form field left empty).
    #[error("`topic` must not be empty or only whitespace")]
    BlankTopic,
    /// More topics than [`EventLimits::max_topics`].
    #[error("too many topics: {count} given, at most {max} allowed")]
    TooManyTopics {
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A field longer than [`EventLimits::max_field_bytes`].
    #[error("`{field}` is too long: {len} bytes, at most {max} allowed")]
    FieldTooLong {
        /// The field's name.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A CR, LF or NUL in a single-line field would end the SSE line early or (NUL in `id`) make
    /// browsers ignore the id (WHATWG HTML §9.2.6).
    #[error("`{field}` must not contain CR, LF or NUL characters")]
    ControlCharacter {
        /// The field's name.
        field: &'static str,
    },
    /// Mercure §Publication: "The provided ID MUST NOT start with the `#` character".
    #[error("`id` must not start with `#` (reserved for ids the hub generates)")]
    IdStartsWithHash,
    /// `earliest` is the reserved `Last-Event-ID` value and cannot name an event.
    #[error("`id` must not be `earliest` (reserved by the Mercure protocol)")]
    ReservedId,
    /// An empty `id` would reset the client's last event id instead of setting it.
    #[error("`id` must not be empty")]
    EmptyId,
    /// An `id` that starts or ends with a space or tab: browsers send it back in the
    /// `Last-Event-ID` header, whose value HTTP trims, so the hub would never find it again.
    #[error(
        "`id` must not start or end with a space or tab (the Last-Event-ID header would lose it)"
    )]
    PaddedId,
    /// A `type` of whitespace only: no `addEventListener` call means it; leave `type` out (or
    /// empty) for the default `message` type.
    #[error("`type` must not be only whitespace (leave it out for `message` events)")]
    BlankType,
    /// The `mercure` type is reserved for what the hub itself says in a stream (a replay that
    /// could not be gap-free), so that a page can trust it.
    #[error("`type` must not be `mercure` (reserved for the hub's own signals)")]
    ReservedType,
}

impl Event {
    /// A public event with a fresh hub-generated id and no type or retry.
    pub fn new(topic: impl Into<String>, data: impl Into<String>) -> Self {
        Self {
            id: generate_id(),
            topics: vec![topic.into()],
            data: data.into(),
            event_type: None,
            retry: None,
            private: false,
        }
    }

    /// The canonical topic (the first one).
    pub fn canonical_topic(&self) -> Option<&str> {
        self.topics.first().map(String::as_str)
    }

    /// Checks the invariants the encoder and history rely on.
    ///
    /// # Errors
    /// The first rule the event breaks, as an [`EventError`].
    pub fn validate(&self, limits: &EventLimits) -> Result<(), EventError> {
        if self.topics.is_empty() {
            return Err(EventError::MissingTopic);
        }
        if self.topics.len() > limits.max_topics {
            return Err(EventError::TooManyTopics {
                count: self.topics.len(),
                max: limits.max_topics,
            });
        }
        for topic in &self.topics {
            check_length("topic", topic, limits)?;
            if topic.trim().is_empty() {
                return Err(EventError::BlankTopic);
            }
        }
        check_length("id", &self.id, limits)?;
        check_single_line("id", &self.id, true)?;
        if self.id.is_empty() {
            return Err(EventError::EmptyId);
        }
        if self.id.starts_with([' ', '\t']) || self.id.ends_with([' ', '\t']) {
            return Err(EventError::PaddedId);
        }
        if self.id.starts_with('#') {
            return Err(EventError::IdStartsWithHash);
        }
        if self.id == EARLIEST {
            return Err(EventError::ReservedId);
        }
        if let Some(event_type) = &self.event_type {
            check_length("type", event_type, limits)?;
            check_single_line("type", event_type, false)?;
            if event_type.trim().is_empty() {
                return Err(EventError::BlankType);
            }
            if event_type == crate::wire::HUB_EVENT_TYPE {
                return Err(EventError::ReservedType);
            }
        }
        Ok(())
    }
}

/// A new unique, time-ordered event id: `urn:uuid:` followed by a UUIDv7.
pub fn generate_id() -> String {
    format!("urn:uuid:{}", uuid::Uuid::now_v7())
}

fn check_length(field: &'static str, value: &str, limits: &EventLimits) -> Result<(), EventError> {
    if value.len() > limits.max_field_bytes {
        return Err(EventError::FieldTooLong {
            field,
            len: value.len(),
            max: limits.max_field_bytes,
        });
    }
    Ok(())
}

fn check_single_line(field: &'static str, value: &str, reject_nul: bool) -> Result<(), EventError> {
    let bad = |b: &u8| *b == b'\r' || *b == b'\n' || (reject_nul && *b == 0);
    if value.as_bytes().iter().any(bad) {
        return Err(EventError::ControlCharacter { field });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_with_id(id: &str) -> Event {
        Event {
            id: id.to_owned(),
            ..Event::new("t", "d")
        }
    }

    #[test]
    fn generated_ids_are_unique_uuid_urns() {
        let a = generate_id();
        let b = generate_id();
        assert!(a.starts_with("urn:uuid:"));
        assert_ne!(a, b);
    }

    #[test]
    fn ids_with_line_breaks_or_nul_are_rejected() {
        let limits = EventLimits::default();
        for id in ["a\nb", "a\rb", "a\0b"] {
            assert_eq!(
                event_with_id(id).validate(&limits),
                Err(EventError::ControlCharacter { field: "id" })
            );
        }
    }

    #[test]
    fn reserved_and_hash_ids_are_rejected() {
        let limits = EventLimits::default();
        assert_eq!(
            event_with_id("earliest").validate(&limits),
            Err(EventError::ReservedId)
        );
        assert_eq!(
            event_with_id("#1").validate(&limits),
            Err(EventError::IdStartsWithHash)
        );
        assert_eq!(
            event_with_id("").validate(&limits),
            Err(EventError::EmptyId)
        );
    }

    #[test]
    fn blank_topics_padded_ids_and_blank_types_are_rejected() {
        let limits = EventLimits::default();
        for topics in [vec![""], vec![" "], vec!["t", "\t"], vec!["\u{3000}"]] {
            let mut event = Event::new("t", "d");
            event.topics = topics.iter().map(|t| (*t).to_owned()).collect();
            assert_eq!(
                event.validate(&limits),
                Err(EventError::BlankTopic),
                "{topics:?}"
            );
        }
        for id in [" a", "a ", "\ta", "a\t", " "] {
            assert_eq!(
                event_with_id(id).validate(&limits),
                Err(EventError::PaddedId),
                "{id:?}"
            );
        }
        // Inner spaces are fine: the header keeps them.
        assert_eq!(event_with_id("order 42").validate(&limits), Ok(()));
        let mut event = Event::new("t", "d");
        event.event_type = Some("  ".into());
        assert_eq!(event.validate(&limits), Err(EventError::BlankType));
        event.event_type = Some("order updated".into());
        assert_eq!(event.validate(&limits), Ok(()));
        event.event_type = Some("mercure".into());
        assert_eq!(event.validate(&limits), Err(EventError::ReservedType));
    }

    #[test]
    fn type_with_line_break_is_rejected() {
        let mut event = Event::new("t", "d");
        event.event_type = Some("a\r\nb".into());
        assert_eq!(
            event.validate(&EventLimits::default()),
            Err(EventError::ControlCharacter { field: "type" })
        );
    }

    #[test]
    fn topic_count_and_length_are_bounded() {
        let limits = EventLimits {
            max_topics: 2,
            max_field_bytes: 8,
        };
        let mut event = Event::new("t", "d");
        event.topics = vec!["a".into(), "b".into(), "c".into()];
        assert!(matches!(
            event.validate(&limits),
            Err(EventError::TooManyTopics { .. })
        ));
        event.topics = vec!["123456789".into()];
        assert!(matches!(
            event.validate(&limits),
            Err(EventError::FieldTooLong { .. })
        ));
        event.topics.clear();
        assert_eq!(event.validate(&limits), Err(EventError::MissingTopic));
    }
}
