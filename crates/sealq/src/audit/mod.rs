//! # The tamper-evident audit log
//!
//! Every lifecycle event of every task (and every operator action) becomes
//! an [`AuditRecord`]. Each writing process (a producer or a worker) keeps
//! its own chain: records carry the writer id and a sequence number from 0,
//! and `mac = HMAC-SHA-256(audit_key, prev_mac ‖ canonical_bytes)`, with the
//! audit key derived from the keyring ([`AUDIT_MAC_LABEL`]) and separate
//! from the sealing keys. Editing, deleting, reordering or inserting a
//! record breaks the chain.
//!
//! Every [`DEFAULT_CHECKPOINT_EVERY`] records, every
//! [`DEFAULT_CHECKPOINT_INTERVAL`] and at shutdown, the writer appends a
//! [`Checkpoint`] (chain head, seq, time) signed with Ed25519
//! (`audit_signing_key` in the keyring) to a second place, so cutting the
//! tail is detected too, and so is everything else a checkpoint covers with
//! only the public key (through a public SHA-256 chain hash).
//!
//! - [`Auditor`]: the cheap handle the client and worker record through;
//!   recording never blocks, a background task batches.
//! - [`AuditSink`]: where records go: [`JsonLinesSink`] (append-only
//!   files), [`MemorySink`] (tests), `sealq_sqlite::SqliteAuditSink`.
//! - [`standalone_chain`]: a whole chain (genesis, events, checkpoint)
//!   made in one go, for a record stored in the caller's transaction.
//! - [`verify`] / [`verify_sink`]: check chains and checkpoints; the
//!   [`VerifyReport`] names every [`Fault`] with writer, seq and position.
//!
//! `docs/audit.md` in the repository specifies the bytes.

mod auditor;
mod fault;
mod head;
pub(crate) mod hooks;
mod sink;
mod standalone;
mod verify;

pub use auditor::{
    AuditStats, Auditor, AuditorBuilder, DEFAULT_CHECKPOINT_EVERY, DEFAULT_CHECKPOINT_INTERVAL,
};
// The event, record and checkpoint formats live in `model` and `seal`, the
// sink trait in `store`; their paths here are kept.
pub use crate::model::audit_event::{
    AuditEvent, EnqueuedEntry, LeasedEntry, StartedEntry, SucceededEntry,
};
pub use crate::seal::audit_chain::{
    AUDIT_MAC_LABEL, AuditKeys, AuditRecord, Checkpoint, GENESIS, chain_hash, record_mac,
};
pub use crate::seal::audit_head::{Anchor, AnchorWriter, checkpoints_root, mac_key_id};
pub use crate::store::audit::{AuditError, AuditSink, Loaded};
pub use fault::{Fault, Store};
pub use head::{check_anchor, make_anchor};
pub use sink::{JsonLinesSink, MemorySink, checkpoint_line, record_line, write_record_line};
pub use standalone::{StandaloneChain, enqueued_entry, enqueued_event, standalone_chain};
pub use verify::{
    RepeatedSuccess, SuccessAt, VerifyOptions, VerifyReport, any_checkpoint_verifies, verify,
    verify_sink,
};
