//! The ACL roles of docs/redis-acl.md and erasure: producers create subject
//! keys and append audit records, workers only read the keys, and only the
//! admin can erase (destroy keys).

mod support;

use std::sync::Arc;

use sealq::audit::{AuditEvent, AuditSink, Auditor};
use sealq::broker::Broker;
use sealq::subject_keys::SubjectKeys;
use sealq::{BrokerErrorKind, Client, EnqueueOptions, Keyring, RawTask};
use sealq_redis::{RedisAuditSink, RedisBroker, RedisOptions};
use support::{RedisServer, cli_as};

fn url(s: &RedisServer, user: &str, pw: &str) -> String {
    format!("redis://{user}:{pw}@127.0.0.1:{}", s.port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_create_keys_workers_read_them_admins_erase() {
    let s = RedisServer::start();
    for line in support::acl_lines() {
        let owned = support::acl_args(&line);
        let args: Vec<&str> = owned.iter().map(String::as_str).collect();
        assert!(s.cli(&args).contains("OK"), "{line}");
    }
    let admin =
        RedisBroker::connect_unchecked(&url(&s, "sealq-admin", "apw"), RedisOptions::default())
            .await
            .unwrap();
    admin.install().await.unwrap();
    let producer = RedisBroker::connect(&url(&s, "sealq-producer", "ppw"))
        .await
        .unwrap();
    let worker = RedisBroker::connect(&url(&s, "sealq-worker", "wpw"))
        .await
        .unwrap();
    let keyring = Arc::new(Keyring::generate());

    // Producer: seals a subject task (creating its key) and audits it.
    let sink = Arc::new(RedisAuditSink::open(&producer).await.unwrap());
    let audit = Auditor::start(sink.clone(), &keyring).unwrap();
    let p: Arc<dyn Broker> = Arc::new(producer.clone());
    let client = Client::builder(p, keyring.clone())
        .audit(audit.clone())
        .build();
    client
        .enqueue_raw(
            RawTask::from_json(
                "t",
                &serde_json::json!({"a": 1}),
                EnqueueOptions::new().subject("user-42"),
            )
            .unwrap(),
        )
        .await
        .expect("producer enqueues a subject task");
    audit.close().await.expect("producer appends audit records");
    assert!(
        sink.read_records().await.is_err(),
        "producer read the audit log"
    );
    // It reads the checkpoint stream (its selector), so its genesis names
    // the log's head (finding 5).
    assert!(
        sink.read_checkpoints().await.is_ok(),
        "producer reads checkpoints"
    );
    let tag = keyring.subject_tag("user-42");
    // Producer: cannot destroy the key.
    let e = producer
        .subject_key_store()
        .unwrap()
        .destroy(&tag)
        .await
        .unwrap_err();
    assert_eq!(e.kind, BrokerErrorKind::PermissionDenied, "{e}");

    // Producer: cannot overwrite the key either (which would destroy it as
    // surely as DEL), by any command it holds; creating it again is a no-op.
    let key = format!("sealq-keys:{}", tag.to_hex());
    let before = s.cli(&["GET", &key]);
    assert!(!before.trim().is_empty(), "the key was created: {before:?}");
    for args in [
        vec!["SET", key.as_str(), "forged"],
        vec!["MSETNX", key.as_str(), "forged"],
        vec!["HSET", key.as_str(), "f", "v"],
        vec!["DEL", key.as_str()],
        vec!["INCR", "sealq-keys:epoch"],
        vec!["PERSIST", key.as_str()],
    ] {
        let out = cli_as(&s, "sealq-producer", "ppw", &args);
        assert!(out.contains("NOPERM"), "{args:?} as producer: {out}");
    }
    let out = cli_as(&s, "sealq-producer", "ppw", &["SETNX", &key, "forged"]);
    assert_eq!(out.trim(), "0", "SETNX on an existing key: {out}");
    assert_eq!(
        s.cli(&["GET", &key]),
        before,
        "the producer changed the key"
    );
    let again = producer
        .subject_key_store()
        .unwrap()
        .put_if_absent(&tag, vec![7; 73])
        .await
        .expect("the producer's put_if_absent runs with its ACL");
    assert_ne!(again, vec![7; 73], "put_if_absent replaced a stored key");

    // Worker: reads the key, cannot destroy it.
    let wkeys = SubjectKeys::new(worker.subject_key_store().unwrap(), &keyring);
    assert!(wkeys.for_open(&tag).await.unwrap().is_some());
    let e = worker
        .subject_key_store()
        .unwrap()
        .destroy(&tag)
        .await
        .unwrap_err();
    assert_eq!(e.kind, BrokerErrorKind::PermissionDenied, "{e}");
    let w: Arc<dyn Broker> = Arc::new(worker.clone());
    let wclient = Client::builder(w, keyring.clone()).build();
    assert!(wclient.erase_subject("user-42", "w").await.is_err());

    // Re-wrapping keys after a key rotation is the admin's too: producers
    // and workers can neither list keys nor replace one.
    let wrapped = worker
        .subject_key_store()
        .unwrap()
        .get(&tag)
        .await
        .unwrap()
        .unwrap();
    for (who, b) in [("producer", &producer), ("worker", &worker)] {
        let store = b.subject_key_store().unwrap();
        let e = store.list().await.unwrap_err();
        assert_eq!(
            e.kind,
            BrokerErrorKind::PermissionDenied,
            "{who} listed keys: {e}"
        );
        let e = store
            .replace(&tag, &wrapped, vec![1; 80])
            .await
            .unwrap_err();
        assert_eq!(
            e.kind,
            BrokerErrorKind::PermissionDenied,
            "{who} replaced a key: {e}"
        );
    }
    let mut rotated = Keyring::from_toml(&keyring.to_toml_secret()).unwrap();
    let new_key = rotated.rotate();
    let rotated = Arc::new(rotated);
    let a: Arc<dyn Broker> = Arc::new(admin.clone());
    let report = Client::builder(a.clone(), rotated.clone())
        .build()
        .reseal(&sealq::reseal::ResealOptions::default(), "ops")
        .await
        .expect("the admin re-seals");
    let rewrapped = report.subject_keys.expect("subject keys re-wrapped");
    assert_eq!(
        (rewrapped.rewrapped, rewrapped.to_key.as_str()),
        (1, new_key.as_str())
    );

    // Admin: erases; reads the audit log.
    let asink = Arc::new(RedisAuditSink::open(&admin).await.unwrap());
    let aaudit = Auditor::start(asink.clone(), &keyring).unwrap();
    // Erasing with the keyring of before the re-wrap is refused, changing
    // nothing: it cannot unwrap the subject's key to check its tasks.
    let stale = Client::builder(a.clone(), keyring.clone()).build();
    let e = stale.erase_subject("user-42", "dpo").await.unwrap_err();
    assert!(e.to_string().contains("nothing erased"), "{e}");
    let aclient = Client::builder(a, rotated.clone())
        .audit(aaudit.clone())
        .build();
    let receipt = aclient.erase_subject("user-42", "dpo").await.unwrap();
    assert!(receipt.key_destroyed);
    aaudit.close().await.unwrap();
    let records = asink.read_records().await.unwrap();
    // Every writer's genesis, the producer's included, names a head.
    let geneses: Vec<_> = records
        .iter()
        .filter_map(|l| match l.item.as_ref().map(|r| &r.event) {
            Ok(AuditEvent::WriterStarted {
                checkpoints_seen,
                head_error,
                ..
            }) => Some((*checkpoints_seen, head_error.clone())),
            _ => None,
        })
        .collect();
    assert!(geneses.len() >= 2, "{geneses:?}");
    assert!(
        geneses
            .iter()
            .all(|(seen, err)| seen.is_some() && err.is_none()),
        "{geneses:?}"
    );
    assert!(records.iter().any(|l| matches!(
        l.item.as_ref().map(|r| &r.event),
        Ok(AuditEvent::SubjectErased { .. })
    )));
}
