//! Re-sealing stored tasks under the keyring's primary key, after a key
//! rotation: [`Client::reseal`] (`sealq keys reseal`).
//!
//! A rotation ([`crate::Keyring::rotate`]) only changes what *new* tasks are
//! sealed with; every task stored before still names its old key, so the old
//! key cannot be removed. Re-sealing opens each stored payload, result and
//! error sealed with another keyring key and seals it again with the primary
//! key, with the same associated data (task id, queue, type, producer,
//! times, subject tag), so it opens exactly as before, only under the new
//! key. Offloaded payloads get their claim-check blob re-sealed too.
//!
//! Each replacement is a compare-and-swap ([`crate::Broker::swap_sealed`]):
//! a task that changed since it was read (completed, retried, deleted,
//! erased meanwhile) is left alone and counted as `changed`; run again to
//! pick it up. Workers keep running: one holding a task opens the bytes it
//! read, under the old key, which the keyring still has. Parts sealed with
//! a subject's data key (tasks with a data subject) are not keyring-sealed
//! and are left as they are. Every replacement is audited (`resealed`).

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::model::audit_event::AuditEvent;
use crate::model::id::TaskId;
use crate::model::record::TaskRecord;
use crate::seal::envelope::{Aad, Purpose, parse_header};
use crate::seal::opener::{KeyNeeded, key_needed};
use crate::store::broker::{ListQuery, SealedPart, SealedSwap};

/// Default tasks per page of [`Client::reseal`].
pub const DEFAULT_RESEAL_BATCH: usize = 500;

/// What [`Client::reseal`] looks at.
#[derive(Debug, Clone, Default)]
pub struct ResealOptions {
    /// Only this queue (default: every queue the broker knows).
    pub queue: Option<String>,
    /// Only bytes sealed with this key (default: every key but the primary).
    pub from_key: Option<String>,
    /// Tasks read per page and swapped per broker call (0: [`DEFAULT_RESEAL_BATCH`]).
    pub batch: usize,
    /// Count what would be re-sealed; change nothing and audit nothing.
    pub dry_run: bool,
}

/// A part that could not be re-sealed because it did not open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResealFailure {
    /// The task.
    pub task: TaskId,
    /// `payload`, `result`, `error` or `blob`.
    pub part: &'static str,
    /// Why (an integrity error or a missing blob; never any content).
    pub reason: String,
}

/// What [`Client::reseal`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ResealReport {
    /// The primary key everything was re-sealed with.
    pub to_key: String,
    /// Tasks looked at.
    pub scanned: u64,
    /// Sealed parts replaced (with `dry_run`: that would be replaced).
    pub resealed: u64,
    /// Of those, claim-check blobs re-sealed.
    pub blobs: u64,
    /// Tasks with at least one part replaced.
    pub tasks: u64,
    /// Parts already sealed with the primary key.
    pub current: u64,
    /// Parts sealed with a subject's data key (not keyring keys): untouched.
    pub subject_sealed: u64,
    /// Parts that changed while being re-sealed (left alone; run again).
    pub changed: u64,
    /// Parts that did not open: left as they are.
    pub failed: Vec<ResealFailure>,
    /// Parts still sealed with each non-primary key after this run
    /// (failed, changed, or not selected by `from_key`). A key that is not
    /// listed names no stored task any more, unless producers still sealing
    /// with it enqueued some since.
    pub remaining: BTreeMap<String, u64>,
    /// Subject data keys re-wrapped under the primary key's KEK (with
    /// `from_key`, only those wrapped under it): `None` when the broker
    /// keeps no subject keys or a `queue` was given (subject keys belong to
    /// no queue).
    pub subject_keys: Option<crate::subject_keys::RewrapReport>,
    /// Why the subject keys could not be re-wrapped (e.g. a store that
    /// cannot list its keys); the tasks above were re-sealed all the same.
    pub subject_keys_error: Option<String>,
}

impl ResealReport {
    /// Count a part this run leaves as it is: current if `from` is the
    /// primary key, else still sealed with `from`.
    fn left_as_is(&mut self, from: String, primary: &str) {
        if from == primary {
            self.current += 1;
        } else {
            *self.remaining.entry(from).or_default() += 1;
        }
    }
}

/// One part read from a task, opened, and sealed again.
struct Planned {
    swap: SealedSwap,
    from: String,
    /// The payload's claim-check blob, re-sealed (and stored, unless a dry
    /// run) for this swap: the key it named and the new blob's SHA-256.
    blob: Option<(String, String)>,
}

