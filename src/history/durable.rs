//! The durable history: an append-only log in one redb file, the default of `ssehub serve`.
//!
//! Why redb: the log is written at one end by one writer and read by key ranges (sequence
//! numbers) and point lookups (event ids). redb is a copy-on-write B-tree in a single file with
//! checksummed commit slots (a crash leaves the last committed state, no journal to replay), MVCC
//! readers that never block the writer, no background threads, and pure Rust.
//!
//! Layout (all in `history.redb` in the data directory; tables and opening in `file.rs`):
//! - `events`: sequence number (u64) → record (our own encoding, see `record.rs`): flags,
//!   store time, id, topics, and the encoded SSE frame;
//! - `ids`: event id → sequence number of its earliest kept occurrence, and `ids_last`: a
//!   reused id → its newest (what a retried publish is compared with);
//! - `keys` and `key_expiry`: the `Idempotency-Key`s seen within their window (`keys.rs`);
//! - `meta`: `format`, `next_seq`, `bytes` (sum of record sizes) and `last_dropped_id`.
//!
//! A retried publish (its key seen, or its id held with the same content) is recognised in the
//! transaction that would have stored it, and answered with the original id instead.
//!
//! Durability: every append is one write transaction committed with `Durability::Immediate`
//! (fsync) before any publisher of the batch is acknowledged ([`SyncPolicy::Batch`], group
//! commit: the writer takes every publish queued meanwhile), or one transaction per event
//! ([`SyncPolicy::Always`]). Retention (`retention.rs`) runs inside the same transactions, a
//! bounded number of old events at a time, so it never pauses publishing for long, and a reader
//! never holds a transaction between two pages. Retention per topic (`topic_retention.rs`)
//! runs in the writer's periodic trim only, and leaves holes in the sequence numbers: pages tell
//! them from losses by the frontier kept in `meta` (`retention.rs`).
//!
//! Locating a replay's start: the ids of the newest events (up to `RECENT_IDS`, loaded at
//! open and kept up to date by appends) are looked up in memory, without a read transaction or
//! a trip through the blocking thread pool; only older ids are looked up in the `ids` table. So
//! the clients that all resume at once after a restart do not queue thousands of file reads in
//! front of the writer's next commit.
//!
//! Failures: an I/O error is [`HistoryError::Store`], and the file is reopened on the next call
//! (redb refuses further use of a handle that saw one); a record that does not decode is
//! [`HistoryError::Damaged`]; a file that does not open as a history is
//! [`HistoryError::DamagedFile`].

mod file;
mod keys;
mod retention;
mod topic_retention;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use redb::{Database, ReadableDatabase};

use self::file::{at_open, load_recent_ids, open_file, save_state, State, EVENTS, IDS};
use self::keys::{IdTables, Keys};
use self::retention::now_ms;
pub use self::retention::Retention;
use super::record::{decode_record, encode_record};
use super::{
    Append, Appended, Damage, HistoryError, KeyRecord, LocalHistory, Page, ReplayFrom, ReplayStart,
    StoredBytes, StoredEvent,
};
use crate::idempotency::Fingerprint;

/// The file inside the data directory.
pub const FILE_NAME: &str = "history.redb";
/// Ids of the newest events kept in memory, so that clients resuming from a recent event (after
/// a restart, all of them at once) are located without a read of the file.
const RECENT_IDS: usize = 16 * 1024;

/// The sequence numbers of the newest [`RECENT_IDS`] event ids.
#[derive(Default)]
struct RecentIds {
    order: VecDeque<(u64, Arc<str>)>,
    seqs: HashMap<Arc<str>, u64>,
}

impl RecentIds {
    /// Records `id` at `seq` (newer than every id recorded so far). A reused id keeps its
    /// earliest occurrence, where a `Last-Event-ID` naming it resumes.
    fn push(&mut self, seq: u64, id: &str) {
        let id: Arc<str> = Arc::from(id);
        self.seqs.entry(id.clone()).or_insert(seq);
        self.order.push_back((seq, id));
        while self.order.len() > RECENT_IDS {
            if let Some((seq, id)) = self.order.pop_front() {
                // Out of the window: the file decides (it may hold a newer occurrence).
                if self.seqs.get(&id) == Some(&seq) {
                    self.seqs.remove(&id);
                }
            }
        }
    }

    fn get(&self, id: &str) -> Option<u64> {
        self.seqs.get(id).copied()
    }

