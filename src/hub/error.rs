//! Why a publish or a subscription failed: the errors [`crate::Hub`] returns, which `http`
//! maps to statuses.

use thiserror::Error;

use crate::event::EventError;
use crate::history::HistoryError;

/// Why a publish failed.
#[derive(Debug, Error)]
pub enum PublishError {
    /// The event breaks a rule (400).
    #[error(transparent)]
    Invalid(#[from] EventError),
    /// The history did not store it (503 when the store may recover, 500 for damage:
    /// `http::ApiError` decides); nothing was delivered.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// The hub is shutting down (503).
    #[error("the hub is shutting down")]
    ShuttingDown,
    /// The `Idempotency-Key` was used before, within its window, for an update with other
    /// content (422); nothing was stored.
    #[error(
        "this Idempotency-Key was already used for another update (id {id}): use a new key for each update"
    )]
    KeyReused {
        /// The id of the update the key was first used for.
        id: String,
    },
}

/// Why a subscription was refused.
#[derive(Debug, Error)]
pub enum SubscribeError {
    /// No `topic` selector (400).
    #[error("missing topic: subscribe with at least one `topic` query parameter")]
    NoTopics,
    /// An empty or whitespace-only `topic` selector (400): it matches no topic anybody publishes.
    #[error("`topic` must not be empty or only whitespace: give a topic, a URI template or `*`")]
    BlankTopic,
    /// More selectors than allowed (400).
    #[error("too many topics: {count} given, at most {max} allowed")]
    TooManyTopics {
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The maximum number of open streams is reached (503, retry later).
    #[error("too many open streams: the hub allows {max}")]
    Full {
        /// The limit.
        max: usize,
    },
    /// The hub is shutting down (503).
    #[error("the hub is shutting down")]
    ShuttingDown,
    /// History could not be read (503, or 500 for damage: `http::ApiError` decides).
    #[error(transparent)]
    History(#[from] HistoryError),
    /// A fault of the hub itself, such as a panic while compiling the selectors (500).
    #[error("internal error while subscribing: {0}")]
    Internal(String),
}

impl SubscribeError {
    /// Whether the cause passes by itself (a full hub, history briefly unreadable, a restart),
    /// so the client should come back. `http` answers an `EventSource` refused for such a cause
    /// with `200` and a `retry:` field instead of an error status, which a browser never retries.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Full { .. } | Self::ShuttingDown => true,
            Self::History(error) => error.will_pass(),
            Self::NoTopics | Self::BlankTopic | Self::TooManyTopics { .. } | Self::Internal(_) => {
                false
            }
        }
    }

    /// How long a client refused for a transient cause should wait before it comes back, at
    /// least: a full hub frees places as streams end (seconds), the other causes pass sooner.
    pub fn retry_after(&self) -> std::time::Duration {
        match self {
            Self::Full { .. } => std::time::Duration::from_secs(5),
            _ => std::time::Duration::from_secs(1),
        }
    }
}

/// Why the hub cannot take publishes now: `/readyz` answers `503` with it.
#[derive(Debug, Error)]
pub enum NotReady {
    /// Shutdown has begun.
    #[error("shutting down")]
    ShuttingDown,
    /// The history store (or the shared log) does not answer.
    #[error(transparent)]
    History(#[from] HistoryError),
}
