//! The worker's maintenance: forwarding due scheduled and retry tasks
//! (`sealq_forward`), recovering expired leases (`sealq_recover`) and
//! purging completed tasks and trimming the archive (`sealq_purge`). Each
//! drains every queue in batches of [`crate::RedisOptions::maintenance_batch`]
//! ([`RedisBroker::drain_queues`]), one atomic call per queue and batch.

use std::collections::HashMap;

use redis::Value;
use sealq::broker::{BrokerResult, Forwarded, Recovered};

use crate::RedisBroker;
use crate::calls::{QueueBatch, ms};
use crate::codec::{array, bytes, int};

/// What one purge did (see [`RedisBroker::purge`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Completed tasks deleted after their retention.
    pub completed: u64,
    /// Archived tasks deleted by the archive caps.
    pub archive_trimmed: u64,
}

/// The `sealq_forward` reply: `[moved, next_due]`, `next_due` the queue's
/// earliest remaining due time (ms, possibly as a float) or empty if none.
fn parse_forward_reply(reply: Value) -> Result<(i64, Option<i64>), String> {
    let parts = array(reply)?;
    let moved = parts.first().map(int).transpose()?.unwrap_or(0);
    let due = match parts.into_iter().nth(1) {
        Some(v) => {
            let b = bytes(v)?;
            if b.is_empty() {
                None
            } else {
                let s = String::from_utf8_lossy(&b);
                Some(s.parse::<f64>().map_err(|e| e.to_string())? as i64)
            }
        }
        None => None,
    };
    Ok((moved, due))
}

/// The `sealq_recover` reply: `[retried, archived, scanned, quarantined
/// id…]` (missing counts are 0; the ids are of tasks archived `integrity`
/// because their fields do not decode).
fn parse_recover_reply(reply: Value) -> Result<([i64; 3], Vec<String>), String> {
    let parts = array(reply)?;
    let n = |i: usize| parts.get(i).map(int).transpose().map(|v| v.unwrap_or(0));
    let counts = [n(0)?, n(1)?, n(2)?];
    let mut quarantined = Vec::new();
    for v in parts.into_iter().skip(3) {
        quarantined.push(String::from_utf8_lossy(&bytes(v)?).into_owned());
    }
    Ok((counts, quarantined))
}

/// One queue's `sealq_purge` reply.
#[derive(Debug, PartialEq, Eq)]
struct PurgeReply {
    /// Completed tasks deleted.
    purged: u64,
    /// Completed entries looked at.
    scanned: u64,
    /// Archived tasks deleted by the caps.
    trimmed: u64,
    /// 1 when the archive caps have more to trim.
    more: u64,
    /// Deleted ids, for a Cluster's global index.
    deleted: Vec<String>,
}

/// The `sealq_purge` reply: `[purged, scanned, trimmed, more, id…]`
/// (missing or negative counts are 0).
fn parse_purge_reply(reply: Value) -> Result<PurgeReply, String> {
    let parts = array(reply)?;
    let n = |i: usize| -> Result<u64, String> {
        let v = parts.get(i).map(int).transpose()?;
        Ok(u64::try_from(v.unwrap_or(0)).unwrap_or(0))
    };
    let (purged, scanned, trimmed, more) = (n(0)?, n(1)?, n(2)?, n(3)?);
    let mut deleted = Vec::new();
    for v in parts.into_iter().skip(4) {
        deleted.push(String::from_utf8_lossy(&bytes(v)?).into_owned());
    }
    Ok(PurgeReply {
        purged,
        scanned,
        trimmed,
        more,
        deleted,
    })
}

