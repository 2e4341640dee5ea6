//! [`Wakeup`]: what the relay waits on between batches, a `NOTIFY` from the table's trigger or
//! the polling interval, whichever comes first.
//!
//! Notifications are fast but not enough: one sent while the relay was disconnected is lost,
//! and a row becomes claimable when an *older* transaction ends, which may notify nothing
//! (it inserted no row). The poll catches both.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Connection};
use tracing::{debug, warn};

/// The default polling interval.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Wakes the relay on a notification of its channel.
#[derive(Debug, Clone)]
pub struct Wakeup {
    /// Set by the connection task, taken by [`Self::wait`]; a permit is kept when nobody
    /// waits, so a notification between two waits is not lost.
    notified: Arc<Notify>,
    poll_interval: Duration,
}

impl Wakeup {
    /// A wakeup polling every `poll_interval`.
    pub fn new(poll_interval: Duration) -> Self {
        Self {
            notified: Arc::new(Notify::new()),
            poll_interval,
        }
    }

    /// Drives `connection` (tokio-postgres needs its connection polled for any query to make
    /// progress) until it ends, waking the relay on each notification of `channel`.
    pub async fn drive<S, T>(&self, mut connection: Connection<S, T>, channel: String)
    where
        S: AsyncRead + AsyncWrite + Unpin,
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(note)) if note.channel() == channel => {
                    self.notified.notify_one();
                }
                Ok(AsyncMessage::Notice(notice)) => debug!(%notice, "outbox database notice"),
                Ok(_) => {}
                Err(error) => {
                    warn!(%error, "outbox database connection failed");
                    break;
                }
            }
        }
        // Wake the relay so its next statement finds the connection closed.
        self.notified.notify_one();
    }

    /// Waits for a notification or the polling interval.
    pub async fn wait(&self) {
        // Either branch only ends the wait.
        tokio::select! {
            () = self.notified.notified() => {}
            () = tokio::time::sleep(self.poll_interval) => {}
        }
    }
}
