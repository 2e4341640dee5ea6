//! The writer task: the only writer of the log. It takes every publish queued meanwhile, appends
//! them to the history in one batch (one transaction and one fsync for the durable store),
//! acknowledges each publisher, and passes the stored events on to the dispatcher in log order
//! (unless the log is a shared one, whose feed dispatches: [`AfterAppend`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{PublishError, PublishReceipt};
use crate::event::Event;
use crate::history::{Append, Appended, History, Sources};
use crate::telemetry::{now_us, LiveEvent, Stamp, Tracing};

pub(super) struct PublishRequest {
    pub(super) append: Append,
    pub(super) ack: oneshot::Sender<Result<PublishReceipt, PublishError>>,
}

/// The publisher's answer for what its publish became.
fn receipt(appended: &Appended) -> Result<PublishReceipt, PublishError> {
    match appended {
        Appended::Stored(event) => Ok(PublishReceipt {
            id: event.id.clone(),
            seq: event.seq,
            retry: false,
        }),
        Appended::Retry { id, seq } => Ok(PublishReceipt {
            id: id.clone(),
            seq: *seq,
            retry: true,
        }),
        Appended::Spooled { id } => Ok(PublishReceipt {
            id: id.clone(),
            seq: 0,
            retry: false,
        }),
        Appended::KeyReused { id } => Err(PublishError::KeyReused { id: id.clone() }),
    }
}

/// What the writer does with the events it stored, by the history's role
/// ([`crate::history::HistoryRole`]).
pub(super) enum AfterAppend {
    /// A local log: pass them on to the dispatcher, in log order.
    Dispatch(mpsc::Sender<LiveEvent>),
    /// A shared log: nothing. Its feed reads back every instance's events, these included, and
    /// dispatches them, so that every instance delivers in the log's one order.
    LeaveToFeed,
}

/// Appends batches to the history in arrival order, acknowledges them, and passes them on to
/// the dispatcher. The only writer of the log, so log order is dispatch order.
pub(super) async fn run_writer(
    mut requests: mpsc::Receiver<PublishRequest>,
    history: Arc<dyn History>,
    after_append: AfterAppend,
    tracing: Tracing,
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
                    tracing::warn!(error = %Sources::of(&error), "history retention failed");
                }
                continue;
            }
        }
        let (appends, acks): (Vec<_>, Vec<_>) = batch.drain(..).map(|r| (r.append, r.ack)).unzip();
        // The stamps go to the dispatcher with the events (a shared log stores them itself).
        let stamps: Vec<Stamp> = appends.iter().map(|append| append.stamp.clone()).collect();
        let traced = stamps.iter().any(|stamp| stamp.trace.is_some());
        let started_us = if traced { now_us() } else { 0 };
        match history.clone().append(appends).await {
            Ok(appended) => {
                if traced {
                    record_store_spans(&tracing, &stamps, &appended, started_us);
                }
                for ((appended, ack), stamp) in appended.into_iter().zip(acks).zip(stamps) {
                    // The publisher may have given up waiting; the event is stored regardless.
                    let _ = ack.send(receipt(&appended));
                    // A retry was delivered when it was first stored.
                    let Appended::Stored(event) = appended else {
                        continue;
                    };
                    match &after_append {
                        AfterAppend::Dispatch(dispatch) => {
                            if dispatch.send(LiveEvent::new(event, stamp)).await.is_err() {
                                return;
                            }
                        }
                        AfterAppend::LeaveToFeed => {}
                    }
                }
            }
            Err(error) => {
                // Each publisher's answer logs it (`http::ApiError`).
                for ack in acks {
                    let _ = ack.send(Err(PublishError::History(error.clone())));
                }
            }
        }
    }
}

