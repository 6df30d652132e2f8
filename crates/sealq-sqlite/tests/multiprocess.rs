//! Real processes sharing one database file: this test binary re-runs itself
//! as producer children (selected by an environment variable) while the
//! parent consumes.

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use sealq::broker::{Ack, Broker, DequeueRequest, EnqueueResult, Outcome};
use sealq::testkit::fixtures::task_at;
use sealq::{Clock, SystemClock};
use sealq_sqlite::SqliteBroker;

const CHILD_ENV: &str = "SEALQ_SQLITE_CHILD_DB";
const PER_CHILD: usize = 300;

/// In a child: enqueue PER_CHILD tasks in small batches. In the parent run of
/// the test binary this does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_producer() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let broker = SqliteBroker::open(&path).expect("child opens the shared file");
    for _ in 0..PER_CHILD / 3 {
        let now = SystemClock.now_ms();
        let batch = (0..3).map(|_| task_at("mp", now, now)).collect();
        let res = broker
            .enqueue(batch)
            .await
            .expect("child enqueue never fails");
        assert!(res.iter().all(|r| *r == EnqueueResult::Enqueued));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_in_other_processes() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let broker = SqliteBroker::open(&path).unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            Command::new(&exe)
                .args(["--exact", "child_producer", "--test-threads=1", "--quiet"])
                .env(CHILD_ENV, &path)
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("spawn child")
        })
        .collect();

    let req = DequeueRequest {
        queues: vec!["mp".into()],
        max: 32,
        lease: Duration::from_secs(300),
        worker: "parent".into(),
    };
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.len() < 2 * PER_CHILD {
        assert!(
            Instant::now() < deadline,
            "only {} tasks arrived",
            seen.len()
        );
        let got = broker.dequeue(&req).await.expect("dequeue never fails");
        if got.is_empty() {
            // Woken by the other processes' commits (data_version watcher).
            broker
                .wait_for_work(&req.queues, Duration::from_secs(1))
                .await
                .unwrap();
            continue;
        }
        let acks = got
            .iter()
            .map(|l| Ack {
                lease: l.lease,
                outcome: Outcome::Complete { result: None },
            })
            .collect();
        broker.ack(acks).await.expect("ack never fails");
        for l in got {
            assert!(seen.insert(l.record.id), "delivered twice");
        }
    }
    for mut c in children {
        assert!(c.wait().unwrap().success(), "a child producer failed");
    }
    assert_eq!(seen.len(), 2 * PER_CHILD);
}
