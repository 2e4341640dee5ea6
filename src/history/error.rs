//! Why a history call failed: [`HistoryError`], each variant with the error it comes from
//! (redb, Redis, I/O, a record that does not decode), and [`Sources`], which renders that chain
//! for a log line.
//!
//! The `Display` of a variant is one line of our own that names what failed (it reaches HTTP
//! bodies and `/readyz`); the underlying error is its [`std::error::Error::source`], never
//! repeated in that line. `http::ApiError` picks the status of each variant, in one place, and
//! logs the sources there.

use std::error::Error as StdError;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;

use super::record::{RecordError, FORMAT};

/// Errors of a history store.
///
/// `Clone`, so that one failed read can answer every stream that shared it
/// ([`super::SharedReads`]) and one failed append every publisher of the batch: the sources that
/// are not `Clone` themselves are behind an `Arc`.
#[derive(Debug, Clone, Error)]
pub enum HistoryError {
    /// The history file cannot be read or written now (I/O error, disk full, locked by another
    /// process): publishes fail with 503, and the store reopens the file on the next call.
    #[error("the history file cannot be read or written")]
    Store(#[source] Arc<redb::Error>),
    /// Redis does not answer, or refused a command: publishes fail with 503 until it is back.
    #[error("{}", redis_problem(&.0 .0))]
    Redis(#[source] RedisSource),
    /// A file or directory of the store cannot be created or opened (permissions, a missing
    /// disk).
    #[error("cannot use {}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// Stored data that does not decode: a record changed behind the store's back, or a Redis
    /// stream entry that ssehub did not write. A read of it fails with 500; nothing retries it.
    #[error(transparent)]
    Damaged(#[from] Damage),
    /// The history file does not open as a history: start-up stops with this, and how to
    /// recover.
    #[error(
        "the history file {} is damaged. To recover: stop ssehub and move the file aside \
         (ssehub then starts with an empty history, and clients resuming from older ids are \
         told `Last-Event-ID: earliest`), or restore it from a backup",
        .path.display()
    )]
    DamagedFile {
        /// The file.
        path: PathBuf,
        /// What does not decode.
        #[source]
        damage: Damage,
    },
    /// The durable store is reopening its file after an I/O error (redb refuses further use of
    /// a handle that saw one); the next call tries again.
    #[error("the history file is being reopened after an I/O error")]
    Reopening,
    /// The shared log's feed is not reading the Redis stream, so this instance would not
    /// deliver what it publishes (readiness).
    #[error("the feed is not reading the Redis stream")]
    FeedNotReading,
    /// Redis is away and the spool holds as many publishes as it may (`--spool-max-events`).
    #[error("Redis is unreachable and the spool is full ({max} publishes wait to be forwarded)")]
    SpoolFull {
        /// The spool's limit.
        max: usize,
    },
    /// A call on the blocking thread pool panicked (a fault of the hub: 500), or the runtime
    /// shut down under it.
    #[error(
        "a history call on the blocking thread pool {}",
        if *.panicked { "panicked" } else { "was cancelled" }
    )]
    Task {
        /// Panicked, rather than cancelled.
        panicked: bool,
    },
}

/// One line for a Redis failure, by kind: the details are the source.
fn redis_problem(error: &redis::RedisError) -> &'static str {
    if error.is_io_error() || error.is_timeout() || error.is_connection_dropped() {
        "Redis does not answer"
    } else if error.kind() == redis::ErrorKind::InvalidClientConfig {
        "the Redis URL or connection settings are invalid"
    } else {
        "Redis refused the command"
    }
}

impl HistoryError {
    /// Whether the failure may pass by itself (the store, Redis or the disk may come back), so
    /// that a retry can succeed: `503` for publishes, and a `retry:` for a browser's stream. A
    /// damaged record or a failure of the hub itself gives the same answer again (`500`). One
    /// place, no wildcard: a new variant must be placed.
    pub fn will_pass(&self) -> bool {
        match self {
            Self::Store(_)
            | Self::Redis(_)
            | Self::Io { .. }
            | Self::Reopening
            | Self::FeedNotReading
            | Self::SpoolFull { .. } => true,
            Self::Damaged(_) | Self::DamagedFile { .. } | Self::Task { .. } => false,
        }
    }
}

impl From<redis::RedisError> for HistoryError {
    fn from(error: redis::RedisError) -> Self {
        Self::Redis(RedisSource(error))
    }
}

/// A [`redis::RedisError`] as a source. redis displays an I/O error as that error's own text
/// *and* returns it as its source, so a chain printed level by level (`anyhow`'s `{:#}` at
/// start-up) would say it twice: this source skips a level that repeats it.
#[derive(Debug, Clone)]
pub struct RedisSource(pub redis::RedisError);

impl fmt::Display for RedisSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl StdError for RedisSource {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        let inner = self.0.source()?;
        if inner.to_string() == self.0.to_string() {
            inner.source()
        } else {
            Some(inner)
        }
    }
}

