//! Finding 5 of the security review: the audit log cannot lose whole parts
//! silently. Each writer's genesis names the checkpoint store's head when
//! it started, so removing an earlier writer (or cutting its tail with its
//! last checkpoint) is caught by a later writer; an anchor catches a cut
//! newest tail, a replaced log and an emptied one; records MACed with a key
//! the verifier does not hold are reported as an unknown key.

use std::sync::Arc;

use sealq::audit::{
    AuditEvent, AuditKeys, AuditSink, Auditor, Fault, JsonLinesSink, MemorySink, VerifyOptions,
    VerifyReport, make_anchor, verify_sink,
};
use sealq::{Keyring, TaskId};

fn event(i: u64) -> AuditEvent {
    AuditEvent::Requeued {
        task: TaskId::new(),
        worker: "w".into(),
        attempt: i as u32,
    }
}

/// `n` events from `writer` (plus its genesis), closed.
async fn write(keyring: &Keyring, sink: Arc<dyn AuditSink>, writer: &str, n: u64, every: u64) {
    let a = Auditor::builder(sink, keyring)
        .writer(writer)
        .checkpoint_every(every)
        .start()
        .unwrap();
    for i in 0..n {
        a.record(event(i));
    }
    let stats = a.close().await.unwrap();
    assert_eq!(stats.records, n + 1, "the events and the genesis");
}

async fn check(
    keyring: &Keyring,
    sink: &dyn AuditSink,
    anchor: Option<sealq::audit::Anchor>,
) -> VerifyReport {
    let keys = AuditKeys::from_keyring(keyring).unwrap();
    let options = VerifyOptions {
        anchor,
        ..VerifyOptions::default()
    };
    verify_sink(sink, &keys, &options).await.unwrap()
}

async fn anchor_of(keyring: &Keyring, sink: &dyn AuditSink) -> sealq::audit::Anchor {
    let keys = AuditKeys::from_keyring(keyring).unwrap();
    let records = sink.read_records().await.unwrap();
    let cps = sink.read_checkpoints().await.unwrap();
    make_anchor(&records, cps.as_deref(), &keys).unwrap()
}

