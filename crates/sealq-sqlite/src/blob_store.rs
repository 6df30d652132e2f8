//! [`SqliteBlobStore`]: claim-check blobs in a table of the broker's file.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use sealq::blob::{BlobKey, BlobStore};
use sealq::broker::BrokerResult;
use sealq::{BrokerError, BrokerErrorKind, TaskId};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS blobs (
    task_id TEXT NOT NULL,
    digest  BLOB NOT NULL,
    bytes   BLOB NOT NULL,
    PRIMARY KEY (task_id, digest)
) WITHOUT ROWID;
";

/// Claim-check blobs (see [`sealq::blob`]) in a `blobs` table of a sealq
/// SQLite database, usually the broker's own file: one row per blob, keyed by
/// task id and digest, holding sealed bytes only.
///
/// It opens its own connection (WAL, `busy_timeout` 30 s, `synchronous=FULL`),
/// so it never queues behind the broker's writer thread. The table is created
/// on first use; a new file first gets the broker schema.
#[derive(Debug, Clone)]
pub struct SqliteBlobStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    conn: Mutex<Connection>,
}

fn err(what: &str, e: rusqlite::Error) -> BrokerError {
    let kind = match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            BrokerErrorKind::Unavailable
        }
        _ => BrokerErrorKind::Other,
    };
    BrokerError::new(kind, format!("blob store: {what}")).with_source(e)
}

impl SqliteBlobStore {
    /// Open (and create) the `blobs` table in the sealq database at `path`.
    pub fn open(path: impl AsRef<Path>) -> BrokerResult<Self> {
        let path = path.as_ref().to_path_buf();
        // A sealq store before adding a table to it (see SqliteAuditSink).
        drop(crate::SqliteBroker::open(&path)?);
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| err("cannot open the database", e))?;
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(|e| err("cannot configure the connection", e))?;
        crate::error::set_up_store(&conn, &path, "creating the blobs table", SCHEMA)?;
        Ok(SqliteBlobStore {
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

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> BrokerResult<T> + Send + 'static,
    ) -> BrokerResult<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            // The connection holds no state across calls that a panic could
            // leave half-done (each call is one statement or transaction).
            let mut conn = inner.conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|e| BrokerError::new(BrokerErrorKind::Other, format!("blob store: {e}")))?
    }
}

#[async_trait]
impl BlobStore for SqliteBlobStore {
    async fn put(&self, key: &BlobKey, sealed: Vec<u8>) -> BrokerResult<()> {
        let (task, digest) = (key.task.to_string(), key.digest);
        self.blocking(move |c| {
            c.prepare_cached(
                "INSERT OR REPLACE INTO blobs (task_id, digest, bytes) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut st| st.execute(params![task, &digest[..], sealed]))
            .map(drop)
            .map_err(|e| err("cannot write a blob", e))
        })
        .await
    }

    async fn get(&self, key: &BlobKey) -> BrokerResult<Option<Vec<u8>>> {
        let (task, digest) = (key.task.to_string(), key.digest);
        self.blocking(move |c| {
            c.prepare_cached("SELECT bytes FROM blobs WHERE task_id = ?1 AND digest = ?2")
                .and_then(|mut st| {
                    st.query_row(params![task, &digest[..]], |r| r.get(0))
                        .optional()
                })
                .map_err(|e| err("cannot read a blob", e))
        })
        .await
    }

    async fn delete_tasks(&self, ids: &[TaskId]) -> BrokerResult<u64> {
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        self.blocking(move |c| {
            let tx = c.transaction().map_err(|e| err("cannot delete blobs", e))?;
            let mut n = 0;
            {
                let mut st = tx
                    .prepare_cached("DELETE FROM blobs WHERE task_id = ?1")
                    .map_err(|e| err("cannot delete blobs", e))?;
                for id in &ids {
                    n += st
                        .execute([id])
                        .map_err(|e| err("cannot delete blobs", e))?
                        as u64;
                }
            }
            tx.commit().map_err(|e| err("cannot delete blobs", e))?;
            Ok(n)
        })
        .await
    }

    async fn list_tasks(&self, after: Option<TaskId>, limit: usize) -> BrokerResult<Vec<TaskId>> {
        // Task ids are UUIDs in canonical lowercase text: text order is id order.
        let after = after.map(|a| a.to_string()).unwrap_or_default();
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        self.blocking(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT DISTINCT task_id FROM blobs WHERE task_id > ?1 \
                     ORDER BY task_id LIMIT ?2",
                )
                .map_err(|e| err("cannot list blobs", e))?;
            let rows = st
                .query_map(params![after, limit], |r| r.get::<_, String>(0))
                .map_err(|e| err("cannot list blobs", e))?;
            let mut out = Vec::new();
            for row in rows {
                let text = row.map_err(|e| err("cannot list blobs", e))?;
                if let Ok(id) = TaskId::from_str(&text) {
                    out.push(id);
                }
            }
            Ok(out)
        })
        .await
    }

    fn describe(&self) -> String {
        format!("sqlite://{} (blobs table)", self.inner.path.display())
    }
}
