//! Heads over the whole audit log (finding 5 of the security review): the
//! Merkle tree hash (RFC 6962, section 2.1) over the checkpoint store that
//! each writer's first record names, the audit key id, and the signed
//! [`Anchor`] that `sealq audit anchor` exports.
//!
//! - **Checkpoint tree head** ([`checkpoints_root`]): the Merkle tree hash
//!   over the first `n` entries of the checkpoint store, in storage order,
//!   each leaf [`checkpoint_leaf`]. The checkpoint store is append-only and
//!   shared by every writer, so removing, replacing or reordering any entry
//!   before position `n` changes the head.
//! - **Writers head** ([`writers_root`]): the Merkle tree hash over every
//!   writer's last record `(writer, seq, public chain hash)`, sorted by
//!   writer id.
//! - **Audit key id** ([`mac_key_id`]): a check value of the audit MAC key,
//!   so that records MACed with another key are reported as coming from an
//!   unknown key, named by this id.

use ed25519_dalek::{Signature, Signer as _, VerifyingKey};
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::seal::audit_chain::{AuditKeys, Checkpoint};

/// Domain of the audit key id (a check value of the MAC key).
const KEY_ID_DOMAIN: &[u8] = b"sealq-audit-key-id-v1";

/// Domain prefix of the bytes an anchor signature covers.
const ANCHOR_DOMAIN: &[u8] = b"sealq-audit-anchor-v1";

/// The anchor format written by this version.
pub const ANCHOR_VERSION: u32 = 1;

/// The genesis (first record) format written by this version.
pub const GENESIS_FORMAT: u32 = 1;

/// RFC 6962 leaf hash: `SHA-256(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// RFC 6962 Merkle tree hash over leaf hashes: `SHA-256()` for none, the
/// leaf for one, else the node over the largest power of two below `n`
/// and the rest.
pub fn tree_hash(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = if n.is_power_of_two() {
                n / 2
            } else {
                1 << (usize::BITS - 1 - n.leading_zeros())
            };
            node_hash(&tree_hash(&leaves[..k]), &tree_hash(&leaves[k..]))
        }
    }
}

/// The leaf of one checkpoint-store entry: the leaf hash of the
/// checkpoint's signed bytes followed by its signature text; an entry that
/// does not parse is the leaf of `"unparseable"` (verification reports it
/// as a corrupt line anyway).
pub fn checkpoint_leaf(entry: Result<&Checkpoint, &String>) -> [u8; 32] {
    match entry {
        Ok(c) => {
            let mut data = c.signed_bytes();
            data.extend_from_slice(c.signature.as_bytes());
            leaf_hash(&data)
        }
        Err(_) => leaf_hash(b"unparseable"),
    }
}

/// The tree head over checkpoint-store entries, lowercase hex.
pub fn checkpoints_root<'a>(
    entries: impl IntoIterator<Item = Result<&'a Checkpoint, &'a String>>,
) -> String {
    let leaves: Vec<[u8; 32]> = entries.into_iter().map(checkpoint_leaf).collect();
    crate::model::hex::encode(tree_hash(&leaves))
}

/// One writer's last record, as an anchor names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnchorWriter {
    /// The writer id.
    pub writer: String,
    /// The seq of its last record when the anchor was made.
    pub seq: u64,
    /// The public chain hash through that record, lowercase hex.
    pub hash: String,
}

impl AnchorWriter {
    /// The leaf: length-prefixed writer id, seq (big-endian), chain hash.
    fn leaf(&self) -> [u8; 32] {
        let mut data = Vec::with_capacity(self.writer.len() + 48);
        data.extend_from_slice(&(self.writer.len() as u64).to_be_bytes());
        data.extend_from_slice(self.writer.as_bytes());
        data.extend_from_slice(&self.seq.to_be_bytes());
        data.extend_from_slice(self.hash.as_bytes());
        leaf_hash(&data)
    }
}

/// The tree head over writers' last records (sorted by writer id first),
/// lowercase hex.
pub fn writers_root(writers: &[AnchorWriter]) -> String {
    let mut sorted: Vec<&AnchorWriter> = writers.iter().collect();
    sorted.sort_by(|a, b| a.writer.cmp(&b.writer));
    let leaves: Vec<[u8; 32]> = sorted.iter().map(|w| w.leaf()).collect();
    crate::model::hex::encode(tree_hash(&leaves))
}

