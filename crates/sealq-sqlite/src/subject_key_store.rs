//! The embedded subject key store: wrapped per-subject data keys in a small
//! SQLite file of their own, beside (never inside) the task database.
//!
//! Destroying a key must leave nothing to recover, so the file runs with
//! `secure_delete` (freed pages are zeroed) and every destroy ends with a
//! `wal_checkpoint(TRUNCATE)` that writes the zeroed pages back and empties
//! the write-ahead log. What the file system or the disk keeps of overwritten
//! blocks is beyond the process's reach (see `docs/compliance.md`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use sealq::broker::BrokerResult;
use sealq::subject_keys::SubjectKeyStore;
use sealq::{BrokerError, BrokerErrorKind, SubjectTag};

use crate::error::{map_err, set_up_store};

/// The store's tables; keys are overwritten on delete (`secure_delete`).
const SCHEMA: &str = "PRAGMA secure_delete = ON;
CREATE TABLE IF NOT EXISTS subject_keys (
    tag        BLOB PRIMARY KEY NOT NULL CHECK (length(tag) = 32),
    wrapped    BLOB NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS erasure_epoch (
    one   INTEGER PRIMARY KEY CHECK (one = 1),
    epoch INTEGER NOT NULL
);
INSERT OR IGNORE INTO erasure_epoch (one, epoch) VALUES (1, 0);";

/// Wrapped subject keys in their own SQLite file.
#[derive(Clone)]
pub struct SqliteSubjectKeyStore {
    conn: Arc<Mutex<Connection>>,
    path: Arc<PathBuf>,
}

impl std::fmt::Debug for SqliteSubjectKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteSubjectKeyStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteSubjectKeyStore {
    /// Open (creating if needed) the key store at `path`; a new file gets
    /// mode 0600 on Unix, whatever the umask.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, BrokerError> {
        let path = path.as_ref().to_path_buf();
        // The wrapped data keys: readable by the owner only (0600), as the
        // database beside it.
        crate::create_private_file(&path);
        let conn = Connection::open(&path)
            .map_err(|e| map_err(&path, "opening the subject key store", e))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(|e| map_err(&path, "configuring the subject key store", e))?;
        set_up_store(&conn, &path, "creating the subject key store", SCHEMA)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path: Arc::new(path),
        })
    }

    /// Where the keys are.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn with<T, F>(&self, what: &'static str, f: F) -> BrokerResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            // Plain connection; a panic while holding it cannot leave it half-written
            // (each call is its own statement or transaction).
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn).map_err(|e| map_err(&path, what, e))
        })
        .await
        .map_err(|_| BrokerError::new(BrokerErrorKind::Other, "subject key store task failed"))?
    }
}

#[async_trait]
impl SubjectKeyStore for SqliteSubjectKeyStore {
    async fn get(&self, tag: &SubjectTag) -> BrokerResult<Option<Vec<u8>>> {
        let tag = tag.0;
        self.with("reading a subject key", move |c| {
            c.prepare_cached("SELECT wrapped FROM subject_keys WHERE tag = ?1")?
                .query_row([&tag[..]], |r| r.get(0))
                .optional()
        })
        .await
    }

    async fn put_if_absent(&self, tag: &SubjectTag, wrapped: Vec<u8>) -> BrokerResult<Vec<u8>> {
        let tag = tag.0;
        self.with("storing a subject key", move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT OR IGNORE INTO subject_keys (tag, wrapped, created_at) VALUES (?1, ?2, ?3)",
                params![&tag[..], wrapped, now_ms()],
            )?;
            let stored: Vec<u8> = tx.query_row(
                "SELECT wrapped FROM subject_keys WHERE tag = ?1",
                [&tag[..]],
                |r| r.get(0),
            )?;
            tx.commit()?;
            Ok(stored)
        })
        .await
    }

    async fn get_many(&self, tags: &[SubjectTag]) -> BrokerResult<Vec<Option<Vec<u8>>>> {
        let tags: Vec<[u8; 32]> = tags.iter().map(|t| t.0).collect();
        self.with("reading subject keys", move |c| {
            let mut stmt = c.prepare_cached("SELECT wrapped FROM subject_keys WHERE tag = ?1")?;
            tags.iter()
                .map(|tag| stmt.query_row([&tag[..]], |r| r.get(0)).optional())
                .collect()
        })
        .await
    }

    async fn put_many_if_absent(
        &self,
        items: Vec<(SubjectTag, Vec<u8>)>,
    ) -> BrokerResult<Vec<Vec<u8>>> {
        self.with("storing subject keys", move |c| {
            // One transaction, so one durable write for the whole batch.
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut out = Vec::with_capacity(items.len());
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO subject_keys (tag, wrapped, created_at) VALUES (?1, ?2, ?3)",
                )?;
                let mut read = tx.prepare_cached("SELECT wrapped FROM subject_keys WHERE tag = ?1")?;
                let now = now_ms();
                for (tag, wrapped) in &items {
                    insert.execute(params![&tag.0[..], wrapped, now])?;
                    out.push(read.query_row([&tag.0[..]], |r| r.get(0))?);
                }
            }
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    async fn destroy(&self, tag: &SubjectTag) -> BrokerResult<bool> {
        let tag = tag.0;
        self.with("destroying a subject key", move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n = tx.execute("DELETE FROM subject_keys WHERE tag = ?1", [&tag[..]])?;
            tx.execute(
                "UPDATE erasure_epoch SET epoch = epoch + 1 WHERE one = 1",
                [],
            )?;
            tx.commit()?;
            // Write the zeroed pages into the file and empty the WAL, so no
            // copy of the wrapped key stays in the log.
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(n > 0)
        })
        .await
    }

    async fn list(&self) -> BrokerResult<Vec<(SubjectTag, Vec<u8>)>> {
        self.with("listing subject keys", |c| {
            let mut stmt =
                c.prepare_cached("SELECT tag, wrapped FROM subject_keys ORDER BY tag")?;
            let rows = stmt.query_map([], |r| {
                let tag: Vec<u8> = r.get(0)?;
                Ok((tag, r.get::<_, Vec<u8>>(1)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (tag, wrapped) = row?;
                // The table's CHECK keeps tags at 32 bytes.
                if let Ok(t) = <[u8; 32]>::try_from(tag.as_slice()) {
                    out.push((SubjectTag(t), wrapped));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn replace(&self, tag: &SubjectTag, old: &[u8], new: Vec<u8>) -> BrokerResult<bool> {
        let (tag, old) = (tag.0, old.to_vec());
        self.with("replacing a subject key", move |c| {
            let n = c.execute(
                "UPDATE subject_keys SET wrapped = ?1 WHERE tag = ?2 AND wrapped = ?3",
                params![new, &tag[..], old],
            )?;
            // As after a destruction: no copy of the old wrapping stays in the log.
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(n == 1)
        })
        .await
    }

    async fn epoch(&self) -> BrokerResult<u64> {
        self.with("reading the erasure epoch", |c| {
            c.prepare_cached("SELECT epoch FROM erasure_epoch WHERE one = 1")?
                .query_row([], |r| r.get::<_, i64>(0))
                .map(|e| e.max(0) as u64)
        })
        .await
    }
}

fn now_ms() -> i64 {
    sealq::clock::wall_clock_ms()
}