/// The `store` span of each traced publish of a batch, with the id it was stored under.
fn record_store_spans(tracing: &Tracing, stamps: &[Stamp], appended: &[Appended], started: u64) {
    let traces: Vec<_> = stamps.iter().map(|stamp| stamp.trace.clone()).collect();
    let ids: Vec<Option<&str>> = appended
        .iter()
        .map(|appended| match appended {
            Appended::Stored(event) => Some(event.id.as_str()),
            Appended::Retry { id, .. } | Appended::Spooled { id } => Some(id.as_str()),
            Appended::KeyReused { .. } => None,
        })
        .collect();
    tracing.stored(&traces, &ids, started);
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
        let append = Append {
            stamp: Stamp::now(None),
            ..Append::from(event)
        };
        if writer.send(PublishRequest { append, ack }).await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::history::{
        HistoryError, HistoryFuture, MemoryHistory, Page, ReplayFrom, ReplayStart,
    };

    /// The in-memory store, recording the size of each append; or failing every append.
    struct Recording {
        store: Arc<MemoryHistory>,
        appends: Mutex<Vec<usize>>,
        fail: bool,
    }

    impl Recording {
        fn new(fail: bool) -> Arc<Self> {
            Arc::new(Self {
                store: Arc::new(MemoryHistory::new(1000)),
                appends: Mutex::new(Vec::new()),
                fail,
            })
        }
    }

    impl History for Recording {
        fn append(self: Arc<Self>, batch: Vec<Append>) -> HistoryFuture<Vec<Appended>> {
            self.appends.lock().unwrap().push(batch.len());
            if self.fail {
                return Box::pin(std::future::ready(Err(HistoryError::Reopening)));
            }
            self.store.clone().append(batch)
        }
        fn locate(self: Arc<Self>, from: ReplayFrom) -> HistoryFuture<ReplayStart> {
            self.store.clone().locate(from)
        }
        fn read_page(
            self: Arc<Self>,
            after_seq: u64,
            through_seq: u64,
            max_events: usize,
        ) -> HistoryFuture<Page> {
            self.store
                .clone()
                .read_page(after_seq, through_seq, max_events)
        }
        fn len(&self) -> usize {
            self.store.len()
        }
    }

    type Acked = oneshot::Receiver<Result<PublishReceipt, PublishError>>;

    fn request(data: &str) -> (PublishRequest, Acked) {
        let (ack, acked) = oneshot::channel();
        let append = Append::from(Event::new("t", data));
        (PublishRequest { append, ack }, acked)
    }

    #[tokio::test]
    async fn publishes_queued_meanwhile_are_one_append_acknowledged_and_dispatched_in_order() {
        let history = Recording::new(false);
        let (requests, requests_rx) = mpsc::channel(16);
        let (dispatch, mut dispatched) = mpsc::channel(16);
        let mut acks = Vec::new();
        for i in 0..5 {
            let (request, acked) = request(&format!("e{i}"));
            requests.send(request).await.unwrap();
            acks.push(acked);
        }
        let shutdown = CancellationToken::new();
        let writer = tokio::spawn(run_writer(
            requests_rx,
            history.clone(),
            AfterAppend::Dispatch(dispatch),
            Tracing::off(),
            shutdown.clone(),
        ));
        let mut seqs = Vec::new();
        for acked in acks {
            seqs.push(acked.await.unwrap().unwrap().seq);
        }
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        assert_eq!(
            *history.appends.lock().unwrap(),
            [5],
            "one append for the batch"
        );
        for (i, seq) in seqs.iter().enumerate() {
            let event = dispatched.recv().await.unwrap();
            assert_eq!(event.event.seq, *seq);
            assert!(std::str::from_utf8(&event.event.frame)
                .unwrap()
                .ends_with(&format!("data: e{i}\n\n")));
        }
        shutdown.cancel();
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_store_failure_fails_every_publish_of_the_batch_and_dispatches_nothing() {
        let history = Recording::new(true);
        let (requests, requests_rx) = mpsc::channel(16);
        let (dispatch, mut dispatched) = mpsc::channel(16);
        let mut acks = Vec::new();
        for i in 0..3 {
            let (request, acked) = request(&format!("e{i}"));
            requests.send(request).await.unwrap();
            acks.push(acked);
        }
        drop(requests);
        run_writer(
            requests_rx,
            history,
            AfterAppend::Dispatch(dispatch),
            Tracing::off(),
            CancellationToken::new(),
        )
        .await;
        for acked in acks {
            assert!(matches!(
                acked.await.unwrap(),
                Err(PublishError::History(HistoryError::Reopening))
            ));
        }
        assert!(dispatched.recv().await.is_none(), "nothing was dispatched");
    }

    #[tokio::test]
    async fn with_a_shared_log_the_writer_appends_but_does_not_dispatch() {
        // The feed of a shared log dispatches every instance's events, these included.
        let history = Recording::new(false);
        let (requests, requests_rx) = mpsc::channel(16);
        let (request, acked) = request("e");
        requests.send(request).await.unwrap();
        drop(requests);
        run_writer(
            requests_rx,
            history.clone(),
            AfterAppend::LeaveToFeed,
            Tracing::off(),
            CancellationToken::new(),
        )
        .await;
        assert_eq!(acked.await.unwrap().unwrap().seq, 1);
        assert_eq!(history.len(), 1);
    }

    #[tokio::test]
    async fn publishes_still_queued_at_shutdown_fail_as_shutting_down() {
        let history = Recording::new(false);
        let (requests, requests_rx) = mpsc::channel(16);
        let (request, acked) = request("late");
        requests.send(request).await.unwrap();
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        run_writer(
            requests_rx,
            history.clone(),
            AfterAppend::LeaveToFeed,
            Tracing::off(),
            shutdown,
        )
        .await;
        drop(requests);
        // The request was never taken: its acknowledgement sender went with the channel.
        assert!(acked.await.is_err());
        assert!(history.appends.lock().unwrap().is_empty());
    }
}
