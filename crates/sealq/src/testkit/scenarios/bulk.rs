//! Bulk recovery through the admin layer ([`Client::bulk_tasks`]): re-run
//! and delete by queue, state, archive reason and age, dry runs, partial
//! runs finished by running again, and one audit record per batch.

use std::sync::Arc;
use std::time::Duration;

use super::{Greet, Scene};
use crate::admin::bulk::{BulkAction, BulkOptions, TaskFilter};
use crate::audit::{Auditor, MemorySink, VerifyOptions, verify_sink};
use crate::client::Client;
use crate::error::Error;
use crate::model::audit_event::AuditEvent;
use crate::model::id::TaskId;
use crate::model::options::EnqueueOptions;
use crate::model::state::{ArchiveReason, TaskState};
use crate::seal::audit_chain::AuditKeys;
use crate::store::audit::AuditSink;
use crate::store::broker::{Ack, DequeueRequest, Outcome};

/// Archive every task of `queue` with `reason` for the first `n` leased
/// and `other` for the rest.
async fn archive(e: &Scene, queue: &str, n: usize, reason: ArchiveReason, other: ArchiveReason) {
    let leased = e
        .broker
        .dequeue(&DequeueRequest {
            queues: vec![queue.into()],
            max: 100,
            lease: Duration::from_secs(60),
            worker: "test".into(),
        })
        .await
        .unwrap();
    let acks = leased
        .iter()
        .enumerate()
        .map(|(i, t)| Ack {
            lease: t.lease,
            outcome: Outcome::Archive {
                reason: if i < n { reason.clone() } else { other.clone() },
                error: None,
            },
        })
        .collect();
    e.broker.ack(acks).await.unwrap();
}

async fn count(e: &Scene, queue: &str, state: TaskState) -> u64 {
    let stats = e.broker.stats().await.unwrap();
    stats
        .iter()
        .find(|q| q.queue == queue)
        .map_or(0, |q| q.get(state))
}

