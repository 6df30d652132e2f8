//! The mutating operations but enqueue (see [`crate::enqueue`]), each run
//! by the writer thread inside a group transaction (see [`crate::writer`]).
//! Every statement is prepared once and cached; a batch costs one statement
//! execution per item, never a transaction per item.

use std::sync::LazyLock;

use rusqlite::{OptionalExtension, params};
use sealq::broker::{
    Ack, AckResult, BrokerResult, DequeueRequest, Forwarded, Lease, LeasedTask, Outcome, Recovered,
    SealedPart, SealedSwap,
};
use sealq::{BrokerError, TaskId};

use crate::codec::{AFTER_RECORD, RECORD_RETURNING, id_blob, token_to_sql};
use crate::error::map_err;
use crate::quarantine::{decode_row, quarantine, quarantine_where};
use crate::schema::READY_CONDITION;
use crate::writer::{OpCtx, WriterEnv};

/// Error mapper for statements run while doing `what`.
fn fail<'a>(
    env: &'a WriterEnv,
    what: &'static str,
) -> impl Fn(rusqlite::Error) -> BrokerError + 'a {
    move |e| map_err(&env.path, what, e)
}

/// Dequeue's query for the ready tasks of one queue, oldest first: through
/// the `tasks_ready` index, whose condition it repeats.
pub(crate) static READY_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT seq FROM tasks WHERE queue = ?1 AND {READY_CONDITION} AND run_at <= ?2 \
         ORDER BY run_at, id LIMIT ?3"
    )
});

