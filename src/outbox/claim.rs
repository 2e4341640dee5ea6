//! Claiming a batch of outbox rows in commit order, and turning each into the hub's [`Event`].
//!
//! **Order.** A `bigserial` is not commit order: T1 takes seq 1, T2 takes seq 2 and commits
//! first, and a reader that saw 2 and moved past it never sees 1. The table records each row's
//! transaction id instead (`xid xid8 DEFAULT pg_current_xact_id()`), and a claim takes only
//! rows whose transaction is older than `pg_snapshot_xmin(pg_current_snapshot())`: every
//! transaction that could still commit a row with a smaller xid has ended, so once a row is
//! claimed no earlier one can appear. Rows are taken in `(xid, seq)` order. That is commit
//! order for transactions that do not overlap; two that overlap come out in the order they
//! got their xid (their first write), not the order they committed, and neither is skipped.
//! The cost: any long transaction on the cluster (even one that never touches the table)
//! holds the relay back until it ends.
//!
//! **Sharing.** `FOR UPDATE SKIP LOCKED`: a row another relay holds is left to it. Order across
//! instances comes from the leader lock ([`super::relay`]); the skip keeps a second claimer
//! (a leader taking over while the old one's last batch is still committing) from waiting or
//! taking a row twice.

use tokio_postgres::{Row, Transaction};

use super::{OutboxError, OutboxTable};
use crate::idempotency::IdempotencyKey;
use crate::Event;

/// One claimed row: its `seq` (to delete or mark it) and what it becomes.
#[derive(Debug)]
pub struct ClaimedRow {
    /// The row's `seq`, its primary key.
    pub seq: i64,
    /// The update and its idempotency key (the row's id), or why the row can never be one.
    pub update: Result<(Event, Option<IdempotencyKey>), String>,
}

/// Locks and reads up to `limit` rows of `table` in commit order, inside `transaction`.
///
/// # Errors
/// [`OutboxError::Database`] when the query fails.
pub async fn claim(
    transaction: &Transaction<'_>,
    table: &OutboxTable,
    limit: i64,
) -> Result<Vec<ClaimedRow>, OutboxError> {
    let rows = transaction.query(&table.claim_sql(), &[&limit]).await?;
    rows.iter().map(claimed_row).collect()
}

/// The row's update. A row whose values cannot be an event (a NULL topic, a negative retry)
/// is not an error of the claim: it is returned with the reason, to be marked failed.
fn claimed_row(row: &Row) -> Result<ClaimedRow, OutboxError> {
    let seq: i64 = row.try_get("seq")?;
    let update = update(row);
    Ok(ClaimedRow { seq, update })
}

fn update(row: &Row) -> Result<(Event, Option<IdempotencyKey>), String> {
    let read = |error: tokio_postgres::Error| format!("unreadable row: {error}");
    let id: Option<String> = row.try_get("id").map_err(read)?;
    let id = id.ok_or("id is NULL")?;
    let topics: Option<Vec<Option<String>>> = row.try_get("topics").map_err(read)?;
    let topics = topics
        .ok_or("topics is NULL")?
        .into_iter()
        .collect::<Option<Vec<String>>>()
        .ok_or("topics holds a NULL")?;
    let data: Option<String> = row.try_get("data").map_err(read)?;
    let private: Option<bool> = row.try_get("private").map_err(read)?;
    let event_type: Option<String> = row.try_get("type").map_err(read)?;
    let retry: Option<i32> = row.try_get("retry").map_err(read)?;
    let retry = retry
        .map(|retry| u64::try_from(retry).map_err(|_| format!("retry {retry} is negative")))
        .transpose()?;
    // The id as Idempotency-Key too: a retry is recognised even after its event left the
    // history's id lookup. An id that is not a valid key relies on the id match alone.
    let key = IdempotencyKey::parse(id.as_bytes()).ok();
    let event = Event {
        id,
        topics,
        data: data.unwrap_or_default(),
        event_type,
        retry,
        private: private.unwrap_or(false),
    };
    Ok((event, key))
}
