//! Reads (`get`, `list`, `stats`) on their own connections.
//!
//! In WAL mode readers never block the writer nor wait for it, so reads do
//! not queue behind the writer thread's group commits. They run on tokio's
//! blocking pool with a connection from a small pool of idle read-only
//! (`query_only`) connections; more are opened on demand under load and only
//! [`crate::SqliteOptions::read_connections`] are kept.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use rusqlite::types::{ToSql, Value, ValueRef};
use rusqlite::{Connection, OptionalExtension};
use sealq::broker::{BrokerResult, ListQuery, QueueStats, TaskRecord};
use sealq::{BrokerError, BrokerErrorKind, TaskId, TaskState};

use crate::codec::{RECORD_SELECT, id_blob, rate_limit_from_sql};
use crate::error::retry_busy;
use crate::quarantine::{decode_row, skipped};
use crate::schema::{NOT_PENDING, READY_CONDITION, open_reader};

/// Stats' count of every task but pending ones, by queue and state:
/// through `tasks_queue_state`, whose condition it repeats.
pub(crate) static STATS_NOT_PENDING_SQL: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT queue, state, count(*) FROM tasks WHERE {NOT_PENDING} GROUP BY queue, state")
});

/// Stats' count of pending tasks by queue: through `tasks_ready` (which
/// holds the state since migration 6), whose condition it repeats.
pub(crate) static STATS_PENDING_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT queue, count(*) FROM tasks WHERE {READY_CONDITION} AND state = 'pending' \
         GROUP BY queue"
    )
});

/// A pool of read connections.
#[derive(Debug)]
pub(crate) struct Reader {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    max_idle: usize,
    busy: Duration,
}

