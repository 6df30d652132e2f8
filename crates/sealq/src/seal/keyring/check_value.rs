//! Check values of the keyring's sealing keys ([`KeyCheck`]): what a broker
//! records of the keyring in use (`keyring_check::stored`).
//!
//! `check = HKDF-SHA-256(salt = "sealq-subkey-v1", ikm = key secret,
//! info = "sealq-key-check-v1")`, first 16 bytes. HKDF under a label of its
//! own gives a value independent of every other key derived from the same
//! secret (KEKs, …); knowing it does not help to find the key (that would
//! invert HMAC-SHA-256), and 128 bits make two different keys with equal
//! values a non-event.

use super::Keyring;
use crate::model::key_check::{KEY_CHECK_LEN, KeyCheck};

/// The HKDF label of a sealing key's check value. Never used for anything else.
pub const KEY_CHECK_LABEL: &str = "sealq-key-check-v1";

impl Keyring {
    /// The check value of every sealing key, by key id (sorted). Empty for
    /// an operator keyring, which holds none.
    pub fn key_checks(&self) -> Vec<KeyCheck> {
        self.key_ids()
            .filter_map(|id| {
                let okm = self.derive_from_sealing_key(id, KEY_CHECK_LABEL)?;
                let mut value = [0u8; KEY_CHECK_LEN];
                value.copy_from_slice(&okm[..KEY_CHECK_LEN]);
                Some(KeyCheck {
                    key_id: id.to_owned(),
                    value,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_values_name_the_key_and_differ_between_keys() {
        let mut a = Keyring::generate();
        let checks = a.key_checks();
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].key_id, a.primary_key_id());
        assert_eq!(a.key_checks(), checks, "deterministic");
        // Another secret under the same id gives another value.
        let b = Keyring::from_toml(
            &a.to_toml_secret().replace(
                a.to_toml_secret()
                    .lines()
                    .find(|l| l.starts_with("secret"))
                    .unwrap(),
                &format!(
                    "secret = \"{}\"",
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32])
                ),
            ),
        )
        .unwrap();
        assert_eq!(b.key_checks()[0].key_id, checks[0].key_id);
        assert_ne!(b.key_checks()[0].value, checks[0].value);
        // Not a prefix of any other derived key.
        let kek = a
            .derive_from_sealing_key(a.primary_key_id(), "sealq-kek-v2")
            .unwrap();
        assert_ne!(&kek[..KEY_CHECK_LEN], &checks[0].value[..]);
        // Rotation adds one; the old one is unchanged.
        a.rotate();
        let after = a.key_checks();
        assert_eq!(after.len(), 2);
        assert!(after.contains(&checks[0]));
        // An operator keyring has none.
        assert!(a.operator_keyring().unwrap().key_checks().is_empty());
    }
}
