//! An orders service with its own PostgreSQL database and an embedded hub.
//!
//! The application owns its routes and its data: `POST /orders` stores an order in PostgreSQL
//! and announces it on the topic `/orders/{id}` through [`Hub::publish`]; `GET /orders/{id}`
//! and `GET /orders/count` read the database; `GET /stats` shows what the lifecycle hooks
//! counted and how busy the connection pool is. Browsers subscribe through the hub's own
//! router, merged beside those routes, at `/.well-known/mercure?topic=/orders/{id}`.
//!
//! The database is reached through a pool of at most 5 connections (`--pool-size`), and that is
//! enough however many browsers are listening, because **no stream ever holds a database
//! connection, lock or transaction**:
//! - an open stream owns only its bounded queue of encoded events and one timer (heartbeat and
//!   end of life); it waits on neither the database nor the pool;
//! - the handler that publishes takes a pooled connection for its `INSERT`, gives it back at the
//!   end of that block, and only then waits for [`Hub::publish`] (the hub's history, not
//!   PostgreSQL); the fan-out to the streams happens on the hub's dispatcher task, after the
//!   publish was acknowledged;
//! - reads (`GET /orders/{id}`) hold a connection for one query.
//!
//! So 1,000 open streams leave all 5 connections to ordinary requests; the integration test
//! `embedded_db` opens 1,000 streams on this binary and checks it, and `GET /stats` shows the
//! pool idle while the streams stay open.
//!
//! The lifecycle hooks keep a count of open streams per topic selector and of the streams that
//! ended, by the three outcomes of an emitter: timeout (maximum lifetime, token expiry),
//! completion (the application or a shutdown closed it) and error (client gone, too slow).
//!
//! Run it with PostgreSQL on `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`):
//! ```sh
//! cargo run --example orders                       # listens on 127.0.0.1:3002
//! curl -N 'http://127.0.0.1:3002/.well-known/mercure?topic=/orders/%7Bid%7D'
//! curl -X POST http://127.0.0.1:3002/orders -d 'widget'    # prints the new order's id
//! curl http://127.0.0.1:3002/orders/1
//! curl http://127.0.0.1:3002/stats
//! ```
//! Without `--table` (`ORDERS_TABLE`) it stores orders in a table of its own, `orders_<random>`,
//! and drops it on Ctrl-C or SIGTERM; a table named with `--table` is created if missing and
//! kept.

use std::collections::BTreeMap;
use std::error::Error;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use ssehub::auth::AuthConfig;
use ssehub::http::ApiError;
use ssehub::{server, CloseKind, CloseReason, Event, HttpConfig, Hub, HubConfig, SubscriberInfo};
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

/// The orders service's settings: each flag is also an environment variable.
#[derive(Debug, Parser)]
#[command(about = "An orders service with PostgreSQL and an embedded ssehub")]
struct Args {
    /// Address to listen on; port 0 picks a free port (the bound address is logged).
    #[arg(long, env = "ADDR", default_value = "127.0.0.1:3002")]
    addr: SocketAddr,
    /// The PostgreSQL database (no TLS).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    database_url: String,
    /// Table of the orders, created if missing and kept at exit; default: `orders_<random>`,
    /// dropped at exit.
    #[arg(long, env = "ORDERS_TABLE")]
    table: Option<String>,
    /// Most database connections open at once.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 5)]
    pool_size: usize,
}

/// The SQL of each route, written once the table name is known (and checked: it is
/// interpolated, not bound, since PostgreSQL cannot bind identifiers).
struct Sql {
    insert: String,
    select: String,
    count: String,
}

impl Sql {
    fn for_table(table: &str) -> Self {
        Self {
            insert: format!("INSERT INTO {table} (item) VALUES ($1) RETURNING id"),
            select: format!("SELECT item FROM {table} WHERE id = $1"),
            count: format!("SELECT count(*) FROM {table}"),
        }
    }
}

/// What the lifecycle hooks count. A `std::sync::Mutex` is right here: the hooks run on the
/// hub's own paths (a stream being dropped, the dispatcher) and hold it for one map update,
/// never across an `.await`.
#[derive(Default)]
struct StreamStats {
    /// Open streams under each topic selector they subscribed with.
    open_by_topic: Mutex<BTreeMap<String, u64>>,
    /// Streams that ended, by the three outcomes of an emitter.
    timed_out: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
}

