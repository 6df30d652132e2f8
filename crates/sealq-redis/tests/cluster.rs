//! The broker conformance suite against a real 3-master Redis Cluster this
//! test binary starts: `redis-server --cluster-enabled yes` on three free
//! ports, joined with `redis-cli --cluster create`, the functions library
//! loaded on every master. Each case gets its own key prefix, so its queues
//! hash to slots of any of the masters.
//!
//! The nodes run under the support module's wrapper: they stop when this
//! process exits (or when the `Cluster` value drops).

mod support;

use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sealq::clock::SharedClock;
use sealq::testkit::Harness;
use sealq_redis::{RedisBroker, RedisOptions};
use support::{RedisServer, free_port, unique_prefix};

/// Three cluster masters this test started.
struct Cluster {
    nodes: Vec<RedisServer>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Self {
        for bin in ["redis-server", "redis-cli"] {
            let found = std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
                .unwrap_or(false);
            assert!(
                found,
                "{bin} not found: the Cluster test needs redis-server and redis-cli (Redis >= 7): \
                 run `apt-get install -y redis-server` (or bash scripts/test.sh)"
            );
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let node_dir = dir.path().join(format!("node-{port}"));
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let conf = node_dir.join(format!("nodes-{port}.conf"));
            let conf = conf.display().to_string();
            nodes.push(RedisServer::start_in(
                port,
                &node_dir,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &conf,
                    "--cluster-node-timeout",
                    "5000",
                ],
            ));
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        for n in &nodes {
            loop {
                let info = n.cli(&["CLUSTER", "INFO"]);
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "cluster node {} not ok after 30 s:\n{info}",
                    n.port
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let source = sealq_redis::library_source();
        for n in &nodes {
            let out = n.cli(&["FUNCTION", "LOAD", "REPLACE", &source]);
            assert!(
                out.contains("sealq"),
                "FUNCTION LOAD on {} failed: {out}",
                n.port
            );
        }
        Cluster { nodes, _dir: dir }
    }

    fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }
}

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(Cluster::start)
}

async fn cluster_broker(clock: SharedClock) -> RedisBroker {
    let url = cluster().url();
    RedisBroker::connect_with(
        &url,
        RedisOptions::with_clock(clock).prefix(unique_prefix()),
    )
    .await
    .expect("connect to the test cluster")
}

sealq::conformance_tests!(async |clock: SharedClock| { Harness::new(cluster_broker(clock).await) });

sealq::live_worker_tests!(async |clock: SharedClock| { Harness::new(cluster_broker(clock).await) });

/// Queues of one prefix land on different masters, and each master holds
/// only whole queues (every key of a queue in one slot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_spread_over_masters_one_slot_each() {
    use sealq::broker::Broker;
    use sealq::testkit::fixtures::task_at;
    let c = cluster();
    let broker = cluster_broker(sealq::clock::system_clock()).await;
    let queues: Vec<String> = (0..12).map(|i| format!("q{i}")).collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let tasks = queues.iter().map(|q| task_at(q, now, now)).collect();
    let r = broker.enqueue(tasks).await.unwrap();
    assert!(
        r.iter()
            .all(|r| *r == sealq::broker::EnqueueResult::Enqueued)
    );
    let mut masters_used = 0;
    for n in &c.nodes {
        let keys = n.cli(&["--scan", "--pattern", &format!("{}:*", broker.prefix())]);
        if keys.lines().any(|k| k.contains(":t:")) {
            masters_used += 1;
        }
    }
    assert!(
        masters_used >= 2,
        "12 queues all landed on one master: hash tags not per queue?"
    );
    let stats = broker.stats().await.unwrap();
    assert_eq!(stats.iter().map(|s| s.pending).sum::<u64>(), 12);
}

