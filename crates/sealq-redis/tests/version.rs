//! Start-up refuses a Redis whose sealq functions library is missing or of
//! another version, with a message that says what to run; `install` fixes it.

mod support;

use sealq_redis::{LIBRARY_VERSION, RedisBroker, library_source};

fn message(e: &sealq::BrokerError) -> String {
    format!("{e}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_mismatched_library_stops_start_up_with_what_to_do() {
    let s = support::RedisServer::start();

    // Nothing loaded.
    let err = RedisBroker::connect(&s.url())
        .await
        .expect_err("no library loaded");
    let text = message(&err);
    assert!(text.contains("sealq redis install"), "{text}");

    // Another version loaded (an older deployment).
    let other = library_source().replace(
        &format!("local VERSION = '{LIBRARY_VERSION}'"),
        "local VERSION = '0-old'",
    );
    assert_ne!(other, library_source(), "the version line moved");
    let out = s.cli(&["FUNCTION", "LOAD", "REPLACE", &other]);
    assert!(out.contains("sealq"), "{out}");
    let err = RedisBroker::connect(&s.url())
        .await
        .expect_err("version mismatch");
    let text = message(&err);
    assert!(
        text.contains("0-old") && text.contains(LIBRARY_VERSION),
        "{text}"
    );
    assert!(text.contains("sealq redis install"), "{text}");

    // The admin's install fixes it.
    let out = s.cli(&["FUNCTION", "LOAD", "REPLACE", &library_source()]);
    assert!(out.contains("sealq"), "{out}");
    RedisBroker::connect(&s.url())
        .await
        .expect("connects after install");
}
