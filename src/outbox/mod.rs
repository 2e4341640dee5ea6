//! The transactional outbox relay: an application writes its updates as rows of a PostgreSQL
//! table in the same transaction as its own data, and the relay publishes each committed row to
//! the hub, once, in commit order, then deletes it (`ssehub serve --outbox postgres://…`).
//!
//! - [`table`]: the table's name, checked and quoted, and the relay's SQL; the DDL is
//!   `deploy/postgres/outbox.sql` (columns, the `xid` order key, the `NOTIFY` trigger).
//! - [`claim`]: which rows may be taken, and in which order (why a sequence is not enough).
//! - [`wakeup`]: `LISTEN/NOTIFY` with a polling fallback.
//! - [`relay`]: the loop (leader lock, publish, delete after the acknowledgement, reconnects).
//! - [`error`]: the relay's errors, [`OutboxError`].
//!
//! ```no_run
//! # async fn example(hub: ssehub::Hub) -> Result<(), ssehub::outbox::OutboxError> {
//! use ssehub::outbox::{OutboxRelay, OutboxSettings};
//! use tokio_util::sync::CancellationToken;
//!
//! let settings = OutboxSettings::new("postgres://app@127.0.0.1/app", "ssehub_outbox")?;
//! let shutdown = CancellationToken::new();
//! tokio::spawn(OutboxRelay::new(settings, hub).run(shutdown.child_token()));
//! # Ok(()) }
//! ```

pub mod claim;
pub mod error;
pub mod relay;
pub mod table;
pub mod wakeup;

pub use error::OutboxError;
pub use relay::{OutboxRelay, OutboxSettings};
pub use table::OutboxTable;
pub use wakeup::Wakeup;
