//! Everything but the hot path that changes tasks: forwarding, lease
//! recovery, purging, deleting, re-running, re-sealing, erasure, and the
//! queue settings. Multi-statement operations run in one transaction.

use sealq::broker::{BrokerResult, Forwarded, RateLimit, Recovered, SealedPart, SealedSwap};
use sealq::subject_keys::ErasureCounts;
use sealq::{SubjectTag, TaskId};
use tokio_postgres::types::Type;

use crate::Inner;
use crate::db::{Conn, Stmt};
use crate::error::map;

/// Notify listeners that `queues` have ready work (and wake this process).
const NOTIFY: Stmt = Stmt {
    sql: "SELECT pg_notify('sealq_wake', q) FROM (SELECT DISTINCT unnest($1::text[]) AS q) d",
    types: &[Type::TEXT_ARRAY],
};

async fn notify(
    inner: &Inner,
    conn: Conn<'_, '_>,
    queues: &[String],
    what: &str,
) -> BrokerResult<()> {
    if queues.is_empty() {
        return Ok(());
    }
    conn.query(inner.unnamed(), &NOTIFY, &[&queues])
        .await
        .map_err(|e| map(&inner.target, what, e))?;
    for q in queues {
        inner.wake.local(q);
    }
    Ok(())
}

fn queues_of(rows: &[tokio_postgres::Row]) -> Vec<String> {
    let mut q: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    q.sort();
    q.dedup();
    q
}

const FORWARD: Stmt = Stmt {
    sql: "SELECT * FROM sealq.forward_due($1)",
    types: &[Type::INT8],
};
const NEXT_DUE: Stmt = Stmt {
    sql: "SELECT sealq.next_due()",
    types: &[],
};

/// Move due scheduled/retry tasks to pending; report the next due time.
pub(crate) async fn forward_due(inner: &Inner) -> BrokerResult<Forwarded> {
    let what = "forwarding due tasks";
    let now = inner.now();
    let mut client = inner.client(what).await?;
    let tx = client
        .transaction()
        .await
        .map_err(|e| map(&inner.target, what, e))?;
    let c = Conn::Tx(&tx);
    let rows = c
        .query(inner.unnamed(), &FORWARD, &[&now])
        .await
        .map_err(|e| map(&inner.target, what, e))?;
    notify(inner, Conn::Tx(&tx), &queues_of(&rows), what).await?;
    let next: Option<i64> = c
        .query(inner.unnamed(), &NEXT_DUE, &[])
        .await
        .map_err(|e| map(&inner.target, what, e))?
        .first()
        .and_then(|r| r.get(0));
    tx.commit().await.map_err(|e| map(&inner.target, what, e))?;
    Ok(Forwarded {
        moved: rows.len() as u64,
        next_due_ms: next,
    })
}

const RECOVER_ARCHIVE: Stmt = Stmt {
    sql: "SELECT * FROM sealq.recover_archive($1)",
    types: &[Type::INT8],
};
const RECOVER_RETRY: Stmt = Stmt {
    sql: "SELECT * FROM sealq.recover_retry($1)",
    types: &[Type::INT8],
};

/// Return expired leases: retry while attempts remain, else archive.
pub(crate) async fn recover_expired(inner: &Inner) -> BrokerResult<Recovered> {
    let what = "recovering expired leases";
    let now = inner.now();
    let mut client = inner.client(what).await?;
    let tx = client
        .transaction()
        .await
        .map_err(|e| map(&inner.target, what, e))?;
    let c = Conn::Tx(&tx);
    let archived = c
        .count(inner.unnamed(), &RECOVER_ARCHIVE, &[&now])
        .await
        .map_err(|e| map(&inner.target, what, e))?;
    let retried = c
        .query(inner.unnamed(), &RECOVER_RETRY, &[&now])
        .await
        .map_err(|e| map(&inner.target, what, e))?;
    notify(inner, Conn::Tx(&tx), &queues_of(&retried), what).await?;
    tx.commit().await.map_err(|e| map(&inner.target, what, e))?;
    Ok(Recovered {
        retried: retried.len() as u64,
        archived,
    })
}

/// Rows purged per statement: bounded, so one purge never holds locks on
/// a whole backlog.
const PURGE_BATCH: i64 = 5_000;

const PURGE: Stmt = Stmt {
    sql: "SELECT * FROM sealq.purge_completed($1, $2)",
    types: &[Type::INT8, Type::INT8],
};
const PRUNE_REPLAY: Stmt = Stmt {
    sql: "SELECT * FROM sealq.prune_replay($1, $2)",
    types: &[Type::INT8, Type::INT8],
};
const PRUNE_KEYS: Stmt = Stmt {
    sql: "SELECT * FROM sealq.prune_unique_keys($1, $2)",
    types: &[Type::INT8, Type::INT8],
};

