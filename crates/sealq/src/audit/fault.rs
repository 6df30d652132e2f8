//! What can be wrong with an audit log: [`Fault`], and [`Store`], which
//! stored list a position refers to. Found by [`super::verify`].

use serde::Serialize;

/// Which stored list a position refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Store {
    /// The records (`audit.jsonl`, `audit_records`).
    Records,
    /// The checkpoints (`audit.checkpoints.jsonl`, `audit_checkpoints`).
    Checkpoints,
}

/// One thing wrong with an audit log. Positions are 1-based line numbers of
/// a JSON-lines file or row ids of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Fault {
    /// A line that is not a valid record or checkpoint (bad JSON, unknown
    /// field, truncated write).
    CorruptLine {
        /// Records or checkpoints.
        store: Store,
        /// Where.
        position: u64,
        /// Why it does not parse.
        reason: String,
    },
    /// A record whose MAC does not match its content while the chain links
    /// around it are intact: its content (or MAC) was edited, or it is forged.
    Edited {
        /// Writer.
        writer: String,
        /// Its seq.
        seq: u64,
        /// Where.
        position: u64,
    },
    /// Records missing from the middle of a chain.
    Deleted {
        /// Writer.
        writer: String,
        /// First missing seq.
        from_seq: u64,
        /// Last missing seq.
        to_seq: u64,
        /// Position of the first record after the gap.
        before_position: u64,
    },
    /// A record stored after a later record of the same writer.
    Reordered {
        /// Writer.
        writer: String,
        /// Its seq.
        seq: u64,
        /// Where it is.
        position: u64,
        /// The higher seq stored before it.
        after_seq: u64,
    },
    /// An extra record: a seq that appears more than once; this copy is not
    /// the one that fits the chain.
    Inserted {
        /// Writer.
        writer: String,
        /// The duplicated seq.
        seq: u64,
        /// Where the extra record is.
        position: u64,
    },
    /// A signed checkpoint names a record beyond the last one stored: the
    /// tail of the chain was cut.
    Truncated {
        /// Writer.
        writer: String,
        /// The checkpoint's seq.
        checkpoint_seq: u64,
        /// The last stored seq of the writer.
        last_seq: u64,
        /// The checkpoint's position.
        checkpoint_position: u64,
    },
    /// No record of any writer verifies: the log was written with another
    /// keyring's audit key. (`writer` is always `None` now: one writer
    /// whose records do not verify is a [`Fault::UnknownKey`].)
    WrongKey {
        /// The writer, or every writer.
        writer: Option<String>,
    },
    /// No checkpoint signature verifies with the public key given.
    WrongPublicKey,
    /// A checkpoint whose signature does not verify (edited or forged).
    CheckpointForged {
        /// Writer named in it.
        writer: String,
        /// Its seq.
        seq: u64,
        /// Where.
        position: u64,
    },
    /// A validly signed checkpoint whose head differs from the stored
    /// record at its seq: the record was replaced after the checkpoint.
    CheckpointMismatch {
        /// Writer.
        writer: String,
        /// The checkpoint's seq.
        seq: u64,
        /// The checkpoint's position.
        checkpoint_position: u64,
    },
    /// Without the MAC key: records between two checkpoints changed (edited,
    /// replaced, inserted or removed), detected through the public chain hash.
    ChangedSinceCheckpoint {
        /// Writer.
        writer: String,
        /// The seq of the previous valid checkpoint (exclusive), if any.
        after_seq: Option<u64>,
        /// The checkpoint's seq (inclusive).
        through_seq: u64,
        /// The checkpoint's position.
        checkpoint_position: u64,
    },
    /// A checkpoint for a writer that has no record at all: its whole chain
    /// was removed.
    UnknownWriter {
        /// The writer.
        writer: String,
        /// The checkpoint's position.
        checkpoint_position: u64,
    },
    /// More records after the writer's last checkpoint than the checkpoint
    /// window allows: its checkpoints were removed (or never written).
    NotCheckpointed {
        /// Writer.
        writer: String,
        /// First seq not covered.
        from_seq: u64,
        /// How many records are not covered.
        count: u64,
        /// The window (records per checkpoint).
        window: u64,
    },
    /// There are records but the checkpoint store is missing.
    CheckpointsMissing,
    /// A writer whose records are MACed with an audit key this keyring
    /// does not hold (another keyring wrote them): not verified, and not
    /// a forgery of the rest of the log.
    UnknownKey {
        /// The writer.
        writer: String,
        /// The audit key id its genesis names (`None` for writers written
        /// before genesis records).
        key_id: Option<String>,
        /// How many of its records are stored.
        records: u64,
    },
    /// A writer's genesis names the checkpoint store's head when it
    /// started, and the store no longer starts with those entries: entries
    /// written before it were removed, replaced or reordered (a whole
    /// writer removed, or a tail cut together with its last checkpoint).
    LogHeadMismatch {
        /// The writer whose genesis does not match.
        writer: String,
        /// How many checkpoint entries it saw.
        seen: u64,
        /// How many are stored now.
        stored: u64,
    },
    /// The anchor given cannot be used (bad signature, unknown version).
    AnchorInvalid {
        /// Why.
        reason: String,
    },
    /// The checkpoint store holds fewer entries than the anchor covers.
    AnchorCheckpointsMissing {
        /// Entries the anchor covers.
        anchored: u64,
        /// Entries stored.
        stored: u64,
    },
    /// The checkpoint store's first entries differ from those the anchor
    /// covers (replaced log).
    AnchorCheckpointsChanged {
        /// Entries the anchor covers.
        anchored: u64,
    },
    /// A writer the anchor names has no record stored.
    AnchorWriterMissing {
        /// The writer.
        writer: String,
        /// The seq the anchor names.
        seq: u64,
    },
    /// A writer's records end before the seq the anchor names: its tail
    /// was cut.
    AnchorTailCut {
        /// The writer.
        writer: String,
        /// The seq the anchor names.
        anchored_seq: u64,
        /// Its last stored seq.
        last_seq: u64,
    },
    /// A writer's chain through the anchor's seq differs from the anchor's
    /// hash: its records were replaced (another run's log).
    AnchorMismatch {
        /// The writer.
        writer: String,
        /// The seq the anchor names.
        seq: u64,
    },
}

