//! The shared history: one Redis stream that every hub instance appends to and reads back.
//!
//! Data layout (with the default key prefix `ssehub`):
//! - `ssehub:events`, a stream: one entry per event, fields `i` (event id) and `e` (the record,
//!   see `record.rs`). Entry ids (`<ms>-<n>`) give the one order every instance delivers in; an
//!   event's sequence number is its entry id packed into a `u64` ([`seq_of`]).
//! - `ssehub:events` entries also carry `f`, the content's fingerprint (`crate::idempotency`),
//!   which recognises a retried publish by its id.
//! - `ssehub:ids`, a hash: event id → entry id of its earliest kept occurrence, for
//!   `Last-Event-ID` (draft-dunglas-mercure-08's rule for reused ids); `ssehub:ids_last`: a reused
//!   id → its newest occurrence, what a retry is compared with.
//! - `ssehub:key:<Idempotency-Key>`, one string per key seen within the window (expiring by
//!   itself, `PX`): `<entry id> <fingerprint> <event id>` of the update it was first used for.
//! - `ssehub:meta`, a hash: `epoch` (random, set once: a Redis that lost its data loses it too,
//!   which is how instances notice), `last_dropped_id` and `last_dropped_entry` (retention).
//!
//! Publishing runs one Lua script per batch (atomic: recognise retries, append, index, trim to
//! `max_len`), and the publish is acknowledged once Redis answered. The check and the append
//! are one script, so two instances taking retries of one update at once store it once. Each instance's feed reads the stream with
//! `XREAD BLOCK` on a connection of its own (a blocking read would stall commands queued behind it
//! on a shared one), from the last entry id it delivered: after a Redis outage it resumes there,
//! with no gap and no duplicate. Plain pub/sub would lose every event sent while an instance is
//! disconnected; a stream cursor does not. The feed is `redis/feed.rs`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamId, StreamRangeReply};
use redis::{Client, Script, Value};

use super::record::{decode_record, encode_record, now_ms};
use super::{
    Append, Appended, Damage, History, HistoryError, HistoryFuture, HistoryRole, KeyClaim, Page,
    RedisSource, ReplayFrom, ReplayStart, Sources, StoredEvent,
};
use crate::idempotency::Fingerprint;
use crate::telemetry::{Stamp, TraceIds};

mod feed;
mod topic_retention;

/// Bits of a sequence number that hold the entry id's counter within its millisecond.
const COUNTER_BITS: u32 = 20;

/// Appends a batch, indexes ids, trims to the length cap (exactly, so that the id index can be
/// trimmed with it), and records what was dropped. A publish that is a retry (its
/// `Idempotency-Key` held, or its id held with the same fingerprint) is answered, not appended.
/// KEYS: stream, ids, meta, ids_last, then the batch's idempotency keys. ARGV: max_len, the key
/// window in ms, then per publish: id, record, fingerprint, index of its key in KEYS (0: none),
/// stamp (field `s`: when it was accepted and its trace, [`stamp_field`]).
/// Returns the stream length, then per publish: the new entry id; `{1, entry, id}` for a retry;
/// `{2, id}` for a key used before with other content.
const PUBLISH_SCRIPT: &str = r"
local max_len = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local out = {0}
local function fingerprint_at(entry)
  local found = redis.call('XRANGE', KEYS[1], entry, entry)
  if #found == 0 then return nil end
  local fields = found[1][2]
  for f = 1, #fields, 2 do
    if fields[f] == 'f' then return fields[f + 1] end
  end
  return nil
