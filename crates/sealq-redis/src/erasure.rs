//! Erasing a data subject's tasks (`sealq_erase`, one call per queue and batch).

use redis::Value;
use sealq::SubjectTag;
use sealq::broker::BrokerResult;
use sealq::subject_keys::ErasureCounts;

use crate::RedisBroker;
use crate::calls::QueueBatch;
use crate::codec::{array, bytes, int};

/// One queue's `sealq_erase` reply: `[scheduled, pending, active, retry,
/// completed, archived, scanned, last id, erased id…]`.
#[derive(Debug, PartialEq, Eq)]
struct EraseReply {
    /// Erased tasks per state, in [`ErasureCounts`] order, then how many
    /// ids the call looked at.
    counts: [u64; 7],
    /// The last id looked at (the next batch starts after it).
    last: String,
    /// Erased ids, for a Cluster's global index.
    erased: Vec<String>,
}

fn parse_erase_reply(reply: Value) -> Result<EraseReply, String> {
    let parts = array(reply)?;
    if parts.len() < 8 {
        return Err("short reply from sealq_erase".to_owned());
    }
    let mut counts = [0u64; 7];
    for (slot, v) in counts.iter_mut().zip(&parts) {
        *slot = u64::try_from(int(v)?.max(0)).unwrap_or(0);
    }
    let mut rest = parts.into_iter().skip(7);
    let last = rest.next().unwrap_or(Value::Nil);
    let last = String::from_utf8_lossy(&bytes(last)?).into_owned();
    let mut erased = Vec::new();
    for v in rest {
        erased.push(String::from_utf8_lossy(&bytes(v)?).into_owned());
    }
    Ok(EraseReply {
        counts,
        last,
        erased,
    })
}

impl RedisBroker {
    /// [`sealq::Broker::erase_subject`]: walks every queue of the registry
    /// in id order, `maintenance_batch` ids per function call (atomic per
    /// call, queues in parallel), until each queue is scanned to its end.
    pub(crate) async fn erase_subject_impl(&self, tag: &SubjectTag) -> BrokerResult<ErasureCounts> {
        let what = "erasing a subject";
        let sub = tag.to_hex();
        let limit = self.inner.opts.maintenance_batch.max(1);
        let (queues, _) = self.queues().await?;
        let todo: Vec<(String, String)> = queues.into_iter().map(|q| (q, String::new())).collect();
        let mut counts = ErasureCounts::default();
        self.drain_queues(
            what,
            todo,
            |todo| {
                let now = self.now();
                todo.iter()
                    .map(|(q, after)| {
                        let mut c = self.queue_call("sealq_erase", q, true);
                        c.arg(now).arg(&sub).arg(after).arg(limit);
                        c
                    })
                    .collect()
            },
            |(q, _), reply| {
                let r = parse_erase_reply(reply).map_err(|e| self.corrupt_reply(what, e))?;
                let n = r.counts;
                counts.scheduled += n[0];
                counts.pending += n[1];
                counts.active += n[2];
                counts.retry += n[3];
                counts.completed += n[4];
                counts.archived += n[5];
                let more = usize::try_from(n[6]).unwrap_or(0) >= limit && !r.last.is_empty();
                Ok(QueueBatch {
                    more: more.then_some((q, r.last)),
                    unindex: r.erased,
                })
            },
        )
        .await?;
        if counts.total() > 0 {
            metrics::counter!("sealq_redis_erased_tasks_total").increment(counts.total());
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Value {
        Value::BulkString(x.as_bytes().to_vec())
    }

    #[test]
    fn erase_reply_gives_counts_cursor_and_erased_ids() {
        let mut v: Vec<Value> = (1..=7).map(Value::Int).collect();
        v.extend([s("00ff"), s("aa"), s("bb")]);
        let r = parse_erase_reply(Value::Array(v)).unwrap();
        assert_eq!(r.counts, [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(r.last, "00ff");
        assert_eq!(r.erased, ["aa", "bb"]);
        // Negative counts read as 0; an empty cursor means the queue's end.
        let mut v = vec![Value::Int(-1); 7];
        v.push(s(""));
        let r = parse_erase_reply(Value::Array(v)).unwrap();
        assert_eq!((r.counts, r.last.as_str(), r.erased.len()), ([0; 7], "", 0));
    }

    #[test]
    fn malformed_erase_reply_is_an_error() {
        let e = parse_erase_reply(Value::Array(vec![Value::Int(0); 7])).unwrap_err();
        assert_eq!(e, "short reply from sealq_erase");
        let mut v = vec![Value::Int(0); 6];
        v.extend([s("x"), s("")]);
        let e = parse_erase_reply(Value::Array(v)).unwrap_err();
        assert!(e.contains("expected an integer"), "{e}");
        let mut v = vec![Value::Int(0); 7];
        v.push(Value::Nil);
        let e = parse_erase_reply(Value::Array(v)).unwrap_err();
        assert!(e.contains("got nil"), "{e}");
    }
}
