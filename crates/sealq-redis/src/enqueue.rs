//! Enqueueing: each task's stored bytes and one `sealq_enqueue` call per
//! queue (`sealq_enqueue_inline` for small calls), in one pipeline on a
//! single node; on a Cluster the ids are first claimed in the global index.

use std::sync::Arc;

use redis::Value;
use sealq::broker::{BrokerResult, EnqueueResult, NewTask};
use sealq::{BrokerError, BrokerErrorKind, TaskId};

use crate::calls::group_by;
use crate::codec::{self, array, bytes, id_str, parse_id};
use crate::{RedisBroker, keys};

/// What `sealq_enqueue` said of one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    Ok,
    Exists,
    /// Its bytes were not there as just written.
    NoBytes,
    /// Another task holds its unique key.
    Held(TaskId),
    /// The queue holds its maximum of waiting tasks (the cap).
    Full(u64),
}

/// How long a task's stored bytes live before the enqueue function makes
/// them permanent. They are written in the same pipeline just before it, so
/// this only bounds how long the bytes of a refused task, or of a producer
/// cut off between the two, stay behind.
const STORED_BYTES_TTL_MS: u64 = 10 * 60 * 1000;

/// Calls of at most this many tasks pass their bytes inside the function
/// call (`sealq_enqueue_inline`); larger ones write them with `MSETNX`,
/// which costs Redis less per task than passing them through Lua.
const ENQUEUE_INLINE: usize = 8;

/// The reply of `sealq_enqueue` (or `_inline`) for one queue: the number
/// of tasks when every one was stored, else one item per task, `ok`,
/// `exists`, `nobytes`, `full:CAP` or the id of the task holding its
/// unique key.
fn parse_enqueue_reply(reply: Value, tasks: usize) -> Result<Vec<Stored>, String> {
    if let Value::Int(n) = reply {
        return if usize::try_from(n) == Ok(tasks) {
            Ok(vec![Stored::Ok; tasks])
        } else {
            Err(format!("{n} tasks stored of a call of {tasks}"))
        };
    }
    let items = array(reply)?;
    if items.len() != tasks {
        return Err("one result per task expected".to_owned());
    }
    let mut outcomes = Vec::with_capacity(tasks);
    for item in items {
        let b = bytes(item)?;
        outcomes.push(match b.as_slice() {
            b"ok" => Stored::Ok,
            b"exists" => Stored::Exists,
            b"nobytes" => Stored::NoBytes,
            full if full.starts_with(b"full:") => Stored::Full(
                std::str::from_utf8(&full[5..])
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .ok_or("a queue's cap is not a number")?,
            ),
            holder => Stored::Held(parse_id(holder).ok_or("unique key holder is not an id")?),
        });
    }
    Ok(outcomes)
}