end
for i = 3, #ARGV, 5 do
  local id, record, print, k = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local stamp = ARGV[i + 4]
  local answer
  if k > 0 then
    local held = redis.call('GET', KEYS[k])
    if held then
      local entry, held_print, held_id = string.match(held, '^(%S+) (%S+) (.*)$')
      if held_print == print then answer = {1, entry, held_id} else answer = {2, held_id} end
    end
  end
  if not answer then
    local prior = redis.call('HGET', KEYS[4], id) or redis.call('HGET', KEYS[2], id)
    local entry
    if prior and fingerprint_at(prior) == print then
      entry = prior
      answer = {1, prior, id}
    else
      entry = redis.call('XADD', KEYS[1], '*', 'i', id, 'e', record, 'f', print, 's', stamp)
      if redis.call('HSETNX', KEYS[2], id, entry) == 0 then
        redis.call('HSET', KEYS[4], id, entry)
      end
      answer = entry
    end
    if k > 0 then
      redis.call('SET', KEYS[k], entry .. ' ' .. print .. ' ' .. id, 'PX', window)
    end
  end
  out[#out + 1] = answer
end
local len = redis.call('XLEN', KEYS[1])
if max_len > 0 and len > max_len then
  local old = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', len - max_len)
  local last_entry, last_id
  for _, item in ipairs(old) do
    local fields = item[2]
    local id
    for f = 1, #fields, 2 do
      if fields[f] == 'i' then id = fields[f + 1] end
    end
    if id then
      local last = redis.call('HGET', KEYS[4], id)
      if last == item[1] then redis.call('HDEL', KEYS[4], id) end
      if redis.call('HGET', KEYS[2], id) == item[1] then
        if last and last ~= item[1] then
          redis.call('HSET', KEYS[2], id, last)
        else
          redis.call('HDEL', KEYS[2], id)
        end
      end
    end
    redis.call('XDEL', KEYS[1], item[1])
    last_entry, last_id = item[1], id
  end
  if last_entry then
    redis.call('HSET', KEYS[3], 'last_dropped_entry', last_entry, 'last_dropped_id', last_id or '')
  end
  len = len - #old
end
out[1] = len
return out
";

/// Packs a stream entry id (`<ms>-<n>`) into a sequence number that sorts the same way.
/// Millisecond timestamps fit in 44 bits until the year 2527; the counter gets 20 bits (a million
/// entries in one millisecond).
pub fn seq_of(entry_id: &str) -> Option<u64> {
    let (ms, counter) = entry_id.split_once('-')?;
    let (ms, counter): (u64, u64) = (ms.parse().ok()?, counter.parse().ok()?);
    if ms >= 1 << (64 - COUNTER_BITS) || counter >= 1 << COUNTER_BITS {
        return None;
    }
    Some(ms << COUNTER_BITS | counter)
}

/// The entry id a sequence number stands for.
fn entry_of(seq: u64) -> String {
    format!(
        "{}-{}",
        seq >> COUNTER_BITS,
        seq & ((1 << COUNTER_BITS) - 1)
    )
}

struct Keys {
    stream: String,
    ids: String,
    ids_last: String,
    meta: String,
    /// The prefix of the idempotency keys' own Redis keys (`ssehub:key:<key>`).
    key_prefix: String,
}

/// A history kept in Redis and shared by every instance that uses the same Redis and prefix.
pub struct RedisHistory {
    client: Client,
    commands: ConnectionManager,
    keys: Keys,
    /// Most events kept in the stream (0: no limit).
    max_len: u64,
    script: Script,
    /// Stream length as of the last publish.
    approx_len: AtomicUsize,
    /// Whether the feed is connected and reading (for readiness).
    feed_reading: AtomicBool,
    /// Whether the feed knows where it starts (set once, at its first contact with Redis):
    /// what the spool forwards after that is after its cursor.
    feed_positioned: AtomicBool,
    /// When this instance started, in ms since the Unix epoch, if Redis could not be reached
    /// then: the feed then starts at the older of that time and the newest entry, so that what
    /// other instances appended before it first reached Redis is not skipped.
    started_unreachable_ms: Option<u64>,
    /// The epoch this instance knows; a different one in Redis means Redis lost its data.
    epoch: Mutex<String>,
    /// Retention per topic, when there are rules (`redis/topic_retention.rs`).
    topic_retention: Option<topic_retention::TopicRetention>,
}

impl std::fmt::Debug for RedisHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHistory")
            .field("stream", &self.keys.stream)
            .field("max_len", &self.max_len)
            .finish_non_exhaustive()
    }
}

