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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tests::s;

    #[test]
    fn ack_and_extend_replies_read_ones_as_applied() {
        let v = Value::Array(vec![Value::Int(1), Value::Int(0), s("1"), Value::Int(2)]);
        assert_eq!(parse_applied(v, 4).unwrap(), [true, false, true, false]);
        // Short reply: the rest stay not applied; extra items are not read.
        let v = Value::Array(vec![Value::Int(1)]);
        assert_eq!(parse_applied(v, 3).unwrap(), [true]);
        let v = Value::Array(vec![Value::Int(1), s("junk")]);
        assert_eq!(parse_applied(v, 1).unwrap(), [true]);
    }

    #[test]
    fn malformed_ack_reply_is_an_error() {
        let e = parse_applied(Value::Array(vec![s("yes")]), 1).unwrap_err();
        assert_eq!(e, "expected an integer");
        let e = parse_applied(Value::Array(vec![Value::Nil]), 1).unwrap_err();
        assert_eq!(e, "expected an integer, got nil");
        let e = parse_applied(s("OK"), 1).unwrap_err();
        assert!(e.contains("expected an array"), "{e}");
    }

    /// The arguments one ack adds, as strings.
    fn args_of(a: &Ack) -> Vec<String> {
        let mut c = redis::cmd("FCALL");
        ack_args(&mut c, a);
        c.args_iter()
            .skip(1)
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                _ => "<not a simple argument>".into(),
            })
            .collect()
    }

    #[test]
    fn ack_arguments_name_each_outcome() {
        let lease = Lease {
            task_id: TaskId(uuid::Uuid::from_u128(1)),
            token: 0xbeef,
            expires_at_ms: 0,
        };
        let ack = |outcome| Ack { lease, outcome };
        let head = ["00000000000000000000000000000001", "000000000000beef"];
        let with = |rest: &[&str]| -> Vec<String> {
            head.iter().chain(rest).map(|s| s.to_string()).collect()
        };
        assert_eq!(
            args_of(&ack(Outcome::Complete { result: None })),
            with(&["c"])
        );
        assert_eq!(
            args_of(&ack(Outcome::Complete {
                result: Some(b"r".to_vec())
            })),
            with(&["C", "r"])
        );
        assert_eq!(
            args_of(&ack(Outcome::Retry {
                at_ms: 99,
                error: None
            })),
            with(&["r", "99"])
        );
        assert_eq!(
            args_of(&ack(Outcome::Retry {
                at_ms: 99,
                error: Some(b"e".to_vec())
            })),
            with(&["R", "99", "e"])
        );
        assert_eq!(
            args_of(&ack(Outcome::Archive {
                reason: sealq::ArchiveReason::Integrity,
                error: None
            })),
            with(&["a", "integrity"])
        );
        assert_eq!(
            args_of(&ack(Outcome::Archive {
                reason: sealq::ArchiveReason::Integrity,
                error: Some(b"e".to_vec())
            })),
            with(&["A", "integrity", "e"])
        );
        assert_eq!(args_of(&ack(Outcome::Requeue)), with(&["q"]));
    }
}
