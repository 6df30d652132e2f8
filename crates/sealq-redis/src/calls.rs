//! How the broker calls Redis: `FCALL`s of the functions library, one per
//! queue, pipelined on a single node and concurrent on a Cluster (one slot
//! per call), and the batch-by-batch loop that drains every queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::{Cmd, Value};
use sealq::BrokerError;
use sealq::broker::BrokerResult;

use crate::{RedisBroker, error};

/// A duration in whole milliseconds, as the functions take it.
pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `FCALL name` (keys and arguments to add).
pub(crate) fn fcall(name: &str) -> Cmd {
    let mut c = redis::cmd("FCALL");
    c.arg(name);
    c
}

/// One queue's share of a batch: queue name and indexes into the batch.
pub(crate) type Groups = Vec<(Arc<str>, Vec<usize>)>;

/// Group a batch by queue, queues in order of first appearance; the
/// indexes of items with no queue (`None`) come back apart.
pub(crate) fn group_by<'a>(queues: impl Iterator<Item = Option<&'a str>>) -> (Groups, Vec<usize>) {
    let mut groups: Groups = Vec::new();
    let mut index: HashMap<&'a str, usize> = HashMap::new();
    let mut orphans = Vec::new();
    for (i, q) in queues.enumerate() {
        match q {
            Some(q) => {
                let g = *index.entry(q).or_insert_with(|| {
                    groups.push((Arc::from(q), Vec::new()));
                    groups.len() - 1
                });
                groups[g].1.push(i);
            }
            None => orphans.push(i),
        }
    }
    (groups, orphans)
}

/// What one function call said of one queue in [`RedisBroker::drain_queues`].
pub(crate) struct QueueBatch<T> {
    /// The queue's next batch, when this one may not have reached its end.
    pub(crate) more: Option<T>,
    /// Ids to remove from the global index (a Cluster's; nothing on a single node).
    pub(crate) unindex: Vec<String>,
}

impl<T> QueueBatch<T> {
    /// The queue is drained when `more` is `None`.
    pub(crate) fn more(more: Option<T>) -> Self {
        Self {
            more,
            unindex: Vec::new(),
        }
    }
}

impl RedisBroker {
    /// A Redis error while `what`, with the target named.
    pub(crate) fn err(&self, what: &str, e: redis::RedisError) -> BrokerError {
        error::map(&self.inner.target, what, e)
    }

    /// A reply that does not have the shape the functions library returns.
    pub(crate) fn corrupt_reply(&self, what: &str, detail: impl std::fmt::Display) -> BrokerError {
        error::corrupt(&self.inner.target, what, detail)
    }

    /// The broker clock's time, Unix ms.
    pub(crate) fn now(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// One server holds every key (standalone or Sentinel-managed, not a
    /// Cluster): calls may span queues and reach the global registry.
    pub(crate) fn single_node(&self) -> bool {
        self.inner.conn.single_node()
    }

    /// `FCALL name` on one queue: its key prefix as the key, plus the
    /// global registry's prefix as a second key when `global` and on a
    /// single node (a Cluster cannot reach it from the queue's slot).
    pub(crate) fn queue_call(&self, name: &str, queue: &str, global: bool) -> Cmd {
        let mut c = fcall(name);
        if global && self.single_node() {
            c.arg(2)
                .arg(self.queue_key_prefix(queue))
                .arg(&self.inner.global_key_prefix);
        } else {
            c.arg(1).arg(self.queue_key_prefix(queue));
        }
        c
    }

    /// Run one command per queue: a pipeline on a single node, concurrent calls on a Cluster.
    pub(crate) async fn run_per_queue(
        &self,
        what: &str,
        cmds: Vec<Cmd>,
    ) -> BrokerResult<Vec<Value>> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        if self.single_node() {
            let mut p = redis::pipe();
            for c in cmds {
                p.add_command(c);
            }
            self.inner
                .conn
                .pipe::<Vec<Value>>(&p)
                .await
                .map_err(|e| self.err(what, e))
        } else {
            let futs = cmds.iter().map(|c| self.inner.conn.query::<Value>(c));
            futures::future::try_join_all(futs)
                .await
                .map_err(|e| self.err(what, e))
        }
    }

    /// Work through `todo` (one item per queue, with any cursor) in rounds
    /// until every queue is drained: each round sends `round`'s commands
    /// (one per item, [`Self::run_per_queue`], each call atomic and doing
    /// at most one batch), hands each reply to `settle` with its item, and
    /// unindexes what the replies name. Items whose reply says there may
    /// be more go on to the next round. Forwarding, recovery, purging,
    /// migration and erasure share it, so workers sharing them never do
    /// the same work twice.
    pub(crate) async fn drain_queues<T>(
        &self,
        what: &str,
        mut todo: Vec<T>,
        mut round: impl FnMut(&[T]) -> Vec<Cmd>,
        mut settle: impl FnMut(T, Value) -> BrokerResult<QueueBatch<T>>,
    ) -> BrokerResult<()> {
        while !todo.is_empty() {
            let cmds = round(&todo);
            let replies = self.run_per_queue(what, cmds).await?;
            let mut again = Vec::new();
            let mut forget = Vec::new();
            for (item, reply) in todo.into_iter().zip(replies) {
                let batch = settle(item, reply)?;
                again.extend(batch.more);
                forget.extend(batch.unindex);
            }
            self.unindex(forget).await?;
            todo = again;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_keep_first_appearance_order_and_set_orphans_apart() {
        let (groups, orphans) =
            group_by([Some("b"), Some("a"), None, Some("b"), None, Some("a")].into_iter());
        let groups: Vec<(&str, Vec<usize>)> = groups
            .iter()
            .map(|(q, i)| (q.as_ref(), i.clone()))
            .collect();
        assert_eq!(groups, vec![("b", vec![0, 3]), ("a", vec![1, 5])]);
        assert_eq!(orphans, vec![2, 4]);
        let (groups, orphans) = group_by(std::iter::empty());
        assert!(groups.is_empty() && orphans.is_empty());
    }

    #[test]
    fn durations_become_whole_milliseconds_saturating() {
        assert_eq!(ms(Duration::from_micros(1_999)), 1);
        assert_eq!(ms(Duration::from_secs(30)), 30_000);
        assert_eq!(ms(Duration::MAX), i64::MAX);
    }
}
