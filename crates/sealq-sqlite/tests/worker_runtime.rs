//! The worker runtime end to end on the embedded broker: real SQLite files,
//! real keyrings, real sealing. Each test owns its database file.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sealq::broker::{Broker, ListQuery};
use sealq::envelope::{Aad, Purpose};
use sealq::{
    ArchiveReason, Client, EnqueueOptions, Error, Keyring, Priority, RawTask, Task, TaskContext,
    TaskError, TaskId, TaskState, Worker,
};
use sealq_sqlite::SqliteBroker;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Greet {
    name: String,
}
impl Task for Greet {
    const KIND: &'static str = "test.greet";
}

#[derive(Debug, Serialize, Deserialize)]
struct Other {
    n: u32,
}
impl Task for Other {
    const KIND: &'static str = "test.other";
}

struct Env {
    _dir: tempfile::TempDir,
    broker: Arc<dyn Broker>,
    keyring: Arc<Keyring>,
    client: Client,
}

fn env() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker: Arc<dyn Broker> =
        Arc::new(SqliteBroker::open(dir.path().join("q.db")).expect("open broker"));
    let keyring = Arc::new(Keyring::generate());
    let client = Client::builder(broker.clone(), keyring.clone())
        .producer("tests")
        .build();
    Env {
        _dir: dir,
        broker,
        keyring,
        client,
    }
}

fn fast(builder: sealq::WorkerBuilder) -> sealq::WorkerBuilder {
    builder
        .maintenance_interval(Duration::from_millis(20))
        .shutdown_timeout(Duration::from_secs(5))
}

