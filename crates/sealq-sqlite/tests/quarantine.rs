//! Finding 4 of the security review: one bad row must not stop a worker.
//!
//! A task row edited or damaged so that a column holds the wrong type (a
//! REAL where an integer belongs, TEXT where a BLOB belongs), metadata that
//! does not decode, or an id that is not an id, used to make every dequeue
//! of every queue in the call fail, for good, and `list` / `stats` with it.
//! Now the writer quarantines such a task (archived, reason `integrity`)
//! and goes on; readers skip it and log it. Each test damages the file
//! through a second connection, as an attacker or a broken disk would.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use sealq::broker::{Broker, DequeueRequest, ListQuery, NewTask, Outcome, SealedPart, SealedSwap};
use sealq::clock::ManualClock;
use sealq::testkit::fixtures::{subject, task_at};
use sealq::{ArchiveReason, BrokerErrorKind, Clock, TaskId, TaskState};
use sealq_sqlite::{SqliteBroker, SqliteOptions};

/// The ways a row can be damaged: SQL run on the row of the task (`?1` is
/// its id), and a name for failure messages.
const DAMAGE: &[(&str, &str)] = &[
    (
        "a REAL where an integer belongs",
        "UPDATE tasks SET attempts = 1.5 WHERE id = ?1",
    ),
    (
        "TEXT where a blob belongs",
        "UPDATE task_bodies SET envelope = 'not a blob' \
         WHERE seq = (SELECT seq FROM tasks WHERE id = ?1)",
    ),
    (
        "metadata that does not decode",
        "UPDATE task_bodies SET meta = X'c1c1' WHERE seq = (SELECT seq FROM tasks WHERE id = ?1)",
    ),
    (
        "an id that is not a 16-byte blob",
        "UPDATE tasks SET id = 'sixteen-chars!!!' WHERE id = ?1",
    ),
    (
        "a result that is text",
        "UPDATE tasks SET result = 'plain' WHERE id = ?1",
    ),
];

struct Fixture {
    broker: SqliteBroker,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = ManualClock::starting_now();
        let broker = SqliteBroker::open_with(
            dir.path().join("q.db"),
            SqliteOptions::with_clock(clock.clone()),
        )
        .expect("open");
        Self {
            broker,
            clock,
            _dir: dir,
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
        self.broker.enqueue(tasks).await.expect("enqueue");
        ids
    }

    /// Run `sql` (`?1`: the task's id) on the file, as another process would.
    fn damage(&self, id: TaskId, sql: &str) {
        let conn = Connection::open(self.broker.path()).expect("second connection");
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        let n = conn.execute(sql, [id.as_bytes()]).expect(sql);
        assert!(n >= 1, "{sql} changed nothing");
    }

    fn sql(&self, sql: &str) -> i64 {
        let conn = Connection::open(self.broker.path()).expect("second connection");
        conn.query_row(sql, [], |r| r.get(0)).expect(sql)
    }

    fn req(&self, queues: &[&str], max: usize) -> DequeueRequest {
        DequeueRequest {
            queues: queues.iter().map(|q| q.to_string()).collect(),
            max,
            lease: Duration::from_secs(60),
            worker: "w".into(),
        }
    }