/// Lease up to `req.max` ready tasks, queue by queue.
pub(crate) fn dequeue(ctx: &mut OpCtx<'_>, req: &DequeueRequest) -> BrokerResult<Vec<LeasedTask>> {
    let (conn, now, env) = (ctx.conn, ctx.now, ctx.env);
    let err = fail(env, "dequeueing tasks");
    let mut out = Vec::with_capacity(req.max.min(1024));
    if req.max == 0 {
        return Ok(out);
    }
    let lease_ms = i64::try_from(req.lease.as_millis()).unwrap_or(i64::MAX);
    let expires = now.saturating_add(lease_ms);
    let mut paused = conn
        .prepare_cached("SELECT 1 FROM paused_queues WHERE queue = ?1")
        .map_err(&err)?;
    let mut ready = conn.prepare_cached(&READY_SQL).map_err(&err)?;
    let mut lease = conn
        .prepare_cached(&format!(
            "UPDATE tasks SET state = 'active', attempts = attempts + 1, lease_token = ?2, \
                              lease_expires_at = ?3, worker = ?4, updated_at = ?5 \
             WHERE seq = ?1 \
             RETURNING {RECORD_RETURNING}, \
                       EXISTS (SELECT 1 FROM completed_ids c WHERE c.id = tasks.id)"
        ))
        .map_err(&err)?;
    let mut rate = conn
        .prepare_cached(
            "SELECT rate_limit, period_ms, tokens, updated_at FROM queue_rates WHERE queue = ?1",
        )
        .map_err(&err)?;
    let mut spend = conn
        .prepare_cached("UPDATE queue_rates SET tokens = ?2, updated_at = ?3 WHERE queue = ?1")
        .map_err(&err)?;
    let mut seqs: Vec<i64> = Vec::new();
    for queue in &req.queues {
        let mut want = req.max - out.len();
        if want == 0 {
            break;
        }
        if paused.exists([queue]).map_err(&err)? {
            continue;
        }
        // A rate limit: take no more than the bucket's whole tokens.
        let bucket = rate
            .query_row([queue], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, f64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .optional()
            .map_err(&err)?
            .map(|(limit, period, tokens, at)| {
                let rl = crate::codec::rate_limit_from_sql(limit, period);
                (rl.refill(tokens, at, now), at.max(now))
            });
        if let Some((tokens, _)) = bucket {
            want = want.min(tokens.max(0.0).floor() as usize);
        }
        if want == 0 {
            continue;
        }
        // Lease ready tasks until `want` decoded; a row that does not decode
        // is quarantined and another taken in its place (it must not stop
        // the call, nor leave the worker idle while good tasks wait).
        let mut leased = 0usize;
        loop {
            let asked = want - leased;
            seqs.clear();
            let rows = ready
                .query_map(params![queue, now, asked as i64], |r| r.get::<_, i64>(0))
                .map_err(&err)?;
            for seq in rows {
                seqs.push(seq.map_err(&err)?);
            }
            let mut bad = 0usize;
            for seq in &seqs {
                let token: u64 = rand::random();
                let row = lease
                    .query_row(
                        params![seq, token_to_sql(token), expires, req.worker, now],
                        |r| {
                            Ok(match decode_row(r)? {
                                Ok(record) => Ok((record, r.get::<_, bool>(AFTER_RECORD)?)),
                                Err(m) => Err(m),
                            })
                        },
                    )
                    .map_err(&err)?;
                let (record, replayed) = match row {
                    Ok(leased) => leased,
                    Err(m) => {
                        quarantine(conn, now, &m, "dequeue").map_err(&err)?;
                        bad += 1;
                        continue;
                    }
                };
                leased += 1;
                out.push(LeasedTask {
                    lease: Lease {
                        task_id: record.id,
                        token,
                        expires_at_ms: expires,
                    },
                    record,
                    replayed,
                });
            }
            // Quarantined rows left the ready set: ask again for their places.
            if bad == 0 || seqs.len() < asked {
                break;
            }
        }
        if let Some((tokens, at)) = bucket {
            spend
                .execute(params![queue, tokens - leased as f64, at])
                .map_err(&err)?;
        }
    }
    Ok(out)
}

/// Set (`Some`) or remove (`None`) a queue's rate limit; a new limit starts
/// with a full bucket.
pub(crate) fn set_rate_limit(
    ctx: &mut OpCtx<'_>,
    queue: &str,
    limit: Option<sealq::broker::RateLimit>,
) -> BrokerResult<()> {
    let (conn, now) = (ctx.conn, ctx.now);
    let err = fail(ctx.env, "setting a queue's rate limit");
    match limit {
        Some(rl) => {
            let n = i64::try_from(rl.limit).unwrap_or(i64::MAX);
            conn.prepare_cached(
                "INSERT INTO queue_rates (queue, rate_limit, period_ms, tokens, updated_at) \
                 VALUES (?1, ?2, ?3, ?2, ?4) \
                 ON CONFLICT (queue) DO UPDATE SET rate_limit = excluded.rate_limit, \
                     period_ms = excluded.period_ms, tokens = excluded.tokens, \
                     updated_at = excluded.updated_at",
            )
            .map_err(&err)?
            .execute(params![
                queue,
                n,
                i64::try_from(rl.period_ms).unwrap_or(i64::MAX),
                now
            ])
            .map_err(&err)?;
        }
        None => {
            let n = conn
                .prepare_cached("DELETE FROM queue_rates WHERE queue = ?1")
                .map_err(&err)?
                .execute([queue])
                .map_err(&err)?;
            // Tasks held back by the limit may run now.
            ctx.wake |= n > 0;
        }
    }
    Ok(())
}

/// Apply a batch of acks; one result per ack.
pub(crate) fn ack(ctx: &mut OpCtx<'_>, acks: &[Ack]) -> BrokerResult<Vec<AckResult>> {
    let (conn, now, env) = (ctx.conn, ctx.now, ctx.env);
    let err = fail(env, "acknowledging tasks");
    let held = "WHERE id = ?1 AND state = 'active' AND lease_token = ?2";
    let release = "lease_token = NULL, lease_expires_at = NULL, worker = NULL";
    let mut complete = conn
        .prepare_cached(&format!(
            "UPDATE tasks SET state = 'completed', result = ?3, {release}, finished_at = ?4, \
                              purge_at = ?4 + retention_ms, updated_at = ?4 {held}"
        ))
        .map_err(&err)?;
    // The replay memory takes the id at completion (finding 2 of the
    // security review). An id already there completed (or was deleted)
    // before: this is a second success of one task, counted below. The
    // common case is one insert; the refresh runs only for a repeat.
    let mut remember = conn
        .prepare_cached(
            "INSERT INTO completed_ids (id, completed_at) VALUES (?1, ?2) \
             ON CONFLICT (id) DO NOTHING",
        )
        .map_err(&err)?;
    let mut refresh = conn
        .prepare_cached(
            "UPDATE completed_ids SET completed_at = max(completed_at, ?2) WHERE id = ?1",
        )
        .map_err(&err)?;
    let mut retry = conn
        .prepare_cached(&format!(
            "UPDATE tasks SET state = 'retry', run_at = ?3, last_error = coalesce(?4, last_error), \
                              {release}, updated_at = ?5 {held}"
        ))
        .map_err(&err)?;
    let mut archive = conn
        .prepare_cached(&format!(
            "UPDATE tasks SET state = 'archived', archive_reason = ?3, \
                              last_error = coalesce(?4, last_error), {release}, \
                              finished_at = ?5, updated_at = ?5 {held}"
        ))
        .map_err(&err)?;
    let mut requeue = conn
        .prepare_cached(&format!(
            "UPDATE tasks SET state = 'pending', attempts = max(attempts - 1, 0), {release}, \
                              updated_at = ?3 {held}"
        ))
        .map_err(&err)?;

    let mut results = Vec::with_capacity(acks.len());
    let mut ready = false;
    for a in acks {
        let id = id_blob(&a.lease.task_id);
        let token = token_to_sql(a.lease.token);
        let changed = match &a.outcome {
            Outcome::Complete { result } => {
                let n = complete
                    .execute(params![id, token, result, now])
                    .map_err(&err)?;
                if n > 0 && remember.execute(params![id, now]).map_err(&err)? == 0 {
                    refresh.execute(params![id, now]).map_err(&err)?;
                    crate::replay::count_replayed_success(a.lease.task_id);
                }
                n
            }
            Outcome::Retry { at_ms, error } => {
                let n = retry
                    .execute(params![id, token, at_ms, error, now])
                    .map_err(&err)?;
                ready |= n > 0 && *at_ms <= now;
                n
            }
            Outcome::Archive { reason, error } => archive
                .execute(params![id, token, reason.as_str(), error, now])
                .map_err(&err)?,
            Outcome::Requeue => {
                let n = requeue.execute(params![id, token, now]).map_err(&err)?;
                ready |= n > 0;
                n
            }
        };
        results.push(if changed > 0 {
            AckResult::Applied
        } else {
            AckResult::LeaseLost
        });
    }
    ctx.wake |= ready;
    Ok(results)
}

/// Extend held leases to `now + lease_ms`.
pub(crate) fn extend(
    ctx: &mut OpCtx<'_>,
    leases: &[Lease],
    lease_ms: i64,
) -> BrokerResult<Vec<bool>> {
    let (conn, now, env) = (ctx.conn, ctx.now, ctx.env);
    let err = fail(env, "extending leases");
    let mut stmt = conn
        .prepare_cached(
            "UPDATE tasks SET lease_expires_at = ?3 \
             WHERE id = ?1 AND state = 'active' AND lease_token = ?2",
        )
        .map_err(&err)?;
    let expires = now.saturating_add(lease_ms);
    leases
        .iter()
        .map(|l| {
            stmt.execute(params![id_blob(&l.task_id), token_to_sql(l.token), expires])
                .map(|n| n > 0)
                .map_err(&err)
        })
        .collect()
}

/// Move due scheduled/retry tasks to pending; report the next due time.
pub(crate) fn forward_due(ctx: &mut OpCtx<'_>) -> BrokerResult<Forwarded> {
    let (conn, now, env) = (ctx.conn, ctx.now, ctx.env);
    let err = fail(env, "forwarding due tasks");
    let moved = conn
        .prepare_cached(
            "UPDATE tasks SET state = 'pending', updated_at = ?1 \
             WHERE state IN ('scheduled', 'retry') AND run_at <= ?1",
        )
        .map_err(&err)?
        .execute([now])
        .map_err(&err)?;
    let mut next_due = conn
        .prepare_cached(
            "SELECT min(run_at), typeof(min(run_at)) FROM tasks \
             WHERE state IN ('scheduled', 'retry')",
        )
        .map_err(&err)?;
    let due = |stmt: &mut rusqlite::CachedStatement<'_>| {
        stmt.query_row([], |r| {
            Ok(match r.get::<_, String>(1)?.as_str() {
                "integer" => Some(Some(r.get::<_, i64>(0)?)),
                "null" => Some(None),
                _ => None,
            })
        })
    };
    let next_due_ms = match due(&mut next_due).map_err(&err)? {
        Some(next) => next,
        None => {
            // A run-at that is not an integer (an edited row) would be the
            // minimum forever: quarantine those tasks, then read again.
            quarantine_where(
                conn,
                now,
                "state IN ('scheduled', 'retry') AND typeof(run_at) != 'integer'",
                "run_at is not an integer",
                "forward_due",
            )
            .map_err(&err)?;
            due(&mut next_due).map_err(&err)?.flatten()
        }
    };
    ctx.wake |= moved > 0;
    Ok(Forwarded {
        moved: moved as u64,
        next_due_ms,
    })
}

