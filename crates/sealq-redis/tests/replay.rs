//! Finding 2 of the security review (replay), what only Redis can show:
//! `sealq_ack` reports a second success of one id, and a replay memory
//! (`Q seen`) that is not a zset fails closed. The broker-independent cases
//! are in the conformance suite (`replay_tests!`, `finding_2_…`).

mod support;

use std::sync::Arc;
use std::time::Duration;

use sealq::broker::{Ack, AckResult, Broker, DequeueRequest, EnqueueResult, Outcome};
use sealq::clock::ManualClock;
use sealq::testkit::fixtures::task_at;
use sealq::{Clock, TaskId};
use sealq_redis::{RedisBroker, RedisOptions};

async fn broker() -> (RedisBroker, Arc<ManualClock>, String) {
    let clock = ManualClock::starting_now();
    let prefix = support::unique_prefix();
    let broker = RedisBroker::connect_with(
        &support::shared().url(),
        RedisOptions::with_clock(clock.clone()).prefix(&prefix),
    )
    .await
    .expect("connect");
    (broker, clock, prefix)
}

fn cli(args: &[&str]) -> String {
    support::shared().cli(args).trim().to_owned()
}

fn req(queue: &str) -> DequeueRequest {
    DequeueRequest {
        queues: vec![queue.to_owned()],
        max: 10,
        lease: Duration::from_secs(60),
        worker: "w".into(),
    }
}

/// A completion on an id the replay memory already holds is applied and
/// replied 2 (the broker counts it in `sealq_replayed_successes_total`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_2_sealq_ack_reports_a_second_success_of_one_id() {
    let (b, clock, prefix) = broker().await;
    let now = clock.now_ms();
    let t = task_at("twice", now, now);
    assert_eq!(
        b.enqueue(vec![t.clone()]).await.unwrap(),
        vec![EnqueueResult::Enqueued]
    );
    let l = b.dequeue(&req("twice")).await.unwrap().remove(0);
    let ack = Ack {
        lease: l.lease,
        outcome: Outcome::Complete { result: None },
    };
    assert_eq!(b.ack(vec![ack]).await.unwrap(), vec![AckResult::Applied]);
    let q = format!("{prefix}:{{twice}}:");
    let id = t.id.0.simple().to_string();
    // Remembered at completion, while the task is retained (behaviour: a
    // copy of the task flipped back to pending is flagged replayed).
    cli(&["HSET", &format!("{q}t:{id}"), "s", "pending"]);
    cli(&["ZADD", &format!("{q}ready"), "0", &id]);
    let back = b.dequeue(&req("twice")).await.unwrap();
    assert_eq!(back.len(), 1);
    assert!(back[0].replayed, "remembered at completion, while retained");

    // Someone makes the completed task active again and completes it.
    clock.advance_ms(5);
    cli(&["HSET", &format!("{q}t:{id}"), "s", "active", "tok", "7"]);
    let later = (clock.now_ms()).to_string();
    let reply = cli(&["FCALL", "sealq_ack", "1", &q, &later, &id, "7", "c"]);
    assert_eq!(reply, "2", "a second success is reported");
}

/// A `Q seen` that is not a zset (an edited key, or one a producer
/// overwrote with `SET`) fails closed: the tasks leased from that queue are
/// flagged replayed; completions still apply whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_2_a_replay_memory_that_is_not_a_zset_fails_closed() {
    let (b, clock, prefix) = broker().await;
    let now = clock.now_ms();
    let tasks = vec![task_at("closed", now, now), task_at("closed", now, now)];
    let ids: Vec<TaskId> = tasks.iter().map(|t| t.id).collect();
    b.enqueue(tasks).await.unwrap();
    cli(&["SET", &format!("{prefix}:{{closed}}:seen"), "x"]);
    let leased = b.dequeue(&req("closed")).await.expect("dequeue succeeds");
    assert_eq!(leased.len(), 2);
    assert!(leased.iter().all(|l| l.replayed), "flagged, never run");
    let acks = leased
        .into_iter()
        .map(|l| Ack {
            lease: l.lease,
            outcome: Outcome::Complete { result: None },
        })
        .collect();
    assert_eq!(
        b.ack(acks).await.expect("ack succeeds"),
        vec![AckResult::Applied; 2]
    );
    for &id in &ids {
        assert_eq!(
            b.get(id).await.unwrap().unwrap().state,
            sealq::TaskState::Completed
        );
    }
    // Deleting still applies whole (the id cannot be remembered: logged).
    assert_eq!(b.delete(&ids).await.expect("delete succeeds"), 2);
    for id in ids {
        assert!(b.get(id).await.unwrap().is_none());
    }
}