impl Client {
    /// Re-seal stored tasks under the keyring's primary key (see the
    /// [module docs](crate::reseal)). Walks the chosen queues in id order,
    /// `batch` tasks per page, one broker call per page for the swaps.
    /// Audited per replaced part (`resealed`, naming `operator`) when an
    /// auditor is configured.
    pub async fn reseal(&self, options: &ResealOptions, operator: &str) -> Result<ResealReport> {
        let keyring = self.keyring().clone();
        keyring.require_sealing_keys("re-seal tasks")?;
        // A keyring that does not fit what the broker recorded re-seals
        // nothing; one that does records its new primary, so a worker
        // started with only the new key (after `keys remove`) is known.
        crate::keyring_check::stored::check_recorded_keys(
            &**self.broker(),
            &keyring,
            crate::keyring_check::stored::RecordOptions {
                accept_new_keyring: false,
                record: true,
            },
        )
        .await?;
        let primary = keyring.primary_key_id().to_owned();
        if let Some(from) = &options.from_key {
            if from == &primary {
                return Err(Error::InvalidArgument {
                    what: "from_key",
                    reason: format!(
                        "`{from}` is the primary key: there is nothing to re-seal it to"
                    ),
                });
            }
            if !keyring.contains_key(from) {
                return Err(Error::InvalidArgument {
                    what: "from_key",
                    reason: format!(
                        "the keyring has no key `{from}`, so nothing sealed with it can be opened"
                    ),
                });
            }
        }
        let batch = if options.batch == 0 {
            DEFAULT_RESEAL_BATCH
        } else {
            options.batch
        };
        let queues: Vec<String> = match &options.queue {
            Some(q) => vec![q.clone()],
            None => self
                .broker()
                .stats()
                .await?
                .into_iter()
                .map(|s| s.queue)
                .collect(),
        };
        let mut report = ResealReport {
            to_key: primary.clone(),
            ..ResealReport::default()
        };
        for queue in queues {
            let mut after = None;
            loop {
                let page = self
                    .broker()
                    .list(&ListQuery {
                        queue: Some(queue.clone()),
                        after,
                        limit: batch,
                        ..ListQuery::default()
                    })
                    .await?;
                let Some(last) = page.last() else { break };
                after = Some(last.id);
                let full = page.len() >= batch;
                let mut planned = Vec::new();
                for record in &page {
                    report.scanned += 1;
                    self.plan_task(record, options, &mut report, &mut planned)
                        .await?;
                }
                self.apply(planned, options.dry_run, operator, &mut report)
                    .await?;
                if !full {
                    break;
                }
            }
        }
        // The data keys' wrapping rotates with the keyring too (their KEK is
        // derived from the primary key); not per queue.
        if options.queue.is_none()
            && let Some(keys) = self.subject_keys()
        {
            match keys
                .rewrap_all(options.from_key.as_deref(), options.dry_run)
                .await
            {
                Ok(r) => {
                    if !options.dry_run
                        && r.rewrapped > 0
                        && let Some(a) = self.auditor()
                    {
                        a.record(AuditEvent::SubjectKeysRewrapped {
                            to_key_id: r.to_key.clone(),
                            rewrapped: r.rewrapped,
                            operator: operator.to_owned(),
                        });
                    }
                    report.subject_keys = Some(r);
                }
                Err(e) => report.subject_keys_error = Some(e.to_string()),
            }
        }
        Ok(report)
    }

