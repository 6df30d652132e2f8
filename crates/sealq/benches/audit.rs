//! Audit log cost per record: the writer's work for one `leased` record
//! (canonical MessagePack, chain MAC and public hash, the JSON line sinks
//! store), apart from any sink.
//!
//! Also the one-time work of a writer's start (finding 5): parsing a
//! checkpoint store of 10,000 entries and computing its tree head.
//!
//! `cargo bench -p sealq --bench audit -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sealq::TaskId;
use sealq::audit::{
    AuditEvent, AuditRecord, Checkpoint, Loaded, chain_hash, checkpoint_line, checkpoints_root,
    record_line, record_mac,
};

fn record() -> AuditRecord {
    AuditRecord {
        writer: "worker-host:4242:9f3ac1d2".into(),
        seq: 123_456,
        time_ms: 1_795_370_400_000,
        event: AuditEvent::Leased {
            task: TaskId::new(),
            queue: "default".into(),
            worker: "worker-host:4242:9f3ac1d2".into(),
            attempt: 1,
            lease_expires_at_ms: 1_795_370_430_000,
        },
        mac: "00".repeat(32),
    }
}

fn audit(c: &mut Criterion) {
    let r = record();
    let key = [7u8; 32];
    let prev = [9u8; 32];
    let canonical = r.canonical_bytes().expect("encodes");
    let mut g = c.benchmark_group("audit_record");
    g.bench_function("canonical", |b| b.iter(|| black_box(&r).canonical_bytes()));
    g.bench_function("mac+hash", |b| {
        b.iter(|| {
            let mac = record_mac(black_box(&key), black_box(&prev), black_box(&canonical));
            chain_hash(black_box(&prev), &mac, black_box(&canonical))
        })
    });
    g.bench_function("json_line", |b| b.iter(|| record_line(black_box(&r))));
    g.bench_function("all", |b| {
        b.iter(|| {
            let canonical = black_box(&r).canonical_bytes().expect("encodes");
            let mac = record_mac(&key, &prev, &canonical);
            let hash = chain_hash(&prev, &mac, &canonical);
            (hash, record_line(black_box(&r)))
        })
    });
    g.finish();
}

fn genesis(c: &mut Criterion) {
    let lines: Vec<String> = (0..10_000u64)
        .map(|i| {
            checkpoint_line(&Checkpoint {
                writer: format!("worker-host:{}:9f3ac1d2", i % 50),
                seq: i * 1000,
                head_mac: "ab".repeat(32),
                head_hash: "cd".repeat(32),
                time_ms: 1_795_370_400_000,
                signature: "ef".repeat(64),
            })
        })
        .collect();
    let mut g = c.benchmark_group("audit_genesis");
    g.sample_size(10);
    g.bench_function("head_of_10k_checkpoints", |b| {
        b.iter(|| {
            let parsed: Vec<Loaded<Checkpoint>> = black_box(&lines)
                .iter()
                .enumerate()
                .map(|(i, l)| Loaded::parse(i as u64 + 1, l.as_bytes()))
                .collect();
            checkpoints_root(parsed.iter().map(|l| l.item.as_ref()))
        })
    });
    g.finish();
}

criterion_group!(benches, audit, genesis);
criterion_main!(benches);
