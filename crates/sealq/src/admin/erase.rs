//! Erasing a data subject (right to erasure) by crypto-shredding.
//!
//! The broker's clear subject tag only nominates candidates: a task is
//! erased once its envelope authenticates with the subject's data key (or,
//! sealed without one, with the keyring) **and** associated data carrying
//! the subject's tag, which someone who can only write the broker cannot
//! forge. A task given the tag by an edit does not authenticate and is
//! reported by id, not deleted; with [`EraseOptions::full_scan`], tasks of
//! the subject whose clear tag was removed are found by trying the
//! subject's key on every subject-sealed task.

use std::sync::Arc;

use crate::client::Client;
use crate::error::{Error, IntegrityError, Result};
use crate::model::audit_event::AuditEvent;
use crate::model::counts::{ErasureCounts, ErasureReceipt};
use crate::model::id::{SubjectTag, TaskId};
use crate::model::record::TaskRecord;
use crate::model::state::{ArchiveReason, TaskState};
use crate::seal::data_key::{DataKey, is_subject_sealed};
use crate::seal::envelope::{Aad, Purpose};
use crate::store::broker::ListQuery;

/// Tasks read per listing page while erasing.
const PAGE: usize = 500;

/// How [`Client::erase_subject_with`] looks for the subject's tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EraseOptions {
    /// Also read every stored task (every queue and state) and erase those
    /// sealed with the subject's key and tag whose clear tag was removed or
    /// changed. Costs a read of every task and an authentication of every
    /// subject-sealed one; without it such a task survives, as ciphertext
    /// under the destroyed key (see `docs/compliance.md`).
    pub full_scan: bool,
}

impl EraseOptions {
    /// [`EraseOptions::full_scan`] on.
    pub fn full_scan() -> Self {
        EraseOptions { full_scan: true }
    }
}

/// What checking one candidate said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The subject's: erase it.
    Subject,
    /// Does not authenticate as the subject's.
    Mismatch,
    /// Cannot be checked here.
    Unverified,
}

/// Whether `record` is `tag`'s: its payload envelope opens with `key` (the
/// subject's data key; the keyring for an envelope sealed with a keyring
/// key) for associated data naming `tag`. A shell left by an earlier
/// erasure of an active task (archived `erased`, envelope wiped) holds
/// nothing to protect and counts as the subject's.
fn verdict(client: &Client, key: Option<&DataKey>, tag: &SubjectTag, r: &TaskRecord) -> Verdict {
    if r.envelope.is_empty() {
        let shell =
            r.state == TaskState::Archived && r.archive_reason == Some(ArchiveReason::Erased);
        return if shell {
            Verdict::Subject
        } else {
            Verdict::Mismatch
        };
    }
    let mut aad = Aad::for_record(r, Purpose::Payload);
    aad.subject_tag = Some(*tag);
    let opened = if is_subject_sealed(&r.envelope) {
        match key {
            Some(k) => k.open(&aad, &r.envelope),
            None => return Verdict::Unverified,
        }
    } else {
        client.keyring().open(&aad, &r.envelope)
    };
    match opened {
        Ok(_) => Verdict::Subject,
        Err(IntegrityError::UnknownKey(_)) => Verdict::Unverified,
        Err(_) => Verdict::Mismatch,
    }
}

/// What the search found, before the key is destroyed.
#[derive(Default)]
struct Found {
    counts: ErasureCounts,
    mismatch: Vec<TaskId>,
    unverified: Vec<TaskId>,
    untagged: u64,
}

impl Client {
    /// Erase a data subject (right to erasure, crypto-shredding): delete the
    /// subject's tasks in every state (active ones end archived as `erased`),
    /// destroy its data key so every earlier copy of its envelopes, results
    /// and errors becomes unreadable, and write a receipt to the audit log.
    /// The receipt names the subject only by its keyed tag. Erasing an
    /// unknown subject succeeds with zero counts; erasing twice is harmless.
    ///
    /// A task is erased only once its envelope authenticates with the
    /// subject's data key (or the keyring, for one sealed without) for
    /// associated data carrying the subject's tag, which whoever can only
    /// write the broker cannot forge; tasks carrying the tag that do not are
    /// named in [`ErasureReceipt::tag_mismatch`] and
    /// [`ErasureReceipt::unverified`] and left alone.
    ///
    /// Erasure is final against restored copies of the subject key store
    /// only after the erasure is finalised: `sealq erase --finalize`
    /// ([`crate::seal::kek`], [`Client::rewrap_subject_keys_for_finalise`]).
    pub async fn erase_subject(&self, subject: &str, operator: &str) -> Result<ErasureReceipt> {
        self.erase_subject_with(subject, operator, EraseOptions::default())
            .await
    }

