//! Retention of the durable history: what to keep ([`Retention`]) and dropping the oldest
//! events beyond it, inside the write transaction of an append (or of the writer's periodic
//! trim), a bounded number at a time so that it never stalls a publish for long.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{ReadableTable, WriteTransaction};

use super::file::{State, EVENTS};
use super::keys::IdTables;
use crate::history::record::decode_header;
use crate::history::{Damage, HistoryError};

/// Most old events one transaction removes, so that retention never stalls a publish for long.
const TRIM_BUDGET: usize = 2048;

/// How much history to keep. Whichever limit is reached first drops the oldest events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Most events kept (0: no limit).
    pub max_events: u64,
    /// Oldest event kept (`None`: no limit).
    pub max_age: Option<Duration>,
    /// Most bytes of records kept (`None`: no limit). This counts the stored records; the file
    /// itself reuses freed pages and does not shrink.
    pub max_bytes: Option<u64>,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_events: 100_000,
            max_age: None,
            max_bytes: Some(1 << 30),
        }
    }
}

/// The time records are stamped with, in milliseconds since the Unix epoch.
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Retention {
    /// Drops the oldest events while a limit is exceeded, at most [`TRIM_BUDGET`]; returns how
    /// many it dropped. `state` follows, and must be saved in the same transaction.
    ///
    /// # Errors
    /// [`HistoryError::Store`] when the file cannot be read or written;
    /// [`HistoryError::Damaged`] when the oldest record does not decode.
    pub(super) fn trim_in(
        &self,
        txn: &WriteTransaction,
        state: &mut State,
        now: u64,
    ) -> Result<usize, HistoryError> {
        let mut table = txn.open_table(EVENTS)?;
        let mut ids = IdTables::open(txn)?;
        let mut removed = 0;
        while removed < TRIM_BUDGET {
            let count = state.next_seq - state.first_seq;
            if count == 0 {
                break;
            }
            let Some((seq, record)) = table.first()?.map(|(k, v)| (k.value(), v.value().to_vec()))
            else {
                break;
            };
            let header = decode_header(&record).map_err(|error| Damage::Event { seq, error })?;
            let over_count = self.max_events > 0 && count > self.max_events;
            let over_bytes = self.max_bytes.is_some_and(|max| state.bytes > max);
            let over_age = self.max_age.is_some_and(|age| {
                now.saturating_sub(header.stored_at_ms) > age.as_millis() as u64
            });
            if !(over_count || over_bytes || over_age) {
                break;
            }
            table.remove(seq)?;
            ids.forget(header.id, seq)?;
            state.first_seq = seq + 1;
            state.bytes = state.bytes.saturating_sub(record.len() as u64);
            state.last_dropped_id = Some(header.id.to_owned());
            removed += 1;
        }
        Ok(removed)
    }
}
