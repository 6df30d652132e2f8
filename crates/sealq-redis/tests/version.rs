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

/// A worker of library version 7 still running after an upgrade sends acks
/// with two placeholder arguments each. Version 8 reads a call's whole layout
/// before writing, so such a call fails and changes nothing; the tasks keep
/// their leases (and are retried when those expire), and acks in the current
/// layout go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_in_the_old_layout_is_refused_whole_and_changes_nothing() {
    use sealq::broker::{Ack, AckResult, Broker, DequeueRequest, Outcome};
    use std::time::Duration;

    let s = support::RedisServer::start();
    s.load_library();
    let b = RedisBroker::connect(&s.url()).await.expect("connects");
    let now = sealq::clock::Clock::now_ms(&sealq::clock::SystemClock);
    let tasks: Vec<_> = (0..2)
        .map(|_| sealq::testkit::fixtures::task_at("up", now, now))
        .collect();
    b.enqueue(tasks).await.unwrap();
    let leased = b
        .dequeue(&DequeueRequest {
            queues: vec!["up".into()],
            max: 2,
            lease: Duration::from_secs(60),
            worker: "w".into(),
        })
        .await
        .unwrap();
    assert_eq!(leased.len(), 2);
    assert_eq!(
        leased[0].lease.token, leased[1].lease.token,
        "one token per dequeue call"
    );
    let id = |i: usize| leased[i].record.id.0.simple().to_string();
    let tok = format!("{:016x}", leased[0].lease.token);
    let now_s = now.to_string();
    let out = s.cli(&[
        "FCALL",
        "sealq_ack",
        "1",
        "sealq:{up}:",
        &now_s,
        &id(0),
        &tok,
        "c",
        "",
        "",
        &id(1),
        &tok,
        "c",
        "",
        "",
    ]);
    assert!(out.contains("malformed arguments"), "{out}");
    for t in &leased {
        let r = b.get(t.record.id).await.unwrap().expect("still stored");
        assert_eq!(r.state, sealq::TaskState::Active, "nothing was written");
    }
    let acks = leased
        .iter()
        .map(|t| Ack {
            lease: t.lease,
            outcome: Outcome::Complete { result: None },
        })
        .collect();
    let res = b.ack(acks).await.unwrap();
    assert!(
        res.iter().all(|r| matches!(r, AckResult::Applied)),
        "{res:?}"
    );
    for t in &leased {
        let r = b.get(t.record.id).await.unwrap().unwrap();
        assert_eq!(r.state, sealq::TaskState::Completed);
    }
}

/// An enqueue call whose arguments do not divide into whole tasks (here
/// `sealq_enqueue_inline` called in `sealq_enqueue`'s layout, seven fields
/// per task without the bytes) is refused before anything is written: no
/// task state, no bytes, no index entry.
#[test]
fn an_enqueue_call_of_the_wrong_layout_writes_nothing() {
    let s = support::RedisServer::start();
    s.load_library();
    let id = "0000000000007000800000000000000a";
    let now = "1700000000000";
    let task = [id, now, "3", "0", "", "", "0"];
    for (function, fields) in [
        ("sealq_enqueue_inline", &task[..]),
        ("sealq_enqueue", &task[..6]),
    ] {
        let mut args = vec![
            "FCALL",
            function,
            "2",
            "sealq:{q}:",
            "sealq:{~}:g:",
            now,
            "q",
        ];
        args.extend_from_slice(fields);
        let out = s.cli(&args);
        assert!(out.contains("malformed arguments"), "{function}: {out}");
        assert_eq!(s.cli(&["DBSIZE"]).trim(), "0", "{function} wrote keys");
    }
    // The right layout goes through (the check is not refusing everything).
    let mut args = vec![
        "FCALL",
        "sealq_enqueue_inline",
        "2",
        "sealq:{q}:",
        "sealq:{~}:g:",
        now,
        "q",
    ];
    args.extend_from_slice(&task);
    args.push("bytes");
    let out = s.cli(&args);
    assert_eq!(out.trim(), "1", "every task stored: their number");
    assert_eq!(
        s.cli(&["GET", &format!("sealq:{{q}}:b:{id}")]).trim(),
        "bytes"
    );
}
