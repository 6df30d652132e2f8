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

/// How one ack or extension went, as `sealq_ack`/`sealq_extend` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    /// 0: the lease was no longer this worker's; nothing changed.
    No,
    /// 1: applied.
    Yes,
    /// 2 (`sealq_ack` only): a completion applied on an id the replay
    /// memory already held: the same task succeeded twice.
    Again,
}

/// The reply of `sealq_ack` or `sealq_extend` for `tasks` tasks: one
/// integer per task, 1 (or 2, see [`Applied::Again`]) when the lease was
/// still this worker's and the call applied. (A short reply leaves the
/// tasks it does not name not applied; items beyond `tasks` are not read.)
fn parse_applied(reply: Value, tasks: usize) -> Result<Vec<Applied>, String> {
    array(reply)?
        .iter()
        .take(tasks)
        .map(|v| {
            Ok(match int(v)? {
                1 => Applied::Yes,
                2 => Applied::Again,
                _ => Applied::No,
            })
        })
        .collect()
}

/// Count and log a second success of task `id` (finding 2 of the security
/// review): the ack applies (the work is done; refusing it would only make
/// it run again), the operator is told.
fn count_replayed_success(id: TaskId) {
    metrics::counter!("sealq_replayed_successes_total", "backend" => "redis").increment(1);
    tracing::warn!(
        task = %id,
        "sealq: a task whose id had already completed (or been deleted) succeeded again; \
         check for replayed or restored tasks (`sealq audit verify` lists repeated successes)"
    );
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
                if applied == Applied::Again {
                    count_replayed_success(acks[i].lease.task_id);
                }
                if applied != Applied::No {
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
                out[i] = applied != Applied::No;
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
        use Applied::{Again, No, Yes};
        let v = Value::Array(vec![
            Value::Int(1),
            Value::Int(0),
            s("1"),
            Value::Int(3),
            Value::Int(2),
        ]);
        assert_eq!(parse_applied(v, 5).unwrap(), [Yes, No, Yes, No, Again]);
        // Short reply: the rest stay not applied; extra items are not read.
        let v = Value::Array(vec![Value::Int(1)]);
        assert_eq!(parse_applied(v, 3).unwrap(), [Yes]);
        let v = Value::Array(vec![Value::Int(1), s("junk")]);
        assert_eq!(parse_applied(v, 1).unwrap(), [Yes]);
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
