//! Envelope cost: seal and open of a 1 KiB payload with a precomputed keyring.
//!
//! `cargo bench -p sealq --bench envelope -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sealq::envelope::{Aad, Purpose};
use sealq::{Backoff, Keyring, SubjectTag, TaskId, TaskPolicy};

fn envelope(c: &mut Criterion) {
    let keyring = Keyring::generate();
    let aad = Aad {
        purpose: Purpose::Payload,
        task_id: TaskId::new(),
        queue: "default",
        kind: "email.send",
        producer: "web-1",
        created_at_ms: 1_795_370_400_000,
        not_after_ms: Some(1_795_456_800_000),
        subject_tag: Some(SubjectTag([7; 32])),
        policy: TaskPolicy {
            not_before_ms: Some(1_795_370_460_000),
            deadline_ms: Some(1_795_374_000_000),
            timeout_ms: Some(30_000),
            max_retries: 25,
            backoff: Backoff::default(),
            retention_ms: 86_400_000,
        },
    };
    let payload = vec![0x5au8; 1024];
    let sealed = keyring.seal(&aad, &payload).expect("seal");

    let mut g = c.benchmark_group("envelope_1KiB");
    g.throughput(Throughput::Bytes(payload.len() as u64));
    g.bench_function("seal", |b| {
        b.iter(|| keyring.seal(black_box(&aad), black_box(&payload)))
    });
    g.bench_function("open", |b| {
        b.iter(|| keyring.open(black_box(&aad), black_box(&sealed)))
    });
    g.bench_function("seal+open", |b| {
        b.iter(|| {
            let env = keyring
                .seal(black_box(&aad), black_box(&payload))
                .expect("seal");
            keyring.open(black_box(&aad), &env).expect("open")
        })
    });

    // Baseline: the bare AEAD on the same bytes, to show the envelope's own
    // overhead (header, associated data, allocation, nonce from the OS).
    let cipher = XChaCha20Poly1305::new(&[9u8; 32].into());
    let nonce = XNonce::from([3u8; 24]);
    let mut buf = payload.clone();
    g.bench_function("bare_aead_encrypt", |b| {
        b.iter(|| {
            cipher
                .encrypt_inout_detached(&nonce, black_box(b"aad"), buf.as_mut_slice().into())
                .expect("encrypt")
        })
    });
    g.finish();
}

criterion_group!(benches, envelope);
criterion_main!(benches);
