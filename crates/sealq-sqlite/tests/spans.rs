//! Issue 21, Observability, "Traces": a task's life shows as `tracing`
//! spans around enqueue, lease, the handler and ack, with the task's id,
//! type and queue; no span field holds a payload byte. The producer's W3C
//! trace context travels sealed to the handler.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sealq::broker::Broker;
use sealq::{Client, EnqueueOptions, Keyring, Task, TaskContext, TaskState, TraceParent, Worker};
use sealq_sqlite::SqliteBroker;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Subscriber, subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

const MARKER: &str = "heron-quartz-0917-payload";
const TRACE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

#[derive(serde::Serialize, serde::Deserialize)]
struct Mail {
    note: String,
}
impl Task for Mail {
    const KIND: &'static str = "mail.send";
}

/// Every span opened: its name and its fields as text, recorded values included.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<(String, SpanFields)>>>);

/// One span's fields, `(name, value as text)`.
type SpanFields = Vec<(String, String)>;

struct Fields<'a>(&'a mut SpanFields);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = vec![("#id".to_owned(), id.into_u64().to_string())];
        attrs.record(&mut Fields(&mut fields));
        let mut all = self.0.lock().unwrap();
        all.push((attrs.metadata().name().to_owned(), fields));
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut all = self.0.lock().unwrap();
        let key = id.into_u64().to_string();
        if let Some((_, fields)) = all.iter_mut().rev().find(|(_, f)| f[0].1 == key) {
            values.record(&mut Fields(fields));
        }
    }
}

impl Spans {
    fn named(&self, name: &str) -> Vec<SpanFields> {
        let all = self.0.lock().unwrap();
        all.iter()
            .filter(|(n, _)| n == name)
            .map(|(_, f)| f.clone())
            .collect()
    }
}

fn has(fields: &[(String, String)], key: &str, value: &str) -> bool {
    fields.iter().any(|(k, v)| k == key && v == value)
}

#[tokio::test]
async fn traces_spans_around_enqueue_lease_handler_and_ack() {
    let spans = Spans::default();
    let _guard = subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));

    let dir = tempfile::tempdir().unwrap();
    let broker: Arc<dyn Broker> = Arc::new(SqliteBroker::open(dir.path().join("q.db")).unwrap());
    let keyring = Arc::new(Keyring::generate());
    let client = Client::builder(broker.clone(), keyring.clone()).build();
    let mail = Mail {
        note: MARKER.to_owned(),
    };
    let options = EnqueueOptions::new()
        .queue("mail")
        .trace_parent(TraceParent::parse(TRACE).unwrap());
    let id = client.enqueue(&mail, options).await.unwrap();
    let stored = broker.get(id).await.unwrap().unwrap();
    assert_eq!(
        stored.envelope[0], 3,
        "a traced payload is a version-3 envelope"
    );
    let trace_id = &TRACE.as_bytes()[3..35];
    assert!(
        !stored.envelope.windows(32).any(|w| w == trace_id),
        "the trace context is sealed, not in the stored bytes"
    );

    let seen: Arc<Mutex<Option<String>>> = Arc::default();
    let seen_in_handler = seen.clone();
    let worker = Worker::builder(broker.clone(), keyring)
        .queues([("mail", 1)])
        .handle_any(move |_, ctx: TaskContext| {
            let seen = seen_in_handler.clone();
            async move {
                *seen.lock().unwrap() = ctx.trace_parent().map(|t| t.to_string());
                Ok(())
            }
        })
        .build()
        .unwrap();
    let handle = worker.spawn();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    while broker.get(id).await.unwrap().map(|r| r.state) != Some(TaskState::Completed) {
        assert!(tokio::time::Instant::now() < give_up, "task not completed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.shutdown().await.unwrap();

    let id = id.to_string();
    let enqueue = spans.named("sealq.enqueue");
    assert!(
        enqueue.iter().any(|f| has(f, "task_id", &id)
            && has(f, "task_type", "mail.send")
            && has(f, "queue", "mail")
            && has(f, "tasks", "1")),
        "{enqueue:?}"
    );
    let lease = spans.named("sealq.lease");
    assert!(lease.iter().any(|f| has(f, "leased", "1")), "{lease:?}");
    let task = spans.named("sealq.task");
    assert!(
        task.iter()
            .any(|f| has(f, "id", &id) && has(f, "kind", "mail.send") && has(f, "queue", "mail")),
        "{task:?}"
    );
    assert!(
        task.iter()
            .any(|f| has(f, "id", &id) && has(f, "trace_parent", TRACE)),
        "the task's span names the producer's trace: {task:?}"
    );
    assert_eq!(
        seen.lock().unwrap().as_deref(),
        Some(TRACE),
        "the handler got it"
    );
    let handler = spans.named("sealq.handler");
    assert!(
        handler.iter().any(|f| has(f, "task_id", &id)
            && has(f, "task_type", "mail.send")
            && has(f, "queue", "mail")),
        "{handler:?}"
    );
    let ack = spans.named("sealq.ack");
    assert!(ack.iter().any(|f| has(f, "task_id", &id)), "{ack:?}");
    let all = format!("{:?}", spans.0.lock().unwrap());
    assert!(!all.contains(MARKER), "a payload byte in a span");
}
