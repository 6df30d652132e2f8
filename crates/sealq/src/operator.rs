//! Operator actions: delete, re-run, pause, resume, and revealing a payload.
//! Each one writes an audit record naming the operator; revealing refuses
//! to run without an audit log, because showing plaintext is the one act a
//! sealed queue must always be able to account for.

use zeroize::Zeroizing;

use crate::audit::AuditEvent;
use crate::broker::TaskRecord;
use crate::client::Client;
use crate::envelope::{Aad, Purpose};
use crate::error::{Error, Result};
use crate::subject_keys::is_subject_sealed;
use crate::task::TaskId;

/// A task's opened contents, for an operator who asked to see them.
/// `Debug` shows sizes only.
pub struct Revealed {
    /// The stored record (ids, state, sizes).
    pub record: TaskRecord,
    /// The payload (MessagePack; see [`crate::task::decode_payload`]).
    pub payload: Zeroizing<Vec<u8>>,
    /// The result, if the task completed with one.
    pub result: Option<Zeroizing<Vec<u8>>>,
    /// The last error message, if any.
    pub error: Option<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for Revealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revealed")
            .field("record", &self.record)
            .field("payload_len", &self.payload.len())
            .field("result_len", &self.result.as_ref().map(|r| r.len()))
            .field("error_len", &self.error.as_ref().map(|e| e.len()))
            .finish()
    }
}

impl Client {
    async fn audit_now(&self, event: AuditEvent) -> Result<()> {
        if let Some(a) = self.auditor() {
            a.record(event);
            a.flush()
                .await
                .map_err(|e| Error::Audit(format!("the audit record was not written: {e}")))?;
        }
        Ok(())
    }

    /// Open a task's payload, result and error for `operator`. Requires an
    /// auditor: the `payload_revealed` record is written (and flushed)
    /// before anything is opened.
    pub async fn reveal(&self, id: TaskId, operator: &str) -> Result<Revealed> {
        if self.auditor().is_none() {
            return Err(Error::Config(
                "revealing a payload is an audited act: configure an audit log (ClientBuilder::audit)"
                    .into(),
            ));
        }
        let record = self.broker().get(id).await?.ok_or(Error::NotFound(id))?;
        self.audit_now(AuditEvent::PayloadRevealed {
            task: id,
            operator: operator.to_owned(),
        })
        .await?;
        let key = if is_subject_sealed(&record.envelope) {
            let (Some(tag), Some(keys)) = (&record.meta.subject_tag, self.subject_keys()) else {
                return Err(Error::Integrity(crate::IntegrityError::UnknownKey(
                    crate::subject_keys::SUBJECT_KEY_ID.to_owned(),
                )));
            };
            match keys.for_open(tag).await? {
                Some(k) => Some(k),
                None => {
                    return Err(Error::Config(
                        "this task's subject was erased: its data key is gone".into(),
                    ));
                }
            }
        } else {
            None
        };
        let open = |purpose: Purpose, bytes: &[u8]| -> Result<Zeroizing<Vec<u8>>> {
            let aad = Aad::for_record(&record, purpose);
            Ok(match &key {
                Some(k) => k.open(&aad, bytes)?,
                None => self.keyring().open(&aad, bytes)?,
            })
        };
        let mut payload = open(Purpose::Payload, &record.envelope)?;
        if let Some(full) = crate::blob::open_claimed(
            self.blob_store(),
            match &key {
                Some(k) => crate::blob::Sealer::Subject(k),
                None => crate::blob::Sealer::Keyring(self.keyring()),
            },
            &record,
            &payload,
        )
        .await
        .map_err(|e| match e {
            crate::blob::ClaimError::Integrity(i) => Error::Integrity(i),
            crate::blob::ClaimError::Store(b) => Error::Broker(b),
            crate::blob::ClaimError::NoStore => Error::Config(
                "the payload is in the claim-check store: configure ClientBuilder::blob_store"
                    .into(),
            ),
            crate::blob::ClaimError::Missing => {
                Error::Config("the payload's blob is not in the claim-check store".into())
            }
        })? {
            payload = full;
        }
        let result = record
            .result
            .as_deref()
            .map(|r| open(Purpose::Result, r))
            .transpose()?;
        let error = record
            .last_error
            .as_deref()
            .map(|e| open(Purpose::Error, e))
            .transpose()?;
        Ok(Revealed {
            record,
            payload,
            result,
            error,
        })
    }

    /// Delete tasks in any state (audited per task); returns how many existed.
    pub async fn delete_tasks(&self, ids: &[TaskId], operator: &str) -> Result<u64> {
        let n = self.broker().delete(ids).await?;
        for id in ids {
            self.audit_now(AuditEvent::Deleted {
                task: *id,
                operator: operator.to_owned(),
            })
            .await?;
        }
        Ok(n)
    }

    /// Move archived tasks back to pending (audited per task); returns how many moved.
    pub async fn rerun_tasks(&self, ids: &[TaskId], operator: &str) -> Result<u64> {
        let n = self.broker().rerun(ids).await?;
        for id in ids {
            self.audit_now(AuditEvent::Rerun {
                task: *id,
                operator: operator.to_owned(),
            })
            .await?;
        }
        Ok(n)
    }

    /// Stop workers from taking tasks of `queue` (audited).
    pub async fn pause_queue(&self, queue: &str, operator: &str) -> Result<()> {
        self.broker().pause(queue).await?;
        self.audit_now(AuditEvent::QueuePaused {
            queue: queue.to_owned(),
            operator: operator.to_owned(),
        })
        .await
    }

    /// Cap `queue` at `max_depth` waiting tasks, or remove its cap with
    /// `None` ([`crate::Broker::set_max_depth`]; audited as `queue_limited`).
    /// Enqueues into a full queue then fail with [`crate::Error::QueueFull`].
    pub async fn set_queue_max_depth(
        &self,
        queue: &str,
        max_depth: Option<u64>,
        operator: &str,
    ) -> Result<()> {
        crate::options::validate_queue_name(queue)?;
        self.broker().set_max_depth(queue, max_depth).await?;
        self.audit_now(AuditEvent::QueueLimited {
            queue: queue.to_owned(),
            max_depth,
            operator: operator.to_owned(),
        })
        .await
    }

    /// Limit how fast `queue`'s tasks are leased, across every worker, or
    /// remove its limit with `None` ([`crate::Broker::set_rate_limit`];
    /// audited as `queue_rate_limited`).
    pub async fn set_queue_rate_limit(
        &self,
        queue: &str,
        limit: Option<crate::broker::RateLimit>,
        operator: &str,
    ) -> Result<()> {
        crate::options::validate_queue_name(queue)?;
        self.broker().set_rate_limit(queue, limit).await?;
        self.audit_now(AuditEvent::QueueRateLimited {
            queue: queue.to_owned(),
            limit: limit.map(|l| l.limit),
            period_ms: limit.map(|l| l.period_ms),
            operator: operator.to_owned(),
        })
        .await
    }

    /// Undo [`Client::pause_queue`] (audited).
    pub async fn resume_queue(&self, queue: &str, operator: &str) -> Result<()> {
        self.broker().resume(queue).await?;
        self.audit_now(AuditEvent::QueueResumed {
            queue: queue.to_owned(),
            operator: operator.to_owned(),
        })
        .await
    }
}