fn faults(r: &VerifyReport) -> String {
    r.faults
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn drop_writer(lines: &mut Vec<String>, writer: &str) {
    let needle = format!("\"writer\":\"{writer}\"");
    lines.retain(|l| !l.contains(&needle));
}

#[tokio::test]
async fn finding_5_a_fresh_log_has_genesis_heads_that_verify() {
    let k = Keyring::generate();
    let sink = MemorySink::new();
    write(&k, Arc::new(sink.clone()), "a", 5, 1000).await;
    write(&k, Arc::new(sink.clone()), "b", 5, 1000).await;
    let r = check(&k, &sink, None).await;
    assert!(r.is_ok(), "{}", faults(&r));
    assert_eq!(r.heads_checked, 2);
    assert!(r.without_genesis.is_empty());
    let anchor = anchor_of(&k, &sink).await;
    let r = check(&k, &sink, Some(anchor.clone())).await;
    assert!(r.is_ok() && r.anchor_checked, "{}", faults(&r));
    // The log growing after the anchor still extends it.
    write(&k, Arc::new(sink.clone()), "c", 3, 1000).await;
    let r = check(&k, &sink, Some(anchor)).await;
    assert!(r.is_ok(), "{}", faults(&r));
}

#[tokio::test]
async fn finding_5_a_removed_writer_is_detected_by_a_later_writers_genesis() {
    let k = Keyring::generate();
    let sink = MemorySink::new();
    write(&k, Arc::new(sink.clone()), "a", 5, 1000).await;
    write(&k, Arc::new(sink.clone()), "b", 5, 1000).await;
    sink.edit_records(|l| drop_writer(l, "a"));
    sink.edit_checkpoints(|c| drop_writer(c.as_mut().unwrap(), "a"));
    let r = check(&k, &sink, None).await;
    assert!(
        matches!(r.faults.as_slice(), [Fault::LogHeadMismatch { writer, seen: 1, stored: 1 }] if writer == "b"),
        "{}",
        faults(&r)
    );
    assert!(faults(&r).contains("writer b"), "{}", faults(&r));
}

#[tokio::test]
async fn finding_5_an_earlier_writers_cut_tail_and_last_checkpoint_is_detected() {
    let k = Keyring::generate();
    let sink = MemorySink::new();
    write(&k, Arc::new(sink.clone()), "a", 9, 5).await;
    write(&k, Arc::new(sink.clone()), "b", 2, 1000).await;
    // a: genesis + 9 records, checkpoints at seq 4 and 9. Cut seqs 5..=9
    // and the checkpoint at 9.
    sink.edit_records(|l| l.retain(|x| !(x.contains("\"writer\":\"a\"") && seq_of(x) >= 5)));
    sink.edit_checkpoints(|c| {
        c.as_mut()
            .unwrap()
            .retain(|x| !(x.contains("\"writer\":\"a\"") && seq_of(x) == 9))
    });
    let r = check(&k, &sink, None).await;
    assert!(
        r.faults
            .iter()
            .any(|f| matches!(f, Fault::LogHeadMismatch { writer, .. } if writer == "b")),
        "{}",
        faults(&r)
    );
}

fn seq_of(line: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["seq"].as_u64().unwrap()
}

#[tokio::test]
async fn finding_5_a_cut_newest_tail_with_its_checkpoint_is_caught_with_an_anchor() {
    let k = Keyring::generate();
    let sink = MemorySink::new();
    write(&k, Arc::new(sink.clone()), "a", 9, 5).await;
    let anchor = anchor_of(&k, &sink).await;
    sink.edit_records(|l| l.retain(|x| seq_of(x) < 5));
    sink.edit_checkpoints(|c| c.as_mut().unwrap().retain(|x| seq_of(x) < 9));
    // Without the anchor the newest tail is not detected (said, not hidden).
    let r = check(&k, &sink, None).await;
    assert!(r.is_ok(), "{}", faults(&r));
    assert!(!r.anchor_checked);
    let r = check(&k, &sink, Some(anchor)).await;
    assert!(
        r.faults.iter().any(|f| matches!(f, Fault::AnchorTailCut { writer, anchored_seq: 9, last_seq: 4 } if writer == "a")),
        "{}",
        faults(&r)
    );
}

#[tokio::test]
async fn finding_5_a_replaced_log_is_caught_with_an_anchor() {
    let k = Keyring::generate();
    let sink = MemorySink::new();
    write(&k, Arc::new(sink.clone()), "a", 5, 1000).await;
    let anchor = anchor_of(&k, &sink).await;
    // Another run's log, same keyring, same writer name even.
    let other = MemorySink::new();
    write(&k, Arc::new(other.clone()), "a", 7, 1000).await;
    let (recs, cps) = (lines(&other, false), lines(&other, true));
    sink.edit_records(|l| *l = recs);
    sink.edit_checkpoints(|c| *c = Some(cps));
    let r = check(&k, &sink, None).await;
    assert!(
        r.is_ok(),
        "a replaced log is self-consistent: {}",
        faults(&r)
    );
    let r = check(&k, &sink, Some(anchor)).await;
    assert!(
        r.faults
            .iter()
            .any(|f| matches!(f, Fault::AnchorMismatch { writer, .. } if writer == "a")),
        "{}",
        faults(&r)
    );
    assert!(
        r.faults
            .iter()
            .any(|f| matches!(f, Fault::AnchorCheckpointsChanged { .. })),
        "{}",
        faults(&r)
    );
}

fn lines(sink: &MemorySink, checkpoints: bool) -> Vec<String> {
    let mut out = Vec::new();
    if checkpoints {
        sink.edit_checkpoints(|c| out = c.clone().unwrap_or_default());
    } else {
        sink.edit_records(|l| out = l.clone());
    }
    out
}

#[tokio::test]
async fn finding_5_an_emptied_log_is_caught_with_an_anchor() {
    let k = Keyring::generate();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let sink = JsonLinesSink::open(&path).unwrap();
    write(&k, Arc::new(sink.clone()), "a", 5, 1000).await;
    write(&k, Arc::new(sink.clone()), "b", 5, 1000).await;
    let anchor = anchor_of(&k, &sink).await;
    std::fs::write(&path, b"").unwrap();
    std::fs::write(JsonLinesSink::checkpoints_path_for(&path), b"").unwrap();
    let r = check(&k, &sink, None).await;
    assert!(r.is_ok(), "an empty log is a valid log: {}", faults(&r));
    let r = check(&k, &sink, Some(anchor)).await;
    assert!(
        r.faults.contains(&Fault::AnchorCheckpointsMissing {
            anchored: 2,
            stored: 0
        }),
        "{}",
        faults(&r)
    );
    for w in ["a", "b"] {
        assert!(
            r.faults.contains(&Fault::AnchorWriterMissing {
                writer: w.into(),
                seq: 5
            }),
            "{}",
            faults(&r)
        );
    }
}

#[tokio::test]
async fn finding_5_a_writer_removed_from_files_is_detected() {
    let k = Keyring::generate();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let sink = JsonLinesSink::open(&path).unwrap();
    write(&k, Arc::new(sink.clone()), "a", 5, 1000).await;
    write(&k, Arc::new(sink.clone()), "b", 5, 1000).await;
    for p in [path.clone(), JsonLinesSink::checkpoints_path_for(&path)] {
        let text = std::fs::read_to_string(&p).unwrap();
        let kept: String = text
            .lines()
            .filter(|l| !l.contains("\"writer\":\"a\""))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&p, kept).unwrap();
    }
    let r = check(&k, &sink, None).await;
    assert!(
        matches!(r.faults.as_slice(), [Fault::LogHeadMismatch { writer, .. }] if writer == "b"),
        "{}",
        faults(&r)
    );
}

