//! The writer task: the only writer of the log. It takes every publish queued meanwhile, appends
//! them to the history in one batch (one transaction and one fsync for the durable store),
//! acknowledges each publisher, and passes the stored events on to the dispatcher in log order.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::PublishError;
use crate::event::Event;
use crate::history::{History, HistoryError, StoredEvent};

pub(super) struct PublishRequest {
    pub(super) event: Event,
    pub(super) ack: oneshot::Sender<Result<u64, PublishError>>,
}

/// Appends batches to the history in arrival order, acknowledges them, and passes them on to
/// the dispatcher. The only writer of the log, so log order is dispatch order.
pub(super) async fn run_writer(
    mut requests: mpsc::Receiver<PublishRequest>,
    history: Arc<dyn History>,
    // `None` when the history has a feed: then every instance dispatches what it reads back
    // from the shared log, including its own events.
    dispatch: Option<mpsc::Sender<Arc<StoredEvent>>>,
    shutdown: CancellationToken,
) {
    const MAX_BATCH: usize = 256;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // Time-based retention runs when the writer is otherwise idle.
    let mut trim_tick = tokio::time::interval(Duration::from_secs(1));
    trim_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            // Shutdown: stop taking publishes; queued ones fail with `ShuttingDown` when their
            // acknowledgement sender is dropped.
            () = shutdown.cancelled() => break,
            // Wait for at least one publish, then take whatever else is already queued: one
            // append (and, for the durable store, one fsync) for all of them.
            received = requests.recv_many(&mut batch, MAX_BATCH) => {
                if received == 0 {
                    break; // every Hub handle is gone
                }
            }
            _ = trim_tick.tick() => {
                if let Err(error) = history.clone().trim().await {
                    tracing::warn!(%error, "history retention failed");
                }
                continue;
            }
        }
        let (events, acks): (Vec<_>, Vec<_>) = batch.drain(..).map(|r| (r.event, r.ack)).unzip();
        match history.clone().append(events).await {
            Ok(stored) => {
                for (event, ack) in stored.into_iter().zip(acks) {
                    // The publisher may have given up waiting; the event is stored regardless.
                    let _ = ack.send(Ok(event.seq));
                    if let Some(dispatch) = &dispatch {
                        if dispatch.send(event).await.is_err() {
                            return;
                        }
                    }
                }
            }
            Err(error) => {
                let message = error.to_string();
                for ack in acks {
                    let _ = ack.send(Err(PublishError::Unavailable(HistoryError::Unavailable(
                        message.clone(),
                    ))));
                }
            }
        }
    }
}

/// Publishes subscription events (they go through the writer like any other update, so they are
/// stored, replayable and, with Redis, seen by every instance).
pub(super) async fn run_subscription_events(
    mut events: mpsc::UnboundedReceiver<Event>,
    writer: mpsc::Sender<PublishRequest>,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => break,
            event = events.recv() => match event {
                Some(event) => event,
                None => break,
            },
        };
        // Nobody waits for the acknowledgement.
        let (ack, _) = oneshot::channel();
        if writer.send(PublishRequest { event, ack }).await.is_err() {
            break;
        }
    }
}
