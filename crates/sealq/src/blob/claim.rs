//! The sealed claim that replaces an offloaded payload, and the two halves of
//! the round trip: [`offload`] (producer) and [`open_claimed`] (worker).

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{BLOB_MISSING, BlobKey, BlobStore};
use crate::error::{BrokerError, Error, IntegrityError};
use crate::model::id::{SubjectTag, TaskId};
use crate::model::record::{NewTask, TaskRecord};
use crate::model::state::ArchiveReason;
use crate::policy::PayloadPolicy;
use crate::seal::data_key::DataKey;
use crate::seal::envelope::{Aad, Purpose, TAG_LEN, parse_header};
use crate::seal::keyring::Keyring;
use crate::seal::opener::{KeyNeeded, SealingKey, key_needed};
use crate::store::broker::{Ack, AckResult, Outcome};

/// A MessagePack ext8 header (`0xc7`, length 41, type `0x53`): a value serde
/// payloads never produce, so a claim cannot be mistaken for a payload.
const MARKER: [u8; 3] = [0xc7, 41, 0x53];
const CLAIM_VERSION: u8 = 1;
/// Marker, version, SHA-256, length.
const CLAIM_LEN: usize = 3 + 1 + 32 + 8;

/// What the broker's envelope holds for an offloaded payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claim {
    /// Length of the sealed blob.
    pub(crate) len: u64,
    /// SHA-256 of the sealed blob.
    pub(crate) sha256: [u8; 32],
}

impl Claim {
    fn for_blob(blob: &[u8]) -> Self {
        Claim {
            len: blob.len() as u64,
            sha256: Sha256::digest(blob).into(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CLAIM_LEN);
        out.extend_from_slice(&MARKER);
        out.push(CLAIM_VERSION);
        out.extend_from_slice(&self.sha256);
        out.extend_from_slice(&self.len.to_be_bytes());
        out
    }

    /// The claim in an opened payload, if it is one.
    pub(crate) fn parse(plain: &[u8]) -> Option<Claim> {
        if plain.len() != CLAIM_LEN || plain[..3] != MARKER || plain[3] != CLAIM_VERSION {
            return None;
        }
        let sha256 = plain[4..36].try_into().ok()?;
        let len = u64::from_be_bytes(plain[36..44].try_into().ok()?);
        Some(Claim { len, sha256 })
    }

    fn key(&self, task: TaskId) -> BlobKey {
        BlobKey {
            task,
            digest: self.sha256,
        }
    }

    fn matches(&self, blob: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        blob.len() as u64 == self.len && bool::from(Sha256::digest(blob).ct_eq(&self.sha256))
    }
}

fn aad_of(task: &NewTask) -> Aad<'_> {
    Aad::new(
        Purpose::Payload,
        task.id,
        &task.queue,
        &task.kind,
        &task.meta,
    )
}

/// The payload size of an envelope: its length minus header and tag.
fn payload_len(envelope: &[u8]) -> usize {
    parse_header(envelope).map_or(envelope.len(), |h| {
        envelope.len().saturating_sub(h.encoded_len() + TAG_LEN)
    })
}

/// The policy check of a producer with a blob store: payloads over
/// `threshold` will leave the broker, so the queue's size budget does not
/// apply to them; the scanner does.
pub(crate) fn check_policy(
    policy: &PayloadPolicy,
    threshold: usize,
    queue: &str,
    payload: &[u8],
) -> Result<(), Error> {
    if payload.len() <= threshold {
        return policy.check(queue, payload);
    }
    match policy.try_scan(queue, payload)?.into_iter().next() {
        Some(finding) => Err(finding.into()),
        None => Ok(()),
    }
}

