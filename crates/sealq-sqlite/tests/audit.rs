//! The audit log in an SQLite database, edited behind the verifier's back.
//! The run itself is the shared scenario ([`sealq::testkit::scenarios::audit`],
//! run by `tests/scenarios.rs`); here it is followed by SQLite-only checks:
//! the indexed per-task lookup, and rows edited or deleted with SQL.

use std::sync::Arc;

use sealq::audit::{AuditEvent, Fault, VerifyOptions, verify_sink};
use sealq::testkit::Harness;
use sealq::testkit::scenarios::{audit::real_run, scene};
use sealq_sqlite::{SqliteAuditSink, SqliteBroker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_run_then_edited_and_deleted_rows_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db");
    let sink = Arc::new(SqliteAuditSink::open(&db).unwrap());
    let harness = Harness::new(SqliteBroker::open(&db).unwrap()).with_audit_sink(sink.clone());
    let run = real_run(&scene(&harness)).await;
    let keys = run.keys;

    // The indexed lookup agrees with the shared scenario's history.
    let names = |events: Vec<AuditEvent>| events.iter().map(|e| e.name()).collect::<Vec<_>>();
    let history = |id| {
        let sink = sink.clone();
        async move {
            let mut rs: Vec<_> = sink
                .records_for_task(id)
                .await
                .unwrap()
                .into_iter()
                .map(|l| l.item.unwrap())
                .collect();
            rs.sort_by_key(|r| r.event.time_for_task(id).unwrap_or(r.time_ms));
            // A batch record stands for its entry about this task.
            rs.into_iter()
                .map(|r| r.event.for_task(id).expect("a record about the task"))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        names(history(run.ok).await),
        ["enqueued", "leased", "started", "succeeded"]
    );
    assert_eq!(
        names(history(run.failing).await),
        ["enqueued", "leased", "started", "failed", "archived"]
    );

    // Editing one stored row is named by its row id.
    let conn = rusqlite::Connection::open(&db).unwrap();
    // Which row holds an `"attempt":1` depends on how the writers interleaved.
    let target: i64 = conn
        .query_row(
            "SELECT min(pos) FROM audit_records WHERE line LIKE '%\"attempt\":1%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    conn.execute(
        "UPDATE audit_records SET line = replace(line, '\"attempt\":1', '\"attempt\":2') WHERE pos = ?1",
        [target],
    )
    .unwrap();
    let report = verify_sink(&*sink, &keys, &VerifyOptions::default())
        .await
        .unwrap();
    assert!(
        matches!(
            report.faults.as_slice(),
            [Fault::Edited { position, .. }] if *position as i64 == target
        ),
        "{:?}",
        report.faults
    );
    // Deleting the last rows of the worker is caught by its final checkpoint.
    conn.execute(
        "DELETE FROM audit_records WHERE pos IN (SELECT pos FROM audit_records WHERE writer = 'worker-1' ORDER BY pos DESC LIMIT 3)",
        [],
    )
    .unwrap();
    let report = verify_sink(&*sink, &keys, &VerifyOptions::default())
        .await
        .unwrap();
    assert!(
        report
            .faults
            .iter()
            .any(|f| matches!(f, Fault::Truncated { writer, .. } if writer == "worker-1")),
        "{:?}",
        report.faults
    );
}
