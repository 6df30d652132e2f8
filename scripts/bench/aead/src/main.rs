//! See Cargo.toml: one AEAD, N seals of 1,100 bytes, microseconds per seal.
use chacha20poly1305::{aead::{AeadInOut, KeyInit}, XChaCha20Poly1305, Key, XNonce};
use std::time::Instant;
fn main() {
    let n: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(200000);
    let which = std::env::args().nth(2).unwrap_or("rc".into());
    let key = [7u8; 32];
    let mut buf = vec![3u8; 1100];
    let t = Instant::now();
    let mut acc = 0u8;
    if which == "rc" {
        let c = XChaCha20Poly1305::new(<&Key>::from(&key));
        for i in 0..n {
            let mut nonce = [0u8; 24]; nonce[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let tag = c.encrypt_inout_detached(<&XNonce>::from(&nonce), b"aad-bytes-here-xx", (&mut buf[..]).into()).unwrap();
            acc ^= tag[0];
        }
    } else {
        use ring::aead::{LessSafeKey, UnboundKey, CHACHA20_POLY1305, Nonce, Aad};
        for i in 0..n {
            let mut nonce = [0u8; 24]; nonce[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let sub = chacha20::hchacha::<chacha20::R20>(&key.into(), (&nonce[..16]).try_into().unwrap());
            let k = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &sub).unwrap());
            let mut n12 = [0u8; 12]; n12[4..].copy_from_slice(&nonce[16..]);
            let tag = k.seal_in_place_separate_tag(Nonce::assume_unique_for_key(n12), Aad::from(b"aad-bytes-here-xx"), &mut buf[..]).unwrap();
            acc ^= tag.as_ref()[0];
        }
    }
    let e = t.elapsed();
    println!("{which} {:.3} us/op acc {acc}", e.as_secs_f64() * 1e6 / n as f64);
}
