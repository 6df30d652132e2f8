//! Check values of sealing keys: what a broker records of the keyring in
//! use, so a process started with another keyring can tell before it
//! touches anything (`keyring_check::stored`).
//!
//! A check value is 16 bytes derived from one sealing key under a domain
//! label of its own (`seal::key_check`); it identifies the key without
//! revealing it and cannot be used to derive it or anything else of the
//! keyring.

/// Length of a check value in bytes.
pub const KEY_CHECK_LEN: usize = 16;

/// The check value of one sealing key, with the key's id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyCheck {
    /// The key's id (as envelopes name it).
    pub key_id: String,
    /// The check value.
    pub value: [u8; KEY_CHECK_LEN],
}

impl KeyCheck {
    /// The value as lowercase hex (32 characters), how brokers store it.
    pub fn value_hex(&self) -> String {
        crate::model::hex::encode(self.value)
    }

    /// A check value read back from storage: `None` when `hex` is not 32
    /// hex digits (a damaged or foreign entry).
    pub fn from_hex(key_id: impl Into<String>, hex: &str) -> Option<Self> {
        let bytes = hex::decode(hex.trim()).ok()?;
        Some(KeyCheck {
            key_id: key_id.into(),
            value: bytes.try_into().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_other_lengths() {
        let c = KeyCheck {
            key_id: "k1".into(),
            value: [0xab; KEY_CHECK_LEN],
        };
        assert_eq!(c.value_hex().len(), 32);
        assert_eq!(KeyCheck::from_hex("k1", &c.value_hex()), Some(c));
        assert_eq!(KeyCheck::from_hex("k1", "abcd"), None);
        assert_eq!(
            KeyCheck::from_hex("k1", "not hex at all, not hex at al"),
            None
        );
    }
}
