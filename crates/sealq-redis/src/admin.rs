//! Reading and changing tasks by hand: list, get, delete, rerun, and the
//! re-sealing of stored parts (`swap_sealed`, for key rotation).

use redis::Value;
use sealq::TaskId;
use sealq::broker::{BrokerResult, ListQuery, SealedPart, SealedSwap, TaskRecord};

use crate::calls::group_by;
use crate::codec::{self, array, bytes, id_str, int, opt_bytes, parse_id};
use crate::{RedisBroker, keys};

/// One task of a `sealq_list` or `sealq_get` reply: `[id, fields, stored]`,
/// `fields` the task hash as field/value pairs (empty if there is no such
/// task), `stored` its stored bytes or nil.
fn parse_task_item(item: Value) -> Result<(Vec<u8>, Vec<Value>, Option<Vec<u8>>), String> {
    let mut it = array(item)?.into_iter();
    let id = it.next().map(bytes).transpose()?.unwrap_or_default();
    let fields = array(it.next().unwrap_or(Value::Nil))?;
    let stored = opt_bytes(it.next().unwrap_or(Value::Nil))?;
    Ok((id, fields, stored))
}

/// The `sealq_list` reply for `queue`: its tasks' records.
fn parse_list_reply(queue: &str, reply: Value) -> Result<Vec<TaskRecord>, String> {
    let mut out = Vec::new();
    for item in array(reply)? {
        let (id, fields, stored) = parse_task_item(item)?;
        let id = parse_id(&id).ok_or("bad id")?;
        out.push(codec::record(id, queue, fields, stored)?);
    }
    Ok(out)
}

/// The `sealq_get` reply for task `id` of `queue` (`None`: no such task).
fn parse_get_reply(id: TaskId, queue: &str, reply: Value) -> Result<Option<TaskRecord>, String> {
    let Some(item) = array(reply)?.into_iter().next() else {
        return Ok(None);
    };
    let mut it = array(item)?.into_iter();
    let _ = it.next();
    let fields = array(it.next().unwrap_or(Value::Nil))?;
    if fields.is_empty() {
        return Ok(None);
    }
    let stored = opt_bytes(it.next().unwrap_or(Value::Nil))?;
    Ok(Some(codec::record(id, queue, fields, stored)?))
}

/// The `sealq_delete` reply: `[deleted, id…]`, the ids for a Cluster's
/// global index.
fn parse_delete_reply(reply: Value) -> Result<(u64, Vec<String>), String> {
    let mut it = array(reply)?.into_iter();
    let n = it.next().map(|v| int(&v)).transpose()?.unwrap_or(0) as u64;
    let mut ids = Vec::new();
    for v in it {
        ids.push(String::from_utf8_lossy(&bytes(v)?).into_owned());
    }
    Ok((n, ids))
}

/// The `sealq_swap` reply for `swaps` swaps: one integer each, 1 when the
/// stored part was the expected one and was replaced.
fn parse_swap_reply(reply: Value, swaps: usize) -> Result<Vec<bool>, String> {
    let items = array(reply)?;
    if items.len() != swaps {
        return Err("one result per swap expected".to_owned());
    }
    items.iter().map(|v| Ok(int(v)? == 1)).collect()
}

impl RedisBroker {
    /// [`sealq::Broker::list`]: `sealq_list` on the queue asked, or on
    /// every queue, merged in id order.
    pub(crate) async fn list_tasks(&self, query: &ListQuery) -> BrokerResult<Vec<TaskRecord>> {
        let what = "listing tasks";
        let limit = if query.limit == 0 { 100 } else { query.limit };
        let queues = match &query.queue {
            Some(q) => {
                keys::validate_queue(q)?;
                vec![q.clone()]
            }
            None => self.queues().await?.0,
        };
        let after = query.after.as_ref().map(id_str).unwrap_or_default();
        let state = query.state.map(|s| s.as_str()).unwrap_or("");
        let sub = query
            .subject
            .as_ref()
            .map(codec::subject_str)
            .unwrap_or_default();
        let cmds = queues
            .iter()
            .map(|q| {
                let mut c = self.queue_call("sealq_list", q, false);
                c.arg(&after).arg(limit).arg(state).arg(&sub);
                c
            })
            .collect();
        let replies = self.run_per_queue(what, cmds).await?;
        let mut out = Vec::new();
        for (q, reply) in queues.iter().zip(replies) {
            out.extend(parse_list_reply(q, reply).map_err(|e| self.corrupt_reply(what, e))?);
        }
        out.sort_by_key(|r| r.id);
        out.truncate(limit);
        Ok(out)
    }

