//! Finding 5 of the security review on the SQLite audit tables: a writer
//! whose rows are deleted from both tables is caught by a later writer's
//! genesis head, and an anchor catches emptied tables.

use std::sync::Arc;

use sealq::Keyring;
use sealq::audit::{
    AuditEvent, AuditKeys, AuditSink, Auditor, Fault, VerifyOptions, make_anchor, verify_sink,
};
use sealq_sqlite::{SqliteAuditSink, SqliteBroker};

async fn write(k: &Keyring, sink: Arc<dyn AuditSink>, writer: &str, n: u32) {
    let a = Auditor::builder(sink, k).writer(writer).start().unwrap();
    for i in 0..n {
        a.record(AuditEvent::Requeued {
            task: sealq::TaskId::new(),
            worker: "w".into(),
            attempt: i,
        });
    }
    a.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_5_removed_writer_and_emptied_tables_are_detected_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db");
    drop(SqliteBroker::open(&db).unwrap());
    let sink = Arc::new(SqliteAuditSink::open(&db).unwrap());
    let k = Keyring::generate();
    let keys = AuditKeys::from_keyring(&k).unwrap();
    write(&k, sink.clone(), "a", 4).await;
    write(&k, sink.clone(), "b", 4).await;
    let report = verify_sink(&*sink, &keys, &VerifyOptions::default())
        .await
        .unwrap();
    assert!(report.is_ok(), "{:?}", report.faults);
    assert_eq!(report.heads_checked, 2);
    let anchor = make_anchor(
        &sink.read_records().await.unwrap(),
        sink.read_checkpoints().await.unwrap().as_deref(),
        &keys,
    )
    .unwrap();

    // Every row of writer a, in both tables.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "DELETE FROM audit_records WHERE writer = 'a'; \
         DELETE FROM audit_checkpoints WHERE writer = 'a';",
    )
    .unwrap();
    let report = verify_sink(&*sink, &keys, &VerifyOptions::default())
        .await
        .unwrap();
    assert!(
        matches!(report.faults.as_slice(), [Fault::LogHeadMismatch { writer, .. }] if writer == "b"),
        "{:?}",
        report.faults
    );

    // Both tables emptied: a valid empty log, unless checked against the anchor.
    conn.execute_batch("DELETE FROM audit_records; DELETE FROM audit_checkpoints;")
        .unwrap();
    let report = verify_sink(&*sink, &keys, &VerifyOptions::default())
        .await
        .unwrap();
    assert!(report.is_ok(), "{:?}", report.faults);
    let options = VerifyOptions {
        anchor: Some(anchor),
        ..VerifyOptions::default()
    };
    let report = verify_sink(&*sink, &keys, &options).await.unwrap();
    assert!(
        report.faults.contains(&Fault::AnchorCheckpointsMissing {
            anchored: 2,
            stored: 0
        }),
        "{:?}",
        report.faults
    );
    assert!(
        report
            .faults
            .iter()
            .any(|f| matches!(f, Fault::AnchorWriterMissing { writer, .. } if writer == "a")),
        "{:?}",
        report.faults
    );
}
