//! [`OutboxRelay`]: the loop that moves committed outbox rows into the hub, and reconnects
//! with backoff when the database goes away.
//!
//! A session: connect, `LISTEN` on the table's channel, become the table's **leader**
//! (`pg_try_advisory_lock`, held by the session: it goes when the connection does, so a
//! crashed leader's standby takes over at once), then repeat: in one transaction, claim a batch
//! ([`super::claim`]), publish it with [`Hub::publish_all`] (each row's id as the event id and
//! as `Idempotency-Key`), delete the published rows and mark the poison ones, commit. Rows are
//! deleted only after the hub acknowledged them (stored in history); a relay that dies between
//! the acknowledgement and the commit leaves the rows in the table, publishes them again after
//! the restart, and the hub recognises the retries (by key and by id), so nothing is delivered
//! twice as long as the history outlives the relay (the durable or Redis history).
//!
//! Only the leader claims, so rows leave the table in one order even with several instances;
//! the standbys retry the lock on every wakeup.

use std::time::Duration;

use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use super::claim::claim;
use super::{OutboxError, OutboxTable, Wakeup};
use crate::hub::PublishError;
use crate::Hub;

/// The relay's settings.
#[derive(Debug, Clone)]
pub struct OutboxSettings {
    /// The database (`postgres://user@host:port/db`), parsed.
    pub database: tokio_postgres::Config,
    /// The outbox table.
    pub table: OutboxTable,
    /// Most rows per claim (and per publish batch).
    pub batch_size: i64,
    /// The polling fallback when no notification comes.
    pub poll_interval: Duration,
}

impl OutboxSettings {
    /// Settings for `url` and `table` with the default batch size (500) and polling interval.
    ///
    /// # Errors
    /// [`OutboxError::Database`] for a URL tokio-postgres cannot read,
    /// [`OutboxError::TableName`] for a bad table name.
    pub fn new(url: &str, table: &str) -> Result<Self, OutboxError> {
        Ok(Self {
            database: url.parse()?,
            table: OutboxTable::new(table)?,
            batch_size: 500,
            poll_interval: super::wakeup::DEFAULT_POLL_INTERVAL,
        })
    }
}

/// The outbox relay of one hub.
#[derive(Debug)]
pub struct OutboxRelay {
    settings: OutboxSettings,
    hub: Hub,
}

/// Backoff between sessions: doubled after each failure, reset by a session that connected.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl OutboxRelay {
    /// A relay into `hub`.
    pub fn new(settings: OutboxSettings, hub: Hub) -> Self {
        Self { settings, hub }
    }

    /// Relays until `shutdown` is cancelled, reconnecting after every failure.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = FIRST_BACKOFF;
        let table = self.settings.table.name().to_owned();
        // Until the first connection, the database is not known to be reachable.
        self.hub.set_outbox_reachable(false);
        loop {
            let ended = tokio::select! {
                // Shutdown: the open transaction (if any) is dropped, and rolled back with the
                // connection; its rows are claimed again by the next leader.
                () = shutdown.cancelled() => break,
                ended = self.session(&mut backoff) => ended,
            };
            self.hub.set_outbox_reachable(false);
            let metrics = self.hub.metrics();
            metrics.outbox_connected.set(0);
            metrics.outbox_leader.set(0);
            if let Err(error) = ended {
                warn!(%error, table, retry_in = ?backoff, "outbox relay interrupted");
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        let metrics = self.hub.metrics();
        metrics.outbox_connected.set(0);
        metrics.outbox_leader.set(0);
    }

    /// One connection's life: lead, then relay batches until something fails.
    async fn session(&self, backoff: &mut Duration) -> Result<(), OutboxError> {
        let settings = &self.settings;
        let (mut client, connection) = settings.database.connect(NoTls).await?;
        let wakeup = Wakeup::new(settings.poll_interval);
        let driver = wakeup.clone();
        let channel = settings.table.channel().to_owned();
        let connection_task = tokio::spawn(
            async move { driver.drive(connection, channel).await }
                .instrument(tracing::info_span!("outbox_connection")),
        );
        // Ends the connection task with the session (the client's drop closes it, too).
        let _guard = AbortOnDrop(connection_task);
        client.batch_execute(&settings.table.listen_sql()).await?;
        let metrics = self.hub.metrics();
        metrics.outbox_connected.set(1);
        self.hub.set_outbox_reachable(true);
        *backoff = FIRST_BACKOFF;
        info!(table = settings.table.name(), "outbox relay connected");

        let key = settings.table.lock_key();
        let mut waiting_logged = false;
        loop {
            let row = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
                .await?;
            if row.try_get::<_, bool>(0)? {
                break;
            }
            if !waiting_logged {
                info!(
                    table = settings.table.name(),
                    "outbox relay standing by: another instance leads this table"
                );
                waiting_logged = true;
            }
            wakeup.wait().await;
        }
        metrics.outbox_leader.set(1);
        info!(table = settings.table.name(), "outbox relay leading");
        loop {
            let relayed = self.relay_batch(&mut client).await?;
            if relayed < settings.batch_size as usize {
                wakeup.wait().await;
            }
        }
    }

    /// Claims, publishes and removes one batch; returns how many rows it took.
    async fn relay_batch(&self, client: &mut Client) -> Result<usize, OutboxError> {
        let table = &self.settings.table;
        let transaction = client.transaction().await?;
        let rows = claim(&transaction, table, self.settings.batch_size).await?;
        if rows.is_empty() {
            transaction.commit().await?;
            return Ok(0);
        }
        let claimed = rows.len();
        let mut seqs = Vec::with_capacity(claimed);
        let mut updates = Vec::with_capacity(claimed);
        let mut failed: Vec<(i64, String)> = Vec::new();
        for row in rows {
            match row.update {
                Ok(update) => {
                    seqs.push(row.seq);
                    updates.push(update);
                }
                Err(reason) => failed.push((row.seq, reason)),
            }
        }
        let mut published = Vec::with_capacity(seqs.len());
        let mut interrupted = None;
        for (seq, receipt) in seqs.into_iter().zip(self.hub.publish_all(updates).await) {
            match receipt {
                Ok(_) => published.push(seq),
                // The row itself is wrong: it would fail every time.
                Err(PublishError::Invalid(error)) => failed.push((seq, error.to_string())),
                Err(error @ PublishError::KeyReused { .. }) => {
                    failed.push((seq, error.to_string()));
                }
                // The hub cannot store now: keep this row and every later one (order), remove
                // what was stored before it.
                Err(error) => {
                    interrupted = Some(error);
                    break;
                }
            }
        }
        if !published.is_empty() {
            transaction
                .execute(&table.delete_sql(), &[&published])
                .await?;
        }
        let fail = table.fail_sql();
        for (seq, reason) in &failed {
            warn!(
                table = table.name(),
                seq, reason, "outbox row cannot be published: marked failed"
            );
            transaction.execute(&fail, &[seq, reason]).await?;
        }
        transaction.commit().await?;
        let metrics = self.hub.metrics();
        metrics.outbox_relayed.inc_by(published.len() as u64);
        metrics.outbox_failed.inc_by(failed.len() as u64);
        match interrupted {
            Some(error) => Err(OutboxError::Publish(error)),
            None => Ok(claimed),
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