impl Fault {
    /// A one-line description naming where and what, `position_name` being
    /// `"line"` for files or `"row"` for tables.
    pub fn describe(&self, position_name: &str) -> String {
        let p = position_name;
        match self {
            Fault::CorruptLine {
                store,
                position,
                reason,
            } => {
                let what = match store {
                    Store::Records => "records",
                    Store::Checkpoints => "checkpoints",
                };
                format!("{what} {p} {position}: corrupt, not a valid entry: {reason}")
            }
            Fault::Edited {
                writer,
                seq,
                position,
            } => format!(
                "records {p} {position} (writer {writer}, seq {seq}): record edited or forged: \
                 its MAC does not match its content"
            ),
            Fault::Deleted {
                writer,
                from_seq,
                to_seq,
                before_position,
            } => {
                let n = to_seq.saturating_sub(*from_seq).saturating_add(1);
                let which = if from_seq == to_seq {
                    format!("seq {from_seq}")
                } else {
                    format!("seqs {from_seq}..={to_seq}")
                };
                format!(
                    "records before {p} {before_position} (writer {writer}): {n} record(s) \
                     deleted: {which} missing"
                )
            }
            Fault::Reordered {
                writer,
                seq,
                position,
                after_seq,
            } => format!(
                "records {p} {position} (writer {writer}, seq {seq}): records reordered: \
                 stored after seq {after_seq}"
            ),
            Fault::Inserted {
                writer,
                seq,
                position,
            } => format!(
                "records {p} {position} (writer {writer}, seq {seq}): record inserted: a second \
                 record with this seq that does not fit the chain"
            ),
            Fault::Truncated {
                writer,
                checkpoint_seq,
                last_seq,
                checkpoint_position,
            } => format!(
                "writer {writer}: tail truncated: checkpoint at checkpoints {p} \
                 {checkpoint_position} covers seq {checkpoint_seq} but the records end at seq \
                 {last_seq} ({} record(s) missing)",
                checkpoint_seq.saturating_sub(*last_seq)
            ),
            Fault::WrongKey { writer: Some(w) } => format!(
                "writer {w}: wrong key: none of its records verifies with this keyring's audit key"
            ),
            Fault::WrongKey { writer: None } => {
                "wrong key: no record verifies with this keyring's audit key (another keyring \
                 wrote this log)"
                    .to_owned()
            }
            Fault::WrongPublicKey => "wrong key: no checkpoint signature verifies with this \
                                      audit public key"
                .to_owned(),
            Fault::CheckpointForged {
                writer,
                seq,
                position,
            } => format!(
                "checkpoints {p} {position} (writer {writer}, seq {seq}): checkpoint forged or \
                 edited: its signature does not verify"
            ),
            Fault::CheckpointMismatch {
                writer,
                seq,
                checkpoint_position,
            } => format!(
                "writer {writer}, seq {seq}: record replaced: it differs from the signed \
                 checkpoint at checkpoints {p} {checkpoint_position}"
            ),
            Fault::ChangedSinceCheckpoint {
                writer,
                after_seq,
                through_seq,
                checkpoint_position,
            } => {
                let from = after_seq.map_or(0, |s| s.saturating_add(1));
                format!(
                    "writer {writer}: records seq {from}..={through_seq} changed (edited, \
                     deleted, inserted or reordered): they do not match the signed checkpoint \
                     at checkpoints {p} {checkpoint_position}"
                )
            }
            Fault::UnknownWriter {
                writer,
                checkpoint_position,
            } => format!(
                "checkpoints {p} {checkpoint_position}: unknown writer {writer}: checkpointed \
                 but none of its records is stored (its records were deleted)"
            ),
            Fault::NotCheckpointed {
                writer,
                from_seq,
                count,
                window,
            } => format!(
                "writer {writer}: {count} records from seq {from_seq} are not covered by any \
                 checkpoint (the window is {window}): its checkpoints are missing"
            ),
            Fault::CheckpointsMissing => {
                "the checkpoint store is missing (deleted?): truncation cannot be ruled out"
                    .to_owned()
            }
            Fault::UnknownKey {
                writer,
                key_id,
                records,
            } => format!(
                "writer {writer}: unknown key {}: its {records} record(s) are MACed with an audit \
                 key this keyring does not hold; not verified (not a forgery of the log)",
                key_id
                    .as_deref()
                    .unwrap_or("(not named: written before genesis records)")
            ),
            Fault::LogHeadMismatch {
                writer,
                seen,
                stored,
            } => format!(
                "writer {writer}: when it started the checkpoint store held {seen} entries; the \
                 store ({stored} entries now) no longer starts with them: entries written \
                 before it were removed, replaced or reordered (a whole writer removed, or a \
                 tail cut with its last checkpoint)"
            ),
            Fault::AnchorInvalid { reason } => format!("anchor: cannot be used: {reason}"),
            Fault::AnchorCheckpointsMissing { anchored, stored } => format!(
                "anchor: it covers {anchored} checkpoint entries but {stored} are stored: \
                 checkpoints removed (log emptied or replaced?)"
            ),
            Fault::AnchorCheckpointsChanged { anchored } => format!(
                "anchor: the first {anchored} checkpoint entries differ from those it covers: \
                 the log was replaced or its checkpoints changed"
            ),
            Fault::AnchorWriterMissing { writer, seq } => format!(
                "anchor: writer {writer} (through seq {seq}) is absent from the log: its \
                 records were removed"
            ),
            Fault::AnchorTailCut {
                writer,
                anchored_seq,
                last_seq,
            } => format!(
                "anchor: writer {writer}: the records end at seq {last_seq} but the anchor \
                 covers seq {anchored_seq}: tail cut ({} record(s) missing)",
                anchored_seq.saturating_sub(*last_seq)
            ),
            Fault::AnchorMismatch { writer, seq } => format!(
                "anchor: writer {writer}: its chain through seq {seq} differs from the anchor: \
                 records replaced (another run's log?)"
            ),
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe("line"))
    }
}
