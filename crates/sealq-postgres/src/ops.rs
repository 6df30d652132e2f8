//! The hot path: enqueue, dequeue, ack and lease extension, one round trip
//! each (a call of a `sealq.*` function, or one set-based statement).

use std::time::Duration;

use sealq::broker::{
    Ack, AckResult, BrokerResult, DequeueRequest, EnqueueResult, Lease, LeasedTask, NewTask,
    Outcome,
};
use sealq::{BrokerError, BrokerErrorKind, TaskId};
use tokio_postgres::types::Type;

use crate::Inner;
use crate::codec::{Malformed, encode_meta, ms_to_sql, record_from_row, report_quarantined};
use crate::db::{Conn, Param, Stmt};
use crate::error::map;

const ENQUEUE: Stmt = Stmt {
    sql: "SELECT idx, outcome, existing, max_depth \
          FROM sealq.enqueue($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    types: &[
        Type::INT8,
        Type::UUID_ARRAY,
        Type::TEXT_ARRAY,
        Type::TEXT_ARRAY,
        Type::BYTEA_ARRAY,
        Type::INT4_ARRAY,
        Type::INT8_ARRAY,
        Type::INT8_ARRAY,
        Type::BYTEA_ARRAY,
        Type::BYTEA_ARRAY,
        Type::TEXT_ARRAY,
        Type::INT8_ARRAY,
    ],
};

/// One task without a unique key: `sealq.enqueue_one` (migration 15) takes
/// its fields as plain values, which costs the server less than twelve
/// one-element arrays.
const ENQUEUE_ONE: Stmt = Stmt {
    sql: "SELECT outcome, existing, max_depth \
          FROM sealq.enqueue_one($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    types: &[
        Type::INT8,
        Type::UUID,
        Type::TEXT,
        Type::TEXT,
        Type::BYTEA,
        Type::INT4,
        Type::INT8,
        Type::INT8,
        Type::BYTEA,
        Type::BYTEA,
    ],
};

/// The arrays `sealq.enqueue` takes, built from a batch.
struct EnqueueArgs {
    now: i64,
    ids: Vec<uuid::Uuid>,
    queues: Vec<String>,
    kinds: Vec<String>,
    subjects: Vec<Option<Vec<u8>>>,
    retries: Vec<i32>,
    retention: Vec<i64>,
    run_at: Vec<i64>,
    envelopes: Vec<Vec<u8>>,
    metas: Vec<Vec<u8>>,
    keys: Vec<Option<String>>,
    ttls: Vec<Option<i64>>,
}

/// The metadata bytes of one task.
fn meta_bytes(t: &NewTask) -> BrokerResult<Vec<u8>> {
    encode_meta(&t.meta).map_err(|e| {
        BrokerError::new(
            BrokerErrorKind::Other,
            format!("cannot encode the metadata of task {}: {e}", t.id),
        )
    })
}

impl EnqueueArgs {
    fn new(now: i64, tasks: Vec<NewTask>) -> BrokerResult<Self> {
        let n = tasks.len();
        let mut a = EnqueueArgs {
            now,
            ids: Vec::with_capacity(n),
            queues: Vec::with_capacity(n),
            kinds: Vec::with_capacity(n),
            subjects: Vec::with_capacity(n),
            retries: Vec::with_capacity(n),
            retention: Vec::with_capacity(n),
            run_at: Vec::with_capacity(n),
            envelopes: Vec::with_capacity(n),
            metas: Vec::with_capacity(n),
            keys: Vec::with_capacity(n),
            ttls: Vec::with_capacity(n),
        };
        for t in tasks {
            a.metas.push(meta_bytes(&t)?);
            a.ids.push(t.id.0);
            a.subjects
                .push(t.meta.subject_tag.as_ref().map(|s| s.0.to_vec()));
            a.retries
                .push(i32::try_from(t.meta.max_retries).unwrap_or(i32::MAX));
            a.retention.push(ms_to_sql(t.meta.retention_ms));
            a.run_at.push(t.run_at_ms);
            a.envelopes.push(t.envelope);
            a.ttls
                .push(t.unique.as_ref().map(|(_, ttl)| ms_to_sql(*ttl)));
            a.keys.push(t.unique.map(|(k, _)| k));
            a.queues.push(t.queue);
            a.kinds.push(t.kind);
        }
        Ok(a)
    }

    fn params(&self) -> Vec<Param<'_>> {
        vec![
            &self.now,
            &self.ids,
            &self.queues,
            &self.kinds,
            &self.subjects,
            &self.retries,
            &self.retention,
            &self.run_at,
            &self.envelopes,
            &self.metas,
            &self.keys,
            &self.ttls,
        ]
    }
}