    /// Decide, for each sealed part of `record`, what to do; open and seal
    /// again the ones to replace.
    async fn plan_task(
        &self,
        record: &TaskRecord,
        options: &ResealOptions,
        report: &mut ResealReport,
        planned: &mut Vec<Planned>,
    ) -> Result<()> {
        let keyring = self.keyring();
        let primary = keyring.primary_key_id();
        let parts = [
            (SealedPart::Payload, Some(&record.envelope)),
            (SealedPart::Result, record.result.as_ref()),
            (SealedPart::Error, record.last_error.as_ref()),
        ];
        for (part, bytes) in parts {
            // Absent, or wiped (an erased subject's tombstone): nothing sealed.
            let Some(bytes) = bytes.filter(|b| !b.is_empty()) else {
                continue;
            };
            let fail = |report: &mut ResealReport, part: &'static str, reason: String| {
                report.failed.push(ResealFailure {
                    task: record.id,
                    part,
                    reason,
                });
            };
            let from = match parse_header(bytes) {
                Ok(h) => h.key_id.to_owned(),
                Err(e) => {
                    fail(report, part.as_str(), e.to_string());
                    continue;
                }
            };
            // Only keyring keys are re-sealed: a part sealed with a
            // subject's data key (whether or not the record has the tag
            // that would open it) is left as it is.
            match key_needed(bytes, record.meta.subject_tag.as_ref()) {
                Ok(KeyNeeded::Keyring) => {}
                Ok(KeyNeeded::Subject(_)) | Err(_) => {
                    report.subject_sealed += 1;
                    continue;
                }
            }
            let selected = options.from_key.as_ref().is_none_or(|k| k == &from);
            // A payload under the primary key may still be a claim whose
            // blob names an old key: always look inside (without a store the
            // blob cannot be checked, and is reported).
            let maybe_claim = part == SealedPart::Payload;
            if (from == primary || !selected) && !maybe_claim {
                report.left_as_is(from, primary);
                continue;
            }
            let purpose = match part {
                SealedPart::Payload => Purpose::Payload,
                SealedPart::Result => Purpose::Result,
                SealedPart::Error => Purpose::Error,
            };
            let aad = Aad::for_record(record, purpose);
            let mut plain = match keyring.open(&aad, bytes) {
                Ok(p) => p,
                Err(e) => {
                    fail(report, part.as_str(), e.to_string());
                    if from != primary {
                        *report.remaining.entry(from).or_default() += 1;
                    }
                    continue;
                }
            };
            // The blob of an offloaded payload: (key it named, new SHA-256).
            let mut blob = None;
            if part == SealedPart::Payload {
                let store = self.blob_store();
                match crate::blob::claimed_blob(store, record, &plain).await {
                    Ok(Some((old, blob_from))) if blob_from == primary => drop(old),
                    Ok(Some((old, blob_from))) => {
                        if options.from_key.as_ref().is_none_or(|k| k == &blob_from) {
                            let sealed = crate::blob::reseal_blob(
                                store,
                                keyring,
                                record,
                                &old,
                                !options.dry_run,
                            )
                            .await;
                            match sealed {
                                Ok((claim, sha)) => {
                                    plain = zeroize::Zeroizing::new(claim);
                                    blob = Some((blob_from, sha));
                                }
                                Err(Error::Integrity(e)) => {
                                    fail(report, "blob", e.to_string());
                                    *report.remaining.entry(blob_from).or_default() += 1;
                                }
                                Err(e) => return Err(e),
                            }
                        } else {
                            *report.remaining.entry(blob_from).or_default() += 1;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => fail(report, "blob", e.to_string()),
                }
            }
            if blob.is_none() && (from == primary || !selected) {
                report.left_as_is(from, primary);
                continue;
            }
            let replacement = keyring.seal(&aad, &plain)?;
            planned.push(Planned {
                swap: SealedSwap {
                    task_id: record.id,
                    queue: record.queue.clone(),
                    part,
                    expected: bytes.clone(),
                    replacement,
                },
                from,
                blob,
            });
        }
        Ok(())
    }

    /// Swap the planned parts (one broker call), count and audit them.
    async fn apply(
        &self,
        planned: Vec<Planned>,
        dry_run: bool,
        operator: &str,
        report: &mut ResealReport,
    ) -> Result<()> {
        if planned.is_empty() {
            return Ok(());
        }
        let applied = if dry_run {
            vec![true; planned.len()]
        } else {
            let swaps: Vec<SealedSwap> = planned.iter().map(|p| p.swap.clone()).collect();
            self.broker().swap_sealed(&swaps).await?
        };
        let mut tasks = std::collections::HashSet::new();
        for (p, ok) in planned.iter().zip(applied) {
            if !ok {
                report.changed += 1;
                *report.remaining.entry(p.from.clone()).or_default() += 1;
                continue;
            }
            report.resealed += 1;
            if p.blob.is_some() {
                report.blobs += 1;
            }
            tasks.insert(p.swap.task_id);
            if dry_run {
                continue;
            }
            let Some(a) = self.auditor() else { continue };
            let to = report.to_key.clone();
            if let Some((blob_from, sha)) = &p.blob {
                a.record(AuditEvent::Resealed {
                    task: p.swap.task_id,
                    from_key_id: blob_from.clone(),
                    to_key_id: to.clone(),
                    ciphertext_sha256: sha.clone(),
                    operator: operator.to_owned(),
                    part: Some("blob".into()),
                });
            }
            a.record(AuditEvent::Resealed {
                task: p.swap.task_id,
                from_key_id: p.from.clone(),
                to_key_id: to,
                ciphertext_sha256: crate::model::hex::encode(Sha256::digest(&p.swap.replacement)),
                operator: operator.to_owned(),
                part: Some(p.swap.part.as_str().into()),
            });
        }
        report.tasks += tasks.len() as u64;
        if !dry_run && let Some(a) = self.auditor() {
            a.flush()
                .await
                .map_err(|e| Error::Audit(format!("the audit records were not written: {e}")))?;
        }
        Ok(())
    }
}