/// Erasure on a Cluster: a subject's tasks in queues spread over the
/// masters, in every state (an active one included), are found and removed
/// in batches, the subject's data key is destroyed, the other subject's
/// tasks are untouched, and the active task's holder loses its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_finds_a_subject_on_every_master() {
    use std::sync::Arc;

    use sealq::broker::{Ack, AckResult, Broker, DequeueRequest, ListQuery, Outcome};
    use sealq::{ArchiveReason, Client, EnqueueOptions, Keyring, RawTask, TaskState};

    let url = cluster().url();
    let opts = RedisOptions {
        maintenance_batch: 3,
        ..RedisOptions::default()
    }
    .prefix(unique_prefix());
    let redis = RedisBroker::connect_with(&url, opts).await.unwrap();
    let broker: Arc<dyn Broker> = Arc::new(redis);
    let keyring = Arc::new(Keyring::generate());
    let c = Client::builder(broker.clone(), keyring.clone())
        .producer("cluster-erasure")
        .build();
    let queues: Vec<String> = (0..6).map(|i| format!("e{i}")).collect();
    let task = |q: &str, subject: &str, delay: u64| {
        RawTask::new(
            "mail.send",
            sealq::task::encode_payload(&("x@example.com",)).unwrap(),
            EnqueueOptions::new()
                .queue(q)
                .subject(subject)
                .delay(Duration::from_secs(delay)),
        )
    };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for q in &queues {
        for _ in 0..4 {
            ours.push(c.enqueue_raw(task(q, "user-42", 0)).await.unwrap());
        }
        ours.push(c.enqueue_raw(task(q, "user-42", 3600)).await.unwrap());
        theirs.push(c.enqueue_raw(task(q, "user-7", 0)).await.unwrap());
    }
    // In e0: one of ours completed, one archived, one left active (held).
    let leased = broker
        .dequeue(&DequeueRequest {
            queues: vec!["e0".into()],
            max: 3,
            lease: Duration::from_secs(60),
            worker: "test".into(),
        })
        .await
        .unwrap();
    assert_eq!(leased.len(), 3);
    let ours_leased: Vec<_> = leased
        .iter()
        .filter(|t| ours.contains(&t.record.id))
        .collect();
    assert!(ours_leased.len() >= 2, "e0's first tasks are ours");
    let acks = vec![
        Ack {
            lease: ours_leased[0].lease,
            outcome: Outcome::Complete { result: None },
        },
        Ack {
            lease: ours_leased[1].lease,
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
    let held = leased
        .iter()
        .find(|t| {
            t.record.id != ours_leased[0].record.id && t.record.id != ours_leased[1].record.id
        })
        .unwrap();
    let held_is_ours = ours.contains(&held.record.id);

    let receipt = c.erase_subject("user-42", "dpo@example.com").await.unwrap();
    assert!(receipt.key_destroyed);
    let n = receipt.counts;
    assert_eq!(n.total(), ours.len() as u64, "{n:?}");
    assert_eq!(n.scheduled, queues.len() as u64, "{n:?}");
    assert_eq!((n.completed, n.archived), (1, 1), "{n:?}");
    assert_eq!(n.active, u64::from(held_is_ours), "{n:?}");

    for id in &ours {
        match broker.get(*id).await.unwrap() {
            None => {}
            Some(rec) => {
                // Only the held task stays, archived `erased`.
                assert_eq!(rec.id, held.record.id);
                assert_eq!(rec.state, TaskState::Archived);
                assert_eq!(rec.archive_reason, Some(ArchiveReason::Erased));
            }
        }
    }
    for id in &theirs {
        let rec = broker.get(*id).await.unwrap().expect("user-7 untouched");
        assert!(matches!(rec.state, TaskState::Pending | TaskState::Active));
    }
    let listed = broker.list(&ListQuery::default()).await.unwrap();
    let left: Vec<_> = listed
        .iter()
        .filter(|r| r.state != TaskState::Archived)
        .collect();
    assert_eq!(
        left.len(),
        theirs.len(),
        "only user-7's tasks are left live"
    );
    if held_is_ours {
        let r = broker
            .ack(vec![Ack {
                lease: held.lease,
                outcome: Outcome::Complete { result: None },
            }])
            .await
            .unwrap();
        assert_eq!(r, vec![AckResult::LeaseLost]);
    }
    // A second erasure finds only the archived `erased` task (if any) and
    // removes it; nothing of user-7 is touched.
    let again = broker
        .erase_subject(&keyring.subject_tag("user-42"))
        .await
        .unwrap();
    assert_eq!(again.total(), u64::from(held_is_ours), "{again:?}");
    assert_eq!(again.archived, u64::from(held_is_ours), "{again:?}");
    for id in &theirs {
        assert!(broker.get(*id).await.unwrap().is_some());
    }
}

/// The ACL roles of docs/redis-acl.md on a Cluster (created on every
/// master, with the producer's documented Cluster addition): the admin
/// installs, the producer enqueues and cannot read, dequeue or re-seal,
/// the worker runs the task's lifecycle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_roles_work_on_a_cluster() {
    use sealq::BrokerErrorKind;
    use sealq::broker::{
        Ack, AckResult, Broker, DequeueRequest, EnqueueResult, Outcome, SealedPart, SealedSwap,
    };
    let c = cluster();
    let extra = cluster_acl_extra();
    for node in &c.nodes {
        for line in support::acl_lines() {
            let mut line = line;
            if line.starts_with("ACL SETUSER sealq-producer ") {
                line.push_str(extra.producer);
            } else {
                line.push_str(extra.others);
            }
            let owned = support::acl_args(&line);
            let args: Vec<&str> = owned.iter().map(String::as_str).collect();
            let out = node.cli(&args);
            assert!(out.contains("OK"), "{line}: {out}");
        }
    }
    let hosts: Vec<String> = c
        .nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let url = |user: &str, pw: &str| format!("redis+cluster://{user}:{pw}@{}", hosts.join(","));
    RedisBroker::connect_unchecked(&url("sealq-admin", "apw"), RedisOptions::default())
        .await
        .expect("admin connects to the cluster")
        .install()
        .await
        .expect("admin installs on every master");

    let producer = RedisBroker::connect(&url("sealq-producer", "ppw"))
        .await
        .expect("producer connects to the cluster");
    let now = sealq::Clock::now_ms(&*sealq::clock::system_clock());
    let queues = ["acl-a", "acl-b", "acl-c", "acl-d"];
    let tasks: Vec<_> = queues
        .iter()
        .map(|q| sealq::testkit::fixtures::task_at(q, now, now))
        .collect();
    let first = tasks[0].clone();
    let res = producer.enqueue(tasks).await.expect("producer enqueues");
    assert!(res.iter().all(|r| *r == EnqueueResult::Enqueued), "{res:?}");
    let again = producer.enqueue(vec![first.clone()]).await.unwrap();
    assert_eq!(again, vec![EnqueueResult::IdExists]);

    let req = DequeueRequest {
        queues: queues.iter().map(|q| q.to_string()).collect(),
        max: 10,
        lease: Duration::from_secs(30),
        worker: "w".into(),
    };
    let e = producer.dequeue(&req).await.expect_err("producer dequeues");
    assert_eq!(e.kind, BrokerErrorKind::PermissionDenied, "{e}");
    let e = producer.get(first.id).await.expect_err("producer reads");
    assert_eq!(e.kind, BrokerErrorKind::PermissionDenied, "{e}");
    let swap = SealedSwap {
        task_id: first.id,
        queue: first.queue.clone(),
        part: SealedPart::Payload,
        expected: first.envelope.clone(),
        replacement: b"x".to_vec(),
    };
    let e = producer
        .swap_sealed(std::slice::from_ref(&swap))
        .await
        .expect_err("producer re-seals");
    assert_eq!(e.kind, BrokerErrorKind::PermissionDenied, "{e}");

    let worker = RedisBroker::connect(&url("sealq-worker", "wpw"))
        .await
        .expect("worker connects to the cluster");
    let got = worker.dequeue(&req).await.expect("worker dequeues");
    assert_eq!(got.len(), queues.len());
    let acks = got
        .iter()
        .map(|l| Ack {
            lease: l.lease,
            outcome: Outcome::Complete { result: None },
        })
        .collect();
    let res = worker.ack(acks).await.expect("worker acks");
    assert!(res.iter().all(|r| *r == AckResult::Applied));
    worker.forward_due().await.expect("worker forwards");
    worker.recover_expired().await.expect("worker recovers");
    worker.purge_completed().await.expect("worker purges");
    let swapped = worker.swap_sealed(&[swap]).await.expect("worker re-seals");
    assert_eq!(swapped, vec![true]);
}

