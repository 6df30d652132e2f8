//! Finding 4 of the security review: one bad task or key must not stop a
//! worker, nor leave a call half applied.
//!
//! A function's writes are not rolled back by an error, so a function that
//! failed on a damaged value after its first write left the call half done:
//! a count in `Q n` that is not a whole number made `sealq_dequeue` fail
//! after leasing (tasks active with no holder, and recovery failing on the
//! same count for good); a wake key that is not a list made an enqueue
//! report failure after the task was stored. Each test damages the keys
//! with `redis-cli`, as an attacker with a producer's password or a bad
//! restore would, then checks that the call succeeds, applies whole, and
//! repairs or sets aside what it met.

mod support;

use std::sync::Arc;
use std::time::Duration;

use sealq::broker::{
    Ack, AckResult, Broker, DequeueRequest, EnqueueResult, ListQuery, NewTask, Outcome,
};
use sealq::clock::ManualClock;
use sealq::testkit::fixtures::{subject, task_at};
use sealq::{ArchiveReason, BrokerErrorKind, Clock, TaskId, TaskState};
use sealq_redis::{RedisBroker, RedisOptions};
use support::{RedisServer, cli_as};

struct Fixture {
    broker: RedisBroker,
    clock: Arc<ManualClock>,
    prefix: String,
}

