//! The audit chain: records verify; every kind of tampering is detected and
//! named; several writers; the JSON-lines sink.

use std::sync::Arc;

use sealq::audit::{
    AuditEvent, AuditKeys, Auditor, Fault, JsonLinesSink, MemorySink, VerifyOptions, verify_sink,
};
use sealq::{Keyring, TaskId};

/// A filler event (not `started`: consecutive ones share a record).
fn event(i: u64) -> AuditEvent {
    AuditEvent::Requeued {
        task: TaskId::new(),
        worker: "w".into(),
        attempt: i as u32,
    }
}

/// `n` records from one writer into a memory sink, closed (final checkpoint).
async fn write(keyring: &Keyring, sink: &MemorySink, writer: &str, n: u64, every: u64) {
    let a = Auditor::builder(Arc::new(sink.clone()), keyring)
        .writer(writer)
        .checkpoint_every(every)
        .start()
        .unwrap();
    for i in 0..n {
        a.record(event(i));
    }
    let stats = a.close().await.unwrap();
    // The events and the writer's genesis (`writer_started`, seq 0).
    assert_eq!(stats.records, n + 1);
    assert!(stats.checkpoints >= 1);
}

async fn check(keyring: &Keyring, sink: &MemorySink) -> sealq::audit::VerifyReport {
    let keys = AuditKeys::from_keyring(keyring).unwrap();
    verify_sink(sink, &keys, &VerifyOptions::default())
        .await
        .unwrap()
}