/// What docs/redis-acl.md says to add on a Cluster, read from it.
struct ClusterAcl {
    producer: &'static str,
    others: &'static str,
}

fn cluster_acl_extra() -> ClusterAcl {
    let doc = include_str!("../../../docs/redis-acl.md");
    let pick = |tag: &str| -> &'static str {
        doc.lines()
            .find_map(|l| l.strip_prefix(tag))
            .map(|rest| rest.trim_matches('`'))
            .unwrap_or_else(|| panic!("docs/redis-acl.md has no line starting with {tag}"))
    };
    ClusterAcl {
        producer: pick("Cluster producer: "),
        others: pick("Cluster admin and worker: "),
    }
}

/// Key rotation on a Cluster: the subject keys are spread over the masters;
/// `reseal` finds every one (`SCAN` on each master) and re-wraps it under
/// the new primary key's KEK, and a stale compare-and-swap is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reseal_rewraps_subject_keys_on_every_master() {
    use std::sync::Arc;

    use sealq::broker::Broker;
    use sealq::reseal::ResealOptions;
    use sealq::subject_keys::WrappedUnder;
    use sealq::{Client, EnqueueOptions, Keyring, RawTask};

    let c = cluster();
    let redis = cluster_broker(sealq::clock::system_clock()).await;
    let keys_pattern = format!("{}-keys:*", redis.prefix());
    let broker: Arc<dyn Broker> = Arc::new(redis);
    let mut keyring = Keyring::generate();
    let old = keyring.primary_key_id().to_owned();
    let before = Arc::new(Keyring::from_toml(&keyring.to_toml_secret()).unwrap());
    let producer = Client::builder(broker.clone(), before).build();
    let subjects: Vec<String> = (0..24).map(|i| format!("user-{i}")).collect();
    for s in &subjects {
        producer
            .enqueue_raw(RawTask::new(
                "mail.send",
                sealq::task::encode_payload(&("x@example.com",)).unwrap(),
                EnqueueOptions::new().subject(s),
            ))
            .await
            .unwrap();
    }
    let store = broker.subject_key_store().unwrap();
    let listed = store.list().await.unwrap();
    assert_eq!(listed.len(), subjects.len());
    // The keys really are on several masters.
    let on = c
        .nodes
        .iter()
        .filter(|n| {
            !n.cli(&["--scan", "--pattern", &keys_pattern])
                .trim()
                .is_empty()
        })
        .count();
    assert!(on >= 2, "every subject key on one master");

    let new = keyring.rotate();
    let rotated = Arc::new(keyring);
    let (tag, wrapped) = &listed[0];
    assert!(!store.replace(tag, b"stale", b"x".to_vec()).await.unwrap());
    assert_eq!(store.get(tag).await.unwrap().as_ref(), Some(wrapped));
    let report = Client::builder(broker.clone(), rotated)
        .build()
        .reseal(&ResealOptions::default(), "ops")
        .await
        .unwrap();
    let keys = report.subject_keys.expect("subject keys re-wrapped");
    assert_eq!(keys.rewrapped, subjects.len() as u64, "{keys:?}");
    assert!(
        keys.remaining.is_empty() && keys.failed.is_empty(),
        "{keys:?}"
    );
    let after = store.list().await.unwrap();
    assert_eq!(after.len(), subjects.len());
    assert!(
        after
            .iter()
            .all(|(_, w)| WrappedUnder::of(w) == Some(WrappedUnder::Key(new.clone())))
    );
    assert!(
        listed
            .iter()
            .all(|(_, w)| WrappedUnder::of(w) == Some(WrappedUnder::Key(old.clone())))
    );
}

