//! Key rotation end to end on a real SQLite broker: tasks sealed with the
//! old key (pending, offloaded to a blob store, completed with a result,
//! waiting to retry with an error, and one with a data subject) are
//! re-sealed under the new primary key; a worker whose keyring no longer has
//! the old key then runs them all with the payloads they were enqueued
//! with. Every replacement is audited, the log verifies, and tampered bytes
//! are reported and left alone.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sealq::audit::{AuditEvent, AuditKeys, AuditSink, Auditor, VerifyOptions, verify_sink};
use sealq::blob::{BlobStore, MemoryBlobStore};
use sealq::broker::{
    Ack, AckResult, Broker, DequeueRequest, Outcome, SealedPart, SealedSwap, TaskRecord,
};
use sealq::envelope::{Aad, Purpose, parse_header};
use sealq::reseal::ResealOptions;
use sealq::{Client, EnqueueOptions, Error, Keyring, RawTask, TaskId, TaskState, Worker};
use sealq_sqlite::{SqliteAuditSink, SqliteBroker};

fn key_of(bytes: &[u8]) -> String {
    parse_header(bytes).expect("an envelope").key_id.to_owned()
}

fn raw(kind: &str, text: &str, options: EnqueueOptions) -> RawTask {
    RawTask::from_json(kind, &serde_json::json!({ "text": text }), options).unwrap()
}

async fn record(broker: &Arc<dyn Broker>, id: TaskId) -> TaskRecord {
    broker.get(id).await.unwrap().expect("task exists")
}

struct Setup {
    _dir: tempfile::TempDir,
    broker: Arc<dyn Broker>,
    sink: Arc<SqliteAuditSink>,
    store: Arc<dyn BlobStore>,
    /// The keyring after rotation: old key `old`, primary `new`.
    rotated: Arc<Keyring>,
    old: String,
    new: String,
    pending: TaskId,
    offloaded: TaskId,
    subject: TaskId,
    completed: TaskId,
    retrying: TaskId,
}

/// Tasks in several states, all sealed with the first keyring's key, then
/// the keyring rotated.
async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db");
    let broker: Arc<dyn Broker> = Arc::new(SqliteBroker::open(&db).unwrap());
    let sink = Arc::new(SqliteAuditSink::open(&db).unwrap());
    let store: Arc<dyn BlobStore> = Arc::new(MemoryBlobStore::new());
    let first = Keyring::generate();
    let old = first.primary_key_id().to_owned();
    let copy = Keyring::from_toml(&first.to_toml_secret()).unwrap();
    let producer = Client::builder(broker.clone(), Arc::new(copy))
        .blob_store(store.clone(), 512)
        .build();
    let opts = || EnqueueOptions::new().queue("mail");
    let pending = producer
        .enqueue_raw(raw("mail.send", "hello ann", opts()))
        .await
        .unwrap();
    let offloaded = producer
        .enqueue_raw(raw("mail.send", &"a big attachment ".repeat(200), opts()))
        .await
        .unwrap();
    let subject = producer
        .enqueue_raw(raw("mail.send", "hello bob", opts().subject("user-7")))
        .await
        .unwrap();
    let completed = producer
        .enqueue_raw(raw("mail.send", "done", opts().queue("done")))
        .await
        .unwrap();
    let retrying = producer
        .enqueue_raw(raw("mail.send", "try again", opts().queue("done")))
        .await
        .unwrap();
    // A result and an error sealed with the old key, as a worker would.
    let leased = broker
        .dequeue(&DequeueRequest {
            queues: vec!["done".into()],
            max: 2,
            lease: Duration::from_secs(60),
            worker: "w".into(),
        })
        .await
        .unwrap();
    let seal = |l: &sealq::broker::LeasedTask, purpose, text: &[u8]| {
        first
            .seal(&Aad::for_record(&l.record, purpose), text)
            .unwrap()
    };
    let acks = leased
        .iter()
        .map(|l| Ack {
            lease: l.lease,
            outcome: if l.record.id == completed {
                Outcome::Complete {
                    result: Some(seal(l, Purpose::Result, b"sent")),
                }
            } else {
                Outcome::Retry {
                    at_ms: i64::MAX / 4,
                    error: Some(seal(l, Purpose::Error, b"smtp timeout")),
                }
            },
        })
        .collect();
    let applied = broker.ack(acks).await.unwrap();
    assert!(applied.iter().all(|r| *r == AckResult::Applied));

    let mut rotated = first;
    let new = rotated.rotate();
    Setup {
        _dir: dir,
        broker,
        sink,
        store,
        rotated: Arc::new(rotated),
        old,
        new,
        pending,
        offloaded,
        subject,
        completed,
        retrying,
    }
}