/// Offload every sealed task whose payload is over `threshold`: its envelope
/// goes to `store` and a sealed claim takes its place. The blob keeps the
/// envelope's associated data, so it opens only as this task's payload.
///
/// An envelope sealed with a subject's data key (`data_keys`, by subject
/// tag) gets its claim sealed with the same key: the blob, the subject-sealed
/// envelope itself, then opens only while the subject's key exists.
///
/// A store failure fails the whole batch (nothing is enqueued); blobs already
/// stored for it are orphans that [`super::sweep_orphans`] removes.
pub(crate) async fn offload_all(
    store: &dyn BlobStore,
    keyring: &Keyring,
    data_keys: &HashMap<SubjectTag, Arc<DataKey>>,
    threshold: usize,
    tasks: &mut [NewTask],
) -> Result<(), Error> {
    for task in tasks.iter_mut() {
        if payload_len(&task.envelope) <= threshold {
            continue;
        }
        let sealer = match key_needed(&task.envelope, task.meta.subject_tag.as_ref()) {
            Ok(KeyNeeded::Keyring) => SealingKey::Keyring(keyring),
            // Invariant of Client::seal_with: a subject-sealed envelope's
            // key is in `data_keys`; without it, keep the payload inline.
            Ok(KeyNeeded::Subject(tag)) => match data_keys.get(&tag) {
                Some(key) => SealingKey::Subject(key),
                None => continue,
            },
            // Subject-sealed without a subject tag: never produced by
            // Client::seal_with; keep the payload inline.
            Err(_) => continue,
        };
        let claim = Claim::for_blob(&task.envelope);
        let sealed_claim = sealer.seal(&aad_of(task), &claim.encode())?;
        store
            .put(&claim.key(task.id), task.envelope.clone())
            .await?;
        task.envelope = sealed_claim;
        metrics::counter!("sealq_blob_offloaded_total").increment(1);
    }
    Ok(())
}

/// Delete the blobs of the tasks whose completion the broker applied, in the
/// background (a failure is logged: the sweep catches what is left).
pub(crate) fn delete_completed(
    store: &std::sync::Arc<dyn BlobStore>,
    acks: &[Ack],
    results: &[AckResult],
) {
    let done: Vec<TaskId> = acks
        .iter()
        .zip(results)
        .filter(|(a, r)| **r == AckResult::Applied && matches!(a.outcome, Outcome::Complete { .. }))
        .map(|(a, _)| a.lease.task_id)
        .collect();
    if done.is_empty() {
        return;
    }
    let store = store.clone();
    tokio::spawn(async move {
        if let Err(e) = store.delete_tasks(&done).await {
            tracing::warn!(error = %e, count = done.len(), "could not delete the blobs of completed tasks");
        }
    });
}

/// Why an offloaded payload could not be opened.
#[derive(Debug)]
pub(crate) enum ClaimError {
    /// The worker has no blob store configured.
    NoStore,
    /// The store has no blob for the task.
    Missing,
    /// The blob is not the one the claim names, or does not open.
    Integrity(IntegrityError),
    /// The store failed; retrying may help.
    Store(BrokerError),
}