fn field_bytes<'a>(entry: &'a StreamId, field: &str) -> Option<&'a [u8]> {
    match entry.map.get(field)? {
        Value::BulkString(bytes) => Some(bytes),
        _ => None,
    }
}

/// The sequence number of an entry id, or why there is none.
fn seq_of_entry(entry: &str) -> Result<u64, Damage> {
    seq_of(entry).ok_or_else(|| Damage::EntryId {
        entry: entry.to_owned(),
    })
}

/// An entry's field `s`: the microseconds since the epoch when the publishing instance accepted
/// it, then, if it was traced, a space and its W3C `traceparent`.
fn stamp_field(stamp: &Stamp) -> String {
    match &stamp.trace {
        Some(trace) => format!("{} {}", stamp.accepted_us, trace.to_traceparent()),
        None => stamp.accepted_us.to_string(),
    }
}

/// The stamp of an entry (an entry without one, or with one that does not read, has none: its
/// delivery lag is not observed).
pub(crate) fn entry_stamp(entry: &StreamId) -> Stamp {
    let Some(text) = field_bytes(entry, "s").and_then(|bytes| std::str::from_utf8(bytes).ok())
    else {
        return Stamp::default();
    };
    let mut parts = text.splitn(2, ' ');
    let accepted_us = parts.next().and_then(|us| us.parse().ok()).unwrap_or(0);
    let trace = parts
        .next()
        .and_then(TraceIds::from_traceparent)
        .map(Arc::new);
    Stamp { accepted_us, trace }
}

fn decode_entry(entry: &StreamId) -> Result<StoredEvent, Damage> {
    let seq = seq_of_entry(&entry.id)?;
    let record = field_bytes(entry, "e").ok_or_else(|| Damage::EntryWithoutRecord {
        entry: entry.id.clone(),
    })?;
    decode_record(seq, record).map_err(|error| Damage::EntryRecord {
        entry: entry.id.clone(),
        error,
    })
}

/// The script's answer for a publish it did not append: `{1, entry, id}` (a retry of the event
/// at `entry`) or `{2, id}` (a key used before for the update `id`).
fn appended_of(fields: Vec<Value>) -> Result<Appended, HistoryError> {
    let text = |value: Value| -> Result<String, HistoryError> {
        Ok(redis::from_redis_value(value).map_err(redis::RedisError::from)?)
    };
    let mut fields = fields.into_iter();
    match (fields.next(), fields.next(), fields.next()) {
        (Some(Value::Int(1)), Some(entry), Some(id)) => {
            let entry = text(entry)?;
            Ok(Appended::Retry {
                id: text(id)?,
                seq: seq_of_entry(&entry)?,
            })
        }
        (Some(Value::Int(2)), Some(id), None) => Ok(Appended::KeyReused { id: text(id)? }),
        _ => Err(Damage::ScriptReply.into()),
    }
}

/// Whether `error` says that Redis could not be reached (as opposed to answering with a refusal).
fn is_unreachable(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
        || error.is_timeout()
}

