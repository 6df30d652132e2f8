//! Per-subject data keys, and the key-encryption keys that wrap them.
//!
//! A task enqueued with a subject (`EnqueueOptions::subject("user-42")`) is
//! sealed with that subject's own random **data key**, not the keyring's
//! primary key. Its result and error messages are sealed with the same key.
//! Data keys are stored wrapped (XChaCha20-Poly1305) under a key-encryption
//! key (KEK), in a `SubjectKeyStore` (`crate::store`) that is **separate from the task
//! store**: the embedded broker keeps it in its own file beside the database.
//! With a keyring that has KEK epochs (`[kek]`, [`crate::seal::kek`], added
//! by the first `sealq erase --finalize`), the KEK is derived from the
//! current epoch's secret (wrapped-key format 3, naming the epoch), apart
//! from the sealing keys: finalising erasures (`sealq erase --finalize`)
//! adds an epoch, re-wraps every stored key under it and drops the older
//! epochs, so no copy of the key store taken before opens with the
//! keyring any more. Keyrings without `[kek]` work as before: the KEK is
//! derived from the primary sealing key (HKDF, label
//! `sealq-subject-kek-v2`, format 2) and rotates with it: after
//! `keys rotate`, new data keys are wrapped under the new primary's KEK,
//! `SubjectKeys::rewrap_all` (run by `sealq keys reseal`) re-wraps the
//! stored ones, and `keys remove` refuses to drop a key that still wraps
//! any. Keys wrapped by earlier versions under the KEK derived from the
//! `subject_tag_key` (format 1) open the same way. Formats 1 and 2 open
//! under a keyring with `[kek]` only while its `open_legacy` is set.
//!
//! Erasing a subject deletes its tasks and destroys its wrapped key. Copies of
//! the task store made earlier (file copies, backups, replicas, AOF/RDB) then
//! hold ciphertext nobody can open: the key that opened it is gone. This only
//! holds if the key store itself is not copied into long-lived backups; see
//! `docs/compliance.md`.
//!
//! Envelopes sealed with a data key name the reserved key id
//! [`SUBJECT_KEY_ID`]; the subject tag in their associated data says which
//! subject's key opens them.

use std::collections::HashMap;

use zeroize::Zeroizing;

use crate::error::{Error, IntegrityError};
use crate::model::id::SubjectTag;
use crate::model::trace_parent::TraceParent;
use crate::seal::aead::XChaCha;
use crate::seal::envelope::{Aad, parse_header};
use crate::seal::keyring::{
    Keyring, open_traced_with_cipher, open_with_cipher, random_nonce, seal_with_cipher,
    seal_with_cipher_as,
};

/// The key id in the header of envelopes sealed with a subject's data key.
pub const SUBJECT_KEY_ID: &str = "subject";

/// Label of the format-1 KEK, derived from the keyring's `subject_tag_key`
/// (which never rotates): read only.
const KEK_V1_LABEL: &str = "sealq-subject-kek-v1";
/// Label of the format-2 KEKs, one derived from each sealing key.
const KEK_V2_LABEL: &str = "sealq-subject-kek-v2";
/// Domain of the format-1 wrapping's associated data.
const WRAP_DOMAIN_V1: &[u8] = b"sealq-subject-key-v1";
/// Domain of the format-2 wrapping's associated data.
const WRAP_DOMAIN_V2: &[u8] = b"sealq-subject-key-v2";
/// Format 1: version byte 1, 24-byte nonce, 32-byte key, 16-byte tag.
const WRAPPED_V1_LEN: usize = 1 + 24 + 32 + 16;
/// Format 2: version byte 2, key id length (1 byte), key id, then as format 1.
/// Format 3 is laid out the same with version byte 3 and a KEK epoch id.
const WRAPPED_V2_FIXED: usize = 2 + 24 + 32 + 16;
/// Domain of the format-3 wrapping's associated data.
const WRAP_DOMAIN_V3: &[u8] = b"sealq-subject-key-v3";