/// Delete completed tasks past retention, in bounded batches (each its own
/// transaction); prune the replay memory and expired unique keys.
pub(crate) async fn purge_completed(inner: &Inner) -> BrokerResult<u64> {
    let what = "purging completed tasks";
    let now = inner.now();
    let client = inner.client(what).await?;
    let c = Conn::Client(&client);
    let horizon = now.saturating_sub(
        i64::try_from(inner.options.replay_horizon.as_millis()).unwrap_or(i64::MAX),
    );
    let mut purged = 0u64;
    for (stmt, at, count) in [
        (&PURGE, now, true),
        (&PRUNE_REPLAY, horizon, false),
        (&PRUNE_KEYS, now, false),
    ] {
        loop {
            let n = c
                .count(inner.unnamed(), stmt, &[&at, &PURGE_BATCH])
                .await
                .map_err(|e| map(&inner.target, what, e))?;
            if count {
                purged += n;
            }
            if n < PURGE_BATCH as u64 {
                break;
            }
        }
    }
    Ok(purged)
}

const DELETE: Stmt = Stmt {
    sql: "SELECT * FROM sealq.delete_tasks($1, $2)",
    types: &[Type::UUID_ARRAY, Type::INT8],
};

/// Delete tasks in any state; their ids join the replay memory.
pub(crate) async fn delete(inner: &Inner, ids: &[TaskId]) -> BrokerResult<u64> {
    let what = "deleting tasks";
    let ids: Vec<uuid::Uuid> = ids.iter().map(|i| i.0).collect();
    let client = inner.client(what).await?;
    Conn::Client(&client)
        .count(inner.unnamed(), &DELETE, &[&ids, &inner.now()])
        .await
        .map_err(|e| map(&inner.target, what, e))
}

const RERUN: Stmt = Stmt {
    sql: "SELECT * FROM sealq.rerun_archived($1, $2)",
    types: &[Type::UUID_ARRAY, Type::INT8],
};

/// Archived tasks back to pending with attempts reset.
pub(crate) async fn rerun(inner: &Inner, ids: &[TaskId]) -> BrokerResult<u64> {
    let what = "re-running tasks";
    let ids: Vec<uuid::Uuid> = ids.iter().map(|i| i.0).collect();
    let mut client = inner.client(what).await?;
    let tx = client
        .transaction()
        .await
        .map_err(|e| map(&inner.target, what, e))?;
    let rows = Conn::Tx(&tx)
        .query(inner.unnamed(), &RERUN, &[&ids, &inner.now()])
        .await
        .map_err(|e| map(&inner.target, what, e))?;
    notify(inner, Conn::Tx(&tx), &queues_of(&rows), what).await?;
    tx.commit().await.map_err(|e| map(&inner.target, what, e))?;
    Ok(rows.len() as u64)
}

const PAUSE: Stmt = Stmt {
    sql: "SELECT * FROM sealq.pause_queue($1, $2)",
    types: &[Type::TEXT, Type::INT8],
};
const RESUME: Stmt = Stmt {
    sql: "SELECT * FROM sealq.resume_queue($1)",
    types: &[Type::TEXT],
};

/// Pause or resume a queue.
pub(crate) async fn set_paused(inner: &Inner, queue: &str, paused: bool) -> BrokerResult<()> {
    let what = if paused {
        "pausing a queue"
    } else {
        "resuming a queue"
    };
    let mut client = inner.client(what).await?;
    let tx = client
        .transaction()
        .await
        .map_err(|e| map(&inner.target, what, e))?;
    let c = Conn::Tx(&tx);
    if paused {
        c.count(inner.unnamed(), &PAUSE, &[&queue, &inner.now()])
            .await
            .map_err(|e| map(&inner.target, what, e))?;
    } else {
        let rows = c
            .query(inner.unnamed(), &RESUME, &[&queue])
            .await
            .map_err(|e| map(&inner.target, what, e))?;
        notify(inner, Conn::Tx(&tx), &queues_of(&rows), what).await?;
    }
    tx.commit().await.map_err(|e| map(&inner.target, what, e))
}

