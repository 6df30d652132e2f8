//! Records, checkpoints and the bytes their MACs and signatures cover.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::error::Error;
use crate::model::audit_event::AuditEvent;
use crate::seal::keyring::Keyring;

/// Label of [`Keyring::derive_stable_key`] for the audit MAC key.
pub const AUDIT_MAC_LABEL: &str = "sealq-audit-mac-v1";

/// Domain prefix of the public chain hash (see [`chain_hash`]).
const HASH_DOMAIN: &[u8] = b"sealq-audit-hash-v1";

/// Domain prefix of the bytes a checkpoint signature covers.
const CHECKPOINT_DOMAIN: &[u8] = b"sealq-audit-checkpoint-v1";

/// The MAC and hash a chain starts from: 32 zero bytes.
pub const GENESIS: [u8; 32] = [0u8; 32];

/// One audit record: who wrote it, its place in the writer's chain, when,
/// what happened, and the chain MAC.
///
/// `mac = HMAC-SHA-256(audit_key, prev_mac ‖ canonical)` where `canonical`
/// is [`AuditRecord::canonical_bytes`] and `prev_mac` is the MAC of the same
/// writer's record `seq - 1` ([`GENESIS`] for `seq` 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// The writing process (`host:pid:random`); each writer has its own chain.
    pub writer: String,
    /// Position in the writer's chain, from 0, without gaps.
    pub seq: u64,
    /// When the event was recorded, Unix ms (the writer's clock).
    pub time_ms: i64,
    /// What happened.
    pub event: AuditEvent,
    /// The chain MAC, lowercase hex (64 characters).
    pub mac: String,
}

/// The part of a record its MAC covers: everything but the MAC, in this
/// field order.
#[derive(Serialize)]
pub(crate) struct Canonical<'a> {
    pub(crate) writer: &'a str,
    pub(crate) seq: u64,
    pub(crate) time_ms: i64,
    pub(crate) event: &'a AuditEvent,
}

impl AuditRecord {
    /// The canonical bytes: MessagePack with named fields
    /// (`rmp_serde::to_vec_named`) of the map
    /// `{writer, seq, time_ms, event}` in that order, the event a map whose
    /// first entry is `type`. Fails only for an unencodable value, which
    /// sealq's own events never are.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, Error> {
        canonical(&self.writer, self.seq, self.time_ms, &self.event)
    }

    /// The MAC as 32 bytes, or `None` if the stored text is not 64 hex digits.
    pub fn mac_bytes(&self) -> Option<[u8; 32]> {
        decode_32(&self.mac)
    }
}

pub(crate) fn canonical(
    writer: &str,
    seq: u64,
    time_ms: i64,
    event: &AuditEvent,
) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(160);
    canonical_into(&mut out, writer, seq, time_ms, event)?;
    Ok(out)
}

/// [`canonical`], appended to `out` (a buffer reused across records). On
/// an error `out` is as it was.
pub(crate) fn canonical_into(
    out: &mut Vec<u8>,
    writer: &str,
    seq: u64,
    time_ms: i64,
    event: &AuditEvent,
) -> Result<(), Error> {
    // The per-task events have a hand-written encoder (same bytes).
    if crate::seal::audit_encode::canonical_into(out, writer, seq, time_ms, event) {
        return Ok(());
    }
    let start = out.len();
    rmp_serde::encode::write_named(
        out,
        &Canonical {
            writer,
            seq,
            time_ms,
            event,
        },
    )
    .map_err(|e| {
        out.truncate(start);
        Error::Codec {
            what: "audit record",
            reason: e.to_string(),
        }
    })
}

/// `HMAC-SHA-256(key, prev_mac ‖ canonical)`.
pub fn record_mac(key: &[u8; 32], prev_mac: &[u8; 32], canonical: &[u8]) -> [u8; 32] {
    RecordMac::new(key).mac(prev_mac, canonical)
}

/// [`record_mac`] with the key set up once: HMAC's inner and outer key
/// blocks are hashed at [`RecordMac::new`], so each record costs only its
/// own bytes (a writer MACs every record with the same key). The keyed
/// state is as secret as the key; it lives as long as the writer, beside
/// the (zeroized) key it came from.
#[derive(Clone)]
pub(crate) struct RecordMac(Hmac<Sha256>);

impl RecordMac {
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        // Invariant: HMAC accepts keys of any length.
        Self(<Hmac<Sha256>>::new_from_slice(key).expect("HMAC accepts any key length"))
    }

    /// `HMAC-SHA-256(key, prev_mac ‖ canonical)`.
    pub(crate) fn mac(&self, prev_mac: &[u8; 32], canonical: &[u8]) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(prev_mac);
        mac.update(canonical);
        mac.finalize().into_bytes().into()
    }
}

/// The public chain hash, which checkpoints sign so that holders of the
/// public key alone can check the records a checkpoint covers:
/// `SHA-256("sealq-audit-hash-v1" ‖ prev_hash ‖ mac ‖ canonical)`, from
/// [`GENESIS`].
pub fn chain_hash(prev_hash: &[u8; 32], mac: &[u8; 32], canonical: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(HASH_DOMAIN);
    h.update(prev_hash);
    h.update(mac);
    h.update(canonical);
    h.finalize().into()
}