    /// [`Client::erase_subject`] with [`EraseOptions`].
    pub async fn erase_subject_with(
        &self,
        subject: &str,
        operator: &str,
        options: EraseOptions,
    ) -> Result<ErasureReceipt> {
        // An operator keyring cannot compute the subject's tag.
        self.keyring().require_sealing_keys("erase a subject")?;
        let tag = self.keyring().subject_tag(subject);
        // The key checks which tasks are the subject's; a keyring that
        // cannot unwrap it stops the erasure before anything changes.
        let key: Option<Arc<DataKey>> = match self.subject_keys() {
            Some(keys) => keys.for_open(&tag).await.map_err(|e| match e {
                Error::Integrity(IntegrityError::UnknownKey(kek)) => Error::Keyring(format!(
                    "nothing erased: the subject's data key is wrapped under {kek}, which this \
                     keyring does not hold, so its tasks cannot be told from others; erase \
                     with the current keyring"
                )),
                other => other,
            })?,
            None => None,
        };
        let mut found = Found::default();
        self.erase_tagged(&tag, key.as_deref(), &mut found).await?;
        // Without a data key there is nothing subject-sealed to recognise.
        let full_scan = options.full_scan && key.is_some();
        if full_scan && let Some(k) = key.as_deref() {
            self.erase_untagged(&tag, k, &mut found).await?;
        }
        let key_destroyed = match self.subject_keys() {
            Some(keys) => keys.destroy(&tag).await?,
            None => false,
        };
        let receipt = ErasureReceipt {
            subject_tag: tag.to_hex(),
            counts: found.counts,
            key_destroyed,
            time_ms: self.now_ms(),
            operator: operator.to_owned(),
            tag_mismatch: found.mismatch.iter().map(ToString::to_string).collect(),
            unverified: found.unverified.iter().map(ToString::to_string).collect(),
            untagged_found: found.untagged,
            full_scan,
        };
        self.audit_erasure(&receipt).await?;
        Ok(receipt)
    }

    /// Check and erase the tasks that carry `tag` in clear, page by page.
    async fn erase_tagged(
        &self,
        tag: &SubjectTag,
        key: Option<&DataKey>,
        found: &mut Found,
    ) -> Result<()> {
        let mut after = None;
        loop {
            let page = self
                .broker()
                .list(&ListQuery {
                    subject: Some(*tag),
                    after,
                    limit: PAGE,
                    ..ListQuery::default()
                })
                .await?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = Some(last.id);
            let mut erase = Vec::new();
            for r in &page {
                match verdict(self, key, tag, r) {
                    Verdict::Subject => erase.push(r.id),
                    Verdict::Mismatch => found.mismatch.push(r.id),
                    Verdict::Unverified => found.unverified.push(r.id),
                }
            }
            if !erase.is_empty() {
                found.counts.add(&self.broker().erase_tasks(&erase).await?);
            }
            if page.len() < PAGE {
                return Ok(());
            }
        }
    }

    /// Read every task and erase those sealed with the subject's key and
    /// tag although the broker did not list them under `tag` (their clear
    /// tag was removed or changed).
    async fn erase_untagged(
        &self,
        tag: &SubjectTag,
        key: &DataKey,
        found: &mut Found,
    ) -> Result<()> {
        let mut after = None;
        loop {
            let page = self
                .broker()
                .list(&ListQuery {
                    after,
                    limit: PAGE,
                    ..ListQuery::default()
                })
                .await?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = Some(last.id);
            // Not those the tagged pass judged already (what it erased is
            // gone; a shell it left holds no envelope).
            let erase: Vec<TaskId> = page
                .iter()
                .filter(|r| !found.mismatch.contains(&r.id) && !found.unverified.contains(&r.id))
                .filter(|r| is_subject_sealed(&r.envelope))
                .filter(|r| verdict(self, Some(key), tag, r) == Verdict::Subject)
                .map(|r| r.id)
                .collect();
            if !erase.is_empty() {
                let c = self.broker().erase_tasks(&erase).await?;
                found.untagged += c.total();
                found.counts.add(&c);
            }
            if page.len() < PAGE {
                return Ok(());
            }
        }
    }

    /// Write the receipt's `subject_erased` record and wait for it.
    async fn audit_erasure(&self, receipt: &ErasureReceipt) -> Result<()> {
        let Some(a) = self.auditor() else {
            return Ok(());
        };
        let c = &receipt.counts;
        let counts = [
            ("scheduled", c.scheduled),
            ("pending", c.pending),
            ("active", c.active),
            ("retry", c.retry),
            ("completed", c.completed),
            ("archived", c.archived),
            ("tag_mismatch", receipt.tag_mismatch.len() as u64),
            ("unverified", receipt.unverified.len() as u64),
            ("untagged_found", receipt.untagged_found),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let not_erased = receipt
            .tag_mismatch
            .iter()
            .map(|id| format!("{id} tag_mismatch"))
            .chain(
                receipt
                    .unverified
                    .iter()
                    .map(|id| format!("{id} unverified")),
            )
            .collect();
        a.record(AuditEvent::SubjectErased {
            receipt_id: TaskId::new().to_string(),
            subject_tag: receipt.subject_tag.clone(),
            counts,
            key_destroyed: receipt.key_destroyed,
            operator: receipt.operator.clone(),
            not_erased,
        });
        a.flush().await.map_err(|e| {
            Error::Audit(format!(
                "the subject was erased but its receipt was not written: {e}"
            ))
        })
    }
}
