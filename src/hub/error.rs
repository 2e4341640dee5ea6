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
}

/// Why a subscription was refused.
#[derive(Debug, Error)]
pub enum SubscribeError {
    /// No `topic` selector (400).
    #[error("missing topic: subscribe with at least one `topic` query parameter")]
    NoTopics,
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
