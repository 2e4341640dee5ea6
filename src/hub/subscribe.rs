//! Opening a subscription: validate and compile the selectors, register the subscriber first,
//! locate the replay's start in history, and hand the stream its registration.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use tracing::info;

use super::registry::RegisterError;
use super::stream::{ReplayCursor, SubscriptionStream};
use super::subscriber::{Subscriber, SubscriberQueue};
use super::{
    CloseReason, Hub, Shared, SubscribeError, SubscribeRequest, SubscriberId, SubscriberInfo,
    Subscription,
};
use crate::auth::SubscriberGrant;
use crate::history::{ReplayFrom, ReplayStart};
use crate::topic::{MatcherType, TopicMatcher, TopicSelector};

/// Unregisters a subscriber that never got its stream (and runs its close hooks).
struct Registration<'a> {
    shared: &'a Shared,
    id: SubscriberId,
    armed: bool,
    /// The close reason if it never gets a stream: the caller gave up, unless set otherwise.
    reason: CloseReason,
}

impl Registration<'_> {
    /// The stream owns the registration from now on.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.release(self.id, self.reason);
        }
    }
}

/// The in-band loss signal: the first frame of a stream whose replay cannot be gap-free (the
/// requested id is unknown, or retention dropped events after it). An event of the reserved
/// `mercure` type, which `onmessage` handlers never see and publishers cannot send, whose JSON
/// data names the id the client asked for and the one replay resumes after (`earliest`: the
/// oldest event kept), so that a page that listens for it knows to refetch its state.
fn replay_gap_signal(requested: &str, resumed_after: &str) -> bytes::Bytes {
    let data = serde_json::json!({
        "type": "replayGap",
        "requestedId": requested,
        "resumedAfter": resumed_after,
    });
    crate::wire::encode_hub_signal(&data.to_string())
}

/// One subscription's selectors, compiled, and their texts and matcher types.
struct Compiled {
    topics: Vec<String>,
    matcher_types: Vec<MatcherType>,
    selectors: Vec<TopicSelector>,
}

impl Hub {
    /// The selectors of one subscription, compiled (through the shared cache): draft-07
    /// `topic`s first, then draft-08 matchers; and the texts listed as the subscriber's topics,
    /// with the types of the matchers among them.
    fn compile_selectors(
        &self,
        mut topics: Vec<String>,
        matchers: Vec<TopicMatcher>,
    ) -> Result<Compiled, SubscribeError> {
        let cache = &self.inner.selectors;
        let mut selectors: Vec<_> = topics.iter().map(|t| cache.get(t)).collect();
        let matcher_types = matchers.iter().map(|m| m.kind).collect();
        for matcher in matchers {
            let selector = cache
                .get_matcher(matcher.kind, &matcher.value)
                .map_err(|reason| SubscribeError::InvalidMatcher {
                    kind: matcher.kind.as_str(),
                    value: matcher.value.clone(),
                    reason,
                })?;
            selectors.push(selector);
            topics.push(matcher.value);
        }
        Ok(Compiled {
            topics,
            matcher_types,
            selectors,
        })
    }