/// What a stored wrapped subject key is wrapped under.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WrappedUnder {
    /// Format 1: the KEK derived from the keyring's `subject_tag_key`
    /// (written before KEKs rotated with the sealing keys).
    TagKey,
    /// Format 2: the KEK derived from this sealing key id.
    Key(String),
    /// Format 3: the KEK of this KEK epoch (the keyring's `[kek]` table).
    Epoch(String),
}

impl std::fmt::Display for WrappedUnder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WrappedUnder::TagKey => f.write_str("subject_tag_key (format 1)"),
            WrappedUnder::Key(id) => write!(f, "{id}"),
            WrappedUnder::Epoch(id) => write!(f, "KEK epoch {id}"),
        }
    }
}

impl WrappedUnder {
    /// The key a stored wrapped key names, from its bytes alone; `None` for
    /// bytes in no known format.
    pub fn of(wrapped: &[u8]) -> Option<WrappedUnder> {
        match wrapped.first()? {
            1 if wrapped.len() == WRAPPED_V1_LEN => Some(WrappedUnder::TagKey),
            v @ (2 | 3) => {
                let n = usize::from(*wrapped.get(1)?);
                let id = wrapped.get(2..2 + n)?;
                let id = std::str::from_utf8(id).ok()?.to_owned();
                if wrapped.len() != WRAPPED_V2_FIXED + n {
                    return None;
                }
                Some(if *v == 2 {
                    WrappedUnder::Key(id)
                } else {
                    WrappedUnder::Epoch(id)
                })
            }
            _ => None,
        }
    }
}

/// The wrapping's associated data: domain, subject tag and, for formats 2
/// and 3, the wrapping key or epoch id (length-prefixed).
fn wrap_ad(tag: &SubjectTag, format: u8, key_id: Option<&str>) -> Vec<u8> {
    let mut ad = Vec::with_capacity(WRAP_DOMAIN_V2.len() + 33 + key_id.map_or(0, str::len));
    match format {
        1 => ad.extend_from_slice(WRAP_DOMAIN_V1),
        2 => ad.extend_from_slice(WRAP_DOMAIN_V2),
        _ => ad.extend_from_slice(WRAP_DOMAIN_V3),
    }
    ad.extend_from_slice(&tag.0);
    if let Some(id) = key_id {
        ad.push(id.len() as u8);
        ad.extend_from_slice(id.as_bytes());
    }
    ad
}

/// One subject's data key. Wiped from memory on drop; never printed.
pub struct DataKey {
    secret: Zeroizing<[u8; 32]>,
    cipher: XChaCha,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    fn from_secret(secret: Zeroizing<[u8; 32]>) -> Self {
        let cipher = XChaCha::new(&secret);
        DataKey { secret, cipher }
    }

    pub(crate) fn generate() -> Result<Self, Error> {
        let mut secret = Zeroizing::new([0u8; 32]);
        getrandom::fill(secret.as_mut()).map_err(|e| {
            Error::Keyring(format!(
                "the operating system's random number generator failed: {e}"
            ))
        })?;
        Ok(Self::from_secret(secret))
    }

