//! Reads: `get`, `list`, `stats`, rate limits and key check values.
//! Readers never write: a row that does not decode is left out of a list
//! (and logged), and named in a `Corrupt` error by `get`.

use std::collections::BTreeMap;

use sealq::broker::{BrokerResult, ListQuery, QueueStats, RateLimit, TaskRecord};
use sealq::model::key_check::KeyCheck;
use sealq::{TaskId, TaskState};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

use crate::Inner;
use crate::codec::{rate_limit_from_sql, record_from_row, report_skipped};
use crate::db::{Conn, Stmt};
use crate::error::map;

/// One task by id.
pub(crate) async fn get(inner: &Inner, id: TaskId) -> BrokerResult<Option<TaskRecord>> {
    const GET: Stmt = Stmt {
        sql: "SELECT * FROM sealq.get_task($1)",
        types: &[Type::UUID],
    };
    let what = "reading a task";
    let client = inner.client(what).await?;
    let rows = Conn::Client(&client)
        .query(inner.unnamed(), &GET, &[&id.0])
        .await
        .map_err(|e| map(&inner.target, what, e))?;
    match rows.first() {
        None => Ok(None),
        Some(row) => record_from_row(row)
            .map(Some)
            .map_err(|m| m.into_error(&inner.target)),
    }
}

const LIST: Stmt = Stmt {
    sql: "SELECT * FROM sealq.list_tasks($1, $2, $3, $4, $5)",
    types: &[Type::TEXT, Type::TEXT, Type::BYTEA, Type::UUID, Type::INT8],
};
/// [`LIST`] for the waiting states only: a worker may call it (it samples
/// waiting tasks at start to check its keyring), an operator too.
const LIST_WAITING: Stmt = Stmt {
    sql: "SELECT * FROM sealq.list_waiting($1, $2, $3, $4, $5)",
    types: &[Type::TEXT, Type::TEXT, Type::BYTEA, Type::UUID, Type::INT8],
};

/// Tasks matching `q`, by id; rows that do not decode are skipped and the
/// page filled from the rows after them.
pub(crate) async fn list(inner: &Inner, q: &ListQuery) -> BrokerResult<Vec<TaskRecord>> {
    let what = "listing tasks";
    let limit = if q.limit == 0 { 100 } else { q.limit };
    let state = q.state.map(|s| s.as_str().to_owned());
    let subject = q.subject.map(|s| s.0.to_vec());
    let stmt = match q.state {
        Some(TaskState::Pending | TaskState::Scheduled | TaskState::Retry) => &LIST_WAITING,
        _ => &LIST,
    };
    let client = inner.client(what).await?;
    let mut after = q.after.map(|a| a.0);
    let mut out = Vec::new();
    loop {
        let want = (limit - out.len()) as i64;
        let rows = Conn::Client(&client)
            .query(
                inner.unnamed(),
                stmt,
                &[&q.queue, &state, &subject, &after, &want],
            )
            .await
            .map_err(|e| map(&inner.target, what, e))?;
        let read = rows.len() as i64;
        let mut bad = 0;
        for row in &rows {
            match record_from_row(row) {
                Ok(r) => out.push(r),
                Err(m) => {
                    report_skipped(&m, "list");
                    bad += 1;
                }
            }
            after = Some(row.get::<_, uuid::Uuid>(0));
        }
        if bad == 0 || read < want {
            break;
        }
    }
    Ok(out)
}

/// Up to `limit` waiting tasks of `queue`, the first in claim order
/// (`sealq.sample_waiting`, migration 10): the keyring check's sample,
/// read from `tasks_ready` in its own order whatever the backlog. `None`
/// when this login may not call the function (roles set up before
/// migration 10 and not applied again since): the caller falls back to the
/// by-id lists. Rows that do not decode are left out (and logged).
pub(crate) async fn sample_waiting(
    inner: &Inner,
    queue: &str,
    limit: usize,
) -> BrokerResult<Option<Vec<TaskRecord>>> {
    const SAMPLE: Stmt = Stmt {
        sql: "SELECT * FROM sealq.sample_waiting($1, $2)",
        types: &[Type::TEXT, Type::INT8],
    };
    let what = "sampling waiting tasks";
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let client = inner.client(what).await?;
    let rows = match Conn::Client(&client)
        .query(inner.unnamed(), &SAMPLE, &[&queue, &limit])
        .await
    {
        Ok(rows) => rows,
        Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => return Ok(None),
        Err(e) => return Err(map(&inner.target, what, e)),
    };
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        match record_from_row(row) {
            Ok(r) => out.push(r),
            Err(m) => report_skipped(&m, "sample"),
        }
    }
    Ok(Some(out))
}

/// Counts by queue and state (`sealq.task_counts`, exact: reads every
/// task), plus paused, capped and rate-limited queues.
pub(crate) async fn stats(inner: &Inner) -> BrokerResult<Vec<QueueStats>> {
    const COUNTS: Stmt = Stmt {
        sql: "SELECT r_queue, r_state, r_count FROM sealq.task_counts()",
        types: &[],
    };
    let what = "reading queue stats";
    let client = inner.client(what).await?;
    let rows = Conn::Client(&client)
        .query(inner.unnamed(), &COUNTS, &[])
        .await
        .map_err(|e| map(&inner.target, what, e))?;
    with_settings(inner, &client, counts(&rows)).await
}

