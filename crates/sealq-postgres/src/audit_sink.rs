//! [`PostgresAuditSink`]: the tamper-evident audit log in two tables,
//! `sealq.audit_records` and `sealq.audit_checkpoints`.
//!
//! One row per record or checkpoint, holding its JSON text (exactly what
//! [`sealq::audit::JsonLinesSink`] writes as a line) plus `writer`, `seq`,
//! and the task (`task_id`, or `batch_tasks` for a batch event such as
//! `leased_batch`) for lookups. Positions in verification reports are the
//! rows' `pos` (an identity column, in insertion order).
//!
//! The tables are append-only for everyone but the admin: the runtime roles
//! reach them only through `sealq.audit_append` and
//! `sealq.audit_append_checkpoint` (inserts), the operator reads through
//! `sealq.audit_read_records` / `_checkpoints` / `_records_for_task`, and
//! only `sealq.audit_prune`, granted to `sealq_admin`, deletes. Triggers
//! refuse `UPDATE` and `TRUNCATE` even to the schema owner. See
//! `docs/postgres-roles.md`.

use async_trait::async_trait;
use sealq::audit::{
    AuditError, AuditRecord, AuditSink, Checkpoint, Loaded, checkpoint_line, record_line,
};
use sealq::broker::BrokerResult;
use tokio_postgres::types::{ToSql, Type};

use crate::PostgresBroker;
use crate::store_conn::StoreConn;

/// Rows read per call of a read function.
const PAGE: i32 = 2_000;

/// Most records appended per statement.
const BATCH: usize = 1_000;

/// The audit log in `sealq.audit_records` / `sealq.audit_checkpoints`.
/// Cheap to clone.
#[derive(Clone)]
pub struct PostgresAuditSink {
    conn: StoreConn,
}

impl std::fmt::Debug for PostgresAuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresAuditSink")
            .field("target", &self.conn.target)
            .finish()
    }
}

impl PostgresAuditSink {
    /// The audit log in `broker`'s database, on its pool.
    pub fn from_broker(broker: &PostgresBroker) -> Self {
        Self {
            conn: StoreConn::of_broker(broker),
        }
    }

    /// The audit log at `url`, on a pool of its own; creates or upgrades the
    /// schema there if needed (as the broker does at connect).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// let sink = sealq_postgres::PostgresAuditSink::connect(
    ///     "postgres://billing_worker@db.internal/app?sslmode=verify-full",
    /// )
    /// .await?;
    /// let keyring = sealq::Keyring::from_env()?;
    /// let auditor = sealq::audit::Auditor::start(Arc::new(sink), &keyring)?;
    /// # let _ = auditor; Ok(()) }
    /// ```
    pub async fn connect(url: &str) -> BrokerResult<Self> {
        Ok(Self {
            conn: StoreConn::connect(url, true).await?.0,
        })
    }

    /// The audit log at `url` for reading (`sealq audit verify`): connects
    /// without creating or upgrading anything; a schema at another version
    /// is refused, naming both versions.
    pub async fn connect_existing(url: &str) -> BrokerResult<Self> {
        Ok(Self {
            conn: StoreConn::connect(url, false).await?.0,
        })
    }

    async fn call(
        &self,
        what: &str,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<tokio_postgres::Row>, AuditError> {
        let client = self
            .conn
            .client(what)
            .await
            .map_err(|e| AuditError::new(e.to_string()).with_source(e))?;
        client.query_typed(sql, params).await.map_err(|e| {
            let mapped = self.conn.err(what, e);
            AuditError::new(format!("audit log: {mapped}")).with_source(mapped)
        })
    }

    /// Every `(pos, line)` of one read function, paging by position.
    async fn read_all(&self, function: &str) -> Result<Vec<(u64, String)>, AuditError> {
        let what = "cannot read the audit log";
        let sql = format!("SELECT pos, line FROM {function}($1, $2)");
        let mut out = Vec::new();
        let mut after = 0i64;
        loop {
            let rows = self
                .call(what, &sql, &[(&after, Type::INT8), (&PAGE, Type::INT4)])
                .await?;
            let n = rows.len();
            for r in rows {
                let pos: i64 = r.get(0);
                out.push((pos.max(0) as u64, r.get::<_, String>(1)));
                after = pos;
            }
            if n < PAGE as usize {
                return Ok(out);
            }
        }
    }

    /// Stored records about one task (its own and the batch events naming
    /// it), in storage order (for `sealq audit show`).
    pub async fn records_for_task(
        &self,
        task: sealq::TaskId,
    ) -> Result<Vec<Loaded<AuditRecord>>, AuditError> {
        let rows = self
            .call(
                "cannot read records",
                "SELECT pos, line FROM sealq.audit_records_for_task($1)",
                &[(&task.0, Type::UUID)],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let pos: i64 = r.get(0);
                Loaded::parse(pos.max(0) as u64, r.get::<_, &str>(1).as_bytes())
            })
            .collect())
    }

    /// Delete the records up to and including position `records_through`
    /// and the checkpoints up to `checkpoints_through` (export them first:
    /// verification then reports the chains as starting later). Only the
    /// `sealq_admin` role may; returns how many rows went.
    pub async fn prune(
        &self,
        records_through: u64,
        checkpoints_through: u64,
    ) -> Result<u64, AuditError> {
        let (r, c) = (
            i64::try_from(records_through).unwrap_or(i64::MAX),
            i64::try_from(checkpoints_through).unwrap_or(i64::MAX),
        );
        let rows = self
            .call(
                "cannot prune the audit log",
                "SELECT sealq.audit_prune($1, $2)",
                &[(&r, Type::INT8), (&c, Type::INT8)],
            )
            .await?;
        Ok(rows
            .first()
            .map(|r| r.get::<_, i64>(0).max(0) as u64)
            .unwrap_or(0))
    }
}