impl RedisHistory {
    /// Connects to `url` (`redis://host:port/db`) and reads the data's epoch.
    ///
    /// A Redis that cannot be reached now (connection refused, reset or timed out) does not stop
    /// the start: an instance restarted during an outage serves, says it is not ready
    /// (`/readyz`), refuses or spools publishes, and its feed connects when Redis is back. So an
    /// outage of Redis never keeps a fleet of instances from coming back up, and a spool kept
    /// from before a restart is forwarded as soon as Redis answers.
    ///
    /// # Errors
    /// [`HistoryError::Redis`] when the URL is invalid, or Redis answered and refused (a wrong
    /// password, a wrong database).
    pub async fn connect(url: &str, prefix: &str, max_len: u64) -> Result<Self, HistoryError> {
        let client = Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let commands = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        let started_ms = now_ms();
        let mut history = Self {
            client,
            commands,
            keys: Keys {
                stream: format!("{prefix}:events"),
                ids: format!("{prefix}:ids"),
                ids_last: format!("{prefix}:ids_last"),
                meta: format!("{prefix}:meta"),
                key_prefix: format!("{prefix}:key:"),
            },
            max_len,
            script: Script::new(PUBLISH_SCRIPT),
            approx_len: AtomicUsize::new(0),
            feed_reading: AtomicBool::new(false),
            feed_positioned: AtomicBool::new(false),
            started_unreachable_ms: None,
            epoch: Mutex::new(String::new()),
            topic_retention: None,
        };
        match history.ensure_epoch().await {
            Ok(epoch) => *history.lock_epoch() = epoch,
            Err(HistoryError::Redis(RedisSource(error))) if is_unreachable(&error) => {
                tracing::warn!(
                    error = %Sources::of(&error),
                    "Redis cannot be reached: serving anyway, not ready until it answers"
                );
                history.started_unreachable_ms = Some(started_ms);
            }
            Err(error) => return Err(error),
        }
        Ok(history)
    }

    /// Applies retention per topic (`rules`) from the writer's periodic trim, besides
    /// `max_len`. Every instance on the same Redis and prefix should have the same rules.
    #[must_use]
    pub fn with_rules(mut self, rules: crate::history::RetentionRules) -> Self {
        let prefix = self
            .keys
            .meta
            .strip_suffix(":meta")
            .unwrap_or(&self.keys.meta)
            .to_owned();
        self.topic_retention =
            (!rules.is_empty()).then(|| topic_retention::TopicRetention::new(rules, &prefix));
        self
    }

    fn lock_epoch(&self) -> std::sync::MutexGuard<'_, String> {
        self.epoch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the epoch if Redis has none, and returns Redis's epoch.
    async fn ensure_epoch(&self) -> Result<String, HistoryError> {
        let mut connection = self.commands.clone();
        let fresh = uuid::Uuid::now_v7().to_string();
        let (_, epoch): (i64, String) = redis::pipe()
            .cmd("HSETNX")
            .arg(&self.keys.meta)
            .arg("epoch")
            .arg(&fresh)
            .cmd("HGET")
            .arg(&self.keys.meta)
            .arg("epoch")
            .query_async(&mut connection)
            .await?;
        Ok(epoch)
    }

    async fn append_batch(
        self: Arc<Self>,
        batch: Vec<Append>,
    ) -> Result<Vec<Appended>, HistoryError> {
        // The record does not hold the sequence number, so it can be made before Redis assigns
        // the entry id.
        let batch = batch
            .into_iter()
            .map(|Append { event, key, stamp }| (StoredEvent::new(0, event), key, stamp))
            .collect();
        self.append_stored(batch).await
    }

