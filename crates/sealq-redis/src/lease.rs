//! What a worker does with the leases it holds: acknowledge the outcome
//! (`sealq_ack`) or extend them (`sealq_extend`). Both find each task's
//! queue through the lease cache (else the global index) and make one call
//! per queue, pipelined.

use std::time::Duration;

use redis::{Cmd, Value};
use sealq::TaskId;
use sealq::broker::{Ack, AckResult, BrokerResult, Lease, Outcome};

use crate::RedisBroker;
use crate::calls::{group_by, ms};
use crate::codec::{array, id_str, int, token_str};

/// One task's `sealq_ack` arguments: id, token, outcome code and its values.
fn ack_args(c: &mut Cmd, a: &Ack) {
    c.arg(id_str(&a.lease.task_id))
        .arg(token_str(a.lease.token));
    match &a.outcome {
        Outcome::Complete { result: None } => c.arg("c"),
        Outcome::Complete { result: Some(r) } => c.arg("C").arg(r.as_slice()),
        Outcome::Retry { at_ms, error: None } => c.arg("r").arg(*at_ms),
        Outcome::Retry {
            at_ms,
            error: Some(e),
        } => c.arg("R").arg(*at_ms).arg(e.as_slice()),
        Outcome::Archive {
            reason,
            error: None,
        } => c.arg("a").arg(reason.as_str()),
        Outcome::Archive {
            reason,
            error: Some(e),
        } => c.arg("A").arg(reason.as_str()).arg(e.as_slice()),
        Outcome::Requeue => c.arg("q"),
    };
}

/// The reply of `sealq_ack` or `sealq_extend` for `tasks` tasks: one
/// integer per task, 1 when the lease was still this worker's and the call
/// applied. (A short reply leaves the tasks it does not name not applied;
/// items beyond `tasks` are not read.)
fn parse_applied(reply: Value, tasks: usize) -> Result<Vec<bool>, String> {
    array(reply)?
        .iter()
        .take(tasks)
        .map(|v| Ok(int(v)? == 1))
        .collect()
}

impl RedisBroker {
    /// [`sealq::Broker::ack`]: one `sealq_ack` per queue, pipelined; the
    /// leases leave the lease cache.
    pub(crate) async fn ack_tasks(&self, acks: Vec<Ack>) -> BrokerResult<Vec<AckResult>> {
        if acks.is_empty() {
            return Ok(Vec::new());
        }
        let what = "acknowledging tasks";
        let now = self.now();
        let ids: Vec<TaskId> = acks.iter().map(|a| a.lease.task_id).collect();
        let queues = self.locate(&ids, true).await?;
        let (groups, _) = group_by(queues.iter().map(|q| q.as_deref()));
        let mut results = vec![AckResult::LeaseLost; acks.len()];
        let mut cmds = Vec::with_capacity(groups.len());
        for (q, idx) in &groups {
            let mut c = self.queue_call("sealq_ack", q, false);
            c.arg(now);
            for &i in idx {
                ack_args(&mut c, &acks[i]);
            }
            cmds.push(c);
        }
        let replies = self.run_per_queue(what, cmds).await?;
        for ((_, idx), reply) in groups.iter().zip(replies) {
            let applied =
                parse_applied(reply, idx.len()).map_err(|e| self.corrupt_reply(what, e))?;
            for (&i, applied) in idx.iter().zip(applied) {
                if applied {
                    results[i] = AckResult::Applied;
                }
            }
        }
        Ok(results)
    }

    /// [`sealq::Broker::extend_leases`]: one `sealq_extend` per queue, pipelined.
    pub(crate) async fn extend_task_leases(
        &self,
        leases: &[Lease],
        lease: Duration,
    ) -> BrokerResult<Vec<bool>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let what = "extending leases";
        let now = self.now();
        let ids: Vec<TaskId> = leases.iter().map(|l| l.task_id).collect();
        let queues = self.locate(&ids, false).await?;
        let (groups, _) = group_by(queues.iter().map(|q| q.as_deref()));
        let mut out = vec![false; leases.len()];
        let mut cmds = Vec::with_capacity(groups.len());
        for (q, idx) in &groups {
            let mut c = self.queue_call("sealq_extend", q, false);
            c.arg(now).arg(ms(lease));
            for &i in idx {
                c.arg(id_str(&leases[i].task_id))
                    .arg(token_str(leases[i].token));
            }
            cmds.push(c);
        }
        let replies = self.run_per_queue(what, cmds).await?;
        for ((_, idx), reply) in groups.iter().zip(replies) {
            let applied =
                parse_applied(reply, idx.len()).map_err(|e| self.corrupt_reply(what, e))?;
            for (&i, applied) in idx.iter().zip(applied) {
                out[i] = applied;
            }
        }
        Ok(out)
    }
}