/// The values `sealq.enqueue_one` takes.
struct OneArgs {
    now: i64,
    id: uuid::Uuid,
    queue: String,
    kind: String,
    subject: Option<Vec<u8>>,
    retries: i32,
    retention: i64,
    run_at: i64,
    envelope: Vec<u8>,
    meta: Vec<u8>,
}

impl OneArgs {
    fn new(now: i64, t: NewTask) -> BrokerResult<Self> {
        Ok(OneArgs {
            now,
            meta: meta_bytes(&t)?,
            id: t.id.0,
            subject: t.meta.subject_tag.as_ref().map(|s| s.0.to_vec()),
            retries: i32::try_from(t.meta.max_retries).unwrap_or(i32::MAX),
            retention: ms_to_sql(t.meta.retention_ms),
            run_at: t.run_at_ms,
            envelope: t.envelope,
            queue: t.queue,
            kind: t.kind,
        })
    }

    fn params(&self) -> Vec<Param<'_>> {
        vec![
            &self.now,
            &self.id,
            &self.queue,
            &self.kind,
            &self.subject,
            &self.retries,
            &self.retention,
            &self.run_at,
            &self.envelope,
            &self.meta,
        ]
    }
}

/// A batch as the enqueue statements take it: one task without a unique
/// key as plain values, anything else as arrays.
enum Args {
    One(OneArgs),
    Many(EnqueueArgs),
}

impl Args {
    fn new(now: i64, mut tasks: Vec<NewTask>) -> BrokerResult<Self> {
        if tasks.len() == 1
            && tasks[0].unique.is_none()
            && let Some(t) = tasks.pop()
        {
            return OneArgs::new(now, t).map(Args::One);
        }
        EnqueueArgs::new(now, tasks).map(Args::Many)
    }

    fn stmt(&self) -> &'static Stmt {
        match self {
            Args::One(_) => &ENQUEUE_ONE,
            Args::Many(_) => &ENQUEUE,
        }
    }

    fn params(&self) -> Vec<Param<'_>> {
        match self {
            Args::One(a) => a.params(),
            Args::Many(a) => a.params(),
        }
    }

    /// One result per task from the rows the statement returned.
    fn results(&self, n: usize, rows: Vec<tokio_postgres::Row>) -> Vec<EnqueueResult> {
        match self {
            Args::One(_) => vec![rows.first().map_or(EnqueueResult::IdExists, |r| {
                outcome(r.get(0), r.get(1), r.get(2))
            })],
            Args::Many(_) => enqueue_results(n, rows),
        }
    }
}

/// One task's result from the outcome columns.
fn outcome(outcome: &str, existing: Option<uuid::Uuid>, max_depth: Option<i64>) -> EnqueueResult {
    match (outcome, existing) {
        ("enqueued", _) => EnqueueResult::Enqueued,
        ("duplicate", Some(existing)) => EnqueueResult::Duplicate {
            existing: TaskId(existing),
        },
        ("queue_full", _) => EnqueueResult::QueueFull {
            max_depth: max_depth.unwrap_or(0).max(0) as u64,
        },
        _ => EnqueueResult::IdExists,
    }
}

/// One result per task from the rows `sealq.enqueue` returned.
fn enqueue_results(n: usize, rows: Vec<tokio_postgres::Row>) -> Vec<EnqueueResult> {
    let mut out = vec![EnqueueResult::IdExists; n];
    for row in rows {
        let idx: i32 = row.get(0);
        let Some(slot) = usize::try_from(idx - 1).ok().and_then(|i| out.get_mut(i)) else {
            continue;
        };
        *slot = outcome(row.get(1), row.get(2), row.get(3));
    }
    out
}

/// Store a batch; one result per task, in order.
pub(crate) async fn enqueue(
    inner: &Inner,
    tasks: Vec<NewTask>,
) -> BrokerResult<Vec<EnqueueResult>> {
    let now = inner.now();
    let n = tasks.len();
    // The queues that get ready work (each named once), and each task's
    // among them: one local wake-up per queue, as the notification is one
    // per queue per transaction.
    let mut ready: Vec<String> = Vec::new();
    let slots: Vec<Option<usize>> = tasks
        .iter()
        .map(|t| {
            (t.run_at_ms <= now).then(|| {
                ready.iter().position(|q| *q == t.queue).unwrap_or_else(|| {
                    ready.push(t.queue.clone());
                    ready.len() - 1
                })
            })
        })
        .collect();
    let args = Args::new(now, tasks)?;
    let client = inner.client("enqueueing tasks").await?;
    let rows = Conn::Client(&client)
        .query(inner.unnamed(), args.stmt(), &args.params())
        .await
        .map_err(|e| map(&inner.target, "enqueueing tasks", e))?;
    let out = args.results(n, rows);
    let mut woken = vec![false; ready.len()];
    for (slot, r) in slots.iter().zip(&out) {
        if let Some(i) = *slot
            && *r == EnqueueResult::Enqueued
            && !woken[i]
        {
            woken[i] = true;
            inner.wake.local(&ready[i]);
        }
    }
    Ok(out)
}

