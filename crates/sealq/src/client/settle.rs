//! What a broker's per-task enqueue results mean to the producer: one
//! place for [`Client::enqueue_batch`](super::Client::enqueue_batch) and a
//! backend's transactional enqueue (`sealq_postgres::PostgresTxClient`),
//! so that both refuse, count and audit a task the same way.

use crate::audit::Auditor;
use crate::error::{BrokerError, BrokerErrorKind, Error, Result};
use crate::metrics::record as metric;
use crate::model::audit_event::{AuditEvent, EnqueuedEntry};
use crate::model::id::TaskId;
use crate::model::record::NewTask;
use crate::store::broker::EnqueueResult;

/// The tasks of one enqueue call as [`settle_enqueue`] needs them once the
/// broker has answered: taken from the sealed tasks before they are moved
/// into the call.
#[derive(Debug)]
pub struct EnqueueCall {
    /// Per sealed task: where its result goes in the caller's output, its
    /// id, its unique key (for [`Error::Duplicate`]), which run of `names`
    /// it belongs to, and its `enqueued` audit entry (when audited).
    tasks: Vec<CallTask>,
    /// (queue, type) of each run of consecutive tasks sharing both: one
    /// copy per run, not one per task, for the metrics and a refusal.
    names: Vec<(String, String)>,
}

#[derive(Debug)]
struct CallTask {
    slot: usize,
    id: TaskId,
    key: Option<String>,
    name: usize,
    entry: Option<EnqueuedEntry>,
}

impl EnqueueCall {
    /// Describe `sealed`, the tasks about to be stored in one call.
    /// `slots[i]` is where task `i`'s result goes in the caller's output
    /// (tasks refused before sealing leave gaps); with `audited`, each
    /// task's `enqueued` entry is kept for [`settle_enqueue`] to return.
    pub fn new(sealed: &[NewTask], slots: &[usize], audited: bool) -> Self {
        let mut names: Vec<(String, String)> = Vec::new();
        let tasks = sealed
            .iter()
            .zip(slots)
            .map(|(t, &slot)| {
                let same = names
                    .last()
                    .is_some_and(|(q, k)| q == &t.queue && k == &t.kind);
                if !same {
                    names.push((t.queue.clone(), t.kind.clone()));
                }
                CallTask {
                    slot,
                    id: t.id,
                    key: t.unique.as_ref().map(|(k, _)| k.clone()),
                    name: names.len() - 1,
                    entry: audited.then(|| crate::audit::enqueued_entry(t)),
                }
            })
            .collect();
        EnqueueCall { tasks, names }
    }
}

/// Apply a broker's per-task enqueue `results` (in the order of the
/// tasks of `call`) to the caller's output `out`, where each stored task's
/// slot already holds `Ok(its id)`:
///
/// - `Enqueued`: counted in `sealq_tasks_enqueued_total` (per queue and
///   type); its `enqueued` audit entry, when `call` kept one, is returned
///   for the caller to record (through its auditor, or in its own
///   transaction);
/// - `Duplicate`: [`Error::Duplicate`] with the unique key and the task
///   that holds it;
/// - `IdExists`: [`Error::IdExists`];
/// - `NotStored`: [`Error::Broker`] (unavailable) with the broker's
///   reason: this task alone failed, and may be sent again;
/// - `QueueFull`: [`Error::QueueFull`], counted as a policy refusal (rule
///   `max_depth`) and, with an `auditor`, recorded as `policy_rejected`
///   by `producer` at once (the refusal happened whatever becomes of the
///   caller's transaction).
pub fn settle_enqueue(
    call: EnqueueCall,
    results: Vec<EnqueueResult>,
    out: &mut [Result<TaskId>],
    producer: &str,
    auditor: Option<&Auditor>,
) -> Vec<EnqueuedEntry> {
    let EnqueueCall { tasks, names } = call;
    let mut stored_per_name = vec![0u64; names.len()];
    let mut accepted = Vec::new();
    for (task, result) in tasks.into_iter().zip(results) {
        let Some(slot) = out.get_mut(task.slot) else {
            continue;
        };
        match result {
            EnqueueResult::Enqueued => {
                stored_per_name[task.name] += 1;
                accepted.extend(task.entry);
            }
            EnqueueResult::Duplicate { existing } => {
                *slot = Err(Error::Duplicate {
                    key: task.key.unwrap_or_default(),
                    existing,
                });
            }
            EnqueueResult::IdExists => *slot = Err(Error::IdExists(task.id)),
            EnqueueResult::NotStored { reason } => {
                *slot = Err(Error::Broker(BrokerError::new(
                    BrokerErrorKind::Unavailable,
                    reason,
                )));
            }
            EnqueueResult::QueueFull { max_depth } => {
                let (queue, kind) = names[task.name].clone();
                metric::policy_rejected(&queue, "max_depth");
                if let Some(a) = auditor {
                    a.record(AuditEvent::PolicyRejected {
                        queue: queue.clone(),
                        kind,
                        producer: producer.to_owned(),
                        rule: "max_depth".to_owned(),
                        path: String::new(),
                    });
                }
                *slot = Err(Error::QueueFull { queue, max_depth });
            }
        }
    }
    for ((queue, kind), n) in names.iter().zip(stored_per_name) {
        if n > 0 {
            metric::enqueued(queue, kind, n);
        }
    }
    accepted
}
