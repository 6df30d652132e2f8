//! Erasure by crypto-shredding on the Redis broker: a real redis-server this
//! test starts, real keyrings, real sealing, and `DUMP`/`RESTORE` copies of
//! task hashes taken before the erasure as the "backup".

mod support;

use std::sync::Arc;
use std::time::Duration;

use sealq::broker::{Ack, AckResult, Broker, DequeueRequest, ListQuery, Outcome};
use sealq::envelope::{Aad, Purpose};
use sealq::subject_keys::{SubjectKeys, is_subject_sealed};
use sealq::{
    ArchiveReason, Client, EnqueueOptions, Keyring, Task, TaskContext, TaskId, TaskState, Worker,
};
use sealq_redis::{RedisBroker, RedisOptions};
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

/// The two keys of one stored task: its state hash and its stored bytes
/// (kind, metadata, envelope).
fn task_keys(prefix: &str, queue: &str, id: &TaskId) -> [String; 2] {
    [
        format!("{prefix}:{{{queue}}}:t:{}", id.0.simple()),
        format!("{prefix}:{{{queue}}}:b:{}", id.0.simple()),
    ]
}

/// A raw Redis connection to the shared test server.
async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(support::shared().url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_removes_every_state_and_shreds_earlier_copies_of_the_subject_only() {
    let redis = support::shared_broker(sealq::clock::system_clock()).await;
    let prefix = redis.prefix().to_owned();
    let broker: Arc<dyn Broker> = Arc::new(redis.clone());
    let keyring = Arc::new(Keyring::generate());
    let c = client(&broker, &keyring);
    let s42 = || EnqueueOptions::new().subject("user-42");

    // user-42 in every state but active, over two queues; user-7 beside them.
    let pending = c.enqueue(&mail("ann@example.com"), s42()).await.unwrap();
    let scheduled = c
        .enqueue(
            &mail("ann@example.com"),
            s42().delay(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let unique = c
        .enqueue(
            &mail("ann@example.com"),
            s42()
                .queue("other")
                .unique("ann", Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let to_complete = c
        .enqueue(&mail("ann@example.com"), s42().queue("work"))
        .await
        .unwrap();
    let to_retry = c
        .enqueue(&mail("ann@example.com"), s42().queue("work"))
        .await
        .unwrap();
    let to_archive = c
        .enqueue(&mail("ann@example.com"), s42().queue("work"))
        .await
        .unwrap();
    let other7 = c
        .enqueue(
            &mail("bob@example.com"),
            EnqueueOptions::new().subject("user-7"),
        )
        .await
        .unwrap();
    // Drive the three `work` tasks to completed, retry and archived directly.
    let leased = broker
        .dequeue(&DequeueRequest {
            queues: vec!["work".into()],
            max: 10,
            lease: Duration::from_secs(60),
            worker: "test".into(),
        })
        .await
        .unwrap();
    assert_eq!(leased.len(), 3);
    let lease_of = |id: TaskId| leased.iter().find(|t| t.record.id == id).unwrap().lease;
    let acks = vec![
        Ack {
            lease: lease_of(to_complete),
            outcome: Outcome::Complete {
                result: Some(b"sealed result".to_vec()),
            },
        },
        Ack {
            lease: lease_of(to_retry),
            outcome: Outcome::Retry {
                at_ms: i64::MAX / 4,
                error: Some(b"sealed error".to_vec()),
            },
        },
        Ack {
            lease: lease_of(to_archive),
            outcome: Outcome::Archive {
                reason: ArchiveReason::Exhausted,
                error: None,
            },
        },
    ];
    assert!(
        broker
            .ack(acks)
            .await
            .unwrap()
            .iter()
            .all(|r| *r == AckResult::Applied)
    );

    let rec = broker.get(pending).await.unwrap().unwrap();
    assert!(is_subject_sealed(&rec.envelope), "sealed with the data key");
    assert!(
        keyring
            .open(&Aad::for_record(&rec, Purpose::Payload), &rec.envelope)
            .is_err()
    );

    // The "backup": DUMP of both subjects' task keys before the erasure.
    let mut conn = raw().await;
    let dump = |key: String| {
        let mut conn = conn.clone();
        async move {
            let v: Vec<u8> = redis::cmd("DUMP")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(!v.is_empty(), "{key} exists");
            v
        }
    };
    let [t42, b42] = task_keys(&prefix, "default", &pending);
    let dump42 = [dump(t42).await, dump(b42).await];
    let [t7, b7] = task_keys(&prefix, "default", &other7);
    let dump7 = [dump(t7).await, dump(b7).await];

    let receipt = c.erase_subject("user-42", "dpo@example.com").await.unwrap();
    let n = receipt.counts;
    assert_eq!(
        (
            n.scheduled,
            n.pending,
            n.active,
            n.retry,
            n.completed,
            n.archived
        ),
        (1, 2, 0, 1, 1, 1),
        "{n:?}"
    );
    assert!(receipt.key_destroyed);
    assert_eq!(receipt.subject_tag, keyring.subject_tag("user-42").to_hex());
    assert!(!serde_json::to_string(&receipt).unwrap().contains("user-42"));
    for id in [
        pending,
        scheduled,
        unique,
        to_complete,
        to_retry,
        to_archive,
    ] {
        assert!(broker.get(id).await.unwrap().is_none(), "{id} survived");
    }
    assert!(broker.get(other7).await.unwrap().is_some());
    let tag42 = keyring.subject_tag("user-42");
    let left = broker
        .list(&ListQuery {
            subject: Some(tag42),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
    let stats: u64 = broker
        .stats()
        .await
        .unwrap()
        .iter()
        .map(|q| TaskState::ALL.iter().map(|s| q.get(*s)).sum::<u64>())
        .sum();
    assert_eq!(stats, 1, "only user-7's task is counted");
    // The unique key was released: the same key is free again.
    c.enqueue(
        &mail("carol@example.com"),
        EnqueueOptions::new()
            .queue("other")
            .unique("ann", Duration::from_secs(3600)),
    )
    .await
    .expect("unique key released");

    // Restore the backup under a fresh prefix and open it as another
    // broker would: the ciphertext is there, the key that opened it is not.
    let fresh = support::unique_prefix();
    for (id, dumped) in [(pending, &dump42), (other7, &dump7)] {
        for (key, dumped) in task_keys(&fresh, "default", &id).iter().zip(dumped) {
            let _: () = redis::cmd("RESTORE")
                .arg(key)
                .arg(0)
                .arg(dumped.as_slice())
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        let _: () = redis::cmd("HSET")
            .arg(format!("{fresh}:{{~}}:g:ids"))
            .arg(id.0.simple().to_string())
            .arg("default")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let copy = support::shared_broker_with_prefix(&fresh).await;
    // The attacker holds the keyring and the live key store, and still fails.
    let keys = SubjectKeys::new(broker.subject_key_store().unwrap(), &keyring);
    let old = copy.get(pending).await.unwrap().expect("the copy has it");
    assert!(!old.envelope.is_empty());
    assert!(
        keys.for_open(&tag42).await.unwrap().is_none(),
        "the key survived erasure"
    );
    assert!(
        keyring
            .open(&Aad::for_record(&old, Purpose::Payload), &old.envelope)
            .is_err()
    );
    // user-7's task in the same copy still opens.
    let seven = copy.get(other7).await.unwrap().unwrap();
    let k7 = keys
        .for_open(&keyring.subject_tag("user-7"))
        .await
        .unwrap()
        .expect("user-7's key");
    let opened = k7
        .open(&Aad::for_record(&seven, Purpose::Payload), &seven.envelope)
        .unwrap();
    assert!(String::from_utf8_lossy(&opened).contains("bob@example.com"));

    // Idempotent; unknown subjects are fine.
    let again = c.erase_subject("user-42", "dpo@example.com").await.unwrap();
    assert_eq!(again.counts.total(), 0);
    assert!(!again.key_destroyed);
    let unknown = c.erase_subject("nobody", "dpo@example.com").await.unwrap();
    assert_eq!(unknown.counts.total(), 0);

    // A later enqueue for the same subject gets a new key, which cannot open
    // the old copy, and runs.
    let later = c.enqueue(&mail("ann@example.com"), s42()).await.unwrap();
    let new_key = keys.for_open(&tag42).await.unwrap().expect("a new key");
    assert!(
        new_key
            .open(&Aad::for_record(&old, Purpose::Payload), &old.envelope)
            .is_err()
    );
    let worker = Worker::builder(broker.clone(), keyring.clone())
        .maintenance_interval(Duration::from_millis(20))
        .handle(move |_: Mail, ctx: TaskContext| async move {
            ctx.set_result(&"sent")?;
            Ok(())
        })
        .build()
        .unwrap()
        .spawn();
    wait_state(&broker, later, TaskState::Completed).await;
    wait_state(&broker, other7, TaskState::Completed).await;
    worker.shutdown().await.unwrap();
    let done = broker.get(later).await.unwrap().unwrap();
    assert!(is_subject_sealed(&done.result.expect("result stored")));
}

#[tokio::test]
async fn erasure_walks_queues_in_batches() {
    // A batch of 3 ids per call: the scan must continue to the end.
    let opts = RedisOptions {
        maintenance_batch: 3,
        ..RedisOptions::default()
    }
    .prefix(support::unique_prefix());
    let redis = RedisBroker::connect_with(&support::shared().url(), opts)
        .await
        .unwrap();
    let broker: Arc<dyn Broker> = Arc::new(redis);
    let keyring = Arc::new(Keyring::generate());
    let c = client(&broker, &keyring);
    for i in 0..10 {
        let subject = if i % 2 == 0 { "user-42" } else { "user-7" };
        c.enqueue(
            &mail("x@example.com"),
            EnqueueOptions::new().subject(subject),
        )
        .await
        .unwrap();
    }
    let counts = broker
        .erase_subject(&keyring.subject_tag("user-42"))
        .await
        .unwrap();
    assert_eq!(counts.pending, 5);
    assert_eq!(counts.total(), 5);
    assert_eq!(broker.list(&ListQuery::default()).await.unwrap().len(), 5);
}

#[tokio::test]
async fn subject_keys_live_under_their_own_prefix_and_may_live_elsewhere() {
    // A second server for the keys, as docs/compliance.md recommends.
    let keys_server = support::RedisServer::start();
    let prefix = support::unique_prefix();
    let opts = RedisOptions {
        subject_keys_url: Some(keys_server.url()),
        subject_keys_prefix: Some("vault".into()),
        ..RedisOptions::default()
    }
    .prefix(&prefix);
    let redis = RedisBroker::connect_with(&support::shared().url(), opts)
        .await
        .unwrap();
    let broker: Arc<dyn Broker> = Arc::new(redis);
    let keyring = Arc::new(Keyring::generate());
    let c = client(&broker, &keyring);
    c.enqueue(
        &mail("ann@example.com"),
        EnqueueOptions::new().subject("user-42"),
    )
    .await
    .unwrap();
    let tag = keyring.subject_tag("user-42").to_hex();
    let on_keys = keys_server.cli(&["--no-raw", "EXISTS", &format!("vault:{tag}")]);
    assert!(on_keys.contains('1'), "{on_keys}");
    let on_tasks = support::shared().cli(&["--no-raw", "EXISTS", &format!("vault:{tag}")]);
    assert!(on_tasks.contains('0'), "{on_tasks}");
    let receipt = c.erase_subject("user-42", "dpo").await.unwrap();
    assert!(receipt.key_destroyed);
    assert!(keys_server.cli(&["GET", "vault:epoch"]).contains('1'));
    // The default: PREFIX-keys on the broker's own server.
    let plain = support::shared_broker(sealq::clock::system_clock()).await;
    let store = plain.subject_key_store().unwrap();
    assert!(format!("{store:?}").contains(&format!("{}-keys", plain.prefix())));
    // The key prefix must differ from the task prefix.
    let same = RedisOptions {
        subject_keys_prefix: Some(prefix.clone()),
        ..RedisOptions::default()
    }
    .prefix(&prefix);
    let err = RedisBroker::connect_with(&support::shared().url(), same)
        .await
        .unwrap_err();
    assert_eq!(err.kind, sealq::BrokerErrorKind::Config);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reseal_rewraps_subject_keys_after_a_rotation_so_the_old_key_can_go() {
    use sealq::reseal::ResealOptions;
    use sealq::subject_keys::WrappedUnder;

    let redis = support::shared_broker(sealq::clock::system_clock()).await;
    let broker: Arc<dyn Broker> = Arc::new(redis.clone());
    let mut keyring = Keyring::generate();
    let old = keyring.primary_key_id().to_owned();
    let before = Arc::new(Keyring::from_toml(&keyring.to_toml_secret()).unwrap());
    let c = client(&broker, &before);
    let a = c
        .enqueue(
            &mail("ann@example.com"),
            EnqueueOptions::new().subject("user-42"),
        )
        .await
        .unwrap();
    let b = c
        .enqueue(
            &mail("bob@example.com"),
            EnqueueOptions::new().subject("user-7"),
        )
        .await
        .unwrap();
    let new = keyring.rotate();
    let rotated = Arc::new(keyring);

    // The store lists both keys, wrapped under the old key's KEK; its
    // compare-and-swap (FCALL sealq_key_swap) refuses a stale expectation.
    let store = broker.subject_key_store().unwrap();
    let listed = store.list().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .all(|(_, w)| WrappedUnder::of(w) == Some(WrappedUnder::Key(old.clone())))
    );
    let t42 = rotated.subject_tag("user-42");
    let w42 = store.get(&t42).await.unwrap().unwrap();
    assert!(
        !store
            .replace(&t42, b"not what is stored", b"x".to_vec())
            .await
            .unwrap()
    );
    assert_eq!(store.get(&t42).await.unwrap().unwrap(), w42);

    let report = client(&broker, &rotated)
        .reseal(&ResealOptions::default(), "ops@example.com")
        .await
        .unwrap();
    let keys = report.subject_keys.expect("the broker keeps subject keys");
    assert_eq!(
        (keys.rewrapped, keys.current, keys.changed),
        (2, 0, 0),
        "{keys:?}"
    );
    assert!(
        keys.failed.is_empty() && keys.remaining.is_empty(),
        "{keys:?}"
    );
    assert!(
        store
            .list()
            .await
            .unwrap()
            .iter()
            .all(|(_, w)| WrappedUnder::of(w) == Some(WrappedUnder::Key(new.clone())))
    );

    // A worker whose keyring no longer has the old key runs both tasks.
    let mut newest = Keyring::from_toml(&rotated.to_toml_secret()).unwrap();
    newest.remove_key(&old).unwrap();
    let worker = Worker::builder(broker.clone(), Arc::new(newest))
        .maintenance_interval(Duration::from_millis(20))
        .handle(|_m: Mail, _ctx: TaskContext| async { Ok(()) })
        .build()
        .unwrap()
        .spawn();
    wait_state(&broker, a, TaskState::Completed).await;
    wait_state(&broker, b, TaskState::Completed).await;
    let report = worker.shutdown().await.unwrap();
    assert_eq!(report.integrity_failures, 0);
}