fn faults(r: &sealq::audit::VerifyReport) -> String {
    r.faults
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn a_clean_chain_verifies() {
    let k = Keyring::generate();
    let sink = MemorySink::new();
    write(&k, &sink, "p:1:a", 25, 10).await;
    let r = check(&k, &sink).await;
    assert!(r.is_ok(), "{}", faults(&r));
    assert_eq!((r.records, r.writers, r.verified_records), (26, 1, 26));
    assert_eq!(r.checkpoints, 3, "at 10, 20 and the final one at close");
    assert!(r.macs_checked);
}

#[tokio::test]
async fn editing_a_field_is_named() {
    let k = Keyring::generate();
    let sink = MemorySink::new();
    write(&k, &sink, "p:1:a", 10, 1000).await;
    // Line 1 is the genesis: seq 5 (line 6) has attempt 4.
    sink.edit_records(|l| l[5] = l[5].replace("\"attempt\":4", "\"attempt\":5"));
    let r = check(&k, &sink).await;
    assert_eq!(
        r.faults,
        vec![Fault::Edited {
            writer: "p:1:a".into(),
            seq: 5,
            position: 6
        }],
        "{}",
        faults(&r)
    );
    assert!(faults(&r).contains("line 6"));
}

#[tokio::test]
async fn deleting_a_record_is_named() {
    let k = Keyring::generate();
    let sink = MemorySink::new();
    write(&k, &sink, "p:1:a", 10, 1000).await;
    sink.edit_records(|l| {
        l.remove(3);
    });
    let r = check(&k, &sink).await;
    assert_eq!(
        r.faults,
        vec![Fault::Deleted {
            writer: "p:1:a".into(),
            from_seq: 3,
            to_seq: 3,
            before_position: 4
        }],
        "{}",
        faults(&r)
    );
}

#[tokio::test]
async fn swapping_two_records_is_named() {
    let k = Keyring::generate();
    let sink = MemorySink::new();
    write(&k, &sink, "p:1:a", 10, 1000).await;
    sink.edit_records(|l| l.swap(5, 6));
    let r = check(&k, &sink).await;
    assert_eq!(
        r.faults,
        vec![Fault::Reordered {
            writer: "p:1:a".into(),
            seq: 5,
            position: 7,
            after_seq: 6
        }],
        "{}",
        faults(&r)
    );
}

#[tokio::test]
async fn inserting_a_forged_record_is_named() {
    let k = Keyring::generate();
    let sink = MemorySink::new();
    write(&k, &sink, "p:1:a", 10, 1000).await;
    // A copy of record 2 with another attempt, inserted after it: same seq,
    // content changed, MAC kept.
    sink.edit_records(|l| {
        let forged = l[2].replace("\"attempt\":1", "\"attempt\":7");
        l.insert(3, forged);
    });
    let r = check(&k, &sink).await;
    assert_eq!(
        r.faults,
        vec![Fault::Inserted {
            writer: "p:1:a".into(),
            seq: 2,
            position: 4
        }],
        "{}",
        faults(&r)
    );
    // A brand-new record appended after the end with the next seq does not
    // verify either.
    let sink = MemorySink::new();
    write(&k, &sink, "p:1:a", 3, 1000).await;
    sink.edit_records(|l| {
        let forged = l[3].replace("\"seq\":3", "\"seq\":4");
        l.push(forged);
    });
    let r = check(&k, &sink).await;
    assert_eq!(
        r.faults,
        vec![Fault::Edited {
            writer: "p:1:a".into(),
            seq: 4,
            position: 5
        }],
        "{}",
        faults(&r)
    );
}

#[tokio::test]
async fn truncating_the_tail_is_caught_by_the_checkpoint() {
    let k = Keyring::generate();
    let sink = MemorySink::new();
    write(&k, &sink, "p:1:a", 10, 1000).await;
    sink.edit_records(|l| l.truncate(7));
    let r = check(&k, &sink).await;
    assert!(
        matches!(
            r.faults.as_slice(),
            [Fault::Truncated { writer, checkpoint_seq: 10, last_seq: 6, .. }] if writer == "p:1:a"
        ),
        "{}",
        faults(&r)
    );
    assert!(faults(&r).contains("tail truncated"));
}

#[tokio::test]
async fn a_wrong_key_is_named_once() {
    let k = Keyring::generate();
    let sink = MemorySink::new();
    write(&k, &sink, "p:1:a", 10, 1000).await;
    let other = Keyring::generate();
    let r = check(&other, &sink).await;
    assert!(
        r.faults.contains(&Fault::WrongKey { writer: None }),
        "{}",
        faults(&r)
    );
    assert!(!r.faults.iter().any(|f| matches!(f, Fault::Edited { .. })));
    // The writer is named with the key id its genesis gives, once; the
    // checkpoints as signed by another key, once.
    let id = AuditKeys::from_keyring(&k).unwrap().mac_key_id();
    assert!(
        r.faults.contains(&Fault::UnknownKey {
            writer: "p:1:a".into(),
            key_id: id,
            records: 11
        }),
        "{}",
        faults(&r)
    );
    assert!(r.faults.contains(&Fault::WrongPublicKey), "{}", faults(&r));
    assert_eq!(r.faults.len(), 3, "{}", faults(&r));
}

#[tokio::test]
async fn a_corrupt_line_is_named_and_never_panics() {
    let k = Keyring::generate();
    let sink = MemorySink::new();
    write(&k, &sink, "p:1:a", 5, 1000).await;
    sink.edit_records(|l| {
        l[1].truncate(20);
        l.push("\u{0}\u{ff}garbage".into());
        l.push("{}".into());
        l.push("[1,2,3]".into());
        l.push(r#"{"writer":"x","seq":18446744073709551615,"time_ms":0,"event":{"type":"started","task":"00000000-0000-0000-0000-000000000000","worker":"w","attempt":1},"mac":"zz"}"#.into());
    });
    sink.edit_checkpoints(|c| c.as_mut().unwrap().push("{not json".into()));
    let r = check(&k, &sink).await;
    let text = faults(&r);
    assert!(
        r.faults.contains(&Fault::CorruptLine {
            store: sealq::audit::Store::Records,
            position: 2,
            reason: match &r.faults[0] {
                Fault::CorruptLine { reason, .. } => reason.clone(),
                _ => String::new(),
            }
        }),
        "{text}"
    );
    assert!(text.contains("records line 2: corrupt"), "{text}");
    assert!(text.contains("checkpoints line 2: corrupt"), "{text}");
    assert!(!r.is_ok());
}

#[tokio::test]
async fn a_missing_checkpoint_store_is_a_fault() {
    let k = Keyring::generate();
    let sink = MemorySink::new();
    write(&k, &sink, "p:1:a", 5, 1000).await;
    sink.edit_checkpoints(|c| *c = None);
    let r = check(&k, &sink).await;
    assert_eq!(r.faults, vec![Fault::CheckpointsMissing], "{}", faults(&r));
}

#[tokio::test]
async fn deleted_checkpoints_beyond_the_window_and_unknown_writers() {
    let k = Keyring::generate();
    let sink = MemorySink::new();
    write(&k, &sink, "p:1:a", 30, 10).await;
    write(&k, &sink, "p:2:b", 3, 10).await;
    // Remove every checkpoint of writer a; remove all records of writer b.
    sink.edit_checkpoints(|c| c.as_mut().unwrap().retain(|l| !l.contains("p:1:a")));
    sink.edit_records(|l| l.retain(|l| !l.contains("p:2:b")));
    let keys = AuditKeys::from_keyring(&k).unwrap();
    let r = verify_sink(
        &sink,
        &keys,
        &VerifyOptions {
            checkpoint_every: 10,
            ..VerifyOptions::default()
        },
    )
    .await
    .unwrap();
    let text = faults(&r);
    assert!(
        r.faults.iter().any(
            |f| matches!(f, Fault::NotCheckpointed { writer, count: 31, .. } if writer == "p:1:a")
        ),
        "{text}"
    );
    assert!(
        r.faults
            .iter()
            .any(|f| matches!(f, Fault::UnknownWriter { writer, .. } if writer == "p:2:b")),
        "{text}"
    );
}

#[tokio::test]
async fn a_forged_checkpoint_is_named() {
    let k = Keyring::generate();
    let sink = MemorySink::new();
    write(&k, &sink, "p:1:a", 10, 5).await;
    sink.edit_checkpoints(|c| {
        let c = c.as_mut().unwrap();
        c[0] = c[0].replace("\"seq\":4", "\"seq\":3");
    });
    let r = check(&k, &sink).await;
    assert!(
        r.faults.iter().any(|f| matches!(
            f,
            Fault::CheckpointForged {
                seq: 3,
                position: 1,
                ..
            }
        )),
        "{}",
        faults(&r)
    );
}

#[tokio::test]
async fn interleaved_writers_each_keep_their_chain() {
    let k = Keyring::generate();
    let sink = MemorySink::new();
    let mk = |w: &str| {
        Auditor::builder(Arc::new(sink.clone()), &k)
            .writer(w)
            .checkpoint_every(7)
            .start()
            .unwrap()
    };
    let (a, b, c) = (mk("h:1:a"), mk("h:2:b"), mk("h:3:c"));
    for i in 0..50 {
        a.record(event(i));
        b.record(event(i));
        if i % 3 == 0 {
            c.record(event(i));
        }
        if i % 10 == 0 {
            // Let the background tasks append in interleaved batches.
            tokio::task::yield_now().await;
            a.flush().await.unwrap();
        }
    }
    for x in [&a, &b, &c] {
        x.close().await.unwrap();
    }
    let r = check(&k, &sink).await;
    assert!(r.is_ok(), "{}", faults(&r));
    assert_eq!((r.records, r.writers), (50 + 50 + 17 + 3, 3));
    // Deleting one record of b names b only.
    sink.edit_records(|l| {
        let i = l
            .iter()
            .position(|x| x.contains("h:2:b") && x.contains("\"seq\":20,"))
            .unwrap();
        l.remove(i);
    });
    let r = check(&k, &sink).await;
    assert!(
        matches!(r.faults.as_slice(), [Fault::Deleted { writer, from_seq: 20, to_seq: 20, .. }] if writer == "h:2:b"),
        "{}",
        faults(&r)
    );
}

#[tokio::test]
async fn the_public_key_alone_verifies_what_checkpoints_cover() {
    let k = Keyring::generate();
    let sink = MemorySink::new();
    write(&k, &sink, "p:1:a", 10, 4).await;
    let public = AuditKeys::public_only_base64(&k.audit_public_key_base64().unwrap()).unwrap();
    let r = verify_sink(&sink, &public, &VerifyOptions::default())
        .await
        .unwrap();
    assert!(r.is_ok(), "{}", faults(&r));
    assert!(!r.macs_checked);
    assert_eq!(r.verified_records, 11);
    // An edit is caught through the signed chain hash.
    sink.edit_records(|l| l[6] = l[6].replace("\"attempt\":5", "\"attempt\":6"));
    let r = verify_sink(&sink, &public, &VerifyOptions::default())
        .await
        .unwrap();
    assert!(
        matches!(
            r.faults.as_slice(),
            [Fault::ChangedSinceCheckpoint {
                after_seq: Some(3),
                through_seq: 7,
                ..
            }]
        ),
        "{}",
        faults(&r)
    );
    // Another key is named.
    let other = Keyring::generate();
    let wrong = AuditKeys::public_only(&other.audit_verifying_key().unwrap()).unwrap();
    let r = verify_sink(&sink, &wrong, &VerifyOptions::default())
        .await
        .unwrap();
    assert!(r.faults.contains(&Fault::WrongPublicKey), "{}", faults(&r));
}

#[tokio::test]
async fn json_lines_files_round_trip_and_edits_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let k = Keyring::generate();
    let sink = JsonLinesSink::open(&path).unwrap();
    assert!(dir.path().join("audit.checkpoints.jsonl").exists());
    let a = Auditor::start(Arc::new(sink.clone()), &k).unwrap();
    for i in 0..20 {
        a.record(event(i));
    }
    a.flush().await.unwrap();
    for i in 20..40 {
        a.record(event(i));
    }
    a.close().await.unwrap();
    let keys = AuditKeys::from_keyring(&k).unwrap();
    let reader = JsonLinesSink::at(&path);
    let r = verify_sink(&reader, &keys, &VerifyOptions::default())
        .await
        .unwrap();
    assert!(r.is_ok(), "{}", faults(&r));
    assert_eq!((r.records, r.checkpoints), (41, 2));

    // Flip one byte of line 12 (inside the worker name).
    let mut bytes = std::fs::read(&path).unwrap();
    let line_start = bytes
        .split(|b| *b == b'\n')
        .take(11)
        .map(|l| l.len() + 1)
        .sum::<usize>();
    let at = line_start
        + bytes[line_start..]
            .windows(12)
            .position(|w| w == b"\"worker\":\"w\"")
            .unwrap()
        + 10;
    bytes[at] = b'x';
    std::fs::write(&path, &bytes).unwrap();
    let r = verify_sink(&reader, &keys, &VerifyOptions::default())
        .await
        .unwrap();
    assert!(
        matches!(
            r.faults.as_slice(),
            [Fault::Edited {
                seq: 11,
                position: 12,
                ..
            }]
        ),
        "{}",
        faults(&r)
    );

    // The checkpoint file deleted.
    std::fs::remove_file(dir.path().join("audit.checkpoints.jsonl")).unwrap();
    let r = verify_sink(&reader, &keys, &VerifyOptions::default())
        .await
        .unwrap();
    assert!(
        r.faults.contains(&Fault::CheckpointsMissing),
        "{}",
        faults(&r)
    );
}

#[tokio::test]
async fn a_keyring_without_an_audit_signing_key_refuses_to_start() {
    let k = Keyring::generate();
    let toml = k.to_toml_secret();
    assert!(toml.contains("audit_signing_key"));
    let old: String = toml
        .lines()
        .filter(|l| !l.starts_with("audit_signing_key"))
        .collect::<Vec<_>>()
        .join("\n");
    let old = Keyring::from_toml(&old).unwrap();
    assert_eq!(old.audit_verifying_key(), None);
    let e = Auditor::start(Arc::new(MemorySink::new()), &old).unwrap_err();
    assert!(e.to_string().contains("audit_signing_key"), "{e}");
    // The TOML round trip keeps the key.
    let again = Keyring::from_toml(&toml).unwrap();
    assert_eq!(again.audit_verifying_key(), k.audit_verifying_key());
}

#[test]
fn canonical_bytes_are_named_messagepack_in_field_order() {
    let r = sealq::audit::AuditRecord {
        writer: "w".into(),
        seq: 1,
        time_ms: 2,
        event: AuditEvent::QueuePaused {
            queue: "q".into(),
            operator: "op".into(),
        },
        mac: String::new(),
    };
    let bytes = r.canonical_bytes().unwrap();
    // fixmap(4) "writer" "w" "seq" 1 "time_ms" 2 "event" fixmap(3) "type" ...
    assert_eq!(bytes[0], 0x84);
    assert_eq!(&bytes[1..8], b"\xa6writer");
    let expected = b"\x84\xa6writer\xa1w\xa3seq\x01\xa7time_ms\x02\xa5event\x83\xa4type\xacqueue_paused\xa5queue\xa1q\xa8operator\xa2op";
    assert_eq!(bytes, expected.to_vec());
}