impl Fixture {
    async fn new() -> Self {
        let clock = ManualClock::starting_now();
        let prefix = support::unique_prefix();
        let broker = RedisBroker::connect_with(
            &support::shared().url(),
            RedisOptions::with_clock(clock.clone()).prefix(&prefix),
        )
        .await
        .expect("connect");
        Self {
            broker,
            clock,
            prefix,
        }
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    fn task(&self, queue: &str) -> NewTask {
        task_at(queue, self.now(), self.now())
    }

    async fn enqueue(&self, tasks: Vec<NewTask>) -> Vec<TaskId> {
        let ids = tasks.iter().map(|t| t.id).collect();
        let res = self.broker.enqueue(tasks).await.expect("enqueue");
        assert!(res.iter().all(|r| *r == EnqueueResult::Enqueued), "{res:?}");
        ids
    }

    /// A key of `queue`: `PREFIX:{queue}:suffix`.
    fn key(&self, queue: &str, suffix: &str) -> String {
        format!("{}:{{{queue}}}:{suffix}", self.prefix)
    }

    fn task_key(&self, queue: &str, id: TaskId) -> String {
        self.key(queue, &format!("t:{}", id.0.simple()))
    }

    fn cli(&self, args: &[&str]) -> String {
        support::shared().cli(args).trim().to_owned()
    }

    fn req(&self, queues: &[&str], max: usize) -> DequeueRequest {
        DequeueRequest {
            queues: queues.iter().map(|q| q.to_string()).collect(),
            max,
            lease: Duration::from_secs(60),
            worker: "w".into(),
        }
    }

    async fn complete_all(&self, leased: Vec<sealq::broker::LeasedTask>) {
        let acks = leased
            .into_iter()
            .map(|t| Ack {
                lease: t.lease,
                outcome: Outcome::Complete { result: None },
            })
            .collect();
        let res = self.broker.ack(acks).await.expect("ack");
        assert!(res.iter().all(|r| *r == AckResult::Applied), "{res:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_4_a_count_that_is_not_a_number_does_not_half_apply_dequeue() {
    let f = Fixture::new().await;
    f.enqueue(vec![f.task("a"), f.task("a"), f.task("a")]).await;
    f.enqueue(vec![f.task("b")]).await;
    let n = f.key("a", "n");
    f.cli(&["HSET", &n, "pending", "x", "active", "1.5"]);

    let got = f
        .broker
        .dequeue(&f.req(&["a", "b"], 10))
        .await
        .expect("dequeue succeeds");
    assert_eq!(got.len(), 4, "every ready task of both queues is leased");
    // The counts were recounted from the sets.
    assert_eq!(f.cli(&["HGET", &n, "pending"]), "0");
    assert_eq!(f.cli(&["HGET", &n, "active"]), "3");
    let st = f.broker.stats().await.expect("stats");
    let a = st.iter().find(|s| s.queue == "a").unwrap();
    assert_eq!((a.pending, a.active), (0, 3));
    // Each leased task has its holder: acks apply.
    f.complete_all(got).await;
    assert_eq!(f.cli(&["HGET", &n, "completed"]), "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_4_recovery_survives_damaged_counts_and_tasks() {
    let f = Fixture::new().await;
    let ids = f.enqueue(vec![f.task("a"), f.task("a"), f.task("a")]).await;
    let leased = f.broker.dequeue(&f.req(&["a"], 3)).await.unwrap();
    assert_eq!(leased.len(), 3);
    let n = f.key("a", "n");
    // Damaged counts of every state recovery touches, and one task whose
    // attempts are not a number.
    f.cli(&[
        "HSET", &n, "active", "many", "retry", "?", "archived", "1e3",
    ]);
    f.cli(&["HSET", &f.task_key("a", ids[0]), "a", "lots"]);
    f.clock.advance_ms(61_000);

    let rec = f.broker.recover_expired().await.expect("recovery succeeds");
    assert_eq!((rec.retried, rec.archived), (2, 0));
    assert_eq!(f.cli(&["HGET", &n, "active"]), "0");
    assert_eq!(f.cli(&["HGET", &n, "retry"]), "2");
    assert_eq!(f.cli(&["HGET", &n, "archived"]), "1");
    let bad = f.broker.get(ids[0]).await.unwrap().expect("kept");
    assert_eq!(bad.state, TaskState::Archived);
    assert_eq!(bad.archive_reason, Some(ArchiveReason::Integrity));
    // A second pass finds nothing left to do, and does not fail.
    assert_eq!(
        f.broker.recover_expired().await.unwrap(),
        Default::default()
    );
    // The retried ones run again.
    let again = f.broker.dequeue(&f.req(&["a"], 10)).await.unwrap();
    assert_eq!(again.len(), 2);
    f.complete_all(again).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_4_a_wake_key_of_the_wrong_type_does_not_fail_enqueue() {
    let f = Fixture::new().await;
    let wake = f.key("a", "wake");
    // A call of one task (bytes inline) and one of many (MSETNX).
    for batch in [1usize, 20] {
        f.cli(&["DEL", &wake]);
        f.cli(&["HSET", &wake, "not", "a list"]);
        let tasks: Vec<NewTask> = (0..batch).map(|_| f.task("a")).collect();
        let ids = f.enqueue(tasks).await;
        assert_eq!(f.cli(&["TYPE", &wake]), "list", "the hint is a list again");
        let r = f.broker.get(ids[0]).await.unwrap().expect("stored");
        assert_eq!(r.state, TaskState::Pending);
        let got = f.broker.dequeue(&f.req(&["a"], 100)).await.unwrap();
        assert_eq!(got.len(), batch);
        f.complete_all(got).await;
    }
    // Other calls that push a wake-up replace it too (a due retry here).
    let id = f.enqueue(vec![f.task("a")]).await[0];
    let l = f.broker.dequeue(&f.req(&["a"], 1)).await.unwrap().remove(0);
    f.cli(&["DEL", &wake]);
    f.cli(&["SET", &wake, "string"]);
    let res = f
        .broker
        .ack(vec![Ack {
            lease: l.lease,
            outcome: Outcome::Retry {
                at_ms: f.now(),
                error: None,
            },
        }])
        .await
        .expect("ack succeeds");
    assert_eq!(res, vec![AckResult::Applied]);
    assert_eq!(f.cli(&["TYPE", &wake]), "list");
    assert_eq!(
        f.broker.get(id).await.unwrap().unwrap().state,
        TaskState::Retry
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_4_one_bad_task_does_not_stop_dequeue_list_get_stats_or_erasure() {
    let f = Fixture::new().await;
    let tag = subject(4);
    let mut tasks: Vec<NewTask> = (0..5).map(|_| f.task("a")).collect();
    for t in &mut tasks {
        t.meta.subject_tag = Some(tag);
    }
    let ids = f.enqueue(tasks).await;
    // A state that is not one; stored bytes that do not decode; a task key
    // that is not a hash.
    f.cli(&["HSET", &f.task_key("a", ids[0]), "s", "bogus"]);
    let bytes = f.key("a", &format!("b:{}", ids[1].0.simple()));
    f.cli(&["SET", &bytes, "\x07junk"]);
    let wrong = f.task_key("a", ids[2]);
    f.cli(&["DEL", &wrong]);
    f.cli(&["SET", &wrong, "not a hash"]);
    let good = [ids[3], ids[4]];

    // list: the good tasks, in pages of one as well.
    let all = f.broker.list(&ListQuery::default()).await.expect("list");
    assert_eq!(all.iter().map(|r| r.id).collect::<Vec<_>>(), good);
    let mut after = None;
    let mut paged = Vec::new();
    loop {
        let page = f
            .broker
            .list(&ListQuery {
                after,
                limit: 1,
                ..ListQuery::default()
            })
            .await
            .expect("list a page");
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        paged.push(last.id);
    }
    assert_eq!(paged, good, "pagination walks past the bad tasks");
    // get: the bad ones are named, the good ones read.
    for bad in &ids[..3] {
        let e = f.broker.get(*bad).await.expect_err("does not decode");
        assert_eq!(e.kind, BrokerErrorKind::Corrupt);
        assert!(e.to_string().contains(&bad.to_string()), "{e}");
    }
    assert!(f.broker.get(good[0]).await.unwrap().is_some());
    f.broker.stats().await.expect("stats");

    // dequeue: the good ones, the undecodable bytes archived `integrity`.
    let got = f.broker.dequeue(&f.req(&["a"], 10)).await.expect("dequeue");
    let mut leased: Vec<TaskId> = got.iter().map(|t| t.record.id).collect();
    leased.sort();
    assert_eq!(leased, good);
    assert_eq!(
        f.cli(&["HGET", &f.task_key("a", ids[1]), "ar"]),
        "integrity"
    );
    f.broker.recover_expired().await.expect("recovery");
    f.broker.purge_completed().await.expect("purge");

    // erasure reaches every task of the subject it can read: the bogus
    // and the quarantined ones deleted, the leased ones archived `erased`.
    let counts = f.broker.erase_subject(&tag).await.expect("erasure");
    assert_eq!((counts.total(), counts.active), (4, 2), "{counts:?}");
    let left = f.broker.list(&ListQuery::default()).await.unwrap();
    assert_eq!(left.len(), 2);
    assert!(
        left.iter()
            .all(|r| r.archive_reason == Some(ArchiveReason::Erased) && r.envelope.is_empty())
    );
    for gone in &ids[..2] {
        assert!(f.broker.get(*gone).await.unwrap().is_none());
    }
}

/// The repair paths use only the commands each role holds
/// (docs/redis-acl.md): a producer's enqueue leaves a damaged count for the
/// next worker call and replaces a damaged wake key with `SET`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_4_repairs_stay_within_the_roles_permissions() {
    let s = RedisServer::start();
    for line in support::acl_lines() {
        let owned = support::acl_args(&line);
        let args: Vec<&str> = owned.iter().map(String::as_str).collect();
        assert!(s.cli(&args).contains("OK"), "{line}");
    }
    s.load_library();
    let url = |user: &str, pw: &str| format!("redis://{user}:{pw}@127.0.0.1:{}", s.port);
    let clock = ManualClock::starting_now();
    let producer = RedisBroker::connect_with(
        &url("sealq-producer", "ppw"),
        RedisOptions::with_clock(clock.clone()),
    )
    .await
    .expect("producer");
    let worker = RedisBroker::connect_with(
        &url("sealq-worker", "wpw"),
        RedisOptions::with_clock(clock.clone()),
    )
    .await
    .expect("worker");
    let now = clock.now_ms();
    producer
        .enqueue(vec![task_at("a", now, now)])
        .await
        .expect("first enqueue");
    let admin = |args: &[&str]| cli_as(&s, "sealq-admin", "apw", args);
    admin(&["HSET", "sealq:{a}:n", "pending", "x", "maxdepth", "lots"]);
    admin(&["DEL", "sealq:{a}:wake"]);
    admin(&["HSET", "sealq:{a}:wake", "x", "1"]);
    for batch in [1usize, 20] {
        let tasks = (0..batch).map(|_| task_at("a", now, now)).collect();
        let res = producer.enqueue(tasks).await.expect("producer enqueues");
        assert!(res.iter().all(|r| *r == EnqueueResult::Enqueued), "{res:?}");
    }
    assert!(admin(&["TYPE", "sealq:{a}:wake"]).contains("list"));
    let got = worker
        .dequeue(&DequeueRequest {
            queues: vec!["a".into()],
            max: 100,
            lease: Duration::from_secs(60),
            worker: "w".into(),
        })
        .await
        .expect("worker dequeues");
    assert_eq!(got.len(), 22);
    assert!(admin(&["HGET", "sealq:{a}:n", "pending"]).contains('0'));
    assert!(admin(&["HGET", "sealq:{a}:n", "active"]).contains("22"));
}
