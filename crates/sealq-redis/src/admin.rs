//! Reading and changing tasks by hand: list, get, delete, rerun, and the
//! re-sealing of stored parts (`swap_sealed`, for key rotation).

use redis::Value;
use sealq::TaskId;
use sealq::broker::{BrokerResult, ListQuery, SealedPart, SealedSwap, TaskRecord};

use crate::calls::group_by;
use crate::codec::{self, array, bytes, id_str, int, opt_bytes, parse_id};
use crate::{RedisBroker, keys};

/// One task of a `sealq_list` reply: `[id, fields, stored]`.
struct TaskItem {
    /// The id as stored.
    id: Vec<u8>,
    /// The task hash as field/value pairs.
    fields: Vec<Value>,
    /// Its stored bytes (nil if missing).
    stored: Option<Vec<u8>>,
}

fn parse_task_item(item: Value) -> Result<TaskItem, String> {
    let mut it = array(item)?.into_iter();
    let id = it.next().map(bytes).transpose()?.unwrap_or_default();
    let fields = array(it.next().unwrap_or(Value::Nil))?;
    let stored = opt_bytes(it.next().unwrap_or(Value::Nil))?;
    Ok(TaskItem { id, fields, stored })
}

/// One queue's page of a listing.
#[derive(Default)]
struct ListPage {
    /// The tasks that decode.
    records: Vec<TaskRecord>,
    /// Tasks that do not, as (id as stored, why): left out and reported.
    bad: Vec<(String, String)>,
    /// How many tasks the reply held, good or bad.
    items: usize,
    /// The id of the last one, as stored (the cursor for the next page).
    last: Option<Vec<u8>>,
}

