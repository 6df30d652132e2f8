//! OpenTelemetry: a producer enqueues inside its own span, a worker runs
//! the task, and the handler's span (`sealq.handler`) is part of the
//! producer's trace: the W3C trace context travelled sealed inside the
//! payload envelope (version 3, `docs/envelope.md`), never in the clear.
//!
//! Spans go to an in-memory exporter and are printed; use any exporter
//! (OTLP, Jaeger …) in a real deployment.
//!
//! ```text
//! cargo run -p sealq-sqlite --features otel --example otel
//! ```

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporterBuilder, SdkTracerProvider};
use sealq::{
    Client, EnqueueOptions, Keyring, RawTask, TaskContext, TaskState, TraceParent, Worker,
};
use sealq_sqlite::SqliteBroker;
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let exporter = InMemorySpanExporterBuilder::new().build();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("sealq-example")))
        .init();

    let dir = tempfile::tempdir()?;
    let broker: Arc<dyn sealq::Broker> = Arc::new(SqliteBroker::open(dir.path().join("otel.db"))?);
    let keyring = Arc::new(Keyring::generate());
    let client = Client::builder(broker.clone(), keyring.clone()).build();

    // The producer: an HTTP request handler, say. Its trace context is
    // sealed with the payload.
    let request = tracing::info_span!("POST /signup");
    let id = async {
        let trace = TraceParent::from_current_span().expect("a span with a trace");
        let options = EnqueueOptions::new().trace_parent(trace);
        let task = RawTask::from_json("mail.welcome", &serde_json::json!({"user": 42}), options)?;
        client.enqueue_raw(task).await
    }
    .instrument(request)
    .await?;

    // The worker: its handler's spans join the producer's trace.
    let worker = Worker::builder(broker.clone(), keyring)
        .handle_any(|_, ctx: TaskContext| async move {
            tracing::info_span!("render and send").in_scope(|| {
                tracing::info!(task = %ctx.id(), "sending");
            });
            Ok(())
        })
        .build()?;
    let handle = worker.spawn();
    while broker.get(id).await?.map(|r| r.state) != Some(TaskState::Completed) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.shutdown().await?;
    provider.force_flush()?;

    let spans = exporter.get_finished_spans()?;
    for s in &spans {
        println!(
            "trace {}  span {}  parent {}  {}",
            s.span_context.trace_id(),
            s.span_context.span_id(),
            s.parent_span_id,
            s.name
        );
    }
    let trace_of = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.span_context.trace_id())
            .unwrap_or_else(|| panic!("no span {name}"))
    };
    assert_eq!(trace_of("sealq.handler"), trace_of("POST /signup"));
    assert_eq!(trace_of("render and send"), trace_of("POST /signup"));
    println!("the handler's spans joined the producer's trace");
    Ok(())
}