/// Wait (bounded) until `id` reaches `state`; returns the record.
async fn wait_state(
    broker: &Arc<dyn Broker>,
    id: TaskId,
    state: TaskState,
) -> sealq::broker::TaskRecord {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rec = broker.get(id).await.expect("get").expect("task exists");
        if rec.state == state {
            return rec;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "task {id} stuck in {} (wanted {state})",
            rec.state
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_tasks_run_and_results_are_sealed() {
    let e = env();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let worker = fast(Worker::builder(e.broker.clone(), e.keyring.clone()))
        .handle(move |t: Greet, ctx: TaskContext| {
            let s = s.clone();
            async move {
                ctx.set_result(&format!("hello {}", t.name))?;
                s.lock().unwrap().push((ctx.id(), t.name));
                Ok(())
            }
        })
        .build()
        .unwrap()
        .spawn();
    let mut ids = Vec::new();
    for i in 0..50 {
        let greet = Greet {
            name: format!("secret-name-{i}"),
        };
        ids.push(
            e.client
                .enqueue(&greet, EnqueueOptions::new())
                .await
                .unwrap(),
        );
    }
    for id in &ids {
        wait_state(&e.broker, *id, TaskState::Completed).await;
    }
    worker.shutdown().await.unwrap();
    assert_eq!(seen.lock().unwrap().len(), 50);

    let rec = e.broker.get(ids[7]).await.unwrap().unwrap();
    let sealed = rec.result.clone().expect("result stored");
    assert!(!String::from_utf8_lossy(&sealed).contains("secret-name-7"));
    assert!(!String::from_utf8_lossy(&rec.envelope).contains("secret-name-7"));
    let opened = e
        .keyring
        .open(&Aad::for_record(&rec, Purpose::Result), &sealed)
        .unwrap();
    let text: String = rmp_serde::from_slice(&opened).unwrap();
    assert_eq!(text, "hello secret-name-7");
    // A result cannot be passed off as a payload.
    assert!(
        e.keyring
            .open(&Aad::for_record(&rec, Purpose::Payload), &sealed)
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_retries_then_succeeds() {
    let e = env();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let worker = fast(Worker::builder(e.broker.clone(), e.keyring.clone()))
        .handle(move |_: Greet, ctx: TaskContext| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                if ctx.attempt() == 1 {
                    return Err(TaskError::retry_in(
                        Duration::from_millis(20),
                        "first try fails",
                    ));
                }
                Ok(())
            }
        })
        .build()
        .unwrap()
        .spawn();
    let id = e
        .client
        .enqueue(&Greet { name: "a".into() }, EnqueueOptions::new())
        .await
        .unwrap();
    let rec = wait_state(&e.broker, id, TaskState::Completed).await;
    worker.shutdown().await.unwrap();
    assert_eq!(rec.attempts, 2);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_archive_with_sealed_error() {
    let e = env();
    let worker = fast(Worker::builder(e.broker.clone(), e.keyring.clone()))
        .handle(|t: Greet, _ctx: TaskContext| async move {
            Err(TaskError::retry_in(
                Duration::from_millis(5),
                format!("cannot greet {}", t.name),
            ))
        })
        .build()
        .unwrap()
        .spawn();
    let opts = EnqueueOptions::new().max_retries(2);
    let id = e
        .client
        .enqueue(
            &Greet {
                name: "private-bob".into(),
            },
            opts,
        )
        .await
        .unwrap();
    let rec = wait_state(&e.broker, id, TaskState::Archived).await;
    worker.shutdown().await.unwrap();
    assert_eq!(rec.attempts, 3, "first attempt plus two retries");
    assert_eq!(rec.archive_reason, Some(ArchiveReason::Exhausted));
    let err = rec.last_error.clone().expect("error stored");
    assert!(
        !String::from_utf8_lossy(&err).contains("private-bob"),
        "error stored in the clear"
    );
    let opened = e
        .keyring
        .open(&Aad::for_record(&rec, Purpose::Error), &err)
        .unwrap();
    assert_eq!(
        std::str::from_utf8(&opened).unwrap(),
        "cannot greet private-bob"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_and_timeouts_are_failures_and_the_worker_keeps_going() {
    let e = env();
    let worker = fast(Worker::builder(e.broker.clone(), e.keyring.clone()))
        .handle(|t: Greet, _ctx: TaskContext| async move {
            match t.name.as_str() {
                "panic" => panic!("boom"),
                "hang" => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(())
                }
                _ => Ok(()),
            }
        })
        .build()
        .unwrap()
        .spawn();
    let no_retry = EnqueueOptions::new().max_retries(0);
    let p = e
        .client
        .enqueue(
            &Greet {
                name: "panic".into(),
            },
            no_retry.clone(),
        )
        .await
        .unwrap();
    let h = e
        .client
        .enqueue(
            &Greet {
                name: "hang".into(),
            },
            no_retry.timeout(Duration::from_millis(100)),
        )
        .await
        .unwrap();
    let ok = e
        .client
        .enqueue(
            &Greet {
                name: "fine".into(),
            },
            EnqueueOptions::new(),
        )
        .await
        .unwrap();
    let rp = wait_state(&e.broker, p, TaskState::Archived).await;
    let rh = wait_state(&e.broker, h, TaskState::Archived).await;
    wait_state(&e.broker, ok, TaskState::Completed).await;
    worker.shutdown().await.unwrap();
    let msg = |r: &sealq::broker::TaskRecord| {
        let b = e
            .keyring
            .open(
                &Aad::for_record(r, Purpose::Error),
                r.last_error.as_ref().unwrap(),
            )
            .unwrap();
        String::from_utf8(b.to_vec()).unwrap()
    };
    assert!(msg(&rp).contains("panicked"), "{}", msg(&rp));
    assert!(msg(&rh).contains("timed out"), "{}", msg(&rh));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_moved_foreign_expired_and_unknown_tasks_never_reach_a_handler() {
    let e = env();
    let called = Arc::new(AtomicU32::new(0));
    let c = called.clone();
    let other_keyring = Keyring::generate();
    let foreign = Client::builder(e.broker.clone(), other_keyring)
        .producer("intruder")
        .build();

    // Bit flip in the ciphertext.
    let mut flipped = e
        .client
        .seal(RawTask::typed(&Greet { name: "x".into() }, EnqueueOptions::new()).unwrap())
        .unwrap();
    let last = flipped.envelope.len() - 1;
    flipped.envelope[last] ^= 0x01;
    // Sealed for queue `default`, stored under another queue.
    let mut moved = e
        .client
        .seal(
            RawTask::typed(
                &Greet { name: "x".into() },
                EnqueueOptions::new().queue("payroll"),
            )
            .unwrap(),
        )
        .unwrap();
    moved.queue = "default".into();
    // Relabelled as another type.
    let mut relabelled = e
        .client
        .seal(RawTask::typed(&Other { n: 1 }, EnqueueOptions::new()).unwrap())
        .unwrap();
    relabelled.kind = Greet::KIND.into();
    // Truncated.
    let mut truncated = e
        .client
        .seal(RawTask::typed(&Greet { name: "x".into() }, EnqueueOptions::new()).unwrap())
        .unwrap();
    truncated.envelope.truncate(10);
    let ids = [flipped.id, moved.id, relabelled.id, truncated.id];
    e.broker
        .enqueue(vec![flipped, moved, relabelled, truncated])
        .await
        .unwrap();
    // Sealed with a key this worker does not have.
    let wrong_key = foreign
        .enqueue(&Greet { name: "x".into() }, EnqueueOptions::new())
        .await
        .unwrap();
    // Past its not-after.
    let expired = e
        .client
        .enqueue(
            &Greet { name: "x".into() },
            EnqueueOptions::new().not_after_ms(1),
        )
        .await
        .unwrap();
    // No handler for this type.
    let unknown = e
        .client
        .enqueue(&Other { n: 2 }, EnqueueOptions::new())
        .await
        .unwrap();

    let worker = fast(Worker::builder(e.broker.clone(), e.keyring.clone()))
        .handle(move |_: Greet, _ctx: TaskContext| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .build()
        .unwrap()
        .spawn();
    for id in ids.into_iter().chain([wrong_key]) {
        let rec = wait_state(&e.broker, id, TaskState::Archived).await;
        assert_eq!(rec.archive_reason, Some(ArchiveReason::Integrity), "{id}");
        assert_eq!(rec.attempts, 1, "integrity failures are never retried");
    }
    let rec = wait_state(&e.broker, expired, TaskState::Archived).await;
    assert_eq!(rec.archive_reason, Some(ArchiveReason::Expired));
    let rec = wait_state(&e.broker, unknown, TaskState::Archived).await;
    assert_eq!(rec.archive_reason, Some(ArchiveReason::UnknownType));
    let report = worker.shutdown().await.unwrap();
    assert_eq!(
        called.load(Ordering::SeqCst),
        0,
        "a refused task reached the handler"
    );
    assert_eq!(report.integrity_failures, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_of_the_wrong_shape_is_archived_as_decode() {
    let e = env();
    let raw = RawTask::from_json(
        Greet::KIND,
        &serde_json::json!({"unexpected": 1}),
        EnqueueOptions::new(),
    )
    .unwrap();
    let id = e.client.enqueue_raw(raw).await.unwrap();
    let worker = fast(Worker::builder(e.broker.clone(), e.keyring.clone()))
        .handle(|_: Greet, _ctx: TaskContext| async move { Ok(()) })
        .build()
        .unwrap()
        .spawn();
    let rec = wait_state(&e.broker, id, TaskState::Archived).await;
    worker.shutdown().await.unwrap();
    assert_eq!(rec.archive_reason, Some(ArchiveReason::Decode));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_retry_and_cancel_archive_immediately() {
    let e = env();
    let worker = fast(Worker::builder(e.broker.clone(), e.keyring.clone()))
        .handle(|t: Greet, _ctx: TaskContext| async move {
            if t.name == "skip" {
                Err(TaskError::skip_retry("no point"))
            } else {
                Err(TaskError::cancel("unwanted"))
            }
        })
        .build()
        .unwrap()
        .spawn();
    let s = e
        .client
        .enqueue(
            &Greet {
                name: "skip".into(),
            },
            EnqueueOptions::new(),
        )
        .await
        .unwrap();
    let c = e
        .client
        .enqueue(
            &Greet {
                name: "cancel".into(),
            },
            EnqueueOptions::new(),
        )
        .await
        .unwrap();
    let rs = wait_state(&e.broker, s, TaskState::Archived).await;
    let rc = wait_state(&e.broker, c, TaskState::Archived).await;
    worker.shutdown().await.unwrap();
    assert_eq!(
        (rs.archive_reason, rs.attempts),
        (Some(ArchiveReason::SkipRetry), 1)
    );
    assert_eq!(
        (rc.archive_reason, rc.attempts),
        (Some(ArchiveReason::Cancelled), 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_running_and_prefetched_tasks_uncounted() {
    let e = env();
    let started = Arc::new(tokio::sync::Notify::new());
    let st = started.clone();
    let worker = Worker::builder(e.broker.clone(), e.keyring.clone())
        .concurrency(1)
        .prefetch(2)
        .shutdown_timeout(Duration::from_millis(100))
        .handle(move |_: Greet, ctx: TaskContext| {
            let st = st.clone();
            async move {
                st.notify_one();
                ctx.cancellation().cancelled().await;
                Err(TaskError::retry("cancelled by shutdown"))
            }
        })
        .build()
        .unwrap()
        .spawn();
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            e.client
                .enqueue(
                    &Greet {
                        name: format!("{i}"),
                    },
                    EnqueueOptions::new(),
                )
                .await
                .unwrap(),
        );
    }
    tokio::time::timeout(Duration::from_secs(10), started.notified())
        .await
        .expect("a handler started");
    let report = worker.shutdown().await.unwrap();
    assert_eq!(report.succeeded, 0);
    assert!(report.requeued >= 1, "{report:?}");
    for id in ids {
        let rec = e.broker.get(id).await.unwrap().unwrap();
        assert_eq!(rec.state, TaskState::Pending, "task {id} not returned");
        assert_eq!(rec.attempts, 0, "an interrupted attempt must not count");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_priority_drains_the_higher_queue_first() {
    let e = env();
    for i in 0..20 {
        e.client
            .enqueue(&Other { n: i }, EnqueueOptions::new().queue("low"))
            .await
            .unwrap();
        e.client
            .enqueue(&Other { n: 100 + i }, EnqueueOptions::new().queue("high"))
            .await
            .unwrap();
    }
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let o = order.clone();
    let worker = fast(Worker::builder(e.broker.clone(), e.keyring.clone()))
        .queues([("low", 1), ("high", 10)])
        .priority(Priority::Strict)
        .concurrency(1)
        .prefetch(0)
        .handle(move |t: Other, ctx: TaskContext| {
            let o = o.clone();
            async move {
                o.lock().unwrap().push((ctx.queue().to_owned(), t.n));
                Ok(())
            }
        })
        .build()
        .unwrap()
        .spawn();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    while order.lock().unwrap().len() < 40 {
        assert!(tokio::time::Instant::now() < give_up, "not all tasks ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker.shutdown().await.unwrap();
    let order = order.lock().unwrap();
    assert!(order[..20].iter().all(|(q, _)| q == "high"), "{order:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_keys_and_replayed_ids_are_refused_at_enqueue() {
    let e = env();
    let opts = EnqueueOptions::new().unique("welcome:42", Duration::from_secs(60));
    let first = e
        .client
        .enqueue(&Greet { name: "a".into() }, opts.clone())
        .await
        .unwrap();
    match e.client.enqueue(&Greet { name: "a".into() }, opts).await {
        Err(Error::Duplicate { existing, key }) => {
            assert_eq!(existing, first);
            assert_eq!(key, "welcome:42");
        }
        other => panic!("expected Duplicate, got {other:?}"),
    }
    let worker = fast(Worker::builder(e.broker.clone(), e.keyring.clone()))
        .handle(|_: Greet, _ctx: TaskContext| async move { Ok(()) })
        .build()
        .unwrap()
        .spawn();
    wait_state(&e.broker, first, TaskState::Completed).await;
    worker.shutdown().await.unwrap();
    // The same id coming back after completion is a replay.
    let again = e
        .client
        .enqueue(&Greet { name: "a".into() }, EnqueueOptions::new().id(first))
        .await;
    assert!(
        matches!(again, Err(Error::IdExists(id)) if id == first),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_tasks_wait_for_their_time() {
    let e = env();
    let worker = fast(Worker::builder(e.broker.clone(), e.keyring.clone()))
        .handle(|_: Greet, _ctx: TaskContext| async move { Ok(()) })
        .build()
        .unwrap()
        .spawn();
    let id = e
        .client
        .enqueue(
            &Greet {
                name: "later".into(),
            },
            EnqueueOptions::new().delay(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    let rec = e.broker.get(id).await.unwrap().unwrap();
    assert_eq!(rec.state, TaskState::Scheduled);
    let rec = wait_state(&e.broker, id, TaskState::Completed).await;
    worker.shutdown().await.unwrap();
    assert!(
        rec.finished_at_ms.unwrap() >= rec.meta.created_at_ms + 300,
        "ran before its time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_rejections_store_nothing() {
    let e = env();
    let res = e
        .client
        .enqueue(
            &Greet {
                name: "card 4242 4242 4242 4242".into(),
            },
            EnqueueOptions::new(),
        )
        .await;
    match res {
        Err(err @ Error::PolicyViolation { .. }) => {
            let text = err.to_string();
            assert!(text.contains("name"), "{text}");
            assert!(!text.contains("4242 4242"), "{text}");
        }
        other => panic!("expected a policy violation, got {other:?}"),
    }
    let big = Greet {
        name: "x".repeat(70 * 1024),
    };
    assert!(matches!(
        e.client.enqueue(&big, EnqueueOptions::new()).await,
        Err(Error::PayloadTooLarge { limit: 65536, .. })
    ));
    let all = e.broker.list(&ListQuery::default()).await.unwrap();
    assert!(all.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_workers_task_is_recovered_after_its_lease_expires() {
    let e = env();
    let id = e
        .client
        .enqueue(&Greet { name: "a".into() }, EnqueueOptions::new())
        .await
        .unwrap();
    // A "worker" that leases the task and dies without acking.
    let req = sealq::broker::DequeueRequest {
        queues: vec!["default".into()],
        max: 10,
        lease: Duration::from_millis(200),
        worker: "crashed".into(),
    };
    let leased = e.broker.dequeue(&req).await.unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].record.id, id);

    let worker = fast(Worker::builder(e.broker.clone(), e.keyring.clone()))
        .handle(|_: Greet, _ctx: TaskContext| async move { Ok(()) })
        .build()
        .unwrap()
        .spawn();
    let rec = wait_state(&e.broker, id, TaskState::Completed).await;
    worker.shutdown().await.unwrap();
    assert_eq!(
        rec.attempts, 2,
        "the crashed attempt counts, the recovered one completes"
    );
    // The dead worker's late ack changes nothing.
    let late = e
        .broker
        .ack(vec![sealq::broker::Ack {
            lease: leased[0].lease,
            outcome: sealq::broker::Outcome::Archive {
                reason: ArchiveReason::Cancelled,
                error: None,
            },
        }])
        .await
        .unwrap();
    assert_eq!(late, vec![sealq::broker::AckResult::LeaseLost]);
    assert_eq!(
        e.broker.get(id).await.unwrap().unwrap().state,
        TaskState::Completed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_a_long_task_leased() {
    let e = env();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let worker = fast(Worker::builder(e.broker.clone(), e.keyring.clone()))
        .lease(Duration::from_millis(300))
        .handle(move |_: Greet, _ctx: TaskContext| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                // Three lease lengths: only heartbeats keep it ours.
                tokio::time::sleep(Duration::from_millis(900)).await;
                Ok(())
            }
        })
        .build()
        .unwrap()
        .spawn();
    let id = e
        .client
        .enqueue(
            &Greet {
                name: "slow".into(),
            },
            EnqueueOptions::new(),
        )
        .await
        .unwrap();
    let rec = wait_state(&e.broker, id, TaskState::Completed).await;
    let report = worker.shutdown().await.unwrap();
    assert_eq!(rec.attempts, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(report.leases_lost, 0);
}

/// A rate-limited queue drains completely under a running worker, never
/// faster than its limit allows (the elapsed time can only be longer on a
/// slow machine, never shorter), while another queue runs unhindered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_queue_drains_no_faster_than_its_limit() {
    use sealq::broker::RateLimit;
    let e = env();
    let limit = RateLimit::per(10, Duration::from_millis(200)).unwrap();
    e.broker.set_rate_limit("slow", Some(limit)).await.unwrap();
    for i in 0..40 {
        let q = if i < 30 { "slow" } else { "free" };
        e.client
            .enqueue(
                &Greet {
                    name: format!("n{i}"),
                },
                EnqueueOptions::new().queue(q),
            )
            .await
            .unwrap();
    }
    let started = std::time::Instant::now();
    let handle = fast(Worker::builder(e.broker.clone(), e.keyring.clone()))
        .queues([("slow", 1), ("free", 1)])
        .handle(|_g: Greet, _ctx: TaskContext| async { Ok(()) })
        .build()
        .unwrap()
        .spawn();
    let give_up = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stats = e.broker.stats().await.unwrap();
        let done: u64 = stats.iter().map(|s| s.completed).sum();
        if done == 40 {
            break;
        }
        assert!(std::time::Instant::now() < give_up, "stuck: {stats:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    handle.shutdown().await.unwrap();
    // 30 tasks at 10 per 200 ms from a full bucket of 10: at least 400 ms.
    assert!(
        elapsed >= Duration::from_millis(400),
        "30 rate-limited tasks done in {elapsed:?}"
    );
}