/// The `sealq_list` reply for `queue`: its tasks' records. A task whose
/// fields or bytes do not decode is set aside in [`ListPage::bad`]: one
/// damaged task must not hide the others; a reply that is not a list of
/// tasks is an error.
fn parse_list_reply(queue: &str, reply: Value) -> Result<ListPage, String> {
    let mut page = ListPage::default();
    for item in array(reply)? {
        let TaskItem { id, fields, stored } = parse_task_item(item)?;
        page.items += 1;
        let decoded = parse_id(&id)
            .ok_or_else(|| "its id is not an id".to_owned())
            .and_then(|tid| codec::record(tid, queue, fields, stored));
        match decoded {
            Ok(r) => page.records.push(r),
            Err(why) => page
                .bad
                .push((String::from_utf8_lossy(&id).into_owned(), why)),
        }
        page.last = Some(id);
    }
    Ok(page)
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
    codec::record(id, queue, fields, stored)
        .map(Some)
        .map_err(|why| {
            format!(
                "task {id} of queue `{queue}` does not decode ({why}); a worker archives it as \
                 `integrity` when it leases it; delete it with `sealq tasks delete` once inspected"
            )
        })
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
        let call = |q: &str, after: &[u8], limit: usize| {
            let mut c = self.queue_call("sealq_list", q, false);
            c.arg(after).arg(limit).arg(state).arg(&sub);
            c
        };
        let cmds = queues
            .iter()
            .map(|q| call(q, after.as_bytes(), limit))
            .collect();
        let replies = self.run_per_queue(what, cmds).await?;
        let mut out = Vec::new();
        for (q, reply) in queues.iter().zip(replies) {
            let mut page = parse_list_reply(q, reply).map_err(|e| self.corrupt_reply(what, e))?;
            // Tasks that do not decode are left out and reported; a full
            // page is topped up from the tasks after them, so one bad task
            // never ends a pagination early (rare: one call more per page).
            let (mut asked, mut got) = (limit, 0);
            loop {
                got += page.records.len();
                out.append(&mut page.records);
                for (id, why) in &page.bad {
                    crate::quarantine::skipped(id, q, "list", why);
                }
                let (false, true, Some(last)) =
                    (page.bad.is_empty(), page.items >= asked, page.last.take())
                else {
                    break;
                };
                asked = limit - got;
                let v: Value = self
                    .inner
                    .conn
                    .query(&call(q, &last, asked))
                    .await
                    .map_err(|e| self.err(what, e))?;
                page = parse_list_reply(q, v).map_err(|e| self.corrupt_reply(what, e))?;
            }
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

    /// Locate `ids`, drop their leases from the lease cache, and call
    /// `function` once per queue with the broker's time and that queue's
    /// ids: the replies, one per queue (delete and erase by id).
    pub(crate) async fn call_with_ids_per_queue(
        &self,
        function: &str,
        what: &str,
        ids: &[TaskId],
    ) -> BrokerResult<Vec<Value>> {
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
                let mut c = self.queue_call(function, q, true);
                c.arg(self.now());
                for &i in idx {
                    c.arg(id_str(&ids[i]));
                }
                c
            })
            .collect();
        self.run_per_queue(what, cmds).await
    }

    /// [`sealq::Broker::delete`]: one `sealq_delete` per queue; the leases
    /// leave the lease cache.
    pub(crate) async fn delete_tasks(&self, ids: &[TaskId]) -> BrokerResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let what = "deleting tasks";
        let replies = self
            .call_with_ids_per_queue("sealq_delete", what, ids)
            .await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tests::{meta, s};
    use crate::codec::{encode_stored, id_str};
    use sealq::TaskState;

    fn id(n: u128) -> TaskId {
        TaskId(uuid::Uuid::from_u128(n))
    }

    /// A `[id, fields, stored]` item of a pending task.
    fn item(id: TaskId) -> Value {
        Value::Array(vec![
            s(&id_str(&id)),
            Value::Array(vec![
                s("s"),
                s("pending"),
                s("r"),
                s("10"),
                s("upd"),
                s("5"),
            ]),
            Value::BulkString(encode_stored("k", &meta(), b"env").unwrap()),
        ])
    }

    #[test]
    fn list_reply_gives_records_of_the_queue() {
        let v = Value::Array(vec![item(id(1)), item(id(2))]);
        let p = parse_list_reply("q", v).unwrap();
        let r = &p.records;
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].id, r[1].id), (id(1), id(2)));
        assert_eq!(r[0].queue, "q");
        assert_eq!(r[0].state, TaskState::Pending);
        assert_eq!(r[0].envelope, b"env");
        assert_eq!((p.items, p.bad.len()), (2, 0));
        assert_eq!(p.last, Some(id_str(&id(2)).into_bytes()));
        let empty = parse_list_reply("q", Value::Nil).unwrap();
        assert!(empty.records.is_empty() && empty.last.is_none());
    }

    #[test]
    fn finding_4_a_task_that_does_not_decode_is_left_out_of_a_list_reply() {
        let bad_id = Value::Array(vec![s("nope"), Value::Nil, Value::Nil]);
        let no_bytes = Value::Array(vec![
            s(&id_str(&id(2))),
            Value::Array(vec![
                s("s"),
                s("pending"),
                s("r"),
                s("10"),
                s("upd"),
                s("5"),
            ]),
            Value::Nil,
        ]);
        // A key of the wrong type, as sealq_list marks it.
        let wrong_type = Value::Array(vec![
            s(&id_str(&id(3))),
            Value::Array(vec![s("!"), s("wrongtype")]),
            Value::Nil,
        ]);
        let v = Value::Array(vec![bad_id, item(id(1)), no_bytes, wrong_type, item(id(4))]);
        let p = parse_list_reply("q", v).unwrap();
        assert_eq!(
            p.records.iter().map(|r| r.id).collect::<Vec<_>>(),
            [id(1), id(4)]
        );
        assert_eq!(p.items, 5);
        assert_eq!(p.bad.len(), 3);
        assert_eq!(
            p.bad[0],
            ("nope".to_owned(), "its id is not an id".to_owned())
        );
        assert!(
            p.bad[1].1.ends_with("has no stored bytes"),
            "{:?}",
            p.bad[1]
        );
        assert!(p.bad[2].1.ends_with("has no `s` field"), "{:?}", p.bad[2]);
        // A reply that is not a list of tasks is still an error.
        let e = parse_list_reply("q", Value::Array(vec![s("flat")]))
            .map(|_| ())
            .unwrap_err();
        assert!(e.contains("expected an array"), "{e}");
    }

    #[test]
    fn get_reply_gives_the_record_or_none() {
        let r = parse_get_reply(id(3), "q", Value::Array(vec![item(id(3))]))
            .unwrap()
            .unwrap();
        assert_eq!((r.id, r.queue.as_str(), r.run_at_ms), (id(3), "q", 10));
        // No item, or an item with an empty hash: no such task.
        assert!(
            parse_get_reply(id(3), "q", Value::Array(vec![]))
                .unwrap()
                .is_none()
        );
        let gone = Value::Array(vec![s(&id_str(&id(3))), Value::Array(vec![]), Value::Nil]);
        assert!(
            parse_get_reply(id(3), "q", Value::Array(vec![gone]))
                .unwrap()
                .is_none()
        );
        let e = parse_get_reply(id(3), "q", Value::Array(vec![Value::Int(1)])).unwrap_err();
        assert!(e.contains("expected an array"), "{e}");
        // A task that does not decode is named.
        let broken = Value::Array(vec![
            s(&id_str(&id(3))),
            Value::Array(vec![s("s"), s("nope")]),
            Value::Nil,
        ]);
        let e = parse_get_reply(id(3), "q", Value::Array(vec![broken])).unwrap_err();
        assert!(
            e.contains(&id(3).to_string()) && e.contains("unknown state"),
            "{e}"
        );
    }

    #[test]
    fn delete_reply_gives_count_and_ids() {
        let v = Value::Array(vec![Value::Int(2), s("aa"), s("bb")]);
        assert_eq!(
            parse_delete_reply(v).unwrap(),
            (2, vec!["aa".to_owned(), "bb".to_owned()])
        );
        assert_eq!(parse_delete_reply(Value::Nil).unwrap(), (0, vec![]));
        let e = parse_delete_reply(Value::Array(vec![s("two")])).unwrap_err();
        assert_eq!(e, "expected an integer");
        let e = parse_delete_reply(Value::Array(vec![Value::Int(1), Value::Nil])).unwrap_err();
        assert_eq!(e, "expected a string, got nil");
    }

    #[test]
    fn swap_reply_needs_one_result_per_swap() {
        let v = Value::Array(vec![Value::Int(1), Value::Int(0)]);
        assert_eq!(parse_swap_reply(v, 2).unwrap(), [true, false]);
        let v = Value::Array(vec![Value::Int(1)]);
        assert_eq!(
            parse_swap_reply(v, 2).unwrap_err(),
            "one result per swap expected"
        );
        let v = Value::Array(vec![s("yes")]);
        assert_eq!(parse_swap_reply(v, 1).unwrap_err(), "expected an integer");
    }
}
