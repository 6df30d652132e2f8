//! Dequeueing: one `sealq_dequeue` call for every requested queue (one per
//! queue on a Cluster) leases tasks with one random token; their stored
//! bytes come in the reply (small batches) or from one `MGET` per queue.
//! A task whose fields or bytes do not decode is archived as `integrity`
//! and never handed out.

use std::sync::Arc;

use redis::Value;
use sealq::ArchiveReason;
use sealq::broker::{BrokerResult, DequeueRequest, Lease, LeasedTask, TaskRecord};

use crate::calls::{fcall, ms};
use crate::codec::{self, array, bytes, int, opt_bytes, parse_id, token_str};
use crate::{RedisBroker, keys};

/// One leased task as the `sealq_dequeue` reply describes it, before its
/// fields are checked.
#[derive(Debug)]
struct Raw {
    id: Vec<u8>,
    attempts: Value,
    run_at: Value,
    replayed: bool,
    /// Index of its queue in the call's queues.
    qi: usize,
    last_error: Option<Vec<u8>>,
    /// The stored bytes when the reply carried them (small batches).
    stored: Option<Vec<u8>>,
}

/// Why a `sealq_dequeue` reply was refused.
#[derive(Debug, PartialEq, Eq)]
enum DequeueReplyError {
    /// Its parts do not fit together (counts, triples, extras).
    Malformed,
    /// A value of the wrong type.
    Value(String),
}

impl From<String> for DequeueReplyError {
    fn from(e: String) -> Self {
        Self::Value(e)
    }
}

/// Parse the `sealq_dequeue` reply for `queues` queues: `[per, triples,
/// extras]` where `per` counts the tasks leased from each queue (in
/// order), `triples` is `id, attempts, run_at` per task, and `extras` is
/// `task number (1-based), code, value` with code `p` (replayed), `e`
/// (last error) or `b` (stored bytes).
fn parse_dequeue_reply(queues: usize, reply: Value) -> Result<Vec<Raw>, DequeueReplyError> {
    use DequeueReplyError::Malformed;
    let mut parts = array(reply)?.into_iter();
    let (per, triples, extras) = match (parts.next(), parts.next(), parts.next()) {
        (Some(p), Some(t), Some(e)) => (array(p)?, array(t)?, array(e)?),
        _ => return Err(Malformed),
    };
    if !triples.len().is_multiple_of(3) || !extras.len().is_multiple_of(3) {
        return Err(Malformed);
    }
    // Which queue each task came from: the reply counts tasks per key.
    let mut qis = Vec::with_capacity(triples.len() / 3);
    for (qi, n) in per.iter().enumerate().take(queues) {
        let n = usize::try_from(int(n)?).unwrap_or(0);
        qis.extend(std::iter::repeat_n(qi, n));
    }
    if qis.len() != triples.len() / 3 {
        return Err(Malformed);
    }
    let mut raws: Vec<Raw> = Vec::with_capacity(qis.len());
    let mut it = triples.into_iter();
    for &qi in &qis {
        let (Some(id), Some(attempts), Some(run_at)) = (it.next(), it.next(), it.next()) else {
            return Err(Malformed);
        };
        raws.push(Raw {
            id: opt_bytes(id).ok().flatten().unwrap_or_default(),
            attempts,
            run_at,
            replayed: false,
            qi,
            last_error: None,
            stored: None,
        });
    }
    let mut it = extras.into_iter();
    while let (Some(t), Some(code), Some(v)) = (it.next(), it.next(), it.next()) {
        let t = usize::try_from(int(&t)?)
            .ok()
            .and_then(|t| t.checked_sub(1))
            .filter(|&t| t < raws.len())
            .ok_or(Malformed)?;
        let r = &mut raws[t];
        match bytes(code)?.as_slice() {
            b"p" => r.replayed = true,
            b"e" => r.last_error = opt_bytes(v).ok().flatten(),
            b"b" => r.stored = opt_bytes(v).ok().flatten(),
            _ => return Err(Malformed),
        }
    }
    Ok(raws)
}

