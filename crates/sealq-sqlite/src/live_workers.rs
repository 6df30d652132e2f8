//! The registry of live workers (`Broker::register_worker`,
//! `Broker::list_workers`, `Broker::deregister_worker`): table
//! `live_workers` (migration 4), one row per worker run, with the time its
//! registration expires. Listing deletes the expired rows first, so the
//! table holds the live workers and the dead ones not yet listed.

use std::time::Duration;

use rusqlite::params;
use sealq::broker::BrokerResult;
use sealq::model::live_worker::LiveWorker;

use crate::error::map_err;
use crate::writer::OpCtx;

/// Insert or refresh one run's row: its last heartbeat is now, it expires
/// `ttl` later; the rest is what the worker sent.
pub(crate) fn register(ctx: &mut OpCtx<'_>, w: &LiveWorker, ttl: Duration) -> BrokerResult<()> {
    let err = |e| map_err(&ctx.env.path, "registering a live worker", e);
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let queues = serde_json::to_string(&w.queues).unwrap_or_else(|_| "[]".to_owned());
    ctx.conn
        .prepare_cached(
            "INSERT INTO live_workers (run_id, worker_id, host, pid, queues, concurrency, \
             started_at, last_heartbeat_at, expires_at, in_flight) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
             ON CONFLICT (run_id) DO UPDATE SET worker_id = excluded.worker_id, \
             host = excluded.host, pid = excluded.pid, queues = excluded.queues, \
             concurrency = excluded.concurrency, started_at = excluded.started_at, \
             last_heartbeat_at = excluded.last_heartbeat_at, \
             expires_at = excluded.expires_at, in_flight = excluded.in_flight",
        )
        .map_err(err)?
        .execute(params![
            w.run_id,
            w.id,
            w.host,
            w.pid,
            queues,
            w.concurrency,
            w.started_at_ms,
            ctx.now,
            ctx.now.saturating_add(ttl_ms),
            i64::try_from(w.in_flight).unwrap_or(i64::MAX),
        ])
        .map_err(err)?;
    Ok(())
}

/// Delete one run's row (a worker stopping); an unknown run is harmless.
pub(crate) fn deregister(ctx: &mut OpCtx<'_>, run_id: &str) -> BrokerResult<()> {
    ctx.conn
        .prepare_cached("DELETE FROM live_workers WHERE run_id = ?1")
        .and_then(|mut s| s.execute([run_id]))
        .map_err(|e| map_err(&ctx.env.path, "deregistering a live worker", e))?;
    Ok(())
}

/// Delete the expired rows, then every live one, oldest start first. A row
/// that does not decode (an edited file) is left out and logged.
pub(crate) fn list(ctx: &mut OpCtx<'_>) -> BrokerResult<Vec<LiveWorker>> {
    let err = |e| map_err(&ctx.env.path, "listing live workers", e);
    ctx.conn
        .prepare_cached("DELETE FROM live_workers WHERE expires_at <= ?1")
        .and_then(|mut s| s.execute([ctx.now]))
        .map_err(err)?;
    let mut stmt = ctx
        .conn
        .prepare_cached(
            "SELECT run_id, worker_id, host, pid, queues, concurrency, started_at, \
             last_heartbeat_at, in_flight FROM live_workers ORDER BY started_at, run_id",
        )
        .map_err(err)?;
    let mut rows = stmt.query([]).map_err(err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(err)? {
        let decoded = (|| {
            Some(LiveWorker {
                run_id: row.get(0).ok()?,
                id: row.get(1).ok()?,
                host: row.get(2).ok()?,
                pid: row.get(3).ok()?,
                queues: serde_json::from_str(&row.get::<_, String>(4).ok()?).ok()?,
                concurrency: row.get(5).ok()?,
                started_at_ms: row.get(6).ok()?,
                last_heartbeat_ms: row.get(7).ok()?,
                in_flight: u64::try_from(row.get::<_, i64>(8).ok()?).ok()?,
            })
        })();
        match decoded {
            Some(w) => out.push(w),
            None => tracing::warn!(
                "sealq: a live worker entry does not decode (an edited file); left out"
            ),
        }
    }
    Ok(out)
}
