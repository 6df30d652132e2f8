//! XChaCha20-Poly1305, the envelope's AEAD (draft-irtf-cfrg-xchacha-03):
//! HChaCha20 of the key and the nonce's first 16 bytes gives a per-message
//! subkey, which seals with ChaCha20-Poly1305 (RFC 8439) under the 96-bit
//! nonce `0u32 || nonce[16..24]`.
//!
//! HChaCha20 comes from RustCrypto's `chacha20`; the ChaCha20-Poly1305 core
//! from `ring` (already in the build for TLS), whose assembly seals 1 KiB
//! about three times as fast as `chacha20poly1305` 0.11 picking its AVX2
//! backend at run time (docs/benchmarks.md, "A faster AEAD"). The bytes are
//! the same: the tests check this construction against `chacha20poly1305`'s
//! `XChaCha20Poly1305` on every length up to a few blocks, both ways, and
//! against the draft's test vector.
//!
//! The long-lived key is wiped on drop. The per-message subkey is wiped
//! here, but `ring` keeps its own copy in a stack value it does not wipe: a
//! reader of this process' memory could find the subkey of a message just
//! sealed or opened, which opens that message alone (whose plaintext passed
//! through the same memory), never another.

use chacha20::hchacha;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, Tag, UnboundKey};
use zeroize::{Zeroize as _, Zeroizing};

/// Key length in bytes.
pub(crate) const KEY_LEN: usize = 32;
/// Nonce length in bytes (192 bits).
pub(crate) const NONCE_LEN: usize = 24;
/// Tag length in bytes.
pub(crate) const TAG_LEN: usize = 16;

/// The AEAD failed: sealing a message longer than ChaCha20-Poly1305 allows
/// (256 GiB), or opening one whose tag does not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AeadError;

/// An XChaCha20-Poly1305 key. Never printed; wiped on drop.
#[derive(Clone)]
pub(crate) struct XChaCha {
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl std::fmt::Debug for XChaCha {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("XChaCha(..)")
    }
}

impl XChaCha {
    /// The cipher of `key`.
    pub(crate) fn new(key: &[u8; KEY_LEN]) -> Self {
        XChaCha {
            key: Zeroizing::new(*key),
        }
    }

    /// The RFC 8439 key and nonce for `nonce`.
    fn inner(&self, nonce: &[u8; NONCE_LEN]) -> Result<(LessSafeKey, Nonce), AeadError> {
        let (head, tail) = nonce.split_at(16);
        let head: &[u8; 16] = head.try_into().map_err(|_| AeadError)?;
        let mut subkey = hchacha::<chacha20::R20>(&(*self.key).into(), &(*head).into());
        let key = UnboundKey::new(&CHACHA20_POLY1305, subkey.as_slice());
        subkey.as_mut_slice().zeroize();
        let key = LessSafeKey::new(key.map_err(|_| AeadError)?);
        let mut short = [0u8; 12];
        short[4..].copy_from_slice(tail);
        Ok((key, Nonce::assume_unique_for_key(short)))
    }