/// Check a leased task's fields and decode its stored bytes into the task
/// handed to the worker; `Err` says why it cannot be (never the bytes).
fn leased_task(
    r: Raw,
    queue: &str,
    stored: Option<Vec<u8>>,
    token: u64,
    lease_expires: i64,
    now: i64,
) -> Result<LeasedTask, String> {
    let id = parse_id(&r.id).ok_or("bad id")?;
    let attempts = int(&r.attempts).map_err(|_| "attempts is not a number")?;
    let run_at = int(&r.run_at).map_err(|_| "run_at is missing or not a number")?;
    let s = codec::decode_stored(stored.ok_or("its stored bytes are missing")?)?;
    Ok(LeasedTask {
        lease: Lease {
            task_id: id,
            token,
            expires_at_ms: lease_expires,
        },
        record: TaskRecord {
            id,
            queue: queue.to_owned(),
            kind: s.kind,
            envelope: s.envelope,
            meta: s.meta,
            state: sealq::TaskState::Active,
            attempts: u32::try_from(attempts.max(0)).unwrap_or(u32::MAX),
            run_at_ms: run_at,
            last_error: r.last_error,
            result: None,
            archive_reason: None,
            lease_expires_at_ms: Some(lease_expires),
            finished_at_ms: None,
            updated_at_ms: now,
        },
        replayed: r.replayed,
    })
}

impl RedisBroker {
    /// [`sealq::Broker::dequeue`]: one call for all queues on a single
    /// node; on a Cluster one per queue, in the order asked, until `max`.
    pub(crate) async fn dequeue_tasks(
        &self,
        req: &DequeueRequest,
    ) -> BrokerResult<Vec<LeasedTask>> {
        if req.max == 0 || req.queues.is_empty() {
            return Ok(Vec::new());
        }
        for q in &req.queues {
            keys::validate_queue(q)?;
        }
        let now = self.now();
        let max = req.max.min(65_535);
        if self.single_node() {
            return self.dequeue_from(&req.queues, max, req, now).await;
        }
        let mut out = Vec::new();
        for q in &req.queues {
            if out.len() >= max {
                break;
            }
            let got = self
                .dequeue_from(std::slice::from_ref(q), max - out.len(), req, now)
                .await?;
            out.extend(got);
        }
        Ok(out)
    }

    /// Read the stored bytes of freshly leased tasks (`MGET`, one per queue
    /// on a Cluster) and build their records. Tasks whose bytes are missing
    /// or do not decode, or whose state fields were edited, are returned as
    /// broken: `(id, queue index, why)`.
    async fn leased_records(
        &self,
        queues: &[String],
        reply: Value,
        token: u64,
        lease_expires: i64,
        now: i64,
    ) -> BrokerResult<(Vec<(LeasedTask, usize)>, Vec<(String, usize, String)>)> {
        let what = "reading leased tasks";
        let mut raws = parse_dequeue_reply(queues.len(), reply).map_err(|e| match e {
            DequeueReplyError::Malformed => {
                self.corrupt_reply("dequeueing tasks", "malformed reply from sealq_dequeue")
            }
            DequeueReplyError::Value(e) => self.corrupt_reply(what, e),
        })?;
        // The stored bytes not in the reply: one MGET per queue (one slot
        // each on a Cluster).
        let mut stored: Vec<Option<Vec<u8>>> = raws.iter_mut().map(|r| r.stored.take()).collect();
        let mut by_queue: Vec<Vec<usize>> = vec![Vec::new(); queues.len()];
        for (i, r) in raws.iter().enumerate() {
            if stored[i].is_none() {
                by_queue[r.qi].push(i);
            }
        }
        let mut p = redis::pipe();
        let mut asked = Vec::new();
        for (qi, idx) in by_queue.iter().enumerate() {
            if idx.is_empty() {
                continue;
            }
            let base = self.queue_key_prefix(&queues[qi]);
            let mut c = redis::cmd("MGET");
            for &i in idx {
                c.arg(format!("{base}b:{}", String::from_utf8_lossy(&raws[i].id)));
            }
            p.add_command(c);
            asked.push(idx);
        }
        if !asked.is_empty() {
            let replies: Vec<Value> = self
                .inner
                .conn
                .pipe(&p)
                .await
                .map_err(|e| self.err(what, e))?;
            for (idx, reply) in asked.into_iter().zip(replies) {
                for (&i, v) in idx
                    .iter()
                    .zip(array(reply).map_err(|e| self.corrupt_reply(what, e))?)
                {
                    stored[i] = opt_bytes(v).map_err(|e| self.corrupt_reply(what, e))?;
                }
            }
        }
        let mut ok = Vec::with_capacity(raws.len());
        let mut broken = Vec::new();
        for (r, stored) in raws.into_iter().zip(stored) {
            let id_s = String::from_utf8_lossy(&r.id).into_owned();
            let qi = r.qi;
            match leased_task(r, &queues[qi], stored, token, lease_expires, now) {
                Ok(t) => ok.push((t, qi)),
                Err(why) => broken.push((id_s, qi, why)),
            }
        }
        Ok((ok, broken))
    }

