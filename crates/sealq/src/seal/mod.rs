//! # Sealing: what keeps a payload secret and its records tamper-evident
//!
//! Knows keys and bytes, never a store: it imports only [`crate::model`] and
//! the error type.
//!
//! - `aead`: XChaCha20-Poly1305 (HChaCha20, then `ring`'s ChaCha20-Poly1305).
//! - [`envelope`]: the sealed bytes and the associated data they are bound to.
//! - [`keyring`]: named keys, one primary; seals and opens envelopes.
//! - [`data_key`]: per-subject data keys and the KEKs that wrap them.
//! - [`kek`]: the keyring's KEK epochs, rotated to finalise erasures.
//! - [`opener`]: the one rule for which key opens a stored record.
//! - `trace_frame`: the trace context sealed in a version-3 payload envelope.
//! - [`audit_chain`]: the audit record's MAC chain and signed checkpoints.
//! - `audit_encode`: the canonical bytes of audit records, fast path.
//! - [`audit_head`]: tree heads over the whole log, the audit key id, anchors.

pub(crate) mod aead;
pub mod audit_chain;
pub(crate) mod audit_encode;
pub mod audit_head;
pub mod data_key;
pub mod envelope;
pub mod kek;
pub mod keyring;
pub mod opener;
pub(crate) mod trace_frame;

pub use data_key::DataKey;
pub use keyring::Keyring;
pub use opener::{KeyNeeded, SealingKey};