/// Return expired leases: retry while attempts remain, else archive as exhausted.
pub(crate) fn recover_expired(ctx: &mut OpCtx<'_>) -> BrokerResult<Recovered> {
    let (conn, now, env) = (ctx.conn, ctx.now, ctx.env);
    let err = fail(env, "recovering expired leases");
    let release = "lease_token = NULL, lease_expires_at = NULL, worker = NULL";
    // A leased task whose expiry is not a number (an edited row: text and
    // blobs sort after every number, NULL matches nothing) would stay
    // active forever: quarantine it. The index on active leases finds only
    // such rows (two index seeks, not a scan), so this costs nothing when
    // there are none.
    quarantine_where(
        conn,
        now,
        "seq IN (SELECT seq FROM tasks WHERE state = 'active' AND lease_expires_at IS NULL \
                 UNION ALL \
                 SELECT seq FROM tasks WHERE state = 'active' AND lease_expires_at >= '')",
        "lease_expires_at is not a number",
        "recover_expired",
    )
    .map_err(&err)?;
    let archived = conn
        .prepare_cached(&format!(
            "UPDATE tasks SET state = 'archived', archive_reason = 'exhausted', {release}, \
                              finished_at = ?1, updated_at = ?1 \
             WHERE state = 'active' AND lease_expires_at <= ?1 AND attempts > max_retries"
        ))
        .map_err(&err)?
        .execute([now])
        .map_err(&err)?;
    let retried = conn
        .prepare_cached(&format!(
            "UPDATE tasks SET state = 'retry', run_at = ?1, {release}, updated_at = ?1 \
             WHERE state = 'active' AND lease_expires_at <= ?1"
        ))
        .map_err(&err)?
        .execute([now])
        .map_err(&err)?;
    ctx.wake |= retried > 0;
    Ok(Recovered {
        retried: retried as u64,
        archived: archived as u64,
    })
}

