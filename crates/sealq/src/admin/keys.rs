//! Retiring a keyring key: [`Client::key_usage`] says whether anything
//! stored still needs it, [`Client::record_key_removed`] audits its removal
//! (`sealq keys remove`).
//!
//! A key that is not the primary only opens what it sealed before a
//! rotation. Once it is removed from the keyring, every stored part still
//! sealed with it (payload, result, error, claim-check blob) and every
//! subject data key wrapped under its key-encryption key can never be
//! opened again. So the check counts both, and counts what it could not
//! look at (parts that do not open, a subject key store that cannot be
//! listed) as still in use: removing is safe only when
//! [`KeyUsage::is_unused`].

use serde::Serialize;

use crate::admin::reseal::ResealOptions;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::model::audit_event::AuditEvent;

/// What still needs a keyring key, from [`Client::key_usage`].
///
/// Once a key is removed from the keyring, every stored part still sealed
/// with it and every subject data key wrapped under its key-encryption key
/// can never be opened again. What could not be looked at (parts that do
/// not open, a subject key store that cannot be listed) counts as still in
/// use: removing is safe only when [`KeyUsage::is_unused`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct KeyUsage {
    /// The key looked at.
    pub key_id: String,
    /// Sealed parts of stored tasks (payloads, results, errors and
    /// claim-check blobs) sealed with the key: what `keys reseal --from-key`
    /// would re-seal or leave under it.
    pub parts_still_sealed: u64,
    /// Sealed parts that did not open, so whose key could not be checked
    /// (counted as in use: they may name it).
    pub parts_not_opened: u64,
    /// Subject data keys wrapped under the key's key-encryption key,
    /// including those that could not be unwrapped.
    pub subject_keys_wrapped: u64,
    /// Why the subject data keys could not be checked (e.g. a store that
    /// cannot list its keys): `None` when they were, or when the broker
    /// keeps none.
    pub could_not_check: Option<String>,
}

impl KeyUsage {
    /// Everything counted as still needing the key: stored parts, parts
    /// that did not open, and wrapped subject keys (what the `key_removed`
    /// audit record's `still_sealed` reports).
    pub fn still_sealed(&self) -> u64 {
        self.parts_still_sealed + self.parts_not_opened + self.subject_keys_wrapped
    }

    /// Whether the key can be removed without losing anything: nothing
    /// counted, and everything checked.
    pub fn is_unused(&self) -> bool {
        self.still_sealed() == 0 && self.could_not_check.is_none()
    }
}

impl Client {
    /// What stored tasks, claim-check blobs and subject data keys still need
    /// keyring key `key_id` (see [`KeyUsage`] for what counts): a dry-run
    /// [`Client::reseal`] restricted to that key, over every queue. Changes
    /// nothing and audits nothing. Give the client the blob store the
    /// application uses, or offloaded payloads' blobs are not checked (they
    /// then count in [`KeyUsage::parts_not_opened`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] (`what`: `key_id`) when `key_id` is the
    /// primary key or not in the keyring; a broker error when the tasks cannot be listed.
    ///
    /// ```no_run
    /// # async fn f(client: &sealq::Client) -> sealq::Result<()> {
    /// let usage = client.key_usage("k-20250101-old").await?;
    /// if !usage.is_unused() {
    ///     println!("{} part(s) still need it: run `sealq keys reseal`", usage.still_sealed());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn key_usage(&self, key_id: &str) -> Result<KeyUsage> {
        let keyring = self.keyring();
        if key_id == keyring.primary_key_id() {
            return Err(Error::InvalidArgument {
                what: "key_id",
                reason: format!(
                    "`{key_id}` is the primary key: every new task is sealed with it; \
                     rotate first, then re-seal"
                ),
            });
        }
        if !keyring.contains_key(key_id) {
            return Err(Error::InvalidArgument {
                what: "key_id",
                reason: format!(
                    "the keyring has no key `{key_id}`: give the keyring that still holds it"
                ),
            });
        }
        let check = self
            .reseal(
                &ResealOptions {
                    from_key: Some(key_id.to_owned()),
                    dry_run: true,
                    ..ResealOptions::default()
                },
                "",
            )
            .await?;
        Ok(KeyUsage {
            key_id: key_id.to_owned(),
            parts_still_sealed: check.resealed + check.remaining.get(key_id).copied().unwrap_or(0),
            parts_not_opened: check.failed.len() as u64,
            subject_keys_wrapped: check
                .subject_keys
                .as_ref()
                .map_or(0, |k| k.rewrapped + k.failed.len() as u64),
            could_not_check: check.subject_keys_error,
        })
    }

    /// Audit the removal of keyring key `key_id` by `operator`
    /// (`key_removed`), with how many stored parts and subject keys still
    /// needed it ([`KeyUsage::still_sealed`]; non-zero only for a forced
    /// removal). Returns once the record is written; does nothing without
    /// an auditor. The keyring file itself is the caller's: the client never
    /// writes it.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Audit`] when the record could not be written.
    pub async fn record_key_removed(
        &self,
        key_id: &str,
        still_sealed: u64,
        operator: &str,
    ) -> Result<()> {
        self.audit_now(AuditEvent::KeyRemoved {
            key_id: key_id.to_owned(),
            still_sealed,
            operator: operator.to_owned(),
        })
        .await
    }
}
