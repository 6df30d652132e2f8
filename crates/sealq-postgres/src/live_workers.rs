//! The registry of live workers (`Broker::register_worker`,
//! `Broker::list_workers`, `Broker::deregister_worker`): table
//! `sealq.live_workers` (migration 3), one row per worker run with when its
//! registration expires, behind the definer functions `sealq.worker_*`.
//! Listing deletes the expired rows first.

use std::time::Duration;

use sealq::broker::BrokerResult;
use sealq::model::live_worker::LiveWorker;
use tokio_postgres::types::Type;

use crate::Inner;
use crate::db::{Conn, Stmt};
use crate::error::map;

const REGISTER: Stmt = Stmt {
    sql: "SELECT sealq.worker_register($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    types: &[
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::TEXT_ARRAY,
        Type::INT8,
        Type::INT8,
        Type::INT8,
        Type::INT8,
        Type::INT8,
    ],
};

const DEREGISTER: Stmt = Stmt {
    sql: "SELECT sealq.worker_deregister($1)",
    types: &[Type::TEXT],
};

const LIST: Stmt = Stmt {
    sql: "SELECT r_run_id, r_worker_id, r_host, r_pid, r_queues, r_concurrency, r_started_at, \
          r_last_heartbeat_at, r_in_flight FROM sealq.worker_list($1)",
    types: &[Type::INT8],
};

/// Insert or refresh one run's row: its last heartbeat is the broker's now,
/// it expires `ttl` later; the rest is what the worker sent.
pub(crate) async fn register(inner: &Inner, w: &LiveWorker, ttl: Duration) -> BrokerResult<()> {
    let what = "registering a live worker";
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let client = inner.client(what).await?;
    Conn::Client(&client)
        .query(
            inner.unnamed(),
            &REGISTER,
            &[
                &w.run_id,
                &w.id,
                &w.host,
                &i64::from(w.pid),
                &w.queues,
                &i64::from(w.concurrency),
                &w.started_at_ms,
                &i64::try_from(w.in_flight).unwrap_or(i64::MAX),
                &inner.now(),
                &ttl_ms,
            ],
        )
        .await
        .map_err(|e| map(&inner.target, what, e))?;
    Ok(())
}

/// Delete one run's row (a worker stopping); an unknown run is harmless.
pub(crate) async fn deregister(inner: &Inner, run_id: &str) -> BrokerResult<()> {
    let what = "deregistering a live worker";
    let client = inner.client(what).await?;
    Conn::Client(&client)
        .query(inner.unnamed(), &DEREGISTER, &[&run_id])
        .await
        .map_err(|e| map(&inner.target, what, e))?;
    Ok(())
}

/// Delete the expired rows, then list every live one, oldest start first.
/// A row that does not decode (an edited row) is left out and logged.
pub(crate) async fn list(inner: &Inner) -> BrokerResult<Vec<LiveWorker>> {
    let what = "listing live workers";
    let client = inner.client(what).await?;
    let rows = Conn::Client(&client)
        .query(inner.unnamed(), &LIST, &[&inner.now()])
        .await
        .map_err(|e| map(&inner.target, what, e))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let decoded = (|| {
            Some(LiveWorker {
                run_id: row.try_get(0).ok()?,
                id: row.try_get(1).ok()?,
                host: row.try_get(2).ok()?,
                pid: u32::try_from(row.try_get::<_, i64>(3).ok()?).ok()?,
                queues: row.try_get(4).ok()?,
                concurrency: u32::try_from(row.try_get::<_, i64>(5).ok()?).ok()?,
                started_at_ms: row.try_get(6).ok()?,
                last_heartbeat_ms: row.try_get(7).ok()?,
                in_flight: u64::try_from(row.try_get::<_, i64>(8).ok()?).ok()?,
            })
        })();
        match decoded {
            Some(w) => out.push(w),
            None => tracing::warn!(
                "sealq: a live worker entry does not decode (an edited row); left out"
            ),
        }
    }
    Ok(out)
}