/// Store a batch inside the caller's transaction (or on the caller's
/// connection): see [`crate::PostgresBroker::enqueue_in`].
pub(crate) async fn enqueue_in<C>(
    inner: &Inner,
    client: &C,
    tasks: Vec<NewTask>,
) -> BrokerResult<Vec<EnqueueResult>>
where
    C: tokio_postgres::GenericClient + Sync,
{
    let n = tasks.len();
    let args = Args::new(inner.now(), tasks)?;
    let stmt = args.stmt();
    let params = args.params();
    let typed: Vec<(Param<'_>, Type)> = params
        .iter()
        .zip(stmt.types)
        .map(|(p, t)| (*p, t.clone()))
        .collect();
    // Unnamed: the caller's connection may sit behind PgBouncer.
    let rows = client
        .query_typed(stmt.sql, &typed)
        .await
        .map_err(|e| map(&inner.target, "enqueueing tasks in a transaction", e))?;
    Ok(args.results(n, rows))
}

const DEQUEUE: Stmt = Stmt {
    sql: "SELECT * FROM sealq.dequeue($1, $2, $3, $4, $5, $6)",
    types: &[
        Type::TEXT_ARRAY,
        Type::INT4,
        Type::INT8,
        Type::INT8,
        Type::TEXT,
        Type::INT8,
    ],
};

const QUARANTINE: Stmt = Stmt {
    sql: "SELECT * FROM sealq.quarantine($1, $2)",
    types: &[Type::UUID_ARRAY, Type::INT8],
};

/// Archive the tasks of `bad` as `integrity` (see [`crate::codec`]).
pub(crate) async fn quarantine(
    inner: &Inner,
    conn: Conn<'_, '_>,
    bad: &[Malformed],
    op: &'static str,
) -> BrokerResult<()> {
    let ids: Vec<uuid::Uuid> = bad.iter().map(|m| m.id.0).collect();
    conn.query(inner.unnamed(), &QUARANTINE, &[&ids, &inner.now()])
        .await
        .map_err(|e| map(&inner.target, "quarantining damaged tasks", e))?;
    for m in bad {
        report_quarantined(m, op);
    }
    Ok(())
}

/// Lease up to `req.max` ready tasks, queue by queue.
pub(crate) async fn dequeue(inner: &Inner, req: &DequeueRequest) -> BrokerResult<Vec<LeasedTask>> {
    let lease_ms = i64::try_from(req.lease.as_millis()).unwrap_or(i64::MAX);
    let mut out: Vec<(i32, LeasedTask)> = Vec::new();
    let client = inner.client("dequeueing tasks").await?;
    // Wake-ups until now are for tasks this call can see.
    inner.wake.dequeuing(&req.queues);
    loop {
        let want = req.max - out.len();
        let now = inner.now();
        let token: i64 = rand::random();
        let max = i32::try_from(want).unwrap_or(i32::MAX);
        let rows = Conn::Client(&client)
            .query(
                inner.unnamed(),
                &DEQUEUE,
                &[&req.queues, &max, &now, &lease_ms, &req.worker, &token],
            )
            .await
            .map_err(|e| map(&inner.target, "dequeueing tasks", e))?;
        let got = rows.len();
        let mut bad = Vec::new();
        for row in rows {
            match record_from_row(&row) {
                Ok(record) => {
                    let replayed: bool = row.get(14);
                    let ord: i32 = row.get(15);
                    let expires = record.lease_expires_at_ms.unwrap_or(now + lease_ms);
                    out.push((
                        ord,
                        LeasedTask {
                            lease: Lease {
                                task_id: record.id,
                                token: token as u64,
                                expires_at_ms: expires,
                            },
                            record,
                            replayed,
                        },
                    ));
                }
                Err(m) => bad.push(m),
            }
        }
        if bad.is_empty() {
            break;
        }
        quarantine(inner, Conn::Client(&client), &bad, "dequeue").await?;
        // Damaged rows left the ready set: ask again for their places.
        if got < want {
            break;
        }
    }
    out.sort_by(|(a, x), (b, y)| {
        (a, x.record.run_at_ms, x.record.id).cmp(&(b, y.record.run_at_ms, y.record.id))
    });
    Ok(out.into_iter().map(|(_, t)| t).collect())
}

const ACK: Stmt = Stmt {
    sql: "SELECT idx, applied, repeated FROM sealq.ack($1, $2, $3, $4, $5, $6, $7)",
    types: &[
        Type::INT8,
        Type::UUID_ARRAY,
        Type::INT8_ARRAY,
        Type::TEXT_ARRAY,
        Type::INT8_ARRAY,
        Type::BYTEA_ARRAY,
        Type::TEXT_ARRAY,
    ],
};

/// Apply a batch of acks; one result per ack.
pub(crate) async fn ack(inner: &Inner, acks: &[Ack]) -> BrokerResult<Vec<AckResult>> {
    let now = inner.now();
    let n = acks.len();
    let mut ids = Vec::with_capacity(n);
    let mut tokens = Vec::with_capacity(n);
    let mut kinds = Vec::with_capacity(n);
    let mut at: Vec<Option<i64>> = Vec::with_capacity(n);
    let mut data: Vec<Option<&[u8]>> = Vec::with_capacity(n);
    let mut reasons: Vec<Option<&str>> = Vec::with_capacity(n);
    for a in acks {
        ids.push(a.lease.task_id.0);
        tokens.push(a.lease.token as i64);
        let (kind, when, bytes, reason) = match &a.outcome {
            Outcome::Complete { result } => ("complete", None, result.as_deref(), None),
            Outcome::Retry { at_ms, error } => ("retry", Some(*at_ms), error.as_deref(), None),
            Outcome::Archive { reason, error } => {
                ("archive", None, error.as_deref(), Some(reason.as_str()))
            }
            Outcome::Requeue => ("requeue", None, None, None),
        };
        kinds.push(kind);
        at.push(when);
        data.push(bytes);
        reasons.push(reason);
    }
    let client = inner.client("acknowledging tasks").await?;
    let rows = Conn::Client(&client)
        .query(
            inner.unnamed(),
            &ACK,
            &[&now, &ids, &tokens, &kinds, &at, &data, &reasons],
        )
        .await
        .map_err(|e| map(&inner.target, "acknowledging tasks", e))?;
    let mut out = vec![AckResult::LeaseLost; n];
    for row in rows {
        let idx: i32 = row.get(0);
        let Some(i) = usize::try_from(idx - 1).ok().filter(|i| *i < n) else {
            continue;
        };
        if row.get::<_, bool>(1) {
            out[i] = AckResult::Applied;
            if row.get::<_, bool>(2) {
                count_replayed_success(acks[i].lease.task_id);
            }
        }
    }
    Ok(out)
}

/// Count and log a second success of task `id` (finding 2 of the security
/// review): the ack applies, the operator is told.
fn count_replayed_success(id: TaskId) {
    metrics::counter!("sealq_replayed_successes_total", "backend" => "postgres").increment(1);
    tracing::warn!(
        task = %id,
        "sealq: a task whose id had already completed (or been deleted) succeeded again; \
         check for replayed or restored tasks (`sealq audit verify` lists repeated successes)"
    );
}

const EXTEND: Stmt = Stmt {
    sql: "SELECT r_id, r_token FROM sealq.extend_leases($1, $2, $3)",
    types: &[Type::UUID_ARRAY, Type::INT8_ARRAY, Type::INT8],
};

/// Extend held leases to now + `lease`; one flag per lease.
pub(crate) async fn extend(
    inner: &Inner,
    leases: &[Lease],
    lease: Duration,
) -> BrokerResult<Vec<bool>> {
    let expires = inner
        .now()
        .saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
    let ids: Vec<uuid::Uuid> = leases.iter().map(|l| l.task_id.0).collect();
    let tokens: Vec<i64> = leases.iter().map(|l| l.token as i64).collect();
    let client = inner.client("extending leases").await?;
    let rows = Conn::Client(&client)
        .query(inner.unnamed(), &EXTEND, &[&ids, &tokens, &expires])
        .await
        .map_err(|e| map(&inner.target, "extending leases", e))?;
    let held: std::collections::HashSet<(uuid::Uuid, i64)> = rows
        .iter()
        .map(|r| (r.get::<_, uuid::Uuid>(0), r.get::<_, i64>(1)))
        .collect();
    Ok(leases
        .iter()
        .map(|l| held.contains(&(l.task_id.0, l.token as i64)))
        .collect())
}
