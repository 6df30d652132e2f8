//! `sealq_connect` on the embedded broker: a URL becomes whole stores, the
//! audit log lands where its place says, and a client and a worker built
//! from the stores run a subject-sealed task end to end.

use std::sync::Arc;
use std::time::Duration;

use sealq::audit::Auditor;
use sealq::{Client, EnqueueOptions, Keyring, TaskContext, TaskState, Worker};
use sealq_connect::{AuditPlace, ConnectOptions, Scheme, connect, jsonl_path_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_url_gives_the_broker_and_its_subject_key_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db");
    let url = format!("sqlite://{}", db.display());
    let conn = connect(&url, &ConnectOptions::default()).await.unwrap();
    assert_eq!(conn.sqlite_path(), Some(db.as_path()));
    assert!(conn.redis().is_none());
    let stores = conn.stores();
    assert!(
        stores.subject_keys.is_some(),
        "the SQLite backend keeps subject keys"
    );
    assert!(
        stores.audit.is_none(),
        "no audit sink until one is asked for"
    );
    assert!(
        stores.describe().starts_with("sqlite://"),
        "{}",
        stores.describe()
    );

    // The default place of an SQLite log is the JSON-lines file beside it.
    let keyring = Arc::new(Keyring::generate());
    let auditor = Auditor::start(
        conn.audit_sink(AuditPlace::Default).await.unwrap(),
        &keyring,
    )
    .unwrap();
    let client = Client::from_stores(stores, keyring.clone())
        .audit(auditor.clone())
        .build();
    let id = client
        .enqueue_raw(
            sealq::RawTask::from_json(
                "t",
                &serde_json::json!({"n": 1}),
                EnqueueOptions::new().subject("user-1"),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    auditor.close().await.unwrap();
    assert!(
        jsonl_path_for(&db).is_file(),
        "the audit log is beside the database"
    );
    let reader = conn.audit_reader(AuditPlace::File).unwrap();
    assert!(!reader.read_records().await.unwrap().is_empty());

    // A worker from the same stores opens the subject-sealed task.
    let worker = Worker::from_stores(stores, keyring)
        .handle_any(|_payload, _ctx: TaskContext| async { Ok(()) })
        .shutdown_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let handle = worker.spawn();
    let broker = conn.broker();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let state = broker.get(id).await.unwrap().map(|r| r.state);
        if state == Some(TaskState::Completed) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "task never completed: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_places_the_backend_lacks_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("q.db").display());
    let conn = connect(&url, &ConnectOptions::default()).await.unwrap();
    let e = conn.audit_sink(AuditPlace::Redis).await.unwrap_err();
    assert!(e.is_usage());
    assert!(e.to_string().contains("needs a Redis broker"), "{e}");
    // The in-database place works and is read back by the reader.
    let sink = conn.audit_sink(AuditPlace::Sqlite).await.unwrap();
    assert!(sink.describe().contains("q.db"), "{}", sink.describe());
    let with = conn.stores_with_audit(AuditPlace::Sqlite).await.unwrap();
    assert!(with.audit.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_is_not_a_usage_error_and_hides_the_password() {
    let e = connect(
        "redis://u:hunter2@127.0.0.1:1/0",
        &ConnectOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(!e.is_usage(), "{e}");
    let text = format!("{e} {:?}", e);
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("redis://u:***@127.0.0.1:1/0"), "{text}");
}

#[test]
fn the_scheme_decides_the_backend_without_opening_anything() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("never.db");
    let url = format!("sqlite://{}", db.display());
    assert_eq!(
        Scheme::parse(&url).unwrap(),
        Scheme::Sqlite { path: db.clone() }
    );
    assert!(!db.exists(), "parsing a URL creates no store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_only_refuses_a_missing_sqlite_file_and_creates_none() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("missing.db");
    let url = format!("sqlite://{}", db.display());
    let options = ConnectOptions {
        existing_only: true,
        ..ConnectOptions::default()
    };
    let e = connect(&url, &options).await.unwrap_err();
    assert!(
        matches!(&e, sealq_connect::ConnectError::Missing { path } if path == &db),
        "{e:?}"
    );
    assert!(e.is_usage());
    assert!(e.to_string().contains("missing.db"), "{e}");
    assert!(!db.exists(), "an existing-only open created the file");
    // Once the file exists (a writer made it), the same open succeeds.
    connect(&url, &ConnectOptions::default()).await.unwrap();
    let conn = connect(&url, &options).await.unwrap();
    assert_eq!(conn.sqlite_path(), Some(db.as_path()));
}
