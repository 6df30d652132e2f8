//! The worker runtime end to end on the Redis broker: a real redis-server,
//! real keyrings, real sealing. Scenarios follow the embedded broker's
//! worker tests, plus Redis-only ones (edited task hashes, a server restart).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sealq::broker::Broker;
use sealq::{
    ArchiveReason, Client, EnqueueOptions, Keyring, RawTask, Task, TaskContext, TaskId, TaskState,
    Worker,
};
use sealq_redis::{RedisBroker, RedisOptions};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Greet {
    name: String,
}
impl Task for Greet {
    const KIND: &'static str = "test.greet";
}

struct Env {
    broker: Arc<dyn Broker>,
    redis: RedisBroker,
    keyring: Arc<Keyring>,
    client: Client,
}

async fn env() -> Env {
    let redis = support::shared_broker(sealq::clock::system_clock()).await;
    env_on(redis)
}

fn env_on(redis: RedisBroker) -> Env {
    let broker: Arc<dyn Broker> = Arc::new(redis.clone());
    let keyring = Arc::new(Keyring::generate());
    let client = Client::builder(broker.clone(), keyring.clone())
        .producer("tests")
        .build();
    Env {
        broker,
        redis,
        keyring,
        client,
    }
}

/// A redis-server of the test's own (to count its calls, or to edit it
/// freely) with the functions library loaded, and an [`Env`] on it.
async fn env_on_own_server() -> (support::RedisServer, Env) {
    let s = support::RedisServer::start();
    s.load_library();
    let redis = RedisBroker::connect_with(&s.url(), RedisOptions::default())
        .await
        .unwrap();
    (s, env_on(redis))
}

fn fast(builder: sealq::WorkerBuilder) -> sealq::WorkerBuilder {
    builder
        .maintenance_interval(Duration::from_millis(20))
        .shutdown_timeout(Duration::from_secs(5))
}

/// A handler that counts its calls in `calls` and succeeds.
fn counting(
    calls: &Arc<AtomicU32>,
) -> impl Fn(Greet, TaskContext) -> std::future::Ready<sealq::HandlerResult> + Send + Sync + 'static
{
    let calls = calls.clone();
    move |_, _| {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(()))
    }
}

/// Wait (bounded) until `id` reaches `state`; returns the record.
async fn wait_state(
    broker: &Arc<dyn Broker>,
    id: TaskId,
    state: TaskState,
) -> sealq::broker::TaskRecord {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(rec)) = broker.get(id).await {
            if rec.state == state {
                return rec;
            }
            assert!(
                tokio::time::Instant::now() < give_up,
                "task {id} stuck in {} (wanted {state})",
                rec.state
            );
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "task {id} never reached {state}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Someone with write access to Redis edits stored tasks directly: swaps
/// the stored bytes (envelope) between tasks, moves a task's bytes under
/// another task's id in another queue... and corrupts the metadata or cuts
/// the bytes short. None reaches a handler; each is archived `integrity`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_hashes_edited_in_redis_never_reach_a_handler() {
    let e = env().await;
    let called = Arc::new(AtomicU32::new(0));
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            e.client
                .enqueue(
                    &Greet {
                        name: format!("n{i}"),
                    },
                    EnqueueOptions::new(),
                )
                .await
                .unwrap(),
        );
    }
    let s = support::shared();
    let bytes_key = |id: &TaskId| format!("{}:{{default}}:b:{}", e.redis.prefix(), id.0.simple());
    // Swap envelopes: task 1's stored bytes copied over task 0's.
    let out = s.cli(&[
        "EVAL",
        "redis.call('SET', KEYS[1], redis.call('GET', KEYS[2])) return 1",
        "2",
        &bytes_key(&ids[0]),
        &bytes_key(&ids[1]),
    ]);
    assert!(out.contains('1'), "{out}");
    // Cut task 1's bytes short (a truncated envelope).
    let out = s.cli(&[
        "EVAL",
        "local b = redis.call('GET', KEYS[1]) redis.call('SET', KEYS[1], string.sub(b, 1, #b - 5)) return 1",
        "1",
        &bytes_key(&ids[1]),
    ]);
    assert!(out.contains('1'), "{out}");
    // Garbage instead of task 2's bytes (metadata no longer decodes).
    s.cli(&["SET", &bytes_key(&ids[2]), "garbage"]);
    // Task 3's bytes deleted.
    s.cli(&["DEL", &bytes_key(&ids[3])]);

    let worker = fast(Worker::builder(e.broker.clone(), e.keyring.clone()))
        .handle(counting(&called))
        .build()
        .unwrap()
        .spawn();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let st = e.broker.stats().await.unwrap();
        if st.iter().map(|q| q.archived).sum::<u64>() == 4 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "not archived: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker.shutdown().await.unwrap();
    assert_eq!(
        called.load(Ordering::SeqCst),
        0,
        "an edited task reached the handler"
    );
    for id in &ids {
        let reason = s.cli(&[
            "HGET",
            &format!("{}:{{default}}:t:{}", e.redis.prefix(), id.0.simple()),
            "ar",
        ]);
        assert_eq!(reason.trim(), "integrity", "{id}");
    }
    for id in &ids[..2] {
        let rec = e.broker.get(*id).await.unwrap().unwrap();
        assert_eq!(rec.archive_reason, Some(ArchiveReason::Integrity));
    }
}

