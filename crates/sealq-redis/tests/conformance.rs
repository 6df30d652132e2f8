//! The sealq broker conformance suite against a real `redis-server` this test
//! binary starts (shared by the cases; each case gets its own key prefix),
//! and the blob store cases on a `RedisBlobStore` under its own prefix.

mod support;

use std::sync::Arc;
use std::time::Duration;

use sealq::clock::SharedClock;
use sealq::testkit::Harness;
use sealq_redis::RedisBlobStore;

sealq::conformance_tests!(async |clock: SharedClock| {
    Harness::new(support::shared_broker(clock).await)
});

sealq::live_worker_tests!(async |clock: SharedClock| {
    Harness::new(support::shared_broker(clock).await)
});

sealq::blob_store_tests!(async |clock: SharedClock| {
    let prefix = format!("{}-blobs", support::unique_prefix());
    let blobs = RedisBlobStore::new(
        &support::shared().url(),
        &prefix,
        Duration::from_secs(3600),
        Default::default(),
    )
    .expect("blob store");
    Harness::new(support::shared_broker(clock).await).with_blob_store(Arc::new(blobs))
});

// Finding 4: one task whose stored bytes do not decode (overwritten with
// `redis-cli`, as an edited key would hold them) must not stop a worker.
sealq::damage_tests!(async |clock: SharedClock| {
    let broker = support::shared_broker(clock).await;
    let prefix = broker.prefix().to_owned();
    Harness::new(broker).with_damage(move |id, queue| {
        let key = format!("{prefix}:{{{queue}}}:b:{}", id.0.simple());
        Box::pin(async move {
            let out = support::shared().cli(&["SET", &key, "\x07not a task"]);
            assert!(out.contains("OK"), "{out}");
        })
    })
});

// Finding 2: a task whose id completed or was deleted never runs again,
// even after its hash is edited back to pending or its keys are put back
// from a copy (made with `redis-cli`, as someone with write access to the
// server could).
sealq::replay_tests!(async |clock: SharedClock| {
    use sealq::testkit::cases::replay::Tamper;
    let broker = support::shared_broker(clock).await;
    let prefix = broker.prefix().to_owned();
    Harness::new(broker).with_tamper(move |op, id, queue| {
        let q = format!("{prefix}:{{{queue}}}:");
        let id = id.0.simple().to_string();
        Box::pin(async move {
            let cli = |args: &[&str]| support::shared().cli(args);
            let (t, b) = (format!("{q}t:{id}"), format!("{q}b:{id}"));
            let (st, sb) = (format!("{q}saved-t:{id}"), format!("{q}saved-b:{id}"));
            let ready = format!("{q}ready");
            match op {
                Tamper::FlipToPending => {
                    cli(&["HSET", &t, "s", "pending"]);
                    cli(&["ZADD", &ready, "0", &id]);
                }
                Tamper::Save => {
                    for (from, to) in [(&t, &st), (&b, &sb)] {
                        let out = cli(&["COPY", from, to, "REPLACE"]);
                        assert!(out.contains('1'), "COPY {from}: {out}");
                    }
                }
                Tamper::Restore => {
                    for (from, to) in [(&st, &t), (&sb, &b)] {
                        let out = cli(&["COPY", from, to, "REPLACE"]);
                        assert!(out.contains('1'), "COPY {from}: {out}");
                    }
                    cli(&["ZADD", &ready, "0", &id]);
                    cli(&["ZADD", &format!("{q}all"), "0", &id]);
                }
                _ => unreachable!("no other edit exists yet"),
            }
        })
    })
});
