//! The span a handler runs in, `sealq.handler` (task id, type, queue,
//! attempt), inside the task's `sealq.task` span. With the `otel` feature
//! and a trace context sealed in the envelope, its OpenTelemetry parent is
//! the producer's span, so the handler's work (and every span it opens)
//! joins the producer's trace.

use tracing::{Span, info_span};

use crate::model::record::TaskRecord;
use crate::model::trace_parent::TraceParent;

/// The handler's span for `record`, parented on `trace` when OpenTelemetry
/// is compiled in.
pub(crate) fn handler_span(record: &TaskRecord, trace: Option<&TraceParent>) -> Span {
    let span = info_span!(
        "sealq.handler",
        task_id = %record.id,
        task_type = %record.kind,
        queue = %record.queue,
        attempt = record.attempts,
    );
    #[cfg(feature = "otel")]
    if let Some(trace) = trace {
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        // Fails only without the OpenTelemetry layer (nothing to join) or
        // for a disabled span: the handler runs all the same.
        let _ = span.set_parent(trace.to_otel_context());
    }
    #[cfg(not(feature = "otel"))]
    let _ = trace;
    span
}