    /// How many tasks are archived `integrity`, read past the decoder.
    fn quarantined(&self) -> i64 {
        self.sql(
            "SELECT count(*) FROM tasks WHERE state = 'archived' AND archive_reason = 'integrity'",
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_4_one_bad_row_does_not_stop_dequeue() {
    for (what, sql) in DAMAGE {
        let f = Fixture::new();
        let good = f.enqueue(vec![f.task("a"), f.task("a")]).await;
        let bad = f.enqueue(vec![f.task("a")]).await[0];
        let other = f.enqueue(vec![f.task("b")]).await[0];
        f.damage(bad, sql);

        let got = f
            .broker
            .dequeue(&f.req(&["a", "b"], 10))
            .await
            .unwrap_or_else(|e| panic!("{what}: dequeue failed: {e}"));
        let mut ids: Vec<TaskId> = got.iter().map(|t| t.record.id).collect();
        ids.sort();
        let mut want = vec![good[0], good[1], other];
        want.sort();
        assert_eq!(
            ids, want,
            "{what}: the good tasks of every queue are leased"
        );
        assert_eq!(
            f.quarantined(),
            1,
            "{what}: the bad one is archived `integrity`"
        );
        assert_eq!(
            f.sql("SELECT count(*) FROM tasks WHERE state = 'active'"),
            3,
            "{what}: no task is left active without a holder"
        );
        // And the next call finds nothing more, without failing.
        assert!(
            f.broker
                .dequeue(&f.req(&["a", "b"], 10))
                .await
                .unwrap()
                .is_empty()
        );
        // Acks of the good ones work as ever.
        for t in got {
            let r = f
                .broker
                .ack(vec![sealq::broker::Ack {
                    lease: t.lease,
                    outcome: Outcome::Complete { result: None },
                }])
                .await
                .unwrap();
            assert_eq!(r, vec![sealq::broker::AckResult::Applied]);
        }
        // Where the damage left the rest of the row readable, the
        // quarantined task reads back archived.
        if *what == "a REAL where an integer belongs" || *what == "a result that is text" {
            let r = f.broker.get(bad).await.unwrap().expect("still stored");
            assert_eq!(r.state, TaskState::Archived);
            assert_eq!(r.archive_reason, Some(ArchiveReason::Integrity));
            if *what == "a REAL where an integer belongs" {
                assert_eq!(r.attempts, 0, "the damaged count is reset");
            } else {
                assert_eq!(r.result, None, "the damaged result is dropped");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_4_a_bad_row_does_not_leave_the_worker_idle() {
    // The bad task is first in line and the worker asks for one task: it
    // gets the next good one, not an empty batch.
    let f = Fixture::new();
    let mut bad = f.task("a");
    bad.run_at_ms -= 10;
    let bad_id = bad.id;
    let good = f.enqueue(vec![bad, f.task("a")]).await[1];
    f.damage(bad_id, DAMAGE[0].1);
    let got = f.broker.dequeue(&f.req(&["a"], 1)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].record.id, good);
    assert_eq!(f.quarantined(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_4_one_bad_row_does_not_stop_list_or_get() {
    for (what, sql) in DAMAGE {
        let f = Fixture::new();
        let ids = f
            .enqueue(vec![f.task("a"), f.task("a"), f.task("a"), f.task("a")])
            .await;
        // The second in id order, so that pages of one cross it.
        let bad = ids[1];
        f.damage(bad, sql);
        let good: Vec<TaskId> = ids.iter().copied().filter(|&i| i != bad).collect();

        let all = f
            .broker
            .list(&ListQuery::default())
            .await
            .unwrap_or_else(|e| panic!("{what}: list failed: {e}"));
        let listed: Vec<TaskId> = all.iter().map(|r| r.id).collect();
        assert_eq!(listed, good, "{what}: list gives the good tasks");

        // Pages of one walk past the bad row.
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
                .unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            paged.extend(page.iter().map(|r| r.id));
        }
        assert_eq!(paged, good, "{what}: pagination is not cut short");

        // Filters too.
        let pending = f
            .broker
            .list(&ListQuery {
                queue: Some("a".into()),
                state: Some(TaskState::Pending),
                ..ListQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(pending.len(), 3, "{what}");

        // Asking for that very task names it (when its id is still an id).
        if *what != "an id that is not a 16-byte blob" {
            let e = f.broker.get(bad).await.unwrap_err();
            assert_eq!(e.kind, BrokerErrorKind::Corrupt, "{what}");
            assert!(e.to_string().contains(&bad.to_string()), "{what}: {e}");
        }
        assert_eq!(f.broker.get(good[0]).await.unwrap().unwrap().id, good[0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_4_one_bad_row_does_not_stop_stats() {
    let f = Fixture::new();
    let ids = f
        .enqueue(vec![f.task("a"), f.task("a"), f.task("a"), f.task("b")])
        .await;
    f.damage(ids[0], "UPDATE tasks SET state = 'bogus' WHERE id = ?1");
    f.damage(ids[1], "UPDATE tasks SET queue = X'ff00' WHERE id = ?1");
    f.damage(ids[2], DAMAGE[0].1);
    let stats = f.broker.stats().await.expect("stats");
    let a = stats.iter().find(|s| s.queue == "a").expect("queue a");
    assert_eq!(
        a.pending, 1,
        "the task with a bad attempts count is still pending"
    );
    let b = stats.iter().find(|s| s.queue == "b").expect("queue b");
    assert_eq!(b.pending, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_4_forward_due_quarantines_a_run_at_that_is_not_an_integer() {
    let f = Fixture::new();
    let later = task_at("a", f.now() + 5_000, f.now());
    let bad = task_at("a", f.now() + 9_000, f.now());
    let (later_id, bad_id) = (later.id, bad.id);
    f.enqueue(vec![later, bad]).await;
    f.damage(
        bad_id,
        "UPDATE tasks SET run_at = run_at - 8000 + 0.5 WHERE id = ?1",
    );
    let fw = f.broker.forward_due().await.expect("forward_due");
    assert_eq!(fw.next_due_ms, Some(f.now() + 5_000));
    assert_eq!(f.quarantined(), 1);
    f.clock.advance_ms(5_000);
    assert_eq!(f.broker.forward_due().await.unwrap().moved, 1);
    assert_eq!(
        f.broker.get(later_id).await.unwrap().unwrap().state,
        TaskState::Pending
    );
    let r = f.broker.get(bad_id).await.unwrap().unwrap();
    assert_eq!(r.archive_reason, Some(ArchiveReason::Integrity));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_4_recovery_survives_a_bad_lease() {
    let f = Fixture::new();
    let ids = f.enqueue(vec![f.task("a"), f.task("a")]).await;
    assert_eq!(f.broker.dequeue(&f.req(&["a"], 2)).await.unwrap().len(), 2);
    f.damage(
        ids[0],
        "UPDATE tasks SET lease_expires_at = 'soon' WHERE id = ?1",
    );
    f.clock.advance_ms(61_000);
    let rec = f.broker.recover_expired().await.expect("recover_expired");
    assert_eq!(rec.retried, 1, "the good lease is recovered");
    assert_eq!(f.quarantined(), 1, "the bad one is quarantined");
    let r = f.broker.get(ids[0]).await.unwrap().unwrap();
    assert_eq!(r.state, TaskState::Archived);
    assert_eq!(r.lease_expires_at_ms, None);
    // A REAL attempts count in a leased task does not stop recovery either.
    let l = f.broker.dequeue(&f.req(&["a"], 1)).await.unwrap();
    assert_eq!(l.len(), 1);
    f.damage(ids[1], DAMAGE[0].1);
    f.clock.advance_ms(61_000);
    f.broker.recover_expired().await.expect("recover_expired");
    assert!(
        f.broker
            .dequeue(&f.req(&["a"], 1))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(f.quarantined(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_4_purge_erase_and_reseal_survive_a_bad_row() {
    let f = Fixture::new();
    let tag = subject(7);
    let mut mine = vec![f.task("a"), f.task("a"), f.task("a")];
    for t in &mut mine {
        t.meta.subject_tag = Some(tag);
    }
    let envelope = mine[2].envelope.clone();
    let ids = f.enqueue(mine).await;
    f.damage(ids[0], "UPDATE tasks SET state = X'00' WHERE id = ?1");
    f.damage(ids[1], DAMAGE[2].1);

    assert_eq!(f.broker.purge_completed().await.expect("purge"), 0);
    let swapped = f
        .broker
        .swap_sealed(&[
            SealedSwap {
                task_id: ids[1],
                queue: "a".into(),
                part: SealedPart::Payload,
                expected: b"whatever".to_vec(),
                replacement: b"new".to_vec(),
            },
            SealedSwap {
                task_id: ids[2],
                queue: "a".into(),
                part: SealedPart::Payload,
                expected: envelope,
                replacement: b"new".to_vec(),
            },
        ])
        .await
        .expect("swap_sealed");
    assert_eq!(swapped, vec![false, true]);

    let counts = f.broker.erase_subject(&tag).await.expect("erase_subject");
    assert_eq!(counts.total(), 3);
    assert_eq!(
        f.sql("SELECT count(*) FROM tasks"),
        0,
        "every task of the subject is gone"
    );
}
