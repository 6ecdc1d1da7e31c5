//! Logs for kiln's processes, and OpenTelemetry traces when an OTLP
//! endpoint is given (off by default).
//!
//! **One trace per workflow.** A workflow's work is spread over many
//! requests, possibly several server replicas sharing one store, server
//! restarts, and the agent on the machine. Rather than carrying a trace
//! context through all of that, the trace id is *derived* from the workflow
//! (its id and creation time), and so is the span id of each attempt (from
//! the attempt's id): every replica and every agent agrees on them without
//! coordination, and a span exported after a restart still lands in the
//! right trace.
//!
//! - The server emits spans rebuilt from what it committed ([`Recorder`]):
//!   the workflow (root), each attempt (dispatch to end, with its state and
//!   reason), and the attempt's pull and run phases as the agent reported
//!   them. They are emitted once, by the replica whose transition ended
//!   them, so the trace is exactly the state machine's history.
//! - The agent gets the attempt's span as a W3C `traceparent` in its
//!   assignment and parents its own `tracing` spans on it ([`set_parent`]):
//!   what it did inside the attempt (pull, container run, reports), as it
//!   saw it.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider, SpanData, SpanProcessor};
use sha2::{Digest, Sha256};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub use opentelemetry::KeyValue as Attribute;

/// How long exporting may take at shutdown before it is given up.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Installs the process's log output (stderr, `RUST_LOG` or `info`) and,
/// with an OTLP endpoint, trace export. Keep the guard until the process
/// ends: dropping it flushes what is not exported yet.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// What [`Telemetry::init`] sets up for traces.
pub struct TraceExport<'a> {
    /// The OTLP/gRPC endpoint (`http://collector:4317`).
    pub endpoint: &'a str,
    /// `service.name` of the spans.
    pub service: &'static str,
    /// Targets (module path prefixes) whose `tracing` spans are exported;
    /// empty: none (the process only emits recorded spans).
    pub span_targets: &'static [&'static str],
}

impl Telemetry {
    pub fn init(export: Option<TraceExport<'_>>) -> anyhow::Result<Self> {
        let logs = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()));
        let Some(export) = export else {
            tracing_subscriber::registry().with(logs).init();
            return Ok(Self { provider: None });
        };
        let resource = Resource::builder().with_service_name(export.service).build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(batch_processor(export.endpoint, &resource)?)
            .with_resource(resource.clone())
            .build();
        let targets = export.span_targets;
        let spans = tracing_opentelemetry::layer()
            .with_tracer(opentelemetry::trace::TracerProvider::tracer(&provider, export.service))
            .with_filter(tracing_subscriber::filter::filter_fn(move |meta| {
                meta.is_span()
                    && *meta.level() <= tracing::Level::INFO
                    && targets.iter().any(|t| meta.target().starts_with(t))
            }));
        tracing_subscriber::registry().with(logs).with(spans).init();
        let recorder =
            Recorder { processor: batch_processor(export.endpoint, &resource)?, scope: scope(export.service) };
        let _ = RECORDER.set(recorder);
        tracing::info!(endpoint = export.endpoint, "exporting traces over OTLP");
        Ok(Self { provider: Some(provider) })
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT);
        }
        if let Some(recorder) = RECORDER.get() {
            let _ = recorder.processor.shutdown_with_timeout(SHUTDOWN_TIMEOUT);
        }
    }
}

fn batch_processor(endpoint: &str, resource: &Resource) -> anyhow::Result<BatchSpanProcessor> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| anyhow::anyhow!("--otlp-endpoint {endpoint}: {e}"))?;
    let mut processor = BatchSpanProcessor::builder(exporter).build();
    processor.set_resource(resource);
    Ok(processor)
}

fn scope(service: &'static str) -> InstrumentationScope {
    InstrumentationScope::builder(service).with_version(env!("CARGO_PKG_VERSION")).build()
}

/// The ids of one workflow's trace, derived from the workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkflowTrace {
    pub trace_id: TraceId,
    /// The workflow's own (root) span.
    pub root: SpanId,
}

impl WorkflowTrace {
    /// Derived from the workflow's id and creation time: a workflow deleted
    /// and created again under the same name gets a new trace.
    pub fn of(workflow_id: &str, created_at_millis: i64) -> Self {
        let digest = Sha256::digest(format!("kiln workflow {workflow_id} {created_at_millis}"));
        let trace = <[u8; 16]>::try_from(&digest[..16]).expect("16 bytes");
        let root = <[u8; 8]>::try_from(&digest[16..24]).expect("8 bytes");
        Self { trace_id: TraceId::from_bytes(trace), root: SpanId::from_bytes(root) }
    }

    /// The span of one attempt (attempt ids are unique).
    pub fn attempt_span(attempt_id: &str) -> SpanId {
        Self::child_span(attempt_id, "attempt")
    }

    /// Another span derived from an attempt: its `pull` or `run` phase.
    pub fn child_span(attempt_id: &str, what: &str) -> SpanId {
        let digest = Sha256::digest(format!("kiln {what} {attempt_id}"));
        SpanId::from_bytes(<[u8; 8]>::try_from(&digest[..8]).expect("8 bytes"))
    }

