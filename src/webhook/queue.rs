//! The bounded queue of webhook notifications between the hub's paths that open and close
//! subscriptions (which push, never waiting) and the delivery task (which peeks at the oldest,
//! and removes them only once a receiver answered 2xx: at-least-once).
//!
//! Full, it drops the oldest notification to make room (the newest say most about the present
//! state, and a full list follows anyway), counted in `ssehub_webhook_dropped_total`. Each
//! notification is serialized once, when it is pushed, and numbered: `seq` grows by one per
//! notification of this instance, so a receiver can tell a retried batch and a gap.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::json;
use tokio::sync::Notify;

use crate::hub::subscription_events::subscription_event_document;
use crate::hub::{CloseReason, SubscriberInfo};
use crate::metrics::WebhookMetrics;

/// One notification, as it goes into a batch's `events` array.
#[derive(Debug, Clone)]
pub(crate) struct Notification {
    /// Its number in this instance's sequence (from 1).
    pub(crate) seq: u64,
    /// Its JSON object, serialized once.
    pub(crate) json: Arc<str>,
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Notification>,
    /// The last `seq` given out.
    last_seq: u64,
    /// No more notifications will be made (shutdown): the delivery task ends once it is empty.
    closed: bool,
}

/// Webhook notifications waiting for delivery, at most `capacity`.
#[derive(Debug)]
pub struct NotificationQueue {
    capacity: usize,
    /// Locked for a push, a peek or a removal: never across an `.await`.
    state: Mutex<State>,
    /// Wakes the delivery task after a push or the close.
    changed: Notify,
    metrics: WebhookMetrics,
}

impl NotificationQueue {
    /// An empty queue of at most `capacity` notifications (at least 1).
    pub(crate) fn new(capacity: usize, metrics: WebhookMetrics) -> Self {
        Self {
            capacity: capacity.max(1),
            state: Mutex::default(),
            changed: Notify::new(),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change is a single push, pop or flag: a panic elsewhere cannot leave it torn.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues the notifications of `info`'s subscriptions (one per topic selector, each with
    /// the document its subscription event carries): opened when `closed` is `None`, else
    /// closed for that reason.
    pub(crate) fn push_change(&self, info: &SubscriberInfo, closed: Option<CloseReason>) {
        let active = closed.is_none();
        let at_ms = super::unix_ms();
        let objects: Vec<_> = info
            .selections()
            .map(|selection| {
                let mut object = json!({
                    "type": if active { "opened" } else { "closed" },
                    "at": at_ms,
                    "subscription": subscription_event_document(info, selection, active),
                });
                if let (Some(reason), Some(map)) = (closed, object.as_object_mut()) {
                    map.insert("reason".into(), json!(reason.as_str()));
                }
                object
            })
            .collect();
        let mut state = self.lock();
        for mut object in objects {
            state.last_seq += 1;
            let seq = state.last_seq;
            if let Some(map) = object.as_object_mut() {
                map.insert("seq".into(), json!(seq));
            }
            if state.items.len() >= self.capacity {
                state.items.pop_front();
                self.metrics.dropped.inc();
            }
            state.items.push_back(Notification {
                seq,
                json: object.to_string().into(),
            });
        }
        self.metrics.queued.set(state.items.len() as i64);
        drop(state);
        self.changed.notify_one();
    }

    /// The oldest notifications, at most `max`, left in the queue.
    pub(crate) fn peek(&self, max: usize) -> Vec<Notification> {
        self.lock().items.iter().take(max).cloned().collect()
    }

    /// Removes the notifications up to `seq` (delivered); those dropped meanwhile are gone
    /// already. Returns how many it removed.
    pub(crate) fn remove_through(&self, seq: u64) -> usize {
        let mut state = self.lock();
        let mut removed = 0;
        while state.items.front().is_some_and(|n| n.seq <= seq) {
            state.items.pop_front();
            removed += 1;
        }
        self.metrics.queued.set(state.items.len() as i64);
        removed
    }

    /// How many notifications wait.
    pub(crate) fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// No more notifications will come (pushes still go in, for a close racing the shutdown).
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_one();
    }

    /// Whether [`Self::close`] was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Waits until something is queued or the queue is closed.
    pub(crate) async fn wait(&self) {
        loop {
            // Registered before the check, so a push between the check and the wait wakes it.
            let changed = self.changed.notified();
            {
                let state = self.lock();
                if !state.items.is_empty() || state.closed {
                    return;
                }
            }
            changed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn info(uri: &str, topics: &[&str]) -> SubscriberInfo {
        SubscriberInfo {
            id: 1,
            uri: uri.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            matcher_types: Vec::new(),
            remote_addr: None,
            payload: None,
            connected_at: SystemTime::now(),
        }
    }

    fn seqs(queue: &NotificationQueue) -> Vec<u64> {
        queue.peek(usize::MAX).iter().map(|n| n.seq).collect()
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_them() {
        let metrics = WebhookMetrics::default();
        let queue = NotificationQueue::new(3, metrics.clone());
        for n in 0..5 {
            queue.push_change(&info(&format!("urn:s:{n}"), &["/t"]), None);
        }
        assert_eq!(seqs(&queue), [3, 4, 5]);
        assert_eq!(metrics.dropped.get(), 2);
        assert_eq!(metrics.queued.get(), 3);
        // One subscriber with two topics: two notifications, numbered in order.
        queue.push_change(&info("urn:s:x", &["/a", "/b"]), Some(CloseReason::Timeout));
        assert_eq!(seqs(&queue), [5, 6, 7]);
        assert_eq!(metrics.dropped.get(), 4);
        let last: serde_json::Value = serde_json::from_str(&queue.peek(3)[2].json).expect("JSON");
        assert_eq!(last["type"], "closed");
        assert_eq!(last["reason"], "timeout");
        assert_eq!(last["seq"], 7);
        assert_eq!(last["subscription"]["topic"], "/b");
        assert_eq!(last["subscription"]["active"], false);
    }

    #[test]
    fn delivered_notifications_leave_only_up_to_the_batch_end() {
        let queue = NotificationQueue::new(10, WebhookMetrics::default());
        for n in 0..4 {
            queue.push_change(&info(&format!("urn:s:{n}"), &["/t"]), None);
        }
        let batch = queue.peek(2);
        assert_eq!(batch.iter().map(|n| n.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(queue.remove_through(2), 2);
        assert_eq!(seqs(&queue), [3, 4]);
        assert_eq!(queue.remove_through(2), 0, "already removed");
    }

    #[tokio::test]
    async fn wait_returns_on_a_push_and_on_close() {
        let queue = Arc::new(NotificationQueue::new(10, WebhookMetrics::default()));
        let waiter = tokio::spawn({
            let queue = queue.clone();
            async move { queue.wait().await }
        });
        tokio::task::yield_now().await;
        queue.push_change(&info("urn:s:1", &["/t"]), None);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken by the push")
            .expect("task");
        queue.remove_through(1);
        let waiter = tokio::spawn({
            let queue = queue.clone();
            async move { queue.wait().await }
        });
        tokio::task::yield_now().await;
        queue.close();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken by the close")
            .expect("task");
    }
}
