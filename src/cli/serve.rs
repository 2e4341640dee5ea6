//! `ssehub serve`: bind, build the hub, serve until SIGTERM or Ctrl-C, then shut down in order.
//! SIGHUP reloads what can change without a restart ([`super::reload`]). Under systemd
//! (`Type=notify`) it says when start-up is over, around a reload, and when shutdown starts
//! ([`super::systemd`]).

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{info, Instrument};

use super::reload::{ReloadSource, Reloader};
use super::systemd::Notifier;
use crate::config::ServeArgs;
use crate::telemetry::{otlp, Tracing};
use crate::{http, server, Hub};

/// Runs the hub until a shutdown signal; `source` is read again on SIGHUP.
///
/// # Errors
/// Invalid settings, an address that cannot be bound.
pub async fn run(args: ServeArgs, source: ReloadSource) -> anyhow::Result<()> {
    let settings = args.resolve().context("invalid setting")?;
    // Taken over before anything is logged: from "listening" on, SIGHUP reloads (its default
    // action would end the process).
    let hangups = hangups();
    let history = settings
        .history
        .open()
        .await
        .context("opening the history")?;
    let listener = server::bind(args.addr).with_context(|| format!("binding {}", args.addr))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let shutdown = CancellationToken::new();
    let (tracing, exporter) = match otlp::start(&settings.otlp).context("starting OTLP traces")? {
        Some((tracing, exporter)) => (tracing, Some(exporter)),
        None => (Tracing::off(), None),
    };
    if tracing.is_on() {
        info!(
            endpoint = settings
                .otlp
                .endpoint
                .as_deref()
                .unwrap_or("(from OTEL_* variables)"),
            delivery_ratio = settings.otlp.delivery_ratio,
            "exporting traces over OTLP"
        );
    }
    let mut builder = Hub::builder(settings.hub)
        .history(history)
        .tracing(tracing)
        .shutdown(shutdown.child_token());
    if let Some(webhook) = settings.webhook {
        info!(url = %webhook.config().url, instance = %webhook.config().instance, "webhook on");
        builder = builder.webhook(webhook);
    }
    let hub = builder.build().await.context("starting the hub")?;
    let scheme = if settings.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    info!(%addr, url = %format!("{scheme}://{addr}/.well-known/mercure"), "listening");

    if let Some(metrics_addr) = settings.metrics_addr {
        let listener = server::bind(metrics_addr)
            .with_context(|| format!("binding the metrics listener {metrics_addr}"))?;
        let bound = listener
            .local_addr()
            .context("reading the metrics address")?;
        info!(metrics_addr = %bound, "metrics listening");
        // Plain HTTP: scrapers sit next to the hub, and its own listener is for them alone.
        let options = server::ServerOptions {
            tls: None,
            metrics: Default::default(),
            ..settings.server.clone()
        };
        let (app, stop) = (http::metrics_router(hub.clone()), shutdown.clone());
        tokio::spawn(async move {
            if let Err(error) = server::serve(listener, app, options, stop.cancelled_owned()).await
            {
                tracing::warn!(%error, "metrics listener failed");
            }
        });
    }
    if let Some(outbox) = settings.outbox {
        info!(table = outbox.table.name(), "relaying the outbox");
        let relay = crate::outbox::OutboxRelay::new(outbox, hub.clone());
        tokio::spawn(
            relay
                .run(shutdown.child_token())
                .instrument(tracing::info_span!("outbox_relay")),
        );
    }
    let systemd = Notifier::start();
    let on_signal = shutdown.clone();
    let notifier = systemd.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        // Cancel first: nothing (not even logging) may stand between the signal and shutdown.
        on_signal.cancel();
        notifier.stopping();
        info!("shutdown signal received: closing streams");
    });
    let live = http::LiveHttpConfig::new(settings.http.clone());
    let mut app = http::live_router(hub.clone(), std::sync::Arc::clone(&live));
    let reloader = Reloader::new(source, args, hub.clone(), live, systemd.clone());
    if let Some(signer) = settings.demo {
        tracing::warn!(
            url = %format!("{scheme}://{addr}/"),
            "--demo: serving the demo page, and publisher tokens to anyone who asks (never in production)"
        );
        app = app.merge(http::demo::router(hub.clone(), settings.http, signer));
    }
    let options = server::ServerOptions {
        metrics: hub.metrics().connections.clone(),
        ..settings.server
    };
    // The one check `server::serve` makes before its accept loop, made here so that systemd
    // is not told "ready" by a hub about to exit.
    options.validate().context("invalid setting")?;
    // The listener is bound (connections wait in its backlog until the loop below accepts
    // them) and the history is open: start-up is over.
    systemd.ready();
    let watchdog = systemd.spawn_watchdog();
    let reloads = tokio::spawn(reload_on_signal(hangups, reloader));
    // The hub ends its streams on the same token, so graceful shutdown does not wait on them.
    let served = server::serve(listener, app, options, shutdown.cancelled_owned()).await;
    hub.shutdown().await;
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    reloads.abort();
    if let Some(exporter) = exporter {
        // Sends the spans still buffered; blocking, bounded by the exporter's timeout.
        let _ = tokio::task::spawn_blocking(move || exporter.shutdown()).await;
    }
    served.context("serving")?;
    info!("stopped");
    Ok(())
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

/// The SIGHUP stream (none where there is no SIGHUP, or it cannot be handled).
fn hangups() -> Hangups {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        signal(SignalKind::hangup())
            .inspect_err(|error| tracing::warn!(%error, "SIGHUP cannot be handled: no reload"))
            .ok()
    }
    #[cfg(not(unix))]
    None
}

/// Reloads on each SIGHUP, one at a time (a SIGHUP during a reload is taken after it).
async fn reload_on_signal(hangups: Hangups, mut reloader: Reloader) {
    #[cfg(unix)]
    if let Some(mut hangups) = hangups {
        while hangups.recv().await.is_some() {
            reloader.reload().await;
        }
    }
    #[cfg(not(unix))]
    drop((hangups, reloader));
}

/// Ctrl-C or SIGTERM, whichever comes first.
async fn wait_for_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
