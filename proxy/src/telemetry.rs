//! Logs and traces (`design.md` §12): `tracing` everywhere, pingora's `log` bridged, text or
//! JSON lines, and OpenTelemetry spans exported over OTLP/HTTP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) is set.
//!
//! Each request is one `iron.request` span (GenAI semantic-convention attributes:
//! `gen_ai.system`, `gen_ai.operation.name`, `gen_ai.request.model`,
//! `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`) with a child span per stage;
//! an incoming W3C `traceparent` becomes its parent and the upstream request carries a
//! `traceparent` of the request span, so a trace follows agent → Iron → provider. The log
//! layer only takes events, so with OTLP off spans are never built on the hot path. Neither
//! logs nor spans ever carry bodies, keys or tokens (token *ids* only).

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use pingora_http::RequestHeader;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::Env;

/// The installed exporter, for [`flush_global`] (the process may exit from a background
/// task once a graceful shutdown has drained).
static PROVIDER: std::sync::OnceLock<SdkTracerProvider> = std::sync::OnceLock::new();

/// Flushes pending spans of the installed exporter, if any.
pub fn flush_global() {
    if let Some(p) = PROVIDER.get() {
        let _ = p.force_flush();
    }
}

/// Keeps the exporter alive; dropping it flushes pending spans.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("otlp", &self.provider.is_some())
            .finish()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

impl Telemetry {
    /// Flushes spans now (graceful shutdown).
    pub fn flush(&self) {
        if let Some(p) = &self.provider {
            let _ = p.force_flush();
        }
    }
}

/// Installs the global subscriber. `service` names the OTLP resource.
pub fn init(service: &'static str, json: bool, env: &dyn Env) -> Telemetry {
    let filter = tracing_subscriber::EnvFilter::try_new(
        env.get("RUST_LOG").unwrap_or_else(|| "info".into()),
    )
    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs: events only (spans are for traces).
    let events_only = tracing_subscriber::filter::filter_fn(|m| m.is_event());
    let fmt = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_filter(events_only)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_filter(events_only)
            .boxed()
    };
    let wants_otlp = env.get("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some();
    let (otel, provider) = if wants_otlp {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => {
                let provider = SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(
                        opentelemetry_sdk::Resource::builder()
                            .with_service_name(service)
                            .build(),
                    )
                    .build();
                let layer = tracing_opentelemetry::layer()
                    .with_tracer(provider.tracer(service))
                    .with_filter(tracing_subscriber::filter::filter_fn(|m| m.is_span()))
                    .boxed();
                let _ = PROVIDER.set(provider.clone());
                (Some(layer), Some(provider))
            }
            Err(e) => {
                eprintln!("{service}: OTLP exporter disabled: {e}");
                (None, None)
            }
        }
    } else {
        (None, None)
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
    Telemetry { provider }
}

struct HeaderExtractor<'a>(&'a RequestHeader);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.headers.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.headers.keys().map(|k| k.as_str()).collect()
    }
}

struct HeaderInjector<'a>(&'a mut RequestHeader);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let _ = self.0.insert_header(key.to_owned(), value);
    }
}

/// Makes the agent's `traceparent` (if any) the parent of `span`.
pub fn adopt_parent(span: &tracing::Span, req: &RequestHeader) {
    if span.is_disabled() || !req.headers.contains_key("traceparent") {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(req));
    let _ = span.set_parent(cx);
}

/// Sets the upstream `traceparent` to `span` (no-op when tracing is off: the agent's own
/// header, if any, is forwarded unchanged).
pub fn inject(span: &tracing::Span, head: &mut RequestHeader) {
    if span.is_disabled() {
        return;
    }
    let cx = span.context();
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(head));
}
