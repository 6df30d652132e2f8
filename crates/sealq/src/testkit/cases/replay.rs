//! Replay (finding 2 of the security review): a task whose id completed or
//! was deleted never runs again, whatever its stored state says.
//!
//! The replay memory holds an id from the moment its task completes (not
//! from when it is purged) and from when it is deleted in any state; how is
//! the backend's affair (Postgres lets a kept completed row stand for it
//! and copies the id when the row goes or changes). Dequeue flags a leased
//! task whose id is remembered `replayed` (the worker archives it `replay`
//! without running it). Two kinds of case:
//!
//! - plain conformance cases (`finding_2_…` in [`crate::conformance_tests!`]),
//!   through the [`crate::Broker`] API alone;
//! - tamper cases ([`crate::replay_tests!`]), where the backend edits its
//!   storage the way someone with write access to it could, through a
//!   [`Harness::with_tamper`] hook:
//!
//! ```ignore
//! sealq::replay_tests!(async |clock: SharedClock| {
//!     let broker = MyBroker::open(…, clock);
//!     let path = broker.path().to_owned();
//!     Harness::new(broker).with_tamper(move |op, id, queue| {
//!         let path = path.clone();
//!         Box::pin(async move { edit(&path, op, id, &queue) })
//!     })
//! });
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::complete;
use crate::model::clock::SharedClock;
use crate::model::id::TaskId;
use crate::store::broker::{AckResult, EnqueueResult};
use crate::testkit::fixtures::Ctx;
use crate::testkit::{Harness, ManualClock, START_MS};

/// An edit of a backend's storage, as someone with write access to it
/// (not through the broker's API) could make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tamper {
    /// Set the stored task's state back to `pending`, due now, where
    /// dequeue looks for it (the ready set), leaving the rest as it is.
    FlipToPending,
    /// Keep a copy of the stored task (its row or keys), as a backup holds it.
    Save,
    /// Put the copy kept by [`Tamper::Save`] back, where dequeue looks for
    /// it, after the task was deleted.
    Restore,
}

/// Edits one stored task, given the edit, its id and queue (see the
/// [module docs](self)).
pub type TamperHook =
    Arc<dyn Fn(Tamper, TaskId, String) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Run one tamper case: a fresh broker on a [`ManualClock`] from the
/// factory, whose harness must carry a [`Harness::with_tamper`] hook.
pub async fn run<F, R, C, Fut>(factory: F, case: C)
where
    F: AsyncFnOnce(SharedClock) -> R,
    R: Into<Harness>,
    C: FnOnce(Ctx, TamperHook) -> Fut,
    Fut: Future<Output = ()>,
{
    let clock = ManualClock::new(START_MS);
    let shared: SharedClock = clock.clone();
    let harness: Harness = factory(shared).await.into();
    let Harness {
        broker,
        tamper,
        guard,
        ..
    } = harness;
    let tamper = tamper.expect("the replay cases need Harness::with_tamper");
    case(Ctx::new(broker, clock), tamper).await;
    drop(guard);
}

/// Lease everything due in `queue` and check that exactly `id` comes back,
/// flagged `replayed`.
async fn leased_flagged_replayed(ctx: &Ctx, queue: &str, id: TaskId, what: &str) {
    let leased = ctx.lease(&[queue], 10).await;
    assert_eq!(leased.len(), 1, "{what}: the task is leased once");
    assert_eq!(leased[0].record.id, id);
    assert!(leased[0].replayed, "{what}: flagged replayed, never run");
}

/// A completed task whose state is flipped back to pending (while it is
/// still retained) is flagged `replayed` at dequeue.
pub async fn finding_2_a_completed_task_flipped_back_to_pending_never_runs_again(
    ctx: Ctx,
    tamper: TamperHook,
) {
    let t = ctx.task("rp-flip");
    ctx.enqueue_ok(vec![t.clone()]).await;
    let l = ctx.lease_one("rp-flip").await;
    assert!(!l.replayed, "a first delivery is not a replay");
    ctx.ack1(&l, complete(Some(b"done"))).await;
    tamper(Tamper::FlipToPending, t.id, "rp-flip".to_owned()).await;
    leased_flagged_replayed(&ctx, "rp-flip", t.id, "a completed task flipped back").await;
}

