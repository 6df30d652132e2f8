//! Issue 21: a worker counts every lease of a task whose type it has no
//! handler for in `sealq_unhandled_type_total{queue, task_type}`. Its own
//! test binary: it installs a process-wide metrics recorder.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use sealq::testkit::scenarios::{Greet, Other, fast, wait_state};
use sealq::{Client, EnqueueOptions, Keyring, TaskContext, TaskState, Worker};
use sealq_sqlite::SqliteBroker;

/// Counters by name and sorted labels.
#[derive(Default)]
struct Counting(Mutex<HashMap<String, Arc<AtomicU64>>>);

struct Cell(Arc<AtomicU64>);

impl metrics::CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

fn name_of(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorder for &'static Counting {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let cell = self
            .0
            .lock()
            .unwrap()
            .entry(name_of(key))
            .or_default()
            .clone();
        Counter::from_arc(Arc::new(Cell(cell)))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rough_edge_unhandled_type_is_counted_by_queue_and_type() {
    let counting: &'static Counting = Box::leak(Box::default());
    metrics::set_global_recorder(counting).expect("the only recorder of this binary");
    let dir = tempfile::tempdir().unwrap();
    let broker: Arc<dyn sealq::Broker> =
        Arc::new(SqliteBroker::open(dir.path().join("q.db")).unwrap());
    let keyring = Arc::new(Keyring::generate());
    let client = Client::builder(broker.clone(), keyring.clone()).build();
    let id = client
        .enqueue(&Other { n: 1 }, EnqueueOptions::new().queue("jobs"))
        .await
        .unwrap();
    let worker = fast(Worker::builder(broker.clone(), keyring))
        .queues([("jobs", 1)])
        .handle(|_: Greet, _ctx: TaskContext| async { Ok(()) })
        .build()
        .unwrap()
        .spawn();
    wait_state(&broker, id, TaskState::Retry).await;
    worker.shutdown().await.unwrap();
    let counters = counting.0.lock().unwrap();
    let n = counters
        .get("sealq_unhandled_type_total{queue=jobs,task_type=test.other}")
        .map(|c| c.load(Ordering::Relaxed));
    assert_eq!(
        n,
        Some(1),
        "counters: {:?}",
        counters.keys().collect::<Vec<_>>()
    );
}