    /// Appends events already encoded (a new publish, or one a spool forwards), recognising
    /// retries: see [`PUBLISH_SCRIPT`]. A spooled event forwarded a second time (the first
    /// forward's answer was lost) is a retry by its id, so it is not stored twice.
    pub(crate) async fn append_stored(
        &self,
        batch: Vec<(StoredEvent, Option<KeyClaim>, Stamp)>,
    ) -> Result<Vec<Appended>, HistoryError> {
        let now = now_ms();
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(&self.keys.stream)
            .key(&self.keys.ids)
            .key(&self.keys.meta)
            .key(&self.keys.ids_last);
        // Every publish of a batch shares the hub's one window.
        let window = batch
            .iter()
            .find_map(|(_, key, _)| key.as_ref().map(|claim| claim.window))
            .unwrap_or_default();
        invocation
            .arg(self.max_len)
            .arg(u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1));
        let mut prepared = Vec::with_capacity(batch.len());
        let mut next_key = 5;
        for (stored, key, stamp) in batch {
            let fingerprint = Fingerprint::of(&stored).to_hex();
            let key_index = match &key {
                Some(claim) => {
                    invocation.key(format!("{}{}", self.keys.key_prefix, claim.key.as_str()));
                    next_key += 1;
                    next_key - 1
                }
                None => 0,
            };
            invocation
                .arg(&stored.id)
                .arg(encode_record(&stored, now))
                .arg(fingerprint)
                .arg(key_index)
                .arg(stamp_field(&stamp));
            prepared.push(stored);
        }
        let mut connection = self.commands.clone();
        let reply: Vec<Value> = invocation.invoke_async(&mut connection).await?;
        let mut values = reply.into_iter();
        if let Some(Value::Int(len)) = values.next() {
            self.approx_len
                .store(usize::try_from(len).unwrap_or(0), Ordering::Relaxed);
        }
        prepared
            .into_iter()
            .zip(values)
            .map(|(mut stored, answer)| match answer {
                Value::Array(fields) => appended_of(fields),
                entry => {
                    let entry: String =
                        redis::from_redis_value(entry).map_err(redis::RedisError::from)?;
                    stored.seq = seq_of_entry(&entry)?;
                    Ok(Appended::Stored(Arc::new(stored)))
                }
            })
            .collect()
    }

    /// Whether Redis answers and the feed reads (readiness).
    pub(crate) async fn check_now(&self) -> Result<(), HistoryError> {
        if !self.feed_reading.load(Ordering::Relaxed) {
            return Err(HistoryError::FeedNotReading);
        }
        self.ping().await
    }

    /// Whether Redis answers a `PING`.
    pub(crate) async fn ping(&self) -> Result<(), HistoryError> {
        let mut connection = self.commands.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await?;
        Ok(())
    }

    /// Runs a read-only `pipe` and, when it failed because the connection broke, once more.
    /// After a Redis restart the first command on the old connection fails (broken pipe, reset)
    /// while the manager reconnects; these reads (locating a replay, reading a page) are
    /// idempotent, so retrying them on the new connection hides the restart from the subscriber
    /// that happened to arrive first. Writes are never retried here: a lost answer to an
    /// append does not say whether it was stored.
    async fn read_retrying<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> redis::RedisResult<T> {
        let mut connection = self.commands.clone();
        match pipe.query_async(&mut connection).await {
            Err(error) if error.is_io_error() || error.is_connection_dropped() => {
                tracing::debug!(%error, "a Redis read met a broken connection; retrying once");
                let mut connection = self.commands.clone();
                pipe.query_async(&mut connection).await
            }
            result => result,
        }
    }

    async fn locate_start(self: Arc<Self>, from: ReplayFrom) -> Result<ReplayStart, HistoryError> {
        let id = match &from {
            ReplayFrom::AfterId(id) => id.as_str(),
            ReplayFrom::Earliest => "",
        };
        let (entry, newest, oldest, last_dropped_id): (
            Option<String>,
            StreamRangeReply,
            StreamRangeReply,
            Option<String>,
        ) = self
            .read_retrying(
                redis::pipe()
                    .atomic()
                    .cmd("HGET")
                    .arg(&self.keys.ids)
                    .arg(id)
                    .cmd("XREVRANGE")
                    .arg(&self.keys.stream)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .cmd("XRANGE")
                    .arg(&self.keys.stream)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(1)
                    .cmd("HGET")
                    .arg(&self.keys.meta)
                    .arg("last_dropped_id"),
            )
            .await?;
        let through_seq = newest.ids.first().and_then(|e| seq_of(&e.id)).unwrap_or(0);
        if let (ReplayFrom::AfterId(id), Some(entry)) = (&from, entry.as_deref().and_then(seq_of)) {
            return Ok(ReplayStart {
                after_seq: entry.min(through_seq),
                through_seq,
                resumed_after: id.clone(),
            });
        }
        let first_seq = oldest
            .ids
            .first()
            .and_then(|e| seq_of(&e.id))
            .unwrap_or(through_seq + 1);
        Ok(ReplayStart::from_oldest(
            first_seq,
            through_seq,
            last_dropped_id.as_deref().filter(|id| !id.is_empty()),
        ))
    }

    async fn page(
        self: Arc<Self>,
        after_seq: u64,
        through_seq: u64,
        max_events: usize,
    ) -> Result<Page, HistoryError> {
        if after_seq >= through_seq || max_events == 0 {
            return Ok(Page::default());
        }
        let (range, last_dropped): (StreamRangeReply, Option<String>) = self
            .read_retrying(
                redis::pipe()
                    .atomic()
                    .cmd("XRANGE")
                    .arg(&self.keys.stream)
                    .arg(format!("({}", entry_of(after_seq)))
                    .arg(entry_of(through_seq))
                    .arg("COUNT")
                    .arg(max_events)
                    .cmd("HGET")
                    .arg(&self.keys.meta)
                    .arg("last_dropped_entry"),
            )
            .await?;
        let events = range
            .ids
            .iter()
            .map(|entry| decode_entry(entry).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        // Entry ids have gaps, so a drop is known from the newest entry retention removed.
        let truncated = last_dropped
            .as_deref()
            .and_then(seq_of)
            .is_some_and(|dropped| dropped > after_seq);
        Ok(Page { events, truncated })
    }
}

