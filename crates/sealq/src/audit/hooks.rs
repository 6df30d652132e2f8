//! The calls the client and the worker runtime make (one line each at their
//! call sites); all take the auditor as an `Option` so no auditor costs a
//! branch and nothing else.

use sha2::{Digest as _, Sha256};

use super::Auditor;
use crate::error::Error;
use crate::model::audit_event::{AuditEvent, EnqueuedEntry, LeasedEntry, SucceededEntry};
use crate::model::record::{NewTask, TaskRecord};
use crate::store::broker::{LeasedTask, Outcome};

/// What the audit log says of a sealed task once the broker stored it
/// (dated when it was sealed).
pub(crate) fn enqueued_entry(task: &NewTask) -> EnqueuedEntry {
    let key_id = crate::seal::envelope::parse_header(&task.envelope)
        .map(|h| h.key_id.to_owned())
        .unwrap_or_default();
    EnqueuedEntry {
        task: task.id,
        queue: task.queue.clone(),
        kind: task.kind.clone(),
        key_id,
        ciphertext_sha256: crate::model::hex::encode(Sha256::digest(&task.envelope)),
        ciphertext_len: task.envelope.len() as u64,
        time_ms: task.meta.created_at_ms,
    }
}

/// A `policy_rejected` event for a policy or size-budget refusal; `None`
/// for other errors.
pub(crate) fn policy_rejected(
    error: &Error,
    queue: &str,
    kind: &str,
    producer: &str,
) -> Option<AuditEvent> {
    let (rule, path) = match error {
        Error::PolicyViolation { rule, path, .. } => (rule.clone(), path.clone()),
        Error::PayloadTooLarge { .. } => ("size_budget".to_owned(), String::new()),
        _ => return None,
    };
    Some(AuditEvent::PolicyRejected {
        queue: queue.to_owned(),
        kind: kind.to_owned(),
        producer: producer.to_owned(),
        rule,
        path,
    })
}

/// The record of one producer call that stored `tasks`: `enqueued` for one
/// task, `enqueued_batch` for more (dated at the earliest seal), `None` for
/// none.
pub(crate) fn enqueued_record(
    producer: &str,
    mut tasks: Vec<EnqueuedEntry>,
) -> Option<(i64, AuditEvent)> {
    match tasks.len() {
        0 => None,
        1 => {
            let e = tasks.remove(0);
            Some((
                e.time_ms,
                AuditEvent::Enqueued {
                    task: e.task,
                    queue: e.queue,
                    kind: e.kind,
                    producer: producer.to_owned(),
                    key_id: e.key_id,
                    ciphertext_sha256: e.ciphertext_sha256,
                    ciphertext_len: e.ciphertext_len,
                },
            ))
        }
        _ => {
            let first = tasks.iter().map(|e| e.time_ms).min().unwrap_or_default();
            Some((
                first,
                AuditEvent::EnqueuedBatch {
                    producer: producer.to_owned(),
                    tasks,
                },
            ))
        }
    }
}

impl Auditor {
    /// A producer's call stored `tasks`: one `enqueued` record for one task,
    /// one `enqueued_batch` record for more, nothing for none. Dated when
    /// sealed: a worker may lease a task before this runs, and histories
    /// sort by time.
    pub(crate) fn on_enqueued(&self, producer: &str, tasks: Vec<EnqueuedEntry>) {
        if let Some((time_ms, event)) = enqueued_record(producer, tasks) {
            self.record_at(time_ms, event);
        }
    }

    /// A worker leased `tasks` with one broker call: one `leased_batch`
    /// record per lease expiry among them (one, from the brokers here).
    pub(crate) fn on_leased_batch(&self, worker: &str, tasks: &[LeasedTask]) {
        let mut rest = tasks;
        while let Some(first) = rest.first() {
            let expires = first.lease.expires_at_ms;
            let n = rest
                .iter()
                .position(|t| t.lease.expires_at_ms != expires)
                .unwrap_or(rest.len());
            let (now, later) = rest.split_at(n);
            self.record(AuditEvent::LeasedBatch {
                worker: worker.to_owned(),
                lease_expires_at_ms: expires,
                tasks: now
                    .iter()
                    .map(|t| LeasedEntry {
                        task: t.record.id,
                        queue: t.record.queue.clone(),
                        attempt: t.record.attempts,
                    })
                    .collect(),
            });
            rest = later;
        }
    }

    /// Handlers succeeded: one `succeeded_batch` record for all of them
    /// (nothing for none).
    pub(crate) fn on_succeeded_batch(&self, worker: &str, tasks: Vec<SucceededEntry>) {
        if !tasks.is_empty() {
            self.record(AuditEvent::SucceededBatch {
                worker: worker.to_owned(),
                tasks,
            });
        }
    }

    /// The handler is about to be called.
    pub(crate) fn on_started(&self, worker: &str, record: &TaskRecord) {
        self.record(AuditEvent::Started {
            task: record.id,
            worker: worker.to_owned(),
            attempt: record.attempts,
        });
    }

    /// The handler failed; `sealed_len` is the size of the sealed error.
    pub(crate) fn on_failed(&self, worker: &str, record: &TaskRecord, sealed_len: usize) {
        self.record(AuditEvent::Failed {
            task: record.id,
            worker: worker.to_owned(),
            attempt: record.attempts,
            error_len: sealed_len as u64,
        });
    }

    /// The worker's final word on one attempt that did not succeed (a
    /// success is recorded with its acknowledgement batch:
    /// [`Auditor::on_succeeded_batch`]).
    pub(crate) fn on_outcome(&self, worker: &str, record: &TaskRecord, outcome: &Outcome) {
        let (task, attempt, worker) = (record.id, record.attempts, worker.to_owned());
        self.record(match outcome {
            Outcome::Complete { result } => AuditEvent::Succeeded {
                task,
                worker,
                attempt,
                result_len: result.as_ref().map(|r| r.len() as u64),
            },
            Outcome::Retry { at_ms, .. } => AuditEvent::Retried {
                task,
                worker,
                attempt,
                next_run_at_ms: *at_ms,
            },
            Outcome::Archive { reason, .. } => AuditEvent::Archived {
                task,
                worker: Some(worker),
                attempt,
                reason: reason.as_str().to_owned(),
            },
            Outcome::Requeue => AuditEvent::Requeued {
                task,
                worker,
                attempt,
            },
        });
    }
}

/// Size of `message` once sealed with `keyring`'s primary key.
pub(crate) fn sealed_len(keyring: &crate::seal::keyring::Keyring, message: &str) -> usize {
    crate::seal::envelope::header_len(keyring.primary_key_id())
        + message.len()
        + crate::seal::envelope::TAG_LEN
}
