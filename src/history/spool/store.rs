//! The spool's file: `spool.redb` in the data directory, the publishes this instance took while
//! Redis was away, oldest first, until the forwarder has put them into the shared log.
//!
//! Tables: `spooled`: spool sequence number (u64) → `[key_len u16][key][window_ms u64][record]`
//! (the record as `record.rs` encodes it; `key_len` 0 for a publish without an
//! `Idempotency-Key`); `spool_keys`: key → `[fingerprint 16][id]`, so that a keyed retry taken
//! while spooling is answered with the original id. Every append is one transaction committed
//! with an fsync before any publisher of the batch is acknowledged, like the durable history's.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::history::record::{decode_record, encode_record};
use crate::history::{Appended, Damage, HistoryError, KeyClaim, StoredEvent};
use crate::idempotency::{Fingerprint, IdempotencyKey};

/// The file inside the data directory.
pub const FILE_NAME: &str = "spool.redb";

const SPOOLED: TableDefinition<u64, &[u8]> = TableDefinition::new("spooled");
const SPOOL_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("spool_keys");

/// One spooled publish.
#[derive(Debug, Clone)]
pub(crate) struct Spooled {
    /// Its place in the spool.
    pub(crate) seq: u64,
    /// The event as it will be stored (its sequence number is the spool's).
    pub(crate) event: StoredEvent,
    /// Its `Idempotency-Key`, passed on to the shared log.
    pub(crate) key: Option<KeyClaim>,
    /// When it was spooled (ms since the epoch).
    pub(crate) spooled_at_ms: u64,
}

/// The spool file.
pub(crate) struct SpoolFile {
    path: PathBuf,
    db: Database,
    /// Events in the spool.
    len: AtomicUsize,
    /// The next sequence number.
    next_seq: AtomicU64,
    /// When the oldest spooled event was spooled (0: none).
    oldest_ms: AtomicU64,
}

impl std::fmt::Debug for SpoolFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolFile")
            .field("path", &self.path)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

fn io_error(path: &Path, source: std::io::Error) -> HistoryError {
    HistoryError::Io {
        path: path.to_owned(),
        source: Arc::new(source),
    }
}