/// A signed statement of one writer's chain head, written to a second place
/// so that cutting the tail of the records is detected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The writer whose chain this covers.
    pub writer: String,
    /// The `seq` of the writer's last record covered.
    pub seq: u64,
    /// That record's MAC, lowercase hex.
    pub head_mac: String,
    /// The public chain hash through that record, lowercase hex.
    pub head_hash: String,
    /// When it was written, Unix ms.
    pub time_ms: i64,
    /// Ed25519 signature over [`Checkpoint::signed_bytes`], lowercase hex.
    pub signature: String,
}

#[derive(Serialize)]
struct SignedPart<'a> {
    writer: &'a str,
    seq: u64,
    head_mac: &'a str,
    head_hash: &'a str,
    time_ms: i64,
}

impl Checkpoint {
    /// What the signature covers: `"sealq-audit-checkpoint-v1"` followed by
    /// the MessagePack (named) map `{writer, seq, head_mac, head_hash, time_ms}`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = CHECKPOINT_DOMAIN.to_vec();
        // Invariant: strings and integers always encode.
        let body = rmp_serde::to_vec_named(&SignedPart {
            writer: &self.writer,
            seq: self.seq,
            head_mac: &self.head_mac,
            head_hash: &self.head_hash,
            time_ms: self.time_ms,
        })
        .unwrap_or_default();
        out.extend_from_slice(&body);
        out
    }

    /// Whether the signature is valid for `key` (never panics).
    pub fn signature_valid(&self, key: &VerifyingKey) -> bool {
        let Some(sig) = hex::decode(&self.signature)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
        else {
            return false;
        };
        key.verify_strict(&self.signed_bytes(), &Signature::from_bytes(&sig))
            .is_ok()
    }
}

/// The keys of the audit log.
///
/// - the MAC key (from the keyring, [`Keyring::derive_stable_key`] with
///   [`AUDIT_MAC_LABEL`]): writes and checks record MACs;
/// - the Ed25519 signing key (`audit_signing_key` in the keyring): signs
///   checkpoints;
/// - the Ed25519 public key: checks checkpoints. Alone
///   ([`AuditKeys::public_only`]) it verifies everything a checkpoint covers,
///   through the public chain hash, but not the records after the last one.
pub struct AuditKeys {
    pub(crate) mac: Option<Zeroizing<[u8; 32]>>,
    pub(crate) signing: Option<SigningKey>,
    pub(crate) verifying: Option<VerifyingKey>,
}

impl std::fmt::Debug for AuditKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKeys")
            .field("mac", &self.mac.is_some())
            .field("signing", &self.signing.is_some())
            .field(
                "public_key",
                &self.verifying.map(|k| hex::encode(k.to_bytes())),
            )
            .finish()
    }
}

impl AuditKeys {
    /// All three keys from a keyring. Fails with [`Error::Keyring`] when the
    /// keyring has no `audit_signing_key` (keyrings made before the audit
    /// log): the audit log refuses to run unsigned.
    pub fn from_keyring(keyring: &Keyring) -> Result<Self, Error> {
        let seed = keyring.audit_signing_seed().ok_or_else(|| {
            Error::Keyring(
                "the keyring has no `audit_signing_key`, so audit checkpoints cannot be signed; \
                 add one (32 random bytes, base64) or generate a new keyring with \
                 `sealq keys generate`, or run without the audit log"
                    .into(),
            )
        })?;
        let signing = SigningKey::from_bytes(seed);
        Ok(AuditKeys {
            mac: Some(keyring.derive_stable_key(AUDIT_MAC_LABEL)),
            verifying: Some(signing.verifying_key()),
            signing: Some(signing),
        })
    }

    /// Only the public key: verification of checkpoints and of the records
    /// they cover. Fails if the 32 bytes are not a valid Ed25519 point.
    pub fn public_only(public_key: &[u8; 32]) -> Result<Self, Error> {
        let verifying =
            VerifyingKey::from_bytes(public_key).map_err(|_| Error::InvalidArgument {
                what: "audit public key",
                reason: "not a valid Ed25519 public key".into(),
            })?;
        Ok(AuditKeys {
            mac: None,
            signing: None,
            verifying: Some(verifying),
        })
    }

    /// [`AuditKeys::public_only`] from standard base64.
    pub fn public_only_base64(b64: &str) -> Result<Self, Error> {
        use base64::Engine as _;
        let bad = || Error::InvalidArgument {
            what: "audit public key",
            reason: "expected 32 bytes in standard base64 (44 characters)".into(),
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| bad())?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
        Self::public_only(&key)
    }

    /// The public key, if known.
    pub fn public_key(&self) -> Option<[u8; 32]> {
        self.verifying.map(|k| k.to_bytes())
    }

    pub(crate) fn sign(&self, cp: &mut Checkpoint) {
        if let Some(k) = &self.signing {
            cp.signature = hex::encode(k.sign(&cp.signed_bytes()).to_bytes());
        }
    }
}

/// 64 hex digits to 32 bytes.
pub(crate) fn decode_32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    hex::decode(s).ok()?.try_into().ok()
}
