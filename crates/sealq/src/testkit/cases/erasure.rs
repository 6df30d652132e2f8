//! Erasure ([`crate::Broker::erase_subject`]): a subject's tasks go in every
//! state, an active one is archived `erased` with its envelope wiped and its
//! lease revoked, other subjects' tasks stay, and the counts say what went.

use crate::model::counts::ErasureCounts;
use crate::model::id::TaskId;
use crate::model::state::{ArchiveReason, TaskState};
use crate::store::broker::{AckResult, EnqueueResult, ListQuery, Outcome};
use crate::testkit::fixtures::{Ctx, LEASE, subject};

use super::{LEASE_MS, complete};

/// A ready task in `queue` tagged with subject `byte`.
fn tagged(ctx: &Ctx, queue: &str, byte: u8) -> crate::model::record::NewTask {
    let mut t = ctx.task(queue);
    t.meta.subject_tag = Some(subject(byte));
    t
}

/// Every task of the subject goes, whatever its state and queue, with
/// the right count per state; other subjects' and untagged tasks stay; a
/// second erasure finds nothing.
pub async fn erase_subject_removes_every_state(ctx: Ctx) {
    // Subject 42: one task per state but active, over three queues.
    let mut scheduled = tagged(&ctx, "e1", 42);
    scheduled.run_at_ms = ctx.now() + 3_600_000;
    let scheduled = ctx.enqueue_ok(vec![scheduled]).await[0];
    let pending = ctx.enqueue_ok(vec![tagged(&ctx, "e2", 42)]).await[0];
    let work: Vec<TaskId> = ctx
        .enqueue_ok((0..3).map(|_| tagged(&ctx, "ework", 42)).collect())
        .await;
    // Subject 7 and an untagged task beside them, in the same queues.
    let seven = ctx
        .enqueue_ok(vec![tagged(&ctx, "e2", 7), tagged(&ctx, "ework", 7)])
        .await;
    let untagged = ctx.enqueue_ok(vec![ctx.task("e2")]).await[0];

    let leased = ctx.lease(&["ework"], 3).await;
    assert_eq!(leased.len(), 3);
    let by_id = |id| leased.iter().find(|l| l.record.id == id).unwrap();
    assert_eq!(
        ctx.ack1(by_id(work[0]), complete(Some(b"sealed result")))
            .await,
        AckResult::Applied
    );
    let retry = Outcome::Retry {
        at_ms: ctx.now() + 3_600_000,
        error: Some(b"sealed error".to_vec()),
    };
    assert_eq!(ctx.ack1(by_id(work[1]), retry).await, AckResult::Applied);
    let archive = Outcome::Archive {
        reason: ArchiveReason::Exhausted,
        error: None,
    };
    assert_eq!(ctx.ack1(by_id(work[2]), archive).await, AckResult::Applied);

    let counts = ctx.broker.erase_subject(&subject(42)).await.unwrap();
    assert_eq!(
        counts,
        ErasureCounts {
            scheduled: 1,
            pending: 1,
            active: 0,
            retry: 1,
            completed: 1,
            archived: 1,
        }
    );
    assert_eq!(counts.total(), 5);
    for id in [scheduled, pending, work[0], work[1], work[2]] {
        assert!(ctx.broker.get(id).await.unwrap().is_none(), "{id} survived");
    }
    let left = ctx
        .broker
        .list(&ListQuery {
            subject: Some(subject(42)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
    for id in seven.iter().chain([&untagged]) {
        assert_eq!(ctx.state(*id).await, TaskState::Pending, "{id} touched");
    }
    let counted: u64 = ctx
        .broker
        .stats()
        .await
        .unwrap()
        .iter()
        .map(|q| TaskState::ALL.iter().map(|s| q.get(*s)).sum::<u64>())
        .sum();
    assert_eq!(counted, 3, "only the other tasks are counted");
    assert!(
        ctx.lease(&["e1", "e2", "ework"], 10)
            .await
            .iter()
            .all(|l| l.record.meta.subject_tag != Some(subject(42)))
    );

    let again = ctx.broker.erase_subject(&subject(42)).await.unwrap();
    assert_eq!(
        again,
        ErasureCounts::default(),
        "running it twice is harmless"
    );
}

/// An active task is archived `erased`: envelope wiped, no error kept,
/// lease revoked; its holder's ack and extension are refused, and neither
/// recovery nor forwarding brings it back.
pub async fn erase_subject_archives_active_and_revokes_its_lease(ctx: Ctx) {
    let ids = ctx
        .enqueue_ok(vec![tagged(&ctx, "ea", 42), tagged(&ctx, "ea", 7)])
        .await;
    let leased = ctx.lease(&["ea"], 2).await;
    assert_eq!(leased.len(), 2);
    let mine = leased.iter().find(|l| l.record.id == ids[0]).unwrap();
    let other = leased.iter().find(|l| l.record.id == ids[1]).unwrap();
    ctx.advance(5);

    let counts = ctx.broker.erase_subject(&subject(42)).await.unwrap();
    assert_eq!(
        counts,
        ErasureCounts {
            active: 1,
            ..Default::default()
        }
    );
    let rec = ctx.record(ids[0]).await;
    assert_eq!(rec.state, TaskState::Archived);
    assert_eq!(rec.archive_reason, Some(ArchiveReason::Erased));
    assert!(rec.envelope.is_empty(), "the envelope was wiped");
    assert_eq!(rec.last_error, None);
    assert_eq!(rec.result, None);
    assert_eq!(rec.lease_expires_at_ms, None, "the lease was revoked");

    assert_eq!(
        ctx.broker
            .extend_leases(&[mine.lease], LEASE)
            .await
            .unwrap(),
        vec![false]
    );
    let retry = Outcome::Retry {
        at_ms: ctx.now(),
        error: Some(b"fails after erasure".to_vec()),
    };
    assert_eq!(ctx.ack1(mine, retry).await, AckResult::LeaseLost);
    // The other subject's active task is left alone, lease and all.
    let o = ctx.record(other.record.id).await;
    assert_eq!(o.state, TaskState::Active);
    assert_eq!(o.lease_expires_at_ms, Some(other.lease.expires_at_ms));
    assert_eq!(o.envelope, other.record.envelope);
    ctx.advance(LEASE_MS + 1);
    ctx.broker.recover_expired().await.unwrap();
    ctx.broker.forward_due().await.unwrap();
    let rec = ctx.record(ids[0]).await;
    assert_eq!(rec.state, TaskState::Archived, "never retried");
    assert_eq!(rec.archive_reason, Some(ArchiveReason::Erased));
    assert!(rec.envelope.is_empty());
    assert_eq!(rec.last_error, None, "the refused ack stored nothing");
    assert!(
        ctx.lease(&["ea"], 10)
            .await
            .iter()
            .all(|l| l.record.id != ids[0]),
        "an erased task was leased again"
    );
}

/// Unique keys held by an erased subject's tasks, waiting or active, are
/// free again.
pub async fn erase_subject_releases_unique_keys(ctx: Ctx) {
    let with_key = |key: &str, byte: u8| {
        let mut t = tagged(&ctx, "eu", byte);
        t.unique = Some((key.into(), 3_600_000));
        t
    };
    let waiting = with_key("waiting", 42);
    let active = with_key("active", 42);
    let kept = with_key("kept", 7);
    let kept_id = kept.id;
    ctx.enqueue_ok(vec![active]).await;
    let l = ctx.lease_one("eu").await;
    ctx.enqueue_ok(vec![waiting, kept]).await;
    let counts = ctx.broker.erase_subject(&subject(42)).await.unwrap();
    assert_eq!((counts.pending, counts.active), (1, 1));
    assert_eq!(ctx.state(l.record.id).await, TaskState::Archived);
    let res = ctx
        .broker
        .enqueue(vec![
            with_key("waiting", 9),
            with_key("active", 9),
            with_key("kept", 9),
        ])
        .await
        .unwrap();
    assert_eq!(
        res,
        vec![
            EnqueueResult::Enqueued,
            EnqueueResult::Enqueued,
            EnqueueResult::Duplicate { existing: kept_id },
        ]
    );
}

/// Erasing a subject nobody has returns zero counts and changes nothing.
pub async fn erase_unknown_subject_is_harmless(ctx: Ctx) {
    assert_eq!(
        ctx.broker.erase_subject(&subject(1)).await.unwrap(),
        ErasureCounts::default()
    );
    let ids = ctx
        .enqueue_ok(vec![tagged(&ctx, "ez", 2), ctx.task("ez")])
        .await;
    let counts = ctx.broker.erase_subject(&subject(1)).await.unwrap();
    assert_eq!(counts, ErasureCounts::default());
    assert_eq!(counts.total(), 0);
    for id in ids {
        assert_eq!(ctx.state(id).await, TaskState::Pending);
    }
}

/// [`crate::Broker::erase_tasks`] (what the client calls once it has checked
/// each task is the subject's: finding 6 of the security review) erases
/// exactly the ids given, whatever their subject tag and state: waiting and
/// completed ones deleted and remembered against replay, an active one
/// archived `erased` with its envelope wiped and its lease revoked; ids not
/// stored are skipped; tasks not named stay, even with the same tag.
pub async fn erase_tasks_erases_exactly_the_given_ids(ctx: Ctx) {
    let ids = ctx
        .enqueue_ok(vec![
            tagged(&ctx, "ei", 42),
            ctx.task("ei"),
            tagged(&ctx, "ei2", 42),
            tagged(&ctx, "ei2", 42),
        ])
        .await;
    let leased = ctx.lease(&["ei2"], 2).await;
    assert_eq!(leased.len(), 2);
    let by_id = |id| leased.iter().find(|l| l.record.id == id).unwrap();
    assert_eq!(
        ctx.ack1(by_id(ids[3]), complete(Some(b"sealed result")))
            .await,
        AckResult::Applied
    );
    let active = by_id(ids[2]);

    let counts = ctx
        .broker
        .erase_tasks(&[ids[1], ids[2], ids[3], TaskId::new()])
        .await
        .unwrap();
    assert_eq!(
        counts,
        ErasureCounts {
            pending: 1,
            active: 1,
            completed: 1,
            ..Default::default()
        }
    );
    assert!(ctx.broker.get(ids[1]).await.unwrap().is_none());
    assert!(ctx.broker.get(ids[3]).await.unwrap().is_none());
    let kept = ctx.record(ids[0]).await;
    assert_eq!(kept.state, TaskState::Pending, "a task not named stays");
    let rec = ctx.record(ids[2]).await;
    assert_eq!(rec.state, TaskState::Archived);
    assert_eq!(rec.archive_reason, Some(ArchiveReason::Erased));
    assert!(rec.envelope.is_empty(), "the envelope was wiped");
    assert_eq!(rec.lease_expires_at_ms, None, "the lease was revoked");
    let retry = Outcome::Retry {
        at_ms: ctx.now(),
        error: None,
    };
    assert_eq!(ctx.ack1(active, retry).await, AckResult::LeaseLost);
    // An erased id is refused if it comes back.
    let mut again = ctx.task("ei");
    again.id = ids[1];
    assert_eq!(
        ctx.broker.enqueue(vec![again]).await.unwrap(),
        vec![EnqueueResult::IdExists]
    );
    assert_eq!(
        ctx.broker.erase_tasks(&[]).await.unwrap(),
        ErasureCounts::default()
    );
}
