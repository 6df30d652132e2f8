//! A worker runs tasks: results and errors sealed, retries, panics and
//! timeouts, explicit outcomes, priorities, delays, rate limits, rotation.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::{Greet, Other, Scene, fast, wait_state};
use crate::client::Client;
use crate::model::options::EnqueueOptions;
use crate::model::state::{ArchiveReason, TaskState};
use crate::seal::envelope::{Aad, Purpose};
use crate::seal::keyring::Keyring;
use crate::worker::{Priority, TaskContext, TaskError, Worker};

/// Typed tasks run and results are sealed.
pub async fn typed_tasks_run_and_results_are_sealed(e: Scene) {
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

/// Failure retries then succeeds.
pub async fn failure_retries_then_succeeds(e: Scene) {
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

/// Exhausted retries archive with sealed error.
pub async fn exhausted_retries_archive_with_sealed_error(e: Scene) {
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

/// Panics and timeouts are failures and the worker keeps going.
pub async fn panics_and_timeouts_are_failures_and_the_worker_keeps_going(e: Scene) {
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
    let msg = |r: &crate::model::record::TaskRecord| {
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

/// Skip retry and cancel archive immediately.
pub async fn skip_retry_and_cancel_archive_immediately(e: Scene) {
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

/// Strict priority drains the higher queue first.
pub async fn strict_priority_drains_the_higher_queue_first(e: Scene) {
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

/// Delayed tasks wait for their time.
pub async fn delayed_tasks_wait_for_their_time(e: Scene) {
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

/// A rate-limited queue drains completely under a running worker, never
/// faster than its limit allows (the elapsed time can only be longer on a
/// slow machine, never shorter), while another queue runs unhindered.
pub async fn a_rate_limited_queue_drains_no_faster_than_its_limit(e: Scene) {
    use crate::store::broker::RateLimit;
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

/// Key rotation: tasks sealed with the old key are re-sealed in
/// place (their stored bytes keep their kind and metadata), and a worker
/// whose keyring no longer has the old key runs them.
pub async fn resealed_tasks_run_without_the_old_key(e: Scene) {
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            e.client
                .enqueue(
                    &Greet {
                        name: format!("g{n}"),
                    },
                    EnqueueOptions::new(),
                )
                .await
                .unwrap(),
        );
    }
    let old = e.keyring.primary_key_id().to_owned();
    let mut rotated = Keyring::from_toml(&e.keyring.to_toml_secret()).unwrap();
    let new = rotated.rotate();
    let rotated = Arc::new(rotated);
    let ops = Client::builder(e.broker.clone(), rotated.clone()).build();
    let report = ops
        .reseal(
            &crate::admin::reseal::ResealOptions {
                batch: 2,
                ..Default::default()
            },
            "ops",
        )
        .await
        .unwrap();
    assert_eq!((report.resealed, report.tasks), (5, 5), "{report:?}");
    assert!(
        report.remaining.is_empty() && report.failed.is_empty(),
        "{report:?}"
    );
    for id in &ids {
        let rec = e.broker.get(*id).await.unwrap().unwrap();
        assert_eq!(
            crate::seal::envelope::parse_header(&rec.envelope)
                .unwrap()
                .key_id,
            new
        );
        assert_eq!(rec.kind, "test.greet");
    }
    let mut newest = Keyring::from_toml(&rotated.to_toml_secret()).unwrap();
    newest.remove_key(&old).unwrap();
    let names = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = names.clone();
    let worker = fast(Worker::builder(e.broker.clone(), Arc::new(newest)))
        .handle(move |g: Greet, _ctx: TaskContext| {
            seen.lock().unwrap().push(g.name);
            std::future::ready(Ok(()))
        })
        .build()
        .unwrap()
        .spawn();
    for id in &ids {
        wait_state(&e.broker, *id, TaskState::Completed).await;
    }
    let report = worker.shutdown().await.unwrap();
    assert_eq!(report.integrity_failures, 0);
    let mut names = names.lock().unwrap().clone();
    names.sort();
    assert_eq!(names, vec!["g0", "g1", "g2", "g3", "g4"]);
}