/// The master that owns `key`'s slot (the others answer `MOVED`).
fn owner<'a>(c: &'a Cluster, key: &str) -> &'a RedisServer {
    c.nodes
        .iter()
        .find(|n| !n.cli(&["GET", key]).contains("MOVED"))
        .expect("some master owns every slot")
}

/// A Cluster enqueue that fails after claiming its ids in the global index
/// (here: the queue's master has no functions library) releases the
/// claims of the tasks it did not store. Before, the ids stayed claimed
/// and a retry of the same tasks was told `IdExists` for tasks that did
/// not exist: lost while the producer believed them stored before. On a
/// cluster of its own, since a master loses its library for a moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_failed_enqueue_releases_its_claims_so_a_retry_stores_the_tasks() {
    use sealq::broker::{Broker, EnqueueResult};
    use sealq::testkit::fixtures::task_at;
    let c = Cluster::start();
    let prefix = unique_prefix();
    let broker = RedisBroker::connect_with(&c.url(), RedisOptions::default().prefix(&prefix))
        .await
        .expect("connect to the test cluster");
    let registry = owner(&c, &format!("{prefix}:{{~}}:g:ids")).port;
    let queue = (0..64)
        .map(|i| format!("claims{i}"))
        .find(|q| owner(&c, &format!("{prefix}:{{{q}}}:n")).port != registry)
        .expect("a queue on another master than the registry");
    let node = owner(&c, &format!("{prefix}:{{{queue}}}:n"));
    let now = sealq::clock::system_clock().now_ms();
    let tasks: Vec<_> = (0..3).map(|_| task_at(&queue, now, now)).collect();

    assert!(node.cli(&["FUNCTION", "DELETE", "sealq"]).contains("OK"));
    let err = broker.enqueue(tasks.clone()).await.unwrap_err();
    assert!(!err.to_string().is_empty());
    let source = sealq_redis::library_source();
    assert!(
        node.cli(&["FUNCTION", "LOAD", "REPLACE", &source])
            .contains("sealq")
    );

    let again = broker.enqueue(tasks.clone()).await.unwrap();
    assert_eq!(
        again,
        vec![EnqueueResult::Enqueued; 3],
        "the retry stores them"
    );
    for t in &tasks {
        let rec = broker.get(t.id).await.unwrap().expect("stored and found");
        assert_eq!(rec.queue, queue);
    }
    // And a third call is refused as it should be: the ids are known now.
    let third = broker.enqueue(tasks).await.unwrap();
    assert_eq!(third, vec![EnqueueResult::IdExists; 3]);
}
