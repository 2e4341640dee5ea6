//! Retention per topic on the Redis history ([`crate::history::retention_rules`] says what the
//! rules mean), applied from the writer's periodic trim of every instance.
//!
//! Data layout, next to the stream (prefix `ssehub`):
//! - `ssehub:rt:t:<topic>`, a sorted set per ruled topic: the entries that topic still keeps,
//!   members `<ms>-<n>` zero-padded (so that entries of one millisecond sort in stream order),
//!   scored by their millisecond;
//! - `ssehub:rt:rules`, a hash: ruled topic → `"<max_events> <max_age_ms>"` (0: no limit). A
//!   topic that is not in it is under no rule, so an event with such a topic is never dropped
//!   by the rules;
//! - `ssehub:rt:due`, a sorted set: topic with a `max_age` → when its oldest entry expires;
//! - `ssehub:rt:seen`, a sorted set: ruled topic → the millisecond of its newest entry, to
//!   forget topics whose every entry the global limit (`max_len`) already dropped;
//! - in `ssehub:meta`: `rt_cursor`, the last stream entry indexed (shared by every instance),
//!   and `rt_rules`, the rules' fingerprint.
//!
//! An entry the rules delete leaves `ssehub:ids` and `ssehub:ids_last` as the publish script's
//! global trim leaves them for the entries it drops.
//!
//! One trim: the instance reads `rt_cursor` and the entries after it (at most
//! [`INDEX_BUDGET`]), decides in Rust which rule each topic falls under (URI templates are
//! matched here, not in Lua), and runs [`TRIM_SCRIPT`] once. The script, atomic like every Lua
//! script, indexes those entries only if `rt_cursor` is still what the instance read (another
//! instance may have indexed them meanwhile: then it indexes nothing), trims each touched topic
//! to its `max_events`, expires at most [`SWEEP_BUDGET`] due topics, and forgets as many dead
//! topics. An entry that a topic lets go is deleted (`XDEL`, with its id in `ssehub:ids`) when
//! none of its other topics keeps it, which the script reads from the record itself. So the cost
//! of a trim is bounded by the budgets, whatever the number of topics, and several instances
//! trimming at once do each step once. Time is Redis's (`TIME`), the clock of the entry ids.
//! The script names keys it builds from the prefix (not declared in `KEYS`): fine on a single
//! Redis, as the history requires, not on Redis Cluster.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use redis::streams::StreamRangeReply;
use redis::Script;

use super::RedisHistory;
use crate::history::record::decode_topics;
use crate::history::{HistoryError, RetentionRules};

/// Most stream entries one trim indexes.
const INDEX_BUDGET: usize = 1000;
/// Most due topics one trim expires (and dead topics it forgets).
const SWEEP_BUDGET: usize = 256;

/// Retention per topic of one Redis history.
pub(super) struct TopicRetention {
    rules: RetentionRules,
    script: Script,
    /// `ssehub:rt:`
    prefix: String,
}

impl TopicRetention {
    pub(super) fn new(rules: RetentionRules, key_prefix: &str) -> Self {
        Self {
            rules,
            script: Script::new(TRIM_SCRIPT),
            prefix: format!("{key_prefix}:rt:"),
        }
    }
}

/// See the module doc. KEYS: stream, ids, meta, ids_last. ARGV: the `rt:` prefix, the cursor read, the
/// new cursor, the sweep budget, the number of entries, then per entry its id, its number of
/// ruled topics and, per ruled topic, the topic, `max_events` and `max_age_ms` (0: none).
/// Returns how many entries it deleted and the stream's length.
pub(super) const TRIM_SCRIPT: &str = r"
local stream, ids, meta, ids_last = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local p = ARGV[1]
local rules, due, seen = p .. 'rules', p .. 'due', p .. 'seen'
local budget = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dropped = 0

local function member_of(entry)
  local ms, n = string.match(entry, '^(%d+)-(%d+)$')
  return string.format('%015d-%07d', tonumber(ms), tonumber(n)), tonumber(ms)
