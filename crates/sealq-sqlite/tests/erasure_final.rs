//! Finding 6 of the security review on the embedded broker ("erasure can be
//! undone"): real database and key store files, copied before an erasure
//! and put back after it, and real keyrings.
//!
//! - Before `erase --finalize`, copies of the task store and the subject key
//!   store restored together open again with the keyring (the window the
//!   docs state); after it, a worker with the current keyring holds the
//!   restored task and never hands its payload to the handler.
//! - Erasure checks each candidate's envelope with the subject's key and
//!   tag: a task given the tag by an edit of the database is neither
//!   deleted nor counted; one whose tag was cleared is found by a full scan.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sealq::broker::Broker;
use sealq::subject_keys::SubjectKeys;
use sealq::{
    Client, EnqueueOptions, EraseOptions, Keyring, Task, TaskContext, TaskId, TaskState, Worker,
};
use sealq_sqlite::SqliteBroker;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Mail {
    to: String,
}
impl Task for Mail {
    const KIND: &'static str = "mail.send";
}

fn mail(to: &str) -> Mail {
    Mail { to: to.into() }
}

fn client(broker: &Arc<dyn Broker>, keyring: &Arc<Keyring>) -> Client {
    Client::builder(broker.clone(), keyring.clone())
        .producer("finding-6")
        .build()
}

/// The key store file beside a database (the broker's default).
fn keys_file(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".subject-keys");
    PathBuf::from(p)
}

/// Copy the database and its key store to `to` (and `to`'s key store path),
/// complete: the write-ahead logs are checkpointed into the main files first.
fn copy_stores(db: &Path, to: &Path) {
    for (from, into) in [
        (db.to_path_buf(), to.to_path_buf()),
        (keys_file(db), keys_file(to)),
    ] {
        let conn = rusqlite::Connection::open(&from).unwrap();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        drop(conn);
        std::fs::copy(&from, &into).unwrap();
    }
}

/// A keyring's copy (keyrings are not `Clone`: through its TOML).
fn copy_of(k: &Keyring) -> Keyring {
    Keyring::from_toml(&k.to_toml_secret()).unwrap()
}

/// Run a worker with `keyring` on `broker` until `id` has been leased and
/// given back at least once (or ran); returns how often the handler got
/// the payload addressed to `to`.
async fn run_worker(broker: &Arc<dyn Broker>, keyring: &Arc<Keyring>, id: TaskId, to: &str) -> u32 {
    let ran = Arc::new(AtomicU32::new(0));
    let (r, to) = (ran.clone(), to.to_owned());
    let worker = Worker::builder(broker.clone(), keyring.clone())
        .maintenance_interval(Duration::from_millis(20))
        .handle(move |m: Mail, _ctx: TaskContext| {
            let r = r.clone();
            let hit = m.to == to;
            async move {
                if hit {
                    r.fetch_add(1, Ordering::SeqCst);
                }
                Ok(())
            }
        })
        .build()
        .unwrap()
        .spawn();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rec = broker.get(id).await.unwrap().expect("task exists");
        if rec.attempts >= 1 && rec.state != TaskState::Active {
            break;
        }
        assert!(tokio::time::Instant::now() < give_up, "task never leased");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker.shutdown().await.unwrap();
    ran.load(Ordering::SeqCst)
}

