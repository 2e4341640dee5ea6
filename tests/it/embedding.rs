//! The hub embedded in an application: its router merged beside the application's own routes,
//! and the application publishing directly.

use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::Router;
use ssehub::{Event, Hub};
use tokio_util::sync::CancellationToken;

use crate::support::{config, SseClient};

async fn announce(State(hub): State<Hub>, body: String) -> Result<String, ssehub::http::ApiError> {
    Ok(hub.publish(Event::new("/news", body)).await?.id)
}

#[tokio::test]
async fn an_application_route_publishes_to_browsers_through_the_merged_router() {
    let shutdown = CancellationToken::new();
    let hub = Hub::builder(config())
        .shutdown(shutdown.child_token())
        .build()
        .await
        .expect("hub");
    let app = Router::new()
        .route("/announce", post(announce))
        .route("/health", axum::routing::get(|| async { "app ok" }))
        .with_state(hub.clone())
        .merge(ssehub::http::router(hub.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(ssehub::server::serve(
        listener,
        app,
        ssehub::server::ServerOptions::default(),
        shutdown.clone().cancelled_owned(),
    ));

    let mut sub = SseClient::open(
        &format!("http://{addr}/.well-known/mercure?topic=/news"),
        &[],
    )
    .await;
    let health = reqwest::get(format!("http://{addr}/health"))
        .await
        .expect("get");
    assert_eq!(health.text().await.expect("body"), "app ok");
    let id = reqwest::Client::new()
        .post(format!("http://{addr}/announce"))
        .body("release 1.0")
        .send()
        .await
        .expect("post")
        .text()
        .await
        .expect("id");
    let event = sub.next_event().await;
    assert_eq!((event.id, event.data.as_str()), (id, "release 1.0"));

    shutdown.cancel();
    assert_eq!(
        sub.wait_end(Duration::from_secs(5)).await,
        Some(crate::support::sse::End::Clean)
    );
    server.await.expect("join").expect("serve");
    hub.shutdown().await;
    assert_eq!(hub.subscriber_count(), 0);
}
