//! Background threads end when the last broker handle is dropped.
//! (Its own test binary: it counts this process's threads by name.)

use std::time::Duration;

use sealq::broker::Broker;
use sealq_sqlite::SqliteBroker;

fn sealq_threads() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("sealq-sqlite"))
        .count()
}

/// Thread names are set by each new thread itself: poll a little for `n`.
async fn wait_for_count(n: usize) -> usize {
    for _ in 0..100 {
        if sealq_threads() == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sealq_threads()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_stop_when_last_handle_drops() {
    if !std::path::Path::new("/proc/self/task").exists() {
        return; // not Linux: nothing to count with
    }
    let dir = tempfile::tempdir().unwrap();
    let a = SqliteBroker::open(dir.path().join("q.db")).unwrap();
    let b = a.clone();
    assert_eq!(
        wait_for_count(3).await,
        3,
        "one writer, one watcher, one checkpointer"
    );
    a.stats().await.unwrap();
    drop(a);
    assert_eq!(sealq_threads(), 3, "a clone still holds them");
    b.pause("q").await.unwrap();
    drop(b);
    // Drop joins the threads; allow the kernel a moment to reap them.
    assert_eq!(
        wait_for_count(0).await,
        0,
        "sealq-sqlite threads still running"
    );
}
