//! Log output (text or JSON lines, filtered by `log.level` or `RUST_LOG`) and, when
//! `telemetry.otlp_endpoint` is set, OpenTelemetry traces exported over OTLP/HTTP.
//!
//! Spans are `tracing` spans; `tracing-opentelemetry` turns them into OpenTelemetry spans. Trace
//! context crosses what a span cannot follow by itself as a W3C `traceparent` string: from an HTTP
//! request into the trip actor's message, from the trip's events into their outbox rows, and from a
//! bus message into the payment consumer ([`current_traceparent`], [`continuing`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::config::{LogFormat, LogSettings, TelemetrySettings};

/// Whether spans are exported: without an exporter, trace context is never read or written, so
/// the hot paths that would carry it (every trip event) pay nothing for it.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The trace exporter, flushed and stopped by [`Telemetry::shutdown`].
#[derive(Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter. Call it outside any async
    /// runtime (the exporter's HTTP client blocks).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("trace exporter did not shut down cleanly: {e}");
        }
    }
}

/// Installs the global tracing subscriber for logs only (once; later calls are ignored). Logs go
/// to stderr so that commands printing a result on stdout (`hexdispatch token`) stay clean.
pub fn init(settings: &LogSettings) {
    let _ = install(settings, None);
}

/// As [`init`], with traces exported to `telemetry.otlp_endpoint` when it is set. Call it outside
/// any async runtime.
///
/// # Errors
///
/// The exporter could not be built (a malformed endpoint).
pub fn init_with_traces(
    log: &LogSettings,
    telemetry: &TelemetrySettings,
) -> anyhow::Result<Telemetry> {
    install(log, Some(telemetry))
}

fn install(log: &LogSettings, telemetry: Option<&TelemetrySettings>) -> anyhow::Result<Telemetry> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // The log level filters the log lines only: spans are traced whatever it is.
    let fmt = match log.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let endpoint = telemetry.and_then(|t| {
        t.otlp_endpoint
            .as_deref()
            .filter(|e| !e.is_empty())
            .map(|e| (t, e))
    });
    let provider = match endpoint {
        None => None,
        Some((settings, endpoint)) => {
            let endpoint = endpoint.trim_end_matches('/');
            let url = if endpoint.ends_with("/v1/traces") {
                endpoint.to_owned()
            } else {
                format!("{endpoint}/v1/traces")
            };
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpJson)
                .with_endpoint(url)
                .build()?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(settings.service_name.clone())
                .build();
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource)
                    .build(),
            )
        }
    };
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("hexdispatch"))
            .with_filter(EnvFilter::new("hexdispatch=info"))
            .boxed()
    });
    let installed = tracing_subscriber::registry()
        .with(fmt)
        .with(traces)
        .try_init()
        .is_ok();
    EXPORTING.store(installed && provider.is_some(), Ordering::Release);
    Ok(Telemetry { provider })
}

/// The current span's context as a W3C `traceparent`, when traces are exported (`None` otherwise).
#[must_use]
pub fn current_traceparent() -> Option<String> {
    if !EXPORTING.load(Ordering::Acquire) {
        return None;
    }
    let context = tracing::Span::current().context();
    let span = context.span();
    let sc = span.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// `span`, made a child of the W3C `traceparent` given, when there is one (nothing changes for a
/// malformed one, or when traces are not exported).
#[must_use]
pub fn continuing(span: tracing::Span, traceparent: Option<&str>) -> tracing::Span {
    let Some(traceparent) = traceparent.filter(|_| EXPORTING.load(Ordering::Acquire)) else {
        return span;
    };
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
    span
}
