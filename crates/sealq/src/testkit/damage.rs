//! Damaged data (finding 4 of the security review): one task that does not
//! decode must not stop a worker. Each backend runs these cases with one
//! macro call ([`crate::damage_tests!`]), giving a harness whose
//! [`Harness::with_damage`] hook damages one stored task the way that
//! backend's storage can be damaged (an edited row or key), so that it no
//! longer decodes:
//!
//! ```ignore
//! sealq::damage_tests!(async |clock: SharedClock| {
//!     let broker = MyBroker::open(…, clock);
//!     let path = broker.path().to_owned();
//!     Harness::new(broker).with_damage(move |id, _queue| {
//!         let path = path.clone();
//!         Box::pin(async move { write_a_real_into_attempts(&path, id) })
//!     })
//! });
//! ```
//!
//! What the cases require of every backend: the calls that meet the task
//! succeed and serve the other tasks; the damaged task is never handed to
//! a worker; afterwards it is archived with reason `integrity`, or, where
//! it still does not decode, `get` names it in a
//! [`BrokerErrorKind::Corrupt`] error and `list` leaves it out.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::error::BrokerErrorKind;
use crate::model::clock::SharedClock;
use crate::model::id::TaskId;
use crate::model::state::{ArchiveReason, TaskState};
use crate::store::broker::{ListQuery, Outcome};
use crate::testkit::fixtures::Ctx;
use crate::testkit::{Harness, ManualClock, START_MS};

/// Damages one stored task, given its id and queue, so that it no longer
/// decodes (see the [module docs](self)).
pub type Damage =
    Arc<dyn Fn(TaskId, String) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Run one case: a fresh broker on a [`ManualClock`] from the factory,
/// whose harness must carry a [`Harness::with_damage`] hook.
pub async fn run<F, R, C, Fut>(factory: F, case: C)
where
    F: AsyncFnOnce(SharedClock) -> R,
    R: Into<Harness>,
    C: FnOnce(Ctx, Damage) -> Fut,
    Fut: Future<Output = ()>,
{
    let clock = ManualClock::new(START_MS);
    let shared: SharedClock = clock.clone();
    let harness: Harness = factory(shared).await.into();
    let Harness {
        broker,
        damage,
        guard,
        ..
    } = harness;
    let damage = damage.expect("the damage cases need Harness::with_damage");
    case(Ctx::new(broker, clock), damage).await;
    drop(guard);
}

/// Where the damaged task ended: archived `integrity` if it reads back,
/// else a `Corrupt` error naming it.
async fn assert_set_aside(ctx: &Ctx, bad: TaskId) {
    match ctx.broker.get(bad).await {
        Ok(Some(r)) => {
            assert_eq!(r.state, TaskState::Archived, "the damaged task is archived");
            assert_eq!(r.archive_reason, Some(ArchiveReason::Integrity));
        }
        Ok(None) => panic!("the damaged task {bad} vanished"),
        Err(e) => {
            assert_eq!(e.kind, BrokerErrorKind::Corrupt, "{e}");
            assert!(e.to_string().contains(&bad.to_string()), "{e}");
        }
    }
}

/// One damaged task among others: list, stats, dequeue, acks, recovery and
/// a second dequeue all succeed; the others are served, the damaged one
/// never is.
pub async fn finding_4_one_bad_task_does_not_stop_a_worker(ctx: Ctx, damage: Damage) {
    let a = ctx.enqueue_n("dmg-a", 3).await;
    let b = ctx.enqueue_n("dmg-b", 1).await;
    let bad = a[1];
    damage(bad, "dmg-a".to_owned()).await;
    let mut good = vec![a[0], a[2], b[0]];
    good.sort();

    // Reads go on: the good tasks are listed; the damaged one is left out
    // or shown set aside.
    let listed = ctx.broker.list(&ListQuery::default()).await.expect("list");
    for id in &good {
        assert!(listed.iter().any(|r| r.id == *id), "{id} listed");
    }
    ctx.broker.stats().await.expect("stats");

    // Dequeue serves every good task of every queue in the call.
    let leased = ctx.lease(&["dmg-a", "dmg-b"], 10).await;
    let mut ids: Vec<TaskId> = leased.iter().map(|t| t.record.id).collect();
    ids.sort();
    assert_eq!(
        ids, good,
        "the good tasks are leased, the damaged one is not"
    );
    assert_set_aside(&ctx, bad).await;
    assert!(ctx.lease(&["dmg-a", "dmg-b"], 10).await.is_empty());

    // The leases are whole: acks apply, and recovery works around the
    // damaged task.
    ctx.ack1(&leased[0], Outcome::Requeue).await;
    ctx.advance(super::fixtures::LEASE.as_millis() as i64 + 1);
    let rec = ctx.broker.recover_expired().await.expect("recovery");
    assert_eq!(rec.retried, 2);
    assert_eq!(ctx.lease(&["dmg-a", "dmg-b"], 10).await.len(), 3);
    assert_set_aside(&ctx, bad).await;
    ctx.broker.list(&ListQuery::default()).await.expect("list");
}

/// Expand to one `#[tokio::test]` per damage case (see the
/// [module docs](crate::testkit::damage)).
#[macro_export]
macro_rules! damage_tests {
    ($factory:expr $(,)?) => {
        $crate::damage_tests!(@cases $factory;
            finding_4_one_bad_task_does_not_stop_a_worker,
        );
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::testkit::run_damage($factory, $crate::testkit::damage::$case).await;
            }
        )*
    };
}
