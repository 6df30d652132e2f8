//! [`sealq::Broker::erase_tasks`]: erase exactly the tasks the client
//! checked belong to the subject (`sealq_erase_ids`, one call per queue;
//! finding 6 of the security review: the clear subject tag alone is not
//! trusted).

use redis::Value;
use sealq::TaskId;
use sealq::broker::BrokerResult;
use sealq::subject_keys::ErasureCounts;

use crate::RedisBroker;
use crate::codec::{array, bytes, int};

/// One queue's `sealq_erase_ids` reply: `[scheduled, pending, active,
/// retry, completed, archived, unindexed id…]`.
fn parse_erase_ids_reply(reply: Value) -> Result<(ErasureCounts, Vec<String>), String> {
    let parts = array(reply)?;
    if parts.len() < 6 {
        return Err("short reply from sealq_erase_ids".to_owned());
    }
    let mut n = [0u64; 6];
    for (slot, v) in n.iter_mut().zip(&parts) {
        *slot = u64::try_from(int(v)?.max(0)).unwrap_or(0);
    }
    let counts = ErasureCounts {
        scheduled: n[0],
        pending: n[1],
        active: n[2],
        retry: n[3],
        completed: n[4],
        archived: n[5],
    };
    let mut ids = Vec::new();
    for v in parts.into_iter().skip(6) {
        ids.push(String::from_utf8_lossy(&bytes(v)?).into_owned());
    }
    Ok((counts, ids))
}

impl RedisBroker {
    /// [`sealq::Broker::erase_tasks`]: the ids' queues from the index, then
    /// one atomic `sealq_erase_ids` per queue; the leases leave the lease
    /// cache.
    pub(crate) async fn erase_tasks_impl(&self, ids: &[TaskId]) -> BrokerResult<ErasureCounts> {
        let mut counts = ErasureCounts::default();
        if ids.is_empty() {
            return Ok(counts);
        }
        let what = "erasing tasks";
        let replies = self
            .call_with_ids_per_queue("sealq_erase_ids", what, ids)
            .await?;
        let mut forget = Vec::new();
        for reply in replies {
            let (n, ids) = parse_erase_ids_reply(reply).map_err(|e| self.corrupt_reply(what, e))?;
            counts.add(&n);
            forget.extend(ids);
        }
        self.unindex(forget).await?;
        if counts.total() > 0 {
            metrics::counter!("sealq_redis_erased_tasks_total").increment(counts.total());
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erase_ids_reply_gives_counts_and_unindexed_ids() {
        let mut v: Vec<Value> = (1..=6).map(Value::Int).collect();
        v.push(Value::BulkString(b"aa".to_vec()));
        let (c, ids) = parse_erase_ids_reply(Value::Array(v)).unwrap();
        assert_eq!((c.scheduled, c.archived, c.total()), (1, 6, 21));
        assert_eq!(ids, ["aa"]);
        let e = parse_erase_ids_reply(Value::Array(vec![Value::Int(0); 5])).unwrap_err();
        assert_eq!(e, "short reply from sealq_erase_ids");
    }
}