    /// Forgets `id` at `seq` (dropped by retention per topic), unless it was reused since.
    fn forget(&mut self, seq: u64, id: &str) {
        if self.seqs.get(id) == Some(&seq) {
            self.seqs.remove(id);
        }
    }
}

/// When a publish counts as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// One fsync per batch of publishes that arrived together (group commit). Default.
    #[default]
    Batch,
    /// One fsync per event: the slowest, for comparison.
    Always,
}

/// A durable, bounded event log in one redb file.
pub struct DurableHistory {
    path: PathBuf,
    /// `None` after an I/O error until the file is reopened (redb refuses further use of a
    /// handle that saw one).
    db: RwLock<Option<Arc<Database>>>,
    needs_reopen: AtomicBool,
    state: Mutex<State>,
    /// Held only to look up or record ids, never during I/O.
    recent: Mutex<RecentIds>,
    retention: Retention,
    sync: SyncPolicy,
    /// Retention per topic, when there are rules (`durable/topic_retention.rs`).
    topic_index: Option<Mutex<topic_retention::TopicIndex>>,
}

impl std::fmt::Debug for DurableHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableHistory")
            .field("path", &self.path)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl DurableHistory {
    /// Opens (or creates) `history.redb` in `dir`, creating `dir` if needed, and checks the
    /// file's integrity.
    ///
    /// # Errors
    /// [`HistoryError::DamagedFile`] with a recovery hint when the file is not a valid history;
    /// [`HistoryError::Io`] when the directory or the file cannot be created or opened
    /// (permissions), [`HistoryError::Store`] when it is in use by another process.
    pub fn open(dir: &Path, retention: Retention, sync: SyncPolicy) -> Result<Self, HistoryError> {
        std::fs::create_dir_all(dir).map_err(|source| HistoryError::Io {
            path: dir.to_owned(),
            source: Arc::new(source),
        })?;
        let path = dir.join(FILE_NAME);
        let (db, state) = open_file(&path)?;
        let recent = load_recent_ids(&db).map_err(|error| at_open(&path, error))?;
        Ok(Self {
            path,
            db: RwLock::new(Some(Arc::new(db))),
            needs_reopen: AtomicBool::new(false),
            state: Mutex::new(state),
            recent: Mutex::new(recent),
            retention,
            sync,
            topic_index: None,
        })
    }

    /// Applies retention per topic (`rules`) from the writer's periodic trim, besides the
    /// global limits of [`Retention`].
    #[must_use]
    pub fn with_rules(mut self, rules: crate::history::RetentionRules) -> Self {
        self.topic_index =
            (!rules.is_empty()).then(|| Mutex::new(topic_retention::TopicIndex::new(rules)));
        self
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock_recent(&self) -> MutexGuard<'_, RecentIds> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        // State is replaced wholesale after each commit; a poisoned one is still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The open database, reopening it first after an I/O error.
    fn database(&self) -> Result<Arc<Database>, HistoryError> {
        if self.needs_reopen.load(Ordering::Acquire) {
            self.reopen()?;
        }
        self.db
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(HistoryError::Reopening)
    }

    fn reopen(&self) -> Result<(), HistoryError> {
        let mut slot = self.db.write().unwrap_or_else(|p| p.into_inner());
        // Drop our handle; the file closes once in-flight page reads drop theirs.
        *slot = None;
        let (db, state) = open_file(&self.path)?;
        *self.lock_state() = state;
        *slot = Some(Arc::new(db));
        self.needs_reopen.store(false, Ordering::Release);
        tracing::info!(path = %self.path.display(), "history file reopened");
        Ok(())
    }

    /// A write failed: after an I/O error redb refuses the handle (`PreviousIo`), so the next
    /// call reopens the file. Whoever answers the error logs it.
    fn failed(&self, error: HistoryError) -> HistoryError {
        if matches!(error, HistoryError::Store(_)) {
            self.needs_reopen.store(true, Ordering::Release);
            tracing::debug!(path = %self.path.display(), "history file to be reopened");
        }
        error
    }

    /// Appends a batch (retries answered, not stored), forgets expired keys and trims, in one
    /// transaction; returns what each publish became, and the new state.
    fn commit_batch(
        &self,
        db: &Database,
        batch: Vec<Append>,
        mut state: State,
        now: u64,
    ) -> Result<(Vec<Appended>, State), HistoryError> {
        let txn = db.begin_write()?;
        let mut out = Vec::with_capacity(batch.len());
        {
            let mut table = txn.open_table(EVENTS)?;
            let mut ids = IdTables::open(&txn)?;
            let mut keys = Keys::open(&txn)?;
            for Append { event, key, .. } in batch {
                let candidate = StoredEvent::new(state.next_seq, event);
                let fingerprint = key.as_ref().map(|_| Fingerprint::of(&candidate));
                if let (Some(claim), Some(fingerprint)) = (&key, fingerprint) {
                    if let Some(record) = keys.get(&claim.key, now)? {
                        out.push(record.answer(fingerprint));
                        continue;
                    }
                }
                let id_for_key = key.as_ref().map(|_| candidate.id.clone());
                let (seq, answer) = match ids.held_same(&table, state.first_seq, &candidate)? {
                    Some(seq) => {
                        let id = candidate.id;
                        (seq, Appended::Retry { id, seq })
                    }
                    None => {
                        let record = encode_record(&candidate, now);
                        table.insert(candidate.seq, record.as_slice())?;
                        ids.index(&candidate.id, candidate.seq)?;
                        state.bytes += record.len() as u64;
                        state.next_seq += 1;
                        (candidate.seq, Appended::Stored(Arc::new(candidate)))
                    }
                };
                if let (Some(claim), Some(fingerprint), Some(id)) = (key, fingerprint, id_for_key) {
                    let record = KeyRecord {
                        seq,
                        id,
                        fingerprint,
                    };
                    keys.remember(&claim, &record, now)?;
                }
                out.push(answer);
            }
            keys.forget_expired(now)?;
        }
        self.retention.trim_in(&txn, &mut state, now)?;
        save_state(&txn, &state)?;
        txn.commit()?;
        Ok((out, state))
    }

    /// Applies time-based retention and forgets expired keys in a transaction of its own;
    /// whether it dropped anything.
    fn trim_by_age(&self, db: &Database, state: &mut State) -> Result<bool, HistoryError> {
        let txn = db.begin_write()?;
        let now = now_ms();
        let forgotten = Keys::open(&txn)?.forget_expired(now)?;
        if self.retention.trim_in(&txn, state, now)? + forgotten == 0 {
            txn.abort()?;
            return Ok(false);
        }
        save_state(&txn, state)?;
        txn.commit()?;
        Ok(true)
    }
}

impl LocalHistory for DurableHistory {
    const BLOCKING: bool = true;

    fn append_at(&self, batch: Vec<Append>, now: u64) -> Result<Vec<Appended>, HistoryError> {
        let db = self.database()?;
        let batches: Vec<Vec<Append>> = match self.sync {
            SyncPolicy::Batch => vec![batch],
            SyncPolicy::Always => batch.into_iter().map(|a| vec![a]).collect(),
        };
        let mut all = Vec::new();
        for batch in batches {
            // Only the writer appends, so the state cannot change between this read and the
            // update below; it is updated only after the commit succeeded.
            let state = self.lock_state().clone();
            let (appended, state) = self
                .commit_batch(&db, batch, state, now)
                .map_err(|e| self.failed(e))?;
            *self.lock_state() = state;
            let mut recent = self.lock_recent();
            for event in appended.iter().filter_map(Appended::stored) {
                recent.push(event.seq, &event.id);
            }
            drop(recent);
            all.extend(appended);
        }
        Ok(all)
    }

    fn locate_in_memory(&self, from: &ReplayFrom) -> Option<ReplayStart> {
        let seq = match from {
            ReplayFrom::AfterId(id) => Some(self.lock_recent().get(id)?),
            ReplayFrom::Earliest => None,
        };
        let state = self.lock_state();
        let through_seq = state.next_seq - 1;
        match (seq, from) {
            (Some(seq), ReplayFrom::AfterId(id)) if seq >= state.first_seq => Some(ReplayStart {
                after_seq: seq.min(through_seq),
                through_seq,
                resumed_after: id.clone(),
            }),
            // Dropped by retention since: the file decides (it may hold a newer occurrence).
            (Some(_), _) => None,
            (None, _) => Some(ReplayStart::from_oldest(
                state.first_seq,
                through_seq,
                state.last_dropped_id.as_deref(),
            )),
        }
    }

    fn locate_now(&self, from: &ReplayFrom) -> Result<ReplayStart, HistoryError> {
        if let Some(start) = self.locate_in_memory(from) {
            return Ok(start);
        }
        let state = self.lock_state().clone();
        let through_seq = state.next_seq - 1;
        if let ReplayFrom::AfterId(id) = from {
            let db = self.database()?;
            let txn = db.begin_read()?;
            let ids = txn.open_table(IDS)?;
            if let Some(seq) = ids.get(id.as_str())?.map(|v| v.value()) {
                if seq >= state.first_seq {
                    return Ok(ReplayStart {
                        after_seq: seq.min(through_seq),
                        through_seq,
                        resumed_after: id.clone(),
                    });
                }
            }
        }
        Ok(ReplayStart::from_oldest(
            state.first_seq,
            through_seq,
            state.last_dropped_id.as_deref(),
        ))
    }

    fn read_page_now(
        &self,
        after_seq: u64,
        through_seq: u64,
        max_events: usize,
    ) -> Result<Page, HistoryError> {
        if after_seq >= through_seq || max_events == 0 {
            return Ok(Page::default());
        }
        let db = self.database()?;
        // The transaction lives for this page only.
        let txn = db.begin_read()?;
        let frontier = retention::read_frontier(&txn.open_table(file::META)?)?;
        let table = txn.open_table(EVENTS)?;
        let mut page = Vec::with_capacity(max_events.min(1024));
        for entry in table.range(after_seq + 1..=through_seq)? {
            let (key, value) = entry?;
            let seq = key.value();
            let event =
                decode_record(seq, value.value()).map_err(|error| Damage::Event { seq, error })?;
            page.push(Arc::new(event));
            if page.len() == max_events {
                break;
            }
        }
        Ok(match frontier {
            // Retention per topic may have left holes: only the frontier says what was lost.
            Some(frontier) => Page::with_frontier(page, after_seq, frontier),
            None => Page::contiguous(page, after_seq, through_seq),
        })
    }

    fn trim_now(&self) -> Result<(), HistoryError> {
        self.trim_topics()?;
        if self.retention.max_age.is_none() {
            return Ok(());
        }
        let db = self.database()?;
        let mut state = self.lock_state().clone();
        if self
            .trim_by_age(&db, &mut state)
            .map_err(|e| self.failed(e))?
        {
            *self.lock_state() = state;
        }
        Ok(())
    }

    fn check_now(&self) -> Result<(), HistoryError> {
        // Reopens the file after an I/O error, so readiness recovers when the disk does.
        self.database().map(|_| ())
    }

    fn len_now(&self) -> usize {
        let state = self.lock_state();
        let kept = (state.next_seq - state.first_seq).saturating_sub(state.rule_dropped);
        usize::try_from(kept).unwrap_or(usize::MAX)
    }

    fn stored_bytes_now(&self) -> Option<StoredBytes> {
        Some(StoredBytes {
            held: self.lock_state().bytes,
            max: self.retention.max_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::event::Event;
    use crate::history::memory::tests::{conformance, key_conformance, keyed, replay};

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ssehub-durable-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn open(dir: &Path, retention: Retention) -> DurableHistory {
        DurableHistory::open(dir, retention, SyncPolicy::Batch).expect("open")
    }

    fn keep(max_events: u64) -> Retention {
        Retention {
            max_events,
            max_age: None,
            max_bytes: None,
        }
    }

    fn event(id: &str) -> Append {
        Event {
            id: id.into(),
            ..Event::new("t", id)
        }
        .into()
    }

    #[test]
    fn durable_history_conforms() {
        let (a, b) = (temp_dir("conform-a"), temp_dir("conform-b"));
        conformance(&open(&a, keep(100)), &open(&b, keep(2)));
        let c = temp_dir("conform-keys");
        key_conformance(&open(&c, keep(100)));
        let _ = (std::fs::remove_dir_all(a), std::fs::remove_dir_all(b));
        let _ = std::fs::remove_dir_all(c);
    }

    #[test]
    fn keys_and_retried_ids_are_recognised_after_a_restart() {
        let dir = temp_dir("keys-restart");
        let (x, y) = {
            let history = open(&dir, keep(100));
            let appended = history
                .append_now(vec![keyed("k", "x"), event("y")])
                .expect("append");
            (appended[0].clone(), appended[1].clone())
        };
        let history = open(&dir, keep(100));
        let retried = history
            .append_now(vec![keyed("k", "x"), event("y")])
            .expect("append");
        let ids = |a: &Appended| match a {
            Appended::Stored(e) => (e.id.clone(), e.seq),
            Appended::Retry { id, seq } => (id.clone(), *seq),
            Appended::KeyReused { .. } | Appended::Spooled { .. } => panic!("{a:?}"),
        };
        assert!(matches!(retried[0], Appended::Retry { .. }), "{retried:?}");
        assert!(matches!(retried[1], Appended::Retry { .. }), "{retried:?}");
        assert_eq!(ids(&retried[0]), ids(&x));
        assert_eq!(ids(&retried[1]), ids(&y));
        assert_eq!(history.len_now(), 2);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn expired_keys_leave_the_file() {
        let dir = temp_dir("keys-expire");
        let history = open(&dir, keep(100));
        let batch = (0..300).map(|i| keyed(&format!("k{i}"), "x")).collect();
        history.append_at(batch, 1_000).expect("append");
        let count = |history: &DurableHistory| {
            use redb::ReadableTableMetadata;
            let db = history.database().expect("open");
            let txn = db.begin_read().expect("read");
            let keys = txn.open_table(file::KEYS).expect("keys");
            let expiry = txn.open_table(file::KEY_EXPIRY).expect("expiry");
            (keys.len().expect("len"), expiry.len().expect("len"))
        };
        assert_eq!(count(&history), (300, 300));
        // 60 s later every key expired; each commit forgets a bounded number of them.
        history.append_at(vec![event("a")], 62_000).expect("append");
        assert_eq!(count(&history), (44, 44));
        history.append_at(vec![event("b")], 62_000).expect("append");
        assert_eq!(count(&history), (0, 0));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn records_round_trip_and_damaged_ones_are_errors() {
        let mut event = Event::new("a", "line 1\nline 2");
        event.topics.push("b".into());
        event.private = true;
        let stored = StoredEvent::new(7, event);
        let record = encode_record(&stored, 42);
        assert_eq!(decode_record(7, &record), Ok(stored));
        for cut in 0..record.len() {
            assert!(decode_record(7, &record[..cut]).is_err());
        }
        let mut bad = record.clone();
        bad[0] = 99;
        assert!(decode_record(7, &bad).is_err());
    }

    #[test]
    fn events_survive_reopening_in_order() {
        let dir = temp_dir("reopen");
        {
            let history = open(&dir, keep(100));
            history
                .append_now(["a", "b", "c"].iter().map(|id| event(id)).collect())
                .expect("append");
        }
        let history = open(&dir, keep(100));
        let (ids, start) = replay(&history, ReplayFrom::AfterId("a".into()));
        assert_eq!(ids, ["b", "c"]);
        assert_eq!(start.through_seq, 3);
        let stored = history.append_now(vec![event("d")]).expect("append");
        assert_eq!(
            stored[0].stored().map(|e| e.seq),
            Some(4),
            "sequence numbers continue after a restart"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn recent_ids_are_located_in_memory_and_older_ones_from_the_file() {
        let dir = temp_dir("recent");
        let total = RECENT_IDS + 100;
        {
            let history = open(&dir, keep(0));
            for chunk in (0..total).collect::<Vec<_>>().chunks(4096) {
                let events = chunk.iter().map(|i| event(&format!("e{i}"))).collect();
                history.append_now(events).expect("append");
            }
        }
        let history = open(&dir, keep(0));
        let newest = ReplayFrom::AfterId(format!("e{}", total - 10));
        let in_memory = history
            .locate_in_memory(&newest)
            .expect("a recent id is in memory");
        assert_eq!(in_memory, history.locate_now(&newest).expect("locate"));
        assert_eq!(in_memory.after_seq, (total - 9) as u64);
        assert_eq!(in_memory.through_seq, total as u64);
        let oldest = ReplayFrom::AfterId("e5".into());
        assert_eq!(history.locate_in_memory(&oldest), None);
        assert_eq!(history.locate_now(&oldest).expect("locate").after_seq, 6);
        // Ids appended now are found in memory too.
        history.append_now(vec![event("fresh")]).expect("append");
        let fresh = history
            .locate_in_memory(&ReplayFrom::AfterId("fresh".into()))
            .expect("in memory");
        assert_eq!(
            (fresh.after_seq, fresh.through_seq),
            (total as u64 + 1, total as u64 + 1)
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_recent_id_dropped_by_retention_is_not_located_in_memory() {
        let dir = temp_dir("recent-dropped");
        let history = open(&dir, keep(2));
        history
            .append_now(["a", "b", "c"].iter().map(|id| event(id)).collect())
            .expect("append");
        let from = ReplayFrom::AfterId("a".into());
        assert_eq!(history.locate_in_memory(&from), None);
        let start = history.locate_now(&from).expect("locate");
        assert_eq!(start.resumed_after, "a", "the newest dropped id");
        assert_eq!(start.after_seq, 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn retention_by_bytes_and_age() {
        let dir = temp_dir("bytes");
        let history = open(
            &dir,
            Retention {
                max_events: 0,
                max_age: None,
                max_bytes: Some(300),
            },
        );
        for i in 0..20 {
            history
                .append_now(vec![event(&format!("e{i}"))])
                .expect("append");
        }
        assert!(history.lock_state().bytes <= 300);
        assert!(history.len_now() < 20 && history.len_now() > 0);
        let (ids, start) = replay(&history, ReplayFrom::Earliest);
        assert_eq!(ids.last().map(String::as_str), Some("e19"));
        assert_ne!(start.resumed_after, "earliest");
        drop(history);

        let dir = temp_dir("age");
        let history = open(
            &dir,
            Retention {
                max_events: 0,
                max_age: Some(Duration::from_millis(50)),
                max_bytes: None,
            },
        );
        history.append_now(vec![event("old")]).expect("append");
        std::thread::sleep(Duration::from_millis(80));
        history.trim_now().expect("trim");
        assert_eq!(history.len_now(), 0);
        let (_, start) = replay(&history, ReplayFrom::AfterId("old".into()));
        assert_eq!(
            start.resumed_after, "old",
            "the dropped event is where replay resumes"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_file_that_is_not_a_history_is_reported_as_damaged() {
        let dir = temp_dir("garbage");
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join(FILE_NAME), vec![0x5a; 64 * 1024]).expect("write");
        match DurableHistory::open(&dir, keep(10), SyncPolicy::Batch) {
            Err(error @ HistoryError::DamagedFile { .. }) => {
                let message = error.to_string();
                assert!(message.contains("move the file aside"), "{message}");
            }
            other => panic!("expected Damaged, got {other:?}"),
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Overwrites the stored record of event `seq` with bytes that are not a record, through
    /// redb itself (the file stays a valid database: only our decoding can tell).
    fn overwrite_record(dir: &Path, seq: u64, bytes: &[u8]) {
        let db = Database::create(dir.join(FILE_NAME)).expect("open the file");
        let txn = db.begin_write().expect("write");
        txn.open_table(EVENTS)
            .expect("events")
            .insert(seq, bytes)
            .expect("insert");
        txn.commit().expect("commit");
    }

    #[test]
    fn a_record_that_does_not_decode_is_damage_to_read_and_the_newest_one_to_open() {
        let dir = temp_dir("damaged-record");
        {
            let history = open(&dir, keep(3));
            history
                .append_now(["a", "b", "c"].iter().map(|id| event(id)).collect())
                .expect("append");
        }
        // The oldest record, cut after its id: opening reads the ids of the newest records and
        // decodes only the newest one whole.
        let header_only = |seq: u64, id: &str| {
            let record = encode_record(&StoredEvent::new(seq, event(id).event), 0);
            record[..1 + 1 + 8 + 4 + id.len()].to_vec()
        };
        overwrite_record(&dir, 1, &header_only(1, "a"));
        let history = open(&dir, keep(3));
        match history.read_page_now(0, 3, 10) {
            Err(HistoryError::Damaged(Damage::Event { seq: 1, error })) => {
                assert_eq!(error, crate::history::RecordError::Truncated);
            }
            other => panic!("expected the damage of event 1, got {other:?}"),
        }
        drop(history);

        // The newest record damaged: the file does not open, and says how to recover.
        overwrite_record(&dir, 3, &header_only(3, "c"));
        match DurableHistory::open(&dir, keep(3), SyncPolicy::Batch) {
            Err(HistoryError::DamagedFile {
                damage: Damage::Event { seq: 3, .. },
                ..
            }) => {}
            other => panic!("expected a damaged file, got {other:?}"),
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_data_directory_that_cannot_be_created_is_an_io_error_naming_it() {
        let dir = temp_dir("not-a-dir");
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("plain-file");
        std::fs::write(&file, b"x").expect("write");
        let inside = file.join("data");
        match DurableHistory::open(&inside, keep(3), SyncPolicy::Batch) {
            Err(error @ HistoryError::Io { .. }) => {
                assert_eq!(
                    error.to_string(),
                    format!("cannot use {}", inside.display())
                );
            }
            other => panic!("expected an I/O error, got {other:?}"),
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
