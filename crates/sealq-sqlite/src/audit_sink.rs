//! [`SqliteAuditSink`]: the audit log in the broker's own database file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, params};
use sealq::audit::{
    AuditError, AuditRecord, AuditSink, Checkpoint, Loaded, checkpoint_line, record_line,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_records (
    pos     INTEGER PRIMARY KEY,
    writer  TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    task_id TEXT,
    line    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_records_task ON audit_records (task_id)
    WHERE task_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS audit_record_tasks (
    task_id TEXT NOT NULL,
    pos     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_record_tasks_task ON audit_record_tasks (task_id);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    pos    INTEGER PRIMARY KEY,
    writer TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    line   TEXT NOT NULL
);
";

/// The audit log as two tables of the SQLite broker's database file:
/// `audit_records` and `audit_checkpoints`, one row per record or
/// checkpoint holding its JSON text (`line`, exactly what
/// [`sealq::audit::JsonLinesSink`] writes) plus `writer`, `seq` and
/// `task_id` columns for lookups; a record about several tasks (a batch
/// event such as `leased_batch`) has no `task_id` and one row per task in
/// `audit_record_tasks (task_id, pos)` instead. Rows are only ever inserted.
///
/// It opens its own connection to the file (WAL, `busy_timeout`), so it
/// never queues behind the broker's writer thread; each batch is one
/// transaction. The tables are created on first use; the database must
/// already be a sealq store (open the broker first), or be new (the broker
/// schema is then created by opening a broker on it). Positions in
/// verification reports are row ids (`pos`).
#[derive(Debug, Clone)]
pub struct SqliteAuditSink {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    conn: Mutex<Connection>,
}

fn err(path: &Path, what: &str, e: rusqlite::Error) -> AuditError {
    AuditError::new(format!("audit log in {}: {what}", path.display())).with_source(e)
}

impl SqliteAuditSink {
    /// Open the audit tables in the sealq database at `path` (creating the
    /// tables if needed; a new file first gets the broker schema).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, AuditError> {
        let path = path.as_ref().to_path_buf();
        // Make sure the file is a sealq store before adding tables to it: the
        // broker refuses a fresh file that already holds foreign tables.
        drop(
            crate::SqliteBroker::open(&path)
                .map_err(|e| AuditError::new(format!("audit log in {}: {e}", path.display())))?,
        );
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| err(&path, "cannot open the database", e))?;
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(|e| err(&path, "cannot configure the connection", e))?;
        crate::error::set_up_store(&conn, &path, "configuring the audit tables", SCHEMA)
            .map_err(|e| AuditError::new(format!("audit log in {}: {e}", path.display())))?;
        Ok(SqliteAuditSink {
            inner: Arc::new(Inner {
                path,
                conn: Mutex::new(conn),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Stored records of one task, in storage order (for `sealq audit show`).
    pub async fn records_for_task(
        &self,
        task: sealq::TaskId,
    ) -> Result<Vec<Loaded<AuditRecord>>, AuditError> {
        let id = task.to_string();
        self.blocking(move |path, conn| {
            let mut st = conn
                .prepare_cached(
                    "SELECT pos, line FROM audit_records WHERE task_id = ?1 \
                     UNION ALL SELECT r.pos, r.line FROM audit_record_tasks t \
                     JOIN audit_records r ON r.pos = t.pos WHERE t.task_id = ?1 \
                     ORDER BY pos",
                )
                .map_err(|e| err(path, "cannot read records", e))?;
            let rows = st
                .query_map([id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
                .map_err(|e| err(path, "cannot read records", e))?;
            let mut out = Vec::new();
            for row in rows {
                let (pos, line) = row.map_err(|e| err(path, "cannot read records", e))?;
                out.push(Loaded::parse(pos as u64, line.as_bytes()));
            }
            Ok(out)
        })
        .await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Path, &mut Connection) -> Result<T, AuditError> + Send + 'static,
    ) -> Result<T, AuditError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&inner.path, &mut conn)
        })
        .await
        .map_err(|e| AuditError::new(format!("audit task failed: {e}")))?
    }

    fn read_table(
        path: &Path,
        conn: &Connection,
        table: &str,
    ) -> Result<Vec<(u64, Vec<u8>)>, AuditError> {
        let sql = format!("SELECT pos, CAST(line AS BLOB) FROM {table} ORDER BY pos");
        let mut st = conn
            .prepare(&sql)
            .map_err(|e| err(path, "cannot read the audit log", e))?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
            .map_err(|e| err(path, "cannot read the audit log", e))?;
        let mut out = Vec::new();
        for row in rows {
            let (pos, line) = row.map_err(|e| err(path, "cannot read the audit log", e))?;
            out.push((pos as u64, line));
        }
        Ok(out)
    }
}

#[async_trait]
impl AuditSink for SqliteAuditSink {
    async fn append_records(&self, records: &[AuditRecord]) -> Result<(), AuditError> {
        // (writer, seq, task_id, line, the tasks of a batch event).
        type Row = (String, i64, Option<String>, String, Vec<String>);
        let rows: Vec<Row> = records
            .iter()
            .map(|r| {
                let batch = match r.event.task() {
                    Some(_) => Vec::new(),
                    None => r.event.tasks().iter().map(|t| t.to_string()).collect(),
                };
                (
                    r.writer.clone(),
                    i64::try_from(r.seq).unwrap_or(i64::MAX),
                    r.event.task().map(|t| t.to_string()),
                    record_line(r),
                    batch,
                )
            })
            .collect();
        self.blocking(move |path, conn| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(|e| err(path, "cannot begin a transaction", e))?;
            {
                let mut st = tx
                    .prepare_cached(
                        "INSERT INTO audit_records (writer, seq, task_id, line) VALUES (?1, ?2, ?3, ?4)",
                    )
                    .map_err(|e| err(path, "cannot append records", e))?;
                let mut by_task = tx
                    .prepare_cached("INSERT INTO audit_record_tasks (task_id, pos) VALUES (?1, ?2)")
                    .map_err(|e| err(path, "cannot append records", e))?;
                for (w, s, t, l, batch) in &rows {
                    st.execute(params![w, s, t, l])
                        .map_err(|e| err(path, "cannot append records", e))?;
                    if !batch.is_empty() {
                        let pos = tx.last_insert_rowid();
                        for task in batch {
                            by_task
                                .execute(params![task, pos])
                                .map_err(|e| err(path, "cannot append records", e))?;
                        }
                    }
                }
            }
            tx.commit()
                .map_err(|e| err(path, "cannot commit records", e))
        })
        .await
    }

    async fn append_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), AuditError> {
        let (w, s, l) = (
            checkpoint.writer.clone(),
            i64::try_from(checkpoint.seq).unwrap_or(i64::MAX),
            checkpoint_line(checkpoint),
        );
        self.blocking(move |path, conn| {
            conn.execute(
                "INSERT INTO audit_checkpoints (writer, seq, line) VALUES (?1, ?2, ?3)",
                params![w, s, l],
            )
            .map(drop)
            .map_err(|e| err(path, "cannot append a checkpoint", e))
        })
        .await
    }

    async fn read_records(&self) -> Result<Vec<Loaded<AuditRecord>>, AuditError> {
        self.blocking(|path, conn| {
            Ok(Self::read_table(path, conn, "audit_records")?
                .into_iter()
                .map(|(pos, line)| Loaded::parse(pos, &line))
                .collect())
        })
        .await
    }

    async fn read_checkpoints(&self) -> Result<Option<Vec<Loaded<Checkpoint>>>, AuditError> {
        self.blocking(|path, conn| {
            let exists: i64 = conn
                .query_row(
                    "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'audit_checkpoints'",
                    [],
                    |r| r.get(0),
                )
                .map_err(|e| err(path, "cannot read the audit log", e))?;
            if exists == 0 {
                return Ok(None);
            }
            Ok(Some(
                Self::read_table(path, conn, "audit_checkpoints")?
                    .into_iter()
                    .map(|(pos, line)| Loaded::parse(pos, &line))
                    .collect(),
            ))
        })
        .await
    }

    fn describe(&self) -> String {
        format!(
            "tables audit_records/audit_checkpoints in {}",
            self.inner.path.display()
        )
    }
}