impl RedisBroker {
    /// [`sealq::Broker::enqueue`]: validate, group by queue, (Cluster) claim
    /// the ids, then [`Self::store_tasks`].
    pub(crate) async fn enqueue_tasks(
        &self,
        tasks: Vec<NewTask>,
    ) -> BrokerResult<Vec<EnqueueResult>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        for t in &tasks {
            keys::validate_queue(&t.queue)?;
        }
        let now = self.now();
        let (groups, _) = group_by(tasks.iter().map(|t| Some(t.queue.as_str())));
        let ids: Vec<String> = tasks.iter().map(|t| id_str(&t.id)).collect();
        if self.single_node() {
            return self.store_tasks(&tasks, &ids, &groups, now).await;
        }
        // Cluster: claim the ids in the global index first (cross-queue
        // IdExists). A claim stays until its task is stored or released:
        // should the call fail after claiming, the ids whose tasks were not
        // stored are released, else a retry of the same tasks would find
        // them claimed and be told `IdExists` for tasks that do not exist.
        let mut plan: Vec<(Arc<str>, Vec<usize>)> = Vec::with_capacity(groups.len());
        for (q, idx) in groups {
            let gids: Vec<String> = idx.iter().map(|&i| ids[i].clone()).collect();
            let claimed = match self.enqueue_cluster_claim(&q, &gids).await {
                Ok(claimed) => claimed,
                Err(e) => {
                    // This queue's claim may have run before the reply was
                    // lost: its ids are checked like the others'.
                    plan.push((q, idx));
                    self.release_unstored(&tasks, &plan).await;
                    return Err(e);
                }
            };
            let keep: Vec<usize> = idx
                .iter()
                .zip(claimed)
                .filter_map(|(&i, ok)| ok.then_some(i))
                .collect();
            if !keep.is_empty() {
                plan.push((q, keep));
            }
        }
        match self.store_tasks(&tasks, &ids, &plan, now).await {
            Ok(results) => Ok(results),
            Err(e) => {
                self.release_unstored(&tasks, &plan).await;
                Err(e)
            }
        }
    }

    /// Cluster, after a failed call: release the claims of `plan`'s tasks
    /// that are not stored. Whether a task is stored is asked of its queue's
    /// master (does its state hash exist), one pipeline per queue: a call
    /// that failed on the way back may have stored some. Best effort: the
    /// ids of a queue whose master cannot be asked keep their claims (the
    /// error being returned already says the call failed), and the log
    /// names their tasks.
    async fn release_unstored(&self, tasks: &[NewTask], plan: &[(Arc<str>, Vec<usize>)]) {
        let mut release = Vec::new();
        for (q, idx) in plan {
            let prefix = self.queue_key_prefix(q);
            let ids: Vec<String> = idx.iter().map(|&i| id_str(&tasks[i].id)).collect();
            let mut p = redis::pipe();
            for id in &ids {
                p.cmd("EXISTS").arg(format!("{prefix}t:{id}"));
            }
            match self.inner.conn.pipe::<Vec<i64>>(&p).await {
                Ok(found) => release.extend(
                    ids.into_iter()
                        .zip(found)
                        .filter_map(|(id, n)| (n == 0).then_some(id)),
                ),
                Err(e) => {
                    let named: Vec<String> = idx
                        .iter()
                        .take(5)
                        .map(|&i| tasks[i].id.to_string())
                        .collect();
                    tracing::warn!(
                        queue = %q,
                        tasks = idx.len(),
                        first = %named.join(", "),
                        error = %e,
                        "cannot tell whether the tasks of a failed enqueue call were stored; \
                         their ids stay claimed"
                    );
                }
            }
        }
        if let Err(e) = self.unindex(release).await {
            tracing::warn!(error = %e, "cannot release the ids of a failed enqueue call");
        }
    }

    /// Store `tasks` (their ids, `ids`) per `plan` (queue, task indices;
    /// on a Cluster only the ids this call claimed): [`Self::enqueue_round`],
    /// with one more round for tasks whose bytes were evicted before their
    /// function call. Tasks not in `plan` are `IdExists`.
    async fn store_tasks(
        &self,
        tasks: &[NewTask],
        ids: &[String],
        plan: &[(Arc<str>, Vec<usize>)],
        now: i64,
    ) -> BrokerResult<Vec<EnqueueResult>> {
        let mut results = vec![EnqueueResult::IdExists; tasks.len()];
        // A task whose bytes were gone when its function call ran (evicted
        // between the two, under maxmemory) gets one more round of its own;
        // the rest of the call stands either way.
        let mut round = self.enqueue_round(tasks, ids, plan, now, true).await?;
        let mut release = Vec::new();
        let mut retry: Vec<(Arc<str>, Vec<usize>)> = Vec::new();
        for attempt in 1..=2 {
            retry.clear();
            for (q, outcomes) in round {
                let mut again = Vec::new();
                for (i, outcome) in outcomes {
                    results[i] = match outcome {
                        Stored::Ok => EnqueueResult::Enqueued,
                        Stored::Exists => {
                            release.push(ids[i].clone());
                            EnqueueResult::IdExists
                        }
                        Stored::Held(existing) => {
                            release.push(ids[i].clone());
                            EnqueueResult::Duplicate { existing }
                        }
                        Stored::Full(max_depth) => {
                            release.push(ids[i].clone());
                            EnqueueResult::QueueFull { max_depth }
                        }
                        Stored::NoBytes => {
                            again.push(i);
                            continue;
                        }
                    };
                }
                if !again.is_empty() {
                    retry.push((q, again));
                }
            }
            if retry.is_empty() || attempt == 2 {
                break;
            }
            round = self.enqueue_round(tasks, ids, &retry, now, false).await?;
        }
        // What could not be written twice fails alone: every other task of
        // the call keeps its own result (stored ones stay stored).
        let lost: Vec<usize> = retry
            .iter()
            .flat_map(|(_, idx)| idx.iter().copied())
            .collect();
        for &i in &lost {
            release.push(ids[i].clone());
            results[i] = EnqueueResult::NotStored {
                reason: format!(
                    "Redis at {} did not keep the bytes of task {} as written just before its \
                     enqueue call, twice (evicted under maxmemory, or a stray key of that id); \
                     it was not stored ({} of the {} tasks of this call were not). Set \
                     `maxmemory-policy noeviction` (docs/redis.md, \"Memory\")",
                    self.inner.target,
                    tasks[i].id,
                    lost.len(),
                    tasks.len(),
                ),
            };
        }
        self.unindex(release).await?;
        Ok(results)
    }

    /// One enqueue round for `plan` (queue, task indices): per queue each
    /// task's stored bytes (`SET NX PX`: an existing task's bytes are never
    /// overwritten, and bytes of a refused task expire by themselves), then
    /// one function call that accepts or refuses each task and makes
    /// accepted bytes permanent. Only the function replies are kept. One
    /// pipeline on a single node; one per queue (one slot each),
    /// concurrently, on a Cluster. Returns each queue's outcomes in `plan`
    /// order.
    async fn enqueue_round(
        &self,
        tasks: &[NewTask],
        ids: &[String],
        plan: &[(Arc<str>, Vec<usize>)],
        now: i64,
        first: bool,
    ) -> BrokerResult<Vec<(Arc<str>, Vec<(usize, Stored)>)>> {
        let what = "enqueueing tasks";
        if plan.is_empty() {
            return Ok(Vec::new());
        }
        let single = self.single_node();
        // A call of a few tasks (first round) passes their bytes inside one
        // `sealq_enqueue_inline` call per queue, which writes them with
        // `SET NX`: one command instead of four, and no bytes are ever
        // written for a refused task.
        let inline =
            first && plan.iter().map(|(_, idx)| idx.len()).sum::<usize>() <= ENQUEUE_INLINE;
        // The fast path (single node, first round, larger calls): one `MSETNX` per queue
        // writes every task's bytes and a marker, or nothing if any of the
        // keys exists; the function learns which from the marker. MULTI/EXEC
        // makes the two one step, so bytes are never left without a task.
        // (Not when one call names an id twice: MSETNX would keep the last
        // bytes, `SET NX` keeps those of the task that is accepted.)
        let fast = first
            && !inline
            && single
            && plan.iter().all(|(_, idx)| {
                let mut seen = std::collections::HashSet::with_capacity(idx.len());
                idx.iter().all(|&i| seen.insert(&ids[i]))
            });
        fn stored(t: &NewTask) -> BrokerResult<codec::StoredArg<'_>> {
            codec::StoredArg::new(&t.kind, &t.meta, &t.envelope).map_err(|e| {
                BrokerError::new(BrokerErrorKind::Other, format!("task {}: {e}", t.id))
            })
        }
        let mut pipes = vec![redis::pipe()];
        if fast {
            pipes[0].atomic();
        }
        for (q, idx) in plan {
            if !single && pipes[pipes.len() - 1].cmd_iter().next().is_some() {
                pipes.push(redis::pipe());
            }
            let p = pipes.last_mut().expect("at least one pipeline");
            let base = self.queue_key_prefix(q);
            let marker = fast.then(|| format!("{base}m:{:016x}", rand::random::<u64>()));
            if let Some(m) = &marker {
                // One command of every task's bytes (about 1 MiB for 1,000
                // tasks of 1 KiB), sized once: grown by doubling, its buffer
                // was copied a dozen times and its large blocks mapped and
                // unmapped by the allocator on every call.
                let mut all = Vec::with_capacity(idx.len());
                let mut size = m.len() + 16;
                for &i in idx {
                    let key = format!("{base}b:{}", ids[i]);
                    let bytes = stored(&tasks[i])?;
                    size += key.len() + bytes.len();
                    all.push((key, bytes));
                }
                // (Each task's bytes are written straight into this
                // command: `StoredArg`, no buffer of their own.)
                let mut c = redis::Cmd::with_capacity(2 * all.len() + 3, size + 6);
                c.arg("MSETNX").arg(m).arg("1");
                for (key, bytes) in all {
                    c.arg(key).arg(bytes);
                }
                p.add_command(c).ignore();
            }
            // Inline calls carry the bytes as function arguments (below);
            // the fast path's are in the MSETNX above.
            for &i in idx.iter().filter(|_| !inline && !fast) {
                let stored = stored(&tasks[i])?;
                let key = format!("{base}b:{}", ids[i]);
                p.cmd("SET")
                    .arg(key)
                    .arg(stored)
                    .arg("NX")
                    .arg("PX")
                    .arg(STORED_BYTES_TTL_MS)
                    .ignore();
            }
            let mut c = match &marker {
                Some(m) => {
                    // (Sized once too: seven short arguments per task.)
                    let mut c = redis::Cmd::with_capacity(7 * idx.len() + 8, 96 * idx.len() + 256);
                    c.arg("FCALL")
                        .arg("sealq_enqueue")
                        .arg(3)
                        .arg(&base)
                        .arg(&self.inner.global_key_prefix)
                        .arg(m);
                    c
                }
                None if inline => self.queue_call("sealq_enqueue_inline", q, true),
                None => self.queue_call("sealq_enqueue", q, true),
            };
            c.arg(now).arg(q.as_ref());
            for &i in idx {
                let t = &tasks[i];
                let (uk, uttl) = match &t.unique {
                    Some((k, ttl)) => (k.as_str(), i64::try_from(*ttl).unwrap_or(i64::MAX / 4)),
                    None => ("", 0),
                };
                c.arg(&ids[i])
                    .arg(t.run_at_ms)
                    .arg(t.meta.max_retries)
                    .arg(t.meta.retention_ms)
                    .arg(
                        t.meta
                            .subject_tag
                            .as_ref()
                            .map(codec::subject_str)
                            .unwrap_or_default(),
                    )
                    .arg(uk)
                    .arg(uttl);
                if inline {
                    c.arg(stored(t)?);
                }
            }
            p.add_command(c);
        }
        let futs = pipes.iter().map(|p| self.inner.conn.pipe::<Vec<Value>>(p));
        let replies: Vec<Value> = futures::future::try_join_all(futs)
            .await
            .map_err(|e| self.err(what, e))?
            .into_iter()
            .flatten()
            .collect();
        if replies.len() != plan.len() {
            return Err(self.corrupt_reply(what, "one reply per queue expected"));
        }
        let mut out = Vec::with_capacity(plan.len());
        for ((q, idx), reply) in plan.iter().zip(replies) {
            let outcomes =
                parse_enqueue_reply(reply, idx.len()).map_err(|e| self.corrupt_reply(what, e))?;
            out.push((q.clone(), idx.iter().copied().zip(outcomes).collect()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tests::s;

    #[test]
    fn enqueue_reply_gives_each_tasks_outcome() {
        let holder = TaskId(uuid::Uuid::from_u128(9));
        let v = Value::Array(vec![
            s("ok"),
            s("exists"),
            s("nobytes"),
            s("full:250"),
            s(&id_str(&holder)),
        ]);
        assert_eq!(
            parse_enqueue_reply(v, 5).unwrap(),
            [
                Stored::Ok,
                Stored::Exists,
                Stored::NoBytes,
                Stored::Full(250),
                Stored::Held(holder)
            ]
        );
        assert_eq!(parse_enqueue_reply(Value::Nil, 0).unwrap(), []);
        assert_eq!(
            parse_enqueue_reply(Value::Int(3), 3).unwrap(),
            [Stored::Ok; 3],
            "all stored, in one integer"
        );
    }

    #[test]
    fn malformed_enqueue_reply_is_an_error() {
        let e = |v: Vec<Value>, n| parse_enqueue_reply(Value::Array(v), n).unwrap_err();
        assert_eq!(e(vec![s("ok")], 2), "one result per task expected");
        assert_eq!(e(vec![s("ok"), s("ok")], 1), "one result per task expected");
        assert_eq!(e(vec![s("full:many")], 1), "a queue's cap is not a number");
        assert_eq!(e(vec![s("full:-1")], 1), "a queue's cap is not a number");
        assert_eq!(e(vec![s("OK")], 1), "unique key holder is not an id");
        assert_eq!(e(vec![Value::Nil], 1), "expected a string, got nil");
        let e = parse_enqueue_reply(Value::Int(1), 2).unwrap_err();
        assert_eq!(e, "1 tasks stored of a call of 2");
        let e = parse_enqueue_reply(Value::Int(-1), 1).unwrap_err();
        assert_eq!(e, "-1 tasks stored of a call of 1");
        let e = parse_enqueue_reply(s("ok"), 1).unwrap_err();
        assert!(e.contains("expected an array"), "{e}");
    }
}
