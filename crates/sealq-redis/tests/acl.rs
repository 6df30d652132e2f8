//! The ACL roles of docs/redis-acl.md, created on a real redis-server: each
//! role can do its job and nothing more.

mod support;

use std::time::Duration;

use sealq::BrokerErrorKind;
use sealq::broker::{Ack, Broker, DequeueRequest, ListQuery, Outcome};
use sealq::clock::system_clock;
use sealq_redis::{RedisBroker, RedisOptions};
use support::{RedisServer, cli_as};

fn url(s: &RedisServer, user: &str, pw: &str) -> String {
    format!("redis://{user}:{pw}@127.0.0.1:{}", s.port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_can_do_their_job_and_nothing_more() {
    let s = RedisServer::start();
    for line in support::acl_lines() {
        let owned = support::acl_args(&line);
        let args: Vec<&str> = owned.iter().map(String::as_str).collect();
        let out = s.cli(&args);
        assert!(out.contains("OK"), "{line}: {out}");
    }

    // Before install: producers and workers refuse to start, saying what to do.
    let e = RedisBroker::connect(&url(&s, "sealq-worker", "wpw"))
        .await
        .expect_err("no library yet");
    assert_eq!(e.kind, BrokerErrorKind::Config, "{e}");
    assert!(e.to_string().contains("sealq redis install"), "{e}");

    // Admin installs.
    RedisBroker::connect_unchecked(&url(&s, "sealq-admin", "apw"), RedisOptions::default())
        .await
        .expect("admin connects")
        .install()
        .await
        .expect("admin installs the library");

    // Wrong password: a clear start-up error.
    let e = RedisBroker::connect(&url(&s, "sealq-worker", "nope"))
        .await
        .expect_err("wrong password");
    assert_eq!(e.kind, BrokerErrorKind::PermissionDenied, "{e}");
    assert!(e.to_string().contains("credentials"), "{e}");
    assert!(!e.to_string().contains("nope"), "password in message: {e}");

    // Producer: enqueues.
    let producer = RedisBroker::connect_with(
        &url(&s, "sealq-producer", "ppw"),
        RedisOptions::with_clock(system_clock()),
    )
    .await
    .expect("producer connects");
    let now = sealq::Clock::now_ms(&*system_clock());
    let t = sealq::testkit::fixtures::task_at("acl", now, now);
    let (id, envelope) = (t.id, t.envelope.clone());
    let res = producer.enqueue(vec![t]).await.expect("producer enqueues");
    assert_eq!(res, vec![sealq::broker::EnqueueResult::Enqueued]);

    // A queue cap set by the admin holds for the producer, whose ACL reads
    // it with the counts.
    let admin =
        RedisBroker::connect_unchecked(&url(&s, "sealq-admin", "apw"), RedisOptions::default())
            .await
            .unwrap();
    admin
        .set_max_depth("acl", Some(1))
        .await
        .expect("admin caps the queue");
    let more = sealq::testkit::fixtures::task_at("acl", now, now);
    let res = producer
        .enqueue(vec![more])
        .await
        .expect("producer enqueues");
    assert_eq!(
        res,
        vec![sealq::broker::EnqueueResult::QueueFull { max_depth: 1 }]
    );
    admin.set_max_depth("acl", None).await.unwrap();

    // Producer: cannot dequeue, read or list through the functions …
    let req = DequeueRequest {
        queues: vec!["acl".into()],
        max: 10,
        lease: Duration::from_secs(30),
        worker: "p".into(),
    };
    let e = producer.dequeue(&req).await.expect_err("producer dequeues");
    assert_eq!(e.kind, BrokerErrorKind::PermissionDenied, "{e}");
    let e = producer.get(id).await.expect_err("producer reads");
    assert_eq!(e.kind, BrokerErrorKind::PermissionDenied, "{e}");
    let e = producer
        .list(&ListQuery::default())
        .await
        .expect_err("producer lists");
    assert_eq!(e.kind, BrokerErrorKind::PermissionDenied, "{e}");
    let e = producer.stats().await.expect_err("producer reads stats");
    assert_eq!(e.kind, BrokerErrorKind::PermissionDenied, "{e}");
    let e = producer.pause("acl").await.expect_err("producer pauses");
    assert_eq!(e.kind, BrokerErrorKind::PermissionDenied, "{e}");
    let swap = sealq::broker::SealedSwap {
        task_id: id,
        queue: "acl".into(),
        part: sealq::broker::SealedPart::Payload,
        expected: envelope.clone(),
        replacement: b"forged".to_vec(),
    };
    let e = producer
        .swap_sealed(std::slice::from_ref(&swap))
        .await
        .expect_err("producer re-seals");
    assert_eq!(e.kind, BrokerErrorKind::PermissionDenied, "{e}");
    // … nor with raw commands, nor with its own scripts.
    let key = format!("sealq:{{acl}}:t:{}", id.0.simple());
    let bytes_key = format!("sealq:{{acl}}:b:{}", id.0.simple());
    for cmd in [
        vec!["HGETALL", key.as_str()],
        vec!["GET", bytes_key.as_str()],
        vec!["MGET", bytes_key.as_str()],
        vec!["ZRANGE", "sealq:{acl}:ready", "0", "-1"],
        vec!["SCAN", "0"],
        vec!["KEYS", "*"],
        vec!["EVAL", "return 1", "0"],
        vec![
            "FUNCTION",
            "LOAD",
            "REPLACE",
            "#!lua name=x\nredis.register_function('x', function() return 1 end)",
        ],
    ] {
        let out = cli_as(&s, "sealq-producer", "ppw", &cmd);
        assert!(out.contains("NOPERM"), "producer ran {cmd:?}: {out}");
    }

    // Worker: dequeues, acks, waits for work.
    let worker = RedisBroker::connect(&url(&s, "sealq-worker", "wpw"))
        .await
        .expect("worker connects");
    let got = worker.dequeue(&req).await.expect("worker dequeues");
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].record.envelope, envelope,
        "the producer's swap changed nothing"
    );
    let res = worker
        .ack(vec![Ack {
            lease: got[0].lease,
            outcome: Outcome::Complete { result: None },
        }])
        .await
        .expect("worker acks");
    assert_eq!(res, vec![sealq::broker::AckResult::Applied]);
    worker
        .wait_for_work(&["acl".into()], Duration::from_millis(50))
        .await
        .expect("worker waits");
    worker.forward_due().await.expect("worker forwards");
    worker.recover_expired().await.expect("worker recovers");
    worker.purge_completed().await.expect("worker purges");
    // Worker: no function loading, no scripts, no other prefixes.
    for cmd in [
        vec![
            "FUNCTION",
            "LOAD",
            "REPLACE",
            "#!lua name=x\nredis.register_function('x', function() return 1 end)",
        ],
        vec!["FUNCTION", "DELETE", "sealq"],
        vec!["EVAL", "return 1", "0"],
        vec!["SCRIPT", "LOAD", "return 1"],
        vec!["GET", "other:key"],
        vec!["KEYS", "*"],
    ] {
        let out = cli_as(&s, "sealq-worker", "wpw", &cmd);
        assert!(out.contains("NOPERM"), "worker ran {cmd:?}: {out}");
    }
    // Admin: cannot reach keys outside the prefix nor dangerous commands.
    for cmd in [
        vec!["GET", "other:key"],
        vec!["FLUSHALL"],
        vec!["EVAL", "return 1", "0"],
    ] {
        let out = cli_as(&s, "sealq-admin", "apw", &cmd);
        assert!(out.contains("NOPERM"), "admin ran {cmd:?}: {out}");
    }
}