const SET_DEPTH: Stmt = Stmt {
    sql: "SELECT * FROM sealq.set_max_depth($1, $2)",
    types: &[Type::TEXT, Type::INT8],
};
const CLEAR_DEPTH: Stmt = Stmt {
    sql: "SELECT * FROM sealq.clear_max_depth($1)",
    types: &[Type::TEXT],
};

/// Set or remove a queue's cap on waiting tasks.
pub(crate) async fn set_max_depth(
    inner: &Inner,
    queue: &str,
    cap: Option<u64>,
) -> BrokerResult<()> {
    let what = "setting a queue's maximum depth";
    let client = inner.client(what).await?;
    let c = Conn::Client(&client);
    match cap {
        Some(n) => {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            c.count(inner.unnamed(), &SET_DEPTH, &[&queue, &n]).await
        }
        None => c.count(inner.unnamed(), &CLEAR_DEPTH, &[&queue]).await,
    }
    .map(|_| ())
    .map_err(|e| map(&inner.target, what, e))
}

const SET_RATE: Stmt = Stmt {
    sql: "SELECT * FROM sealq.set_rate_limit($1, $2, $3, $4)",
    types: &[Type::TEXT, Type::INT8, Type::INT8, Type::INT8],
};
const CLEAR_RATE: Stmt = Stmt {
    sql: "SELECT * FROM sealq.clear_rate_limit($1)",
    types: &[Type::TEXT],
};

/// Set or remove a queue's rate limit (a new limit starts with a full bucket).
pub(crate) async fn set_rate_limit(
    inner: &Inner,
    queue: &str,
    limit: Option<RateLimit>,
) -> BrokerResult<()> {
    let what = "setting a queue's rate limit";
    let mut client = inner.client(what).await?;
    let tx = client
        .transaction()
        .await
        .map_err(|e| map(&inner.target, what, e))?;
    let c = Conn::Tx(&tx);
    match limit {
        Some(rl) => {
            let n = i64::try_from(rl.limit).unwrap_or(i64::MAX);
            let p = i64::try_from(rl.period_ms).unwrap_or(i64::MAX);
            c.count(inner.unnamed(), &SET_RATE, &[&queue, &n, &p, &inner.now()])
                .await
                .map_err(|e| map(&inner.target, what, e))?;
        }
        None => {
            // Tasks held back by the limit may run now.
            let rows = c
                .query(inner.unnamed(), &CLEAR_RATE, &[&queue])
                .await
                .map_err(|e| map(&inner.target, what, e))?;
            notify(inner, Conn::Tx(&tx), &queues_of(&rows), what).await?;
        }
    }
    tx.commit().await.map_err(|e| map(&inner.target, what, e))
}

const SWAP_PAYLOAD: Stmt = Stmt {
    sql: "SELECT * FROM sealq.swap_payload($1, $2, $3, $4)",
    types: &[Type::UUID, Type::TEXT, Type::BYTEA, Type::BYTEA],
};
const SWAP_RESULT: Stmt = Stmt {
    sql: "SELECT * FROM sealq.swap_result($1, $2, $3, $4)",
    types: &[Type::UUID, Type::TEXT, Type::BYTEA, Type::BYTEA],
};
const SWAP_ERROR: Stmt = Stmt {
    sql: "SELECT * FROM sealq.swap_error($1, $2, $3, $4)",
    types: &[Type::UUID, Type::TEXT, Type::BYTEA, Type::BYTEA],
};

/// Compare-and-swap sealed bytes, all swaps in one transaction.
pub(crate) async fn swap_sealed(inner: &Inner, swaps: &[SealedSwap]) -> BrokerResult<Vec<bool>> {
    let what = "re-sealing tasks";
    let mut client = inner.client(what).await?;
    let tx = client
        .transaction()
        .await
        .map_err(|e| map(&inner.target, what, e))?;
    let c = Conn::Tx(&tx);
    let mut out = Vec::with_capacity(swaps.len());
    for s in swaps {
        let stmt = match s.part {
            SealedPart::Payload => &SWAP_PAYLOAD,
            SealedPart::Result => &SWAP_RESULT,
            SealedPart::Error => &SWAP_ERROR,
        };
        let n = c
            .count(
                inner.unnamed(),
                stmt,
                &[&s.task_id.0, &s.queue, &s.replacement, &s.expected],
            )
            .await
            .map_err(|e| map(&inner.target, what, e))?;
        out.push(n == 1);
    }
    tx.commit().await.map_err(|e| map(&inner.target, what, e))?;
    Ok(out)
}

