//! Failing closed before any task exists: the check values the broker
//! recorded of the keyring in use ([`Broker::key_checks`]).
//!
//! The first client to enqueue and the first worker to start record the
//! check value of each of their keyring's sealing keys
//! ([`Keyring::key_checks`], put-if-absent per key id). Every later start
//! compares ([`check_recorded_keys`]):
//!
//! - nothing recorded yet (a new broker), or a backend that keeps none:
//!   the keyring is accepted (and recorded);
//! - a key id the broker knows whose recorded value differs from the
//!   keyring's key of that id: **refused**, always. It is a different key
//!   under the same name, so every task it sealed would fail to open;
//! - no key id in common with what the broker recorded: **refused**, unless
//!   the caller says this is a deliberate new deployment on this broker
//!   ([`RecordOptions::accept_new_keyring`]: `--accept-new-keyring` on the
//!   command line); the new keyring's values are then recorded beside the
//!   old ones;
//! - at least one key in common, with equal values: accepted; keys the
//!   broker does not know yet (after `keys rotate`) are recorded.
//!
//! An operator keyring ([`crate::seal::keyring::role`]) holds no sealing
//! key: it is neither refused for that nor records anything.

use std::collections::BTreeSet;

use crate::error::Error;
use crate::model::key_check::KeyCheck;
use crate::seal::keyring::Keyring;
use crate::store::broker::Broker;

/// How [`check_recorded_keys`] treats what it finds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordOptions {
    /// Accept a keyring that has no key in common with what the broker
    /// recorded (a deliberate new deployment on an old broker). A key id in
    /// common with a different value is refused all the same.
    pub accept_new_keyring: bool,
    /// Record this keyring's check values once accepted (a client or a
    /// worker; not an operator's read-only look).
    pub record: bool,
}

/// What the broker's recorded check values say of a keyring.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredKeyCheck {
    /// Whether the backend keeps check values at all.
    pub kept: bool,
    /// Key ids the broker has recorded.
    pub recorded: BTreeSet<String>,
    /// Key ids of this keyring whose recorded value matches.
    pub matching: BTreeSet<String>,
    /// Key ids of this keyring recorded with another value: a different key
    /// under the same id.
    pub conflicting: BTreeSet<String>,
    /// Key ids of this keyring (empty for an operator keyring).
    pub held: BTreeSet<String>,
}

impl StoredKeyCheck {
    /// Compare `keyring` with `recorded` (`None`: not kept by the backend).
    pub fn compare(recorded: Option<&[KeyCheck]>, keyring: &Keyring) -> Self {
        let mut out = StoredKeyCheck {
            kept: recorded.is_some(),
            ..StoredKeyCheck::default()
        };
        let recorded = recorded.unwrap_or_default();
        out.recorded = recorded.iter().map(|c| c.key_id.clone()).collect();
        for mine in keyring.key_checks() {
            out.held.insert(mine.key_id.clone());
            if let Some(theirs) = recorded.iter().find(|c| c.key_id == mine.key_id) {
                // Not secret (check values are public), so no constant time.
                if theirs.value == mine.value {
                    out.matching.insert(mine.key_id);
                } else {
                    out.conflicting.insert(mine.key_id);
                }
            }
        }
        out
    }

    /// `true` when a key id in common has another value (always refused).
    pub fn is_conflict(&self) -> bool {
        !self.conflicting.is_empty()
    }

    /// `true` when the broker recorded keys, this keyring holds sealing
    /// keys, and none of them is among the recorded ones.
    pub fn is_unknown_keyring(&self) -> bool {
        !self.recorded.is_empty() && !self.held.is_empty() && self.matching.is_empty()
    }