/// Finding 7: the keyring's check values (`sealq:keychecks`) are recorded
/// and read by producers and workers with the documented ACL lines, and
/// the producer's selector for them opens nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_7_key_check_values_stay_within_each_roles_permissions() {
    let s = RedisServer::start();
    for line in support::acl_lines() {
        let owned = support::acl_args(&line);
        let args: Vec<&str> = owned.iter().map(String::as_str).collect();
        assert!(s.cli(&args).contains("OK"), "{line}");
    }
    RedisBroker::connect_unchecked(&url(&s, "sealq-admin", "apw"), RedisOptions::default())
        .await
        .unwrap()
        .install()
        .await
        .unwrap();
    let check = |id: &str, b: u8| sealq::model::key_check::KeyCheck {
        key_id: id.into(),
        value: [b; 16],
    };
    let producer = RedisBroker::connect(&url(&s, "sealq-producer", "ppw"))
        .await
        .unwrap();
    assert!(
        producer
            .record_key_checks(&[check("k-p", 1)])
            .await
            .expect("the producer records")
    );
    let worker = RedisBroker::connect(&url(&s, "sealq-worker", "wpw"))
        .await
        .unwrap();
    assert!(
        worker
            .record_key_checks(&[check("k-p", 2), check("k-w", 3)])
            .await
            .expect("the worker records")
    );
    let want = Some(vec![check("k-p", 1), check("k-w", 3)]);
    assert_eq!(
        producer.key_checks().await.expect("the producer reads"),
        want
    );
    assert_eq!(worker.key_checks().await.expect("the worker reads"), want);
    // The producer's selector reaches that one key only.
    for cmd in [
        vec!["HSETNX", "sealq:{acl}:flags", "paused", "1"],
        vec!["HGETALL", "sealq:{~}:g:ids"],
        vec!["HGETALL", "sealq:{acl}:n"],
        vec!["DEL", "sealq:keychecks"],
        vec!["HSET", "sealq-keys:x", "a", "b"],
    ] {
        let out = cli_as(&s, "sealq-producer", "ppw", &cmd);
        assert!(out.contains("NOPERM"), "producer ran {cmd:?}: {out}");
    }
}

