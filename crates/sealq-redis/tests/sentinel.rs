//! The Redis broker behind a real Sentinel: a master, a replica and one
//! `redis-sentinel`, all started by this test. A broker connected with a
//! `redis+sentinel://` URL runs tasks through a real worker; the master then
//! crashes (SIGKILL), Sentinel promotes the replica, and the same broker and
//! worker go on: tasks enqueued after the failover complete, on the new master.

#[path = "support/sentinel.rs"]
mod sentinel_support;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sealq::broker::Broker;
use sealq::envelope::{Aad, Purpose};
use sealq::{
    BrokerErrorKind, Client, EnqueueOptions, Error, Keyring, Task, TaskContext, TaskId, TaskState,
    Worker,
};
use sealq_redis::RedisBroker;
use sentinel_support::{Sentinel, crash_server, info_field, wait_for};
use serde::{Deserialize, Serialize};
use support::RedisServer;

#[derive(Debug, Serialize, Deserialize)]
struct Greet {
    name: String,
}
impl Task for Greet {
    const KIND: &'static str = "test.greet";
}

/// Wait (bounded) until `id` reaches `state`; returns the record. Reads that
/// fail (the broker may still be switching masters) are retried.
async fn wait_state(
    broker: &Arc<dyn Broker>,
    id: TaskId,
    state: TaskState,
) -> sealq::broker::TaskRecord {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let last = match broker.get(id).await {
            Ok(Some(rec)) if rec.state == state => return rec,
            Ok(Some(rec)) => format!("state {}", rec.state),
            Ok(None) => "no such task".to_owned(),
            Err(e) => format!("error {e}"),
        };
        assert!(
            tokio::time::Instant::now() < give_up,
            "task {id} never reached {state}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Enqueue `n` greetings named `tag-i`; every enqueue must succeed.
async fn enqueue_all(client: &Client, tag: &str, n: u32) -> Vec<TaskId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let greet = Greet {
            name: format!("{tag}-{i}"),
        };
        match client.enqueue(&greet, EnqueueOptions::new()).await {
            Ok(id) => ids.push(id),
            Err(e) => panic!("enqueue of {tag}-{i} failed: {e}"),
        }
    }
    ids
}

