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
            tracing::warn!(task = %id, queue = %queues[qi], reason = %why, "sealq: archiving a task whose stored fields do not decode (integrity)");
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
