//! Erasure by crypto-shredding on the embedded broker: real files, real keys.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sealq::broker::Broker;
use sealq::envelope::{Aad, Purpose};
use sealq::subject_keys::{SubjectKeys, is_subject_sealed};
use sealq::{Client, EnqueueOptions, Keyring, Task, TaskContext, TaskId, TaskState, Worker};
use sealq_sqlite::{SqliteBroker, SqliteOptions};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Mail {
    to: String,
}
impl Task for Mail {
    const KIND: &'static str = "mail.send";
}

fn client(broker: &Arc<dyn Broker>, keyring: &Arc<Keyring>) -> Client {
    Client::builder(broker.clone(), keyring.clone())
        .producer("erasure-test")
        .build()
}

async fn wait_state(broker: &Arc<dyn Broker>, id: TaskId, state: TaskState) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rec = broker.get(id).await.unwrap().expect("task exists");
        if rec.state == state {
            return;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "task stuck in {}",
            rec.state
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_shreds_earlier_copies_of_the_subjects_tasks_only() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db");
    let keyring = Arc::new(Keyring::generate());
    let broker: Arc<dyn Broker> = Arc::new(SqliteBroker::open(&db).unwrap());
    let c = client(&broker, &keyring);

    // Tasks of user-42 in several states, and of user-7.
    let pending42 = c
        .enqueue(
            &Mail {
                to: "ann@example.com".into(),
            },
            EnqueueOptions::new().subject("user-42"),
        )
        .await
        .unwrap();
    let scheduled42 = c
        .enqueue(
            &Mail {
                to: "ann@example.com".into(),
            },
            EnqueueOptions::new()
                .subject("user-42")
                .delay(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let other7 = c
        .enqueue(
            &Mail {
                to: "bob@example.com".into(),
            },
            EnqueueOptions::new().subject("user-7"),
        )
        .await
        .unwrap();
    let rec = broker.get(pending42).await.unwrap().unwrap();
    assert!(
        is_subject_sealed(&rec.envelope),
        "subject tasks use the subject's data key"
    );
    assert!(
        keyring
            .open(&Aad::for_record(&rec, Purpose::Payload), &rec.envelope)
            .is_err()
    );

    // A backup of the task store taken before the erasure.
    drop(c);
    let backup = dir.path().join("backup.db");
    // Checkpoint so the copy of the main file is complete, then copy it.
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
    }
    std::fs::copy(&db, &backup).unwrap();

    let c = client(&broker, &keyring);
    let receipt = c.erase_subject("user-42", "dpo@example.com").await.unwrap();
    assert_eq!(receipt.counts.pending, 1);
    assert_eq!(receipt.counts.scheduled, 1);
    assert_eq!(receipt.counts.total(), 2);
    assert!(receipt.key_destroyed);
    assert_eq!(receipt.subject_tag, keyring.subject_tag("user-42").to_hex());
    assert!(!serde_json::to_string(&receipt).unwrap().contains("user-42"));
    assert!(broker.get(pending42).await.unwrap().is_none());
    assert!(broker.get(scheduled42).await.unwrap().is_none());
    assert!(broker.get(other7).await.unwrap().is_some());

    // The backup still holds user-42's ciphertext, but nothing opens it: the
    // attacker has the keyring and the live key store, and still fails.
    let copy = SqliteBroker::open_with(
        &backup,
        SqliteOptions {
            subject_keys: Some(dir.path().join("q.db.subject-keys")),
            ..SqliteOptions::default()
        },
    )
    .unwrap();
    let keys = SubjectKeys::new(copy.subject_key_store().unwrap(), &keyring);
    let old = copy
        .get(pending42)
        .await
        .unwrap()
        .expect("the backup has the task");
    let tag42 = keyring.subject_tag("user-42");
    assert!(
        keys.for_open(&tag42).await.unwrap().is_none(),
        "the key survived erasure"
    );
    assert!(
        keyring
            .open(&Aad::for_record(&old, Purpose::Payload), &old.envelope)
            .is_err()
    );
    // Other subjects' tasks in the same backup still open.
    let seven = copy.get(other7).await.unwrap().unwrap();
    let k7 = keys
        .for_open(&keyring.subject_tag("user-7"))
        .await
        .unwrap()
        .unwrap();
    let opened = k7
        .open(&Aad::for_record(&seven, Purpose::Payload), &seven.envelope)
        .unwrap();
    assert!(String::from_utf8_lossy(&opened).contains("bob@example.com"));

    // Idempotent, and an unknown subject is fine.
    let again = c.erase_subject("user-42", "dpo@example.com").await.unwrap();
    assert_eq!(again.counts.total(), 0);
    assert!(!again.key_destroyed);
    let unknown = c.erase_subject("nobody", "dpo@example.com").await.unwrap();
    assert_eq!(unknown.counts.total(), 0);

    // A later enqueue for the same subject gets a new key and works.
    let fresh = c
        .enqueue(
            &Mail {
                to: "ann@example.com".into(),
            },
            EnqueueOptions::new().subject("user-42"),
        )
        .await
        .unwrap();
    let seen = Arc::new(AtomicU32::new(0));
    let s = seen.clone();
    let worker = Worker::builder(broker.clone(), keyring.clone())
        .maintenance_interval(Duration::from_millis(20))
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
    wait_state(&broker, fresh, TaskState::Completed).await;
    wait_state(&broker, other7, TaskState::Completed).await;
    worker.shutdown().await.unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 2);
    // Results of subject tasks are sealed with the subject key too.
    let done = broker.get(fresh).await.unwrap().unwrap();
    let result = done.result.expect("result stored");
    assert!(is_subject_sealed(&result));
}
