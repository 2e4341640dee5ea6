//! Recognising a retried publish, so that it is answered and not stored or delivered twice.
//!
//! Networks drop answers: a publisher that timed out cannot tell whether its update was stored,
//! and retries. The hub recognises the retry in two ways (the history stores do the lookups,
//! inside the one write that appends the batch, so two retries racing each other, or two
//! instances over Redis, still store one event):
//! - by **`Idempotency-Key`** (the request header of draft-ietf-httpapi-idempotency-key-header):
//!   a key seen within [`crate::HubConfig::idempotency_window`] (24 h by default) answers with the
//!   original event's id; the same key with different content is refused (`422`);
//! - by **id**: a publish whose `id` is already in history with the same topics, data, type,
//!   retry and privacy is the same update. A reused id with different content is a new update and
//!   is stored (a `Last-Event-ID` naming that id then resumes after its earliest occurrence, as
//!   draft-dunglas-mercure-08 says).
//!
//! Content is compared through a [`Fingerprint`]: 128 bits of SHA-256 over the topics, data,
//! type, retry and privacy (the encoded frame without its id line). The id is not part of it: a retry by id has the same id by
//! definition, and a keyed retry that gives no id gets a new generated one, yet is the same
//! update (the answer names the original id).

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::history::StoredEvent;

/// The longest `Idempotency-Key` accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 255;

/// A publisher's `Idempotency-Key`: 1 to [`MAX_KEY_BYTES`] visible ASCII characters. Keys are
/// hub-wide (not per publisher): use a random one (a UUID) per update.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

/// Why an `Idempotency-Key` header was refused (`400`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    /// An empty key (or `""`).
    #[error("`Idempotency-Key` must not be empty")]
    Empty,
    /// Longer than [`MAX_KEY_BYTES`].
    #[error("`Idempotency-Key` is too long: {len} bytes, at most {max} allowed")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A byte that is not visible ASCII, or a quote or backslash.
    #[error(
        "`Idempotency-Key` must be visible ASCII characters (a quoted string or a bare token)"
    )]
    Invalid,
    /// The header was sent more than once.
    #[error("`Idempotency-Key` must be sent once")]
    Repeated,
}

impl IdempotencyKey {
    /// Reads a header value: an RFC 8941 string (`"8e03978e-…"`, as the IETF draft writes it) or
    /// the bare key most clients send.
    ///
    /// # Errors
    /// [`KeyError`] for an empty, long or non-ASCII key.
    pub fn parse(value: &[u8]) -> Result<Self, KeyError> {
        let inner = match value {
            [b'"', inner @ .., b'"'] => inner,
            bare => bare,
        };
        if inner.is_empty() {
            return Err(KeyError::Empty);
        }
        if inner.len() > MAX_KEY_BYTES {
            return Err(KeyError::TooLong {
                len: inner.len(),
                max: MAX_KEY_BYTES,
            });
        }
        // A quote or backslash would need escaping in an RFC 8941 string: none is allowed.
        if !inner
            .iter()
            .all(|&b| (b.is_ascii_graphic() || b == b' ') && b != b'"' && b != b'\\')
        {
            return Err(KeyError::Invalid);
        }
        // Visible ASCII only, so this cannot fail.
        std::str::from_utf8(inner)
            .map(|key| Self(key.to_owned()))
            .map_err(|_| KeyError::Invalid)
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What makes two publishes the same update: 128 bits of SHA-256 over everything but the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 16]);

impl Fingerprint {
    /// The fingerprint of an update's content: its topics and privacy, and its encoded frame
    /// without the `id:` line (which the encoder writes first), each length-prefixed so that
    /// no two updates share one by concatenation. Computed from the stored form, so the same
    /// update has the same fingerprint when it is published and when a spool forwards it.
    pub fn of(event: &StoredEvent) -> Self {
        let mut hash = Sha256::new();
        let mut field = |bytes: &[u8]| {
            hash.update((bytes.len() as u64).to_be_bytes());
            hash.update(bytes);
        };
        field(&[u8::from(event.private)]);
        field(&(event.topics.len() as u64).to_be_bytes());
        for topic in &event.topics {
            field(topic.as_bytes());
        }
        let frame = &event.frame[..];
        let without_id = match memchr::memchr(b'\n', frame) {
            Some(end) if frame.starts_with(b"id: ") => &frame[end + 1..],
            _ => frame,
        };
        field(without_id);
        let digest = hash.finalize();
        let mut out = [0; 16];
        out.copy_from_slice(&digest[..16]);
        Self(out)
    }

    /// Lower-case hex, as the Redis history stores it.
    pub fn to_hex(self) -> String {
        use std::fmt::Write;
        self.0.iter().fold(String::with_capacity(32), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    #[test]
    fn keys_are_read_quoted_or_bare() {
        assert_eq!(
            IdempotencyKey::parse(b"\"abc-1\"").unwrap().as_str(),
            "abc-1"
        );
        assert_eq!(IdempotencyKey::parse(b"abc-1").unwrap().as_str(), "abc-1");
        assert_eq!(IdempotencyKey::parse(b""), Err(KeyError::Empty));
        assert_eq!(IdempotencyKey::parse(b"\"\""), Err(KeyError::Empty));
        assert_eq!(IdempotencyKey::parse(b"\"a\"b\""), Err(KeyError::Invalid));
        assert_eq!(IdempotencyKey::parse(b"a\"b"), Err(KeyError::Invalid));
        assert_eq!(IdempotencyKey::parse(b"a\\b"), Err(KeyError::Invalid));
        assert_eq!(
            IdempotencyKey::parse(b"caf\xc3\xa9"),
            Err(KeyError::Invalid)
        );
        assert_eq!(IdempotencyKey::parse(b"a\tb"), Err(KeyError::Invalid));
        assert!(matches!(
            IdempotencyKey::parse(&[b'k'; 256]),
            Err(KeyError::TooLong { len: 256, .. })
        ));
        assert!(IdempotencyKey::parse(&[b'k'; 255]).is_ok());
    }

    #[test]
    fn the_fingerprint_covers_every_field_that_reaches_a_subscriber() {
        let base = Event {
            id: "1".into(),
            ..Event::new("https://example.com/a", "x")
        };
        let print = |event: &Event| Fingerprint::of(&StoredEvent::new(1, event.clone()));
        let same = print(&base);
        assert_eq!(same, print(&base.clone()), "stable");
        let other_id = Event {
            id: "2".into(),
            ..base.clone()
        };
        assert_eq!(same, print(&other_id), "the id is not content");
        let variants = [
            Event {
                data: "y".into(),
                ..base.clone()
            },
            Event {
                data: String::new(),
                event_type: Some("x".into()),
                ..base.clone()
            },
            Event {
                event_type: Some("t".into()),
                ..base.clone()
            },
            Event {
                retry: Some(5),
                ..base.clone()
            },
            Event {
                private: true,
                ..base.clone()
            },
            Event {
                topics: vec!["https://example.com/a".into(), "b".into()],
                ..base.clone()
            },
            Event {
                topics: vec!["https://example.com/b".into()],
                ..base.clone()
            },
        ];
        for variant in &variants {
            assert_ne!(same, print(variant), "{variant:?}");
        }
        assert_eq!(same.to_hex().len(), 32);
    }
}
