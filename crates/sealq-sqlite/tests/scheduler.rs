//! Cron schedules on the embedded broker: ticks due at a time are enqueued
//! once however many schedulers run, late schedulers enqueue only the
//! latest tick, and a running scheduler keeps enqueueing.

use std::sync::Arc;
use std::time::Duration;

use sealq::broker::{Broker, ListQuery, Outcome};
use sealq::clock::ManualClock;
use sealq::scheduler::tick_id;
use sealq::{Client, EnqueueOptions, Keyring, RawTask, Scheduler};
use sealq_sqlite::{SqliteBroker, SqliteOptions};

fn report() -> RawTask {
    RawTask::from_json(
        "reports.build",
        &serde_json::json!({"kind": "daily"}),
        EnqueueOptions::new().queue("cron"),
    )
    .unwrap()
}

/// 2026-06-01T00:00:00Z, a multiple of 10 s.
const T0: i64 = 1_780_272_000_000;

/// A broker in a fresh directory, on a manual clock at `T0 + 1 s`.
fn manual_broker() -> (tempfile::TempDir, Arc<ManualClock>, Arc<dyn Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0 + 1_000);
    let broker: Arc<dyn Broker> = Arc::new(
        SqliteBroker::open_with(
            dir.path().join("q.db"),
            SqliteOptions::with_clock(clock.clone()),
        )
        .unwrap(),
    );
    (dir, clock, broker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tick_is_enqueued_once_and_late_schedulers_skip_to_the_latest() {
    let (_dir, clock, broker) = manual_broker();
    let keyring = Arc::new(Keyring::generate());
    let client = || {
        Client::builder(broker.clone(), keyring.clone())
            .clock(clock.clone())
            .build()
    };
    let scheduler = || {
        Scheduler::builder(client())
            .add("every-10s", "*/10 * * * * *", report())
            .unwrap()
            .build()
            .unwrap()
    };
    let (mut a, mut b) = (scheduler(), scheduler());

    // First runs at T0 + 1 s: nothing due yet; the next tick is T0 + 10 s.
    assert_eq!(a.run_due(T0 + 1_000).await, Some(T0 + 10_000));
    assert_eq!(b.run_due(T0 + 1_000).await, Some(T0 + 10_000));
    assert!(broker.list(&ListQuery::default()).await.unwrap().is_empty());

    // At T0 + 10 s both run: one enqueues the tick, the other finds it.
    clock.set_ms(T0 + 10_000);
    a.run_due(T0 + 10_000).await;
    b.run_due(T0 + 10_000).await;
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!(sa.enqueued + sb.enqueued, 1, "{sa:?} {sb:?}");
    assert_eq!(sa.already + sb.already, 1, "{sa:?} {sb:?}");
    let stored = broker
        .get(tick_id("every-10s", T0 + 10_000))
        .await
        .unwrap()
        .expect("the tick's task");
    assert_eq!(
        (stored.queue.as_str(), stored.kind.as_str()),
        ("cron", "reports.build")
    );

    // Completed, it is still known: a scheduler started afterwards does
    // not enqueue the same tick again.
    let leased = broker
        .dequeue(&sealq::broker::DequeueRequest {
            queues: vec!["cron".into()],
            max: 1,
            lease: Duration::from_secs(30),
            worker: "w".into(),
        })
        .await
        .unwrap();
    broker
        .ack(vec![sealq::broker::Ack {
            lease: leased[0].lease,
            outcome: Outcome::Complete { result: None },
        }])
        .await
        .unwrap();
    let mut late = scheduler();
    late.run_due(T0 + 10_000).await;
    assert_eq!((late.stats().enqueued, late.stats().already), (0, 1));

    // A scheduler that wakes 35 s later enqueues the latest tick (T0 + 40 s)
    // and counts the two before it as missed.
    clock.set_ms(T0 + 45_000);
    a.run_due(T0 + 45_000).await;
    assert_eq!(a.stats().missed, 2, "{:?}", a.stats());
    assert!(
        broker
            .get(tick_id("every-10s", T0 + 40_000))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        broker
            .get(tick_id("every-10s", T0 + 20_000))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(broker.list(&ListQuery::default()).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_schedulers_enqueue_every_second_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let broker: Arc<dyn Broker> = Arc::new(SqliteBroker::open(dir.path().join("q.db")).unwrap());
    let keyring = Arc::new(Keyring::generate());
    let spawn = || {
        Scheduler::builder(Client::builder(broker.clone(), keyring.clone()).build())
            .add("every-second", "* * * * * *", report())
            .unwrap()
            .build()
            .unwrap()
            .spawn()
    };
    let (a, b) = (spawn(), spawn());
    tokio::time::sleep(Duration::from_millis(2_600)).await;
    let (sa, sb) = (a.shutdown().await, b.shutdown().await);
    let stored = broker.list(&ListQuery::default()).await.unwrap();
    assert!(
        !stored.is_empty(),
        "no tick enqueued in 2.6 s: {sa:?} {sb:?}"
    );
    assert_eq!(
        stored.len() as u64,
        sa.enqueued + sb.enqueued,
        "{sa:?} {sb:?}"
    );
    assert_eq!(sa.failures + sb.failures, 0);
    // Every stored task is a tick of the schedule, each a different one.
    let mut ids: Vec<_> = stored.iter().map(|r| r.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), stored.len());
    for r in &stored {
        let ms = r.id.0.get_timestamp().unwrap().to_unix();
        let tick = ms.0 as i64 * 1000 + i64::from(ms.1 / 1_000_000);
        assert_eq!(r.id, tick_id("every-second", tick));
    }
}

#[test]
fn bad_patterns_names_and_time_zones_are_refused_clearly() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _g = rt.enter();
    let dir = tempfile::tempdir().unwrap();
    let broker: Arc<dyn Broker> = Arc::new(SqliteBroker::open(dir.path().join("q.db")).unwrap());
    let client = Client::builder(broker, Arc::new(Keyring::generate())).build();
    let e = Scheduler::builder(client.clone())
        .add("x", "61 * * * *", report())
        .unwrap_err();
    assert!(e.to_string().contains("61 * * * *"), "{e}");
    let e = Scheduler::builder(client.clone())
        .time_zone("Mars/Olympus")
        .unwrap_err();
    assert!(e.to_string().contains("Mars/Olympus"), "{e}");
    let e = Scheduler::builder(client.clone())
        .add("x", "@hourly", report())
        .unwrap()
        .add("x", "@daily", report())
        .unwrap_err();
    assert!(e.to_string().contains("already used"), "{e}");
    assert!(Scheduler::builder(client).build().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_retried_and_a_refused_payload_skipped() {
    let (_dir, clock, broker) = manual_broker();
    let keyring = Arc::new(Keyring::generate());
    let client = Client::builder(broker.clone(), keyring)
        .clock(clock.clone())
        .build();
    let card = RawTask::from_json(
        "billing.charge",
        &serde_json::json!({"card": "4242 4242 4242 4242"}),
        EnqueueOptions::new(),
    )
    .unwrap();
    let mut s = Scheduler::builder(client)
        .add("report", "*/10 * * * * *", report())
        .unwrap()
        .add("charge", "*/10 * * * * *", card)
        .unwrap()
        .build()
        .unwrap();
    broker.set_max_depth("cron", Some(0)).await.unwrap();
    s.run_due(T0 + 1_000).await;
    clock.set_ms(T0 + 10_000);
    // The full queue keeps its tick due (the earliest next is still now);
    // the refused payload's tick is skipped.
    assert_eq!(s.run_due(T0 + 10_000).await, Some(T0 + 10_000));
    assert_eq!(s.stats().failures, 2, "{:?}", s.stats());
    // Room again: the same tick goes in on the next run.
    broker.set_max_depth("cron", None).await.unwrap();
    assert_eq!(s.run_due(T0 + 10_500).await, Some(T0 + 20_000));
    assert_eq!(s.stats().enqueued, 1, "{:?}", s.stats());
    assert!(
        broker
            .get(tick_id("report", T0 + 10_000))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        broker
            .get(tick_id("charge", T0 + 10_000))
            .await
            .unwrap()
            .is_none()
    );
}
