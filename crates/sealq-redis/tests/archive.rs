//! Archive caps: `RedisOptions::{archive_max_count, archive_max_age}` are
//! enforced by purging, oldest first, and every trimmed task is counted (the
//! returned figure, the metric `sealq_archive_trimmed_total{queue}` and the
//! queue's `trimmed` count in Redis), never dropped silently.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use sealq::ArchiveReason;
use sealq::broker::{Ack, Broker, Outcome};
use sealq::clock::ManualClock;
use sealq::testkit::fixtures::task_at;
use sealq_redis::{Purged, RedisBroker, RedisOptions};

/// Counter totals by name and labels, as a process-wide recorder.
#[derive(Default)]
struct Counters(Mutex<HashMap<String, Arc<Total>>>);

#[derive(Default)]
struct Total(std::sync::atomic::AtomicU64);

impl CounterFn for Total {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, std::sync::atomic::Ordering::SeqCst);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, std::sync::atomic::Ordering::SeqCst);
    }
}

fn key_str(key: &Key) -> String {
    let mut s = key.name().to_owned();
    for l in key.labels() {
        s.push_str(&format!(",{}={}", l.key(), l.value()));
    }
    s
}

impl Recorder for Counters {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let t = self
            .0
            .lock()
            .unwrap()
            .entry(key_str(key))
            .or_default()
            .clone();
        Counter::from_arc(t)
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

fn counters() -> &'static Counters {
    static C: std::sync::OnceLock<&'static Counters> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        let c: &'static Counters = Box::leak(Box::default());
        metrics::set_global_recorder(c).expect("install the test recorder");
        c
    })
}

fn counted(name: &str) -> u64 {
    counters()
        .0
        .lock()
        .unwrap()
        .get(name)
        .map_or(0, |t| t.0.load(std::sync::atomic::Ordering::SeqCst))
}

/// Enqueue `n` tasks into `queue`, lease them and archive them one ms apart.
async fn archive_n(
    b: &RedisBroker,
    clock: &ManualClock,
    queue: &str,
    n: usize,
) -> Vec<sealq::TaskId> {
    let now = clock.now_ms();
    let tasks = (0..n).map(|_| task_at(queue, now, now)).collect::<Vec<_>>();
    let ids: Vec<_> = tasks.iter().map(|t| t.id).collect();
    b.enqueue(tasks).await.unwrap();
    let leased = b
        .dequeue(&sealq::broker::DequeueRequest {
            queues: vec![queue.to_owned()],
            max: n,
            lease: Duration::from_secs(60),
            worker: "w".into(),
        })
        .await
        .unwrap();
    assert_eq!(leased.len(), n);
    for l in leased {
        clock.advance_ms(1);
        let r = b
            .ack(vec![Ack {
                lease: l.lease,
                outcome: Outcome::Archive {
                    reason: ArchiveReason::Exhausted,
                    error: None,
                },
            }])
            .await
            .unwrap();
        assert_eq!(r, vec![sealq::broker::AckResult::Applied]);
    }
    ids
}

use sealq::clock::Clock as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_caps_trim_oldest_and_count_them() {
    counters();
    let clock = ManualClock::new(1_700_000_000_000);
    let s = support::shared();
    let prefix = support::unique_prefix();
    let opts = RedisOptions {
        archive_max_count: Some(3),
        archive_max_age: Some(Duration::from_secs(3600)),
        maintenance_batch: 2, // several batches per queue
        ..RedisOptions::with_clock(clock.clone()).prefix(prefix.clone())
    };
    let b = RedisBroker::connect_with(&s.url(), opts).await.unwrap();

    // Count cap: 7 archived, keep the newest 3.
    let ids = archive_n(&b, &clock, "caps", 7).await;
    let p = b.purge().await.unwrap();
    assert_eq!(
        p,
        Purged {
            completed: 0,
            archive_trimmed: 4
        }
    );
    for id in &ids[..4] {
        assert!(b.get(*id).await.unwrap().is_none(), "oldest trimmed");
    }
    for id in &ids[4..] {
        assert!(b.get(*id).await.unwrap().is_some(), "newest kept");
    }
    let st = b.stats().await.unwrap();
    assert_eq!(st.iter().find(|q| q.queue == "caps").unwrap().archived, 3);
    assert_eq!(counted("sealq_archive_trimmed_total,queue=caps"), 4);
    // Auditable in Redis too: the queue's cumulative `trimmed` count.
    let n = s.cli(&["HGET", &format!("{prefix}:{{caps}}:n"), "trimmed"]);
    assert_eq!(n.trim(), "4");
    // Nothing more to trim: purging again changes nothing.
    assert_eq!(b.purge().await.unwrap().archive_trimmed, 0);

    // Age cap: an hour later every archived task is past it.
    clock.advance_ms(3_600_001);
    assert_eq!(b.purge_completed().await.unwrap(), 0);
    let st = b.stats().await.unwrap();
    assert!(st.iter().all(|q| q.archived == 0), "{st:?}");
    assert_eq!(counted("sealq_archive_trimmed_total,queue=caps"), 7);

    // A trimmed id is forgotten: it may be enqueued again.
    let mut t = task_at("caps", clock.now_ms(), clock.now_ms());
    t.id = ids[0];
    assert_eq!(
        b.enqueue(vec![t]).await.unwrap(),
        vec![sealq::broker::EnqueueResult::Enqueued]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_caps_nothing_archived_is_trimmed() {
    let clock = ManualClock::new(1_700_000_000_000);
    let b = RedisBroker::connect_with(
        &support::shared().url(),
        RedisOptions::with_clock(clock.clone()).prefix(support::unique_prefix()),
    )
    .await
    .unwrap();
    archive_n(&b, &clock, "keep", 5).await;
    clock.advance_ms(365 * 24 * 3_600_000);
    assert_eq!(b.purge().await.unwrap().archive_trimmed, 0);
    let st = b.stats().await.unwrap();
    assert_eq!(st.iter().find(|q| q.queue == "keep").unwrap().archived, 5);
}
