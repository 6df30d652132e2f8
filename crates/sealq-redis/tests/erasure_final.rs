//! Finding 6 of the security review on Redis ("erasure can be undone"): a
//! real redis-server this test starts; the "backup" is a `DUMP` of every
//! key of the deployment (tasks and subject key store), put back with
//! `RESTORE … REPLACE` after the erasure.
//!
//! - Before `erase --finalize` the restored deployment opens again with the
//!   keyring (the window the docs state); after it, a worker with the
//!   current keyring holds the restored task and never hands its payload
//!   to the handler.
//! - Erasure checks each candidate's envelope with the subject's key and
//!   tag: a task given the tag by an edit of its hash is neither deleted
//!   nor counted; one whose tag was cleared is found by a full scan.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sealq::broker::Broker;
use sealq::subject_keys::SubjectKeys;
use sealq::{
    Client, EnqueueOptions, EraseOptions, Keyring, Task, TaskContext, TaskId, TaskState, Worker,
};
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

fn copy_of(k: &Keyring) -> Keyring {
    Keyring::from_toml(&k.to_toml_secret()).unwrap()
}

async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(support::shared().url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Every key of the deployment under `prefix`: tasks and subject keys.
async fn keys_of(conn: &mut redis::aio::MultiplexedConnection, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for pattern in [format!("{prefix}:*"), format!("{prefix}-keys:*")] {
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(conn)
                .await
                .unwrap();
            out.extend(keys);
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    out
}

/// A backup: `DUMP` of every key of the deployment.
async fn backup(prefix: &str) -> Vec<(String, Vec<u8>)> {
    let mut conn = raw().await;
    let mut out = Vec::new();
    for k in keys_of(&mut conn, prefix).await {
        let v: Vec<u8> = redis::cmd("DUMP")
            .arg(&k)
            .query_async(&mut conn)
            .await
            .unwrap();
        out.push((k, v));
    }
    assert!(out.len() > 4, "nothing to back up under {prefix}");
    out
}

/// Put the backup back in place of whatever is there now.
async fn restore(prefix: &str, dump: &[(String, Vec<u8>)]) {
    let mut conn = raw().await;
    for k in keys_of(&mut conn, prefix).await {
        let _: () = redis::cmd("DEL")
            .arg(&k)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    for (k, v) in dump {
        let _: () = redis::cmd("RESTORE")
            .arg(k)
            .arg(0)
            .arg(v.as_slice())
            .arg("REPLACE")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

/// Run a worker with `keyring` on a fresh broker of `prefix` until `id` was
/// leased and given back (or ran); how often the handler got mail to `to`.
async fn run_worker(prefix: &str, keyring: &Arc<Keyring>, id: TaskId, to: &str) -> u32 {
    let broker: Arc<dyn Broker> = Arc::new(support::shared_broker_with_prefix(prefix).await);
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

/// `HSET` one field of a task's hash (an edit by someone who can write Redis).
async fn edit(prefix: &str, id: TaskId, field: &str, value: Option<&str>) {
    let mut conn = raw().await;
    let key = format!("{prefix}:{{default}}:t:{}", id.0.simple());
    let n: i64 = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 1, "{key}");
    let c = match value {
        Some(v) => {
            let mut c = redis::cmd("HSET");
            c.arg(&key).arg(field).arg(v);
            c
        }
        None => {
            let mut c = redis::cmd("HDEL");
            c.arg(&key).arg(field);
            c
        }
    };
    let _: i64 = c.query_async(&mut conn).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_6_restored_broker_and_key_store_copies_do_not_reopen_after_finalise() {
    let redis = support::shared_broker(sealq::clock::system_clock()).await;
    let prefix = redis.prefix().to_owned();
    let broker: Arc<dyn Broker> = Arc::new(redis);
    let mut keyring = Keyring::generate();
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
    let before = backup(&prefix).await;

    let receipt = c.erase_subject("user-42", "dpo").await.unwrap();
    assert_eq!((receipt.counts.total(), receipt.key_destroyed), (1, true));
    let after_erase = backup(&prefix).await;

    // The window: not finalised, the backup restored, the keyring of the
    // day opens the subject's payload again.
    restore(&prefix, &before).await;
    assert_eq!(
        run_worker(&prefix, &k, s42, "ann@example.com").await,
        1,
        "the test's restore must work"
    );

    // Back to the live state, then finalise.
    restore(&prefix, &after_erase).await;
    keyring.add_kek_epoch();
    let with_new = Arc::new(copy_of(&keyring));
    let report = client(&broker, &with_new)
        .rewrap_subject_keys_for_finalise()
        .await
        .unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.rewrapped, 1, "user-7's key");
    keyring.retire_kek_epochs().unwrap();
    let current = Arc::new(copy_of(&keyring));
    let live = backup(&prefix).await;

    restore(&prefix, &before).await;
    assert_eq!(
        run_worker(&prefix, &current, s42, "ann@example.com").await,
        0,
        "the erased subject's payload reached the handler"
    );
    let copy = support::shared_broker_with_prefix(&prefix).await;
    let rec = copy.get(s42).await.unwrap().unwrap();
    assert_eq!(rec.state, TaskState::Retry, "held, not archived: {rec:?}");
    let keys = SubjectKeys::new(copy.subject_key_store().unwrap(), &current);
    match keys.key_for_record(&rec).await {
        Err(sealq::Error::Integrity(sealq::IntegrityError::UnknownKey(kek))) => {
            assert!(kek.contains("subject-kek-v2"), "{kek}");
        }
        other => panic!("the restored key opened or failed otherwise: {other:?}"),
    }

    // The live deployment is unharmed: user-7 runs with the current keyring.
    restore(&prefix, &live).await;
    assert_eq!(
        run_worker(&prefix, &current, s7, "bob@example.com").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_6_a_forged_tag_is_not_erased_nor_counted() {
    let redis = support::shared_broker(sealq::clock::system_clock()).await;
    let prefix = redis.prefix().to_owned();
    let broker: Arc<dyn Broker> = Arc::new(redis);
    let keyring = Arc::new(Keyring::generate());
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
    let tag42 = keyring.subject_tag("user-42").to_hex();
    edit(&prefix, other, "sub", Some(&tag42)).await;
    edit(&prefix, plain, "sub", Some(&tag42)).await;

    let receipt = c.erase_subject("user-42", "dpo").await.unwrap();
    assert_eq!(receipt.counts.total(), 1, "{receipt:?}");
    let mut named = receipt.tag_mismatch.clone();
    named.sort();
    let mut want = vec![other.to_string(), plain.to_string()];
    want.sort();
    assert_eq!(named, want);
    assert!(broker.get(own).await.unwrap().is_none());
    assert!(
        broker.get(other).await.unwrap().is_some(),
        "a forged tag deleted user-7's task"
    );
    assert!(broker.get(plain).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_6_a_task_whose_tag_was_cleared_is_found_by_a_full_scan() {
    let redis = support::shared_broker(sealq::clock::system_clock()).await;
    let prefix = redis.prefix().to_owned();
    let broker: Arc<dyn Broker> = Arc::new(redis);
    let keyring = Arc::new(Keyring::generate());
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
    edit(&prefix, cleared, "sub", None).await;
    let tag7 = keyring.subject_tag("user-7").to_hex();
    edit(&prefix, moved, "sub", Some(&tag7)).await;

    let receipt = c
        .erase_subject_with("user-43", "dpo", EraseOptions::full_scan())
        .await
        .unwrap();
    assert_eq!(receipt.untagged_found, 2, "{receipt:?}");
    assert_eq!(receipt.counts.total(), 3);
    for id in [cleared, moved, tagged] {
        assert!(broker.get(id).await.unwrap().is_none(), "{id} survived");
    }
    assert!(broker.get(seven).await.unwrap().is_some());

    // Without the scan a cleared tag hides the task (what the docs say).
    let hidden = c
        .enqueue(&mail("c@example.com"), s("user-44"))
        .await
        .unwrap();
    edit(&prefix, hidden, "sub", None).await;
    let receipt = c.erase_subject("user-44", "dpo").await.unwrap();
    assert_eq!((receipt.counts.total(), receipt.key_destroyed), (0, true));
    assert!(broker.get(hidden).await.unwrap().is_some());
}
