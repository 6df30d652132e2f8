//! Payload policy cost: size budget plus scanner over a typical 1 KiB payload.
//!
//! `cargo bench -p sealq --bench policy -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sealq::PayloadPolicy;
use sealq::policy::Rule;
use serde_json::json;

fn policy(c: &mut Criterion) {
    let payload = rmp_serde::to_vec_named(&json!({
        "order_id": "ord_01890a5dac96774bbcceb302099a8057",
        "customer": {
            "id": "cus_NffrFeUfNV2Hib", "name": "Ann Example", "email": "ann@example.com",
            "phone": "+44 20 7946 0958",
            "address": { "line1": "1 Main Street", "city": "London", "zip": "N1 9GU" },
        },
        "items": (0..8).map(|i| json!({
            "sku": format!("SKU-{i:06}"), "qty": i, "price": 19.99,
            "title": "A perfectly ordinary product title",
        })).collect::<Vec<_>>(),
        "created_at_ms": 1712345678901u64,
        "note": "Please leave the parcel at the door; ring twice. Thanks!",
        "card": { "brand": "visa", "last4": "4242" },
    }))
    .expect("encode");
    let full = PayloadPolicy::default();
    let decode_only = Rule::ALL
        .into_iter()
        .fold(PayloadPolicy::default(), |p, r| p.allow_in_queue(r, "q"));
    let mut g = c.benchmark_group(format!("policy_{}B", payload.len()));
    g.bench_function("check", |b| b.iter(|| full.check("q", black_box(&payload))));
    g.bench_function("decode_only", |b| {
        b.iter(|| decode_only.check("q", black_box(&payload)))
    });
    g.finish();

    // One 1 KiB string of random letters and digits, as `sealq bench` sends:
    // the scanners' anchors (`A`, `e`, digits) turn up every few bytes.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let filler: String = (0..1000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let a = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
            a[(state % a.len() as u64) as usize] as char
        })
        .collect();
    let bench_payload =
        rmp_serde::to_vec_named(&json!({"seq": 1, "data": filler})).expect("encode");
    let mut g = c.benchmark_group(format!("policy_random_{}B", bench_payload.len()));
    g.bench_function("check", |b| {
        b.iter(|| full.check("q", black_box(&bench_payload)))
    });
    g.finish();
}

criterion_group!(benches, policy);
criterion_main!(benches);
