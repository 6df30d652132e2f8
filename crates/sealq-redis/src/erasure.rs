//! Erasing a data subject's tasks (`sealq_erase`, one call per queue and batch).

use redis::Value;
use sealq::SubjectTag;
use sealq::broker::BrokerResult;
use sealq::subject_keys::ErasureCounts;

use crate::RedisBroker;
use crate::codec::{array, bytes, int};

impl RedisBroker {
    /// [`sealq::Broker::erase_subject`]: walks every queue of the registry
    /// in id order, `maintenance_batch` ids per function call (atomic per
    /// call, queues in parallel), until each queue is scanned to its end.
    pub(crate) async fn erase_subject_impl(&self, tag: &SubjectTag) -> BrokerResult<ErasureCounts> {
        let what = "erasing a subject";
        let sub = tag.to_hex();
        let limit = self.inner.opts.maintenance_batch.max(1);
        let (queues, _) = self.queues().await?;
        let mut todo: Vec<(String, String)> =
            queues.into_iter().map(|q| (q, String::new())).collect();
        let mut counts = ErasureCounts::default();
        while !todo.is_empty() {
            let now = self.now();
            let cmds = todo
                .iter()
                .map(|(q, after)| {
                    let mut c = self.qcall("sealq_erase", q, true);
                    c.arg(now).arg(&sub).arg(after).arg(limit);
                    c
                })
                .collect();
            let replies = self.run_all(what, cmds).await?;
            let mut again = Vec::new();
            let mut forget = Vec::new();
            for ((q, _), reply) in todo.into_iter().zip(replies) {
                let parts = array(reply).map_err(|e| self.bad(what, e))?;
                if parts.len() < 8 {
                    return Err(self.bad(what, "short reply from sealq_erase"));
                }
                let mut n = [0u64; 7];
                for (slot, v) in n.iter_mut().zip(&parts) {
                    *slot =
                        u64::try_from(int(v).map_err(|e| self.bad(what, e))?.max(0)).unwrap_or(0);
                }
                counts.scheduled += n[0];
                counts.pending += n[1];
                counts.active += n[2];
                counts.retry += n[3];
                counts.completed += n[4];
                counts.archived += n[5];
                let mut rest = parts.into_iter().skip(7);
                let last = rest.next().unwrap_or(Value::Nil);
                let last = String::from_utf8_lossy(&bytes(last).map_err(|e| self.bad(what, e))?)
                    .into_owned();
                for v in rest {
                    forget.push(
                        String::from_utf8_lossy(&bytes(v).map_err(|e| self.bad(what, e))?)
                            .into_owned(),
                    );
                }
                if usize::try_from(n[6]).unwrap_or(0) >= limit && !last.is_empty() {
                    again.push((q, last));
                }
            }
            self.unindex(forget).await?;
            todo = again;
        }
        if counts.total() > 0 {
            metrics::counter!("sealq_redis_erased_tasks_total").increment(counts.total());
        }
        Ok(counts)
    }
}