/// A producer set up with the line from before the key check selector
/// still enqueues through a `Client` (it logs that it cannot read the check
/// values and skips the comparison); with the documented line a client
/// with another keyring is refused before anything is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_7_a_producer_with_an_older_acl_line_still_enqueues() {
    use sealq::{Client, EnqueueOptions, Keyring, RawTask};
    let s = RedisServer::start();
    for line in support::acl_lines() {
        let owned = support::acl_args(&line);
        let args: Vec<&str> = owned.iter().map(String::as_str).collect();
        assert!(s.cli(&args).contains("OK"), "{line}");
    }
    let producer_line = support::acl_lines()
        .into_iter()
        .find(|l| l.contains("sealq-producer"))
        .unwrap();
    let old_line = producer_line
        .replace(" (~sealq:keychecks +hgetall +hsetnx)", "")
        .replace("sealq-producer", "sealq-old-producer");
    assert_ne!(
        old_line,
        producer_line.replace("sealq-producer", "sealq-old-producer")
    );
    let owned = support::acl_args(&old_line);
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    assert!(s.cli(&args).contains("OK"), "{old_line}");
    RedisBroker::connect_unchecked(&url(&s, "sealq-admin", "apw"), RedisOptions::default())
        .await
        .unwrap()
        .install()
        .await
        .unwrap();
    let task =
        || RawTask::from_json("t", &serde_json::json!({"n": 1}), EnqueueOptions::new()).unwrap();
    let keyring = std::sync::Arc::new(Keyring::generate());
    let new_line = RedisBroker::connect(&url(&s, "sealq-producer", "ppw"))
        .await
        .unwrap();
    Client::builder(std::sync::Arc::new(new_line.clone()), keyring.clone())
        .build()
        .enqueue_raw(task())
        .await
        .expect("the documented producer enqueues");
    assert_eq!(
        new_line.key_checks().await.unwrap(),
        Some(keyring.key_checks()),
        "and records the keyring's check values"
    );
    let old = RedisBroker::connect(&url(&s, "sealq-old-producer", "ppw"))
        .await
        .unwrap();
    Client::builder(std::sync::Arc::new(old), keyring.clone())
        .build()
        .enqueue_raw(task())
        .await
        .expect("a producer with the older line enqueues");
    let e = Client::builder(std::sync::Arc::new(new_line), Keyring::generate())
        .build()
        .enqueue_raw(task())
        .await
        .expect_err("another keyring is refused");
    assert!(e.to_string().contains("holds none of the keys"), "{e}");
}