fn encode_spooled(event: &StoredEvent, key: Option<&KeyClaim>, now: u64) -> Vec<u8> {
    let record = encode_record(event, now);
    let key_bytes = key.map_or(&[][..], |claim| claim.key.as_str().as_bytes());
    let window = key.map_or(0, |claim| claim.window.as_millis() as u64);
    let mut out = Vec::with_capacity(10 + key_bytes.len() + record.len());
    // Keys are at most 255 bytes (`idempotency::MAX_KEY_BYTES`).
    out.extend_from_slice(&(key_bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(key_bytes);
    out.extend_from_slice(&window.to_be_bytes());
    out.extend_from_slice(&record);
    out
}

fn decode_spooled(seq: u64, bytes: &[u8]) -> Result<Spooled, Damage> {
    let damaged = || Damage::Spooled { seq };
    let key_len = usize::from(u16::from_be_bytes(
        bytes
            .get(..2)
            .ok_or_else(damaged)?
            .try_into()
            .map_err(|_| damaged())?,
    ));
    let key = bytes.get(2..2 + key_len).ok_or_else(damaged)?;
    let window = bytes.get(2 + key_len..10 + key_len).ok_or_else(damaged)?;
    let window = u64::from_be_bytes(window.try_into().map_err(|_| damaged())?);
    let record = bytes.get(10 + key_len..).ok_or_else(damaged)?;
    let event = decode_record(seq, record).map_err(|error| Damage::Event { seq, error })?;
    let spooled_at_ms = crate::history::record::decode_header(record)
        .map(|h| h.stored_at_ms)
        .map_err(|error| Damage::Event { seq, error })?;
    let key = match key {
        [] => None,
        key => Some(KeyClaim {
            key: IdempotencyKey::parse(key).map_err(|_| damaged())?,
            window: Duration::from_millis(window),
        }),
    };
    Ok(Spooled {
        seq,
        event,
        key,
        spooled_at_ms,
    })
}

impl SpoolFile {
    /// Opens (or creates) `spool.redb` in `dir`.
    ///
    /// # Errors
    /// [`HistoryError::Io`] when the directory or file cannot be made, [`HistoryError::Store`]
    /// when redb cannot open it, [`HistoryError::Damaged`] when its oldest entry does not decode.
    pub(crate) fn open(dir: &Path) -> Result<Self, HistoryError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|error| match error {
            redb::DatabaseError::Storage(redb::StorageError::Io(io)) => io_error(&path, io),
            // Two instances on one host with the same data directory.
            redb::DatabaseError::DatabaseAlreadyOpen => io_error(
                &path,
                std::io::Error::other(
                    "the spool is in use by another ssehub process: give each instance its own --data-dir",
                ),
            ),
            other => HistoryError::from(other),
        })?;
        let txn = db.begin_write()?;
        txn.open_table(SPOOLED)?;
        txn.open_table(SPOOL_KEYS)?;
        txn.commit()?;
        let (len, next_seq, oldest_ms) = {
            let txn = db.begin_read()?;
            let table = txn.open_table(SPOOLED)?;
            let len = usize::try_from(table.len()?).unwrap_or(usize::MAX);
            let next_seq = table.last()?.map_or(1, |(k, _)| k.value() + 1);
            let oldest_ms = match table.first()? {
                Some((k, v)) => decode_spooled(k.value(), v.value())?.spooled_at_ms,
                None => 0,
            };
            (len, next_seq, oldest_ms)
        };
        Ok(Self {
            path,
            db,
            len: AtomicUsize::new(len),
            next_seq: AtomicU64::new(next_seq),
            oldest_ms: AtomicU64::new(oldest_ms),
        })
    }

    /// Events waiting in the spool.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// When the oldest waiting event was spooled (ms since the epoch), if any waits.
    pub(crate) fn oldest_ms(&self) -> Option<u64> {
        Some(self.oldest_ms.load(Ordering::Acquire)).filter(|_| self.len() > 0)
    }

    /// Spools a batch in one transaction (fsync) and says what each publish became: a keyed
    /// retry of a spooled publish is answered with its id; everything else is spooled. Only the
    /// hub's writer calls this.
    ///
    /// # Errors
    /// [`HistoryError::SpoolFull`] when the batch does not fit under `max_events` (nothing is
    /// spooled); [`HistoryError::Store`] when the file cannot be written.
    pub(crate) fn append(
        &self,
        batch: Vec<(StoredEvent, Option<KeyClaim>)>,
        max_events: usize,
        now: u64,
    ) -> Result<Vec<Appended>, HistoryError> {
        if self.len() + batch.len() > max_events {
            return Err(HistoryError::SpoolFull { max: max_events });
        }
        let txn = self.db.begin_write()?;
        let mut seq = self.next_seq.load(Ordering::Acquire);
        let mut out = Vec::with_capacity(batch.len());
        let mut added = 0;
        {
            let mut spooled = txn.open_table(SPOOLED)?;
            let mut keys = txn.open_table(SPOOL_KEYS)?;
            for (event, key) in batch {
                if let Some(claim) = &key {
                    let fingerprint = Fingerprint::of(&event);
                    let held = keys.get(claim.key.as_str())?.map(|v| v.value().to_vec());
                    if let Some(held) = held.filter(|h| h.len() >= 16) {
                        let (print, id) = held.split_at(16);
                        let id = String::from_utf8_lossy(id).into_owned();
                        out.push(if print == fingerprint.0 {
                            Appended::Retry { id, seq: 0 }
                        } else {
                            Appended::KeyReused { id }
                        });
                        continue;
                    }
                    let mut value = fingerprint.0.to_vec();
                    value.extend_from_slice(event.id.as_bytes());
                    keys.insert(claim.key.as_str(), value.as_slice())?;
                }
                let bytes = encode_spooled(&event, key.as_ref(), now);
                spooled.insert(seq, bytes.as_slice())?;
                out.push(Appended::Spooled {
                    id: event.id.clone(),
                });
                seq += 1;
                added += 1;
            }
        }
        txn.commit()?;
        if added > 0 && self.len() == 0 {
            self.oldest_ms.store(now, Ordering::Release);
        }
        self.next_seq.store(seq, Ordering::Release);
        self.len.fetch_add(added, Ordering::AcqRel);
        Ok(out)
    }

    /// Up to `max` of the oldest spooled publishes.
    ///
    /// # Errors
    /// [`HistoryError::Store`], or [`HistoryError::Damaged`] for an entry that does not decode.
    pub(crate) fn oldest(&self, max: usize) -> Result<Vec<Spooled>, HistoryError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SPOOLED)?;
        let mut out = Vec::with_capacity(max.min(self.len()));
        for entry in table.iter()?.take(max) {
            let (key, value) = entry?;
            out.push(decode_spooled(key.value(), value.value())?);
        }
        Ok(out)
    }

    /// Removes `forwarded` (the oldest spooled publishes, which the shared log holds now), with
    /// their keys.
    ///
    /// # Errors
    /// [`HistoryError::Store`].
    pub(crate) fn remove_forwarded(&self, forwarded: &[Spooled]) -> Result<(), HistoryError> {
        let Some(last) = forwarded.last() else {
            return Ok(());
        };
        let txn = self.db.begin_write()?;
        let oldest_left;
        {
            let mut spooled = txn.open_table(SPOOLED)?;
            let mut keys = txn.open_table(SPOOL_KEYS)?;
            for entry in forwarded {
                spooled.remove(entry.seq)?;
                if let Some(claim) = &entry.key {
                    keys.remove(claim.key.as_str())?;
                }
            }
            debug_assert!(spooled.first()?.is_none_or(|(k, _)| k.value() > last.seq));
            oldest_left = match spooled.first()? {
                Some((k, v)) => decode_spooled(k.value(), v.value())
                    .map(|s| s.spooled_at_ms)
                    .unwrap_or(0),
                None => 0,
            };
        }
        txn.commit()?;
        self.oldest_ms.store(oldest_left, Ordering::Release);
        self.len.fetch_sub(forwarded.len(), Ordering::AcqRel);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    fn keyed(key: &str, data: &str) -> (StoredEvent, Option<KeyClaim>) {
        (
            StoredEvent::new(0, Event::new("t", data)),
            Some(KeyClaim {
                key: IdempotencyKey::parse(key.as_bytes()).expect("key"),
                window: Duration::from_secs(60),
            }),
        )
    }

    #[test]
    fn spooled_publishes_survive_reopening_in_order_and_leave_once_forwarded() {
        let dir = tempfile::tempdir().expect("dir");
        let ids = {
            let spool = SpoolFile::open(dir.path()).expect("open");
            let batch = vec![
                (StoredEvent::new(0, Event::new("t", "a")), None),
                keyed("k", "b"),
                keyed("k", "b"),
                keyed("k", "other"),
            ];
            let out = spool.append(batch, 10, 1_000).expect("append");
            let Appended::Spooled { id: b } = &out[1] else {
                panic!("{out:?}")
            };
            assert!(
                matches!(&out[2], Appended::Retry { id, .. } if id == b),
                "{out:?}"
            );
            assert!(
                matches!(&out[3], Appended::KeyReused { id } if id == b),
                "{out:?}"
            );
            assert_eq!(spool.len(), 2);
            assert_eq!(spool.oldest_ms(), Some(1_000));
            let full = spool.append(vec![keyed("k2", "c"); 9], 10, 1_001);
            assert!(
                matches!(full, Err(HistoryError::SpoolFull { max: 10 })),
                "{full:?}"
            );
            assert_eq!(spool.len(), 2, "a full spool takes nothing of the batch");
            out
        };
        let spool = SpoolFile::open(dir.path()).expect("reopen");
        assert_eq!(spool.len(), 2);
        let oldest = spool.oldest(10).expect("read");
        assert_eq!(oldest.len(), 2);
        assert_eq!(
            oldest[0].event.frame,
            StoredEvent::new(
                0,
                Event {
                    id: oldest[0].event.id.clone(),
                    ..Event::new("t", "a")
                }
            )
            .frame
        );
        assert!(matches!(&ids[1], Appended::Spooled { id } if *id == oldest[1].event.id));
        assert_eq!(oldest[1].key.as_ref().map(|c| c.key.as_str()), Some("k"));
        spool.remove_forwarded(&oldest[..1]).expect("remove");
        assert_eq!(spool.len(), 1);
        spool.remove_forwarded(&oldest[1..]).expect("remove");
        assert_eq!((spool.len(), spool.oldest_ms()), (0, None));
        // The key left with its publish.
        let again = spool
            .append(vec![keyed("k", "b")], 10, 2_000)
            .expect("append");
        assert!(matches!(again[0], Appended::Spooled { .. }), "{again:?}");
    }
}
