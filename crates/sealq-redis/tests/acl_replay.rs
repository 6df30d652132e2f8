//! Finding 2 of the security review (replay) against the producer role of
//! docs/redis-acl.md, on a real redis-server: the producer's credentials
//! cannot wipe or edit a queue's replay memory (`Q seen` and `Q done`), neither with a
//! command of their own nor through a function, so a completed task the
//! producer flips back to `pending` (which its write rights on task
//! hashes still allow) is flagged replayed, never run.

mod support;

use std::time::Duration;

use sealq::broker::{Ack, AckResult, Broker, DequeueRequest, EnqueueResult, Outcome};
use sealq::clock::system_clock;
use sealq_redis::{RedisBroker, RedisOptions};
use support::{RedisServer, cli_as};

fn url(s: &RedisServer, user: &str, pw: &str) -> String {
    format!("redis://{user}:{pw}@127.0.0.1:{}", s.port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_2_producer_acl_cannot_wipe_the_replay_memory() {
    let s = RedisServer::start();
    for line in support::acl_lines() {
        let owned = support::acl_args(&line);
        let args: Vec<&str> = owned.iter().map(String::as_str).collect();
        let out = s.cli(&args);
        assert!(out.contains("OK"), "{line}: {out}");
    }
    RedisBroker::connect_unchecked(&url(&s, "sealq-admin", "apw"), RedisOptions::default())
        .await
        .expect("admin connects")
        .install()
        .await
        .expect("admin installs the library");
    let producer = RedisBroker::connect_with(
        &url(&s, "sealq-producer", "ppw"),
        RedisOptions::with_clock(system_clock()),
    )
    .await
    .expect("producer connects");
    let worker = RedisBroker::connect(&url(&s, "sealq-worker", "wpw"))
        .await
        .expect("worker connects");

    // A task runs and completes: its id is in the replay memory.
    let now = sealq::Clock::now_ms(&*system_clock());
    let t = sealq::testkit::fixtures::task_at("replay", now, now);
    let id = t.id.0.simple().to_string();
    assert_eq!(
        producer.enqueue(vec![t]).await.expect("producer enqueues"),
        vec![EnqueueResult::Enqueued]
    );
    let req = DequeueRequest {
        queues: vec!["replay".into()],
        max: 10,
        lease: Duration::from_secs(30),
        worker: "w".into(),
    };
    let leased = worker.dequeue(&req).await.expect("worker dequeues");
    assert_eq!(leased.len(), 1);
    assert!(!leased[0].replayed);
    let ack = Ack {
        lease: leased[0].lease,
        outcome: Outcome::Complete { result: None },
    };
    assert_eq!(
        worker.ack(vec![ack]).await.expect("worker acks"),
        vec![AckResult::Applied]
    );
    // (The memory is `Q seen` with `Q done`: while the completed task is
    // retained, its entry in `Q done` remembers it.)
    let seen = "sealq:{replay}:seen";
    let done = "sealq:{replay}:done";
    let score = s.cli(&["ZSCORE", done, &id]);
    assert!(!score.trim().is_empty(), "remembered at completion");

    // The producer cannot touch the memory: not with its own commands …
    let q = "sealq:{replay}:";
    let later = (now + 1).to_string();
    for cmd in [
        vec!["SET", seen, "x", "PX", "1"],
        vec!["SET", seen, "x"],
        vec!["ZADD", seen, "0", &id],
        vec!["ZADD", seen, "XX", "0", &id],
        vec!["HSET", seen, "a", "b"],
        vec!["LPUSH", seen, "a"],
        vec!["PERSIST", seen],
        vec!["MSETNX", seen, "x"],
        vec!["ZREM", seen, &id],
        vec!["DEL", seen],
        vec!["UNLINK", seen],
        vec!["EXPIRE", seen, "1"],
        vec!["RENAME", seen, "sealq:{replay}:t:x"],
        // … nor its other half, the purge schedule `Q done` …
        vec!["SET", done, "x", "PX", "1"],
        vec!["ZADD", done, "0", &id],
        vec!["ZREM", done, &id],
        vec!["DEL", done],
        vec!["UNLINK", done],
        vec!["RENAME", done, "sealq:{replay}:t:y"],
        // … nor its neighbours (the flags, the leases) …
        vec!["SET", "sealq:{replay}:flags", "x", "PX", "1"],
        vec!["ZADD", "sealq:{replay}:active", "0", &id],
        // … nor through a function other than the enqueue ones.
        vec!["FCALL", "sealq_purge", "1", q, "99999999999999", "100", "0"],
        vec!["FCALL", "sealq_delete", "1", q, &later, &id],
        vec!["FCALL", "sealq_erase", "1", q, &later, "00", "", "10"],
        vec!["FCALL", "sealq_ack", "1", q, &later, &id, "0", "c"],
        vec![
            "FCALL",
            "sealq_dequeue",
            "1",
            q,
            &later,
            "1",
            "1000",
            "w",
            "0",
        ],
        vec!["FCALL", "sealq_key_swap", "1", seen, "x", "y"],
        vec!["FCALL_RO", "sealq_get", "1", q, &id],
    ] {
        let out = cli_as(&s, "sealq-producer", "ppw", &cmd);
        assert!(out.contains("NOPERM"), "producer ran {cmd:?}: {out}");
    }
    assert_eq!(s.cli(&["TYPE", done]).trim(), "zset");
    assert_eq!(
        s.cli(&["ZSCORE", done, &id]),
        score,
        "the memory still holds the id"
    );

    // What the producer can still write (a task hash, the ready set) makes
    // the completed task due again: the worker gets it flagged replayed.
    let t_key = format!("sealq:{{replay}}:t:{id}");
    for cmd in [
        vec!["HSET", t_key.as_str(), "s", "pending"],
        vec!["ZADD", "sealq:{replay}:ready", "0", &id],
    ] {
        let out = cli_as(&s, "sealq-producer", "ppw", &cmd);
        assert!(!out.contains("NOPERM"), "{cmd:?}: {out}");
    }
    let again = worker.dequeue(&req).await.expect("worker dequeues");
    assert_eq!(again.len(), 1, "the flipped task is leased");
    assert!(again[0].replayed, "and flagged replayed, never run");
}