    /// One `sealq_dequeue` call over `queues` (one slot on a Cluster):
    /// lease, remember each lease's queue, archive what does not decode.
    async fn dequeue_from(
        &self,
        queues: &[String],
        max: usize,
        req: &DequeueRequest,
        now: i64,
    ) -> BrokerResult<Vec<LeasedTask>> {
        let what = "dequeueing tasks";
        // One token for the whole call: a lease is the task id plus the
        // token of the call that leased it (see sealq_dequeue).
        let token: u64 = rand::random();
        let mut c = fcall("sealq_dequeue");
        c.arg(queues.len());
        for q in queues {
            c.arg(self.queue_key_prefix(q));
        }
        c.arg(now)
            .arg(max)
            .arg(ms(req.lease))
            .arg(&req.worker)
            .arg(token_str(token));
        let v: Value = self
            .inner
            .conn
            .query(&c)
            .await
            .map_err(|e| self.err(what, e))?;
        let expires = now.saturating_add(ms(req.lease));
        let (leased, broken) = self.leased_records(queues, v, token, expires, now).await?;
        let mut out = Vec::with_capacity(leased.len());
        {
            let names: Vec<Arc<str>> = queues.iter().map(|q| Arc::from(q.as_str())).collect();
            let mut cache = self.inner.leases.lock().expect("lease cache");
            for (t, qi) in leased {
                cache.insert(t.record.id, names[qi].clone());
                out.push(t);
            }
        }
        // Edited, injected or bytes-less tasks never reach a handler: archive them.
        let tok = token_str(token);
        for (id, qi, why) in broken {
            crate::quarantine::quarantined(&id, &queues[qi], "dequeue", &why);
            metrics::counter!("sealq_redis_integrity_archived_total").increment(1);
            let mut c = fcall("sealq_ack");
            c.arg(1)
                .arg(self.queue_key_prefix(&queues[qi]))
                .arg(now)
                .arg(id)
                .arg(&tok)
                .arg("A")
                .arg(ArchiveReason::Integrity.as_str())
                .arg(format!("stored task fields do not decode: {why}"));
            let _: Value = self
                .inner
                .conn
                .query(&c)
                .await
                .map_err(|e| self.err("archiving a corrupt task", e))?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tests::{meta, s};
    use crate::codec::{encode_stored, id_str};

    fn id(n: u128) -> sealq::TaskId {
        sealq::TaskId(uuid::Uuid::from_u128(n))
    }

    fn reply(per: &[i64], triples: Vec<Value>, extras: Vec<Value>) -> Value {
        Value::Array(vec![
            Value::Array(per.iter().map(|&n| Value::Int(n)).collect()),
            Value::Array(triples),
            Value::Array(extras),
        ])
    }

    fn triple(n: u128, attempts: i64, run_at: i64) -> [Value; 3] {
        [s(&id_str(&id(n))), Value::Int(attempts), Value::Int(run_at)]
    }

    #[test]
    fn dequeue_reply_assigns_queues_and_extras() {
        let stored = encode_stored("k", &meta(), b"env").unwrap();
        let triples = [triple(1, 0, 10), triple(2, 1, 20), triple(3, 2, 30)].concat();
        let extras = vec![
            Value::Int(2),
            s("p"),
            Value::Nil,
            Value::Int(2),
            s("e"),
            s("boom"),
            Value::Int(3),
            s("b"),
            Value::BulkString(stored.clone()),
        ];
        // Two tasks from the first queue, none from the second, one from the third.
        let raws = parse_dequeue_reply(3, reply(&[2, 0, 1], triples, extras)).unwrap();
        assert_eq!(raws.iter().map(|r| r.qi).collect::<Vec<_>>(), [0, 0, 2]);
        assert_eq!(raws[0].id, id_str(&id(1)).into_bytes());
        assert!(!raws[0].replayed && raws[0].last_error.is_none() && raws[0].stored.is_none());
        assert!(raws[1].replayed);
        assert_eq!(raws[1].last_error.as_deref(), Some(&b"boom"[..]));
        assert_eq!(raws[2].stored.as_deref(), Some(stored.as_slice()));
        // Nothing leased.
        assert!(
            parse_dequeue_reply(2, reply(&[0, 0], vec![], vec![]))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn malformed_dequeue_reply_is_an_error() {
        use DequeueReplyError::{Malformed, Value as Type};
        let t = || triple(1, 0, 10).to_vec();
        let e = |queues, v| parse_dequeue_reply(queues, v).unwrap_err();
        // Missing parts.
        assert_eq!(e(1, Value::Array(vec![Value::Array(vec![])])), Malformed);
        assert_eq!(e(1, Value::Nil), Malformed);
        // Triples not a multiple of three, extras not either.
        assert_eq!(e(1, reply(&[1], t()[..2].to_vec(), vec![])), Malformed);
        assert_eq!(e(1, reply(&[1], t(), vec![Value::Int(1)])), Malformed);
        // Counts that do not match the tasks, or name more queues than asked.
        assert_eq!(e(1, reply(&[2], t(), vec![])), Malformed);
        assert_eq!(e(1, reply(&[0, 1], t(), vec![])), Malformed);
        // Extras naming no task, or an unknown code.
        for n in [0, 2, -1] {
            let x = vec![Value::Int(n), s("p"), Value::Nil];
            assert_eq!(e(1, reply(&[1], t(), x)), Malformed, "task {n}");
        }
        let x = vec![Value::Int(1), s("z"), Value::Nil];
        assert_eq!(e(1, reply(&[1], t(), x)), Malformed);
        // Values of the wrong type.
        assert!(matches!(e(1, Value::Int(1)), Type(m) if m.contains("expected an array")));
        let per_not_int = Value::Array(vec![
            Value::Array(vec![s("one")]),
            Value::Array(t()),
            Value::Array(vec![]),
        ]);
        assert_eq!(e(1, per_not_int), Type("expected an integer".into()));
        let x = vec![Value::Int(1), Value::Nil, Value::Nil];
        assert_eq!(
            e(1, reply(&[1], t(), x)),
            Type("expected a string, got nil".into())
        );
    }

    #[test]
    fn leased_task_is_built_or_refused_with_a_reason() {
        let stored = encode_stored("k", &meta(), b"env").unwrap();
        let raw = |id: Value, attempts: Value, run_at: Value| {
            let r = parse_dequeue_reply(1, reply(&[1], vec![id, attempts, run_at], vec![]));
            r.unwrap().pop().unwrap()
        };
        let ok = raw(s(&id_str(&id(5))), Value::Int(2), Value::Int(77));
        let t = leased_task(ok, "q", Some(stored.clone()), 0xab, 1_000, 900).unwrap();
        assert_eq!(t.lease.task_id, id(5));
        assert_eq!((t.lease.token, t.lease.expires_at_ms), (0xab, 1_000));
        assert_eq!(t.record.queue, "q");
        assert_eq!(t.record.state, sealq::TaskState::Active);
        assert_eq!((t.record.attempts, t.record.run_at_ms), (2, 77));
        assert_eq!(t.record.lease_expires_at_ms, Some(1_000));
        assert_eq!(t.record.updated_at_ms, 900);
        assert_eq!(t.record.envelope, b"env");
        assert!(!t.replayed);
        let why = |r: Raw, b: Option<Vec<u8>>| leased_task(r, "q", b, 1, 2, 3).unwrap_err();
        let good_id = || s(&id_str(&id(5)));
        assert_eq!(
            why(
                raw(s("x"), Value::Int(0), Value::Int(0)),
                Some(stored.clone())
            ),
            "bad id"
        );
        assert_eq!(
            why(
                raw(good_id(), s("two"), Value::Int(0)),
                Some(stored.clone())
            ),
            "attempts is not a number"
        );
        assert_eq!(
            why(
                raw(good_id(), Value::Int(0), Value::Nil),
                Some(stored.clone())
            ),
            "run_at is missing or not a number"
        );
        assert_eq!(
            why(raw(good_id(), Value::Int(0), Value::Int(0)), None),
            "its stored bytes are missing"
        );
        assert_eq!(
            why(raw(good_id(), Value::Int(0), Value::Int(0)), Some(vec![9])),
            "stored task bytes have unknown layout version 9"
        );
    }
}