impl StreamStats {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        // Only map updates run under the lock: a poisoned map is still consistent.
        self.open_by_topic
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The `on_open` hook.
    fn opened(&self, info: &SubscriberInfo) {
        let mut open = self.lock();
        for topic in &info.topics {
            *open.entry(topic.clone()).or_default() += 1;
        }
        let on_first_topic = info.topics.first().and_then(|t| open.get(t)).copied();
        drop(open);
        info!(
            subscriber = info.id,
            topics = ?info.topics,
            open_on_first_topic = on_first_topic,
            "order stream opened"
        );
    }

    /// The `on_close` hook: called once per stream, with why it ended and how long it lived.
    fn closed(&self, info: &SubscriberInfo, reason: CloseReason, lived: Duration) {
        let mut open = self.lock();
        for topic in &info.topics {
            if let Some(count) = open.get_mut(topic) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    open.remove(topic);
                }
            }
        }
        drop(open);
        let kind = reason.kind();
        let counter = match kind {
            CloseKind::Timeout => &self.timed_out,
            CloseKind::Completion => &self.completed,
            CloseKind::Error => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        info!(
            subscriber = info.id,
            ?kind,
            reason = reason.as_str(),
            lived_ms = lived.as_millis() as u64,
            "order stream closed"
        );
    }
}

/// What every handler shares; cheap to clone.
#[derive(Clone)]
struct App {
    hub: Hub,
    db: Pool,
    sql: Arc<Sql>,
    streams: Arc<StreamStats>,
}

/// Pool and query failures: the client may retry (`503`, logged by [`ApiError`]).
fn db_error(error: impl std::fmt::Display) -> ApiError {
    ApiError::unavailable(format!("database: {error}"), 1)
}

/// `POST /orders`: the body is the item. Stores the order, announces it on `/orders/{id}` and
/// answers `201` with the id.
async fn create_order(
    State(app): State<App>,
    item: String,
) -> Result<(StatusCode, String), ApiError> {
    let item = item.trim();
    if item.is_empty() {
        return Err(ApiError::bad_request(
            "the request body is the item: send some text",
        ));
    }
    // The pooled connection is ours for this block only: it goes back to the pool before the
    // publish below waits for the hub.
    let id: i64 = {
        let client = app.db.get().await.map_err(db_error)?;
        let insert = client
            .prepare_cached(&app.sql.insert)
            .await
            .map_err(db_error)?;
        let row = client
            .query_one(&insert, &[&item])
            .await
            .map_err(db_error)?;
        row.try_get(0).map_err(db_error)?
    };
    let data = serde_json::json!({ "id": id, "item": item }).to_string();
    let mut event = Event::new(format!("/orders/{id}"), data);
    event.event_type = Some("order.created".into());
    // Returns once the event is in the hub's history (a browser that reconnects with
    // `Last-Event-ID` gets it); delivery to the open streams follows on the hub's dispatcher.
    // Should it fail, the order is stored but unannounced: an application that must never miss
    // one would write an outbox row in the same transaction and publish from it.
    app.hub.publish(event).await?;
    Ok((StatusCode::CREATED, format!("{id}\n")))
}

/// `GET /orders/{id}`: the order as JSON, or `404`.
async fn get_order(
    State(app): State<App>,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let client = app.db.get().await.map_err(db_error)?;
    let select = client
        .prepare_cached(&app.sql.select)
        .await
        .map_err(db_error)?;
    let row = client
        .query_opt(&select, &[&id])
        .await
        .map_err(db_error)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no order {id}")))?;
    let item: String = row.try_get(0).map_err(db_error)?;
    Ok(Json(serde_json::json!({ "id": id, "item": item })))
}

/// `GET /orders/count`: how many orders the table holds.
async fn count_orders(State(app): State<App>) -> Result<Json<serde_json::Value>, ApiError> {
    let client = app.db.get().await.map_err(db_error)?;
    let count = client
        .prepare_cached(&app.sql.count)
        .await
        .map_err(db_error)?;
    let count: i64 = client
        .query_one(&count, &[])
        .await
        .map_err(db_error)?
        .try_get(0)
        .map_err(db_error)?;
    Ok(Json(serde_json::json!({ "count": count })))
}

