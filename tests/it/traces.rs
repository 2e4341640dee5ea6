//! One event followed from the publish to each socket: OTLP traces exported by the real binary
//! to a receiver in this process (http/protobuf, decoded with `opentelemetry-proto`), across
//! instances over Redis too; and the `ssehub_delivery_lag_seconds` histogram, which counts live
//! deliveries and not replays.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use crate::support::binary::{ssehub_command, BinaryHub};
use crate::support::redis::RedisServer;
use crate::support::tools::text;
use crate::support::{config, eventually, publisher_token, SseClient, TestHub, SECRET};

/// The trace and span the publisher's request comes from.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

/// Spans received by a local OTLP/HTTP collector.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
    requests: Arc<Mutex<u64>>,
}

impl Collector {
    /// A collector on a port-0 listener; its base URL (what `--otlp-endpoint` takes).
    async fn start() -> (Self, String) {
        let collector = Self::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the collector");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = collector.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |body: Bytes| {
                let state = state.clone();
                async move {
                    let request =
                        ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
                    *state.requests.lock().expect("lock") += 1;
                    let mut spans = state.spans.lock().expect("lock");
                    for resource in request.resource_spans {
                        for scope in resource.scope_spans {
                            spans.extend(scope.spans);
                        }
                    }
                    (
                        [("content-type", "application/x-protobuf")],
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (collector, url)
    }

    /// The spans received so far, named `name`, in trace `trace`.
    fn named(&self, name: &str, trace: &[u8]) -> Vec<Span> {
        self.spans
            .lock()
            .expect("lock")
            .iter()
            .filter(|span| span.name == name && span.trace_id == trace)
            .cloned()
            .collect()
    }

    /// Waits until trace `trace` has at least `counts` spans of each name; then its spans by
    /// name.
    async fn wait_for(&self, trace: &[u8], counts: &[(&str, usize)]) -> HashMap<String, Vec<Span>> {
        let what = format!("spans {counts:?} in trace {}", hex(trace));
        eventually(Duration::from_secs(15), &what, || {
            counts
                .iter()
                .all(|(name, count)| self.named(name, trace).len() >= *count)
        })
        .await;
        counts
            .iter()
            .map(|(name, _)| ((*name).to_owned(), self.named(name, trace)))
            .collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The span's attribute `key` as text (strings as they are, numbers formatted).
fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    Some(match value {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        Value::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    })
}

/// A traced hub binary exporting to `collector_url`, every delivery sampled.
fn traced_hub(collector_url: &str, extra: &[&str]) -> BinaryHub {
    let mut args = vec![
        "--jwt-key",
        SECRET,
        "--anonymous",
        "--otlp-endpoint",
        collector_url,
        "--trace-deliveries",
        "1",
    ];
    args.extend_from_slice(extra);
    // The batch processor exports every 100 ms instead of every 5 s.
    BinaryHub::start(&args, &[("OTEL_BSP_SCHEDULE_DELAY", "100")])
}

/// Publishes `form` to `url` with `traceparent` (if any); the event id.
async fn publish_traced(url: &str, form: &[(&str, &str)], traceparent: Option<&str>) -> String {
    let mut request = reqwest::Client::new()
        .post(url)
        .bearer_auth(publisher_token(&["*"]))
        .form(form);
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let response = request.send().await.expect("publish");
    assert_eq!(response.status(), 200);
    response.text().await.expect("id")
}

#[tokio::test]
async fn a_traced_publish_has_store_dispatch_and_linked_delivery_spans_carrying_the_event_id() {
    let (collector, collector_url) = Collector::start().await;
    let hub = traced_hub(&collector_url, &[]);
    let mut subs = Vec::new();
    for _ in 0..2 {
        subs.push(SseClient::open(&format!("{}?topic=t", hub.url), &[]).await);
    }
    let traceparent = format!("00-{TRACE_ID}-{PARENT_SPAN}-01");
    let id = publish_traced(
        &hub.url,
        &[("topic", "t"), ("data", "x")],
        Some(&traceparent),
    )
    .await;
    for sub in &mut subs {
        assert_eq!(sub.next_event().await.id, id);
    }

    let trace = unhex(TRACE_ID);
    let spans = collector
        .wait_for(
            &trace,
            &[
                ("publish", 1),
                ("store", 1),
                ("dispatch", 1),
                ("deliver", 2),
            ],
        )
        .await;
    let publish = &spans["publish"][0];
    assert_eq!(
        publish.parent_span_id,
        unhex(PARENT_SPAN),
        "the publish continues the request's traceparent"
    );
    assert_eq!(attribute(publish, "ssehub.event.id").as_deref(), Some(&*id));
    for name in ["store", "dispatch", "deliver"] {
        for span in &spans[name] {
            assert_eq!(
                span.parent_span_id, publish.span_id,
                "{name} is a child of the publish span"
            );
            assert_eq!(
                attribute(span, "ssehub.event.id").as_deref(),
                Some(&*id),
                "{name} carries the event id"
            );
        }
    }
    assert!(attribute(&spans["store"][0], "ssehub.batch.size").is_some());
    assert_eq!(
        attribute(&spans["dispatch"][0], "ssehub.subscribers.matched").as_deref(),
        Some("2")
    );
    for deliver in &spans["deliver"] {
        assert!(
            deliver
                .links
                .iter()
                .any(|link| link.trace_id == trace && link.span_id == publish.span_id),
            "a delivery links to the publish span: {deliver:?}"
        );
        assert!(deliver.end_time_unix_nano >= deliver.start_time_unix_nano);
    }
    let subscribers: std::collections::HashSet<_> = spans["deliver"]
        .iter()
        .map(|span| attribute(span, "ssehub.subscriber"))
        .collect();
    assert_eq!(subscribers.len(), 2, "one delivery span per subscriber");

    // Without a traceparent the publish starts a trace of its own, with the same children.
    let id = publish_traced(&hub.url, &[("topic", "t"), ("data", "y")], None).await;
    for sub in &mut subs {
        assert_eq!(sub.next_event().await.id, id);
    }
    let root = {
        let mut found = None;
        eventually(
            Duration::from_secs(15),
            "the untraced publish's span",
            || {
                found = collector
                    .spans
                    .lock()
                    .expect("lock")
                    .iter()
                    .find(|span| {
                        span.name == "publish"
                            && attribute(span, "ssehub.event.id").as_deref() == Some(&*id)
                    })
                    .cloned();
                found.is_some()
            },
        )
        .await;
        found.expect("found")
    };
    assert!(root.parent_span_id.is_empty(), "a new trace: {root:?}");
    assert_ne!(root.trace_id, trace);
    let children = collector
        .wait_for(
            &root.trace_id,
            &[("store", 1), ("dispatch", 1), ("deliver", 2)],
        )
        .await;
    assert_eq!(children["dispatch"][0].parent_span_id, root.span_id);
}

#[tokio::test]
async fn over_redis_the_trace_travels_with_the_event_to_the_other_instance() {
    let (collector, collector_url) = Collector::start().await;
    let redis = RedisServer::start(false).await;
    let redis_url = redis.url();
    let extra = ["--history", "redis", "--redis-url", &redis_url];
    let (a, b) = (
        traced_hub(&collector_url, &extra),
        traced_hub(&collector_url, &extra),
    );
    // The only subscriber is on b; the publish goes to a.
    let mut sub = SseClient::open(&format!("{}?topic=t", b.url), &[]).await;
    let traceparent = format!("00-{TRACE_ID}-{PARENT_SPAN}-01");
    let id = publish_traced(&a.url, &[("topic", "t"), ("data", "x")], Some(&traceparent)).await;
    assert_eq!(sub.next_event().await.id, id);

    let trace = unhex(TRACE_ID);
    let spans = collector
        .wait_for(&trace, &[("publish", 1), ("dispatch", 2), ("deliver", 1)])
        .await;
    let publish = &spans["publish"][0];
    let matched: Vec<_> = spans["dispatch"]
        .iter()
        .map(|span| {
            assert_eq!(span.parent_span_id, publish.span_id);
            attribute(span, "ssehub.subscribers.matched")
        })
        .collect();
    assert!(
        matched.contains(&Some("1".into())) && matched.contains(&Some("0".into())),
        "a dispatch on each instance, b's with the subscriber: {matched:?}"
    );
    let deliver = &spans["deliver"][0];
    assert_eq!(deliver.parent_span_id, publish.span_id);
    assert_eq!(attribute(deliver, "ssehub.event.id").as_deref(), Some(&*id));
}

#[test]
fn an_otlp_protocol_this_build_cannot_export_stops_start_up_with_a_message() {
    let mut child = ssehub_command()
        .args(["serve", "--addr", "127.0.0.1:0", "--jwt-key", SECRET])
        .args(["--history", "memory"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run ssehub");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("try_wait").is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ssehub started with a protocol it cannot export");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    assert!(!output.status.success());
    let text = text(&output);
    assert!(
        text.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc") && text.contains("http/protobuf only"),
        "{text}"
    );
}

/// `ssehub_delivery_lag_seconds_count` on the hub's `/metrics`.
async fn lag_count(metrics_url: &str) -> u64 {
    let page = reqwest::get(metrics_url)
        .await
        .expect("scrape")
        .text()
        .await
        .expect("page");
    crate::support::expect_metric(&page, "ssehub_delivery_lag_seconds_count")
}

#[tokio::test]
async fn delivery_lag_counts_each_live_delivery_once_and_never_a_replay() {
    let hub = TestHub::start(config()).await;
    let metrics_url = format!("http://{}/metrics", hub.addr);
    assert_eq!(lag_count(&metrics_url).await, 0);
    let mut live = hub.subscribe("topic=t").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let (status, id) = hub
            .publish(&[("topic", "t"), ("id", &format!("e{i}"))])
            .await;
        assert_eq!(status, 200);
        ids.push(id);
    }
    assert_eq!(live.next_ids(3).await, ids);
    // The third is counted when the stream asks for its next item, once the bytes are out.
    assert_eq!(wait_lag_count(&metrics_url, 3).await, 3);

    // A late subscriber replays the three: no lag for those.
    let mut late = hub.subscribe("topic=t&lastEventID=earliest").await;
    assert_eq!(late.next_ids(3).await, ids);
    let (status, id) = hub.publish(&[("topic", "t"), ("id", "e3")]).await;
    assert_eq!(status, 200);
    assert_eq!(live.next_event().await.id, id);
    assert_eq!(late.next_event().await.id, id);
    assert_eq!(
        wait_lag_count(&metrics_url, 5).await,
        5,
        "3 + 2 live deliveries; the 3 replayed events are not counted"
    );
    let page = reqwest::get(&metrics_url)
        .await
        .expect("scrape")
        .text()
        .await
        .expect("page");
    assert!(
        page.contains("ssehub_delivery_lag_seconds_bucket{le=\"0.0005\"}"),
        "{page}"
    );
}

/// Waits (up to 5 s) until the lag histogram counted at least `at_least` deliveries; the count.
async fn wait_lag_count(metrics_url: &str, at_least: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let count = lag_count(metrics_url).await;
        if count >= at_least || tokio::time::Instant::now() >= deadline {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_failed_export_is_logged() {
    // A port nothing listens on: every export is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let hub = traced_hub(&format!("http://127.0.0.1:{port}"), &[]);
    publish_traced(&hub.url, &[("topic", "t"), ("data", "x")], None).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match hub.logs.recv_timeout(left) {
            Ok(line) if line.contains("ExportError") => break,
            Ok(_) => {}
            Err(_) => panic!("no log line says the export failed within 10 s"),
        }
    }
}
