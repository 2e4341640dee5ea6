//! The durable history's file: its redb tables, the writer's [`State`] as the `meta`
//! table keeps it, and opening a file (redb's integrity check, our format marker, the state,
//! the newest ids). Appending, reading and reopening are `durable.rs`'s; dropping old events is
//! `retention.rs`'s.
//!
//! What opening reports: a file in use by another process or an I/O error is
//! [`HistoryError::Store`] or [`HistoryError::Io`] (it may pass); a file that does not decode is
//! [`HistoryError::DamagedFile`], with how to recover.

use std::path::Path;
use std::sync::Arc;

use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};

use super::RecentIds;
use super::RECENT_IDS;
use crate::history::record::{decode_header, decode_record, FORMAT};
use crate::history::{Damage, HistoryError};

/// Sequence number → record (`record.rs`).
pub(super) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Event id → sequence number of its earliest kept occurrence (draft-dunglas-mercure-08: a
/// `Last-Event-ID` naming a reused id resumes after its earliest occurrence).
pub(super) const IDS: TableDefinition<&str, u64> = TableDefinition::new("ids");
/// Reused event id → sequence number of its newest occurrence (what a retry is compared with).
pub(super) const IDS_LAST: TableDefinition<&str, u64> = TableDefinition::new("ids_last");
/// `Idempotency-Key` → `[expires_ms][seq][fingerprint][id]` of the update it was first used for.
pub(super) const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
/// (expiry in ms, key) → (): the keys in the order they expire.
pub(super) const KEY_EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("key_expiry");
/// `format`, `next_seq`, `bytes` (sum of record sizes) and `last_dropped_id`.
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// What the writer tracks between transactions (the file holds the same, committed).
#[derive(Debug, Clone, Default)]
pub(super) struct State {
    pub(super) next_seq: u64,
    pub(super) first_seq: u64,
    pub(super) bytes: u64,
    pub(super) last_dropped_id: Option<String>,
    /// Events that retention per topic dropped with `first_seq <= seq < next_seq`: the holes
    /// between kept events, so that `next_seq - first_seq - rule_dropped` is what is kept.
    pub(super) rule_dropped: u64,
}

/// An error met while opening `path`: damage becomes [`HistoryError::DamagedFile`], which says
/// how to recover; anything else stays as it is.
pub(super) fn at_open(path: &Path, error: HistoryError) -> HistoryError {
    match error {
        HistoryError::Damaged(damage) => HistoryError::DamagedFile {
            path: path.to_owned(),
            damage,
        },
        other => other,
    }
}

/// Opens (or creates) the file, checks it, creates missing tables and reads the state.
pub(super) fn open_file(path: &Path) -> Result<(Database, State), HistoryError> {
    let mut db = Database::create(path).map_err(|error| match error {
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() != std::io::ErrorKind::InvalidData =>
        {
            HistoryError::Io {
                path: path.to_owned(),
                source: Arc::new(io),
            }
        }
        // In use by another process: it may pass.
        redb::DatabaseError::DatabaseAlreadyOpen => redb::DatabaseError::DatabaseAlreadyOpen.into(),
        other => at_open(path, Damage::File(Arc::new(other.into())).into()),
    })?;
    // redb recovers from crashes by itself; this catches files changed or damaged behind
    // its back (checksums of every page).
    match db.check_integrity() {
        Ok(true) => {}
        Ok(false) => tracing::warn!(path = %path.display(), "history file was repaired"),
        Err(error) => return Err(at_open(path, Damage::File(Arc::new(error.into())).into())),
    }
    let state = init(&db).map_err(|error| at_open(path, error))?;
    Ok((db, state))
}

/// Creates the tables if missing and reads the state, in one write transaction.
fn init(db: &Database) -> Result<State, HistoryError> {
    let txn = db.begin_write()?;
    let state = load_state(&txn)?;
    txn.commit()?;
    Ok(state)
}

/// The ids of the newest [`RECENT_IDS`] events.
pub(super) fn load_recent_ids(db: &Database) -> Result<RecentIds, HistoryError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(EVENTS)?;
    let mut newest = Vec::with_capacity(RECENT_IDS);
    for entry in table.iter()?.rev() {
        let (key, value) = entry?;
        let seq = key.value();
        let header = decode_header(value.value()).map_err(|error| Damage::Event { seq, error })?;
        newest.push((seq, header.id.to_owned()));
        if newest.len() == RECENT_IDS {
            break;
        }
    }
    let mut recent = RecentIds::default();
    for (seq, id) in newest.iter().rev() {
        recent.push(*seq, id);
    }
    Ok(recent)
}

/// Creates the tables if missing and reads the writer's state, checking the format.
fn load_state(txn: &WriteTransaction) -> Result<State, HistoryError> {
    let mut meta = txn.open_table(META)?;
    let events = txn.open_table(EVENTS)?;
    txn.open_table(IDS)?;
    txn.open_table(IDS_LAST)?;
    txn.open_table(KEYS)?;
    txn.open_table(KEY_EXPIRY)?;
    let format = meta.get("format")?.map(|v| v.value().to_vec());
    match format.as_deref() {
        None => {
            meta.insert("format", [FORMAT].as_slice())?;
        }
        Some([FORMAT]) => {}
        Some(other) => {
            return Err(Damage::UnknownFormat {
                found: other.to_vec(),
            }
            .into())
        }
    }
    let read_u64 = |key: &'static str| -> Result<Option<u64>, HistoryError> {
        match meta.get(key)? {
            None => Ok(None),
            Some(v) => v
                .value()
                .try_into()
                .map(|b: [u8; 8]| Some(u64::from_be_bytes(b)))
                .map_err(|_| Damage::Meta { key }.into()),
        }
    };
    let last_seq = events.last()?.map(|(k, _)| k.value());
    let next_seq = read_u64("next_seq")?
        .unwrap_or(1)
        .max(last_seq.map_or(1, |s| s + 1));
    let first_seq = events.first()?.map_or(next_seq, |(k, _)| k.value());
    // The newest record must decode: a cheap check on top of redb's checksums.
    if let Some((key, value)) = events.last()? {
        let seq = key.value();
        decode_record(seq, value.value()).map_err(|error| Damage::Event { seq, error })?;
    }
    let last_dropped_id = meta
        .get("last_dropped_id")?
        .map(|v| String::from_utf8_lossy(v.value()).into_owned());
    // Holes between the oldest and the newest kept event (retention per topic).
    let rule_dropped = (next_seq - first_seq).saturating_sub(events.len()?);
    Ok(State {
        next_seq,
        first_seq,
        bytes: read_u64("bytes")?.unwrap_or(0),
        last_dropped_id,
        rule_dropped,
    })
}

/// Writes the state into `meta`, in the transaction that changed it.
pub(super) fn save_state(txn: &WriteTransaction, state: &State) -> Result<(), HistoryError> {
    let mut meta = txn.open_table(META)?;
    meta.insert("next_seq", state.next_seq.to_be_bytes().as_slice())?;
    meta.insert("bytes", state.bytes.to_be_bytes().as_slice())?;
    if let Some(id) = &state.last_dropped_id {
        meta.insert("last_dropped_id", id.as_bytes())?;
    }
    Ok(())
}