/// What finalising does (the CLI writes the keyring file between steps).
async fn finalise(broker: &Arc<dyn Broker>, keyring: &mut Keyring) {
    keyring.add_kek_epoch();
    let with_new = Arc::new(copy_of(keyring));
    let report = client(broker, &with_new)
        .rewrap_subject_keys_for_finalise()
        .await
        .unwrap();
    assert!(report.is_complete(), "{report:?}");
    keyring.retire_kek_epochs().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_6_restored_broker_and_key_store_copies_do_not_reopen_after_finalise() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db");
    let mut keyring = Keyring::generate();
    let broker: Arc<dyn Broker> = Arc::new(SqliteBroker::open(&db).unwrap());
    let k = Arc::new(copy_of(&keyring));
    let c = client(&broker, &k);
    let s42 = c
        .enqueue(
            &mail("ann@example.com"),
            EnqueueOptions::new().subject("user-42"),
        )
        .await
        .unwrap();
    let s7 = c
        .enqueue(
            &mail("bob@example.com"),
            EnqueueOptions::new().subject("user-7"),
        )
        .await
        .unwrap();
    // The copies an attacker (or a careless restore) keeps.
    let before = dir.path().join("before.db");
    copy_stores(&db, &before);

    let receipt = c.erase_subject("user-42", "dpo").await.unwrap();
    assert_eq!((receipt.counts.total(), receipt.key_destroyed), (1, true));

    // The window: not finalised yet, both copies restored, the keyring of
    // the day opens the subject's payload again.
    let restored = dir.path().join("restored-1.db");
    copy_stores(&before, &restored);
    let copy: Arc<dyn Broker> = Arc::new(SqliteBroker::open(&restored).unwrap());
    assert_eq!(
        run_worker(&copy, &k, s42, "ann@example.com").await,
        1,
        "the test's restore must work"
    );
    drop(copy);

    // Finalise: new KEK epoch, every live key re-wrapped, old epochs gone.
    finalise(&broker, &mut keyring).await;
    let current = Arc::new(copy_of(&keyring));
    assert_eq!(current.kek_epoch_ids().len(), 1);
    assert!(!current.kek_opens_legacy());

    // Restore both copies again: the current keyring opens nothing of them.
    let restored = dir.path().join("restored-2.db");
    copy_stores(&before, &restored);
    let copy: Arc<dyn Broker> = Arc::new(SqliteBroker::open(&restored).unwrap());
    assert_eq!(
        run_worker(&copy, &current, s42, "ann@example.com").await,
        0,
        "the erased subject's payload reached the handler"
    );
    // Held, not archived: the worker does not destroy what it cannot open.
    let rec = copy.get(s42).await.unwrap().unwrap();
    assert_eq!(rec.state, TaskState::Retry, "{rec:?}");
    assert!(!rec.envelope.is_empty());
    // Nothing else opens it either: the restored wrapped key names a KEK
    // the current keyring no longer holds.
    let keys = SubjectKeys::new(copy.subject_key_store().unwrap(), &current);
    match keys.key_for_record(&rec).await {
        Err(sealq::Error::Integrity(sealq::IntegrityError::UnknownKey(kek))) => {
            assert!(kek.contains("subject-kek-v2"), "{kek}");
        }
        other => panic!("the restored key opened or failed otherwise: {other:?}"),
    }

    // The live store is unharmed: user-7 runs with the current keyring.
    assert_eq!(
        run_worker(&broker, &current, s7, "bob@example.com").await,
        1
    );
    let rec = broker.get(s7).await.unwrap().unwrap();
    assert_eq!(rec.state, TaskState::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_6_a_forged_tag_is_not_erased_nor_counted() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db");
    let keyring = Arc::new(Keyring::generate());
    let broker: Arc<dyn Broker> = Arc::new(SqliteBroker::open(&db).unwrap());
    let c = client(&broker, &keyring);
    let own = c
        .enqueue(
            &mail("ann@example.com"),
            EnqueueOptions::new().subject("user-42"),
        )
        .await
        .unwrap();
    let other = c
        .enqueue(
            &mail("bob@example.com"),
            EnqueueOptions::new().subject("user-7"),
        )
        .await
        .unwrap();
    let plain = c
        .enqueue(&mail("carol@example.com"), EnqueueOptions::new())
        .await
        .unwrap();
    // Someone who can write the database gives both user-42's tag.
    let tag42 = keyring.subject_tag("user-42");
    let conn = rusqlite::Connection::open(&db).unwrap();
    for id in [other, plain] {
        let n = conn
            .execute(
                "UPDATE tasks SET subject_tag = ?1 WHERE id = ?2",
                rusqlite::params![&tag42.0[..], id.as_bytes()],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
    drop(conn);

    let receipt = c.erase_subject("user-42", "dpo").await.unwrap();
    assert_eq!(receipt.counts.total(), 1, "{receipt:?}");
    assert_eq!(receipt.counts.pending, 1);
    let mut named = receipt.tag_mismatch.clone();
    named.sort();
    let mut want = vec![other.to_string(), plain.to_string()];
    want.sort();
    assert_eq!(named, want);
    assert!(receipt.unverified.is_empty());
    assert!(broker.get(own).await.unwrap().is_none());
    assert!(
        broker.get(other).await.unwrap().is_some(),
        "a forged tag deleted user-7's task"
    );
    assert!(broker.get(plain).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_6_a_task_whose_tag_was_cleared_is_found_by_a_full_scan() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db");
    let keyring = Arc::new(Keyring::generate());
    let broker: Arc<dyn Broker> = Arc::new(SqliteBroker::open(&db).unwrap());
    let c = client(&broker, &keyring);
    let s = |who: &str| EnqueueOptions::new().subject(who);
    let cleared = c
        .enqueue(&mail("a@example.com"), s("user-43"))
        .await
        .unwrap();
    let moved = c
        .enqueue(&mail("a@example.com"), s("user-43"))
        .await
        .unwrap();
    let tagged = c
        .enqueue(&mail("a@example.com"), s("user-43"))
        .await
        .unwrap();
    let seven = c
        .enqueue(&mail("b@example.com"), s("user-7"))
        .await
        .unwrap();
    let tag7 = keyring.subject_tag("user-7");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE tasks SET subject_tag = NULL WHERE id = ?1",
        [cleared.as_bytes()],
    )
    .unwrap();
    conn.execute(
        "UPDATE tasks SET subject_tag = ?1 WHERE id = ?2",
        rusqlite::params![&tag7.0[..], moved.as_bytes()],
    )
    .unwrap();
    drop(conn);

    let receipt = c
        .erase_subject_with("user-43", "dpo", EraseOptions::full_scan())
        .await
        .unwrap();
    assert!(receipt.full_scan);
    assert_eq!(receipt.untagged_found, 2, "{receipt:?}");
    assert_eq!(receipt.counts.total(), 3);
    for id in [cleared, moved, tagged] {
        assert!(broker.get(id).await.unwrap().is_none(), "{id} survived");
    }
    assert!(broker.get(seven).await.unwrap().is_some());

    // Without the scan, a cleared tag hides the task from erasure (what
    // the docs say): it survives as ciphertext under the destroyed key.
    let hidden = c
        .enqueue(&mail("c@example.com"), s("user-44"))
        .await
        .unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE tasks SET subject_tag = NULL WHERE id = ?1",
        [hidden.as_bytes()],
    )
    .unwrap();
    drop(conn);
    let receipt = c.erase_subject("user-44", "dpo").await.unwrap();
    assert_eq!((receipt.counts.total(), receipt.full_scan), (0, false));
    assert!(receipt.key_destroyed);
    let left = broker
        .get(hidden)
        .await
        .unwrap()
        .expect("survives without the scan");
    assert!(sealq::subject_keys::is_subject_sealed(&left.envelope));
}

/// Finalising never drops an epoch that still wraps a key it could not
/// move: a key wrapped under a KEK the keyring lacks (here another
/// keyring's) makes the re-wrap report incomplete, naming what is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_6_finalise_reports_keys_it_cannot_rewrap() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db");
    let broker: Arc<dyn Broker> = Arc::new(SqliteBroker::open(&db).unwrap());
    let foreign = Arc::new(Keyring::generate());
    client(&broker, &foreign)
        .enqueue(
            &mail("x@example.com"),
            EnqueueOptions::new().subject("user-9"),
        )
        .await
        .unwrap();
    let mut keyring = Keyring::generate();
    // A second keyring on one broker: its recorded check values refuse it
    // unless accepted (finding 7).
    Client::builder(broker.clone(), Arc::new(copy_of(&keyring)))
        .producer("finding-6")
        .accept_new_keyring(true)
        .build()
        .enqueue(
            &mail("y@example.com"),
            EnqueueOptions::new().subject("user-8"),
        )
        .await
        .unwrap();
    keyring.add_kek_epoch();
    let report = client(&broker, &Arc::new(copy_of(&keyring)))
        .rewrap_subject_keys_for_finalise()
        .await
        .unwrap();
    assert!(!report.is_complete(), "{report:?}");
    assert_eq!(
        (report.rewrapped, report.failed.len()),
        (1, 1),
        "{report:?}"
    );
    assert_eq!(report.remaining.values().sum::<u64>(), 1);
}
