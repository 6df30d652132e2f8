//! The global registry (`PREFIX:{~}:g:`): the index of which queue holds
//! each task id, the known queues and the paused ones (`sealq_registry`,
//! `sealq_queues`, `sealq_locate`), and this process' lease cache that
//! spares most look-ups. On a single node the per-queue functions keep
//! the registry up to date themselves; on a Cluster the broker does it
//! with the separate calls here.

use std::sync::Arc;

use redis::Value;
use sealq::TaskId;
use sealq::broker::BrokerResult;

use crate::RedisBroker;
use crate::calls::fcall;
use crate::codec::{array, bytes, id_str, int, opt_bytes};

/// The `sealq_queues` reply: every known queue and the paused ones, each
/// list sorted.
fn parse_queues(v: Value) -> Result<(Vec<String>, Vec<String>), String> {
    let mut parts = array(v)?.into_iter();
    let names = |v: Option<Value>| -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        for x in array(v.unwrap_or(Value::Nil))? {
            out.push(String::from_utf8_lossy(&bytes(x)?).into_owned());
        }
        out.sort();
        Ok(out)
    };
    let all = names(parts.next())?;
    let paused = names(parts.next())?;
    Ok((all, paused))
}

/// The `sealq_registry index` reply: whether each id was claimed (1).
fn parse_claims(v: Value) -> Result<Vec<bool>, String> {
    array(v)?.iter().map(|x| int(x).map(|n| n == 1)).collect()
}

impl RedisBroker {
    /// Call `sealq_registry` with `args` (`index`, `unindex` or `queue` and theirs).
    pub(crate) async fn registry(&self, args: &[&[u8]]) -> BrokerResult<Value> {
        let mut c = fcall("sealq_registry");
        c.arg(1).arg(&self.inner.global_key_prefix);
        for a in args {
            c.arg(*a);
        }
        self.inner
            .conn
            .query(&c)
            .await
            .map_err(|e| self.err("updating the queue registry", e))
    }

    /// Every known queue and the paused ones.
    pub(crate) async fn queues(&self) -> BrokerResult<(Vec<String>, Vec<String>)> {
        let mut c = fcall("sealq_queues");
        c.arg(1).arg(&self.inner.global_key_prefix);
        let v: Value = self
            .inner
            .conn
            .query(&c)
            .await
            .map_err(|e| self.err("listing queues", e))?;
        parse_queues(v).map_err(|e| self.corrupt_reply("listing queues", e))
    }

    /// The queue of each id (from the lease cache, else the global index);
    /// `take` removes them from the lease cache.
    pub(crate) async fn locate(
        &self,
        ids: &[TaskId],
        take: bool,
    ) -> BrokerResult<Vec<Option<Arc<str>>>> {
        let mut out: Vec<Option<Arc<str>>> = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        {
            let mut cache = self.inner.leases.lock().expect("lease cache");
            for (i, id) in ids.iter().enumerate() {
                let q = if take {
                    cache.remove(id)
                } else {
                    cache.get(id).cloned()
                };
                if q.is_none() {
                    missing.push(i);
                }
                out.push(q);
            }
        }
        if !missing.is_empty() {
            let mut c = fcall("sealq_locate");
            c.arg(1).arg(&self.inner.global_key_prefix);
            for &i in &missing {
                c.arg(id_str(&ids[i]));
            }
            let v: Value = self
                .inner
                .conn
                .query(&c)
                .await
                .map_err(|e| self.err("locating tasks", e))?;
            let what = "locating tasks";
            for (&i, q) in missing
                .iter()
                .zip(array(v).map_err(|e| self.corrupt_reply(what, e))?)
            {
                out[i] = opt_bytes(q)
                    .map_err(|e| self.corrupt_reply(what, e))?
                    .map(|b| Arc::from(String::from_utf8_lossy(&b).as_ref()));
            }
        }
        Ok(out)
    }

    /// Cluster: claim `ids` for `queue` in the global index before
    /// enqueueing them (an id another queue holds is refused there).
    pub(crate) async fn enqueue_cluster_claim(
        &self,
        queue: &str,
        ids: &[String],
    ) -> BrokerResult<Vec<bool>> {
        let mut args: Vec<&[u8]> = vec![b"index", queue.as_bytes()];
        args.extend(ids.iter().map(|s| s.as_bytes()));
        let v = self.registry(&args).await?;
        parse_claims(v).map_err(|e| self.corrupt_reply("claiming task ids", e))
    }

    /// Cluster: remove `ids` from the global index (nothing to do on a
    /// single node, where the functions did it).
    pub(crate) async fn unindex(&self, ids: Vec<String>) -> BrokerResult<()> {
        if ids.is_empty() || self.single_node() {
            return Ok(());
        }
        let mut args: Vec<&[u8]> = vec![b"unindex"];
        args.extend(ids.iter().map(|s| s.as_bytes()));
        self.registry(&args).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Value {
        Value::BulkString(x.as_bytes().to_vec())
    }

    #[test]
    fn queues_reply_gives_sorted_known_and_paused_queues() {
        let v = Value::Array(vec![
            Value::Array(vec![s("b"), s("a"), s("c")]),
            Value::Array(vec![s("c")]),
        ]);
        let (all, paused) = parse_queues(v).unwrap();
        assert_eq!(all, ["a", "b", "c"]);
        assert_eq!(paused, ["c"]);
        // No registry yet: nil, or an empty paused list.
        assert_eq!(parse_queues(Value::Nil).unwrap(), (vec![], vec![]));
        let (all, paused) = parse_queues(Value::Array(vec![Value::Array(vec![s("q")])])).unwrap();
        assert_eq!((all.as_slice(), paused.len()), (&["q".to_owned()][..], 0));
    }

    #[test]
    fn malformed_queues_reply_is_an_error() {
        let e = parse_queues(Value::Int(3)).unwrap_err();
        assert!(e.contains("expected an array"), "{e}");
        let e = parse_queues(Value::Array(vec![Value::Array(vec![Value::Nil])])).unwrap_err();
        assert!(e.contains("got nil"), "{e}");
        let e = parse_queues(Value::Array(vec![s("not a list")])).unwrap_err();
        assert!(e.contains("expected an array"), "{e}");
    }

    #[test]
    fn claims_reply_reads_ones_as_claimed() {
        let v = Value::Array(vec![Value::Int(1), Value::Int(0), s("1")]);
        assert_eq!(parse_claims(v).unwrap(), [true, false, true]);
        let e = parse_claims(Value::Array(vec![s("yes")])).unwrap_err();
        assert!(e.contains("expected an integer"), "{e}");
    }
}