/// Delete completed tasks past retention; prune replay memory and stale unique keys.
pub(crate) fn purge_completed(ctx: &mut OpCtx<'_>) -> BrokerResult<u64> {
    let (conn, now, env) = (ctx.conn, ctx.now, ctx.env);
    let err = fail(env, "purging completed tasks");
    let purged = conn
        .prepare_cached("DELETE FROM tasks WHERE purge_at <= ?1 AND state = 'completed'")
        .map_err(&err)?
        .execute([now])
        .map_err(&err)?;
    // Past the horizon, and only once the task's row is gone: while a
    // completed task is retained its id stays remembered, whatever the
    // horizon, so flipping its state back cannot make it run.
    conn.prepare_cached(
        "DELETE FROM completed_ids WHERE completed_at < ?1 \
         AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = completed_ids.id)",
    )
    .map_err(&err)?
    .execute([now.saturating_sub(env.replay_horizon_ms)])
    .map_err(&err)?;
    conn.prepare_cached("DELETE FROM unique_keys WHERE expires_at <= ?1")
        .map_err(&err)?
        .execute([now])
        .map_err(&err)?;
    Ok(purged as u64)
}

/// Remember a deleted id in the replay memory from `now` (an id that
/// completed before keeps the later of the two times).
const REMEMBER_DELETED: &str = "INSERT INTO completed_ids (id, completed_at) VALUES (?1, ?2) \
     ON CONFLICT (id) DO UPDATE SET completed_at = max(completed_at, excluded.completed_at)";