    /// A W3C `traceparent` naming `span` in this trace (sampled).
    pub fn traceparent(&self, span: SpanId) -> String {
        format!("00-{}-{}-01", self.trace_id, span)
    }
}

/// The span context a W3C `traceparent` names, if it is well-formed
/// (version 00, non-zero ids).
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || parts.next().is_some() || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok().filter(|t| *t != TraceId::INVALID)?;
    let span_id = SpanId::from_hex(span).ok().filter(|s| *s != SpanId::INVALID)?;
    let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()?);
    Some(SpanContext::new(trace_id, span_id, flags, true, TraceState::default()))
}

/// Makes `span` a child of the remote span `traceparent` names. Without
/// trace export, or with an empty or malformed `traceparent`, nothing
/// changes.
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if let Some(remote) = parse_traceparent(traceparent) {
        let cx = opentelemetry::Context::new().with_remote_span_context(remote);
        // Fails only when the subscriber has no OpenTelemetry layer: trace
        // export is off, and there is nothing to link.
        let _ = span.set_parent(cx);
    }
}

/// Emits spans whose ids and times are known already (rebuilt from stored
/// records) straight to the exporter.
pub struct Recorder {
    processor: BatchSpanProcessor,
    scope: InstrumentationScope,
}

static RECORDER: OnceLock<Recorder> = OnceLock::new();

/// The process's recorder, when trace export is on.
pub fn recorder() -> Option<&'static Recorder> {
    RECORDER.get()
}

/// One finished span, ids and times given.
#[derive(Debug, Clone)]
pub struct RecordedSpan {
    pub name: Cow<'static, str>,
    pub trace: WorkflowTrace,
    pub span_id: SpanId,
    /// `None`: a root span.
    pub parent: Option<SpanId>,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<KeyValue>,
    /// Set: the span ended in error, with this description.
    pub error: Option<String>,
}

impl Recorder {
    /// Queues the span for export (never blocks: a full queue drops it,
    /// as the SDK does for every span).
    pub fn emit(&self, span: RecordedSpan) {
        self.processor.on_end(span_data(span, self.scope.clone()));
    }
}

fn span_data(span: RecordedSpan, scope: InstrumentationScope) -> SpanData {
    let context =
        SpanContext::new(span.trace.trace_id, span.span_id, TraceFlags::SAMPLED, false, TraceState::default());
    SpanData {
        span_context: context,
        parent_span_id: span.parent.unwrap_or(SpanId::INVALID),
        parent_span_is_remote: false,
        span_kind: SpanKind::Internal,
        name: span.name,
        start_time: span.start,
        end_time: span.end.max(span.start),
        attributes: span.attributes,
        dropped_attributes_count: 0,
        events: Default::default(),
        links: Default::default(),
        status: span.error.map_or(Status::Ok, Status::error),
        instrumentation_scope: scope,
    }
}

/// Milliseconds since the Unix epoch (how kiln stores times) as a time.
pub fn millis_to_time(millis: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(millis.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_derived_stable_and_distinct() {
        let a = WorkflowTrace::of("w1", 1000);
        assert_eq!(a, WorkflowTrace::of("w1", 1000), "every replica and agent derives the same ids");
        assert_ne!(a.trace_id, WorkflowTrace::of("w1", 1001).trace_id, "re-created: a new trace");
        assert_ne!(a.trace_id, WorkflowTrace::of("w2", 1000).trace_id);
        assert_ne!(WorkflowTrace::attempt_span("x"), WorkflowTrace::child_span("x", "pull"));
        assert_eq!(WorkflowTrace::attempt_span("x"), WorkflowTrace::attempt_span("x"));
    }

    #[test]
    fn traceparents_round_trip_and_bad_ones_are_refused() {
        let t = WorkflowTrace::of("w1", 1000);
        let span = WorkflowTrace::attempt_span("x");
        let header = t.traceparent(span);
        assert_eq!(header.len(), 55, "{header}");
        let parsed = parse_traceparent(&header).expect("well-formed");
        assert_eq!((parsed.trace_id(), parsed.span_id(), parsed.is_sampled()), (t.trace_id, span, true));
        let zero_trace = format!("00-{}-{span}-01", "0".repeat(32));
        for bad in ["", "00-abc-def-01", &zero_trace, &header.replacen("00-", "01-", 1), &format!("{header}-x")] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn recorded_spans_keep_their_ids_parent_times_and_status() {
        let t = WorkflowTrace::of("w1", 1000);
        let data = span_data(
            RecordedSpan {
                name: "attempt".into(),
                trace: t,
                span_id: WorkflowTrace::attempt_span("x"),
                parent: Some(t.root),
                start: millis_to_time(2000),
                end: millis_to_time(1500),
                attributes: vec![KeyValue::new("kiln.state", "FAILED")],
                error: Some("NonZeroExit".into()),
            },
            scope("test"),
        );
        assert_eq!(data.span_context.trace_id(), t.trace_id);
        assert_eq!(data.parent_span_id, t.root);
        assert_eq!(data.end_time, data.start_time, "an end before the start (clock skew) is clamped");
        assert_eq!(data.status, Status::error("NonZeroExit"));
    }
}