impl RedisBroker {
    /// [`sealq::Broker::forward_due`]: every queue's due scheduled and retry
    /// tasks become pending; reports the earliest due time left.
    pub(crate) async fn forward_due_tasks(&self) -> BrokerResult<Forwarded> {
        let what = "forwarding due tasks";
        let now = self.now();
        let limit = self.inner.opts.maintenance_batch.max(1);
        let (todo, _) = self.queues().await?;
        let mut total = Forwarded::default();
        let mut next: HashMap<String, Option<i64>> = HashMap::new();
        self.drain_queues(
            what,
            todo,
            |todo| {
                todo.iter()
                    .map(|q| {
                        let mut c = self.queue_call("sealq_forward", q, false);
                        c.arg(now).arg(limit);
                        c
                    })
                    .collect()
            },
            |q, reply| {
                let (moved, due) =
                    parse_forward_reply(reply).map_err(|e| self.corrupt_reply(what, e))?;
                total.moved += u64::try_from(moved).unwrap_or(0);
                next.insert(q.clone(), due);
                let more = usize::try_from(moved).unwrap_or(0) >= limit;
                Ok(QueueBatch::more(more.then_some(q)))
            },
        )
        .await?;
        total.next_due_ms = next.values().flatten().copied().min();
        Ok(total)
    }

    /// [`sealq::Broker::recover_expired`]: tasks whose lease expired go
    /// back as retry, or are archived when out of attempts.
    pub(crate) async fn recover_expired_leases(&self) -> BrokerResult<Recovered> {
        let what = "recovering expired leases";
        let now = self.now();
        let limit = self.inner.opts.maintenance_batch.max(1);
        let (todo, _) = self.queues().await?;
        let mut total = Recovered::default();
        self.drain_queues(
            what,
            todo,
            |todo| {
                todo.iter()
                    .map(|q| {
                        let mut c = self.queue_call("sealq_recover", q, false);
                        c.arg(now).arg(limit);
                        c
                    })
                    .collect()
            },
            |q, reply| {
                let ([retried, archived, scanned], quarantined) =
                    parse_recover_reply(reply).map_err(|e| self.corrupt_reply(what, e))?;
                for id in &quarantined {
                    crate::quarantine::quarantined(
                        id,
                        &q,
                        "recover_expired",
                        "attempts or max retries is not a number",
                    );
                }
                total.retried += retried as u64;
                total.archived += archived as u64;
                Ok(QueueBatch::more((scanned as usize >= limit).then_some(q)))
            },
        )
        .await?;
        if total.archived > 0 {
            metrics::counter!("sealq_redis_lease_exhausted_total").increment(total.archived);
        }
        Ok(total)
    }