    /// [`sealq::Broker::get`]: locate the task, then `sealq_get`.
    pub(crate) async fn get_task(&self, id: TaskId) -> BrokerResult<Option<TaskRecord>> {
        let what = "reading a task";
        let Some(q) = self.locate(&[id], false).await?.pop().flatten() else {
            return Ok(None);
        };
        let mut c = self.queue_call("sealq_get", &q, false);
        c.arg(id_str(&id));
        let v: Value = self
            .inner
            .conn
            .query(&c)
            .await
            .map_err(|e| self.err(what, e))?;
        parse_get_reply(id, &q, v).map_err(|e| self.corrupt_reply(what, e))
    }

    /// [`sealq::Broker::delete`]: one `sealq_delete` per queue; the leases
    /// leave the lease cache.
    pub(crate) async fn delete_tasks(&self, ids: &[TaskId]) -> BrokerResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let what = "deleting tasks";
        let queues = self.locate(ids, false).await?;
        {
            let mut cache = self.inner.leases.lock().expect("lease cache");
            for id in ids {
                cache.remove(id);
            }
        }
        let (groups, _) = group_by(queues.iter().map(|q| q.as_deref()));
        let cmds = groups
            .iter()
            .map(|(q, idx)| {
                let mut c = self.queue_call("sealq_delete", q, true);
                c.arg(self.now());
                for &i in idx {
                    c.arg(id_str(&ids[i]));
                }
                c
            })
            .collect();
        let replies = self.run_per_queue(what, cmds).await?;
        let mut n = 0u64;
        let mut forget = Vec::new();
        for reply in replies {
            let (deleted, ids) =
                parse_delete_reply(reply).map_err(|e| self.corrupt_reply(what, e))?;
            n += deleted;
            forget.extend(ids);
        }
        self.unindex(forget).await?;
        Ok(n)
    }

    /// [`sealq::Broker::swap_sealed`]: one `sealq_swap` per queue, each
    /// swap applied only if the stored part is still the expected one.
    pub(crate) async fn swap_sealed_parts(&self, swaps: &[SealedSwap]) -> BrokerResult<Vec<bool>> {
        let what = "re-sealing tasks";
        for s in swaps {
            keys::validate_queue(&s.queue)?;
        }
        let (groups, _) = group_by(swaps.iter().map(|s| Some(s.queue.as_str())));
        let cmds = groups
            .iter()
            .map(|(q, idx)| {
                let mut c = self.queue_call("sealq_swap", q, false);
                for &i in idx {
                    let s = &swaps[i];
                    c.arg(id_str(&s.task_id))
                        .arg(match s.part {
                            SealedPart::Payload => "p",
                            SealedPart::Result => "r",
                            SealedPart::Error => "e",
                        })
                        .arg(s.expected.as_slice())
                        .arg(s.replacement.as_slice());
                }
                c
            })
            .collect();
        let replies = self.run_per_queue(what, cmds).await?;
        let mut out = vec![false; swaps.len()];
        for ((_, idx), reply) in groups.iter().zip(replies) {
            let swapped =
                parse_swap_reply(reply, idx.len()).map_err(|e| self.corrupt_reply(what, e))?;
            for (&i, swapped) in idx.iter().zip(swapped) {
                out[i] = swapped;
            }
        }
        Ok(out)
    }

    /// [`sealq::Broker::rerun`]: one `sealq_rerun` per queue; returns how
    /// many tasks were made pending again.
    pub(crate) async fn rerun_tasks(&self, ids: &[TaskId]) -> BrokerResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let what = "re-running tasks";
        let now = self.now();
        let queues = self.locate(ids, false).await?;
        let (groups, _) = group_by(queues.iter().map(|q| q.as_deref()));
        let cmds = groups
            .iter()
            .map(|(q, idx)| {
                let mut c = self.queue_call("sealq_rerun", q, false);
                c.arg(now);
                for &i in idx {
                    c.arg(id_str(&ids[i]));
                }
                c
            })
            .collect();
        let replies = self.run_per_queue(what, cmds).await?;
        let mut n = 0u64;
        for r in replies {
            n += int(&r).map_err(|e| self.corrupt_reply(what, e))? as u64;
        }
        Ok(n)
    }
}