    /// Seal `plaintext` for `aad` with this key (header key id [`SUBJECT_KEY_ID`]).
    pub fn seal(&self, aad: &Aad<'_>, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        seal_with_cipher(
            &self.cipher,
            SUBJECT_KEY_ID,
            aad,
            plaintext,
            random_nonce()?,
        )
    }

    /// [`DataKey::seal`] of a payload with the producer's trace context: a
    /// version-3 envelope (see [`Keyring::seal_traced`]).
    pub fn seal_traced(
        &self,
        aad: &Aad<'_>,
        trace: &TraceParent,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let framed = crate::seal::trace_frame::frame(trace, plaintext);
        seal_with_cipher_as(
            crate::seal::envelope::VERSION_V3,
            &self.cipher,
            SUBJECT_KEY_ID,
            aad,
            &framed,
            random_nonce()?,
        )
    }

    /// [`DataKey::open`], also returning a version-3 envelope's trace context.
    pub fn open_traced(
        &self,
        aad: &Aad<'_>,
        envelope: &[u8],
    ) -> Result<(Zeroizing<Vec<u8>>, Option<TraceParent>), IntegrityError> {
        open_traced_with_cipher(&self.cipher, aad, envelope)
    }

    /// Open an envelope sealed with [`DataKey::seal`].
    pub fn open(
        &self,
        aad: &Aad<'_>,
        envelope: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, IntegrityError> {
        open_with_cipher(&self.cipher, aad, envelope)
    }
}

/// `true` when `envelope`'s header names a subject data key.
pub fn is_subject_sealed(envelope: &[u8]) -> bool {
    parse_header(envelope).is_ok_and(|h| h.key_id == SUBJECT_KEY_ID)
}

/// The key-encryption keys (KEKs) that wrap subject data keys, derived from
/// a keyring: one per KEK epoch (format 3; the current epoch's wraps new
/// keys) when the keyring has a `[kek]` table, else one per sealing key
/// (format 2; the primary's wraps new keys); and the format-1 KEK from the
/// `subject_tag_key` (opens only). Formats 1 and 2 open under a keyring
/// with epochs only while its `open_legacy` is set.
pub(crate) struct Keks {
    /// The format-1 KEK (from the `subject_tag_key`): opens only.
    v1_kek: Option<XChaCha>,
    /// The format-2 KEK of every keyring key, by key id.
    by_key: HashMap<String, XChaCha>,
    /// The format-3 KEK of every epoch, by epoch id.
    by_epoch: HashMap<String, XChaCha>,
    /// What wraps new keys: the current epoch, or the primary key.
    wraps: WrappedUnder,
}

fn cipher(k: &[u8; 32]) -> XChaCha {
    XChaCha::new(k)
}

impl Keks {
    /// The KEKs of every key and epoch of `keyring`.
    pub(crate) fn from_keyring(keyring: &Keyring) -> Self {
        let epochs = keyring.kek_epochs();
        let legacy = epochs.is_none_or(|e| e.opens_legacy());
        let v1_kek = legacy.then(|| cipher(&keyring.derive_stable_key(KEK_V1_LABEL)));
        let by_key = if legacy {
            keyring
                .key_ids()
                .filter_map(|id| {
                    let kek = keyring.derive_from_sealing_key(id, KEK_V2_LABEL)?;
                    Some((id.to_owned(), cipher(&kek)))
                })
                .collect()
        } else {
            HashMap::new()
        };
        let by_epoch = epochs
            .map(|e| {
                e.ids()
                    .filter_map(|id| Some((id.to_owned(), cipher(&*e.kek(id)?))))
                    .collect()
            })
            .unwrap_or_default();
        let wraps = match epochs {
            Some(e) => WrappedUnder::Epoch(e.current().to_owned()),
            None => WrappedUnder::Key(keyring.primary_key_id().to_owned()),
        };
        Keks {
            v1_kek,
            by_key,
            by_epoch,
            wraps,
        }
    }

    /// What wraps new keys (and what [`crate::subject_keys::SubjectKeys::rewrap_all`]
    /// re-wraps to): the current KEK epoch, or the primary key's KEK.
    pub(crate) fn wraps(&self) -> &WrappedUnder {
        &self.wraps
    }

