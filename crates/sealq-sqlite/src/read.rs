//! Reads (`get`, `list`, `stats`) on their own connections.
//!
//! In WAL mode readers never block the writer nor wait for it, so reads do
//! not queue behind the writer thread's group commits. They run on tokio's
//! blocking pool with a connection from a small pool of idle read-only
//! (`query_only`) connections; more are opened on demand under load and only
//! [`crate::SqliteOptions::read_connections`] are kept.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::types::ToSql;
use rusqlite::{Connection, OptionalExtension};
use sealq::broker::{BrokerResult, ListQuery, QueueStats, TaskRecord};
use sealq::{BrokerError, BrokerErrorKind, TaskId, TaskState};

use crate::codec::{RECORD_SELECT, id_blob, rate_limit_from_sql, record_from_row, state_from_str};
use crate::error::retry_busy;
use crate::schema::open_reader;

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

    /// One task by id.
    pub(crate) async fn get(self: &Arc<Self>, id: TaskId) -> BrokerResult<Option<TaskRecord>> {
        self.run("reading a task", move |conn| {
            conn.prepare_cached(&format!("SELECT {RECORD_SELECT} WHERE t.id = ?1"))?
                .query_row([id_blob(&id)], record_from_row)
                .optional()
        })
        .await
    }

    /// Tasks matching `q`, ordered by id.
    pub(crate) async fn list(self: &Arc<Self>, q: ListQuery) -> BrokerResult<Vec<TaskRecord>> {
        self.run("listing tasks", move |conn| {
            let mut sql = format!("SELECT {RECORD_SELECT} WHERE 1");
            let mut args: Vec<&dyn ToSql> = Vec::new();
            let state = q.state.map(|s| s.as_str());
            let subject = q.subject.map(|s| s.0);
            let after = q.after.map(|a| *id_blob(&a));
            let limit = if q.limit == 0 { 100 } else { q.limit as i64 };
            if let Some(queue) = &q.queue {
                args.push(queue);
                sql.push_str(&format!(" AND t.queue = ?{}", args.len()));
            }
            if let Some(state) = &state {
                args.push(state);
                sql.push_str(&format!(" AND t.state = ?{}", args.len()));
            }
            if let Some(subject) = &subject {
                args.push(subject);
                sql.push_str(&format!(" AND t.subject_tag = ?{}", args.len()));
            }
            if let Some(after) = &after {
                args.push(after);
                sql.push_str(&format!(" AND t.id > ?{}", args.len()));
            }
            args.push(&limit);
            sql.push_str(&format!(" ORDER BY t.id LIMIT ?{}", args.len()));
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(args.as_slice(), record_from_row)?;
            rows.collect()
        })
        .await
    }

    /// The rate limits of `queues`, in order.
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

    /// Counts by queue and state, plus paused queues.
    pub(crate) async fn stats(self: &Arc<Self>) -> BrokerResult<Vec<QueueStats>> {
        self.run("reading queue stats", |conn| {
            let mut by_queue: BTreeMap<String, QueueStats> = BTreeMap::new();
            let mut stmt = conn
                .prepare_cached("SELECT queue, state, count(*) FROM tasks GROUP BY queue, state")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let queue: String = row.get(0)?;
                let state: String = row.get(1)?;
                let n: i64 = row.get(2)?;
                let s = by_queue.entry(queue.clone()).or_insert_with(|| QueueStats {
                    queue,
                    ..QueueStats::default()
                });
                let n = n as u64;
                match state_from_str(&state, 1)? {
                    TaskState::Scheduled => s.scheduled = n,
                    TaskState::Pending => s.pending = n,
                    TaskState::Active => s.active = n,
                    TaskState::Retry => s.retry = n,
                    TaskState::Completed => s.completed = n,
                    TaskState::Archived => s.archived = n,
                }
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