/// A worker survives a redis-server restart (AOF on, same port): tasks
/// enqueued before and after the restart all complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_survives_a_redis_restart() {
    let mut server =
        support::RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    server.load_library();
    let redis = RedisBroker::connect_with(&server.url(), RedisOptions::default())
        .await
        .unwrap();
    let e = env_on(redis);
    let done = Arc::new(AtomicU32::new(0));
    let d = done.clone();
    let worker = fast(Worker::builder(e.broker.clone(), e.keyring.clone()))
        .handle(move |_: Greet, _ctx: TaskContext| {
            let d = d.clone();
            async move {
                d.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .build()
        .unwrap()
        .spawn();
    // Enqueue retrying while the server may be away (a producer's own retry policy).
    async fn enqueue_retrying(c: &Client, name: String) -> TaskId {
        let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match c
                .enqueue(&Greet { name: name.clone() }, EnqueueOptions::new())
                .await
            {
                Ok(id) => return id,
                Err(err) => {
                    assert!(
                        tokio::time::Instant::now() < give_up,
                        "enqueue keeps failing: {err}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    // Tasks enqueued before the restart wait in a paused queue, so they are
    // still in Redis (and in its AOF) when it goes down.
    e.broker.pause("default").await.unwrap();
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(enqueue_retrying(&e.client, format!("before-{i}")).await);
    }
    server.restart();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Err(err) = e.broker.resume("default").await {
        assert!(
            tokio::time::Instant::now() < give_up,
            "resume keeps failing: {err}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..30 {
        ids.push(enqueue_retrying(&e.client, format!("after-{i}")).await);
    }
    for id in &ids {
        wait_state(&e.broker, *id, TaskState::Completed).await;
    }
    worker.shutdown().await.unwrap();
    assert!(done.load(Ordering::SeqCst) >= 60);
}

/// Someone with write access moves a stored task (state hash, bytes and
/// index entries) from one queue to another. The worker on the other queue
/// opens it with that queue in the associated data: it fails, so the task
/// never reaches the handler and is archived `integrity`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_moved_to_another_queue_never_reaches_a_handler() {
    let e = env().await;
    let called = Arc::new(AtomicU32::new(0));
    let id = e
        .client
        .enqueue(&Greet { name: "m".into() }, EnqueueOptions::new())
        .await
        .unwrap();
    let s = support::shared();
    let p = e.redis.prefix().to_owned();
    let idh = id.0.simple().to_string();
    let out = s.cli(&[
        "EVAL",
        "local id = ARGV[1] \
         redis.call('RENAME', KEYS[1] .. 't:' .. id, KEYS[2] .. 't:' .. id) \
         redis.call('RENAME', KEYS[1] .. 'b:' .. id, KEYS[2] .. 'b:' .. id) \
         local at = redis.call('ZSCORE', KEYS[1] .. 'ready', id) \
         redis.call('ZREM', KEYS[1] .. 'ready', id) redis.call('ZREM', KEYS[1] .. 'all', id) \
         redis.call('ZADD', KEYS[2] .. 'ready', at, id) redis.call('ZADD', KEYS[2] .. 'all', 0, id) \
         redis.call('HINCRBY', KEYS[1] .. 'n', 'pending', -1) \
         redis.call('HINCRBY', KEYS[2] .. 'n', 'pending', 1) \
         redis.call('HSET', KEYS[3] .. 'ids', id, 'elsewhere') \
         redis.call('SADD', KEYS[3] .. 'queues', 'elsewhere') return 1",
        "3",
        &format!("{p}:{{default}}:"),
        &format!("{p}:{{elsewhere}}:"),
        &format!("{p}:{{~}}:g:"),
        &idh,
    ]);
    assert!(out.contains('1'), "{out}");
    let worker = fast(Worker::builder(e.broker.clone(), e.keyring.clone()))
        .queues([("default", 1), ("elsewhere", 1)])
        .handle(counting(&called))
        .build()
        .unwrap()
        .spawn();
    let rec = wait_state(&e.broker, id, TaskState::Archived).await;
    assert_eq!(rec.queue, "elsewhere");
    assert_eq!(rec.archive_reason, Some(ArchiveReason::Integrity));
    let report = worker.shutdown().await.unwrap();
    assert_eq!(called.load(Ordering::SeqCst), 0, "a moved task ran");
    assert_eq!(report.integrity_failures, 1);
}

/// Tasks stored by library version 4 (type, metadata and envelope inside the
/// task hash) are moved to the current layout by `install` / `migrate`, and
/// then run: upgrading does not lose queued work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_stored_by_library_version_4_are_migrated_and_run() {
    let e = env().await;
    let called = Arc::new(AtomicU32::new(0));
    let id = e
        .client
        .enqueue(&Greet { name: "old".into() }, EnqueueOptions::new())
        .await
        .unwrap();
    // Turn it into what version 4 stored: fields k, m, e, q in the hash.
    let base = format!("{}:{{default}}:", e.redis.prefix());
    let idh = id.0.simple().to_string();
    let mut conn = redis::Client::open(support::shared().url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let bytes: Vec<u8> = redis::cmd("GET")
        .arg(format!("{base}b:{idh}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(bytes[0], 1, "layout version");
    let kl = usize::from(u16::from_be_bytes([bytes[1], bytes[2]]));
    let kind = &bytes[3..3 + kl];
    let at = 3 + kl;
    let ml = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let meta = &bytes[at + 4..at + 4 + ml];
    let envelope = &bytes[at + 4 + ml..];
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg(format!("{base}t:{idh}"))
        .arg("q")
        .arg("default")
        .arg("k")
        .arg(kind)
        .arg("m")
        .arg(meta)
        .arg("e")
        .arg(envelope)
        .ignore()
        .cmd("DEL")
        .arg(format!("{base}b:{idh}"))
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();

    assert_eq!(e.redis.migrate().await.unwrap(), 1);
    assert_eq!(
        e.redis.migrate().await.unwrap(),
        0,
        "a second run changes nothing"
    );
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg(format!("{base}t:{idh}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        !fields
            .iter()
            .any(|f| ["q", "k", "m", "e"].contains(&f.as_str())),
        "{fields:?}"
    );

    let worker = fast(Worker::builder(e.broker.clone(), e.keyring.clone()))
        .handle(counting(&called))
        .build()
        .unwrap()
        .spawn();
    let rec = wait_state(&e.broker, id, TaskState::Completed).await;
    assert_eq!(rec.kind, Greet::KIND);
    worker.shutdown().await.unwrap();
    assert_eq!(
        called.load(Ordering::SeqCst),
        1,
        "the migrated task ran once"
    );
}

/// A task whose stored bytes Redis did not keep between the producer's
/// `SET` and the enqueue function (evicted under maxmemory in production; a
/// stray permanent key of that id here, which no retry can overcome) is
/// reported as not stored, alone, with a reason naming it and what to do,
/// while the other tasks of the same call are reported stored and stay so:
/// nothing accepted is lost, and nothing stored is reported as failed. The
/// stray is never overwritten. Both first rounds: a small call's bytes
/// inside its function call (`SET NX` per accepted task), a large call's
/// `MSETNX`.
async fn a_task_whose_bytes_redis_did_not_keep_fails_alone_in(n: usize) {
    use sealq::broker::EnqueueResult;
    // A server of its own, to count the calls the enqueue makes.
    let (s, e) = env_on_own_server().await;
    let now = sealq::clock::system_clock().now_ms();
    let tasks: Vec<sealq::broker::NewTask> = (0..n)
        .map(|_| sealq::testkit::fixtures::task_at("nobytes", now, now))
        .collect();
    let stray = tasks[1].id;
    let key = format!("{}:{{nobytes}}:b:{}", e.redis.prefix(), stray.0.simple());
    assert!(s.cli(&["SET", &key, "not a task"]).contains("OK"));
    s.cli(&["CONFIG", "RESETSTAT"]);

    let results = e.broker.enqueue(tasks.clone()).await.unwrap();
    let stats = s.cli(&["INFO", "commandstats"]);
    let calls = |cmd: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    // One round for the call, one more for what it could not write.
    assert_eq!(calls("fcall"), 2, "{stats}");
    if n > 8 {
        // One MSETNX for all, which writes nothing since one key exists;
        // then a SET per task.
        assert_eq!(calls("msetnx"), 1, "{stats}");
        assert_eq!(calls("set"), n as u64, "{stats}");
    } else {
        // A SET NX per task inside the function (the stray's fails), then
        // one SET NX PX for the stray.
        assert_eq!(calls("msetnx"), 0, "{stats}");
        assert_eq!(calls("set"), n as u64 + 1, "{stats}");
    }
    // Only the lost task failed; every other result says it was stored.
    assert_eq!(results.len(), n);
    for (i, r) in results.iter().enumerate() {
        if i == 1 {
            let EnqueueResult::NotStored { reason } = r else {
                panic!("the lost task is reported as not stored: {r:?}");
            };
            assert!(
                reason.contains(&stray.to_string()),
                "names the task: {reason}"
            );
            assert!(reason.contains(&format!("1 of the {n}")), "{reason}");
            assert!(reason.contains("noeviction"), "says what to do: {reason}");
            assert!(
                !reason.contains("not a task"),
                "never shows stored bytes: {reason}"
            );
        } else {
            assert_eq!(r, &EnqueueResult::Enqueued, "task {i}");
        }
    }
    for (i, t) in tasks.iter().enumerate() {
        if i == 1 {
            continue;
        }
        let rec = e.broker.get(t.id).await.unwrap().expect("kept");
        assert_eq!(rec.state, TaskState::Pending);
        assert_eq!(rec.envelope, t.envelope);
    }
    assert!(e.broker.get(stray).await.unwrap().is_none(), "not stored");
    // The stray key is left as it was (never overwritten), and once it is
    // gone the task can be enqueued; the stored ones are known ids.
    assert!(s.cli(&["GET", &key]).contains("not a task"));
    s.cli(&["DEL", &key]);
    let again = e.broker.enqueue(tasks.clone()).await.unwrap();
    let want: Vec<EnqueueResult> = (0..n)
        .map(|i| {
            if i == 1 {
                EnqueueResult::Enqueued
            } else {
                EnqueueResult::IdExists
            }
        })
        .collect();
    assert_eq!(again, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_bytes_redis_did_not_keep_fails_alone() {
    a_task_whose_bytes_redis_did_not_keep_fails_alone_in(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_bytes_redis_did_not_keep_fails_alone_in_a_large_call() {
    a_task_whose_bytes_redis_did_not_keep_fails_alone_in(10).await;
}

/// Through the client's bulk enqueue, of 300 tasks (two calls of the
/// broker's limit): the one task whose bytes Redis did not keep is the only
/// `Err`, an unavailable-broker error naming it; the 299 others are `Ok`
/// and stored. (Before, every task of its call was reported failed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_enqueue_reports_only_the_task_redis_did_not_keep_as_failed() {
    let (s, e) = env_on_own_server().await;
    let ids: Vec<TaskId> = (0..300).map(|_| TaskId::new()).collect();
    let stray = ids[123];
    let key = format!("{}:{{nobytes}}:b:{}", e.redis.prefix(), stray.0.simple());
    assert!(s.cli(&["SET", &key, "not a task"]).contains("OK"));
    let payload = sealq::task::encode_payload(&Greet {
        name: "bulk".into(),
    })
    .unwrap();
    let raw = ids.iter().map(|&id| {
        sealq::RawTask::new(
            Greet::KIND,
            payload.clone(),
            EnqueueOptions::new().queue("nobytes").id(id),
        )
    });
    let out = e.client.enqueue_bulk(raw, 1000).await;
    assert_eq!(out.len(), 300);
    for (i, r) in out.iter().enumerate() {
        if i == 123 {
            let err = r.as_ref().expect_err("the lost task failed");
            assert!(
                matches!(err, sealq::Error::Broker(b) if b.kind == sealq::BrokerErrorKind::Unavailable),
                "{err:?}"
            );
            assert!(err.to_string().contains(&stray.to_string()), "{err}");
            assert!(e.broker.get(stray).await.unwrap().is_none());
        } else {
            assert_eq!(r.as_ref().ok(), Some(&ids[i]), "task {i}: {r:?}");
            let rec = e.broker.get(ids[i]).await.unwrap().expect("stored");
            assert_eq!(rec.state, TaskState::Pending);
        }
    }
}

/// A Redis at its `maxmemory` (policy `noeviction`) refuses writes: the
/// enqueue fails as "unavailable" with a message saying Redis is out of
/// memory and what to do, every task stored before is still there and runs,
/// and enqueueing works again once memory is raised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_refuses_enqueues_and_keeps_what_it_stored() {
    use sealq::BrokerErrorKind;
    use sealq::broker::EnqueueResult;
    let server = support::RedisServer::start_with(&[
        "--maxmemory",
        "3mb",
        "--maxmemory-policy",
        "noeviction",
    ]);
    server.load_library();
    let redis = RedisBroker::connect_with(&server.url(), RedisOptions::default())
        .await
        .unwrap();
    let broker: Arc<dyn Broker> = Arc::new(redis);
    let now = sealq::clock::system_clock().now_ms();
    let mut stored = Vec::new();
    let mut refusal = None;
    for _ in 0..400 {
        let mut t = sealq::testkit::fixtures::task_at("full", now, now);
        t.envelope = vec![7u8; 32 * 1024];
        let id = t.id;
        match broker.enqueue(vec![t]).await {
            Ok(r) => {
                assert_eq!(r, vec![EnqueueResult::Enqueued]);
                stored.push(id);
            }
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    let e = refusal.expect("a 3 MiB Redis refuses 400 tasks of 32 KiB");
    assert_eq!(e.kind, BrokerErrorKind::Unavailable, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("out of memory"), "{msg}");
    assert!(msg.contains("maxmemory"), "says what to do: {msg}");
    assert!(!stored.is_empty(), "some tasks fit");
    for id in &stored {
        let rec = broker.get(*id).await.unwrap().expect("kept");
        assert_eq!(rec.state, TaskState::Pending);
        assert_eq!(rec.envelope.len(), 32 * 1024);
    }
    server.cli(&["CONFIG", "SET", "maxmemory", "0"]);
    let t = sealq::testkit::fixtures::task_at("full", now, now);
    assert_eq!(
        broker.enqueue(vec![t]).await.unwrap(),
        vec![EnqueueResult::Enqueued]
    );
}

/// A bulk enqueue into a Redis that runs out of memory part way: the
/// batches stored before are reported `Ok` and are all there, a task the
/// policy refused keeps its own error, every later task is reported "not
/// stored" with the reason, and resending exactly those tasks once memory
/// is raised stores every one of them: nothing is lost or unaccounted for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_enqueue_that_runs_out_of_memory_accounts_for_every_task() {
    use sealq::BrokerErrorKind;
    let server = support::RedisServer::start_with(&[
        "--maxmemory",
        "3mb",
        "--maxmemory-policy",
        "noeviction",
    ]);
    server.load_library();
    let e = env_on(
        RedisBroker::connect_with(&server.url(), RedisOptions::default())
            .await
            .unwrap(),
    );
    let filler = "x".repeat(4096);
    let task = |n: usize| {
        let name = if n == 7 {
            // Refused by the payload policy before anything is sent.
            "card 4242 4242 4242 4242".to_owned()
        } else {
            format!("{n}{filler}")
        };
        RawTask::typed(&Greet { name }, EnqueueOptions::new()).unwrap()
    };
    const N: usize = 1500;
    let results = e.client.enqueue_bulk((0..N).map(task), 50).await;
    assert_eq!(results.len(), N, "one result per task");
    assert!(
        matches!(results[7], Err(sealq::Error::PolicyViolation { .. })),
        "{:?}",
        results[7]
    );
    let stored: Vec<TaskId> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    let first_unsent = results
        .iter()
        .position(|r| matches!(r, Err(sealq::Error::Broker(_))))
        .expect("a 3 MiB Redis cannot hold 1,500 tasks of 4 KiB");
    assert!(first_unsent > 50, "the first batches fit: {first_unsent}");
    assert_eq!(first_unsent % 50, 0, "whole batches are stored or not");
    for r in &results[first_unsent..] {
        match r {
            Err(sealq::Error::Broker(b)) => {
                assert_eq!(b.kind, BrokerErrorKind::Unavailable, "{b}");
                assert!(b.message.contains("not stored"), "{b}");
                assert!(b.message.contains("out of memory"), "{b}");
            }
            other => panic!("a task after the failure: {other:?}"),
        }
    }
    let pending: u64 = e
        .broker
        .stats()
        .await
        .unwrap()
        .iter()
        .map(|q| q.pending)
        .sum();
    assert_eq!(
        pending,
        stored.len() as u64,
        "exactly the Ok tasks are stored"
    );
    for id in stored.iter().step_by(37) {
        let rec = e
            .broker
            .get(*id)
            .await
            .unwrap()
            .expect("an Ok task is kept");
        assert_eq!(rec.state, TaskState::Pending);
    }
    // Raise memory and resend exactly the tasks reported not stored.
    server.cli(&["CONFIG", "SET", "maxmemory", "0"]);
    let again = e.client.enqueue_bulk((first_unsent..N).map(task), 50).await;
    assert!(again.iter().all(Result::is_ok), "resent tail stored");
    let pending: u64 = e
        .broker
        .stats()
        .await
        .unwrap()
        .iter()
        .map(|q| q.pending)
        .sum();
    assert_eq!(pending, (N - 1) as u64, "every task but the refused one");
}

/// A bulk enqueue sends at most `RedisOptions::bulk_batch_limit` tasks per
/// call, whatever batch its caller asked for (one `MSETNX` per call, from
/// `INFO commandstats`), and every task is stored; an atomic
/// `enqueue_batch` stays one call at any size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_enqueue_sends_at_most_the_bulk_limit_per_call() {
    let server = support::RedisServer::start();
    server.load_library();
    let msetnx = |e: &Env| {
        let r = e.redis.clone();
        async move {
            let stats = r.command_stats().await.unwrap().expect("INFO allowed");
            stats.commands.get("msetnx").map_or(0, |c| c.0)
        }
    };
    let task = |n: usize| {
        RawTask::typed(
            &Greet {
                name: format!("g{n}"),
            },
            EnqueueOptions::new(),
        )
        .unwrap()
    };
    let stored = |e: &Env| {
        let b = e.broker.clone();
        async move {
            b.stats()
                .await
                .unwrap()
                .iter()
                .map(|q| q.pending)
                .sum::<u64>()
        }
    };

    let e = env_on(
        RedisBroker::connect_with(&server.url(), RedisOptions::default())
            .await
            .unwrap(),
    );
    assert_eq!(e.broker.bulk_batch_limit(), Some(256));
    let before = msetnx(&e).await;
    let results = e.client.enqueue_bulk((0..600).map(task), 1000).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(msetnx(&e).await - before, 3, "256 + 256 + 88");
    assert_eq!(stored(&e).await, 600);
    // Smaller batches than the limit are kept as asked.
    let before = msetnx(&e).await;
    let results = e.client.enqueue_bulk((0..300).map(task), 100).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(msetnx(&e).await - before, 3);
    // An atomic batch is never split.
    let before = msetnx(&e).await;
    let results = e
        .client
        .enqueue_batch((0..600).map(task).collect())
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(msetnx(&e).await - before, 1);
    assert_eq!(stored(&e).await, 1500);

    // The limit is an option.
    let wide = RedisOptions {
        bulk_batch_limit: 1000,
        ..RedisOptions::default().prefix("wide")
    };
    let e = env_on(
        RedisBroker::connect_with(&server.url(), wide)
            .await
            .unwrap(),
    );
    let before = msetnx(&e).await;
    let results = e.client.enqueue_bulk((0..600).map(task), 1000).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(msetnx(&e).await - before, 1);
}

/// Neither enqueue path leaves anything behind for tasks it refuses: an id
/// already stored in another queue and a task whose unique key is held get
/// no bytes (the fast path drops those its `MSETNX` wrote; the inline path
/// of small calls never writes them), no marker is left, and the stored
/// tasks keep theirs. Also checked: the call is one `MSETNX` and one
/// `FCALL` (a large call) or one `FCALL` alone (a small one).
async fn refused_tasks_leave_no_bytes_behind_with(fresh_count: usize) {
    use sealq::broker::EnqueueResult;
    let (s, e) = env_on_own_server().await;
    let now = sealq::clock::system_clock().now_ms();
    let mut holder = sealq::testkit::fixtures::task_at("fast", now, now);
    holder.unique = Some(("order-1".into(), 60_000));
    let elsewhere = sealq::testkit::fixtures::task_at("other", now, now);
    let first = e
        .broker
        .enqueue(vec![holder.clone(), elsewhere.clone()])
        .await
        .unwrap();
    assert_eq!(first, vec![EnqueueResult::Enqueued; 2]);

    let mut dup = sealq::testkit::fixtures::task_at("fast", now, now);
    dup.unique = Some(("order-1".into(), 60_000));
    let mut moved = elsewhere.clone();
    moved.queue = "fast".into();
    let fresh: Vec<_> = (0..fresh_count)
        .map(|_| sealq::testkit::fixtures::task_at("fast", now, now))
        .collect();
    s.cli(&["CONFIG", "RESETSTAT"]);
    let mut call = vec![dup.clone(), moved.clone()];
    call.extend(fresh.iter().cloned());
    let got = e.broker.enqueue(call).await.unwrap();
    let mut want = vec![
        EnqueueResult::Duplicate {
            existing: holder.id,
        },
        EnqueueResult::IdExists,
    ];
    want.extend(std::iter::repeat_n(EnqueueResult::Enqueued, fresh_count));
    assert_eq!(got, want);
    let stats = s.cli(&["INFO", "commandstats"]);
    assert!(stats.contains("cmdstat_fcall:calls=1,"), "{stats}");
    if fresh_count + 2 > 8 {
        assert!(stats.contains("cmdstat_msetnx:calls=1,"), "{stats}");
    } else {
        for cmd in ["msetnx", "multi", "exec", "persist"] {
            assert!(
                !stats.contains(&format!("cmdstat_{cmd}:")),
                "a small call sent {cmd}: {stats}"
            );
        }
        assert!(
            stats.contains(&format!("cmdstat_set:calls={fresh_count},")),
            "one SET per accepted task, none for refused ones: {stats}"
        );
    }
    // Dropped with a 1 ms expiry: gone once it has passed.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let key = |q: &str, id: &TaskId| format!("{}:{{{q}}}:b:{}", e.redis.prefix(), id.0.simple());
    for (q, id) in [("fast", dup.id), ("fast", moved.id)] {
        assert_eq!(
            s.cli(&["EXISTS", &key(q, &id)]).trim(),
            "0",
            "refused task's bytes left behind"
        );
    }
    let stored = [("fast", holder.id), ("other", elsewhere.id)]
        .into_iter()
        .chain(fresh.iter().map(|t| ("fast", t.id)));
    for (q, id) in stored {
        assert_eq!(s.cli(&["EXISTS", &key(q, &id)]).trim(), "1", "{q} {id}");
        let rec = e.broker.get(id).await.unwrap().expect("stored");
        assert_eq!(rec.queue, q);
    }
    let markers = s.cli(&[
        "--scan",
        "--pattern",
        &format!("{}:*:m:*", e.redis.prefix()),
    ]);
    assert!(markers.trim().is_empty(), "markers left: {markers}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tasks_leave_no_bytes_behind() {
    refused_tasks_leave_no_bytes_behind_with(9).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tasks_of_a_small_call_leave_no_bytes_behind() {
    refused_tasks_leave_no_bytes_behind_with(1).await;
}

/// A token that no longer holds its task is refused, however its lease
/// ended: the same task acked twice in one call counts once, a deleted
/// task's ack is a lost lease, and after an expired lease is recovered and
/// the task leased again, the old token's ack and extension are refused
/// while the new token's go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_whose_lease_ended_is_refused() {
    use sealq::broker::{Ack, AckResult, DequeueRequest, Outcome};
    let s = support::RedisServer::start();
    s.load_library();
    let b = RedisBroker::connect_with(&s.url(), RedisOptions::default())
        .await
        .unwrap();
    let now = sealq::clock::system_clock().now_ms();
    let tasks: Vec<_> = (0..3)
        .map(|_| sealq::testkit::fixtures::task_at("leases", now, now))
        .collect();
    b.enqueue(tasks.clone()).await.unwrap();
    let take = |n: usize, lease: Duration| {
        let b = &b;
        async move {
            b.dequeue(&DequeueRequest {
                queues: vec!["leases".into()],
                max: n,
                lease,
                worker: "w".into(),
            })
            .await
            .unwrap()
        }
    };
    let complete = |l| Ack {
        lease: l,
        outcome: Outcome::Complete { result: None },
    };
    let mut long = take(2, Duration::from_secs(60)).await;
    assert_eq!(long.len(), 2);

    let first = long.remove(0);
    let res = b
        .ack(vec![complete(first.lease), complete(first.lease)])
        .await
        .unwrap();
    assert_eq!(res, vec![AckResult::Applied, AckResult::LeaseLost]);

    let second = long.remove(0);
    assert_eq!(b.delete(&[second.record.id]).await.unwrap(), 1);
    let res = b.ack(vec![complete(second.lease)]).await.unwrap();
    assert_eq!(res, vec![AckResult::LeaseLost]);

    let short = take(1, Duration::from_millis(1)).await.remove(0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(b.recover_expired().await.unwrap().retried, 1);
    assert_eq!(
        b.extend_leases(&[short.lease], Duration::from_secs(60))
            .await
            .unwrap(),
        vec![false]
    );
    let again = take(1, Duration::from_secs(60)).await.remove(0);
    assert_eq!(again.record.id, short.record.id);
    assert_ne!(again.lease.token, short.lease.token);
    let res = b.ack(vec![complete(short.lease)]).await.unwrap();
    assert_eq!(res, vec![AckResult::LeaseLost]);
    assert_eq!(
        b.extend_leases(&[again.lease], Duration::from_secs(60))
            .await
            .unwrap(),
        vec![true]
    );
    let res = b.ack(vec![complete(again.lease)]).await.unwrap();
    assert_eq!(res, vec![AckResult::Applied]);
    let rec = b.get(again.record.id).await.unwrap().unwrap();
    assert_eq!(rec.state, TaskState::Completed);
}