/// Delete tasks in any state; how many existed. Every deleted id joins the
/// replay memory for the horizon (finding 2 of the security review): an
/// operator-deleted task must not run if its row is put back (from a
/// backup, by an edit), and its id is refused at enqueue meanwhile.
pub(crate) fn delete(ctx: &mut OpCtx<'_>, ids: &[TaskId]) -> BrokerResult<u64> {
    let (conn, now) = (ctx.conn, ctx.now);
    let err = fail(ctx.env, "deleting tasks");
    let mut stmt = conn
        .prepare_cached("DELETE FROM tasks WHERE id = ?1")
        .map_err(&err)?;
    let mut remember = conn.prepare_cached(REMEMBER_DELETED).map_err(&err)?;
    let mut n = 0u64;
    for id in ids {
        let blob = id_blob(id);
        let gone = stmt.execute([blob]).map_err(&err)?;
        if gone > 0 {
            remember.execute(params![blob, now]).map_err(&err)?;
        }
        n += gone as u64;
    }
    Ok(n)
}

/// Compare-and-swap of sealed bytes (re-sealing): each swap is one
/// `UPDATE … WHERE` the part still holds the expected bytes, in the writer's
/// transaction for the whole batch. Only that column changes.
pub(crate) fn swap_sealed(ctx: &mut OpCtx<'_>, swaps: &[SealedSwap]) -> BrokerResult<Vec<bool>> {
    let err = fail(ctx.env, "re-sealing tasks");
    let mut out = Vec::with_capacity(swaps.len());
    for s in swaps {
        let sql = match s.part {
            SealedPart::Payload => {
                "UPDATE task_bodies SET envelope = ?3 \
                 WHERE seq = (SELECT seq FROM tasks WHERE id = ?1 AND queue = ?2) AND envelope = ?4"
            }
            SealedPart::Result => {
                "UPDATE tasks SET result = ?3 WHERE id = ?1 AND queue = ?2 AND result = ?4"
            }
            SealedPart::Error => {
                "UPDATE tasks SET last_error = ?3 WHERE id = ?1 AND queue = ?2 AND last_error = ?4"
            }
        };
        let n = ctx
            .conn
            .prepare_cached(sql)
            .map_err(&err)?
            .execute(params![
                id_blob(&s.task_id),
                s.queue,
                s.replacement,
                s.expected
            ])
            .map_err(&err)?;
        out.push(n == 1);
    }
    Ok(out)
}

/// Archived tasks back to pending with attempts reset.
pub(crate) fn rerun(ctx: &mut OpCtx<'_>, ids: &[TaskId]) -> BrokerResult<u64> {
    let (conn, now, env) = (ctx.conn, ctx.now, ctx.env);
    let err = fail(env, "re-running tasks");
    let mut stmt = conn
        .prepare_cached(
            "UPDATE tasks SET state = 'pending', attempts = 0, run_at = ?2, archive_reason = NULL, \
                              finished_at = NULL, updated_at = ?2 \
             WHERE id = ?1 AND state = 'archived'",
        )
        .map_err(&err)?;
    let mut n = 0u64;
    for id in ids {
        n += stmt.execute(params![id_blob(id), now]).map_err(&err)? as u64;
    }
    ctx.wake |= n > 0;
    Ok(n)
}

/// Set (`Some`) or remove (`None`) a queue's cap on waiting tasks.
pub(crate) fn set_max_depth(
    ctx: &mut OpCtx<'_>,
    queue: &str,
    max_depth: Option<u64>,
) -> BrokerResult<()> {
    let err = fail(ctx.env, "setting a queue's maximum depth");
    match max_depth {
        Some(n) => {
            ctx.conn
                .prepare_cached(
                    "INSERT INTO queue_limits (queue, max_depth) VALUES (?1, ?2) \
                     ON CONFLICT (queue) DO UPDATE SET max_depth = excluded.max_depth",
                )
                .map_err(&err)?
                .execute(params![queue, i64::try_from(n).unwrap_or(i64::MAX)])
                .map_err(&err)?;
        }
        None => {
            ctx.conn
                .prepare_cached("DELETE FROM queue_limits WHERE queue = ?1")
                .map_err(&err)?
                .execute([queue])
                .map_err(&err)?;
        }
    }
    Ok(())
}