#[tokio::test]
async fn finding_5_records_of_another_key_are_reported_as_an_unknown_key() {
    let k = Keyring::generate();
    let other = Keyring::generate();
    let sink = MemorySink::new();
    write(&k, Arc::new(sink.clone()), "a", 5, 1000).await;
    write(&other, Arc::new(sink.clone()), "stranger", 4, 1000).await;
    write(&k, Arc::new(sink.clone()), "b", 5, 1000).await;
    let r = check(&k, &sink, None).await;
    let other_id = AuditKeys::from_keyring(&other)
        .unwrap()
        .mac_key_id()
        .unwrap();
    assert_eq!(
        r.faults,
        vec![Fault::UnknownKey {
            writer: "stranger".into(),
            key_id: Some(other_id.clone()),
            records: 5
        }],
        "{}",
        faults(&r)
    );
    assert!(r.only_unknown_keys());
    let text = faults(&r);
    assert!(text.contains(&format!("unknown key {other_id}")), "{text}");
    assert!(!text.contains("forged"), "{text}");
    // The rest verified: both of our writers, heads included.
    assert_eq!(r.verified_records, 12);
    assert_eq!(r.heads_checked, 2);

    // With the public key alone: the same, from the genesis' public key.
    let pk = k.audit_verifying_key().unwrap();
    let keys = AuditKeys::public_only(&pk).unwrap();
    let r = verify_sink(&sink, &keys, &VerifyOptions::default())
        .await
        .unwrap();
    assert!(r.only_unknown_keys(), "{}", faults(&r));
}

#[tokio::test]
async fn finding_5_relabelling_a_genesis_to_another_key_is_an_edit_not_an_unknown_key() {
    let k = Keyring::generate();
    let sink = MemorySink::new();
    write(&k, Arc::new(sink.clone()), "b", 2, 1000).await;
    // A writer of one record: its genesis alone.
    let a = Auditor::builder(Arc::new(sink.clone()), &k)
        .writer("a")
        .start()
        .unwrap();
    a.record(event(0));
    a.flush().await.unwrap();
    // Keep a's genesis only, and none of its checkpoints.
    sink.edit_records(|l| l.retain(|x| !x.contains("\"writer\":\"a\"") || seq_of(x) == 0));
    sink.edit_checkpoints(|c| drop_writer(c.as_mut().unwrap(), "a"));
    let id = AuditKeys::from_keyring(&k).unwrap().mac_key_id().unwrap();
    sink.edit_records(|l| {
        let i = l
            .iter()
            .position(|x| x.contains("\"writer\":\"a\""))
            .unwrap();
        l[i] = l[i].replace(&id, "0123456789abcdef");
    });
    let r = check(&k, &sink, None).await;
    assert!(
        matches!(r.faults.as_slice(), [Fault::Edited { writer, seq: 0, .. }] if writer == "a"),
        "{}",
        faults(&r)
    );
}