/// Issue 21: bulk re-run and delete act on exactly the tasks the filter
/// chooses (queue AND state AND reason AND age), a dry run changes
/// nothing, a run stopped part way is finished by running it again, and
/// each batch is one `bulk_action` audit record that verifies.
pub async fn recovery_bulk_rerun_and_delete_act_on_exactly_the_filtered_tasks(e: Scene) {
    let sink: Arc<dyn AuditSink> = Arc::new(MemorySink::new());
    let auditor = Auditor::builder(sink.clone(), &e.keyring)
        .writer("ops")
        .start()
        .unwrap();
    let client = Client::builder(e.broker.clone(), e.keyring.clone())
        .audit(auditor.clone())
        .build();
    let greet = || Greet { name: "x".into() };
    for _ in 0..6 {
        client
            .enqueue(&greet(), EnqueueOptions::new().queue("bulk"))
            .await
            .unwrap();
    }
    for _ in 0..2 {
        client
            .enqueue(&greet(), EnqueueOptions::new().queue("bulk-other"))
            .await
            .unwrap();
    }
    archive(
        &e,
        "bulk",
        3,
        ArchiveReason::Exhausted,
        ArchiveReason::Integrity,
    )
    .await;
    archive(
        &e,
        "bulk-other",
        2,
        ArchiveReason::Exhausted,
        ArchiveReason::Exhausted,
    )
    .await;
    let exhausted = |age: Option<Duration>| TaskFilter {
        queue: Some("bulk".into()),
        reason: Some(ArchiveReason::Exhausted),
        older_than: age,
        ..TaskFilter::default()
    };
    let run = |action, filter: TaskFilter, options: BulkOptions| {
        let client = client.clone();
        async move {
            client
                .bulk_tasks(action, &filter, &options, "ops@test", |_| {})
                .await
                .unwrap()
        }
    };

    // Dry: counted and sampled, nothing changed, nothing audited.
    let dry = run(
        BulkAction::Rerun,
        exhausted(None),
        BulkOptions {
            dry_run: true,
            ..BulkOptions::default()
        },
    )
    .await;
    assert_eq!((dry.matched, dry.acted, dry.batches), (3, 0, 0), "{dry:?}");
    assert_eq!(dry.sample.len(), 3);
    assert_eq!(count(&e, "bulk", TaskState::Archived).await, 6);

    // Too young for the age filter: none.
    let young = run(
        BulkAction::Rerun,
        exhausted(Some(Duration::from_secs(3_600))),
        BulkOptions::default(),
    )
    .await;
    assert_eq!(young.matched, 0, "{young:?}");

    // Stopped after 2 (batches of 1), then finished, then nothing left.
    let part = run(
        BulkAction::Rerun,
        exhausted(Some(Duration::ZERO)),
        BulkOptions {
            batch: 1,
            max: Some(2),
            ..BulkOptions::default()
        },
    )
    .await;
    assert_eq!((part.acted, part.batches), (2, 2), "{part:?}");
    let rest = run(BulkAction::Rerun, exhausted(None), BulkOptions::default()).await;
    assert_eq!(rest.acted, 1, "{rest:?}");
    let none = run(BulkAction::Rerun, exhausted(None), BulkOptions::default()).await;
    assert_eq!(none.matched, 0, "{none:?}");
    assert_eq!(count(&e, "bulk", TaskState::Pending).await, 3);
    assert_eq!(
        count(&e, "bulk", TaskState::Archived).await,
        3,
        "integrity ones stay"
    );
    assert_eq!(
        count(&e, "bulk-other", TaskState::Archived).await,
        2,
        "other queue stays"
    );

    // Delete by queue and reason: the integrity ones only.
    let del = run(
        BulkAction::Delete,
        TaskFilter {
            queue: Some("bulk".into()),
            reason: Some(ArchiveReason::Integrity),
            ..TaskFilter::default()
        },
        BulkOptions::default(),
    )
    .await;
    assert_eq!(del.acted, 3, "{del:?}");
    assert_eq!(count(&e, "bulk", TaskState::Archived).await, 0);
    assert_eq!(count(&e, "bulk", TaskState::Pending).await, 3);
    for id in &del.sample {
        assert!(e.broker.get(*id).await.unwrap().is_none());
    }

    // Refused: a delete of everything, a re-run of pending tasks.
    for (action, filter) in [
        (BulkAction::Delete, TaskFilter::default()),
        (
            BulkAction::Rerun,
            TaskFilter {
                state: Some(TaskState::Pending),
                ..TaskFilter::default()
            },
        ),
    ] {
        let refused = client
            .bulk_tasks(action, &filter, &BulkOptions::default(), "ops", |_| {})
            .await;
        assert!(
            matches!(refused, Err(Error::InvalidArgument { .. })),
            "{refused:?}"
        );
    }
    assert_eq!(count(&e, "bulk", TaskState::Pending).await, 3);

    // One record per batch: 2 + 1 re-runs and 1 delete, naming every task.
    auditor.close().await.unwrap();
    let keys = AuditKeys::from_keyring(&e.keyring).unwrap();
    let report = verify_sink(&*sink, &keys, &VerifyOptions::default())
        .await
        .unwrap();
    assert!(report.is_ok(), "{:?}", report.faults);
    let bulk: Vec<AuditEvent> = sink
        .read_records()
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.item.unwrap().event)
        .filter(|ev| ev.name() == "bulk_action")
        .collect();
    assert_eq!(bulk.len(), 4, "{bulk:?}");
    let tasks: Vec<TaskId> = bulk.iter().flat_map(AuditEvent::tasks).collect();
    assert_eq!(tasks.len(), 6);
    let AuditEvent::BulkAction {
        action,
        filter,
        count,
        operator,
        ..
    } = &bulk[3]
    else {
        panic!("{:?}", bulk[3]);
    };
    assert_eq!(
        (action.as_str(), filter.as_str(), *count, operator.as_str()),
        (
            "delete",
            "queue=bulk state=archived reason=integrity",
            3,
            "ops@test"
        )
    );
    assert_eq!(
        bulk[0].for_task(bulk[0].tasks()[0]).map(|ev| ev.name()),
        Some("rerun")
    );
}