#[async_trait]
impl AuditSink for PostgresAuditSink {
    async fn append_records(&self, records: &[AuditRecord]) -> Result<(), AuditError> {
        // Each chunk is one statement: one transaction, one durable commit.
        // A batch cut by a lost connection leaves whole chunks, a prefix of
        // it, which the auditor's chain tolerates as a crash mid-batch.
        for chunk in records.chunks(BATCH) {
            let rows = AppendRows::of(chunk);
            self.call(
                "cannot append records",
                "SELECT sealq.audit_append($1, $2, $3, $4, $5)",
                &rows.params(),
            )
            .await?;
        }
        Ok(())
    }

    async fn append_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), AuditError> {
        let seq = i64::try_from(checkpoint.seq).unwrap_or(i64::MAX);
        let line = checkpoint_line(checkpoint);
        self.call(
            "cannot append a checkpoint",
            "SELECT sealq.audit_append_checkpoint($1, $2, $3)",
            &[
                (&checkpoint.writer, Type::TEXT),
                (&seq, Type::INT8),
                (&line, Type::TEXT),
            ],
        )
        .await
        .map(drop)
    }

    async fn read_records(&self) -> Result<Vec<Loaded<AuditRecord>>, AuditError> {
        Ok(self
            .read_all("sealq.audit_read_records")
            .await?
            .into_iter()
            .map(|(pos, line)| Loaded::parse(pos, line.as_bytes()))
            .collect())
    }

    async fn read_checkpoints(&self) -> Result<Option<Vec<Loaded<Checkpoint>>>, AuditError> {
        let rows = self
            .call(
                "cannot read the audit log",
                "SELECT sealq.audit_has_checkpoints()",
                &[],
            )
            .await?;
        if !rows.first().is_some_and(|r| r.get::<_, bool>(0)) {
            return Ok(None);
        }
        Ok(Some(
            self.read_all("sealq.audit_read_checkpoints")
                .await?
                .into_iter()
                .map(|(pos, line)| Loaded::parse(pos, line.as_bytes()))
                .collect(),
        ))
    }

    fn describe(&self) -> String {
        format!(
            "tables sealq.audit_records / sealq.audit_checkpoints in {}",
            self.conn.target
        )
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

/// The arguments of `sealq.audit_append` for some records: one array per
/// column.
pub(crate) struct AppendRows {
    writers: Vec<String>,
    seqs: Vec<i64>,
    tasks: Vec<Option<uuid::Uuid>>,
    batches: Vec<Option<String>>,
    lines: Vec<String>,
}

impl AppendRows {
    /// The columns of `records`.
    pub(crate) fn of(records: &[AuditRecord]) -> Self {
        let n = records.len();
        let mut rows = AppendRows {
            writers: Vec::with_capacity(n),
            seqs: Vec::with_capacity(n),
            tasks: Vec::with_capacity(n),
            batches: Vec::with_capacity(n),
            lines: Vec::with_capacity(n),
        };
        for r in records {
            rows.writers.push(r.writer.clone());
            rows.seqs.push(i64::try_from(r.seq).unwrap_or(i64::MAX));
            let task = r.event.task();
            rows.tasks.push(task.map(|t| t.0));
            rows.batches.push(match task {
                Some(_) => None,
                None => {
                    let all = r.event.tasks();
                    (!all.is_empty()).then(|| {
                        all.iter()
                            .map(|t| t.to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                }
            });
            rows.lines.push(record_line(r));
        }
        rows
    }

    /// The five parameters, typed, in `sealq.audit_append`'s order.
    pub(crate) fn params(&self) -> [(&(dyn ToSql + Sync), Type); 5] {
        [
            (&self.writers, Type::TEXT_ARRAY),
            (&self.seqs, Type::INT8_ARRAY),
            (&self.tasks, Type::UUID_ARRAY),
            (&self.batches, Type::TEXT_ARRAY),
            (&self.lines, Type::TEXT_ARRAY),
        ]
    }
}

impl PostgresAuditSink {
    /// Whether this sink writes to the database `broker` uses (the same
    /// URL, password aside), so that a record written in a transaction
    /// of the broker's database is one this sink reads.
    pub(crate) fn same_database_as(&self, broker: &PostgresBroker) -> bool {
        self.conn.target == broker.inner.target
    }
}