impl From<redb::Error> for HistoryError {
    /// Corruption is [`Damage::File`]; anything else (I/O above all) is [`HistoryError::Store`].
    /// redb reports a file that is not a database as an I/O error of kind `InvalidData`, and a
    /// file shorter than its own header says fails reads with `UnexpectedEof`: damage too.
    fn from(error: redb::Error) -> Self {
        let corrupted = match &error {
            redb::Error::Corrupted(_) => true,
            redb::Error::Io(io) => matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        };
        if corrupted {
            Self::Damaged(Damage::File(Arc::new(error)))
        } else {
            Self::Store(Arc::new(error))
        }
    }
}

/// redb has one error type per kind of call; each converts into `redb::Error`.
macro_rules! from_redb {
    ($($kind:ty),*) => {$(
        impl From<$kind> for HistoryError {
            fn from(error: $kind) -> Self {
                redb::Error::from(error).into()
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// What does not decode, and where.
#[derive(Debug, Clone, Error)]
pub enum Damage {
    /// redb found the file's pages or structure corrupted.
    #[error("the history file is corrupted")]
    File(#[source] Arc<redb::Error>),
    /// The file's `format` marker is not one this ssehub reads.
    #[error("the history file has format {found:?}; this ssehub reads {FORMAT}")]
    UnknownFormat {
        /// The marker found.
        found: Vec<u8>,
    },
    /// A value of the `meta` table has the wrong length.
    #[error("the history file's meta `{key}` is not 8 bytes")]
    Meta {
        /// Its key.
        key: &'static str,
    },
    /// The record of an event in the history file.
    #[error("the stored record of event {seq} does not decode")]
    Event {
        /// The event's sequence number.
        seq: u64,
        /// Why.
        #[source]
        error: RecordError,
    },
    /// A Redis stream entry whose id does not fit a sequence number.
    #[error("Redis stream entry {entry} has an id out of range")]
    EntryId {
        /// The entry id.
        entry: String,
    },
    /// A spooled publish that does not decode.
    #[error("spooled publish {seq} does not decode")]
    Spooled {
        /// Its place in the spool.
        seq: u64,
    },
    /// The publish script answered in a shape this ssehub does not know (another version's
    /// script under the same name?).
    #[error("the Redis publish script gave an answer of unknown shape")]
    ScriptReply,
    /// A Redis stream entry without the record field.
    #[error("Redis stream entry {entry} holds no record")]
    EntryWithoutRecord {
        /// The entry id.
        entry: String,
    },
    /// The record of a Redis stream entry.
    #[error("the record of Redis stream entry {entry} does not decode")]
    EntryRecord {
        /// The entry id.
        entry: String,
        /// Why.
        #[source]
        error: RecordError,
    },
}

/// Renders an error's chain for a log line: `a: b: c`, skipping a source that says only what
/// the one before it said (redis' errors display their own source).
pub struct Sources<'a>(Option<&'a (dyn StdError + 'static)>);

impl<'a> Sources<'a> {
    /// The whole chain: the error, then its sources.
    pub fn of(error: &'a (dyn StdError + 'static)) -> Self {
        Self(Some(error))
    }

    /// Only the sources, for an error whose own line is logged already.
    pub fn after(error: &'a (dyn StdError + 'static)) -> Self {
        Self(error.source())
    }
}

impl fmt::Display for Sources<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut next = self.0;
        let mut previous: Option<String> = None;
        while let Some(error) = next {
            let line = error.to_string();
            if previous.as_deref() != Some(line.as_str()) {
                if previous.is_some() {
                    f.write_str(": ")?;
                }
                f.write_str(&line)?;
                previous = Some(line);
            }
            next = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_render_the_chain_once_each() {
        let io = std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left");
        let error = HistoryError::Io {
            path: "/data".into(),
            source: Arc::new(io),
        };
        assert_eq!(error.to_string(), "cannot use /data");
        assert_eq!(
            Sources::of(&error).to_string(),
            "cannot use /data: no space left"
        );
        assert_eq!(Sources::after(&error).to_string(), "no space left");
        let redis = HistoryError::from(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        )));
        assert_eq!(
            Sources::of(&redis).to_string(),
            "Redis does not answer: refused",
            "redis repeats its source's line: said once"
        );
        // Level by level, as anyhow prints a chain at start-up.
        let mut levels = Vec::new();
        let mut next: Option<&(dyn StdError + 'static)> = Some(&redis);
        while let Some(error) = next {
            levels.push(error.to_string());
            next = error.source();
        }
        assert_eq!(levels, ["Redis does not answer", "refused"]);
    }

    #[test]
    fn corruption_reported_by_redb_is_damage_and_io_is_the_store() {
        let corrupted: HistoryError = redb::StorageError::Corrupted("bad page".into()).into();
        assert!(matches!(corrupted, HistoryError::Damaged(Damage::File(_))));
        let io = std::io::Error::new(std::io::ErrorKind::StorageFull, "full");
        let io: HistoryError = redb::StorageError::Io(io).into();
        assert!(matches!(io, HistoryError::Store(_)));
        assert_eq!(
            Sources::after(&io).to_string(),
            redb::Error::Io(std::io::Error::new(std::io::ErrorKind::StorageFull, "full"))
                .to_string()
        );
    }
}