impl History for RedisHistory {
    fn append(self: Arc<Self>, batch: Vec<Append>) -> HistoryFuture<Vec<Appended>> {
        Box::pin(self.append_batch(batch))
    }

    fn locate(self: Arc<Self>, from: ReplayFrom) -> HistoryFuture<ReplayStart> {
        Box::pin(self.locate_start(from))
    }

    fn read_page(
        self: Arc<Self>,
        after_seq: u64,
        through_seq: u64,
        max_events: usize,
    ) -> HistoryFuture<Page> {
        Box::pin(self.page(after_seq, through_seq, max_events))
    }

    fn trim(self: Arc<Self>) -> HistoryFuture<()> {
        Box::pin(self.trim_topics())
    }

    fn check(self: Arc<Self>) -> HistoryFuture<()> {
        Box::pin(async move { self.check_now().await })
    }

    fn len(&self) -> usize {
        self.approx_len.load(Ordering::Relaxed)
    }

    fn role(self: Arc<Self>) -> HistoryRole {
        HistoryRole::SharedLog(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_sort_like_entry_ids() {
        let ids = [
            "0-0",
            "0-1",
            "1-0",
            "1700000000000-0",
            "1700000000000-7",
            "1700000000001-0",
        ];
        let seqs: Vec<u64> = ids.iter().map(|id| seq_of(id).expect("in range")).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        for (id, seq) in ids.iter().zip(seqs) {
            assert_eq!(entry_of(seq), *id);
        }
        assert_eq!(seq_of("nonsense"), None);
        assert_eq!(seq_of("1-99999999"), None);
    }

    #[tokio::test]
    async fn a_redis_that_does_not_answer_is_waited_for_and_a_bad_url_is_an_error() {
        // A port that was free a moment ago: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("a free port");
        let url = format!("redis://127.0.0.1:{port}/0");
        // The start goes on (the instance serves, not ready), and each command says why it fails.
        let history = RedisHistory::connect(&url, "ssehub-test", 0)
            .await
            .expect("an unreachable Redis does not stop the start");
        assert!(history.started_unreachable_ms.is_some());
        match history.ping().await {
            Err(error @ HistoryError::Redis(_)) => {
                assert_eq!(error.to_string(), "Redis does not answer");
                assert!(
                    std::error::Error::source(&error).is_some(),
                    "the cause is kept"
                );
            }
            other => panic!("expected a Redis error, got {other:?}"),
        }
        match RedisHistory::connect("not-a-url", "ssehub-test", 0).await {
            Err(error @ HistoryError::Redis(_)) => assert_eq!(
                error.to_string(),
                "the Redis URL or connection settings are invalid"
            ),
            other => panic!("expected a Redis error, got {other:?}"),
        }
    }
}