/// How many `FCALL`s the server on `port` has run (`INFO commandstats`).
/// Replicated writes arrive as their effects, not as `FCALL`, so on a
/// promoted replica this counts calls made to it as master.
fn fcalls(port: u16) -> u64 {
    let info = sentinel_support::cli(port, &["INFO", "commandstats"]);
    info_field(&info, "cmdstat_fcall")
        .and_then(|v| {
            v.split(',')
                .find_map(|kv| kv.strip_prefix("calls=").map(str::to_owned))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Check that `id` completed with the sealed result "hello NAME".
fn assert_result(keyring: &Keyring, rec: &sealq::broker::TaskRecord, name: &str) {
    let sealed = rec.result.clone().expect("result stored");
    assert!(!String::from_utf8_lossy(&sealed).contains(name));
    let opened = keyring
        .open(&Aad::for_record(rec, Purpose::Result), &sealed)
        .expect("open the result");
    let text: String = rmp_serde::from_slice(&opened).expect("decode the result");
    assert_eq!(text, format!("hello {name}"));
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking helper")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_survives_a_sentinel_failover() {
    // --- topology: master, replica, Sentinel --------------------------------
    let master = RedisServer::start();
    let mport = master.port.to_string();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &mport]);
    master.load_library();
    // The replica is in sync and holds the functions (replicated from the master).
    wait_for(
        "replica in sync with the functions",
        Duration::from_secs(20),
        || {
            let info = replica.cli(&["INFO", "replication"]);
            let up = info_field(&info, "master_link_status").as_deref() == Some("up");
            let funcs = replica.cli(&["FUNCTION", "LIST", "LIBRARYNAME", "sealq"]);
            if up && funcs.contains("sealq") {
                Ok(())
            } else {
                Err(format!("{info}\n{funcs}"))
            }
        },
    );
    let sentinel = Sentinel::start("m", master.port);
    sentinel.wait_replica_known(replica.port, Duration::from_secs(20));
    assert_eq!(sentinel.master_port(), Some(master.port));

    // --- broker and worker through Sentinel ---------------------------------
    let url = format!("redis+sentinel://127.0.0.1:{}/m", sentinel.port);
    let redis = RedisBroker::connect(&url)
        .await
        .expect("connect via Sentinel");
    let broker: Arc<dyn Broker> = Arc::new(redis.clone());
    let keyring = Arc::new(Keyring::generate());
    let client = Client::builder(broker.clone(), keyring.clone())
        .producer("tests")
        .build();
    let seen = Arc::new(AtomicU32::new(0));
    let s = seen.clone();
    let worker = Worker::builder(broker.clone(), keyring.clone())
        .maintenance_interval(Duration::from_millis(20))
        .shutdown_timeout(Duration::from_secs(5))
        .handle(move |t: Greet, ctx: TaskContext| {
            let s = s.clone();
            async move {
                ctx.set_result(&format!("hello {}", t.name))?;
                s.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .build()
        .unwrap()
        .spawn();

    let before = enqueue_all(&client, "before", 20).await;
    for (i, id) in before.iter().enumerate() {
        let rec = wait_state(&broker, *id, TaskState::Completed).await;
        assert_result(&keyring, &rec, &format!("before-{i}"));
    }
    // Everything so far reached the replica (so the checks below are exact).
    let acked = master.cli(&["WAIT", "1", "10000"]);
    assert_eq!(acked.trim(), "1", "replica did not acknowledge: {acked}");
    // The replica ran no FCALL itself (the signal used after the failover).
    assert_eq!(fcalls(replica.port), 0);

    // --- the master crashes; Sentinel promotes the replica ------------------
    let old = master.port;
    blocking(move || crash_server(old)).await;
    // While no master answers, an enqueue fails promptly as "unavailable"
    // (what a producer retries on), rather than hanging or being lost silently.
    let greet = Greet {
        name: "outage".into(),
    };
    let during = tokio::time::timeout(
        Duration::from_secs(15),
        client.enqueue(&greet, EnqueueOptions::new()),
    )
    .await
    .expect("an enqueue during the outage returns within 15 s");
    let during = match during {
        Err(Error::Broker(e)) => {
            assert_eq!(e.kind, BrokerErrorKind::Unavailable, "{e}");
            None
        }
        Err(e) => panic!("enqueue during the outage: unexpected error {e}"),
        // Only if Sentinel had already failed over: then it must run too.
        Ok(id) => Some(id),
    };
    let sentinel = Arc::new(sentinel);
    let sn = sentinel.clone();
    let new = blocking(move || sn.wait_failover(old, Duration::from_secs(30))).await;
    assert_eq!(new, replica.port, "Sentinel promoted an unknown server");
    wait_for(
        "the replica becomes master",
        Duration::from_secs(10),
        || {
            let info = replica.cli(&["INFO", "replication"]);
            match info_field(&info, "role").as_deref() {
                Some("master") => Ok(()),
                _ => Err(info),
            }
        },
    );

    // --- the same broker and worker go on ------------------------------------
    // The worker alone (its failing calls re-ask Sentinel) moves the broker to
    // the new master: FCALLs start arriving there with no call from the test.
    let np = replica.port;
    blocking(move || {
        wait_for(
            "the worker's calls reach the new master",
            Duration::from_secs(20),
            || match fcalls(np) {
                0 => Err("no FCALL on the new master".to_owned()),
                n => Ok(n),
            },
        )
    })
    .await;
    // From then on every call goes to the new master: no enqueue fails.
    let after = enqueue_all(&client, "after", 20).await;
    for (i, id) in after.iter().enumerate() {
        let rec = wait_state(&broker, *id, TaskState::Completed).await;
        assert_result(&keyring, &rec, &format!("after-{i}"));
    }
    if let Some(id) = during {
        let rec = wait_state(&broker, id, TaskState::Completed).await;
        assert_result(&keyring, &rec, "outage");
    }
    // Tasks from before the crash are still there (replicated), still completed.
    for id in &before {
        wait_state(&broker, *id, TaskState::Completed).await;
    }
    // The work really went to the new master: a plain broker on it sees it.
    let direct = RedisBroker::connect(&replica.url())
        .await
        .expect("connect to the new master directly");
    for id in &after {
        let rec = direct
            .get(*id)
            .await
            .unwrap()
            .expect("task on the new master");
        assert_eq!(rec.state, TaskState::Completed);
    }
    worker.shutdown().await.expect("worker shuts down cleanly");
    // At-least-once: a task whose ack met the crash may have run twice.
    assert!(seen.load(Ordering::SeqCst) >= 40);
}
