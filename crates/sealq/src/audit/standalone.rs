//! A complete chain made in one go: [`standalone_chain`].
//!
//! A backend that stores tasks inside the application's own transaction (a
//! Postgres transactional enqueue) must store their audit record in that
//! transaction too, so that a rollback leaves neither. The process' own
//! [`Auditor`](crate::audit::Auditor) cannot write it: its chain numbers
//! records in order, and a rolled-back record would leave a gap that
//! verification reports as a deletion. Instead each transaction gets a
//! chain of its own, complete before it is stored: a `writer_started`
//! genesis, the events, and a signed checkpoint over them. Committed, it
//! verifies like any other writer's chain; rolled back, none of it exists.

use crate::error::Error;
use crate::model::audit_event::{AuditEvent, EnqueuedEntry};
use crate::model::clock::wall_clock_ms;
use crate::model::record::NewTask;
use crate::seal::audit_chain::{
    AuditKeys, AuditRecord, Checkpoint, GENESIS, RecordMac, canonical_into, chain_hash,
};

/// A whole chain: its records (genesis first) and the checkpoint covering
/// them all.
#[derive(Debug, Clone)]
pub struct StandaloneChain {
    /// The records, in seq order from 0.
    pub records: Vec<AuditRecord>,
    /// The signed checkpoint over the last record.
    pub checkpoint: Checkpoint,
}

/// Number, MAC and sign `events` (time, event) as the whole chain of
/// `writer`, a writer id used for nothing else (two chains under one id
/// break each other). The genesis names no checkpoint-store head
/// (`head_error` says why: `no_head_reason`), since the chain is stored in
/// a transaction that commits in an order no writer can read beforehand.
/// Fails when `keys` lack the MAC key or the signing key.
pub fn standalone_chain(
    keys: &AuditKeys,
    writer: &str,
    events: Vec<(i64, AuditEvent)>,
    no_head_reason: &str,
) -> Result<StandaloneChain, Error> {
    let (Some(mac_key), Some(_)) = (keys.mac.as_deref(), keys.signing.as_ref()) else {
        return Err(Error::Keyring(
            "the audit keys lack the MAC or the signing key, so no audit chain can be written"
                .into(),
        ));
    };
    if writer.is_empty() {
        return Err(Error::InvalidArgument {
            what: "audit writer id",
            reason: "must not be empty".into(),
        });
    }
    let mac = RecordMac::new(mac_key);
    let genesis = AuditEvent::WriterStarted {
        format: crate::seal::audit_head::GENESIS_FORMAT,
        mac_key_id: keys.mac_key_id().unwrap_or_default(),
        public_key: keys.public_key_base64().unwrap_or_default(),
        checkpoints_seen: None,
        checkpoints_root: None,
        head_error: Some(no_head_reason.to_owned()),
    };
    let mut records = Vec::with_capacity(events.len() + 1);
    let (mut prev_mac, mut prev_hash) = (GENESIS, GENESIS);
    let mut scratch = Vec::with_capacity(256);
    for (seq, (time_ms, event)) in std::iter::once((wall_clock_ms(), genesis))
        .chain(events)
        .enumerate()
    {
        let seq = seq as u64;
        scratch.clear();
        canonical_into(&mut scratch, writer, seq, time_ms, &event)?;
        let m = mac.mac(&prev_mac, &scratch);
        prev_hash = chain_hash(&prev_hash, &m, &scratch);
        prev_mac = m;
        records.push(AuditRecord {
            writer: writer.to_owned(),
            seq,
            time_ms,
            event,
            mac: crate::model::hex::encode(m),
        });
    }
    let mut checkpoint = Checkpoint {
        writer: writer.to_owned(),
        seq: records.len() as u64 - 1,
        head_mac: crate::model::hex::encode(prev_mac),
        head_hash: crate::model::hex::encode(prev_hash),
        time_ms: wall_clock_ms(),
        signature: String::new(),
    };
    keys.sign(&mut checkpoint);
    Ok(StandaloneChain {
        records,
        checkpoint,
    })
}

/// What the audit log says of one sealed task once it is stored (its id,
/// queue, type, key id, and the ciphertext's SHA-256 and size; dated when
/// it was sealed): one entry of [`enqueued_event`].
pub fn enqueued_entry(task: &NewTask) -> EnqueuedEntry {
    super::hooks::enqueued_entry(task)
}

/// The event a producer records when the broker stored `tasks` in one call
/// (`enqueued` for one, `enqueued_batch` for more) and its time (when the
/// first was sealed); `None` for no task. What [`crate::Client`] records
/// through its auditor, for a backend that stores the record itself.
pub fn enqueued_event(producer: &str, tasks: Vec<EnqueuedEntry>) -> Option<(i64, AuditEvent)> {
    super::hooks::enqueued_record(producer, tasks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{MemorySink, verify_sink};
    use crate::seal::keyring::Keyring;
    use crate::store::audit::AuditSink;

    #[tokio::test]
    async fn a_standalone_chain_verifies_beside_an_auditors_and_an_edit_is_caught() {
        let keyring = Keyring::generate();
        let keys = AuditKeys::from_keyring(&keyring).unwrap();
        let sink = MemorySink::new();
        let event = |n: u32| AuditEvent::Requeued {
            task: crate::model::id::TaskId::new(),
            worker: "w".into(),
            attempt: n,
        };
        let chain =
            standalone_chain(&keys, "p:1:tx:01", vec![(1, event(1)), (2, event(2))], "tx").unwrap();
        assert_eq!(chain.records.len(), 3);
        assert_eq!(chain.records[0].event.name(), "writer_started");
        assert_eq!(chain.checkpoint.seq, 2);
        sink.append_records(&chain.records).await.unwrap();
        sink.append_checkpoint(&chain.checkpoint).await.unwrap();
        let report = verify_sink(&sink, &keys, &Default::default())
            .await
            .unwrap();
        assert!(report.is_ok(), "{:?}", report.faults);
        assert_eq!(report.verified_records, 3);
        assert!(report.uncovered.is_empty(), "{:?}", report.uncovered);

        // A record of it changed: caught.
        sink.edit_records(|r| r[2] = r[2].replace("\"attempt\":2", "\"attempt\":3"));
        let report = verify_sink(&sink, &keys, &Default::default())
            .await
            .unwrap();
        assert!(!report.is_ok());
    }

    #[test]
    fn a_standalone_chain_needs_the_signing_key() {
        let keyring = Keyring::generate();
        let public = AuditKeys::from_keyring(&keyring)
            .unwrap()
            .public_key()
            .unwrap();
        let keys = AuditKeys::public_only(&public).unwrap();
        assert!(standalone_chain(&keys, "w", Vec::new(), "tx").is_err());
    }
}
