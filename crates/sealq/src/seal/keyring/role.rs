//! Keyring roles: a **full** keyring (sealing keys, subject tag key, audit
//! keys) and an **operator** keyring, which holds the audit keys only.
//!
//! An operator keyring lets an operator run the audited actions that never
//! open a payload (pause and resume queues, depth caps and rate limits,
//! list, stats, delete, rerun, `audit verify`) and write their audit
//! records, without being able to open or forge any task:
//!
//! ```toml
//! # sealq operator keyring — keep secret
//! role = "operator"
//! audit_mac_key = "<base64 32 bytes>"     # the audit log's MAC key
//! audit_signing_key = "<base64 32 bytes>" # optional: Ed25519 seed signing audit checkpoints
//! ```
//!
//! It is made from a full keyring ([`Keyring::operator_keyring`], `sealq
//! keys generate --role operator --from FULL.toml`): `audit_mac_key` is the
//! key the full keyring derives for the audit log
//! (`derive_stable_key("sealq-audit-mac-v1")`), `audit_signing_key` is
//! copied. It holds **no** sealing key and **no** `subject_tag_key`: the
//! subject tag key is also the master secret the format-1 subject
//! key-encryption key is derived from, so holding it would open subject
//! data keys. Without it an operator keyring cannot compute subject tags:
//! `sealq erase` needs a full keyring.
//!
//! Sealing with an operator keyring fails with [`Error::Keyring`] ("this is
//! an operator keyring: …"); opening fails as an unknown key. Its
//! [`Keyring::subject_tag`] and [`Keyring::derive_stable_key`] (for any
//! label but the audit MAC's) answer with a random secret made when the
//! keyring was loaded, which matches nothing stored: callers that need
//! them check [`Keyring::require_sealing_keys`] first.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use zeroize::Zeroizing;

use super::{KEY_LEN, Keyring, KeyringToml, decode_key, random_key};
use crate::error::Error;
use crate::seal::audit_chain::AUDIT_MAC_LABEL;

/// What a keyring may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyringRole {
    /// Sealing keys, subject tag key and audit keys (`role` absent or `"full"`).
    Full,
    /// Audit keys only (`role = "operator"`): opens nothing.
    Operator,
}

impl KeyringRole {
    /// The TOML spelling: `full` or `operator`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyringRole::Full => "full",
            KeyringRole::Operator => "operator",
        }
    }

    fn parse(s: &str) -> Result<Self, Error> {
        match s {
            "full" => Ok(KeyringRole::Full),
            "operator" => Ok(KeyringRole::Operator),
            other => Err(Error::Keyring(format!(
                "`role` is {other:?}: expected \"full\" (the default) or \"operator\""
            ))),
        }
    }
}

/// What only an operator keyring holds.
pub(super) struct OperatorPart {
    /// The audit log's MAC key, as the full keyring derives it.
    audit_mac_key: Zeroizing<[u8; KEY_LEN]>,
}

impl Keyring {
    /// This keyring's role.
    pub fn role(&self) -> KeyringRole {
        if self.operator.is_some() {
            KeyringRole::Operator
        } else {
            KeyringRole::Full
        }
    }

    /// `Ok` for a full keyring; for an operator keyring, [`Error::Keyring`]
    /// saying it holds no sealing keys and that `to` (for example "open a
    /// payload") needs a full keyring.
    pub fn require_sealing_keys(&self, to: &str) -> Result<(), Error> {
        match self.role() {
            KeyringRole::Full => Ok(()),
            KeyringRole::Operator => Err(Error::Keyring(format!(
                "this is an operator keyring: it holds no sealing keys; use a full keyring to {to}"
            ))),
        }
    }

