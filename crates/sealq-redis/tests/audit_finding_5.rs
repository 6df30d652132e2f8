//! Finding 5 of the security review on the Redis audit streams (a real
//! redis-server): a writer whose entries are `XDEL`ed from both streams is
//! caught by a later writer's genesis head, an anchor catches deleted
//! streams, and a writer with another keyring is reported as an unknown key.

mod support;

use std::sync::Arc;

use sealq::Keyring;
use sealq::audit::{
    AuditEvent, AuditKeys, AuditSink, Auditor, Fault, VerifyOptions, make_anchor, verify_sink,
};
use sealq_redis::RedisAuditSink;

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

/// `XDEL` every entry of `key` whose `w` field is `writer`.
async fn xdel_writer(conn: &mut redis::aio::MultiplexedConnection, key: &str, writer: &str) {
    let raw: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .unwrap();
    for (id, fields) in raw {
        if fields.iter().any(|(k, v)| k == "w" && v == writer) {
            let n: i64 = redis::cmd("XDEL")
                .arg(key)
                .arg(&id)
                .query_async(conn)
                .await
                .unwrap();
            assert_eq!(n, 1);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_5_removed_writer_emptied_streams_and_unknown_keys_on_redis() {
    let redis = support::shared_broker(sealq::clock::system_clock()).await;
    let sink = Arc::new(RedisAuditSink::open(&redis).await.unwrap());
    let k = Keyring::generate();
    let keys = AuditKeys::from_keyring(&k).unwrap();
    write(&k, sink.clone(), "a", 4).await;
    let other = Keyring::generate();
    write(&other, sink.clone(), "stranger", 3).await;
    write(&k, sink.clone(), "b", 4).await;

    // Another keyring's writer: an unknown key, named, the rest verified.
    let report = verify_sink(&*sink, &keys, &VerifyOptions::default())
        .await
        .unwrap();
    let other_id = AuditKeys::from_keyring(&other)
        .unwrap()
        .mac_key_id()
        .unwrap();
    assert_eq!(
        report.faults,
        vec![Fault::UnknownKey {
            writer: "stranger".into(),
            key_id: Some(other_id),
            records: 4
        }]
    );
    assert_eq!(report.heads_checked, 2);
    let anchor = make_anchor(
        &sink.read_records().await.unwrap(),
        sink.read_checkpoints().await.unwrap().as_deref(),
        &keys,
    )
    .unwrap();

    // Writer a removed from both streams: b's genesis saw its checkpoint.
    let mut conn = redis::Client::open(support::shared().url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    xdel_writer(&mut conn, sink.records_key(), "a").await;
    xdel_writer(&mut conn, sink.checkpoints_key(), "a").await;
    let report = verify_sink(&*sink, &keys, &VerifyOptions::default())
        .await
        .unwrap();
    assert!(
        report
            .faults
            .iter()
            .any(|f| matches!(f, Fault::LogHeadMismatch { writer, seen: 2, .. } if writer == "b")),
        "{:?}",
        report.faults
    );

    // Both streams deleted: caught with the anchor.
    let _: i64 = redis::cmd("DEL")
        .arg(sink.records_key())
        .arg(sink.checkpoints_key())
        .query_async(&mut conn)
        .await
        .unwrap();
    let options = VerifyOptions {
        anchor: Some(anchor),
        ..VerifyOptions::default()
    };
    let report = verify_sink(&*sink, &keys, &options).await.unwrap();
    assert!(
        report.faults.contains(&Fault::AnchorCheckpointsMissing {
            anchored: 3,
            stored: 0
        }),
        "{:?}",
        report.faults
    );
    for w in ["a", "b", "stranger"] {
        assert!(
            report
                .faults
                .iter()
                .any(|f| matches!(f, Fault::AnchorWriterMissing { writer, .. } if writer == w)),
            "{w}: {:?}",
            report.faults
        );
    }
}
