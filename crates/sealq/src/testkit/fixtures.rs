//! Fixtures the conformance cases share: task builders and a [`Ctx`] with
//! shortcuts that assert on the way.

use std::sync::Arc;
use std::time::Duration;

use crate::model::backoff::Backoff;
use crate::model::clock::{Clock, ManualClock};
use crate::model::id::{SubjectTag, TaskId};
use crate::model::record::{NewTask, TaskRecord};
use crate::model::state::TaskState;
use crate::model::task::TaskMeta;
use crate::store::broker::{
    Ack, AckResult, Broker, DequeueRequest, EnqueueResult, LeasedTask, Outcome,
};

/// The lease the cases take unless they test leases: long enough that the
/// [`ManualClock`] never passes it by accident.
pub const LEASE: Duration = Duration::from_secs(60);

/// Metadata with every field set to a distinctive value.
pub fn meta(now_ms: i64) -> TaskMeta {
    TaskMeta {
        producer: "testkit-producer".into(),
        created_at_ms: now_ms,
        not_after_ms: Some(now_ms + 86_400_000),
        deadline_ms: Some(now_ms + 3_600_000),
        timeout_ms: Some(30_000),
        max_retries: 3,
        backoff: Backoff::Fixed { delay_ms: 1_500 },
        retention_ms: 60_000,
        subject_tag: None,
        not_before_ms: None,
    }
}

/// A task for `queue` that may run at `run_at_ms`. The envelope is plain
/// bytes derived from the id (brokers never interpret envelopes).
pub fn task_at(queue: &str, run_at_ms: i64, now_ms: i64) -> NewTask {
    let id = TaskId::new();
    let mut envelope = b"sealed:".to_vec();
    envelope.extend_from_slice(id.as_bytes());
    envelope.extend_from_slice(&[0, 255, 1, 254]);
    NewTask {
        id,
        queue: queue.into(),
        kind: "testkit.kind".into(),
        envelope,
        meta: meta(now_ms),
        run_at_ms,
        unique: None,
    }
}

/// A subject tag filled with `byte`.
pub fn subject(byte: u8) -> SubjectTag {
    SubjectTag([byte; 32])
}

/// What a case works with: the broker under test and the clock driving it.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The broker under test.
    pub broker: Arc<dyn Broker>,
    /// Its clock; advance it to make time pass.
    pub clock: Arc<ManualClock>,
}

impl Ctx {
    /// A context over `broker` and `clock`.
    pub fn new(broker: Arc<dyn Broker>, clock: Arc<ManualClock>) -> Self {
        Self { broker, clock }
    }

    /// The clock's current time, Unix ms.
    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Move the clock forward.
    pub fn advance(&self, ms: i64) {
        self.clock.advance_ms(ms);
    }

    /// A task for `queue`, ready now.
    pub fn task(&self, queue: &str) -> NewTask {
        task_at(queue, self.now(), self.now())
    }

    /// A task for `queue` that may run `delay_ms` from now.
    pub fn task_in(&self, queue: &str, delay_ms: i64) -> NewTask {
        task_at(queue, self.now() + delay_ms, self.now())
    }

    /// Enqueue and assert every task was stored; returns their ids in order.
    pub async fn enqueue_ok(&self, tasks: Vec<NewTask>) -> Vec<TaskId> {
        let ids: Vec<TaskId> = tasks.iter().map(|t| t.id).collect();
        let n = tasks.len();
        let res = self.broker.enqueue(tasks).await.expect("enqueue");
        assert_eq!(res, vec![EnqueueResult::Enqueued; n], "enqueue results");
        ids
    }

    /// Enqueue `n` ready tasks in `queue`; returns their ids.
    pub async fn enqueue_n(&self, queue: &str, n: usize) -> Vec<TaskId> {
        let tasks = (0..n).map(|_| self.task(queue)).collect();
        self.enqueue_ok(tasks).await
    }

    /// A dequeue request over `queues` for `max` tasks with [`LEASE`].
    pub fn request(&self, queues: &[&str], max: usize) -> DequeueRequest {
        DequeueRequest {
            queues: queues.iter().map(|q| q.to_string()).collect(),
            max,
            lease: LEASE,
            worker: "testkit-worker".into(),
        }
    }

    /// Dequeue up to `max` from `queues` with [`LEASE`].
    pub async fn lease(&self, queues: &[&str], max: usize) -> Vec<LeasedTask> {
        self.broker
            .dequeue(&self.request(queues, max))
            .await
            .expect("dequeue")
    }

    /// Dequeue exactly one task from `queue`, asserting there is one.
    pub async fn lease_one(&self, queue: &str) -> LeasedTask {
        let mut got = self.lease(&[queue], 1).await;
        assert_eq!(got.len(), 1, "expected one task to lease from `{queue}`");
        got.pop().expect("one")
    }

    /// Ack one lease and return the result.
    pub async fn ack1(&self, leased: &LeasedTask, outcome: Outcome) -> AckResult {
        let res = self
            .broker
            .ack(vec![Ack {
                lease: leased.lease,
                outcome,
            }])
            .await
            .expect("ack");
        assert_eq!(res.len(), 1, "one ack, one result");
        res[0]
    }

    /// The stored record, asserting it exists.
    pub async fn record(&self, id: TaskId) -> TaskRecord {
        self.broker
            .get(id)
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("task {id} should exist"))
    }

    /// The stored state, asserting the task exists.
    pub async fn state(&self, id: TaskId) -> TaskState {
        self.record(id).await.state
    }
}