end
local function entry_of(member)
  local ms, n = string.match(member, '^(%d+)-(%d+)$')
  return tonumber(ms) .. '-' .. tonumber(n)
end
local function u32(s, pos)
  local a, b, c, d = string.byte(s, pos, pos + 3)
  return ((a * 256 + b) * 256 + c) * 256 + d
end
-- The record (record.rs): format, flags, stored_at (10 bytes), id, then the topics.
local function topics_of(record)
  local pos = 11
  pos = pos + 4 + u32(record, pos)
  local hi, lo = string.byte(record, pos, pos + 1)
  pos = pos + 2
  local out = {}
  for i = 1, hi * 256 + lo do
    local len = u32(record, pos)
    out[i] = string.sub(record, pos + 4, pos + 3 + len)
    pos = pos + 4 + len
  end
  return out
end
-- `topic` no longer keeps `member`: delete its entry unless another of its topics keeps it.
local function release(member, topic)
  local entry = entry_of(member)
  local found = redis.call('XRANGE', stream, entry, entry)
  if #found == 0 then return end
  local fields, id, record = found[1][2], nil, nil
  for f = 1, #fields, 2 do
    if fields[f] == 'i' then id = fields[f + 1] elseif fields[f] == 'e' then record = fields[f + 1] end
  end
  if not record then return end
  for _, other in ipairs(topics_of(record)) do
    if other ~= topic then
      if redis.call('HEXISTS', rules, other) == 0 then return end
      if redis.call('ZSCORE', p .. 't:' .. other, member) then return end
    end
  end
  redis.call('XDEL', stream, entry)
  -- The id index as the publish script's global trim keeps it: `ids` holds the earliest
  -- occurrence, `ids_last` the newest of a reused id.
  if id then
    local last = redis.call('HGET', ids_last, id)
    if last == entry then redis.call('HDEL', ids_last, id) end
    if redis.call('HGET', ids, id) == entry then
      if last and last ~= entry then redis.call('HSET', ids, id, last) else redis.call('HDEL', ids, id) end
    end
  end
  dropped = dropped + 1
end

-- 1. Index the entries after the cursor, unless another instance did.
if (redis.call('HGET', meta, 'rt_cursor') or '') == ARGV[2] then
  local i = 6
  for _ = 1, tonumber(ARGV[5]) do
    local member, ms = member_of(ARGV[i])
    local count = tonumber(ARGV[i + 1])
    i = i + 2
    for _ = 1, count do
      local topic, max_events, max_age = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
      i = i + 3
      local key = p .. 't:' .. topic
      redis.call('ZADD', key, ms, member)
      redis.call('HSET', rules, topic, max_events .. ' ' .. max_age)
      redis.call('ZADD', seen, ms, topic)
      if max_age > 0 then redis.call('ZADD', due, 'NX', ms + max_age, topic) end
      if max_events > 0 then
        local excess = redis.call('ZCARD', key) - max_events
        if excess > 0 then
          local old = redis.call('ZRANGE', key, 0, excess - 1)
          redis.call('ZREMRANGEBYRANK', key, 0, excess - 1)
          for _, m in ipairs(old) do release(m, topic) end
        end
      end
    end
  end
  redis.call('HSET', meta, 'rt_cursor', ARGV[3])
end

-- 2. Expire the topics whose oldest entry is older than their max_age.
for _, topic in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, budget)) do
  local key = p .. 't:' .. topic
  local rule = redis.call('HGET', rules, topic)
  local max_age = rule and tonumber(string.match(rule, ' (%d+)$')) or 0
  if max_age > 0 then
    local old = redis.call('ZRANGEBYSCORE', key, '-inf', '(' .. (now - max_age), 'LIMIT', 0, budget)
    for _, m in ipairs(old) do
      redis.call('ZREM', key, m)
      release(m, topic)
    end
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if #first == 0 then
      redis.call('ZREM', due, topic)
    else
      redis.call('ZADD', due, tonumber(first[2]) + max_age, topic)
    end
  else
    redis.call('ZREM', due, topic)
  end
