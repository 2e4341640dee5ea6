//! The systemd notification protocol (`Type=notify`, sd_notify(3)) for `ssehub serve`:
//! `READY=1` once the listener is bound and the history is open, `STOPPING=1` when shutdown
//! starts, `RELOADING=1` (with `MONOTONIC_USEC`, which `Type=notify-reload` needs) then
//! `READY=1` around a reload on SIGHUP, and `WATCHDOG=1` pings when the unit sets
//! `WatchdogSec=`.
//!
//! Every call is a no-op when `NOTIFY_SOCKET` is not set (not started by systemd), and a
//! failure to notify is logged, never fatal: the hub serves either way. The unit file lives in
//! `deploy/systemd/ssehub.service`. What "ready" means for Prometheus and Kubernetes is
//! `/readyz` and the `ssehub_ready` gauge, which follow the history after start-up too; this
//! module only tells systemd that start-up is over.
//!
//! `sd_notify::notify` sends on a blocking datagram socket, and a receiver that does not read
//! (a stalled service manager; the kernel queues only `net.unix.max_dgram_qlen` datagrams,
//! 10 by default) blocks the sender. So no runtime thread sends: [`Notifier`] hands each
//! message to a thread of its own, in order. `READY=1` and `STOPPING=1` always wait their
//! turn; a ping is queued only when the previous one has been taken, so a receiver that stops
//! reading costs one waiting ping, not a growing queue. That thread is not the runtime's, so
//! neither the streams nor the exit wait on it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::task::JoinHandle;
use tracing::{debug, warn, Instrument};

/// Sends notifications to systemd from a thread of its own, in order.
#[derive(Debug, Clone)]
pub struct Notifier {
    /// `None` without `NOTIFY_SOCKET`: nothing to send, no thread.
    queue: Option<Sender<Vec<NotifyState<'static>>>>,
    /// A `WATCHDOG=1` is queued and not yet taken by the thread: skip the next one.
    ping_queued: Arc<AtomicBool>,
}

impl Notifier {
    /// Starts the notifier thread when `NOTIFY_SOCKET` is set.
    pub fn start() -> Self {
        let ping_queued = Arc::new(AtomicBool::new(false));
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return Self {
                queue: None,
                ping_queued,
            };
        }
        let (queue, messages) = channel::<Vec<NotifyState<'static>>>();
        let taken = Arc::clone(&ping_queued);
        let spawned = std::thread::Builder::new()
            .name("systemd-notify".into())
            .spawn(move || {
                for states in messages {
                    if states.iter().any(|s| matches!(s, NotifyState::Watchdog)) {
                        taken.store(false, Ordering::Release);
                    }
                    if let Err(error) = sd_notify::notify(&states) {
                        let message: Vec<String> = states.iter().map(ToString::to_string).collect();
                        warn!(%error, message = %message.join(" "), "could not notify systemd");
                    }
                }
            });
        match spawned {
            Ok(_) => Self {
                queue: Some(queue),
                ping_queued,
            },
            Err(error) => {
                warn!(%error, "could not start the systemd notifier thread");
                Self {
                    queue: None,
                    ping_queued,
                }
            }
        }
    }

    /// Tells systemd that start-up is over: the listener is bound (connections queue in its
    /// backlog from here on, and are answered as soon as the accept loop runs) and the history
    /// is open.
    pub fn ready(&self) {
        self.send(NotifyState::Ready);
    }

    /// Tells systemd that a reload started (SIGHUP); [`Self::ready`] says it is over. The
    /// message carries the time of the monotonic clock, as `Type=notify-reload` requires.
    pub fn reloading(&self) {
        let mut states = vec![NotifyState::Reloading];
        match NotifyState::monotonic_usec_now() {
            Ok(now) => states.push(now),
            Err(error) => debug!(%error, "no monotonic clock for MONOTONIC_USEC"),
        }
        self.send_all(states);
    }

    /// Tells systemd that the hub is shutting down (streams are being ended).
    pub fn stopping(&self) {
        self.send(NotifyState::Stopping);
    }

    /// When the unit asks for watchdog pings (`WatchdogSec=`, seen as `WATCHDOG_USEC` for this
    /// PID), a task that sends `WATCHDOG=1` at half that interval. The pings come from a task
    /// on the same runtime as the accept loop and the streams, so a runtime that stops
    /// scheduling tasks (a blocked worker, a deadlock) stops them, and systemd restarts the
    /// hub. Abort the handle once the hub stopped.
    pub fn spawn_watchdog(&self) -> Option<JoinHandle<()>> {
        self.queue.as_ref()?;
        let interval = sd_notify::watchdog_enabled()?;
        let period = (interval / 2).max(Duration::from_millis(10));
        debug!(?interval, "systemd watchdog on");
        let notifier = self.clone();
        let task = async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                ticks.tick().await;
                // One ping at most waits for a receiver that is not reading.
                if !notifier.ping_queued.swap(true, Ordering::AcqRel) {
                    notifier.send(NotifyState::Watchdog);
                }
            }
        };
        Some(tokio::spawn(
            task.instrument(tracing::info_span!("systemd_watchdog")),
        ))
    }

    /// Queues `state` for the notifier thread, without waiting.
    fn send(&self, state: NotifyState<'static>) {
        self.send_all(vec![state]);
    }

    /// Queues `states`, sent together in one message, without waiting.
    fn send_all(&self, states: Vec<NotifyState<'static>>) {
        let Some(queue) = &self.queue else { return };
        if let Err(unsent) = queue.send(states) {
            debug!(
                messages = unsent.0.len(),
                "systemd notifier thread gone: dropped"
            );
        }
    }
}
