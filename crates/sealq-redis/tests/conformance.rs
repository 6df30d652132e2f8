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