/// Pause (`true`) or resume (`false`) a queue.
pub(crate) fn set_paused(ctx: &mut OpCtx<'_>, queue: &str, paused: bool) -> BrokerResult<()> {
    let (conn, now, env) = (ctx.conn, ctx.now, ctx.env);
    let err = fail(
        env,
        if paused {
            "pausing a queue"
        } else {
            "resuming a queue"
        },
    );
    if paused {
        conn.prepare_cached(
            "INSERT INTO paused_queues (queue, paused_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        )
        .map_err(&err)?
        .execute(params![queue, now])
        .map_err(&err)?;
    } else {
        let n = conn
            .prepare_cached("DELETE FROM paused_queues WHERE queue = ?1")
            .map_err(&err)?
            .execute([queue])
            .map_err(&err)?;
        ctx.wake |= n > 0;
    }
    Ok(())
}

/// Erase every task of a subject: delete all but active ones (with their
/// bodies, results and unique keys); archive active ones as `erased` with
/// the envelope wiped and the lease revoked.
pub(crate) fn erase_subject(
    ctx: &mut OpCtx<'_>,
    tag: &sealq::SubjectTag,
) -> BrokerResult<sealq::subject_keys::ErasureCounts> {
    let (conn, now, env) = (ctx.conn, ctx.now, ctx.env);
    let err = fail(env, "erasing a subject");
    let tag = &tag.0[..];
    let mut counts = sealq::subject_keys::ErasureCounts::default();
    {
        let mut stmt = conn
            .prepare_cached(
                "SELECT state, count(*) FROM tasks WHERE subject_tag = ?1 GROUP BY state",
            )
            .map_err(&err)?;
        // The state read as raw bytes: a state that is not text (an edited
        // row) is counted as archived and deleted like one.
        let rows = stmt
            .query_map([tag], |r| {
                let state = match r.get_ref(0)? {
                    rusqlite::types::ValueRef::Text(t) => t.to_vec(),
                    _ => Vec::new(),
                };
                Ok((state, r.get::<_, i64>(1)?))
            })
            .map_err(&err)?;
        for row in rows {
            let (state, n) = row.map_err(&err)?;
            let n = n.max(0) as u64;
            match state.as_slice() {
                b"scheduled" => counts.scheduled += n,
                b"pending" => counts.pending += n,
                b"active" => counts.active += n,
                b"retry" => counts.retry += n,
                b"completed" => counts.completed += n,
                _ => counts.archived += n,
            }
        }
    }
    if counts.total() == 0 {
        return Ok(counts);
    }
    conn.prepare_cached(
        "DELETE FROM unique_keys WHERE task_id IN (SELECT id FROM tasks WHERE subject_tag = ?1)",
    )
    .map_err(&err)?
    .execute([tag])
    .map_err(&err)?;
    // Erased ids are remembered like deleted ones (see `delete`).
    conn.prepare_cached(
        "INSERT INTO completed_ids (id, completed_at) \
         SELECT id, ?2 FROM tasks WHERE subject_tag = ?1 AND state != 'active' \
         ON CONFLICT (id) DO UPDATE SET completed_at = max(completed_at, excluded.completed_at)",
    )
    .map_err(&err)?
    .execute(params![tag, now])
    .map_err(&err)?;
    conn.prepare_cached("DELETE FROM tasks WHERE subject_tag = ?1 AND state != 'active'")
        .map_err(&err)?
        .execute([tag])
        .map_err(&err)?;
    conn.prepare_cached(
        "UPDATE task_bodies SET envelope = X'' \
         WHERE seq IN (SELECT seq FROM tasks WHERE subject_tag = ?1 AND state = 'active')",
    )
    .map_err(&err)?
    .execute([tag])
    .map_err(&err)?;
    conn.prepare_cached(
        "UPDATE tasks SET state = 'archived', archive_reason = 'erased', result = NULL, \
                          last_error = NULL, lease_token = NULL, lease_expires_at = NULL, \
                          worker = NULL, finished_at = ?2, updated_at = ?2 \
         WHERE subject_tag = ?1 AND state = 'active'",
    )
    .map_err(&err)?
    .execute(params![tag, now])
    .map_err(&err)?;
    Ok(counts)
}
