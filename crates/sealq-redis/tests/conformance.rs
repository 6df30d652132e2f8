//! The sealq broker conformance suite against a real `redis-server` this test
//! binary starts (shared by the cases; each case gets its own key prefix).

mod support;

use sealq::clock::SharedClock;
use sealq::testkit::Harness;

sealq::conformance_tests!(async |clock: SharedClock| {
    Harness::new(support::shared_broker(clock).await)
});
