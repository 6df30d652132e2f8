//! Issue 21, "Live workers", under the ACL roles of docs/redis-acl.md on a
//! real redis-server: a worker registers, refreshes and deregisters itself
//! with the worker line as written; the worker and the admin can list the
//! live workers (deleting the dead); a producer can neither register nor
//! list.

mod support;

use std::time::Duration;

use sealq::LiveWorker;
use sealq::broker::Broker;
use sealq::testkit::ManualClock;
use sealq_redis::{RedisBroker, RedisOptions};
use support::RedisServer;

fn url(s: &RedisServer, user: &str, pw: &str) -> String {
    format!("redis://{user}:{pw}@127.0.0.1:{}", s.port)
}

fn me(run: &str) -> LiveWorker {
    LiveWorker {
        run_id: run.to_owned(),
        id: "h:7".to_owned(),
        host: "h".to_owned(),
        pid: 7,
        queues: vec!["q".to_owned()],
        concurrency: 2,
        started_at_ms: 0,
        last_heartbeat_ms: 0,
        in_flight: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_workers_under_the_documented_acl_roles() {
    let s = RedisServer::start();
    for line in support::acl_lines() {
        let owned = support::acl_args(&line);
        let args: Vec<&str> = owned.iter().map(String::as_str).collect();
        let out = s.cli(&args);
        assert!(out.contains("OK"), "{line}: {out}");
    }
    RedisBroker::connect_unchecked(&url(&s, "sealq-admin", "apw"), RedisOptions::default())
        .await
        .unwrap()
        .install()
        .await
        .unwrap();
    let clock = ManualClock::starting_now();
    let as_user = |user: &str, pw: &str| {
        let (u, clock) = (url(&s, user, pw), clock.clone());
        async move {
            RedisBroker::connect_with(&u, RedisOptions::with_clock(clock))
                .await
                .expect("connects")
        }
    };
    let worker = as_user("sealq-worker", "wpw").await;
    let admin = as_user("sealq-admin", "apw").await;
    let producer = as_user("sealq-producer", "ppw").await;
    let ttl = Duration::from_secs(30);

    worker
        .register_worker(&me("a"), ttl)
        .await
        .expect("worker registers");
    worker
        .register_worker(&me("b"), ttl)
        .await
        .expect("worker registers");
    worker
        .register_worker(&me("a"), ttl)
        .await
        .expect("worker refreshes");
    assert_eq!(worker.list_workers().await.expect("worker lists").len(), 2);
    worker
        .deregister_worker("b")
        .await
        .expect("worker deregisters");
    let listed = admin.list_workers().await.expect("admin lists");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].in_flight, 1);

    // A dead worker is deleted by a listing as the worker user too.
    clock.advance_ms(30_000);
    assert!(worker.list_workers().await.unwrap().is_empty());
    let left = s.cli(&["HLEN", "sealq:{~}:g:workers"]);
    assert_eq!(left.trim(), "0", "the dead entry was deleted");
    let left = s.cli(&["ZCARD", "sealq:{~}:g:workers:expiry"]);
    assert_eq!(left.trim(), "0", "and its expiry");

    let e = producer
        .register_worker(&me("p"), ttl)
        .await
        .expect_err("a producer cannot register");
    assert!(
        e.to_string().contains("NOPERM") || e.to_string().contains("permission"),
        "{e}"
    );
    producer
        .list_workers()
        .await
        .expect_err("a producer cannot list");
}
