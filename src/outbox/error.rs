//! [`OutboxError`]: why the relay stopped a session (it reconnects after a backoff) or refused
//! its settings.

use thiserror::Error;

use crate::hub::PublishError;

/// Why the outbox relay could not go on (or start).
#[derive(Debug, Error)]
pub enum OutboxError {
    /// `--outbox-table` is not a table name the relay can quote safely.
    #[error(
        "invalid outbox table name `{0}`: use letters, digits and `_` (not first), optionally `schema.table`, at most 63 bytes each"
    )]
    TableName(String),
    /// The database refused a statement, or the connection broke.
    #[error("outbox database: {0}")]
    Database(#[from] tokio_postgres::Error),
    /// The hub did not store a row for a reason that may pass (its history is away, it is
    /// shutting down): the row stays in the table and is tried again.
    #[error("publishing an outbox row: {0}")]
    Publish(#[source] PublishError),
}