/// Complete one task of `queue` through the broker; returns its id (as
/// stored) and the queue's key base.
async fn complete_one(
    b: &RedisBroker,
    clock: &ManualClock,
    prefix: &str,
    queue: &str,
) -> (String, String) {
    let now = clock.now_ms();
    let t = task_at(queue, now, now);
    b.enqueue(vec![t.clone()]).await.unwrap();
    let l = b.dequeue(&req(queue)).await.unwrap().remove(0);
    let ack = Ack {
        lease: l.lease,
        outcome: Outcome::Complete { result: None },
    };
    assert_eq!(b.ack(vec![ack]).await.unwrap(), vec![AckResult::Applied]);
    (
        t.id.0.simple().to_string(),
        format!("{prefix}:{{{queue}}}:"),
    )
}

/// Run `sealq_purge` as if far past every retention (horizon one day).
fn purge_all(q: &str) {
    cli(&[
        "FCALL",
        "sealq_purge",
        "1",
        q,
        "99999999999999",
        "1000",
        "86400000",
    ]);
}

/// After the purge deleted a completed task, its id is still remembered: a
/// copy put back and completed again is reported as a second success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_2_a_second_success_after_the_purge_is_reported() {
    let (b, clock, prefix) = broker().await;
    let (id, q) = complete_one(&b, &clock, &prefix, "purged").await;
    purge_all(&q);
    assert!(
        b.get(TaskId(id.parse().unwrap())).await.unwrap().is_none(),
        "purged"
    );
    cli(&["HSET", &format!("{q}t:{id}"), "s", "active", "tok", "7"]);
    let reply = cli(&[
        "FCALL",
        "sealq_ack",
        "1",
        &q,
        "99999999999999",
        &id,
        "7",
        "c",
    ]);
    assert_eq!(reply, "2", "a second success is reported");
}

/// A completed task whose state was edited while it was retained does not
/// escape the replay memory when the purge lets its retention go: it is
/// still flagged replayed when made due again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_2_an_edited_state_does_not_escape_the_memory_at_purge() {
    let (b, clock, prefix) = broker().await;
    let (id, q) = complete_one(&b, &clock, &prefix, "edited").await;
    cli(&["HSET", &format!("{q}t:{id}"), "s", "scheduled"]);
    purge_all(&q);
    assert_eq!(
        cli(&["ZSCORE", &format!("{q}done"), &id]),
        "",
        "left the schedule"
    );
    cli(&["HSET", &format!("{q}t:{id}"), "s", "pending"]);
    cli(&["ZADD", &format!("{q}ready"), "0", &id]);
    let back = b.dequeue(&req("edited")).await.unwrap();
    assert_eq!(back.len(), 1, "the edited task is leased");
    assert!(back[0].replayed, "and flagged replayed, never run");
}

/// A `Q done` that is not a zset (the other half of the replay memory)
/// fails closed at dequeue like `Q seen`: the task is flagged replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_2_a_purge_schedule_that_is_not_a_zset_fails_closed() {
    let (b, clock, prefix) = broker().await;
    let now = clock.now_ms();
    b.enqueue(vec![task_at("closeddone", now, now)])
        .await
        .unwrap();
    cli(&["SET", &format!("{prefix}:{{closeddone}}:done"), "x"]);
    let leased = b
        .dequeue(&req("closeddone"))
        .await
        .expect("dequeue succeeds");
    assert_eq!(leased.len(), 1);
    assert!(leased[0].replayed, "flagged, never run");
}
