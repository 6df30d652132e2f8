//! Lower-case hex for the hot paths (audit MACs and ciphertext hashes, task
//! subject tags): a table lookup per nibble into a string of the right
//! size, where `hex::encode` goes through a `char` iterator (measured at
//! about 3.5 % of a worker's CPU with the audit log on, `docs/benchmarks.md`).

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `bytes` as lower-case hex, the same text as `hex::encode`.
pub(crate) fn encode(bytes: impl AsRef<[u8]>) -> String {
    let bytes = bytes.as_ref();
    let mut s = Vec::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.extend_from_slice(&[DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0x0f)]]);
    }
    // Invariant: every byte is an ASCII hex digit.
    String::from_utf8(s).expect("hex digits are ASCII")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn same_text_as_the_hex_crate(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
            prop_assert_eq!(super::encode(&bytes), hex::encode(&bytes));
        }
    }
}