    /// Delete completed tasks past their retention and trim archived tasks
    /// beyond [`crate::RedisOptions::archive_max_count`] and
    /// [`crate::RedisOptions::archive_max_age`] (oldest first), in batches of
    /// [`crate::RedisOptions::maintenance_batch`] per queue, each atomic. Trimmed
    /// tasks are counted: the returned figure, the metric
    /// `sealq_archive_trimmed_total{queue}`, the queue's `trimmed` count in
    /// its Redis `n` hash, and a log line. The worker's maintenance calls this
    /// through [`sealq::Broker::purge_completed`].
    pub async fn purge(&self) -> BrokerResult<Purged> {
        let what = "purging completed tasks";
        let now = self.now();
        let limit = self.inner.opts.maintenance_batch.max(1);
        let horizon = ms(self.inner.opts.replay_horizon);
        let max_count = self
            .inner
            .opts
            .archive_max_count
            .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let max_age = self.inner.opts.archive_max_age.map_or(-1, ms);
        let (todo, _) = self.queues().await?;
        let mut total = Purged::default();
        self.drain_queues(
            what,
            todo,
            |todo| {
                todo.iter()
                    .map(|q| {
                        let mut c = self.queue_call("sealq_purge", q, true);
                        c.arg(now)
                            .arg(limit)
                            .arg(horizon)
                            .arg(max_count)
                            .arg(max_age);
                        c
                    })
                    .collect()
            },
            |q, reply| {
                let r = parse_purge_reply(reply).map_err(|e| self.corrupt_reply(what, e))?;
                total.completed += r.purged;
                total.archive_trimmed += r.trimmed;
                if r.trimmed > 0 {
                    metrics::counter!("sealq_archive_trimmed_total", "queue" => q.clone())
                        .increment(r.trimmed);
                    tracing::info!(queue = %q, trimmed = r.trimmed, "sealq: archived tasks deleted by the archive caps");
                }
                let more = r.scanned as usize >= limit || r.more == 1;
                Ok(QueueBatch {
                    more: more.then_some(q),
                    unindex: r.deleted,
                })
            },
        )
        .await?;
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tests::s;

    #[test]
    fn forward_reply_gives_moved_and_next_due() {
        let v = Value::Array(vec![Value::Int(3), s("1700000000123")]);
        assert_eq!(
            parse_forward_reply(v).unwrap(),
            (3, Some(1_700_000_000_123))
        );
        // Lua may send the score as a float; nothing left is empty.
        let v = Value::Array(vec![Value::Int(0), s("1.7e12")]);
        assert_eq!(
            parse_forward_reply(v).unwrap(),
            (0, Some(1_700_000_000_000))
        );
        let v = Value::Array(vec![Value::Int(2), s("")]);
        assert_eq!(parse_forward_reply(v).unwrap(), (2, None));
        assert_eq!(parse_forward_reply(Value::Nil).unwrap(), (0, None));
    }

    #[test]
    fn malformed_forward_reply_is_an_error() {
        let e = parse_forward_reply(Value::Array(vec![Value::Int(1), s("soon")])).unwrap_err();
        assert!(e.contains("invalid float"), "{e}");
        let e = parse_forward_reply(Value::Array(vec![s("many")])).unwrap_err();
        assert_eq!(e, "expected an integer");
        let e = parse_forward_reply(Value::Array(vec![Value::Int(1), Value::Nil])).unwrap_err();
        assert_eq!(e, "expected a string, got nil");
        let e = parse_forward_reply(Value::Int(1)).unwrap_err();
        assert!(e.contains("expected an array"), "{e}");
    }

    #[test]
    fn recover_reply_gives_retried_archived_scanned() {
        let v = Value::Array(vec![Value::Int(4), Value::Int(1), Value::Int(1000)]);
        assert_eq!(parse_recover_reply(v).unwrap(), ([4, 1, 1000], vec![]));
        let v = Value::Array(vec![Value::Int(4)]);
        assert_eq!(parse_recover_reply(v).unwrap(), ([4, 0, 0], vec![]));
        let v = Value::Array(vec![
            Value::Int(0),
            Value::Int(0),
            Value::Int(1),
            Value::BulkString(b"abc".to_vec()),
        ]);
        assert_eq!(
            parse_recover_reply(v).unwrap(),
            ([0, 0, 1], vec!["abc".into()])
        );
        let e = parse_recover_reply(Value::Array(vec![Value::Int(0), s("x")])).unwrap_err();
        assert_eq!(e, "expected an integer");
        assert!(parse_recover_reply(s("OK")).is_err());
    }

    #[test]
    fn purge_reply_gives_counts_and_deleted_ids() {
        let v = Value::Array(vec![
            Value::Int(5),
            Value::Int(1000),
            Value::Int(2),
            Value::Int(1),
            s("aa"),
            s("bb"),
        ]);
        assert_eq!(
            parse_purge_reply(v).unwrap(),
            PurgeReply {
                purged: 5,
                scanned: 1000,
                trimmed: 2,
                more: 1,
                deleted: vec!["aa".into(), "bb".into()],
            }
        );
        // Short or negative counts are 0.
        let v = Value::Array(vec![Value::Int(-1)]);
        let r = parse_purge_reply(v).unwrap();
        assert_eq!((r.purged, r.scanned, r.trimmed, r.more), (0, 0, 0, 0));
        assert!(r.deleted.is_empty());
    }

    #[test]
    fn malformed_purge_reply_is_an_error() {
        let e = parse_purge_reply(Value::Array(vec![s("x")])).unwrap_err();
        assert_eq!(e, "expected an integer");
        let mut v = vec![Value::Int(0); 4];
        v.push(Value::Nil);
        let e = parse_purge_reply(Value::Array(v)).unwrap_err();
        assert_eq!(e, "expected a string, got nil");
        assert!(parse_purge_reply(Value::Int(0)).is_err());
    }
}