    /// The refusal, if `options` do not let this keyring start.
    pub fn refusal(&self, broker: &str, options: RecordOptions) -> Option<String> {
        let list = |s: &BTreeSet<String>| {
            if s.is_empty() {
                "none".to_owned()
            } else {
                s.iter().cloned().collect::<Vec<_>>().join(", ")
            }
        };
        if self.is_conflict() {
            return Some(format!(
                "this keyring's key(s) {} are not the key(s) {broker} recorded under the same \
                 id(s): a different secret under the same name, which would open none of the \
                 tasks they sealed (the broker knows key(s) {}; this keyring holds {}). Start \
                 with the keyring that sealed them (--keyring, SEALQ_KEYRING or \
                 SEALQ_KEYRING_TOML). --accept-new-keyring does not override this: a new key \
                 needs a new id (`sealq keys generate` or `sealq keys rotate` make one); \
                 nothing was leased, stored or changed",
                list(&self.conflicting),
                list(&self.recorded),
                list(&self.held),
            ));
        }
        if self.is_unknown_keyring() && !options.accept_new_keyring {
            return Some(format!(
                "this keyring holds none of the keys {broker} has recorded (the broker knows \
                 key(s) {}; this keyring holds {}): it is not the keyring this deployment \
                 seals with. Start with the keyring that sealed its tasks (--keyring, \
                 SEALQ_KEYRING or SEALQ_KEYRING_TOML). If this is a deliberate new deployment \
                 on this broker, pass --accept-new-keyring (library: \
                 accept_new_keyring(true) on the client or worker builder); tasks sealed with \
                 the old keyring stay unopened; nothing was leased, stored or changed",
                list(&self.recorded),
                list(&self.held),
            ));
        }
        None
    }
}

/// Read the check values `broker` recorded, compare `keyring` with them,
/// refuse with [`Error::Keyring`] (the message says what to do) when it
/// does not fit, and record its own values when `options.record` says so.
/// An operator keyring is compared with nothing and records nothing.
///
/// Broker failures are returned as they are; the caller decides whether a
/// broker it cannot read stops it.
pub async fn check_recorded_keys(
    broker: &dyn Broker,
    keyring: &Keyring,
    options: RecordOptions,
) -> Result<StoredKeyCheck, Error> {
    let mine = keyring.key_checks();
    if mine.is_empty() {
        return Ok(StoredKeyCheck::default());
    }
    let recorded = broker.key_checks().await?;
    let check = StoredKeyCheck::compare(recorded.as_deref(), keyring);
    if let Some(message) = check.refusal(&broker.describe(), options) {
        return Err(Error::Keyring(message));
    }
    if check.is_unknown_keyring() {
        tracing::warn!(
            broker = %broker.describe(),
            "starting with a keyring that holds none of the keys this broker recorded \
             (--accept-new-keyring): tasks sealed with the old keyring stay unopened"
        );
    }
    let new: Vec<KeyCheck> = mine
        .into_iter()
        .filter(|c| !check.recorded.contains(&c.key_id))
        .collect();
    if options.record && check.kept && !new.is_empty() {
        broker.record_key_checks(&new).await?;
    }
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn other_secret_same_ids(k: &Keyring) -> Keyring {
        let text = k.to_toml_secret();
        let mut out = String::new();
        for line in text.lines() {
            if line.starts_with("secret") {
                out.push_str("secret = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n");
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        Keyring::from_toml(&out).unwrap()
    }

    #[test]
    fn the_verdicts() {
        let a = Keyring::generate();
        let b = Keyring::generate();
        let opts = RecordOptions::default();
        let accept = RecordOptions {
            accept_new_keyring: true,
            record: false,
        };
        // Nothing recorded, or not kept: accepted.
        assert!(
            StoredKeyCheck::compare(Some(&[]), &a)
                .refusal("b", opts)
                .is_none()
        );
        assert!(
            StoredKeyCheck::compare(None, &a)
                .refusal("b", opts)
                .is_none()
        );
        let rec = a.key_checks();
        // The same keyring: accepted.
        let same = StoredKeyCheck::compare(Some(&rec), &a);
        assert_eq!(same.matching.len(), 1);
        assert!(same.refusal("b", opts).is_none());
        // Another keyring: refused, naming both sides and the override.
        let other = StoredKeyCheck::compare(Some(&rec), &b);
        let m = other.refusal("sqlite:///q.db", opts).unwrap();
        assert!(
            m.contains(a.primary_key_id()) && m.contains(b.primary_key_id()),
            "{m}"
        );
        assert!(
            m.contains("--accept-new-keyring") && m.contains("sqlite:///q.db"),
            "{m}"
        );
        assert!(other.refusal("b", accept).is_none());
        // Same id, another secret: refused even with the override.
        let twin = other_secret_same_ids(&a);
        let conflict = StoredKeyCheck::compare(Some(&rec), &twin);
        assert!(conflict.is_conflict());
        let m = conflict.refusal("b", accept).unwrap();
        assert!(
            m.contains("same id") && m.contains(a.primary_key_id()),
            "{m}"
        );
        // An operator keyring: never refused.
        let op = a.operator_keyring().unwrap();
        assert!(
            StoredKeyCheck::compare(Some(&b.key_checks()), &op)
                .refusal("b", opts)
                .is_none()
        );
    }
}