    /// Wrap `key` (format 3 under the current epoch, or format 2 under the
    /// primary key's KEK).
    pub(crate) fn wrap(&self, tag: &SubjectTag, key: &DataKey) -> Result<Vec<u8>, Error> {
        let (format, id, kek) = match &self.wraps {
            WrappedUnder::Epoch(id) => (3u8, id.as_str(), self.by_epoch.get(id)),
            WrappedUnder::Key(id) => (2u8, id.as_str(), self.by_key.get(id)),
            WrappedUnder::TagKey => (1u8, "", None),
        };
        let kek = kek.ok_or_else(|| {
            Error::Keyring(format!("the keyring's wrapping key `{id}` is missing"))
        })?;
        let nonce = random_nonce()?;
        let ad = wrap_ad(tag, format, Some(id));
        let mut out = Vec::with_capacity(WRAPPED_V2_FIXED + id.len());
        out.push(format);
        // Invariant: key and epoch ids are at most 64 bytes (validated on load).
        out.push(id.len() as u8);
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&nonce);
        let at = out.len();
        out.extend_from_slice(key.secret.as_ref());
        let t = kek
            .seal_in_place(&nonce, &ad, &mut out[at..])
            .map_err(|_| Error::Keyring("wrapping a subject key failed".into()))?;
        out.extend_from_slice(&t);
        Ok(out)
    }

    /// Unwrap a stored key of any format. A key wrapped under a KEK this
    /// keyring does not hold (a retired epoch, a removed sealing key, or a
    /// legacy format once closed) is [`IntegrityError::UnknownKey`] naming
    /// it: a worker holds such a task, it does not archive it.
    pub(crate) fn unwrap(&self, tag: &SubjectTag, wrapped: &[u8]) -> Result<DataKey, Error> {
        let bad = || Error::Integrity(IntegrityError::Tampered);
        let unknown = |what: String| Error::Integrity(IntegrityError::UnknownKey(what));
        let (kek, ad, body) = match WrappedUnder::of(wrapped).ok_or_else(bad)? {
            WrappedUnder::TagKey => {
                let kek = self.v1_kek.as_ref().ok_or_else(|| {
                    unknown(
                        "subject-kek-v1 (retired: the keyring's legacy formats are closed)".into(),
                    )
                })?;
                (kek, wrap_ad(tag, 1, None), &wrapped[1..])
            }
            WrappedUnder::Key(id) => {
                let kek = self.by_key.get(&id).ok_or_else(|| {
                    unknown(format!("subject-kek-v2 of key {id} (not held or retired)"))
                })?;
                (kek, wrap_ad(tag, 2, Some(&id)), &wrapped[2 + id.len()..])
            }
            WrappedUnder::Epoch(id) => {
                let kek = self
                    .by_epoch
                    .get(&id)
                    .ok_or_else(|| unknown(format!("KEK epoch {id} (not held or retired)")))?;
                (kek, wrap_ad(tag, 3, Some(&id)), &wrapped[2 + id.len()..])
            }
        };
        // body: nonce (24), key (32), tag (16).
        let nonce: [u8; 24] = body[..24].try_into().map_err(|_| bad())?;
        let mut secret = Zeroizing::new([0u8; 32]);
        secret.copy_from_slice(&body[24..56]);
        let t: &[u8; 16] = body[56..].try_into().map_err(|_| bad())?;
        kek.open_in_place(&nonce, &ad, secret.as_mut_slice(), t)
            .map_err(|_| bad())?;
        Ok(DataKey::from_secret(secret))
    }
}

#[cfg(test)]
/// A format-1 wrapped key (what earlier versions stored), for `key`.
pub(crate) fn wrap_v1(keyring: &Keyring, tag: &SubjectTag, key: &DataKey) -> Vec<u8> {
    let kek = keyring.derive_stable_key(KEK_V1_LABEL);
    let kek = XChaCha::new(&kek);
    let nonce = random_nonce().unwrap();
    let mut out = vec![1];
    out.extend_from_slice(&nonce);
    out.extend_from_slice(key.secret.as_ref());
    let t = kek
        .seal_in_place(&nonce, &wrap_ad(tag, 1, None), &mut out[25..])
        .unwrap();
    out.extend_from_slice(&t);
    out
}