    /// An operator keyring made from this full keyring: its audit MAC key
    /// and `audit_signing_key`, nothing else (see the [module docs](self)).
    pub fn operator_keyring(&self) -> Result<Keyring, Error> {
        self.require_sealing_keys("make an operator keyring (it is made from a full one)")?;
        let mut mac = Zeroizing::new([0u8; KEY_LEN]);
        mac.copy_from_slice(&self.derive_stable_key(AUDIT_MAC_LABEL)[..]);
        Ok(Keyring {
            primary: String::new(),
            keys: BTreeMap::new(),
            subject_tag_key: random_key(),
            audit_signing_key: self.audit_signing_key.clone(),
            operator: Some(OperatorPart { audit_mac_key: mac }),
            // KEK epochs open subject data keys: never an operator's.
            kek: None,
        })
    }

    /// For an operator keyring: the audit MAC key for its label, `None` for
    /// any other label (the caller falls back to its random stand-in).
    pub(super) fn operator_stable_key(&self, label: &str) -> Option<Zeroizing<[u8; 32]>> {
        let op = self.operator.as_ref()?;
        (label == AUDIT_MAC_LABEL).then(|| op.audit_mac_key.clone())
    }
}

/// Parse an operator keyring (`role = "operator"`); `None` when `raw` is
/// a full keyring, which the caller parses.
pub(super) fn operator_from_raw(raw: &mut KeyringToml) -> Option<Result<Keyring, Error>> {
    let role = match raw.role.as_deref().map(KeyringRole::parse) {
        None => KeyringRole::Full,
        Some(Ok(role)) => role,
        Some(Err(e)) => return Some(Err(e)),
    };
    if role == KeyringRole::Full {
        if raw.audit_mac_key.is_some() {
            return Some(Err(Error::Keyring(
                "`audit_mac_key` belongs in an operator keyring (role = \"operator\"); a full \
                 keyring derives it from its `subject_tag_key`: remove the line"
                    .into(),
            )));
        }
        return None;
    }
    Some(parse_operator(raw))
}

fn parse_operator(raw: &mut KeyringToml) -> Result<Keyring, Error> {
    let mut extra = Vec::new();
    if raw.primary.is_some() {
        extra.push("`primary`");
    }
    if raw.subject_tag_key.is_some() {
        extra.push("`subject_tag_key`");
    }
    if !raw.keys.is_empty() {
        extra.push("[keys.*]");
    }
    if raw.kek.is_some() {
        extra.push("[kek]");
    }
    if !extra.is_empty() {
        return Err(Error::Keyring(format!(
            "an operator keyring (role = \"operator\") holds no sealing keys, but this one has {}: \
             make it with `sealq keys generate --role operator --from FULL.toml`, or remove \
             `role` if it is a full keyring",
            extra.join(", ")
        )));
    }
    let mac = raw.audit_mac_key.take().ok_or_else(|| {
        Error::Keyring(
            "an operator keyring needs `audit_mac_key` (32 bytes, base64): make it with \
             `sealq keys generate --role operator --from FULL.toml`"
                .into(),
        )
    })?;
    let audit_mac_key = decode_key(&mac.0, "`audit_mac_key`")?;
    let audit_signing_key = raw
        .audit_signing_key
        .take()
        .map(|k| decode_key(&k.0, "`audit_signing_key`"))
        .transpose()?;
    Ok(Keyring {
        primary: String::new(),
        keys: BTreeMap::new(),
        subject_tag_key: random_key(),
        audit_signing_key,
        operator: Some(OperatorPart { audit_mac_key }),
        kek: None,
    })
}