/// [`stats`] for the worker's gauges (`sealq.queue_depths`, migration 11):
/// the live and archived states counted through the partial indexes that
/// hold them, completed tasks exact up to 10,000 and estimated above (from
/// the table's statistics), so the call never reads every retained task.
/// `None` when this login may not call the function (roles set up before
/// migration 11 and not applied again since): the caller falls back to
/// [`stats`].
pub(crate) async fn queue_depths(inner: &Inner) -> BrokerResult<Option<Vec<QueueStats>>> {
    const DEPTHS: Stmt = Stmt {
        sql: "SELECT r_queue, r_state, r_count FROM sealq.queue_depths()",
        types: &[],
    };
    let what = "reading queue depths";
    let client = inner.client(what).await?;
    let rows = match Conn::Client(&client)
        .query(inner.unnamed(), &DEPTHS, &[])
        .await
    {
        Ok(rows) => rows,
        Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => return Ok(None),
        Err(e) => return Err(map(&inner.target, what, e)),
    };
    with_settings(inner, &client, counts(&rows)).await.map(Some)
}

/// Rows of (queue, state, count) folded by queue; unknown states left out.
fn counts(rows: &[tokio_postgres::Row]) -> BTreeMap<String, QueueStats> {
    let mut by_queue: BTreeMap<String, QueueStats> = BTreeMap::new();
    for row in rows {
        let queue: String = row.get(0);
        let state: String = row.get(1);
        let n = row.get::<_, i64>(2).max(0) as u64;
        let Ok(state) = state.parse::<TaskState>() else {
            continue;
        };
        let s = by_queue.entry(queue.clone()).or_insert_with(|| QueueStats {
            queue,
            ..QueueStats::default()
        });
        match state {
            TaskState::Scheduled => s.scheduled += n,
            TaskState::Pending => s.pending += n,
            TaskState::Active => s.active += n,
            TaskState::Retry => s.retry += n,
            TaskState::Completed => s.completed += n,
            TaskState::Archived => s.archived += n,
        }
    }
    by_queue
}

/// `by_queue` with every queue's settings (paused, depth cap, rate limit)
/// added, queues with settings and no task included.
async fn with_settings(
    inner: &Inner,
    client: &deadpool_postgres::ClientWrapper,
    mut by_queue: BTreeMap<String, QueueStats>,
) -> BrokerResult<Vec<QueueStats>> {
    const SETTINGS: Stmt = Stmt {
        sql: "SELECT r_queue, r_paused, r_max_depth, r_rate_limit, r_period_ms FROM sealq.queue_settings()",
        types: &[],
    };
    let what = "reading queue settings";
    for row in Conn::Client(client)
        .query(inner.unnamed(), &SETTINGS, &[])
        .await
        .map_err(|e| map(&inner.target, what, e))?
    {
        let queue: String = row.get(0);
        let s = by_queue.entry(queue.clone()).or_insert_with(|| QueueStats {
            queue,
            ..QueueStats::default()
        });
        s.paused = row.get(1);
        s.max_depth = row.get::<_, Option<i64>>(2).map(|n| n.max(0) as u64);
        if let (Some(l), Some(p)) = (row.get::<_, Option<i64>>(3), row.get::<_, Option<i64>>(4)) {
            s.rate_limit = Some(rate_limit_from_sql(l, p));
        }
    }
    Ok(by_queue.into_values().collect())
}

/// The rate limits of `queues`, in order.
pub(crate) async fn rate_limits(
    inner: &Inner,
    queues: &[String],
) -> BrokerResult<Vec<Option<RateLimit>>> {
    const RATES: Stmt = Stmt {
        sql: "SELECT r_queue, r_rate_limit, r_period_ms FROM sealq.queue_rate_limits($1)",
        types: &[Type::TEXT_ARRAY],
    };
    let what = "reading rate limits";
    let client = inner.client(what).await?;
    let rows = Conn::Client(&client)
        .query(inner.unnamed(), &RATES, &[&queues])
        .await
        .map_err(|e| map(&inner.target, what, e))?;
    let found: BTreeMap<String, RateLimit> = rows
        .iter()
        .map(|r| (r.get(0), rate_limit_from_sql(r.get(1), r.get(2))))
        .collect();
    Ok(queues.iter().map(|q| found.get(q).copied()).collect())
}

/// Every recorded key check value, by key id; undecodable ones left out.
pub(crate) async fn key_checks(inner: &Inner) -> BrokerResult<Vec<KeyCheck>> {
    const READ: Stmt = Stmt {
        sql: "SELECT r_key_id, r_check_value FROM sealq.key_checks_read()",
        types: &[],
    };
    let what = "reading the keyring's check values";
    let client = inner.client(what).await?;
    let rows = Conn::Client(&client)
        .query(inner.unnamed(), &READ, &[])
        .await
        .map_err(|e| map(&inner.target, what, e))?;
    let mut out = Vec::new();
    for r in rows {
        let (id, value): (String, String) = (r.get(0), r.get(1));
        match KeyCheck::from_hex(id.clone(), &value) {
            Some(c) => out.push(c),
            None => tracing::warn!(
                key_id = %id,
                "sealq: a recorded key check value does not decode (an edited row); left out"
            ),
        }
    }
    Ok(out)
}

/// Record `checks`, keeping the value already recorded for a key id.
pub(crate) async fn record_key_checks(inner: &Inner, checks: &[KeyCheck]) -> BrokerResult<()> {
    const RECORD: Stmt = Stmt {
        sql: "SELECT * FROM sealq.key_checks_record($1, $2, $3)",
        types: &[Type::TEXT_ARRAY, Type::TEXT_ARRAY, Type::INT8],
    };
    let what = "recording the keyring's check values";
    let ids: Vec<&str> = checks.iter().map(|c| c.key_id.as_str()).collect();
    let values: Vec<String> = checks.iter().map(|c| c.value_hex()).collect();
    let client = inner.client(what).await?;
    Conn::Client(&client)
        .count(inner.unnamed(), &RECORD, &[&ids, &values, &inner.now()])
        .await
        .map_err(|e| map(&inner.target, what, e))?;
    Ok(())
}