/// A small signed statement of the whole audit log at one time, to keep
/// somewhere the broker's writers cannot reach: `sealq audit verify
/// --anchor FILE` then fails unless the log extends it (every writer it
/// names still there through its seq with the same chain hash, and the
/// checkpoint store still starting with the entries it covers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anchor {
    /// Format version ([`ANCHOR_VERSION`]).
    pub version: u32,
    /// When it was made, Unix ms.
    pub time_ms: i64,
    /// The number of checkpoint-store entries it covers.
    pub checkpoints: u64,
    /// [`checkpoints_root`] over them.
    pub checkpoints_root: String,
    /// [`writers_root`] over `writers`.
    pub writers_root: String,
    /// Every writer's last record, sorted by writer id.
    pub writers: Vec<AnchorWriter>,
    /// The audit public key that signed it, standard base64.
    pub public_key: String,
    /// Ed25519 over [`Anchor::signed_bytes`], lowercase hex.
    pub signature: String,
}

#[derive(Serialize)]
struct AnchorSigned<'a> {
    version: u32,
    time_ms: i64,
    checkpoints: u64,
    checkpoints_root: &'a str,
    writers_root: &'a str,
}

impl Anchor {
    /// What the signature covers: `"sealq-audit-anchor-v1"` followed by the
    /// MessagePack (named) map `{version, time_ms, checkpoints,
    /// checkpoints_root, writers_root}`; `writers_root` binds the writers.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = ANCHOR_DOMAIN.to_vec();
        // Invariant: strings and integers always encode.
        let body = rmp_serde::to_vec_named(&AnchorSigned {
            version: self.version,
            time_ms: self.time_ms,
            checkpoints: self.checkpoints,
            checkpoints_root: &self.checkpoints_root,
            writers_root: &self.writers_root,
        })
        .unwrap_or_default();
        out.extend_from_slice(&body);
        out
    }

    /// Sign with the keys' signing key (no-op without one).
    pub(crate) fn sign(&mut self, keys: &AuditKeys) {
        if let Some(k) = &keys.signing {
            self.signature = hex::encode(k.sign(&self.signed_bytes()).to_bytes());
        }
    }

    /// Whether the signature verifies with `key` and `writers_root` is the
    /// head of `writers` (never panics).
    pub fn valid(&self, key: &VerifyingKey) -> bool {
        let Some(sig) = hex::decode(&self.signature)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
        else {
            return false;
        };
        key.verify_strict(&self.signed_bytes(), &Signature::from_bytes(&sig))
            .is_ok()
            && writers_root(&self.writers) == self.writers_root
    }
}

/// The audit key id of a MAC key: the first 8 bytes of
/// `HMAC-SHA-256(mac_key, "sealq-audit-key-id-v1")`, lowercase hex (16
/// digits). A check value: it names the key without revealing it.
pub fn mac_key_id(mac_key: &[u8; 32]) -> String {
    // Invariant: HMAC accepts keys of any length.
    let mut m = <Hmac<Sha256>>::new_from_slice(mac_key).expect("HMAC accepts any key length");
    m.update(KEY_ID_DOMAIN);
    let out = m.finalize().into_bytes();
    crate::model::hex::encode(&out[..8])
}

impl AuditKeys {
    /// The audit key id of the MAC key ([`mac_key_id`]), if these keys hold it.
    pub fn mac_key_id(&self) -> Option<String> {
        self.mac.as_deref().map(mac_key_id)
    }

    /// The public key in standard base64, if known.
    pub fn public_key_base64(&self) -> Option<String> {
        use base64::Engine as _;
        self.verifying
            .map(|k| base64::engine::general_purpose::STANDARD.encode(k.to_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_hash_follows_rfc_6962() {
        // RFC 6962's empty-tree hash is SHA-256 of nothing.
        assert_eq!(
            hex::encode(tree_hash(&[])),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let l: Vec<[u8; 32]> = (0u8..5).map(|i| leaf_hash(&[i])).collect();
        assert_eq!(tree_hash(&l[..1]), l[0]);
        assert_eq!(tree_hash(&l[..2]), node_hash(&l[0], &l[1]));
        // Five leaves split 4 + 1.
        let four = node_hash(&node_hash(&l[0], &l[1]), &node_hash(&l[2], &l[3]));
        assert_eq!(tree_hash(&l), node_hash(&four, &l[4]));
        // Order matters.
        let mut swapped = l.clone();
        swapped.swap(1, 2);
        assert_ne!(tree_hash(&swapped), tree_hash(&l));
    }

    #[test]
    fn key_ids_differ_per_key_and_are_stable() {
        let a = mac_key_id(&[1u8; 32]);
        assert_eq!(a.len(), 16);
        assert_eq!(a, mac_key_id(&[1u8; 32]));
        assert_ne!(a, mac_key_id(&[2u8; 32]));
    }
}