impl Reader {
    /// A pool for `path` keeping at most `max_idle` idle connections.
    pub(crate) fn new(path: PathBuf, max_idle: usize, busy: Duration) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::new()),
            max_idle,
            busy,
        }
    }

    /// Run `f` on a read connection on the blocking pool.
    async fn run<T, F>(self: &Arc<Self>, what: &'static str, f: F) -> BrokerResult<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.with_conn(what, f))
            .await
            .map_err(|e| {
                BrokerError::new(BrokerErrorKind::Other, format!("{what}: read task failed"))
                    .with_source(e)
            })?
    }

    fn with_conn<T>(
        &self,
        what: &'static str,
        f: impl Fn(&Connection) -> rusqlite::Result<T>,
    ) -> BrokerResult<T> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => open_reader(&self.path)?,
        };
        let result = retry_busy(&self.path, what, self.busy, || f(&conn));
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
        result
    }

    /// One task by id. A row that does not decode is an error naming the
    /// task ([`crate::quarantine`]): the caller asked for that very task.
    pub(crate) async fn get(self: &Arc<Self>, id: TaskId) -> BrokerResult<Option<TaskRecord>> {
        let found = self
            .run("reading a task", move |conn| {
                conn.prepare_cached(&format!("SELECT {RECORD_SELECT} WHERE t.id = ?1"))?
                    .query_row([id_blob(&id)], decode_row)
                    .optional()
            })
            .await?;
        found.transpose().map_err(|m| m.into_error(&self.path))
    }

    /// Tasks matching `q`, ordered by id. Rows that do not decode are left
    /// out and logged ([`crate::quarantine`]), and the page is filled from
    /// the rows after them, so one bad row never ends a pagination early.
    pub(crate) async fn list(self: &Arc<Self>, q: ListQuery) -> BrokerResult<Vec<TaskRecord>> {
        self.run("listing tasks", move |conn| {
            let mut sql = format!("SELECT {RECORD_SELECT} WHERE 1");
            let mut args: Vec<&dyn ToSql> = Vec::new();
            let state = q.state.map(|s| s.as_str());
            let subject = q.subject.map(|s| s.0);
            let limit = if q.limit == 0 { 100 } else { q.limit };
            if let Some(queue) = &q.queue {
                args.push(queue);
                sql.push_str(&format!(" AND t.queue = ?{}", args.len()));
            }
            if let Some(state) = &state {
                args.push(state);
                // Repeats a partial index's condition (`tasks_ready` or
                // `tasks_queue_state`), so that SQLite may read through it.
                let within = match *state {
                    "pending" | "scheduled" | "retry" => READY_CONDITION,
                    _ => NOT_PENDING,
                };
                sql.push_str(&format!(" AND t.state = ?{} AND {within}", args.len()));
            }
            if let Some(subject) = &subject {
                args.push(subject);
                sql.push_str(&format!(" AND t.subject_tag = ?{}", args.len()));
            }
            // The cursor is the raw id of the last row read, good or not
            // (a damaged id may not be a 16-byte blob).
            let mut after: Option<Value> = q.after.map(|a| Value::Blob(id_blob(&a).to_vec()));
            let mut with_after = sql.clone();
            with_after.push_str(&format!(" AND t.id > ?{}", args.len() + 1));
            let mut out = Vec::new();
            loop {
                let want = (limit - out.len()) as i64;
                let mut a = args.clone();
                let sql = match &after {
                    Some(after) => {
                        a.push(after);
                        &with_after
                    }
                    None => &sql,
                };
                a.push(&want);
                let sql = format!("{sql} ORDER BY t.id LIMIT ?{}", a.len());
                let mut stmt = conn.prepare_cached(&sql)?;
                let mut rows = stmt.query(a.as_slice())?;
                let (mut read, mut bad) = (0i64, 0usize);
                let mut last = None;
                while let Some(row) = rows.next()? {
                    read += 1;
                    match decode_row(row)? {
                        Ok(r) => out.push(r),
                        Err(m) => {
                            skipped(&m, "list");
                            bad += 1;
                        }
                    }
                    last = Some(row.get::<_, Value>(0)?);
                }
                if bad == 0 || read < want {
                    break;
                }
                after = last;
            }
            Ok(out)
        })
        .await
    }

    /// The rate limits of `queues`, in order.
    /// The file's `PRAGMA user_version` (its schema version).
    pub(crate) async fn schema_version(self: &Arc<Self>) -> BrokerResult<i64> {
        self.run("reading the schema version", |conn| {
            conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        })
        .await
    }

    pub(crate) async fn rate_limits(
        self: &Arc<Self>,
        queues: Vec<String>,
    ) -> BrokerResult<Vec<Option<sealq::broker::RateLimit>>> {
        self.run("reading rate limits", move |conn| {
            let mut st = conn
                .prepare_cached("SELECT rate_limit, period_ms FROM queue_rates WHERE queue = ?1")?;
            queues
                .iter()
                .map(|q| {
                    st.query_row([q], |r| Ok(rate_limit_from_sql(r.get(0)?, r.get(1)?)))
                        .optional()
                })
                .collect()
        })
        .await
    }

    /// Counts by queue and state, plus paused queues: pending tasks through
    /// `tasks_ready`, the others through `tasks_queue_state` (which leaves
    /// pending tasks out), in one snapshot.
    pub(crate) async fn stats(self: &Arc<Self>) -> BrokerResult<Vec<QueueStats>> {
        self.run("reading queue stats", |conn| {
            let mut by_queue: BTreeMap<String, QueueStats> = BTreeMap::new();
            // One snapshot for both reads below.
            let _snapshot = conn.unchecked_transaction()?;
            // Every task but pending ones, through `tasks_queue_state`
            // (with a state that is not text: `!=` holds for it).
            let mut stmt = conn.prepare_cached(&STATS_NOT_PENDING_SQL)?;
            let mut rows = stmt.query([])?;
            let mut unknown = 0u64;
            while let Some(row) = rows.next()? {
                let n = row.get::<_, i64>(2)?.max(0) as u64;
                // A queue or state that is not text, or no state at all (an
                // edited row), is left out of the counts and logged below.
                let (Some(queue), Some(state)) = (
                    text(row.get_ref(0)?),
                    text(row.get_ref(1)?).and_then(|s| s.parse::<TaskState>().ok()),
                ) else {
                    unknown += n;
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
            // Pending tasks by queue, through `tasks_ready`.
            let mut stmt = conn.prepare_cached(&STATS_PENDING_SQL)?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let n = row.get::<_, i64>(1)?.max(0) as u64;
                let Some(queue) = text(row.get_ref(0)?) else {
                    unknown += n;
                    continue;
                };
                by_queue
                    .entry(queue.clone())
                    .or_insert_with(|| QueueStats {
                        queue,
                        ..QueueStats::default()
                    })
                    .pending += n;
            }
            if unknown > 0 {
                let mut stmt = conn.prepare_cached(
                    "SELECT seq, id FROM tasks WHERE typeof(queue) != 'text' \
                     OR state NOT IN ('scheduled', 'pending', 'active', 'retry', 'completed', \
                                      'archived') LIMIT 10",
                )?;
                let mut rows = stmt.query([])?;
                let mut named = Vec::new();
                while let Some(row) = rows.next()? {
                    named.push(match row.get_ref(1)? {
                        ValueRef::Blob(b) if b.len() == 16 => uuid::Uuid::from_slice(b)
                            .map(|u| TaskId(u).to_string())
                            .unwrap_or_default(),
                        _ => format!("seq={}", row.get::<_, i64>(0)?),
                    });
                }
                tracing::warn!(
                    tasks = unknown,
                    first = %named.join(", "),
                    "sealq: stats left out tasks whose queue or state does not decode \
                     (an edited or damaged file); delete them with `sealq tasks delete`"
                );
            }
            let mut stmt = conn.prepare_cached("SELECT queue FROM paused_queues")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let queue: String = row.get(0)?;
                by_queue
                    .entry(queue.clone())
                    .or_insert_with(|| QueueStats {
                        queue,
                        ..QueueStats::default()
                    })
                    .paused = true;
            }
            let mut stmt =
                conn.prepare_cached("SELECT queue, rate_limit, period_ms FROM queue_rates")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let queue: String = row.get(0)?;
                let (limit, period): (i64, i64) = (row.get(1)?, row.get(2)?);
                by_queue
                    .entry(queue.clone())
                    .or_insert_with(|| QueueStats {
                        queue,
                        ..QueueStats::default()
                    })
                    .rate_limit = Some(rate_limit_from_sql(limit, period));
            }
            let mut stmt = conn.prepare_cached("SELECT queue, max_depth FROM queue_limits")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let queue: String = row.get(0)?;
                let cap: i64 = row.get(1)?;
                by_queue
                    .entry(queue.clone())
                    .or_insert_with(|| QueueStats {
                        queue,
                        ..QueueStats::default()
                    })
                    .max_depth = Some(cap.max(0) as u64);
            }
            Ok(by_queue.into_values().collect())
        })
        .await
    }
}

/// A column's value as text, if it is UTF-8 text.
fn text(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Text(t) => std::str::from_utf8(t).ok().map(str::to_owned),
        _ => None,
    }
}