end

-- 3. Forget the topics whose every entry the global limit dropped.
local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
local horizon = '+inf'
if #oldest > 0 then
  local _, ms = member_of(oldest[1][1])
  horizon = '(' .. ms
end
for _, topic in ipairs(redis.call('ZRANGEBYSCORE', seen, '-inf', horizon, 'LIMIT', 0, budget)) do
  redis.call('DEL', p .. 't:' .. topic)
  redis.call('HDEL', rules, topic)
  redis.call('ZREM', due, topic)
  redis.call('ZREM', seen, topic)
end
return {dropped, redis.call('XLEN', stream)}
";

impl RedisHistory {
    /// One trim of retention per topic (see the module doc); nothing without rules.
    ///
    /// # Errors
    /// [`HistoryError::Redis`] when Redis cannot be reached or refuses the script.
    pub(super) async fn trim_topics(self: Arc<Self>) -> Result<(), HistoryError> {
        let Some(retention) = &self.topic_retention else {
            return Ok(());
        };
        let (cursor, fingerprint): (Option<String>, Option<String>) = self
            .read_retrying(
                redis::pipe()
                    .cmd("HGET")
                    .arg(&self.keys.meta)
                    .arg("rt_cursor")
                    .cmd("HGET")
                    .arg(&self.keys.meta)
                    .arg("rt_rules"),
            )
            .await?;
        let ours = retention.rules.fingerprint();
        if fingerprint.as_deref() != Some(ours.as_str()) {
            if let Some(theirs) = fingerprint {
                tracing::warn!(
                    ours = %ours,
                    theirs = %theirs,
                    "the retention rules differ between instances sharing this Redis; the last \
                     instance to start decides how entries indexed from now on are kept"
                );
            }
            let mut connection = self.commands.clone();
            redis::cmd("HSET")
                .arg(&self.keys.meta)
                .arg("rt_rules")
                .arg(&ours)
                .query_async::<i64>(&mut connection)
                .await?;
        }
        let cursor = cursor.unwrap_or_default();
        let start = if cursor.is_empty() {
            "-".to_owned()
        } else {
            format!("({cursor}")
        };
        let mut connection = self.commands.clone();
        let entries: StreamRangeReply = redis::cmd("XRANGE")
            .arg(&self.keys.stream)
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(INDEX_BUDGET)
            .query_async(&mut connection)
            .await?;
        let next_cursor = entries
            .ids
            .last()
            .map_or_else(|| cursor.clone(), |e| e.id.clone());
        let mut invocation = retention.script.prepare_invoke();
        invocation
            .key(&self.keys.stream)
            .key(&self.keys.ids)
            .key(&self.keys.meta)
            .key(&self.keys.ids_last)
            .arg(&retention.prefix)
            .arg(&cursor)
            .arg(&next_cursor)
            .arg(SWEEP_BUDGET)
            .arg(entries.ids.len());
        for entry in &entries.ids {
            let topics = super::field_bytes(entry, "e")
                .and_then(|record| decode_topics(record).ok())
                .map(|(_, topics)| topics)
                .unwrap_or_default();
            let ruled = retention.rules.classify(&topics).ruled;
            invocation.arg(&entry.id).arg(ruled.len());
            for (topic, index) in ruled {
                let rule = &retention.rules.rules()[index];
                invocation
                    .arg(topic)
                    .arg(rule.max_events.unwrap_or(0))
                    .arg(rule.max_age_ms().unwrap_or(0));
            }
        }
        let (dropped, len): (i64, i64) = invocation.invoke_async(&mut connection).await?;
        // What the rules dropped shows in the history's length (and `/metrics`) at once.
        self.approx_len
            .store(usize::try_from(len).unwrap_or(0), Ordering::Relaxed);
        if dropped > 0 {
            tracing::trace!(dropped, "retention per topic");
        }
        Ok(())
    }
}