/// A task an operator deleted (never completed) whose row is put back is
/// flagged `replayed` at dequeue; so is a completed task deleted and put back.
pub async fn finding_2_an_operator_deleted_task_put_back_never_runs(ctx: Ctx, tamper: TamperHook) {
    let q = "rp-del";
    let t = ctx.task(q);
    ctx.enqueue_ok(vec![t.clone()]).await;
    tamper(Tamper::Save, t.id, q.to_owned()).await;
    assert_eq!(ctx.broker.delete(&[t.id]).await.unwrap(), 1);
    tamper(Tamper::Restore, t.id, q.to_owned()).await;
    leased_flagged_replayed(&ctx, q, t.id, "a deleted pending task put back").await;

    let c = ctx.task(q);
    ctx.enqueue_ok(vec![c.clone()]).await;
    tamper(Tamper::Save, c.id, q.to_owned()).await;
    let l = ctx.lease_one(q).await;
    ctx.ack1(&l, complete(None)).await;
    assert_eq!(ctx.broker.delete(&[c.id]).await.unwrap(), 1);
    tamper(Tamper::Restore, c.id, q.to_owned()).await;
    leased_flagged_replayed(&ctx, q, c.id, "a completed task deleted and put back").await;
}

/// A second success of one id still applies (the work is done; refusing
/// the ack would only make it run again): the broker counts it instead
/// (`sealq_replayed_successes_total`).
pub async fn finding_2_a_second_success_of_one_id_still_applies(ctx: Ctx, tamper: TamperHook) {
    let t = ctx.task("rp-twice");
    ctx.enqueue_ok(vec![t.clone()]).await;
    let l = ctx.lease_one("rp-twice").await;
    ctx.ack1(&l, complete(None)).await;
    tamper(Tamper::FlipToPending, t.id, "rp-twice".to_owned()).await;
    let again = ctx.lease_one("rp-twice").await;
    assert!(again.replayed);
    assert_eq!(ctx.ack1(&again, complete(None)).await, AckResult::Applied);
    assert_eq!(
        ctx.broker.enqueue(vec![t]).await.unwrap(),
        vec![EnqueueResult::IdExists],
        "still remembered"
    );
}

/// The replay memory holds the id from its completion: the same id is
/// refused at enqueue while the completed task is retained, and after it is
/// purged.
pub async fn finding_2_a_completed_id_is_refused_while_retained_and_after_purge(ctx: Ctx) {
    let t = ctx.task("rp-enq");
    ctx.enqueue_ok(vec![t.clone()]).await;
    let l = ctx.lease_one("rp-enq").await;
    ctx.ack1(&l, complete(None)).await;
    for queue in ["rp-enq", "rp-elsewhere"] {
        let mut again = t.clone();
        again.queue = queue.into();
        assert_eq!(
            ctx.broker.enqueue(vec![again]).await.unwrap(),
            vec![EnqueueResult::IdExists],
            "retained, enqueued into {queue}"
        );
    }
    ctx.advance(t.meta.retention_ms as i64 + 1);
    assert_eq!(ctx.broker.purge_completed().await.unwrap(), 1);
    assert_eq!(
        ctx.broker.enqueue(vec![t.clone()]).await.unwrap(),
        vec![EnqueueResult::IdExists],
        "purged"
    );
    assert!(ctx.lease(&["rp-enq"], 10).await.is_empty());
}

/// An id deleted by an operator (never completed) is remembered too: the
/// same id is refused at enqueue for the replay horizon.
pub async fn finding_2_a_deleted_id_is_refused_at_enqueue(ctx: Ctx) {
    let t = ctx.task("rp-deleted");
    ctx.enqueue_ok(vec![t.clone()]).await;
    assert_eq!(ctx.broker.delete(&[t.id]).await.unwrap(), 1);
    assert_eq!(
        ctx.broker.enqueue(vec![t]).await.unwrap(),
        vec![EnqueueResult::IdExists]
    );
    assert!(ctx.lease(&["rp-deleted"], 10).await.is_empty());
}

/// Expand to one `#[tokio::test]` per tamper case (see the
/// [module docs](crate::testkit::cases::replay)).
#[macro_export]
macro_rules! replay_tests {
    ($factory:expr $(,)?) => {
        $crate::replay_tests!(@cases $factory;
            finding_2_a_completed_task_flipped_back_to_pending_never_runs_again,
            finding_2_an_operator_deleted_task_put_back_never_runs,
            finding_2_a_second_success_of_one_id_still_applies,
        );
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::testkit::cases::replay::run(
                    $factory,
                    $crate::testkit::cases::replay::$case,
                )
                .await;
            }
        )*
    };
}
