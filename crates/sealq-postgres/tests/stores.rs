//! The subject key store, the audit sink and the blob store on a real
//! Postgres (each test on a database of its own).
//!
//! The subject key cases of the conformance kit need a `Broker` harness;
//! until the Postgres broker hands out this store, the same contract is
//! checked here directly against the trait. The blob cases of the kit take
//! the store alone and run as they are.

mod support;

use std::sync::Arc;

use sealq::Keyring;
use sealq::TaskId;
use sealq::audit::{
    AuditEvent, AuditKeys, AuditSink, Auditor, Fault, LeasedEntry, VerifyOptions, verify_sink,
};
use sealq::blob::BlobStore;
use sealq::subject_keys::SubjectKeyStore;
use sealq::testkit::blob_cases;
use sealq::testkit::fixtures::subject;
use sealq_postgres::{PostgresAuditSink, PostgresBlobStore, PostgresSubjectKeyStore};

/// A superuser connection to `url`, for looking behind the stores' back.
async fn superuser(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect as the superuser");
    tokio::spawn(conn);
    client
}

async fn keys() -> (String, Arc<dyn SubjectKeyStore>) {
    let url = support::fresh_db().await;
    let store = PostgresSubjectKeyStore::connect(&url)
        .await
        .expect("open the subject key store");
    (url, Arc::new(store))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_key_first_writer_wins_also_under_concurrency() {
    let (url, keys) = keys().await;
    let (a, b) = (subject(0xA1), subject(0xB2));
    assert_eq!(keys.get(&a).await.unwrap(), None);
    let first = vec![1u8, 0, 255, 7, 42];
    assert_eq!(keys.put_if_absent(&a, first.clone()).await.unwrap(), first);
    assert_eq!(
        keys.put_if_absent(&a, b"later".to_vec()).await.unwrap(),
        first,
        "a later writer gets the stored key"
    );
    assert_eq!(keys.get(&a).await.unwrap(), Some(first));
    assert_eq!(keys.get(&b).await.unwrap(), None);

    // Writers on separate pools (separate processes, in effect) agree.
    let c = subject(0xC3);
    let mut writers = Vec::new();
    for i in 0..8u8 {
        let url = url.clone();
        writers.push(tokio::spawn(async move {
            let store = PostgresSubjectKeyStore::connect(&url).await.unwrap();
            store.put_if_absent(&c, vec![i; 16]).await.unwrap()
        }));
    }
    let mut got = Vec::new();
    for w in writers {
        got.push(w.await.unwrap());
    }
    let stored = keys.get(&c).await.unwrap().expect("stored");
    assert!(got.iter().all(|k| *k == stored), "disagree: {got:?}");
}

#[tokio::test]
async fn subject_key_batches_answer_in_order_and_keep_existing_keys() {
    let (_url, keys) = keys().await;
    let (a, b, c) = (subject(1), subject(2), subject(3));
    keys.put_if_absent(&b, b"b-old".to_vec()).await.unwrap();
    assert_eq!(
        keys.get_many(&[a, b, c, b]).await.unwrap(),
        vec![None, Some(b"b-old".to_vec()), None, Some(b"b-old".to_vec())]
    );
    assert!(keys.get_many(&[]).await.unwrap().is_empty());
    let stored = keys
        .put_many_if_absent(vec![
            (a, b"a-new".to_vec()),
            (b, b"b-new".to_vec()),
            (c, b"c-new".to_vec()),
            // The same subject twice in one batch: the first wins.
            (a, b"a-again".to_vec()),
        ])
        .await
        .unwrap();
    assert_eq!(
        stored,
        vec![
            b"a-new".to_vec(),
            b"b-old".to_vec(),
            b"c-new".to_vec(),
            b"a-new".to_vec()
        ]
    );
    assert!(keys.put_many_if_absent(vec![]).await.unwrap().is_empty());
    assert_eq!(
        keys.get_many(&[c, a]).await.unwrap(),
        vec![Some(b"c-new".to_vec()), Some(b"a-new".to_vec())]
    );
}

#[tokio::test]
async fn subject_key_destroy_deletes_the_only_row_and_bumps_the_shared_epoch() {
    let (url, keys) = keys().await;
    let (a, b) = (subject(0x11), subject(0x22));
    keys.put_if_absent(&a, b"a-key".to_vec()).await.unwrap();
    keys.put_if_absent(&b, b"b-key".to_vec()).await.unwrap();
    let e0 = keys.epoch().await.unwrap();
    assert_eq!(keys.epoch().await.unwrap(), e0, "reading does not bump");
    assert!(keys.destroy(&a).await.unwrap());
    let e1 = keys.epoch().await.unwrap();
    assert!(e1 > e0, "destroy bumps the epoch ({e0} -> {e1})");
    assert_eq!(keys.get(&a).await.unwrap(), None);
    assert_eq!(keys.get(&b).await.unwrap().as_deref(), Some(&b"b-key"[..]));
    assert!(!keys.destroy(&a).await.unwrap(), "nothing left to destroy");
    let e2 = keys.epoch().await.unwrap();
    assert!(e2 > e1, "every destroy bumps ({e1} -> {e2})");
    // Another handle (another pool) sees the same epoch.
    let other = PostgresSubjectKeyStore::connect(&url).await.unwrap();
    assert_eq!(other.epoch().await.unwrap(), e2);
    // A new key for the erased subject is a new key.
    assert_eq!(
        keys.put_if_absent(&a, b"a-fresh".to_vec()).await.unwrap(),
        b"a-fresh".to_vec()
    );

    // The key lived in one row of its own table and nowhere else in the
    // schema: after destroying both, no live row of any sealq table holds
    // the wrapped bytes.
    assert!(keys.destroy(&a).await.unwrap());
    assert!(keys.destroy(&b).await.unwrap());
    let su = superuser(&url).await;
    let n: i64 = su
        .query_one("SELECT count(*) FROM sealq.subject_keys", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let tables: Vec<String> = su
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'sealq'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for t in tables {
        let hit: bool = su
            .query_one(
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM sealq.{t} x \
                     WHERE strpos(x::text, 'b-key') > 0 OR strpos(x::text, '\\x622d6b6579') > 0)"
                ),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(!hit, "a destroyed key's bytes are still in sealq.{t}");
    }
    // Vacuumed after any change (see the module docs of subject_keys).
    let opts: Vec<String> = su
        .query_one(
            "SELECT reloptions FROM pg_class WHERE oid = 'sealq.subject_keys'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        opts.contains(&"autovacuum_vacuum_threshold=0".to_owned())
            && opts.contains(&"autovacuum_vacuum_scale_factor=0".to_owned()),
        "{opts:?}"
    );
}

#[tokio::test]
async fn subject_key_store_can_live_in_a_database_of_its_own() {
    let tasks = support::fresh_db().await;
    let keys_db = support::fresh_db().await;
    let broker = sealq_postgres::PostgresBroker::connect(&tasks)
        .await
        .unwrap();
    let beside = PostgresSubjectKeyStore::from_broker(&broker);
    let apart = PostgresSubjectKeyStore::connect(&keys_db).await.unwrap();
    let a = subject(0x44);
    apart.put_if_absent(&a, b"apart".to_vec()).await.unwrap();
    assert_eq!(
        beside.get(&a).await.unwrap(),
        None,
        "not in the task database"
    );
    assert_eq!(apart.get(&a).await.unwrap().as_deref(), Some(&b"apart"[..]));
    assert!(!format!("{apart:?}").contains("apart"));
}

// ---------------------------------------------------------------------------
// The audit sink

fn keyring() -> (Keyring, AuditKeys) {
    let k = Keyring::generate();
    let a = AuditKeys::from_keyring(&k).expect("audit keys");
    (k, a)
}

/// Records written by the real auditor: a per-task event for `t1`, a batch
/// event naming `t1` and `t2`, an operator event; then a clean close.
async fn write_log(sink: &PostgresAuditSink, keyring: &Keyring, t1: TaskId, t2: TaskId) {
    let auditor = Auditor::builder(Arc::new(sink.clone()), keyring)
        .writer("worker-1")
        .checkpoint_every(4)
        .start()
        .unwrap();
    for i in 0..10u32 {
        // (Not `Started`: the auditor folds runs of those into one batch.)
        auditor.record(AuditEvent::Failed {
            task: t1,
            worker: "worker-1".into(),
            attempt: i + 1,
            error_len: 3,
        });
    }
    auditor.record(AuditEvent::LeasedBatch {
        worker: "worker-1".into(),
        lease_expires_at_ms: 1_000,
        tasks: vec![
            LeasedEntry {
                task: t1,
                queue: "q".into(),
                attempt: 1,
            },
            LeasedEntry {
                task: t2,
                queue: "q".into(),
                attempt: 1,
            },
        ],
    });
    auditor.record(AuditEvent::QueuePaused {
        queue: "q".into(),
        operator: "op".into(),
    });
    auditor.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_round_trip_verifies_and_finds_a_tasks_records() {
    let url = support::fresh_db().await;
    let sink = PostgresAuditSink::connect(&url).await.unwrap();
    assert!(sink.read_records().await.unwrap().is_empty());
    assert_eq!(
        sink.read_checkpoints().await.unwrap().map(|c| c.len()),
        Some(0)
    );
    let (keyring, keys) = keyring();
    let (t1, t2) = (TaskId::new(), TaskId::new());
    write_log(&sink, &keyring, t1, t2).await;

    let records = sink.read_records().await.unwrap();
    let names: Vec<&str> = records
        .iter()
        .map(|l| l.item.as_ref().expect("every record parses").event.name())
        .collect();
    let count = |n: &str| names.iter().filter(|x| **x == n).count();
    assert_eq!(
        (
            count("failed"),
            count("leased_batch"),
            count("queue_paused")
        ),
        (10, 1, 1),
        "{names:?}"
    );
    let positions: Vec<u64> = records.iter().map(|l| l.position).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    let report = verify_sink(&sink, &keys, &VerifyOptions::default())
        .await
        .unwrap();
    assert!(report.is_ok(), "{:?}", report.faults);
    assert!(sink.read_checkpoints().await.unwrap().unwrap().len() >= 3);

    // Per-task lookup: t1's ten own records plus the batch; t2 only the batch.
    assert_eq!(sink.records_for_task(t1).await.unwrap().len(), 11);
    let t2s = sink.records_for_task(t2).await.unwrap();
    assert_eq!(t2s.len(), 1);
    assert!(matches!(
        t2s[0].item.as_ref().unwrap().event,
        AuditEvent::LeasedBatch { .. }
    ));
    assert!(
        sink.records_for_task(TaskId::new())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(sink.describe().contains("sealq.audit_records"));
}

#[tokio::test]
async fn audit_rows_cannot_be_updated_even_by_the_owner_and_deletions_are_named() {
    let url = support::fresh_db().await;
    let sink = PostgresAuditSink::connect(&url).await.unwrap();
    let (keyring, keys) = keyring();
    write_log(&sink, &keyring, TaskId::new(), TaskId::new()).await;
    let su = superuser(&url).await;
    // Even the superuser cannot edit or truncate (the triggers refuse).
    for sql in [
        "UPDATE sealq.audit_records SET line = 'x' WHERE seq = 3",
        "UPDATE sealq.audit_checkpoints SET line = 'x'",
        "TRUNCATE sealq.audit_records",
        "TRUNCATE sealq.audit_checkpoints",
    ] {
        let e = su.batch_execute(sql).await.expect_err(sql);
        assert!(
            e.as_db_error()
                .is_some_and(|d| d.message().contains("append-only")),
            "{sql}: {e}"
        );
    }
    // A row deleted behind the sink's back is named by verification.
    su.batch_execute("DELETE FROM sealq.audit_records WHERE writer = 'worker-1' AND seq = 5")
        .await
        .unwrap();
    let report = verify_sink(&sink, &keys, &VerifyOptions::default())
        .await
        .unwrap();
    assert!(
        report.faults.iter().any(|f| matches!(
            f,
            Fault::Deleted { writer, from_seq, to_seq, .. }
                if writer == "worker-1" && *from_seq <= 5 && 5 <= *to_seq
        )),
        "{:?}",
        report.faults
    );
    // A dropped checkpoint table is reported, not an error.
    su.batch_execute("DROP TABLE sealq.audit_checkpoints")
        .await
        .unwrap();
    assert!(sink.read_checkpoints().await.unwrap().is_none());
    let report = verify_sink(&sink, &keys, &VerifyOptions::default())
        .await
        .unwrap();
    assert!(
        report
            .faults
            .iter()
            .any(|f| matches!(f, Fault::CheckpointsMissing)),
        "{:?}",
        report.faults
    );
}

#[tokio::test]
async fn audit_prune_deletes_through_the_given_positions() {
    let url = support::fresh_db().await;
    let sink = PostgresAuditSink::connect(&url).await.unwrap();
    let (keyring, _) = keyring();
    write_log(&sink, &keyring, TaskId::new(), TaskId::new()).await;
    let records = sink.read_records().await.unwrap();
    let through = records[4].position;
    let gone = sink.prune(through, 0).await.unwrap();
    assert_eq!(gone, 5);
    let left = sink.read_records().await.unwrap();
    assert_eq!(left.len(), records.len() - 5);
    assert!(left.iter().all(|l| l.position > through));
}

// ---------------------------------------------------------------------------
// The blob store: the kit's cases.

async fn blobs() -> Arc<dyn BlobStore> {
    let url = support::fresh_db().await;
    Arc::new(PostgresBlobStore::connect(&url).await.unwrap())
}

#[tokio::test]
async fn blob_put_get_roundtrip() {
    blob_cases::blob_put_get_roundtrip(blobs().await).await;
}

#[tokio::test]
async fn blob_delete_tasks_counts_blobs() {
    blob_cases::blob_delete_tasks_counts_blobs(blobs().await).await;
}

#[tokio::test]
async fn blob_list_tasks_pages_in_order() {
    blob_cases::blob_list_tasks_pages_in_order(blobs().await).await;
}

#[tokio::test]
async fn blob_put_twice_keeps_one_blob_and_describe_names_no_secret() {
    let url = support::fresh_db().await;
    let with_password = url.replace("postgres@", "postgres:s3cret-pw@");
    let store = PostgresBlobStore::connect(&with_password).await.unwrap();
    let key = sealq::blob::BlobKey {
        task: TaskId::new(),
        digest: [9; 32],
    };
    store.put(&key, b"sealed".to_vec()).await.unwrap();
    store.put(&key, b"sealed".to_vec()).await.unwrap();
    assert_eq!(store.delete_tasks(&[key.task]).await.unwrap(), 1);
    let text = format!("{} {store:?}", store.describe());
    assert!(!text.contains("s3cret-pw"), "{text}");
}

/// Issue 23: the broker's bundle carries its subject-key store (the one in
/// its database) and `stores_with_audit` its audit log, as SQLite's and
/// Redis's do; `Broker::subject_key_store` is the same store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_bundle_the_subject_keys_and_the_audit_log_of_the_database() {
    use sealq::Broker;
    let url = support::fresh_db().await;
    let broker = sealq_postgres::PostgresBroker::connect(&url).await.unwrap();
    let stores = broker.stores_with_audit();
    let keys = stores.subject_keys.clone().expect("a subject-key store");
    assert!(stores.audit.is_some(), "an audit sink");
    let tag = subject(7);
    assert_eq!(
        keys.put_if_absent(&tag, vec![1, 2, 3]).await.unwrap(),
        vec![1, 2, 3]
    );
    // Through the trait method and through a store of its own: the same rows.
    let via_broker = broker
        .subject_key_store()
        .expect("Broker::subject_key_store");
    assert_eq!(via_broker.get(&tag).await.unwrap(), Some(vec![1, 2, 3]));
    let own = PostgresSubjectKeyStore::connect(&url).await.unwrap();
    assert_eq!(own.get(&tag).await.unwrap(), Some(vec![1, 2, 3]));
}
