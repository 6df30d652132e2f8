//! The shared client and worker scenarios ([`sealq::testkit::scenarios`])
//! against the `redis-server` this test binary starts: each scenario gets
//! its own key prefix, a second broker on that prefix (another process),
//! and the audit streams under it.

mod support;

use std::sync::Arc;

use sealq::clock::SharedClock;
use sealq::testkit::Harness;
use sealq_redis::RedisAuditSink;

sealq::scenario_tests!(async |clock: SharedClock| {
    let redis = support::shared_broker(clock).await;
    let peer = support::shared_broker_with_prefix(redis.prefix()).await;
    let sink = Arc::new(RedisAuditSink::open(&redis).await.expect("audit sink"));
    Harness::new(redis).with_peer(peer).with_audit_sink(sink)
});
