//! Erasure through the client (right to erasure): the subject's tasks go
//! in every state, a running one is archived `erased` and never retried,
//! earlier copies of its ciphertext stop opening, other subjects stay.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::{Mail, Scene, fast, mail, wait_state};
use crate::model::id::TaskId;
use crate::model::options::EnqueueOptions;
use crate::model::state::{ArchiveReason, TaskState};
use crate::seal::data_key::is_subject_sealed;
use crate::seal::envelope::{Aad, Purpose};
use crate::store::broker::{Ack, AckResult, DequeueRequest, ListQuery, Outcome};
use crate::subject_keys::SubjectKeys;
use crate::worker::{TaskContext, TaskError, Worker};

/// The client's erasure deletes the subject's tasks in every state but
/// active, over several queues, releases their unique keys, and shreds
/// every earlier copy of their ciphertext (here: records read before the
/// erasure) by destroying the subject's key; other subjects are untouched;
/// running it again is harmless; a later task for the subject gets a new
/// key and runs, its result sealed with that key.
pub async fn erasure_removes_every_state_of_the_subject_only(e: Scene) {
    let (broker, keyring, c) = (e.broker.clone(), e.keyring.clone(), e.client.clone());
    let s42 = || EnqueueOptions::new().subject("user-42");

    // user-42 in every state but active, over three queues; user-7 beside them.
    let pending = c.enqueue(&mail("ann@example.com"), s42()).await.unwrap();
    let scheduled = c
        .enqueue(
            &mail("ann@example.com"),
            s42().delay(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let unique = c
        .enqueue(
            &mail("ann@example.com"),
            s42()
                .queue("other")
                .unique("ann", Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let mut work = Vec::new();
    for _ in 0..3 {
        work.push(
            c.enqueue(&mail("ann@example.com"), s42().queue("work"))
                .await
                .unwrap(),
        );
    }
    let other7 = c
        .enqueue(
            &mail("bob@example.com"),
            EnqueueOptions::new().subject("user-7"),
        )
        .await
        .unwrap();
    // Drive the three `work` tasks to completed, retry and archived directly.
    let leased = broker
        .dequeue(&DequeueRequest {
            queues: vec!["work".into()],
            max: 10,
            lease: Duration::from_secs(60),
            worker: "test".into(),
        })
        .await
        .unwrap();
    assert_eq!(leased.len(), 3);
    let lease_of = |id: TaskId| leased.iter().find(|t| t.record.id == id).unwrap().lease;
    let acks = vec![
        Ack {
            lease: lease_of(work[0]),
            outcome: Outcome::Complete {
                result: Some(b"sealed result".to_vec()),
            },
        },
        Ack {
            lease: lease_of(work[1]),
            outcome: Outcome::Retry {
                at_ms: i64::MAX / 4,
                error: Some(b"sealed error".to_vec()),
            },
        },
        Ack {
            lease: lease_of(work[2]),
            outcome: Outcome::Archive {
                reason: ArchiveReason::Exhausted,
                error: None,
            },
        },
    ];
    assert!(
        broker
            .ack(acks)
            .await
            .unwrap()
            .iter()
            .all(|r| *r == AckResult::Applied)
    );

    // Subject tasks are sealed with the subject's data key, not the keyring's.
    let old = broker.get(pending).await.unwrap().unwrap();
    assert!(is_subject_sealed(&old.envelope), "sealed with the data key");
    assert!(
        keyring
            .open(&Aad::for_record(&old, Purpose::Payload), &old.envelope)
            .is_err()
    );
    // A copy taken before the erasure (a backup, a replica).
    let seven = broker.get(other7).await.unwrap().unwrap();

    let receipt = c.erase_subject("user-42", "dpo@example.com").await.unwrap();
    let n = receipt.counts;
    assert_eq!(
        (
            n.scheduled,
            n.pending,
            n.active,
            n.retry,
            n.completed,
            n.archived
        ),
        (1, 2, 0, 1, 1, 1),
        "{n:?}"
    );
    assert!(receipt.key_destroyed);
    assert_eq!(receipt.subject_tag, keyring.subject_tag("user-42").to_hex());
    assert!(!serde_json::to_string(&receipt).unwrap().contains("user-42"));
    assert_eq!(receipt.operator, "dpo@example.com");
    for id in [pending, scheduled, unique, work[0], work[1], work[2]] {
        assert!(broker.get(id).await.unwrap().is_none(), "{id} survived");
    }
    assert!(broker.get(other7).await.unwrap().is_some());
    let tag42 = keyring.subject_tag("user-42");
    let left = broker
        .list(&ListQuery {
            subject: Some(tag42),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
    let stats: u64 = broker
        .stats()
        .await
        .unwrap()
        .iter()
        .map(|q| TaskState::ALL.iter().map(|s| q.get(*s)).sum::<u64>())
        .sum();
    assert_eq!(stats, 1, "only user-7's task is counted");
    // The unique key was released: the same key is free again.
    c.enqueue(
        &mail("carol@example.com"),
        EnqueueOptions::new()
            .queue("other")
            .unique("ann", Duration::from_secs(3600)),
    )
    .await
    .expect("unique key released");

    // The copy still holds user-42's ciphertext, but nothing opens it: the
    // attacker has the keyring and the live key store, and still fails.
    let keys = SubjectKeys::new(broker.subject_key_store().unwrap(), &keyring);
    assert!(!old.envelope.is_empty());
    assert!(
        keys.for_open(&tag42).await.unwrap().is_none(),
        "the key survived erasure"
    );
    // user-7's task in the same copy still opens.
    let k7 = keys
        .for_open(&keyring.subject_tag("user-7"))
        .await
        .unwrap()
        .expect("user-7's key");
    let opened = k7
        .open(&Aad::for_record(&seven, Purpose::Payload), &seven.envelope)
        .unwrap();
    assert!(String::from_utf8_lossy(&opened).contains("bob@example.com"));

    // Idempotent; unknown subjects are fine.
    let again = c.erase_subject("user-42", "dpo@example.com").await.unwrap();
    assert_eq!(again.counts.total(), 0);
    assert!(!again.key_destroyed);
    let unknown = c.erase_subject("nobody", "dpo@example.com").await.unwrap();
    assert_eq!(unknown.counts.total(), 0);

    // A later enqueue for the same subject gets a new key, which cannot open
    // the old copy, and runs.
    let later = c.enqueue(&mail("ann@example.com"), s42()).await.unwrap();
    let new_key = keys.for_open(&tag42).await.unwrap().expect("a new key");
    assert!(
        new_key
            .open(&Aad::for_record(&old, Purpose::Payload), &old.envelope)
            .is_err()
    );
    let seen = Arc::new(AtomicU32::new(0));
    let s = seen.clone();
    let worker = fast(Worker::builder(broker.clone(), keyring.clone()))
        .handle(move |_: Mail, ctx: TaskContext| {
            let s = s.clone();
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                ctx.set_result(&"sent")?;
                Ok(())
            }
        })
        .build()
        .unwrap()
        .spawn();
    wait_state(&broker, later, TaskState::Completed).await;
    wait_state(&broker, other7, TaskState::Completed).await;
    worker.shutdown().await.unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 2);
    // Results of subject tasks are sealed with the subject key too.
    let done = broker.get(later).await.unwrap().unwrap();
    assert!(is_subject_sealed(&done.result.expect("result stored")));
}

/// A task whose handler is running when its subject is erased ends
/// archived `erased` (envelope wiped, lease revoked, unique key released):
/// the handler's late failure is a lost lease and it is never retried.
pub async fn an_active_task_of_an_erased_subject_ends_archived_erased_and_never_retries(e: Scene) {
    let (broker, keyring, c) = (e.broker.clone(), e.keyring.clone(), e.client.clone());
    let started = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let (st, rl) = (started.clone(), release.clone());
    let worker = Worker::builder(broker.clone(), keyring.clone())
        .maintenance_interval(Duration::from_millis(20))
        .handle(move |_: Mail, _ctx: TaskContext| {
            let (st, rl) = (st.clone(), rl.clone());
            async move {
                st.notify_one();
                rl.notified().await;
                Err(TaskError::retry("fails after erasure: must not be retried"))
            }
        })
        .build()
        .unwrap()
        .spawn();
    let id = c
        .enqueue(
            &mail("ann@example.com"),
            EnqueueOptions::new()
                .subject("user-42")
                .unique("ann", Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), started.notified())
        .await
        .expect("handler started");
    let receipt = c.erase_subject("user-42", "dpo").await.unwrap();
    assert_eq!(receipt.counts.active, 1);
    assert_eq!(receipt.counts.total(), 1);
    release.notify_one();
    let report = worker.shutdown().await.unwrap();
    assert_eq!(
        report.leases_lost, 1,
        "the running worker's ack must be refused"
    );
    let rec = broker.get(id).await.unwrap().unwrap();
    assert_eq!(rec.state, TaskState::Archived);
    assert_eq!(rec.archive_reason, Some(ArchiveReason::Erased));
    assert!(rec.envelope.is_empty(), "the envelope was wiped");
    assert!(rec.last_error.is_none());
    assert!(rec.lease_expires_at_ms.is_none(), "the lease was revoked");
    // Recovery never brings it back.
    broker.recover_expired().await.unwrap();
    broker.forward_due().await.unwrap();
    let rec = broker.get(id).await.unwrap().unwrap();
    assert_eq!(rec.state, TaskState::Archived);
    let listed = broker.list(&ListQuery::default()).await.unwrap();
    assert_eq!(listed.len(), 1);
    // Its unique key was released.
    c.enqueue(
        &mail("carol@example.com"),
        EnqueueOptions::new().unique("ann", Duration::from_secs(3600)),
    )
    .await
    .expect("unique key released");
}

/// A task leased directly (no worker) and erased: recovery does not retry
/// it, and its holder's ack and extension are refused.
pub async fn a_direct_ack_after_erasure_is_lease_lost(e: Scene) {
    let (broker, keyring, c) = (e.broker.clone(), e.keyring.clone(), e.client.clone());
    c.enqueue(
        &mail("ann@example.com"),
        EnqueueOptions::new().subject("user-42"),
    )
    .await
    .unwrap();
    let leased = broker
        .dequeue(&DequeueRequest {
            queues: vec!["default".into()],
            max: 1,
            lease: Duration::from_millis(1),
            worker: "w".into(),
        })
        .await
        .unwrap();
    assert_eq!(leased.len(), 1);
    let counts = broker
        .erase_subject(&keyring.subject_tag("user-42"))
        .await
        .unwrap();
    assert_eq!(counts.active, 1);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(broker.recover_expired().await.unwrap().retried, 0);
    let acks = broker
        .ack(vec![Ack {
            lease: leased[0].lease,
            outcome: Outcome::Retry {
                at_ms: 0,
                error: None,
            },
        }])
        .await
        .unwrap();
    assert_eq!(acks, vec![AckResult::LeaseLost]);
    assert_eq!(
        broker
            .extend_leases(&[leased[0].lease], Duration::from_secs(1))
            .await
            .unwrap(),
        vec![false]
    );
}
