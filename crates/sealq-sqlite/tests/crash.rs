//! An enqueue acknowledged under `synchronous=FULL` is committed before the
//! call returns: a child process (this test binary re-run, selected by an
//! environment variable) enqueues one task per call and prints each id only
//! after the call returned `Ok`; the parent kills it with SIGKILL mid-stream,
//! reopens the file and finds every printed id stored.
//!
//! SIGKILL keeps the kernel's page cache, so this proves the reply follows
//! the commit (the writer never answers before `COMMIT` returned), not that
//! the disk honours fsync; that is SQLite's `synchronous=FULL` promise.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use sealq::broker::{Broker, EnqueueResult};
use sealq::testkit::fixtures::task_at;
use sealq::{Clock, SystemClock, TaskId};
use sealq_sqlite::{SqliteBroker, Synchronous};

const CHILD_ENV: &str = "SEALQ_SQLITE_CRASH_DB";
/// Acknowledged enqueues the parent waits for before killing the child.
const ACKED_BEFORE_KILL: usize = 300;

/// In a child: enqueue one task per call, forever (until killed), printing
/// each id once its call returned. In the parent run this does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_enqueue_forever() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let broker = SqliteBroker::open(&path).expect("child opens the file");
    assert_eq!(broker.synchronous().await.unwrap(), Synchronous::Full);
    let mut out = std::io::stdout().lock();
    // Several calls in flight at once, so group commit is exercised too.
    loop {
        let now = SystemClock.now_ms();
        let tasks: Vec<_> = (0..4).map(|_| task_at("crash", now, now)).collect();
        let calls = tasks.into_iter().map(|t| {
            let b = broker.clone();
            let id = t.id;
            tokio::spawn(async move { (id, b.enqueue(vec![t]).await) })
        });
        for call in calls.collect::<Vec<_>>() {
            let (id, res) = call.await.unwrap();
            assert_eq!(res.expect("enqueue"), vec![EnqueueResult::Enqueued]);
            writeln!(out, "{id}").unwrap();
            out.flush().unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_enqueue_survives_kill_9() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(&exe)
        .args([
            "--exact",
            "child_enqueue_forever",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.len() < ACKED_BEFORE_KILL {
        assert!(Instant::now() < deadline, "only {} acks", acked.len());
        let line = lines.next().expect("child output").unwrap();
        if let Ok(id) = uuid::Uuid::from_str(line.trim()) {
            acked.push(TaskId(id));
        }
    }
    child.kill().expect("SIGKILL the child");
    let _ = child.wait();
    // Ids printed before the kill landed (still in the pipe) were acknowledged too.
    for line in lines.map_while(Result::ok) {
        if let Ok(id) = uuid::Uuid::from_str(line.trim()) {
            acked.push(TaskId(id));
        }
    }
    let broker = SqliteBroker::open(&path).expect("reopen after the crash");
    for id in &acked {
        assert!(
            broker.get(*id).await.unwrap().is_some(),
            "task {id} was acknowledged but is not stored after kill -9"
        );
    }
}