/// The TOML of an operator keyring, secrets included.
pub(super) fn operator_toml(keyring: &Keyring, op: &OperatorPart) -> Zeroizing<String> {
    use base64::Engine as _;
    let b64 = |k: &[u8; KEY_LEN]| {
        let mut s = Zeroizing::new(String::with_capacity(44));
        base64::engine::general_purpose::STANDARD.encode_string(k, &mut s);
        s
    };
    let mut out = Zeroizing::new(String::with_capacity(512));
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "# sealq operator keyring — keep secret: it writes and checks audit records; it opens no task"
    );
    let _ = writeln!(out, "role = \"operator\"");
    let _ = writeln!(
        out,
        "audit_mac_key = \"{}\"     # the audit log's MAC key",
        b64(&op.audit_mac_key).as_str()
    );
    if let Some(k) = &keyring.audit_signing_key {
        let _ = writeln!(
            out,
            "audit_signing_key = \"{}\" # Ed25519 seed signing audit checkpoints",
            b64(k).as_str()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::envelope::{Aad, Purpose};

    #[test]
    fn an_operator_keyring_keeps_the_audit_keys_and_opens_nothing() {
        let full = Keyring::generate();
        let op = full.operator_keyring().unwrap();
        assert_eq!(op.role(), KeyringRole::Operator);
        assert_eq!(op.key_ids().count(), 0);
        assert_eq!(
            *op.derive_stable_key(AUDIT_MAC_LABEL),
            *full.derive_stable_key(AUDIT_MAC_LABEL)
        );
        assert_eq!(op.audit_verifying_key(), full.audit_verifying_key());
        // Nothing else of the full keyring is derivable from it.
        assert_ne!(
            *op.derive_stable_key("sealq-kek-v1"),
            *full.derive_stable_key("sealq-kek-v1")
        );
        assert_ne!(op.subject_tag("u").0, full.subject_tag("u").0);

        let aad = Aad {
            purpose: Purpose::Payload,
            task_id: crate::model::id::TaskId::new(),
            queue: "q",
            kind: "t",
            producer: "p",
            created_at_ms: 1,
            not_after_ms: None,
            subject_tag: None,
            policy: crate::model::task::TaskPolicy {
                not_before_ms: None,
                deadline_ms: None,
                timeout_ms: None,
                max_retries: 0,
                backoff: crate::model::backoff::Backoff::Fixed { delay_ms: 0 },
                retention_ms: 0,
            },
        };
        let env = full.seal(&aad, b"secret").unwrap();
        assert!(op.open(&aad, &env).is_err());
        let e = op.seal(&aad, b"x").unwrap_err().to_string();
        assert!(e.contains("this is an operator keyring"), "{e}");

        // Round trip through TOML; no secret of the full keyring in it.
        let text = op.to_toml_secret();
        assert!(text.contains("role = \"operator\""), "{}", text.as_str());
        assert!(!text.contains("subject_tag_key") && !text.contains("[keys"));
        let back = Keyring::from_toml(&text).unwrap();
        assert_eq!(back.role(), KeyringRole::Operator);
        assert_eq!(
            *back.derive_stable_key(AUDIT_MAC_LABEL),
            *full.derive_stable_key(AUDIT_MAC_LABEL)
        );
        assert!(back.operator_keyring().is_err());
    }

    #[test]
    fn role_lines_that_do_not_fit_are_refused_by_name() {
        let full = Keyring::generate();
        let full_text = full.to_toml_secret();
        // A full keyring still parses with and without `role = "full"`.
        assert_eq!(
            Keyring::from_toml(&format!("role = \"full\"\n{}", full_text.as_str()))
                .unwrap()
                .role(),
            KeyringRole::Full
        );
        let e = Keyring::from_toml(&format!("role = \"operator\"\n{}", full_text.as_str()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("holds no sealing keys") && e.contains("`primary`"),
            "{e}"
        );
        let e = Keyring::from_toml("role = \"admin\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"full\"") && e.contains("\"operator\""), "{e}");
        let e = Keyring::from_toml("role = \"operator\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("audit_mac_key"), "{e}");
        let op_text = full.operator_keyring().unwrap().to_toml_secret();
        let mac_line = op_text
            .lines()
            .find(|l| l.starts_with("audit_mac_key"))
            .unwrap()
            .to_owned();
        let e = Keyring::from_toml(&format!("{mac_line}\n{}", full_text.as_str()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("belongs in an operator keyring"), "{e}");
    }
}
