//! The durable history's memory of retried publishes, inside the writer's transaction: the
//! `Idempotency-Key`s seen within their window (tables `keys` and `key_expiry`), and the index
//! of ids (tables `ids` and `ids_last`) that finds an id already held with the same content.
//!
//! Keys are kept in the file, so a publisher whose answer was lost when the hub crashed, and
//! that retries after the restart, is still recognised. Expired keys are forgotten a bounded
//! number per transaction ([`FORGET_BUDGET`]), oldest first.

use redb::{ReadableTable, Table, WriteTransaction};

use super::file::{IDS, IDS_LAST, KEYS, KEY_EXPIRY};
use crate::history::record::decode_record;
use crate::history::{same_content, HistoryError, KeyClaim, KeyRecord, StoredEvent};
use crate::idempotency::IdempotencyKey;

/// Expired keys forgotten per transaction at most, so that a burst of expiries never makes one
/// commit long.
const FORGET_BUDGET: usize = 256;

/// The key tables, open in one write transaction.
pub(super) struct Keys<'txn> {
    keys: Table<'txn, &'static str, &'static [u8]>,
    expiry: Table<'txn, (u64, &'static str), ()>,
}

impl<'txn> Keys<'txn> {
    pub(super) fn open(txn: &'txn WriteTransaction) -> Result<Self, HistoryError> {
        Ok(Self {
            keys: txn.open_table(KEYS)?,
            expiry: txn.open_table(KEY_EXPIRY)?,
        })
    }

    /// The record of `key`, unless it expired by `now`.
    pub(super) fn get(
        &self,
        key: &IdempotencyKey,
        now: u64,
    ) -> Result<Option<KeyRecord>, HistoryError> {
        let Some(bytes) = self.keys.get(key.as_str())? else {
            return Ok(None);
        };
        Ok(KeyRecord::decode(bytes.value())
            .filter(|(_, expires)| *expires > now)
            .map(|(record, _)| record))
    }

    /// Remembers `claim`'s key for `record` until `now` plus its window.
    pub(super) fn remember(
        &mut self,
        claim: &KeyClaim,
        record: &KeyRecord,
        now: u64,
    ) -> Result<(), HistoryError> {
        let expires = now.saturating_add(claim.window.as_millis() as u64);
        let key = claim.key.as_str();
        if let Some(old) = self.keys.get(key)? {
            if let Some((_, old_expires)) = KeyRecord::decode(old.value()) {
                drop(old);
                self.expiry.remove((old_expires, key))?;
            }
        }
        self.keys.insert(key, record.encode(expires).as_slice())?;
        self.expiry.insert((expires, key), ())?;
        Ok(())
    }

    /// Forgets keys that expired by `now`, oldest first, at most [`FORGET_BUDGET`]; how many.
    pub(super) fn forget_expired(&mut self, now: u64) -> Result<usize, HistoryError> {
        let mut forgotten = 0;
        while forgotten < FORGET_BUDGET {
            let Some((expires, key)) = self.expiry.first()?.map(|(k, _)| {
                let (expires, key) = k.value();
                (expires, key.to_owned())
            }) else {
                break;
            };
            if expires > now {
                break;
            }
            self.expiry.remove((expires, key.as_str()))?;
            self.keys.remove(key.as_str())?;
            forgotten += 1;
        }
        Ok(forgotten)
    }
}

/// The tables that index ids: `ids` keeps the earliest occurrence of each id (where a
/// `Last-Event-ID` resumes), `ids_last` the newest occurrence of a reused id (what a retry is
/// compared with).
pub(super) struct IdTables<'txn> {
    pub(super) ids: Table<'txn, &'static str, u64>,
    pub(super) ids_last: Table<'txn, &'static str, u64>,
}

impl<'txn> IdTables<'txn> {
    pub(super) fn open(txn: &'txn WriteTransaction) -> Result<Self, HistoryError> {
        Ok(Self {
            ids: txn.open_table(IDS)?,
            ids_last: txn.open_table(IDS_LAST)?,
        })
    }

    /// The sequence number of the newest kept occurrence of `candidate`'s id when it holds
    /// the same content: `candidate` is a retry of it. A record that does not decode is not the
    /// same (the replay that reads it reports it, not this publish).
    pub(super) fn held_same(
        &self,
        events: &Table<'txn, u64, &'static [u8]>,
        first_seq: u64,
        candidate: &StoredEvent,
    ) -> Result<Option<u64>, HistoryError> {
        let id = candidate.id.as_str();
        let newest = match self.ids_last.get(id)? {
            Some(seq) => Some(seq.value()),
            None => self.ids.get(id)?.map(|seq| seq.value()),
        };
        let Some(seq) = newest.filter(|seq| *seq >= first_seq) else {
            return Ok(None);
        };
        let Some(record) = events.get(seq)? else {
            return Ok(None);
        };
        match decode_record(seq, record.value()) {
            Ok(held) => Ok(same_content(&held, candidate).then_some(seq)),
            Err(error) => {
                tracing::warn!(seq, %error, "a record with a retried id does not decode");
                Ok(None)
            }
        }
    }

    /// Indexes a new occurrence of `id` at `seq`.
    pub(super) fn index(&mut self, id: &str, seq: u64) -> Result<(), HistoryError> {
        if self.ids.get(id)?.is_some() {
            self.ids_last.insert(id, seq)?;
        } else {
            self.ids.insert(id, seq)?;
        }
        Ok(())
    }

    /// Forgets the occurrence of `id` at `seq` (retention dropped it). When it was the
    /// earliest and a newer one is kept, the newest stands for the earliest from now on
    /// (finding the next one would take a scan).
    pub(super) fn forget(&mut self, id: &str, seq: u64) -> Result<(), HistoryError> {
        let last = self.ids_last.get(id)?.map(|v| v.value());
        if last == Some(seq) {
            self.ids_last.remove(id)?;
        }
        if self.ids.get(id)?.map(|v| v.value()) == Some(seq) {
            match last.filter(|last| *last != seq) {
                Some(last) => {
                    self.ids.insert(id, last)?;
                }
                None => {
                    self.ids.remove(id)?;
                }
            }
        }
        Ok(())
    }
}