fn operator_client(s: &Setup) -> (Client, Auditor) {
    let auditor = Auditor::builder(s.sink.clone(), &s.rotated)
        .writer("ops")
        .start()
        .unwrap();
    let client = Client::builder(s.broker.clone(), s.rotated.clone())
        .blob_store(s.store.clone(), 512)
        .audit(auditor.clone())
        .build();
    (client, auditor)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reseal_moves_every_keyring_sealed_part_to_the_new_key() {
    let s = setup().await;
    let (client, auditor) = operator_client(&s);
    let before: Vec<TaskRecord> = {
        let mut v = Vec::new();
        for id in [s.pending, s.offloaded, s.subject, s.completed, s.retrying] {
            v.push(record(&s.broker, id).await);
        }
        v
    };

    // A dry run counts and changes nothing.
    let dry = client
        .reseal(
            &ResealOptions {
                dry_run: true,
                ..ResealOptions::default()
            },
            "ops@example.com",
        )
        .await
        .unwrap();
    // Payloads of pending, offloaded, completed, retrying; the result; the
    // error. The subject's payload is sealed with its data key.
    assert_eq!((dry.resealed, dry.blobs, dry.tasks), (6, 1, 4), "{dry:?}");
    assert_eq!(dry.subject_sealed, 1, "{dry:?}");
    // user-7's data key is wrapped under the old key's KEK: it would move.
    let dry_keys = dry
        .subject_keys
        .as_ref()
        .expect("the broker keeps subject keys");
    assert_eq!((dry_keys.rewrapped, dry_keys.current), (1, 0), "{dry:?}");
    let subject_store = s.broker.subject_key_store().unwrap();
    let tag7 = s.rotated.subject_tag("user-7");
    let wrapped_before = subject_store.get(&tag7).await.unwrap().unwrap();
    assert_eq!(
        sealq::subject_keys::WrappedUnder::of(&wrapped_before),
        Some(sealq::subject_keys::WrappedUnder::Key(s.old.clone()))
    );
    for (id, was) in [s.pending, s.offloaded, s.subject, s.completed, s.retrying]
        .iter()
        .zip(&before)
    {
        assert_eq!(record(&s.broker, *id).await.envelope, was.envelope);
    }

    let report = client
        .reseal(&ResealOptions::default(), "ops@example.com")
        .await
        .unwrap();
    assert_eq!(report.to_key, s.new);
    assert_eq!(report.scanned, 5);
    assert_eq!(
        (report.resealed, report.blobs, report.tasks, report.changed),
        (6, 1, 4, 0),
        "{report:?}"
    );
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(report.remaining.is_empty(), "{report:?}");
    let rewrapped = report.subject_keys.as_ref().unwrap();
    assert_eq!(
        (rewrapped.rewrapped, rewrapped.changed),
        (1, 0),
        "{report:?}"
    );
    assert!(rewrapped.remaining.is_empty(), "{report:?}");
    assert_eq!(
        sealq::subject_keys::WrappedUnder::of(&subject_store.get(&tag7).await.unwrap().unwrap()),
        Some(sealq::subject_keys::WrappedUnder::Key(s.new.clone()))
    );

    // Every keyring-sealed part names the new key, state untouched.
    for was in &before {
        let now = record(&s.broker, was.id).await;
        assert_eq!(now.state, was.state);
        assert_eq!(now.attempts, was.attempts);
        assert_eq!(now.updated_at_ms, was.updated_at_ms);
        if was.id == s.subject {
            assert_eq!(now.envelope, was.envelope, "subject-sealed: untouched");
            continue;
        }
        assert_eq!(key_of(&was.envelope), s.old);
        assert_eq!(key_of(&now.envelope), s.new);
        for part in [&now.result, &now.last_error].into_iter().flatten() {
            assert_eq!(key_of(part), s.new);
        }
    }
    let done = record(&s.broker, s.completed).await;
    let opened = s
        .rotated
        .open(
            &Aad::for_record(&done, Purpose::Result),
            done.result.as_ref().unwrap(),
        )
        .unwrap();
    assert_eq!(&opened[..], b"sent");
    let failing = record(&s.broker, s.retrying).await;
    let opened = s
        .rotated
        .open(
            &Aad::for_record(&failing, Purpose::Error),
            failing.last_error.as_ref().unwrap(),
        )
        .unwrap();
    assert_eq!(&opened[..], b"smtp timeout");

    // Audited: one `resealed` per part (and the blob), naming the operator;
    // the log verifies.
    auditor.close().await.unwrap();
    let records = s.sink.read_records().await.unwrap();
    let resealed: Vec<(TaskId, Option<String>, String, String)> = records
        .iter()
        .filter_map(|l| match &l.item.as_ref().unwrap().event {
            AuditEvent::Resealed {
                task,
                part,
                from_key_id,
                to_key_id,
                operator,
                ..
            } => {
                assert_eq!(operator, "ops@example.com");
                Some((*task, part.clone(), from_key_id.clone(), to_key_id.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(resealed.len(), 7, "{resealed:?}");
    assert!(records.iter().any(|l| matches!(
        &l.item.as_ref().unwrap().event,
        AuditEvent::SubjectKeysRewrapped { to_key_id, rewrapped: 1, operator }
            if to_key_id == &s.new && operator == "ops@example.com"
    )));
    assert!(resealed.contains(&(
        s.offloaded,
        Some("blob".into()),
        s.old.clone(),
        s.new.clone()
    )));
    assert!(resealed.contains(&(
        s.completed,
        Some("result".into()),
        s.old.clone(),
        s.new.clone()
    )));
    assert!(resealed.contains(&(
        s.retrying,
        Some("error".into()),
        s.old.clone(),
        s.new.clone()
    )));
    let keys = AuditKeys::from_keyring(&s.rotated).unwrap();
    let verified = verify_sink(&*s.sink, &keys, &VerifyOptions::default())
        .await
        .unwrap();
    assert!(verified.faults.is_empty(), "{:?}", verified.faults);

    // A second run finds everything current.
    let again = client
        .reseal(&ResealOptions::default(), "ops@example.com")
        .await
        .unwrap();
    assert_eq!(again.resealed, 0, "{again:?}");
    assert_eq!(again.current, 6, "{again:?}");
    assert_eq!(again.subject_keys.as_ref().unwrap().current, 1, "{again:?}");

    // The old key can go: a worker without it runs the pending tasks, the
    // offloaded one from its re-sealed blob, with their original payloads.
    let mut newest = Keyring::from_toml(&s.rotated.to_toml_secret()).unwrap();
    newest.remove_key(&s.old).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let worker = Worker::builder(s.broker.clone(), Arc::new(newest))
        .queues([("mail", 1)])
        .blob_store(s.store.clone())
        .maintenance_interval(Duration::from_millis(20))
        .handle_raw("mail.send", move |payload, ctx| {
            let seen = seen2.clone();
            async move {
                let v = payload.to_json().unwrap();
                seen.lock()
                    .unwrap()
                    .push((ctx.id(), v["text"].as_str().unwrap().len()));
                Ok(())
            }
        })
        .build()
        .unwrap()
        .spawn();
    for id in [s.pending, s.offloaded, s.subject] {
        let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
        while record(&s.broker, id).await.state != TaskState::Completed {
            assert!(
                tokio::time::Instant::now() < give_up,
                "{id} never completed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let report = worker.shutdown().await.unwrap();
    assert_eq!(report.integrity_failures, 0);
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    let mut want = vec![
        (s.pending, "hello ann".len()),
        (s.offloaded, "a big attachment ".len() * 200),
        (s.subject, "hello bob".len()),
    ];
    want.sort();
    assert_eq!(seen, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_parts_are_reported_and_left_alone_and_bad_options_refused() {
    let s = setup().await;
    let (client, auditor) = operator_client(&s);
    // Flip one ciphertext byte of the pending task's payload.
    let rec = record(&s.broker, s.pending).await;
    let mut bad = rec.envelope.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let swapped = s
        .broker
        .swap_sealed(&[SealedSwap {
            task_id: s.pending,
            queue: "mail".into(),
            part: SealedPart::Payload,
            expected: rec.envelope.clone(),
            replacement: bad.clone(),
        }])
        .await
        .unwrap();
    assert_eq!(swapped, vec![true]);

    // The subject's task, leased, then erased: an archived tombstone whose
    // envelope is wiped. Nothing sealed is left in it to re-seal or report.
    let leased = s
        .broker
        .dequeue(&DequeueRequest {
            queues: vec!["mail".into()],
            max: 3,
            lease: Duration::from_secs(60),
            worker: "w".into(),
        })
        .await
        .unwrap();
    assert_eq!(leased.len(), 3);
    let receipt = client.erase_subject("user-7", "dpo").await.unwrap();
    assert_eq!(receipt.counts.active, 1);
    let tomb = record(&s.broker, s.subject).await;
    assert_eq!(tomb.state, TaskState::Archived);
    assert!(tomb.envelope.is_empty());

    // Only the queue `mail`, only the old key.
    let report = client
        .reseal(
            &ResealOptions {
                queue: Some("mail".into()),
                from_key: Some(s.old.clone()),
                batch: 1,
                dry_run: false,
            },
            "ops",
        )
        .await
        .unwrap();
    assert_eq!(report.scanned, 3, "pages of one task each: {report:?}");
    assert_eq!((report.resealed, report.blobs), (1, 1), "{report:?}");
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].task, s.pending);
    assert_eq!(report.failed[0].part, "payload");
    assert_eq!(report.remaining.get(&s.old), Some(&1), "{report:?}");
    assert_eq!(
        record(&s.broker, s.pending).await.envelope,
        bad,
        "left alone"
    );
    // `done` was not selected: still on the old key.
    assert_eq!(
        key_of(&record(&s.broker, s.completed).await.envelope),
        s.old
    );

    let primary = client
        .reseal(
            &ResealOptions {
                from_key: Some(s.new.clone()),
                ..ResealOptions::default()
            },
            "ops",
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&primary, Error::InvalidArgument { reason, .. } if reason.contains("primary")),
        "{primary}"
    );
    let unknown = client
        .reseal(
            &ResealOptions {
                from_key: Some("k-nope".into()),
                ..ResealOptions::default()
            },
            "ops",
        )
        .await
        .unwrap_err();
    assert!(unknown.to_string().contains("k-nope"), "{unknown}");
    auditor.close().await.unwrap();
}

/// Re-sealing while a worker runs: every task runs exactly once with its
/// payload, none fails to open, and a second pass leaves nothing under the
/// old key (tasks that changed under the first pass are picked up by it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reseal_while_a_worker_runs_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker: Arc<dyn Broker> = Arc::new(SqliteBroker::open(dir.path().join("q.db")).unwrap());
    let first = Keyring::generate();
    let old = first.primary_key_id().to_owned();
    let producer = Client::builder(
        broker.clone(),
        Arc::new(Keyring::from_toml(&first.to_toml_secret()).unwrap()),
    )
    .build();
    let n = 300;
    let mut tasks = Vec::new();
    for i in 0..n {
        tasks.push(raw("job", &format!("payload {i}"), EnqueueOptions::new()));
    }
    let ids: Vec<TaskId> = producer
        .enqueue_batch(tasks)
        .await
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let mut rotated = first;
    rotated.rotate();
    let rotated = Arc::new(rotated);

    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let worker = Worker::builder(broker.clone(), rotated.clone())
        .concurrency(8)
        .maintenance_interval(Duration::from_millis(20))
        .handle_raw("job", move |payload, ctx| {
            let seen = seen2.clone();
            async move {
                let v = payload.to_json().unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
                ctx.set_result(&"done").unwrap();
                seen.lock()
                    .unwrap()
                    .push((ctx.id(), v["text"].as_str().unwrap().to_owned()));
                Ok(())
            }
        })
        .build()
        .unwrap()
        .spawn();
    let ops = Client::builder(broker.clone(), rotated.clone()).build();
    let during = ops
        .reseal(
            &ResealOptions {
                batch: 25,
                ..ResealOptions::default()
            },
            "ops",
        )
        .await
        .unwrap();
    assert!(during.failed.is_empty(), "{during:?}");
    assert!(during.resealed > 0, "{during:?}");

    let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap().len() < n {
        assert!(tokio::time::Instant::now() < give_up, "not all tasks ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let report = worker.shutdown().await.unwrap();
    assert_eq!(report.integrity_failures, 0);
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    got.dedup_by_key(|(id, _)| *id);
    assert_eq!(got.len(), n, "each task ran exactly once");
    for (i, id) in ids.iter().enumerate() {
        let (_, text) = got.iter().find(|(t, _)| t == id).expect("ran");
        assert_eq!(text, &format!("payload {i}"));
    }

    let after = ops.reseal(&ResealOptions::default(), "ops").await.unwrap();
    assert!(after.failed.is_empty(), "{after:?}");
    assert!(after.remaining.is_empty(), "{after:?}");
    for id in &ids {
        let rec = record(&broker, *id).await;
        assert_eq!(rec.state, TaskState::Completed);
        assert_ne!(key_of(&rec.envelope), old);
        assert_ne!(key_of(rec.result.as_ref().unwrap()), old);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_usage_counts_what_the_old_key_seals_until_it_is_resealed() {
    let s = setup().await;
    let (client, auditor) = operator_client(&s);

    // Payloads of pending, offloaded (its blob with it), completed and
    // retrying, the result and the error; user-7's wrapped data key. The
    // subject-sealed payload needs no keyring key.
    let usage = client.key_usage(&s.old).await.unwrap();
    assert_eq!(usage.key_id, s.old);
    assert_eq!(
        (
            usage.parts_still_sealed,
            usage.parts_not_opened,
            usage.subject_keys_wrapped
        ),
        (6, 0, 1),
        "{usage:?}"
    );
    assert_eq!(usage.could_not_check, None);
    assert_eq!(usage.still_sealed(), 7);
    assert!(!usage.is_unused());

    // The primary key and unknown keys are not checked.
    for bad in [s.new.as_str(), "no-such-key"] {
        assert!(
            matches!(
                client.key_usage(bad).await,
                Err(Error::InvalidArgument { what: "key_id", .. })
            ),
            "{bad}"
        );
    }

    client
        .reseal(&ResealOptions::default(), "ops@example.com")
        .await
        .unwrap();
    let usage = client.key_usage(&s.old).await.unwrap();
    assert_eq!(usage.still_sealed(), 0, "{usage:?}");
    assert!(usage.is_unused(), "{usage:?}");

    // The removal is audited through the client's auditor; checking wrote
    // nothing.
    client
        .record_key_removed(&s.old, usage.still_sealed(), "ops@example.com")
        .await
        .unwrap();
    auditor.close().await.unwrap();
    let records = s.sink.read_records().await.unwrap();
    let removed: Vec<_> = records
        .iter()
        .filter_map(|l| match &l.item.as_ref().unwrap().event {
            AuditEvent::KeyRemoved {
                key_id,
                still_sealed,
                operator,
            } => Some((key_id.clone(), *still_sealed, operator.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(removed, vec![(s.old.clone(), 0, "ops@example.com".into())]);
    // Only the real reseal's 7 parts (6 and the blob) are `resealed`.
    let resealed = records
        .iter()
        .filter(|l| matches!(l.item.as_ref().unwrap().event, AuditEvent::Resealed { .. }))
        .count();
    assert_eq!(resealed, 7);
}
