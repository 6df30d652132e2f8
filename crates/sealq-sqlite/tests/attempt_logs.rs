//! Issue 21, Observability, "Logs": a failed attempt, a retry and an
//! archive are each one WARN event with the task's id, type, queue,
//! attempt and reason; neither the payload nor the handler's error text
//! (here both quote the payload, as real handlers' errors do) reaches any
//! log event, whatever its level.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sealq::backoff::Backoff;
use sealq::broker::Broker;
use sealq::{Client, EnqueueOptions, Keyring, Task, TaskContext, TaskError, TaskState, Worker};
use sealq_sqlite::SqliteBroker;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber, subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};

const MARKER: &str = "lynx-amber-3308-payload";

#[derive(serde::Serialize, serde::Deserialize)]
struct Charge {
    account: String,
}
impl Task for Charge {
    const KIND: &'static str = "billing.charge";
}

/// Every event: its level and its fields as text.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<(Level, EventFields)>>>);

/// One event's fields, `(name, value as text)`.
type EventFields = Vec<(String, String)>;

struct Fields<'a>(&'a mut EventFields);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

impl<S: Subscriber> Layer<S> for Events {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Vec::new();
        event.record(&mut Fields(&mut fields));
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), fields));
    }
}

fn field<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn logs_warn_per_failure_and_archive_never_the_error_text() {
    let events = Events::default();
    let _guard = subscriber::set_default(tracing_subscriber::registry().with(events.clone()));

    let dir = tempfile::tempdir().unwrap();
    let broker: Arc<dyn Broker> = Arc::new(SqliteBroker::open(dir.path().join("q.db")).unwrap());
    let keyring = Arc::new(Keyring::generate());
    let client = Client::builder(broker.clone(), keyring.clone()).build();
    let options = EnqueueOptions::new()
        .queue("billing")
        .max_retries(1)
        .backoff(Backoff::Fixed { delay_ms: 10 });
    let charge = Charge {
        account: MARKER.to_owned(),
    };
    let id = client.enqueue(&charge, options).await.unwrap();

    // First attempt: an error quoting the payload; second: a panic quoting it.
    let worker = Worker::builder(broker.clone(), keyring)
        .queues([("billing", 1)])
        .maintenance_interval(Duration::from_millis(10))
        .quiet_handler_panics(true)
        .handle(|c: Charge, ctx: TaskContext| async move {
            if ctx.attempt() == 1 {
                return Err(TaskError::retry(format!("card declined for {}", c.account)));
            }
            panic!("no account {}", c.account);
        })
        .build()
        .unwrap();
    let handle = worker.spawn();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    while broker.get(id).await.unwrap().map(|r| r.state) != Some(TaskState::Archived) {
        assert!(tokio::time::Instant::now() < give_up, "task not archived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.shutdown().await.unwrap();

    let all = events.0.lock().unwrap().clone();
    let text = format!("{all:?}");
    assert!(!text.contains(MARKER), "payload data was logged");
    assert!(!text.contains("card declined"), "the error text was logged");
    assert!(!text.contains("no account"), "the panic message was logged");

    let id = id.to_string();
    let warn_for = |message: &str| {
        all.iter()
            .find(|(l, f)| {
                *l == Level::WARN
                    && field(f, "message") == Some(message)
                    && field(f, "task_id") == Some(id.as_str())
            })
            .unwrap_or_else(|| panic!("no WARN `{message}` for the task: {all:?}"))
            .1
            .clone()
    };
    let retry = warn_for("task failed; will retry");
    assert_eq!(field(&retry, "task_type"), Some("billing.charge"));
    assert_eq!(field(&retry, "queue"), Some("billing"));
    assert_eq!(field(&retry, "attempt"), Some("1"));
    assert_eq!(field(&retry, "reason"), Some("failed"));
    assert_eq!(field(&retry, "detail"), Some("handler_error"));
    let archived = warn_for("task archived");
    assert_eq!(field(&archived, "attempt"), Some("2"));
    assert_eq!(field(&archived, "reason"), Some("exhausted"));
    assert_eq!(field(&archived, "detail"), Some("panic"));
    assert_eq!(field(&archived, "queue"), Some("billing"));
}
