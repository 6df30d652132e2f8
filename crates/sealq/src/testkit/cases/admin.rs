//! Operator views and actions: stats, list (filters, paging), delete, rerun.

use super::complete;
use crate::model::id::TaskId;
use crate::model::state::{ArchiveReason, TaskState};
use crate::store::broker::{ListQuery, Outcome};
use crate::testkit::fixtures::{Ctx, subject};

/// Stats count every state per queue and show paused queues.
pub async fn stats_per_queue(ctx: Ctx) {
    assert!(ctx.broker.stats().await.unwrap().is_empty());
    ctx.enqueue_n("s1", 6).await;
    ctx.enqueue_ok(vec![ctx.task_in("s1", 10_000)]).await;
    ctx.enqueue_n("s2", 1).await;
    let ls = ctx.lease(&["s1"], 4).await;
    ctx.ack1(&ls[0], complete(None)).await;
    ctx.ack1(
        &ls[1],
        Outcome::Retry {
            at_ms: ctx.now() + 1_000,
            error: None,
        },
    )
    .await;
    ctx.ack1(
        &ls[2],
        Outcome::Archive {
            reason: ArchiveReason::Expired,
            error: None,
        },
    )
    .await;
    ctx.broker.pause("s2").await.unwrap();
    ctx.broker.pause("empty-paused").await.unwrap();

    let mut stats = ctx.broker.stats().await.unwrap();
    stats.sort_by(|a, b| a.queue.cmp(&b.queue));
    let names: Vec<&str> = stats.iter().map(|s| s.queue.as_str()).collect();
    assert_eq!(names, vec!["empty-paused", "s1", "s2"]);
    let s1 = &stats[1];
    assert!(!s1.paused);
    assert_eq!(s1.scheduled, 1);
    assert_eq!(s1.pending, 2);
    assert_eq!(s1.active, 1);
    assert_eq!(s1.retry, 1);
    assert_eq!(s1.completed, 1);
    assert_eq!(s1.archived, 1);
    assert_eq!(s1.get(TaskState::Active), 1);
    assert!(stats[2].paused);
    assert_eq!(stats[2].pending, 1);
    assert!(stats[0].paused);
    assert_eq!(stats[0].pending, 0);

    ctx.broker.resume("empty-paused").await.unwrap();
    let stats = ctx.broker.stats().await.unwrap();
    assert!(
        stats.iter().all(|s| s.queue != "empty-paused"),
        "an empty, unpaused queue is not listed"
    );
}