/// `GET /stats`: open streams per topic, ended streams by outcome, and the pool's state.
async fn stats(State(app): State<App>) -> Json<serde_json::Value> {
    let open_by_topic = app.streams.lock().clone();
    let pool = app.db.status();
    Json(serde_json::json!({
        "streams": {
            "open": app.hub.subscriber_count(),
            "open_by_topic": open_by_topic,
            "closed": {
                "timeout": app.streams.timed_out.load(Ordering::Relaxed),
                "completion": app.streams.completed.load(Ordering::Relaxed),
                "error": app.streams.failed.load(Ordering::Relaxed),
            },
        },
        "pool": {
            "max_size": pool.max_size,
            "size": pool.size,
            "available": pool.available,
            "waiting": pool.waiting,
        },
    }))
}

/// The application: its routes, and the hub's (`/.well-known/mercure`) merged beside them,
/// with `http` (who may subscribe and publish over HTTP).
fn router(app: App, http: HttpConfig) -> Router {
    let hub = app.hub.clone();
    Router::new()
        .route("/orders", post(create_order))
        // A static segment wins over a parameter: `/orders/count` never reaches `get_order`.
        .route("/orders/count", get(count_orders))
        .route("/orders/{id}", get(get_order))
        .route("/stats", get(stats))
        .with_state(app)
        .merge(ssehub::http::router(hub, http))
}

/// A pool of at most `size` connections; waits for a free one at most 5 s.
fn connect(database_url: &str, size: usize) -> Result<Pool, Box<dyn Error>> {
    let config: tokio_postgres::Config = database_url.parse()?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(5)))
        .build()?)
}

/// A PostgreSQL identifier that is safe to interpolate: lower-case ASCII, digits and `_`.
fn check_table_name(table: &str) -> Result<(), String> {
    let mut chars = table.chars();
    let valid_start = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if valid_start
        && table.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        Ok(())
    } else {
        Err(format!(
            "table name {table:?}: use 1 to 63 characters a-z, 0-9 and _, not starting with a digit"
        ))
    }
}

/// Waits for Ctrl-C or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        // Ctrl-C in a terminal.
        () = ctrl_c => {}
        // A process manager (or the integration test) asking us to stop.
        () = terminate => {}
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // Every stream is a socket: take as many open files as the hard limit allows.
    if let Err(error) = rlimit::increase_nofile_limit(u64::MAX) {
        warn!(%error, "could not raise the open-file limit");
    }

    let (table, scratch_table) = match args.table {
        Some(table) => (table, false),
        None => {
            let suffix = uuid::Uuid::now_v7().simple().to_string();
            // The last 12 hex digits of a v7 UUID are random.
            (format!("orders_{}", &suffix[20..]), true)
        }
    };
    check_table_name(&table)?;
    let db = connect(&args.database_url, args.pool_size)?;
    db.get()
        .await?
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                id BIGSERIAL PRIMARY KEY,
                item TEXT NOT NULL,
                created_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )"
        ))
        .await?;

    let shutdown = CancellationToken::new();
    let streams = Arc::new(StreamStats::default());
    let (on_open, on_close) = (streams.clone(), streams.clone());
    let hub = Hub::builder(HubConfig::default())
        .shutdown(shutdown.child_token())
        .on_open(move |info| on_open.opened(info))
        .on_close(move |info, reason, lived| on_close.closed(info, reason, lived))
        .build()
        .await?;
    // Browsers subscribe without a token; only this application publishes (through
    // `Hub::publish`: the hub's HTTP publish endpoint has no key, so it refuses everyone).
    let http = HttpConfig {
        auth: AuthConfig {
            anonymous: true,
            ..AuthConfig::default()
        },
        ..HttpConfig::default()
    };
    let app = router(
        App {
            hub: hub.clone(),
            db: db.clone(),
            sql: Arc::new(Sql::for_table(&table)),
            streams,
        },
        http,
    );

    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    info!(addr = %listener.local_addr()?, %table, pool_size = args.pool_size, "listening");
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutting down");
        on_signal.cancel();
    });
    server::serve(
        listener,
        app,
        server::ServerOptions::default(),
        shutdown.cancelled_owned(),
    )
    .await?;
    hub.shutdown().await;
    if scratch_table {
        db.get()
            .await?
            .batch_execute(&format!("DROP TABLE IF EXISTS {table}"))
            .await?;
        info!(%table, "dropped the scratch table");
    }
    Ok(())
}
