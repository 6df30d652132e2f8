//! Cron schedules: two schedulers (as two instances of a service would run)
//! and one worker share an embedded broker for a few seconds; every tick of
//! an every-second schedule is enqueued once and run once.
//!
//! ```text
//! cargo run -p sealq-sqlite --example cron
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sealq::{Client, EnqueueOptions, Keyring, RawTask, Scheduler, Worker};
use sealq_sqlite::SqliteBroker;

#[tokio::main]
async fn main() -> sealq::Result<()> {
    let dir = tempfile::tempdir().map_err(|e| sealq::Error::Config(e.to_string()))?;
    let broker: Arc<dyn sealq::Broker> = Arc::new(SqliteBroker::open(dir.path().join("cron.db"))?);
    let keyring = Arc::new(Keyring::generate());

    let tick = RawTask::from_json("heartbeat", &serde_json::json!({}), EnqueueOptions::new())?;
    let scheduler = || -> sealq::Result<Scheduler> {
        Scheduler::builder(Client::builder(broker.clone(), keyring.clone()).build())
            .add("heartbeat", "* * * * * *", tick.clone())?
            .build()
    };
    let (a, b) = (scheduler()?.spawn(), scheduler()?.spawn());

    let ran = Arc::new(AtomicU64::new(0));
    let counter = ran.clone();
    let worker = Worker::builder(broker.clone(), keyring.clone())
        .maintenance_interval(Duration::from_millis(100))
        .handle_raw("heartbeat", move |_payload, ctx| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                println!(
                    "tick {} (task {})",
                    counter.load(Ordering::Relaxed),
                    ctx.id()
                );
                Ok(())
            }
        })
        .build()?
        .spawn();

    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let (sa, sb) = (a.shutdown().await, b.shutdown().await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.shutdown().await?;
    println!(
        "scheduler A enqueued {}, found {} enqueued already; scheduler B enqueued {}, found {}; the worker ran {}",
        sa.enqueued,
        sa.already,
        sb.enqueued,
        sb.already,
        ran.load(Ordering::Relaxed)
    );
    Ok(())
}
