//! End-to-end throughput of the embedded broker: enqueue a batch, dequeue it,
//! ack it, repeated, with `synchronous=FULL` (or `normal` as first argument).
//!
//! ```text
//! cargo run --release -p sealq-sqlite --example throughput [full|normal] [tasks] [batch] [envelope-bytes]
//! ```

use std::time::{Duration, Instant};

use sealq::broker::{Ack, Broker, DequeueRequest, NewTask, Outcome};
use sealq::testkit::fixtures::task_at;
use sealq::{Clock, SystemClock};
use sealq_sqlite::{SqliteBroker, SqliteOptions, Synchronous};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let synchronous = match args.next().as_deref() {
        Some("normal") => Synchronous::Normal,
        _ => Synchronous::Full,
    };
    let total: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(50_000);
    let batch: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(500);
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = SqliteBroker::open_with(
        dir.path().join("bench.db"),
        SqliteOptions {
            synchronous,
            ..SqliteOptions::default()
        },
    )
    .expect("open");
    let envelope_len: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(256);
    let req = DequeueRequest {
        queues: vec!["bench".into()],
        max: batch,
        lease: Duration::from_secs(60),
        worker: "bench".into(),
    };
    let start = Instant::now();
    let mut done = 0;
    let mut phase = [Duration::ZERO; 3];
    while done < total {
        let now = SystemClock.now_ms();
        let tasks: Vec<NewTask> = (0..batch)
            .map(|_| {
                let mut t = task_at("bench", now, now);
                t.envelope = vec![0xA5; envelope_len];
                t
            })
            .collect();
        let t0 = Instant::now();
        broker.enqueue(tasks).await.expect("enqueue");
        phase[0] += t0.elapsed();
        let t0 = Instant::now();
        let leased = broker.dequeue(&req).await.expect("dequeue");
        phase[1] += t0.elapsed();
        let t0 = Instant::now();
        let acks = leased
            .iter()
            .map(|l| Ack {
                lease: l.lease,
                outcome: Outcome::Complete { result: None },
            })
            .collect();
        broker.ack(acks).await.expect("ack");
        phase[2] += t0.elapsed();
        done += leased.len();
    }
    eprintln!(
        "enqueue {:?} dequeue {:?} ack {:?}",
        phase[0], phase[1], phase[2]
    );
    let secs = start.elapsed().as_secs_f64();
    println!(
        "synchronous={} tasks={total} batch={batch} envelope={envelope_len}B: {:.0} tasks/s end to end ({secs:.2} s)",
        synchronous.as_pragma(),
        total as f64 / secs
    );
}