/// What the worker does with a task whose claim cannot be honoured.
pub(crate) enum ClaimAction {
    /// Never reaches a handler: archived as `integrity`.
    Refuse(IntegrityError),
    /// Archived with this reason and message.
    Archive(ArchiveReason, &'static str),
    /// Retried with the task's backoff.
    Retry(String),
}

impl ClaimError {
    /// What the worker does about it.
    pub(crate) fn action(self) -> ClaimAction {
        match self {
            ClaimError::Integrity(e) => ClaimAction::Refuse(e),
            ClaimError::Missing => ClaimAction::Archive(
                ArchiveReason::Other(BLOB_MISSING.to_owned()),
                "the payload's blob is not in the blob store",
            ),
            ClaimError::NoStore => {
                tracing::error!(
                    "an offloaded payload arrived at a worker without a blob store; retrying (WorkerBuilder::blob_store)"
                );
                ClaimAction::Retry("this worker has no blob store for an offloaded payload".into())
            }
            ClaimError::Store(e) => ClaimAction::Retry(format!("blob store: {e}")),
        }
    }
}

/// If `plain` (an opened payload) is a claim, fetch the blob, check it against
/// the claim and open it with the task's associated data, with `opener`:
/// what opened the envelope (the keyring, or the subject's data key).
/// `Ok(None)`: not a claim, use `plain` as the payload.
pub(crate) async fn open_claimed(
    store: Option<&dyn BlobStore>,
    opener: SealingKey<'_>,
    record: &TaskRecord,
    plain: &[u8],
) -> Result<Option<Zeroizing<Vec<u8>>>, ClaimError> {
    let Some(claim) = Claim::parse(plain) else {
        return Ok(None);
    };
    let store = store.ok_or(ClaimError::NoStore)?;
    let blob = store
        .get(&claim.key(record.id))
        .await
        .map_err(ClaimError::Store)?
        .ok_or(ClaimError::Missing)?;
    if !claim.matches(&blob) {
        return Err(ClaimError::Integrity(IntegrityError::Tampered));
    }
    opener
        .open(&Aad::for_record(record, Purpose::Payload), &blob)
        .map(Some)
        .map_err(ClaimError::Integrity)
}

/// The claim-check blob of an offloaded payload, for re-sealing: `plain`
/// is the opened envelope of `record`. `None` when it is not a claim;
/// otherwise the stored blob (checked against the claim) and the key id its
/// header names.
pub(crate) async fn claimed_blob(
    store: Option<&dyn BlobStore>,
    record: &TaskRecord,
    plain: &[u8],
) -> Result<Option<(Vec<u8>, String)>, Error> {
    let Some(claim) = Claim::parse(plain) else {
        return Ok(None);
    };
    let Some(store) = store else {
        return Err(Error::Config(
            "the payload is in the claim-check store: configure ClientBuilder::blob_store".into(),
        ));
    };
    let blob = store.get(&claim.key(record.id)).await?.ok_or_else(|| {
        Error::Config("the payload's blob is not in the claim-check store".into())
    })?;
    if !claim.matches(&blob) {
        return Err(Error::Integrity(IntegrityError::Tampered));
    }
    let from = parse_header(&blob)?.key_id.to_owned();
    Ok(Some((blob, from)))
}

/// Seal a claim-check `blob` of `record` again under the primary key and,
/// with `store_it`, store the new blob (beside the old one, which the
/// task's deletion removes). Returns the claim for the new blob (to seal
/// into the new envelope) and the new blob's SHA-256 (hex).
pub(crate) async fn reseal_blob(
    store: Option<&dyn BlobStore>,
    keyring: &Keyring,
    record: &TaskRecord,
    blob: &[u8],
    store_it: bool,
) -> Result<(Vec<u8>, String), Error> {
    let aad = Aad::for_record(record, Purpose::Payload);
    let opened = keyring.open(&aad, blob)?;
    let sealed = keyring.seal(&aad, &opened)?;
    let fresh = Claim::for_blob(&sealed);
    if store_it && let Some(store) = store {
        store.put(&fresh.key(record.id), sealed).await?;
    }
    Ok((fresh.encode(), crate::model::hex::encode(fresh.sha256)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_round_trip_and_payloads_are_not_claims() {
        let c = Claim::for_blob(b"sealed bytes");
        let bytes = c.encode();
        assert_eq!(bytes.len(), CLAIM_LEN);
        assert_eq!(Claim::parse(&bytes), Some(c.clone()));
        assert!(c.matches(b"sealed bytes"));
        assert!(!c.matches(b"sealed bytez"));
        let payload = rmp_serde::to_vec_named(&serde_json::json!({"a": [1, 2, 3]})).unwrap();
        assert_eq!(Claim::parse(&payload), None);
        let mut other_version = bytes;
        other_version[3] = 2;
        assert_eq!(Claim::parse(&other_version), None);
    }
}