    /// Encrypt `in_out` in place, bound to `ad`; returns the tag.
    pub(crate) fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        ad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], AeadError> {
        let (key, nonce) = self.inner(nonce)?;
        let tag = key
            .seal_in_place_separate_tag(nonce, Aad::from(ad), in_out)
            .map_err(|_| AeadError)?;
        tag.as_ref().try_into().map_err(|_| AeadError)
    }

    /// Authenticate `in_out` and `ad` against `tag` and decrypt `in_out` in
    /// place. On an error `in_out` holds nothing of the plaintext worth
    /// keeping: the caller discards it.
    pub(crate) fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        ad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AeadError> {
        let (key, nonce) = self.inner(nonce)?;
        key.open_in_place_separate_tag(nonce, Aad::from(ad), Tag::from(*tag), in_out, 0..)
            .map(|_| ())
            .map_err(|_| AeadError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20poly1305::aead::AeadInOut as _;
    use chacha20poly1305::{KeyInit as _, XChaCha20Poly1305, XNonce};

    fn reference(key: &[u8; 32]) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(key.into())
    }

    #[test]
    fn same_bytes_as_the_reference_xchacha20poly1305_for_every_length() {
        let key: [u8; 32] = std::array::from_fn(|i| (i * 7 + 3) as u8);
        let ours = XChaCha::new(&key);
        let theirs = reference(&key);
        for len in (0..=300).chain([1023, 1024, 1025, 4096, 65_537]) {
            let nonce: [u8; 24] = std::array::from_fn(|i| (i * 13 + len) as u8);
            let ad: Vec<u8> = (0..(len % 37)).map(|i| i as u8).collect();
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 + 5) as u8).collect();

            let mut a = plain.clone();
            let tag_a = ours.seal_in_place(&nonce, &ad, &mut a).unwrap();
            let mut b = plain.clone();
            let tag_b = theirs
                .encrypt_inout_detached(<&XNonce>::from(&nonce), &ad, b.as_mut_slice().into())
                .unwrap();
            assert_eq!(a, b, "ciphertext differs at length {len}");
            assert_eq!(&tag_a[..], &tag_b[..], "tag differs at length {len}");

            // Each opens the other's.
            let mut c = a.clone();
            ours.open_in_place(&nonce, &ad, &mut c, &tag_a).unwrap();
            assert_eq!(c, plain);
            let mut d = a.clone();
            theirs
                .decrypt_inout_detached(
                    <&XNonce>::from(&nonce),
                    &ad,
                    d.as_mut_slice().into(),
                    (&tag_a).into(),
                )
                .unwrap();
            assert_eq!(d, plain);
        }
    }

    #[test]
    fn draft_xchacha_test_vector() {
        // draft-irtf-cfrg-xchacha-03, appendix A.3.1.
        let plain = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let ad = hex::decode("50515253c0c1c2c3c4c5c6c7").unwrap();
        let key: [u8; 32] =
            hex::decode("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
                .unwrap()
                .try_into()
                .unwrap();
        let nonce: [u8; 24] = hex::decode("404142434445464748494a4b4c4d4e4f5051525354555657")
            .unwrap()
            .try_into()
            .unwrap();
        let mut buf = plain.to_vec();
        let tag = XChaCha::new(&key)
            .seal_in_place(&nonce, &ad, &mut buf)
            .unwrap();
        assert_eq!(
            hex::encode(&buf),
            "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb\
             731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452\
             2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9\
             21f9664c97637da9768812f615c68b13b52e"
        );
        assert_eq!(hex::encode(tag), "c0875924c1c7987947deafd8780acf49");
    }

    #[test]
    fn a_changed_byte_anywhere_fails_to_open() {
        let x = XChaCha::new(&[9; 32]);
        let nonce = [4; 24];
        let mut ct = b"sealed task payload".to_vec();
        let tag = x.seal_in_place(&nonce, b"identity", &mut ct).unwrap();
        for i in 0..ct.len() {
            let mut bad = ct.clone();
            bad[i] ^= 1;
            assert_eq!(
                x.open_in_place(&nonce, b"identity", &mut bad, &tag),
                Err(AeadError)
            );
        }
        let mut bad_tag = tag;
        bad_tag[15] ^= 0x80;
        assert!(
            x.open_in_place(&nonce, b"identity", &mut ct.clone(), &bad_tag)
                .is_err()
        );
        assert!(
            x.open_in_place(&nonce, b"identitz", &mut ct.clone(), &tag)
                .is_err()
        );
        let mut other_nonce = nonce;
        other_nonce[20] ^= 1;
        assert!(
            x.open_in_place(&other_nonce, b"identity", &mut ct.clone(), &tag)
                .is_err()
        );
        let mut good = ct.clone();
        x.open_in_place(&nonce, b"identity", &mut good, &tag)
            .unwrap();
        assert_eq!(good, b"sealed task payload");
    }
}
