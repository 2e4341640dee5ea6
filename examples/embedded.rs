//! An axum application that embeds ssehub as a library.
//!
//! The application has its own routes (`POST /orders` records an order) and tells browsers about
//! changes through the embedded hub: it calls `Hub::publish` directly, no HTTP round trip and
//! no token needed for its own events. Browsers subscribe at `/.well-known/mercure` as with the
//! standalone hub. Lifecycle hooks log every stream's open and close with the reason (timeout,
//! completion or error), which is where an application would clean up per-user state.
//!
//! Run it with `cargo run --example embedded`, then:
//! ```sh
//! curl -N 'http://127.0.0.1:3001/.well-known/mercure?topic=/orders/{id}'
//! curl -X POST http://127.0.0.1:3001/orders -d 'widget'
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::Router;
use ssehub::auth::AuthConfig;
use ssehub::{http, server, Event, HttpConfig, Hub, HubConfig};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct App {
    hub: Hub,
    next_order: Arc<AtomicU64>,
}

/// `POST /orders`: the body is the item; the order is announced on `/orders/{id}`.
async fn create_order(State(app): State<App>, item: String) -> Result<String, http::ApiError> {
    let id = app.next_order.fetch_add(1, Ordering::Relaxed);
    let mut event = Event::new(
        format!("/orders/{id}"),
        format!("{{\"id\":{id},\"item\":{item:?}}}"),
    );
    event.event_type = Some("order.created".into());
    // Returns once the event is in history: a browser that reconnects will not miss it.
    let receipt = app.hub.publish(event).await?;
    Ok(format!("order {id} created (event {})\n", receipt.id))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter("info,ssehub=debug")
        .init();
    let shutdown = CancellationToken::new();
    let hub = Hub::builder(HubConfig::default())
        .shutdown(shutdown.child_token())
        .on_open(
            |info| tracing::info!(subscriber = info.id, topics = ?info.topics, "stream opened"),
        )
        .on_close(|info, reason, lived| {
            // Timeout, completion or error: the three callbacks of a servlet `SseEmitter`.
            let kind = reason.kind();
            tracing::info!(
                subscriber = info.id,
                ?reason,
                ?kind,
                ?lived,
                "stream closed"
            );
        })
        .build()
        .await?;

    let app = Router::new()
        .route("/orders", post(create_order))
        .with_state(App {
            hub: hub.clone(),
            next_order: Arc::new(AtomicU64::new(1)),
        })
        .merge(http::router(
            hub.clone(),
            HttpConfig {
                // Browsers subscribe without a token; the application publishes itself.
                auth: AuthConfig {
                    anonymous: true,
                    ..AuthConfig::default()
                },
                ..HttpConfig::default()
            },
        ));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    let on_ctrl_c = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        on_ctrl_c.cancel();
    });
    server::serve(
        listener,
        app,
        server::ServerOptions::default(),
        shutdown.cancelled_owned(),
    )
    .await?;
    hub.shutdown().await;
    Ok(())
}
