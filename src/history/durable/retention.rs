//! Retention of the durable history: what to keep ([`Retention`]) and dropping the oldest
//! events beyond it, inside the write transaction of an append (or of the writer's periodic
//! trim), a bounded number at a time so that it never stalls a publish for long. Also the file
//! side of retention per topic ([`drop_ruled`]: removing the events the rules let go, chosen by
//! `topic_retention.rs`), and the *frontier*: the oldest sequence number the global limits did
//! not drop, kept in `meta` so that a page read knows, in its own snapshot, whether a hole
//! before its first event is a loss (global retention) or the rules' doing (not a loss).

use std::time::Duration;

use redb::{ReadableTable, WriteTransaction};

use super::file::{State, EVENTS, META};
use super::keys::IdTables;
use crate::history::record::decode_header;
use crate::history::{Damage, HistoryError};

/// Most old events one transaction removes, so that retention never stalls a publish for long.
pub(super) const TRIM_BUDGET: usize = 2048;
/// The `meta` key of the frontier: events below it were dropped by the global limits.
const FRONTIER: &str = "first_seq";

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

/// The time records are stamped with (one clock for every store: `record.rs`).
pub(super) use crate::history::record::now_ms;

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
            // Holes left by retention per topic are not events.
            let count = (state.next_seq - state.first_seq).saturating_sub(state.rule_dropped);
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
            // The holes below `seq` leave the kept range with it.
            state.rule_dropped = state
                .rule_dropped
                .saturating_sub(seq.saturating_sub(state.first_seq));
            state.first_seq = seq + 1;
            state.bytes = state.bytes.saturating_sub(record.len() as u64);
            state.last_dropped_id = Some(header.id.to_owned());
            removed += 1;
        }
        if removed > 0 {
            save_frontier(txn, state.first_seq)?;
        }
        Ok(removed)
    }
}

/// Records the frontier (see the module doc), in the transaction that moved it.
fn save_frontier(txn: &WriteTransaction, first_seq: u64) -> Result<(), HistoryError> {
    txn.open_table(META)?
        .insert(FRONTIER, first_seq.to_be_bytes().as_slice())?;
    Ok(())
}

/// The frontier as a snapshot holds it; `None` in a file where nothing was ever dropped by this
/// version (its sequence numbers then have no holes).
pub(super) fn read_frontier(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<u64>, HistoryError> {
    Ok(meta
        .get(FRONTIER)?
        .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
        .map(u64::from_be_bytes))
}

/// Removes the events `seqs` that retention per topic let go (those still there), with their
/// ids; returns the `(seq, id)` of each one removed. `state` follows, and must be saved in the
/// same transaction.
///
/// # Errors
/// [`HistoryError::Store`] when the file cannot be read or written;
/// [`HistoryError::Damaged`] when a record does not decode.
pub(super) fn drop_ruled(
    txn: &WriteTransaction,
    state: &mut State,
    seqs: &[u64],
) -> Result<Vec<(u64, String)>, HistoryError> {
    let mut table = txn.open_table(EVENTS)?;
    let mut ids = IdTables::open(txn)?;
    let mut removed = Vec::with_capacity(seqs.len());
    for &seq in seqs {
        let Some(record) = table.remove(seq)?.map(|v| v.value().to_vec()) else {
            continue; // the global limits were first
        };
        let header = decode_header(&record).map_err(|error| Damage::Event { seq, error })?;
        ids.forget(header.id, seq)?;
        state.bytes = state.bytes.saturating_sub(record.len() as u64);
        if seq >= state.first_seq {
            state.rule_dropped += 1;
        }
        removed.push((seq, header.id.to_owned()));
    }
    drop((table, ids));
    // Written even when the global limits never dropped anything: from now on the file has
    // holes, and page reads must tell them from losses.
    save_frontier(txn, state.first_seq)?;
    Ok(removed)
}