    /// Registers a subscriber, then replays history after its `Last-Event-ID`.
    ///
    /// # Errors
    /// See [`SubscribeError`]; nothing stays registered on error.
    pub async fn subscribe(
        &self,
        request: SubscribeRequest,
    ) -> Result<Subscription, SubscribeError> {
        let config = &self.inner.config;
        let count = request.topics.len() + request.matchers.len();
        if count == 0 {
            return Err(SubscribeError::NoTopics);
        }
        if request
            .topics
            .iter()
            .chain(request.matchers.iter().map(|m| &m.value))
            .any(|t| t.trim().is_empty())
        {
            return Err(SubscribeError::BlankTopic);
        }
        if count > config.max_topics_per_subscription {
            return Err(SubscribeError::TooManyTopics {
                count,
                max: config.max_topics_per_subscription,
            });
        }
        let SubscribeRequest {
            topics,
            matchers,
            last_event_id,
            grant,
            remote_addr,
        } = request;
        // Compiling URI templates and URL patterns costs up to milliseconds each: off the
        // async workers.
        let costly = topics.iter().any(|t| t.contains('{'))
            || matchers.iter().any(|m| m.kind == MatcherType::UrlPattern);
        let Compiled {
            topics,
            matcher_types,
            selectors,
        } = if costly {
            let hub = self.clone();
            tokio::task::spawn_blocking(move || hub.compile_selectors(topics, matchers))
                .await
                .map_err(|e| SubscribeError::Internal(format!("compiling the selectors: {e}")))??
        } else {
            self.compile_selectors(topics, matchers)?
        };
        let exact_only = selectors.iter().all(|s| s.as_exact().is_some());
        let id = self
            .inner
            .next_subscriber_id
            .fetch_add(1, Ordering::Relaxed);
        let ends_at = self.stream_deadline(&grant);
        let subscriber = Arc::new(Subscriber {
            info: SubscriberInfo {
                id,
                uri: format!("urn:uuid:{}", uuid::Uuid::now_v7()),
                topics,
                matcher_types,
                remote_addr,
                payload: grant.payload.clone(),
                connected_at: SystemTime::now(),
            },
            selectors,
            exact_only,
            grant,
            announcements: Default::default(),
            queue: SubscriberQueue::new(config.queue_capacity),
            feed: Default::default(),
        });
        // Register first: events published from now on are queued for this subscriber, so the
        // history read below cannot miss one.
        self.inner
            .shared
            .registry
            .insert(subscriber.clone())
            .map_err(|e| match e {
                RegisterError::Full => SubscribeError::Full {
                    max: self.inner.shared.registry.max_subscribers(),
                },
                RegisterError::ShuttingDown => SubscribeError::ShuttingDown,
            })?;
        // Until the stream owns the registration, this guard does: an error, a panicking hook or
        // the caller dropping this future (the client left during the history read) unregisters.
        let mut registration = Registration {
            shared: &self.inner.shared,
            id,
            armed: true,
            reason: CloseReason::ClientDisconnected,
        };
        // Open hooks run as soon as the subscriber is registered; a close (which can come from
        // the dispatcher from now on, or from a hook) follows them.
        self.inner.shared.opened(&subscriber);
        let from = last_event_id.clone().map(ReplayFrom::from_last_event_id);
        let from_earliest = from == Some(ReplayFrom::Earliest);
        let start = match from {
            None => None,
            Some(from) => {
                let located = self.inner.history.clone().locate(from).await;
                match located {
                    Ok(start) => Some(start),
                    Err(error) => {
                        registration.reason = CloseReason::HistoryUnavailable;
                        return Err(error.into());
                    }
                }
            }
        };
        let mut skip_through_seq = start.as_ref().map_or(0, |s| s.through_seq);
        let (replay, resumed_after, first_frame) = match start {
            None if config.initial_cursor => {
                // The stream starts after the newest event dispatched so far: it names it in an
                // id-only frame, and the live events up to it (dispatched since the
                // registration) are left out, so the cursor and the stream agree.
                let (seq, id) = self.inner.shared.dispatch_cursor();
                skip_through_seq = seq;
                let frame = crate::wire::encode_id_only(&id);
                (None, Some(id), Some(frame))
            }
            None => (None, None, None),
            Some(ReplayStart {
                after_seq,
                through_seq,
                resumed_after,
            }) => {
                let gap = match &last_event_id {
                    Some(requested) if !from_earliest && *requested != resumed_after => {
                        Some(replay_gap_signal(requested, &resumed_after))
                    }
                    _ => None,
                };
                (
                    Some(ReplayCursor::new(
                        self.inner.replay_reads.clone(),
                        after_seq,
                        through_seq,
                        from_earliest,
                    )),
                    Some(resumed_after),
                    gap,
                )
            }
        };
        info!(
            subscriber = id,
            remote = ?subscriber.info.remote_addr,
            topics = subscriber.info.topics.len(),
            resumed_after = resumed_after.as_deref().unwrap_or("-"),
            "stream opened"
        );
        registration.disarm();
        let stream = SubscriptionStream::new(
            self.inner.shared.clone(),
            subscriber,
            replay,
            skip_through_seq,
            config.heartbeat,
            ends_at,
            first_frame,
        );
        Ok(Subscription {
            resumed_after,
            stream,
        })
    }

    /// The earlier of the maximum lifetime and the token's expiry.
    fn stream_deadline(
        &self,
        grant: &SubscriberGrant,
    ) -> Option<(tokio::time::Instant, CloseReason)> {
        let now = tokio::time::Instant::now();
        let lifetime = self
            .inner
            .config
            .max_lifetime
            .filter(|d| !d.is_zero())
            .map(|d| (now + d, CloseReason::Timeout));
        let expiry = grant
            .time_left()
            .map(|d| (now + d, CloseReason::TokenExpired));
        match (lifetime, expiry) {
            (Some(l), Some(e)) => Some(if e.0 <= l.0 { e } else { l }),
            (l, e) => l.or(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::HubConfig;

    async fn hub(max_lifetime: Option<Duration>) -> Hub {
        Hub::builder(HubConfig {
            max_lifetime,
            ..HubConfig::default()
        })
        .build()
        .await
        .expect("hub")
    }

    fn expiring_in(seconds: u64) -> SubscriberGrant {
        SubscriberGrant {
            expires_at: Some(SystemTime::now() + Duration::from_secs(seconds)),
            ..SubscriberGrant::default()
        }
    }

    /// `(seconds from now, reason)` of the stream's end.
    fn deadline(hub: &Hub, grant: &SubscriberGrant) -> Option<(u64, CloseReason)> {
        let now = tokio::time::Instant::now();
        hub.stream_deadline(grant)
            .map(|(at, reason)| ((at - now).as_secs_f64().round() as u64, reason))
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_ends_at_the_earlier_of_its_lifetime_and_its_token_expiry() {
        let hub = hub(Some(Duration::from_secs(3600))).await;
        assert_eq!(
            deadline(&hub, &SubscriberGrant::default()),
            Some((3600, CloseReason::Timeout))
        );
        assert_eq!(
            deadline(&hub, &expiring_in(60)),
            Some((60, CloseReason::TokenExpired))
        );
        assert_eq!(
            deadline(&hub, &expiring_in(7200)),
            Some((3600, CloseReason::Timeout))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_lifetime_only_the_token_ends_a_stream() {
        for lifetime in [None, Some(Duration::ZERO)] {
            let hub = hub(lifetime).await;
            assert_eq!(deadline(&hub, &SubscriberGrant::default()), None);
            assert_eq!(
                deadline(&hub, &expiring_in(60)),
                Some((60, CloseReason::TokenExpired))
            );
        }
    }
}