const ERASE_STATES: Stmt = Stmt {
    sql: "SELECT r_state, r_count FROM sealq.erase_states($1)",
    types: &[Type::UUID_ARRAY],
};
const ERASE_KEYS: Stmt = Stmt {
    sql: "SELECT * FROM sealq.erase_unique_keys($1)",
    types: &[Type::UUID_ARRAY],
};
const ERASE_REMEMBER: Stmt = Stmt {
    sql: "SELECT * FROM sealq.erase_remember($1, $2)",
    types: &[Type::UUID_ARRAY, Type::INT8],
};
const ERASE_DELETE: Stmt = Stmt {
    sql: "SELECT * FROM sealq.erase_delete($1)",
    types: &[Type::UUID_ARRAY],
};
const ERASE_WIPE: Stmt = Stmt {
    sql: "SELECT * FROM sealq.erase_wipe($1)",
    types: &[Type::UUID_ARRAY],
};
const ERASE_ARCHIVE: Stmt = Stmt {
    sql: "SELECT * FROM sealq.erase_archive($1, $2)",
    types: &[Type::UUID_ARRAY, Type::INT8],
};
const LOCK_IDS: Stmt = Stmt {
    sql: "SELECT * FROM sealq.lock_tasks($1)",
    types: &[Type::UUID_ARRAY],
};
const SUBJECT_IDS: Stmt = Stmt {
    sql: "SELECT * FROM sealq.subject_task_ids($1)",
    types: &[Type::BYTEA],
};

/// Erase exactly `ids` (see `Broker::erase_tasks`), in one transaction.
pub(crate) async fn erase_tasks(inner: &Inner, ids: &[TaskId]) -> BrokerResult<ErasureCounts> {
    let what = "erasing tasks";
    let ids: Vec<uuid::Uuid> = ids.iter().map(|i| i.0).collect();
    let mut client = inner.client(what).await?;
    let tx = client
        .transaction()
        .await
        .map_err(|e| map(&inner.target, what, e))?;
    // Lock the rows first so their states cannot change under the counts.
    Conn::Tx(&tx)
        .count(inner.unnamed(), &LOCK_IDS, &[&ids])
        .await
        .map_err(|e| map(&inner.target, what, e))?;
    let counts = erase_locked(inner, Conn::Tx(&tx), &ids).await?;
    tx.commit().await.map_err(|e| map(&inner.target, what, e))?;
    Ok(counts)
}

/// Erase every task with `tag` (see `Broker::erase_subject`).
pub(crate) async fn erase_subject(inner: &Inner, tag: &SubjectTag) -> BrokerResult<ErasureCounts> {
    let what = "erasing a subject";
    let mut client = inner.client(what).await?;
    let tx = client
        .transaction()
        .await
        .map_err(|e| map(&inner.target, what, e))?;
    let tag = tag.0.to_vec();
    let ids: Vec<uuid::Uuid> = Conn::Tx(&tx)
        .query(inner.unnamed(), &SUBJECT_IDS, &[&tag])
        .await
        .map_err(|e| map(&inner.target, what, e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let counts = erase_locked(inner, Conn::Tx(&tx), &ids).await?;
    tx.commit().await.map_err(|e| map(&inner.target, what, e))?;
    Ok(counts)
}

async fn erase_locked(
    inner: &Inner,
    c: Conn<'_, '_>,
    ids: &[uuid::Uuid],
) -> BrokerResult<ErasureCounts> {
    let what = "erasing tasks";
    let err = |e| map(&inner.target, what, e);
    let u = inner.unnamed();
    let ids = ids.to_vec();
    let mut counts = ErasureCounts::default();
    for row in c.query(u, &ERASE_STATES, &[&ids]).await.map_err(err)? {
        let state: String = row.get(0);
        let n = row.get::<_, i64>(1).max(0) as u64;
        match state.as_str() {
            "scheduled" => counts.scheduled += n,
            "pending" => counts.pending += n,
            "active" => counts.active += n,
            "retry" => counts.retry += n,
            "completed" => counts.completed += n,
            _ => counts.archived += n,
        }
    }
    if counts.total() == 0 {
        return Ok(counts);
    }
    let now = inner.now();
    c.count(u, &ERASE_KEYS, &[&ids]).await.map_err(err)?;
    c.count(u, &ERASE_REMEMBER, &[&ids, &now])
        .await
        .map_err(err)?;
    c.count(u, &ERASE_DELETE, &[&ids]).await.map_err(err)?;
    c.count(u, &ERASE_WIPE, &[&ids]).await.map_err(err)?;
    c.count(u, &ERASE_ARCHIVE, &[&ids, &now])
        .await
        .map_err(err)?;
    Ok(counts)
}
