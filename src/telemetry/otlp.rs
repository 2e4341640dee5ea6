//! Exporting the hub's spans over OTLP (http/protobuf), when an endpoint is configured.
//!
//! Tracing is on when the hub is given an endpoint (`--otlp-endpoint`, a base URL like
//! `OTEL_EXPORTER_OTLP_ENDPOINT`: `/v1/traces` is appended) or when the standard variables name
//! one (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, used as it is, or `OTEL_EXPORTER_OTLP_ENDPOINT`),
//! and `OTEL_SDK_DISABLED` is not `true`. The other standard variables work as in every
//! OpenTelemetry SDK, read by `opentelemetry-otlp` and `opentelemetry_sdk`: headers, timeout,
//! `OTEL_SERVICE_NAME` (else `ssehub`), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and
//! the batch processor's `OTEL_BSP_*`. `OTEL_EXPORTER_OTLP_PROTOCOL` may only be
//! `http/protobuf`: this build has no gRPC or JSON exporter, and says so rather than sending
//! nothing.
//!
//! Spans leave in batches from the SDK's own thread: a slow or absent collector never holds a
//! publish (the batch queue, 2,048 spans by default, drops what does not fit).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

use super::Tracing;

/// How the hub exports its spans.
#[derive(Debug, Clone, Default)]
pub struct OtlpSettings {
    /// The collector's base URL (`http://127.0.0.1:4318`); `None`: only the standard variables
    /// can turn tracing on.
    pub endpoint: Option<String>,
    /// The share of deliveries (0 to 1) that get a `deliver` span.
    pub delivery_ratio: f64,
}

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` names a protocol this build does not export.
    #[error("{variable}={value}: this build exports OTLP over http/protobuf only")]
    Protocol {
        /// The variable that named it.
        variable: &'static str,
        /// What it said.
        value: String,
    },
    /// The exporter could not be built (a bad endpoint URL, for one).
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// The running exporter; [`Exporter::shutdown`] sends what is still buffered.
#[derive(Debug)]
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// Flushes the spans still buffered and stops the export thread (blocking, bounded by the
    /// exporter's timeout).
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "OTLP exporter did not shut down cleanly");
        }
    }
}

/// A non-empty environment variable.
fn variable(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

/// Starts exporting, if tracing is configured: the hub's [`Tracing`] and the exporter to shut
/// down at the end; `None` when tracing is off.
///
/// # Errors
/// [`OtlpError`] for a protocol other than http/protobuf or an exporter that cannot be built.
pub fn start(settings: &OtlpSettings) -> Result<Option<(Tracing, Exporter)>, OtlpError> {
    let disabled = variable("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let from_environment = variable("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        || variable("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
    if disabled || (settings.endpoint.is_none() && !from_environment) {
        return Ok(None);
    }
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(value) = variable(name) {
            if value.trim() != "http/protobuf" {
                return Err(OtlpError::Protocol {
                    variable: name,
                    value,
                });
            }
            break;
        }
    }
    let mut exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary);
    if let Some(endpoint) = &settings.endpoint {
        exporter = exporter.with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')));
    }
    let mut resource = Resource::builder();
    if variable("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("ssehub");
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter.build()?)
        .with_resource(resource.build())
        .build();
    let tracing = Tracing::new(provider.tracer("ssehub"), settings.delivery_ratio);
    Ok(Some((tracing, Exporter { provider })))
}