/// list filters by queue, state and subject.
pub async fn list_filters(ctx: Ctx) {
    let mut a1 = ctx.task("la");
    a1.meta.subject_tag = Some(subject(1));
    let mut a2 = ctx.task("la");
    a2.meta.subject_tag = Some(subject(2));
    let mut b1 = ctx.task("lb");
    b1.meta.subject_tag = Some(subject(1));
    let b2 = ctx.task_in("lb", 1_000);
    let (a1_id, a2_id, b1_id, b2_id) = (a1.id, a2.id, b1.id, b2.id);
    ctx.enqueue_ok(vec![a1, a2, b1, b2]).await;

    let ids = |q: ListQuery| {
        let ctx = ctx.clone();
        async move {
            ctx.broker
                .list(&q)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    let sorted = |mut v: Vec<TaskId>| {
        v.sort();
        v
    };
    assert_eq!(
        ids(ListQuery::default()).await,
        sorted(vec![a1_id, a2_id, b1_id, b2_id])
    );
    assert_eq!(
        ids(ListQuery {
            queue: Some("la".into()),
            ..Default::default()
        })
        .await,
        sorted(vec![a1_id, a2_id])
    );
    assert_eq!(
        ids(ListQuery {
            state: Some(TaskState::Scheduled),
            ..Default::default()
        })
        .await,
        vec![b2_id]
    );
    assert_eq!(
        ids(ListQuery {
            subject: Some(subject(1)),
            ..Default::default()
        })
        .await,
        sorted(vec![a1_id, b1_id])
    );
    assert_eq!(
        ids(ListQuery {
            queue: Some("lb".into()),
            state: Some(TaskState::Pending),
            subject: Some(subject(1)),
            ..Default::default()
        })
        .await,
        vec![b1_id]
    );
    assert!(
        ids(ListQuery {
            state: Some(TaskState::Archived),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    let full = ctx
        .broker
        .list(&ListQuery {
            subject: Some(subject(2)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(full.len(), 1);
    assert_eq!(full[0].meta.subject_tag, Some(subject(2)));
    assert!(!full[0].envelope.is_empty());
}

/// list orders by id and pages with `after` and `limit` (0 means 100).
pub async fn list_pagination(ctx: Ctx) {
    let mut all = ctx.enqueue_n("pg", 130).await;
    all.sort();
    let page = |after: Option<TaskId>, limit: usize| {
        let ctx = ctx.clone();
        async move {
            ctx.broker
                .list(&ListQuery {
                    queue: Some("pg".into()),
                    after,
                    limit,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        page(None, 0).await,
        all[..100].to_vec(),
        "limit 0 means 100"
    );
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let p = page(after, 40).await;
        assert!(p.len() <= 40);
        if p.is_empty() {
            break;
        }
        after = p.last().copied();
        seen.extend(p);
    }
    assert_eq!(seen, all);
    assert_eq!(page(Some(all[128]), 10).await, vec![all[129]]);
    assert!(page(Some(all[129]), 10).await.is_empty());
}

/// delete removes tasks in any state and counts only those that existed.
pub async fn delete_tasks(ctx: Ctx) {
    let ids = ctx.enqueue_n("dl", 3).await;
    let sched = ctx.enqueue_ok(vec![ctx.task_in("dl", 5_000)]).await[0];
    let l = ctx.lease_one("dl").await;
    let n = ctx
        .broker
        .delete(&[l.record.id, sched, TaskId::new()])
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert!(ctx.broker.get(l.record.id).await.unwrap().is_none());
    assert!(ctx.broker.get(sched).await.unwrap().is_none());
    let left: Vec<TaskId> = ids.into_iter().filter(|i| *i != l.record.id).collect();
    assert_eq!(ctx.broker.delete(&left).await.unwrap(), 2);
    assert_eq!(ctx.broker.delete(&left).await.unwrap(), 0);
    assert!(ctx.lease(&["dl"], 10).await.is_empty());
    assert!(ctx.broker.stats().await.unwrap().is_empty());
}

/// rerun moves archived tasks back to Pending with attempts 0, and only those.
pub async fn rerun_archived(ctx: Ctx) {
    let ids = ctx.enqueue_n("rr", 2).await;
    let ls = ctx.lease(&["rr"], 2).await;
    ctx.ack1(
        &ls[0],
        Outcome::Archive {
            reason: ArchiveReason::Exhausted,
            error: Some(b"e".to_vec()),
        },
    )
    .await;
    let archived = ls[0].record.id;
    let active = ls[1].record.id;
    assert!(ids.contains(&archived));
    ctx.advance(10);
    let n = ctx
        .broker
        .rerun(&[archived, active, TaskId::new()])
        .await
        .unwrap();
    assert_eq!(n, 1, "only archived tasks are rerun");
    let r = ctx.record(archived).await;
    assert_eq!(r.state, TaskState::Pending);
    assert_eq!(r.attempts, 0);
    assert_eq!(r.archive_reason, None);
    assert_eq!(r.finished_at_ms, None);
    assert_eq!(ctx.state(active).await, TaskState::Active);
    let l = ctx.lease_one("rr").await;
    assert_eq!(l.record.id, archived);
    assert_eq!(l.record.attempts, 1);
}

/// Issue 21: `after` pages within a filter too: paging a queue's tasks of
/// one state visits each of them once, in id order, and no other (what
/// `tasks list --after` and the bulk actions rely on).
pub async fn list_pages_within_a_queue_and_state(ctx: Ctx) {
    let mut pending = ctx.enqueue_n("pf", 10).await;
    pending.sort();
    let scheduled: Vec<_> = (0..5).map(|_| ctx.task_in("pf", 60_000)).collect();
    ctx.enqueue_ok(scheduled).await;
    ctx.enqueue_n("pf-other", 5).await;
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page: Vec<TaskId> = ctx
            .broker
            .list(&ListQuery {
                queue: Some("pf".into()),
                state: Some(TaskState::Pending),
                after,
                limit: 3,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        after = Some(*last);
        seen.extend(page);
    }
    assert_eq!(seen, pending);
}
